use super::*;
use crate::scenario::Source;
use meshbench_schema::slo::SloMetric;
use std::time::Duration;

fn plan(text: &str) -> Result<Plan, String> {
    let src = Source::new("s.toml", text);
    let sc = src.parse().map_err(|e| e.to_string())?;
    Plan::from_scenario(&sc, &src).map_err(|e| e.to_string())
}

#[test]
fn defaults_are_resolved() {
    let p = plan("[target]\nurl = \"http://127.0.0.1:1/\"\n[load]\nrate = 10\nduration = \"2s\"\n")
        .unwrap();
    assert_eq!(p.name, "s");
    assert_eq!(p.load.mode, LoadMode::Open);
    assert_eq!(p.load.connections, 4);
    assert_eq!(p.request.method, http::Method::GET);
    assert_eq!(p.request.timeout.0, Duration::from_secs(5));
    assert_eq!(p.cells.len(), 1);
    assert_eq!(p.cells[0].id, "default");
    assert_eq!(p.cells[0].settings().rate, Some(10.0));
    assert!(matches!(p.target, TargetKind::Url { .. }));
    // run.json keeps the plan: the load section is readable there
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["load"]["rate"], 10.0);
    assert_eq!(v["target"]["kind"], "url");
    assert_eq!(v["request"]["method"], "GET");
}

#[test]
fn errors_are_placed() {
    let e =
        plan("[target]\nurl = \"http://x/\"\n[load]\nrate = 0\nduration = \"2s\"\n").unwrap_err();
    assert_eq!(e, "s.toml:4:8: load.rate must be > 0");
    let e = plan("[target]\nurl = \"http://x/\"\n[load]\nrate = 1\n").unwrap_err();
    assert!(
        e.contains("load.duration or load.requests is required"),
        "{e}"
    );
    let e = plan("[target]\nurl = \"http://x/\"\n[load]\nmode = \"closed\"\nthink_time = \"1s\"\nrequests = 1\nrate = 3\n")
        .unwrap_err();
    assert!(
        e.starts_with("s.toml:7:8: load.rate applies to open loop only"),
        "{e}"
    );
    let e = plan("[load]\nrate = 1\nduration = \"1s\"\n").unwrap_err();
    assert!(e.contains("target.url is required"), "{e}");
}

#[test]
fn slos_are_parsed_with_the_plan_and_placed() {
    let base = "[target]\nurl = \"http://x/\"\n[load]\nrate = 1\nduration = \"1s\"\n";
    let p = plan(&format!("slo = [\"p99<1m30s\", \"errors<0.1%\"]\n{base}")).unwrap();
    assert_eq!(p.slo.len(), 2);
    assert_eq!(p.slo[0].threshold, 90e6);
    let e = plan(&format!("slo = [\"p99<50ms\", \"p99<fast\"]\n{base}")).unwrap_err();
    assert!(e.starts_with("s.toml:1:20: SLO 'p99<fast'"), "{e}");
}

#[test]
fn numbers_are_bounded_to_what_the_engine_can_run() {
    let base = |load: &str| format!("[target]\nurl = \"http://x/\"\n[load]\n{load}\n");
    for (load, want) in [
        (
            "rate = 5e-324\nduration = \"1s\"",
            "load.rate 5e-324 is out of range",
        ),
        (
            "rate = 1e300\nduration = \"1s\"",
            "load.rate 1e300 is out of range",
        ),
        (
            "rate = 1\nduration = \"300000000000s\"",
            "load.duration must be at most",
        ),
        (
            "rate = 1\nduration = \"1s\"\nwarmup = \"300000000000s\"",
            "load.warmup must be at most",
        ),
        (
            "mode = \"closed\"\nduration = \"2s\"\nthink_time = \"5s\"",
            "think_time must be shorter",
        ),
    ] {
        let e = plan(&base(load)).unwrap_err();
        assert!(e.contains(want), "{load}: {e}");
        assert!(e.starts_with("s.toml:"), "{e}");
    }
    let e = plan("[target]\nurl = \"http://x/\"\ntimeout = \"300000000000s\"\n[load]\nrate = 1\nduration = \"1s\"\n")
        .unwrap_err();
    assert!(e.contains("target.timeout must be at most"), "{e}");
}

const MESH: &str = r#"
[load]
rate = 10
duration = "1s"
[mesh]
concurrency = 2
[[mesh.subset]]
name = "v1"
weight = 90
service_time = "1ms"
[[mesh.subset]]
name = "v2"
weight = 10
service_time = "2ms"
service_time_dist = "exp"
"#;

fn mesh_plan(src: &str) -> Result<Plan, String> {
    let s = Source::new("x.toml", src);
    let sc = s.parse().map_err(|e| e.to_string())?;
    Plan::from_scenario(&sc, &s).map_err(|e| e.to_string())
}

#[test]
fn canary_mesh_and_matrix_validate() {
    let src = format!(
        "{MESH}\n[matrix]\nsidecar_cpu = [\"100m\", 0.5, 2, \"none\"]\naccess_log = [\"off\", \"buffered\", \"sync\"]\n"
    );
    let p = mesh_plan(&src).unwrap();
    let mesh = p.mesh().unwrap();
    assert_eq!(
        mesh.spiffe_id(),
        "spiffe://cluster.local/ns/default/sa/checkout"
    );
    assert_eq!(mesh.dns_name(), "checkout.default.svc.cluster.local");
    assert_eq!(mesh.subsets[1].service_time.0, Duration::from_millis(2));
    assert_eq!(
        mesh.subsets[1].service_time_dist,
        ::app::ServiceTimeDist::Exp
    );
    let millis: Vec<_> = p
        .matrix
        .as_ref()
        .unwrap()
        .sidecar_cpu
        .iter()
        .map(|c| c.millis)
        .collect();
    assert_eq!(millis, vec![Some(100), Some(500), Some(2000), None]);
    let ids: Vec<&str> = p.cells.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), 12);
    assert_eq!(ids[0], "cpu=100m,log=off");
    assert_eq!(ids[1], "cpu=100m,log=buffered");
    assert_eq!(ids[3], "cpu=500m,log=off");
    assert_eq!(ids[11], "cpu=none,log=sync");
    assert_eq!(p.cells[3].settings().sidecar_cpu_millis, Some(500));
    assert_eq!(p.cells[11].settings().access_log.as_deref(), Some("sync"));
    let checks = p.checks.unwrap();
    assert_eq!(
        checks.weights,
        Some(vec![("v1".into(), 90), ("v2".into(), 10)])
    );
    assert_eq!(checks.confidence, checks::DEFAULT_CONFIDENCE);
    assert!(checks.strict_mtls);
    assert_eq!(p.request.subset_header.unwrap(), "x-version");
    // without a [matrix], one cell with no limit and no log
    let p = mesh_plan(MESH).unwrap();
    assert_eq!(p.cells.len(), 1);
    assert_eq!(p.cells[0].id, "cpu=none,log=off");
}

#[test]
fn a_real_mesh_matrix_has_rate_and_connection_cells() {
    let p = plan("[target]\nurl = \"http://x/\"\n[load]\nrate = 10\nduration = \"1s\"\n[matrix]\nrate = [10, 20]\nconnections = [1, 4]\n").unwrap();
    let ids: Vec<&str> = p.cells.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "rate=10,conns=1",
            "rate=10,conns=4",
            "rate=20,conns=1",
            "rate=20,conns=4"
        ]
    );
    assert_eq!(p.cells[3].rate, Some(20.0));
    assert_eq!(p.cells[3].connections, 4);
    assert!(p.cells[3].sidecar.is_none());
}

#[test]
fn bad_cpu_quantity_points_at_the_value() {
    let src = format!("{MESH}\n[matrix]\nsidecar_cpu = [\"100m\", \"lots\"]\n");
    let err = mesh_plan(&src).unwrap_err();
    let line = src.lines().position(|l| l.contains("lots")).unwrap() + 1;
    assert!(
        err.starts_with(&format!("x.toml:{line}:24: matrix.sidecar_cpu: `lots`")),
        "{err}"
    );
}

#[test]
fn weights_not_summing_to_100_are_refused() {
    let src = MESH.replace("weight = 10", "weight = 20");
    let err = mesh_plan(&src).unwrap_err();
    assert!(
        err.contains("mesh.subset: weights must sum to 100, these sum to 110"),
        "{err}"
    );
    assert!(err.starts_with("x.toml:"), "{err}");
    let src = format!("{MESH}\n[checks]\nweights = {{ v1 = 50, v2 = 49 }}\n");
    let err = mesh_plan(&src).unwrap_err();
    let line = src.lines().position(|l| l.starts_with("weights")).unwrap() + 1;
    assert!(
        err.starts_with(&format!(
            "x.toml:{line}:11: checks.weights: weights must sum to 100"
        )),
        "{err}"
    );
}

#[test]
fn unknown_access_log_mode_is_refused() {
    let src = format!("{MESH}\n[matrix]\naccess_log = [\"off\", \"verbose\"]\n");
    let err = mesh_plan(&src).unwrap_err();
    let line = src.lines().position(|l| l.contains("verbose")).unwrap() + 1;
    assert!(
        err.starts_with(&format!(
            "x.toml:{line}:22: matrix.access_log: unknown access-log mode `verbose`"
        )),
        "{err}"
    );
}

#[test]
fn other_bad_entries() {
    for (bad, want) in [
        ("[matrix]\nsidecar_cpu = [-1]\n", "matrix.sidecar_cpu"),
        ("[matrix]\nsidecar_cpu = []\n", "at least one"),
        ("[matrix]\nrate = [0]\n", "matrix.rate"),
        ("[matrix]\nconnections = [0]\n", "matrix.connections"),
        ("[checks]\nconfidence = 2\n", "checks.confidence"),
        ("[matrix]\ncpu = [\"1\"]\n", "unknown field `cpu`"),
    ] {
        let err = mesh_plan(&format!("{MESH}\n{bad}")).unwrap_err();
        assert!(err.contains(want), "{bad}: {err}");
    }
    let err = mesh_plan(&MESH.replace("\"2ms\"", "\"soon\"")).unwrap_err();
    assert!(err.contains("mesh.subset[1].service_time: `soon`"), "{err}");
    let p = mesh_plan(&format!("{MESH}\n[checks]\nconfidence = \"99%\"\n")).unwrap();
    assert!((p.checks.unwrap().confidence - 0.99).abs() < 1e-12);
}

#[test]
fn a_matrix_too_large_to_run_is_refused_before_it_is_expanded() {
    let list = |n: usize| {
        (1..=n)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let src = format!(
        "{MESH}\n[matrix]\nrate = [{}]\nconnections = [{}]\n",
        list(100),
        list(100)
    );
    let err = mesh_plan(&src).unwrap_err();
    assert!(
        err.contains("the matrix has 10000 cells; at most 1000"),
        "{err}"
    );
}

#[test]
fn modes_expand_with_one_baseline_cell_per_load() {
    let src = format!(
        "{MESH}\n[matrix]\nmode = [\"baseline\", \"server\", \"both\"]\nsidecar_cpu = [\"100m\", \"0.8x\", \"none\"]\naccess_log = [\"off\", \"buffered\"]\nconcurrency = [1, 2]\n"
    );
    let p = mesh_plan(&src).unwrap();
    // baseline: 1; server and both: 3 cpu x 2 log x 2 concurrency each
    assert_eq!(p.cells.len(), 1 + 2 * 12);
    let ids: Vec<&str> = p.cells.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids[0], "mode=baseline");
    assert_eq!(ids[1], "mode=server,cpu=100m,log=off,conc=1");
    assert!(
        ids.contains(&"mode=both,cpu=0.8x,log=buffered,conc=2"),
        "{ids:?}"
    );
    let base = p.cells[0].settings();
    assert_eq!(base.mesh_mode.as_deref(), Some("baseline"));
    assert_eq!((base.sidecar_cpu, base.access_log), (None, None));
    let rel = p
        .cells
        .iter()
        .find(|c| c.id == "mode=both,cpu=0.8x,log=off,conc=1")
        .unwrap();
    let sc = rel.sidecar.as_ref().unwrap();
    assert_eq!((sc.cpu.relative, sc.cpu.millis), (Some(0.8), None));
    assert_eq!(sc.concurrency, Some(1));
    let s = rel.settings();
    assert_eq!(s.sidecar_cpu.as_deref(), Some("0.8x"));
    assert_eq!(s.sidecar_concurrency, Some(1));
    // without a mode axis: ids as before, every cell `server`
    let p = mesh_plan(&format!("{MESH}\n[matrix]\nsidecar_cpu = [\"100m\"]\n")).unwrap();
    assert_eq!(p.cells[0].id, "cpu=100m,log=off");
    assert_eq!(p.cells[0].settings().mesh_mode.as_deref(), Some("server"));
}

#[test]
fn bad_modes_and_concurrency_are_placed() {
    let src = format!("{MESH}\n[matrix]\nmode = [\"baseline\", \"ambient\"]\n");
    let err = mesh_plan(&src).unwrap_err();
    let line = src.lines().position(|l| l.contains("ambient")).unwrap() + 1;
    assert!(
        err.starts_with(&format!(
            "x.toml:{line}:21: matrix.mode: unknown mode `ambient` (expected \"baseline\", \"server\" or \"both\")"
        )),
        "{err}"
    );
    for (bad, want) in [
        ("mode = []", "matrix.mode: must list at least one mode"),
        (
            "mode = [\"both\", \"both\"]",
            "matrix.mode: `both` is listed twice",
        ),
        (
            "concurrency = [0]",
            "matrix.concurrency: 0 workers: must be between 1 and 64",
        ),
        (
            "concurrency = [2, 2]",
            "matrix.concurrency: 2 is listed twice",
        ),
        (
            "sidecar_cpu = [\"0x\"]",
            "matrix.sidecar_cpu: `0x`: a relative limit",
        ),
        ("sidecar_cpu = [\"-1x\"]", "matrix.sidecar_cpu: `-1x`"),
        (
            "sidecar_cpu = [\"0.8x\", \"0.8x\"]",
            "`0.8x` is listed twice",
        ),
    ] {
        let err = mesh_plan(&format!("{MESH}\n[matrix]\n{bad}\n")).unwrap_err();
        assert!(
            err.starts_with("x.toml:") && err.contains(want),
            "{bad}: {err}"
        );
    }
    // a mode needs the embedded mesh
    let err = plan(
        "[target]\nurl = \"https://checkout.example:443/\"\n[load]\nrate = 1\nduration = \"1s\"\n[matrix]\nmode = [\"both\"]\n",
    )
    .unwrap_err();
    assert!(
        err.starts_with("s.toml:7:8: matrix.mode needs the embedded mesh"),
        "{err}"
    );
}

const REAL: &str = r#"
[target]
url = "https://checkout.shop.svc.cluster.local:443/"
[load]
rate = 10
duration = "1s"
"#;

#[test]
fn a_driver_applies_the_matrix_to_a_real_mesh() {
    let src = format!(
        "{REAL}[matrix]\nsidecar_cpu = [\"100m\", \"none\"]\naccess_log = [\"off\", \"on\"]\n[driver]\nkind = \"istio\"\nnamespace = \"shop\"\nworkloads = [\"deployment/checkout-v1\", \"statefulset/ledger\"]\ncpu_request = \"50m\"\n"
    );
    let p = plan(&src).unwrap();
    let ids: Vec<&str> = p.cells.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "cpu=100m,log=off",
            "cpu=100m,log=on",
            "cpu=none,log=off",
            "cpu=none,log=on"
        ]
    );
    let d = p.driver.as_ref().unwrap();
    match &d.kind {
        DriverKind::Istio(i) => {
            assert_eq!(
                i.workloads,
                ["deployment/checkout-v1", "statefulset/ledger"]
            );
            assert_eq!(i.cpu_request, Some(("50m".to_string(), 50)));
            assert_eq!(i.kubectl, "kubectl");
            assert_eq!(i.rollout_timeout.0, std::time::Duration::from_secs(300));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.on_failure, OnFailure::Continue);
    let s = p.cells[1].settings();
    assert_eq!(
        (s.sidecar_cpu_millis, s.access_log.as_deref()),
        (Some(100), Some("on"))
    );
    // the command driver passes any access-log value through
    let src = format!(
        "{REAL}[matrix]\naccess_log = [\"buffered\"]\n[driver]\nkind = \"command\"\napply = \"./apply.sh\"\ntimeout = \"5s\"\non_failure = \"stop\"\n"
    );
    let p = plan(&src).unwrap();
    assert_eq!(p.cells[0].id, "cpu=none,log=buffered");
    assert_eq!(p.driver.unwrap().on_failure, OnFailure::Stop);
}

#[test]
fn bad_driver_entries_are_placed_and_nothing_runs() {
    let istio = "[driver]\nkind = \"istio\"\nnamespace = \"shop\"\nworkloads = [\"deployment/checkout-v1\"]\n";
    for (extra, want) in [
        ("[driver]\nkind = \"linkerd\"\n", "driver.kind: unknown driver `linkerd` (expected \"command\" or \"istio\")"),
        ("[driver]\nkind = \"istio\"\nnamespace = \"shop\"\n", "driver.workloads: the istio driver needs the workloads"),
        ("[driver]\nkind = \"istio\"\nworkloads = [\"deployment/a\"]\n", "driver.namespace: the istio driver needs the namespace"),
        ("[driver]\nkind = \"istio\"\nnamespace = \"Shop_1\"\nworkloads = [\"deployment/a\"]\n", "driver.namespace: `Shop_1` is not a Kubernetes namespace name"),
        ("[driver]\nkind = \"istio\"\nnamespace = \"shop\"\nworkloads = [\"pod/a\"]\n", "driver.workloads: `pod/a`: expected KIND/NAME"),
        ("[driver]\nkind = \"istio\"\nnamespace = \"shop\"\nworkloads = []\n", "driver.workloads: must list at least one"),
        ("[driver]\nkind = \"command\"\n", "driver.apply: the command driver needs an apply command"),
        ("[driver]\nkind = \"command\"\napply = \"x\"\nnamespace = \"shop\"\n", "driver.namespace: is not a setting of the command driver"),
        ("[driver]\nkind = \"istio\"\nnamespace = \"shop\"\nworkloads = [\"deployment/a\"]\napply = \"x\"\n", "driver.apply: is not a setting of the istio driver"),
        ("[driver]\nkind = \"command\"\napply = \"x\"\non_failure = \"retry\"\n", "driver.on_failure: `retry`"),
        ("[driver]\nkind = \"command\"\napply = \"x\"\ntimeout = \"0s\"\n", "driver.timeout must be > 0"),
        (&format!("{istio}cpu_request = \"lots\"\n"), "driver.cpu_request: `lots`"),
        (&format!("{istio}access_log_method = \"envoyfilter\"\n"), "driver.access_log_method: `envoyfilter`"),
        (&format!("[matrix]\nsidecar_cpu = [\"-5m\"]\n{istio}"), "matrix.sidecar_cpu"),
        (&format!("[matrix]\nsidecar_cpu = [\"0.0001m\"]\n{istio}"), "matrix.sidecar_cpu"),
        (&format!("[matrix]\nsidecar_cpu = [\"0.8x\"]\n{istio}"), "matrix.sidecar_cpu: a relative limit needs the calibration"),
        (&format!("[matrix]\naccess_log = [\"buffered\"]\n{istio}"), "matrix.access_log: the istio driver cannot set access logging `buffered`"),
        (&format!("[matrix]\nmode = [\"both\"]\n{istio}"), "matrix.mode: the istio driver cannot apply this to a real mesh"),
        (&format!("[matrix]\nconcurrency = [2]\n{istio}"), "matrix.concurrency: the istio driver cannot apply this"),
        (
            &format!("[matrix]\nsidecar_cpu = [\"500m\", \"50m\"]\n{istio}cpu_request = \"100m\"\n"),
            "matrix.sidecar_cpu: 50m is below driver.cpu_request `100m`",
        ),
    ] {
        let src = format!("{REAL}{extra}");
        let err = plan(&src).unwrap_err();
        assert!(err.starts_with("s.toml:") && err.contains(want), "{extra}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // a matrix for a real mesh without a driver names the way out
    let err = plan(&format!("{REAL}[matrix]\nsidecar_cpu = [\"100m\"]\n")).unwrap_err();
    assert!(err.contains("or a [driver] that applies it"), "{err}");
    // a driver needs a real mesh
    let err = plan(&format!(
        "{MESH}[driver]\nkind = \"command\"\napply = \"x\"\n"
    ))
    .unwrap_err();
    assert!(
        err.contains("[driver] applies each cell's settings to a real mesh"),
        "{err}"
    );
}

#[test]
fn a_profile_sets_the_rate_and_window_and_a_search_its_bounds() {
    let p = plan("[target]\nurl = \"http://x/\"\n[load]\nwarmup = \"1s\"\n[load.profile]\nkind = \"ramp\"\nfrom = 100\nto = 300\nover = \"10s\"\n").unwrap();
    // the mean of the ramp, its length; every cell carries the profile into run.json
    assert_eq!(p.load.rate, Some(200.0));
    assert_eq!(p.load.duration.map(|d| d.0), Some(Duration::from_secs(10)));
    let s = p.cells[0].settings();
    assert!(
        matches!(s.profile, Some(meshbench_schema::profile::RateProfile::Ramp { from, to, duration_s }) if (from, to, duration_s) == (100.0, 300.0, 10.0))
    );
    // "constant" is load.rate
    let p = plan("[target]\nurl = \"http://x/\"\n[load]\nrate = 5\nduration = \"1s\"\n[load.profile]\nkind = \"constant\"\n").unwrap();
    assert!(p.load.profile.is_none() && p.load.rate == Some(5.0));
    let p = plan("[target]\nurl = \"http://x/\"\n[search]\nslo = [\"p99<10ms\", \"send_lag<1ms\"]\nmin = 200\nmax = 800\nresolution = \"2.5%\"\n").unwrap();
    let s = p.search.as_ref().unwrap();
    assert_eq!((s.min, s.max, s.resolution), (200.0, 800.0, 0.025));
    assert_eq!(
        s.slo.iter().map(|o| o.metric).collect::<Vec<_>>(),
        [SloMetric::Latency("p99"), SloMetric::SendLag]
    );
    assert_eq!(s.step.0, profile::DEFAULT_SEARCH_STEP);
    assert_eq!(p.load.rate, Some(200.0));
    for (text, want) in [
        ("[search]\nslo = [\"p99<10ms\"]\nresolution = \"5\"\n", "s.toml:5:14: search.resolution `5`: give a percentage"),
        ("[search]\nslo = [\"p99<10ms\"]\n[matrix]\nrate = [1, 2]\n", "s.toml:6:8: matrix.rate and [search] are exclusive"),
        ("[search]\nslo = [\"p99<10ms\"]\nstep = \"100ms\"\n", "s.toml:5:8: search.step must be at least 1s"),
        ("[load.profile]\nkind = \"ramp\"\nfrom = 1\nto = 2\n", "s.toml:3:1: load.profile.over is required for a ramp"),
        ("[load.profile]\nkind = \"steps\"\nfrom = 1\nsteps = []\n", "s.toml:5:8: load.profile.from does not apply to kind = \"steps\""),
        ("[load.profile]\nkind = \"steps\"\nsteps = []\n", "s.toml:5:9: load.profile.steps must list 1 to 1000 steps"),
        ("[load]\nmode = \"closed\"\nconnections = 1\n[load.profile]\nkind = \"ramp\"\nfrom = 1\nto = 2\nover = \"2s\"\n", "s.toml:6:1: load.profile applies to open loop only"),
        ("[load.profile]\nkind = \"ramp\"\nfrom = 1e7\nto = 1e7\nover = \"7d\"\n", "s.toml:3:1: load.profile schedules"),
    ] {
        let e = plan(&format!("[target]\nurl = \"http://x/\"\n{text}")).unwrap_err();
        assert!(e.starts_with(want), "{text}:\n got  {e}\n want {want}");
    }
}
