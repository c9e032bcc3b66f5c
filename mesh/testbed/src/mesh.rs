//! Bringing a mesh up for one cell and down again: PKI (once per run), one app process
//! per subset, the cell's sidecars in its [`MeshMode`] (each in its own cgroup with the
//! cell's limits and a 1 Hz throttling sampler), and the [`SidecarStats`] of each.
use crate::cgroup::{unique_name, Cgroup, Cgroups, Limits};
use crate::pki::{MeshPki, PkiSpec};
use crate::process::{ChildProc, Role};
use crate::spec::{CellMeshSettings, MeshMode, MeshSpec, SubsetSpec};
use crate::MeshError;
use meshbench_schema::{CpuStat, SidecarStats};
use sidecar::{AccessLogMode, Direction, Route, RouteTls, SidecarConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A prepared embedded mesh: PKI issued, cgroup support found. Cells are brought up from it.
pub struct Mesh {
    spec: MeshSpec,
    pki: MeshPki,
    exe: PathBuf,
    dir: PathBuf,
    cgroups: Option<Result<Cgroups, String>>,
    cells: u32,
}

impl Mesh {
    /// Issue the PKI into `<run_dir>/mesh/` and remember `exe` (the loadgen binary, which
    /// provides the `mesh-app` and `mesh-sidecar` roles).
    pub fn prepare(spec: &MeshSpec, run_dir: &Path, exe: &Path) -> Result<Mesh, MeshError> {
        // Absolute, so the sidecar config and the printed paths work from anywhere.
        let run_dir = std::path::absolute(run_dir).map_err(|source| MeshError::Io {
            path: run_dir.to_path_buf(),
            source,
        })?;
        let dir = run_dir.join("mesh");
        let pki = MeshPki::create(
            &dir,
            &PkiSpec {
                service: spec.service.clone(),
                namespace: spec.namespace.clone(),
                service_account: spec.service_account.clone(),
                client_service_account: "loadgen".into(),
                user_ca: spec.ca.clone(),
            },
        )?;
        Ok(Mesh {
            spec: spec.clone(),
            pki,
            exe: exe.to_path_buf(),
            dir,
            cgroups: None,
            cells: 0,
        })
    }

    pub fn pki(&self) -> &MeshPki {
        &self.pki
    }

    pub fn spec(&self) -> &MeshSpec {
        &self.spec
    }

    /// Check that cgroups can be written, without starting anything. The error names what
    /// is missing (path and errno).
    pub fn check_cgroups(&mut self) -> Result<crate::cgroup::Version, MeshError> {
        let cg = self.cgroups.get_or_insert_with(|| {
            let cgroups = Cgroups::detect().map_err(|e| e.to_string())?;
            cgroups.remove_stale();
            Ok(cgroups)
        });
        match cg {
            Ok(c) => Ok(c.version()),
            Err(e) => Err(MeshError::Cgroup(e.clone())),
        }
    }

    /// A cgroup for one sidecar with the cell's limits; `None` (with a note) for a cell
    /// without limits where cgroups cannot be written, or with `--no-cpu-limits`.
    fn sidecar_cgroup(
        &mut self,
        settings: &CellMeshSettings,
        tag: &str,
    ) -> Result<(Option<Cgroup>, Option<String>), MeshError> {
        if !settings.apply_limits {
            return Ok((None, None));
        }
        // If a cgroup that a limit needs cannot be made, nothing is started. A cell without
        // limits runs without one where cgroups cannot be written (nothing to apply), and
        // says that its cpu.stat was not measured.
        let needs_cgroup = settings.cpu_millis.is_some() || settings.memory_bytes.is_some();
        match self.check_cgroups() {
            Ok(_) => {
                let Some(Ok(cgs)) = &self.cgroups else {
                    unreachable!("checked above")
                };
                let limits = Limits {
                    cpu_millis: settings.cpu_millis,
                    memory_bytes: settings.memory_bytes,
                };
                match cgs.create(&unique_name(tag), &limits) {
                    Ok(cg) => Ok((Some(cg), None)),
                    Err(e) if !needs_cgroup => {
                        Ok((None, Some(format!("sidecar cpu.stat not measured: {e}"))))
                    }
                    Err(e) => Err(MeshError::Cgroup(e.to_string())),
                }
            }
            Err(e) if !needs_cgroup => {
                Ok((None, Some(format!("sidecar cpu.stat not measured: {e}"))))
            }
            Err(e) => Err(e),
        }
    }

    /// Start one sidecar `name` with `config`, in its own cgroup.
    fn start_sidecar(
        &mut self,
        name: &str,
        subsets: Vec<String>,
        mut config: SidecarConfig,
        settings: &CellMeshSettings,
        tag: &str,
        cell_dir: &Path,
    ) -> Result<(SidecarUnit, Option<String>), MeshError> {
        let (cgroup, note) = self.sidecar_cgroup(settings, &format!("{tag}-{name}"))?;
        // `access.log` for the one sidecar of `server` mode, `<name>.access.log` otherwise
        let file = match name {
            "sidecar" => "access.log".to_string(),
            n => format!("{n}.access.log"),
        };
        let access_log_path =
            (settings.access_log != AccessLogMode::Off).then(|| cell_dir.join(file));
        config.access_log = settings.access_log;
        config.access_log_path = access_log_path.clone();
        config.concurrency = settings.concurrency;
        let proc =
            ChildProc::start(
                name,
                &self.exe,
                Role::Sidecar,
                &config,
                cell_dir,
                |pid| match &cgroup {
                    // All threads move with the pid; the few µs before this are not limited.
                    Some(cg) => cg
                        .add_pid(pid)
                        .map_err(|e| MeshError::Cgroup(e.to_string())),
                    None => Ok(()),
                },
            )?;
        Ok((
            SidecarUnit {
                name: name.to_string(),
                direction: config.direction,
                subsets,
                proc,
                cgroup,
                access_log_path,
                baseline: Arc::new(Mutex::new(None)),
                sampler: None,
            },
            note,
        ))
    }

    /// Start the cell's apps and sidecars in `settings.mode`. `tag` names the cell (cgroup
    /// names, file names). Blocks until every process has said `listening on`; on an
    /// error everything already started is stopped (dropped).
    pub fn up(&mut self, settings: &CellMeshSettings, tag: &str) -> Result<RunningMesh, MeshError> {
        // cell-0, cell-1, ... like the run's interval logs
        let cell_dir = self.dir.join(format!("cell-{}", self.cells));
        self.cells += 1;
        std::fs::create_dir_all(&cell_dir).map_err(|source| MeshError::Io {
            path: cell_dir.clone(),
            source,
        })?;

        let mut apps = Vec::new();
        for s in &self.spec.subsets {
            let config = app::AppConfig {
                headers: vec![(self.spec.subset_header.clone(), s.name.clone())],
                service_time: s.service_time,
                service_time_dist: s.service_time_dist,
                body_bytes: self.spec.response_bytes.unwrap_or(0) as usize,
                // Who called the app: the caller's identity, as its server-side sidecar
                // verified it (none in baseline and from a plaintext caller).
                echo_headers: vec![XFCC.into()],
                ..app::AppConfig::default()
            };
            apps.push(ChildProc::start(
                &format!("app-{}", s.name),
                &self.exe,
                Role::App,
                &config,
                &cell_dir,
                |_| Ok(()),
            )?);
        }
        let mut running = RunningMesh {
            url: String::new(),
            addr: apps[0].addr(),
            entry_tls: false,
            split: Vec::new(),
            pki: self.pki.clone(),
            subset_header: self.spec.subset_header.clone(),
            weights: self.spec.weights(),
            settings: settings.clone(),
            cell_dir: cell_dir.clone(),
            note: None,
            sidecars: Vec::new(),
            apps,
        };
        let subsets: Vec<SubsetSpec> = self.spec.subsets.clone();
        let inbound = |routes: Vec<Route>, pki: &MeshPki| SidecarConfig {
            direction: Direction::Inbound,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            ca: pki.ca_cert.clone(),
            routes,
            concurrency: 1,
            access_log: AccessLogMode::Off,
            access_log_path: None,
            upstream_timeout_ms: 15_000,
        };
        match settings.mode {
            MeshMode::Baseline => {
                running.url = format!("http://{}/", self.spec.dns_name());
                running.split = subsets
                    .iter()
                    .zip(&running.apps)
                    .map(|(s, a)| (s.name.clone(), s.weight, a.addr()))
                    .collect();
            }
            MeshMode::Server => {
                let routes = subsets
                    .iter()
                    .zip(&running.apps)
                    .map(|(s, a)| Route {
                        subset: s.name.clone(),
                        weight: s.weight,
                        upstream: a.addr(),
                        tls: None,
                    })
                    .collect();
                let config = inbound(routes, &self.pki);
                let names = subsets.iter().map(|s| s.name.clone()).collect();
                let (unit, note) =
                    self.start_sidecar("sidecar", names, config, settings, tag, &cell_dir)?;
                running.note = note;
                running.addr = unit.proc.addr();
                running.entry_tls = true;
                running.url = format!("https://{}:{}/", self.pki.server_name, running.addr.port());
                running.sidecars.push(unit);
            }
            MeshMode::Both => {
                // One server-side sidecar per subset, in front of its app ...
                for (s, a) in subsets
                    .iter()
                    .zip(running.apps.iter().map(|a| a.addr()).collect::<Vec<_>>())
                {
                    let route = Route {
                        subset: s.name.clone(),
                        weight: 1,
                        upstream: a,
                        tls: None,
                    };
                    let config = inbound(vec![route], &self.pki);
                    let (unit, note) = self.start_sidecar(
                        &format!("server-{}", s.name),
                        vec![s.name.clone()],
                        config,
                        settings,
                        tag,
                        &cell_dir,
                    )?;
                    running.note = running.note.take().or(note);
                    running.sidecars.push(unit);
                }
                // ... and the client-side sidecar that routes to them over mTLS with the
                // client's workload identity, verifying the server's.
                let routes = subsets
                    .iter()
                    .zip(&running.sidecars)
                    .map(|(s, u)| Route {
                        subset: s.name.clone(),
                        weight: s.weight,
                        upstream: u.proc.addr(),
                        tls: Some(RouteTls {
                            server_name: self.pki.server_name.clone(),
                            identity: self.pki.server_spiffe_id.clone(),
                        }),
                    })
                    .collect();
                let config = SidecarConfig {
                    direction: Direction::Outbound,
                    cert: self.pki.client_cert.clone(),
                    key: self.pki.client_key.clone(),
                    ..inbound(routes, &self.pki)
                };
                let names = subsets.iter().map(|s| s.name.clone()).collect();
                let (unit, note) =
                    self.start_sidecar("client", names, config, settings, tag, &cell_dir)?;
                running.note = running.note.take().or(note);
                running.addr = unit.proc.addr();
                // An app calls its service by name, in plaintext, through its own sidecar.
                running.url = format!("http://{}:{}/", self.pki.server_name, running.addr.port());
                running.sidecars.push(unit);
            }
        }
        Ok(running)
    }
}

/// The request header an inbound sidecar gives its app with the caller's identity.
pub const XFCC: &str = "x-forwarded-client-cert";

/// One sidecar process of a running cell: its cgroup, sampler and access log.
struct SidecarUnit {
    name: String,
    direction: Direction,
    subsets: Vec<String>,
    proc: ChildProc,
    cgroup: Option<Cgroup>,
    access_log_path: Option<PathBuf>,
    baseline: Arc<Mutex<Option<CpuStat>>>,
    sampler: Option<Sampler>,
}

/// A mesh serving one cell. Stopped by [`RunningMesh::down`] or on drop.
pub struct RunningMesh {
    /// Where the load goes. `server`: `https://<service>.<namespace>.svc.cluster.local:<port>/`
    /// (connect to [`Self::addr`] and verify the sidecar by that name, which does not
    /// resolve); `both`: `http://<that name>:<port>/`, the client-side sidecar in plaintext;
    /// `baseline`: `http://<that name>/`, with the apps' addresses in [`Self::split`].
    pub url: String,
    /// The address the load connects to (the entry sidecar; baseline: the first app).
    pub addr: SocketAddr,
    /// Whether the entry speaks (STRICT m)TLS.
    pub entry_tls: bool,
    /// Baseline: (subset, weight, app address); the load generator splits by weight.
    pub split: Vec<(String, u32, SocketAddr)>,
    /// CA, client certificate/key, server name and SPIFFE ids.
    pub pki: MeshPki,
    pub subset_header: String,
    pub weights: Vec<(String, u32)>,
    pub settings: CellMeshSettings,
    pub cell_dir: PathBuf,
    /// Why no cgroup was used for a cell without limits (cgroups not writable).
    pub note: Option<String>,
    sidecars: Vec<SidecarUnit>,
    apps: Vec<ChildProc>,
}

struct Sampler {
    stop: mpsc::Sender<()>,
    handle: std::thread::JoinHandle<()>,
    /// Per second: (throttled µs, CPU µs).
    per_second: Arc<Mutex<Vec<(u64, u64)>>>,
}

/// The sidecar's counters now, from its cgroup.
fn cpu_now(cg: Option<&Cgroup>) -> Option<CpuStat> {
    cg.and_then(|c| c.cpu_stat().ok())
}

fn delta(a: CpuStat, b: CpuStat) -> CpuStat {
    CpuStat {
        usage_usec: b.usage_usec.saturating_sub(a.usage_usec),
        nr_periods: b.nr_periods.saturating_sub(a.nr_periods),
        nr_throttled: b.nr_throttled.saturating_sub(a.nr_throttled),
        throttled_usec: b.throttled_usec.saturating_sub(a.throttled_usec),
    }
}

impl SidecarUnit {
    fn begin_measurement_after(&mut self, delay: Duration) {
        self.stop_sampler();
        let baseline = Arc::new(Mutex::new(None));
        self.baseline = baseline.clone();
        let Some(cg) = &self.cgroup else { return };
        let per_second = Arc::new(Mutex::new(Vec::new()));
        let (stop, rx) = mpsc::channel::<()>();
        let ps = per_second.clone();
        let reader = cg.reader();
        let handle = std::thread::Builder::new()
            .name("cpu-stat-sampler".into())
            .spawn(move || {
                match rx.recv_timeout(delay) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let mut prev = reader.cpu_stat().ok();
                *baseline.lock().unwrap_or_else(|e| e.into_inner()) = prev;
                loop {
                    match rx.recv_timeout(Duration::from_secs(1)) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let now = reader.cpu_stat().ok();
                    if let (Some(p), Some(n)) = (prev, now) {
                        ps.lock().unwrap_or_else(|e| e.into_inner()).push((
                            n.throttled_usec.saturating_sub(p.throttled_usec),
                            n.usage_usec.saturating_sub(p.usage_usec),
                        ));
                    }
                    prev = now.or(prev);
                }
            });
        if let Ok(handle) = handle {
            self.sampler = Some(Sampler {
                stop,
                handle,
                per_second,
            });
        }
    }

    fn baseline(&self) -> Option<CpuStat> {
        *self.baseline.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop_sampler(&mut self) -> Vec<(u64, u64)> {
        match self.sampler.take() {
            Some(s) => {
                let _ = s.stop.send(());
                let _ = s.handle.join();
                let v = s
                    .per_second
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                v
            }
            None => Vec::new(),
        }
    }

    fn per_second(&self) -> Vec<(u64, u64)> {
        self.sampler
            .as_ref()
            .map(|s| {
                s.per_second
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            })
            .unwrap_or_default()
    }

    fn cpu(&self) -> Option<CpuStat> {
        cpu_now(self.cgroup.as_ref()).map(|now| match self.baseline() {
            Some(b) => delta(b, now),
            None => now,
        })
    }

    fn memory_peak(&self) -> Option<u64> {
        self.cgroup
            .as_ref()
            .and_then(|c| c.memory_peak())
            .or_else(|| crate::proc::peak_rss(self.proc.pid()))
    }

    fn count_log_lines(&self) -> Option<u64> {
        match &self.access_log_path {
            None => Some(0),
            Some(p) => {
                let bytes = std::fs::read(p).ok()?;
                Some(bytes.iter().filter(|&&b| b == b'\n').count() as u64)
            }
        }
    }

    fn stats(
        &self,
        per_second: Vec<(u64, u64)>,
        cpu: Option<CpuStat>,
        memory: Option<u64>,
    ) -> SidecarStats {
        SidecarStats {
            name: self.name.clone(),
            direction: Some(self.direction.as_str().to_string()),
            subsets: self.subsets.clone(),
            cpu_stat: cpu,
            memory_peak_bytes: memory,
            access_log_lines: self.count_log_lines(),
            throttled_usec_per_second: per_second.iter().map(|p| p.0).collect(),
            cpu_usec_per_second: per_second.iter().map(|p| p.1).collect(),
            ..SidecarStats::default()
        }
    }

    /// Stop it: the sampler stops, the final cpu.stat and memory peak are read, SIGTERM
    /// (flushing the access log), the cgroup is removed. `Err` when it had to be killed.
    fn down(mut self) -> Result<SidecarStats, MeshError> {
        let per_second = self.stop_sampler();
        let cpu = self.cpu();
        let memory = self.memory_peak();
        let clean = self.proc.stop();
        let stats = self.stats(per_second, cpu, memory);
        if let Some(mut cg) = self.cgroup.take() {
            cg.remove().map_err(|e| MeshError::Cgroup(e.to_string()))?;
        }
        if !clean {
            return Err(MeshError::NotReady {
                what: self.name.clone(),
                reason: "did not exit on SIGTERM and was killed; its access log may be incomplete"
                    .into(),
            });
        }
        Ok(stats)
    }
}

impl Drop for SidecarUnit {
    fn drop(&mut self) {
        self.stop_sampler();
        self.proc.stop();
        // `cgroup` drops after this and removes itself.
    }
}

impl RunningMesh {
    /// Pids of the sidecar processes (none in baseline).
    pub fn sidecar_pids(&self) -> Vec<u32> {
        self.sidecars.iter().map(|s| s.proc.pid()).collect()
    }

    /// (name, direction, listening address) of each sidecar.
    pub fn sidecar_addrs(&self) -> Vec<(String, Direction, SocketAddr)> {
        self.sidecars
            .iter()
            .map(|s| (s.name.clone(), s.direction, s.proc.addr()))
            .collect()
    }

    /// The server-side (inbound, STRICT) sidecars' addresses.
    pub fn server_sidecar_addrs(&self) -> Vec<SocketAddr> {
        self.sidecars
            .iter()
            .filter(|s| s.direction == Direction::Inbound)
            .map(|s| s.proc.addr())
            .collect()
    }

    /// Pids of the app processes.
    pub fn app_pids(&self) -> Vec<u32> {
        self.apps.iter().map(|a| a.pid()).collect()
    }

    /// Listening addresses of the apps, in subset order.
    pub fn app_addrs(&self) -> Vec<SocketAddr> {
        self.apps.iter().map(|a| a.addr()).collect()
    }

    /// The sidecars' cgroup directories (empty without limits).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.sidecars
            .iter()
            .filter_map(|s| s.cgroup.as_ref())
            .flat_map(|c| c.dirs().to_vec())
            .collect()
    }

    /// Whether every sidecar's CPU limit is enforced by a cgroup (false without sidecars).
    pub fn cpu_limit_applied(&self) -> bool {
        !self.sidecars.is_empty() && self.sidecars.iter().all(|s| s.cgroup.is_some())
    }

    /// Access-log files of the sidecars (none when the log is off).
    pub fn access_log_paths(&self) -> Vec<PathBuf> {
        self.sidecars
            .iter()
            .filter_map(|s| s.access_log_path.clone())
            .collect()
    }

    /// The measured window starts `delay` from now (the engine's warmup): cpu.stat
    /// deltas and the 1 Hz throttled-time samples count from then. Without a cgroup
    /// there is nothing to sample.
    pub fn begin_measurement_after(&mut self, delay: Duration) {
        for s in &mut self.sidecars {
            s.begin_measurement_after(delay);
        }
    }

    /// What each sidecar did since [`Self::begin_measurement_after`] (or since it
    /// started). Access-log lines are counted in the file; a buffered log may still hold
    /// up to a second of lines, which [`Self::down`] flushes first.
    pub fn stats(&self) -> Vec<SidecarStats> {
        self.sidecars
            .iter()
            .map(|s| s.stats(s.per_second(), s.cpu(), s.memory_peak()))
            .collect()
    }

    /// CPU time the sidecars used so far (µs, summed), with or without cgroups.
    pub fn sidecar_cpu_usec(&self) -> u64 {
        self.sidecars
            .iter()
            .map(|s| match cpu_now(s.cgroup.as_ref()) {
                Some(c) => c.usage_usec,
                None => crate::proc::cpu_usec(s.proc.pid()),
            })
            .sum()
    }

    /// Stop everything and return each sidecar's statistics: sidecars first (the client
    /// side before the server side, each flushing its access log), then the apps; the
    /// cgroups are removed. The first failure is returned after everything is stopped.
    pub fn down(mut self) -> Result<Vec<SidecarStats>, MeshError> {
        let mut out = Vec::new();
        let mut first_err = None;
        while let Some(s) = self.sidecars.pop() {
            match s.down() {
                Ok(st) => out.push(st),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        for a in &mut self.apps {
            a.stop();
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        out.reverse();
        Ok(out)
    }
}

impl Drop for RunningMesh {
    fn drop(&mut self) {
        // sidecars (client side last in the list) first, then the apps
        while let Some(s) = self.sidecars.pop() {
            drop(s);
        }
        for a in &mut self.apps {
            a.stop();
        }
    }
}
