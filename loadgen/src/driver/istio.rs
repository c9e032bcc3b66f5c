//! The istio driver: each cell's sidecar CPU limit and access logging applied to a real
//! Istio mesh through kubectl and the user's kubeconfig, verified on the new pods, and
//! restored after the run (also after an error or an interrupt).
//!
//! - CPU: the pod-template annotations `sidecar.istio.io/proxyCPULimit` (and
//!   `sidecar.istio.io/proxyCPU` when `cpu_request` is set) of the named workloads, then
//!   `kubectl rollout status` and a settle time; verified from `kubectl get pods -o json`:
//!   every live pod ready, its `istio-proxy` container's `resources.limits.cpu` the cell's.
//! - Access logging: a `telemetry.istio.io/v1` Telemetry resource owned and named by
//!   meshbench (`accessLogging: [{providers: [{name: envoy}], disabled: ...}]`), or the
//!   mesh-wide `accessLogFile` of the `istio` ConfigMap; verified after the cell from
//!   `kubectl logs -c istio-proxy --since-time=...` (lines appeared, or did not).
//! - Restore: the workloads' annotations as they were before the first cell, the Telemetry
//!   resource removed, the ConfigMap's text as it was.

use super::exec::{shell_quote, Cmd, Exec, Ran};
use super::CellFailed;
use crate::plan::driver::{AccessLogMethod, IstioDriver};
use crate::plan::CellPlan;
use meshbench_schema::units::parse_cpu_millis;
use meshbench_schema::{DriverEvidence, DriverRun, PodFacts};
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime};

pub const LIMIT_ANNOTATION: &str = "sidecar.istio.io/proxyCPULimit";
pub const REQUEST_ANNOTATION: &str = "sidecar.istio.io/proxyCPU";
/// The name (and managed-by label) of the Telemetry resource meshbench owns.
pub const TELEMETRY_NAME: &str = "meshbench-access-log";
pub const MANAGED_BY: &str = "meshbench";
/// How long a kubectl call other than a rollout wait may take.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

/// A workload as it was before the first cell.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Original {
    pub workload: String,
    pub cpu_limit: Option<String>,
    pub cpu_request: Option<String>,
    /// Its pods' label selector, `k=v,k2=v2`.
    pub selector: String,
}

pub struct IstioRun<'a> {
    pub cfg: &'a IstioDriver,
    pub originals: Option<Vec<Original>>,
    telemetry_applied: bool,
    configmap_original: Option<String>,
    /// When the current cell's settings were verified (access-log lines count from then).
    since: Option<String>,
}

/// The Telemetry resource that turns Envoy's access log on or off in `namespace`.
pub fn telemetry_manifest(namespace: &str, on: bool) -> Value {
    json!({
        "apiVersion": "telemetry.istio.io/v1",
        "kind": "Telemetry",
        "metadata": {
            "name": TELEMETRY_NAME,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY},
        },
        "spec": {
            "accessLogging": [{
                "providers": [{"name": "envoy"}],
                "disabled": !on,
            }],
        },
    })
}

/// The merge patch that sets (or, with `None`, removes) the CPU annotations of a pod template.
pub fn annotation_patch(limit: Option<&str>, request: Option<Option<&str>>) -> Value {
    let mut ann = serde_json::Map::new();
    ann.insert(
        LIMIT_ANNOTATION.into(),
        limit.map_or(Value::Null, |l| Value::String(l.into())),
    );
    if let Some(r) = request {
        ann.insert(
            REQUEST_ANNOTATION.into(),
            r.map_or(Value::Null, |r| Value::String(r.into())),
        );
    }
    json!({"spec": {"template": {"metadata": {"annotations": ann}}}})
}

/// `mesh` (the `istio` ConfigMap's `data.mesh`, YAML) with its top-level `accessLogFile`
/// set to `/dev/stdout` (on) or `""` (off); other lines are kept as they are.
pub fn set_access_log_file(mesh: &str, on: bool) -> String {
    let mut out: Vec<&str> = mesh
        .lines()
        .filter(|l| !l.starts_with("accessLogFile:"))
        .collect();
    while out.last().is_some_and(|l| l.trim().is_empty()) {
        out.pop();
    }
    let line = if on {
        "accessLogFile: /dev/stdout"
    } else {
        "accessLogFile: \"\""
    };
    let mut s = out.join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    s.push_str(line);
    s.push('\n');
    s
}

/// Whether a line of istio-proxy's log is an access-log entry: Envoy's TEXT format (and
/// Istio's default) starts with `[START_TIME]`, JSON entries carry a response code. Envoy's
/// own messages start with a bare timestamp.
pub fn is_access_log_line(line: &str) -> bool {
    let t = line.trim_start();
    (t.starts_with("[20") || t.starts_with("[19"))
        || (t.starts_with('{') && t.contains("\"response_code\""))
}

/// `matchLabels` as a kubectl selector, `k=v,...` in key order.
fn selector(v: &Value) -> Option<String> {
    let m = v.pointer("/spec/selector/matchLabels")?.as_object()?;
    if m.is_empty() {
        return None;
    }
    let mut kv: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    kv.sort();
    Some(kv.join(","))
}

fn annotation(v: &Value, key: &str) -> Option<String> {
    v.pointer("/spec/template/metadata/annotations")?
        .get(key)?
        .as_str()
        .map(str::to_string)
}

fn parse_json(r: &Ran, what: &str) -> Result<Value, String> {
    serde_json::from_str(&r.stdout)
        .map_err(|e| format!("{what}: kubectl printed no JSON ({e}): `{}`", r.cmdline))
}

impl<'a> IstioRun<'a> {
    pub fn new(cfg: &'a IstioDriver) -> Self {
        IstioRun {
            cfg,
            originals: None,
            telemetry_applied: false,
            configmap_original: None,
            since: None,
        }
    }

    fn args(&self, args: &[&str]) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(k) = &self.cfg.kubeconfig {
            v.push("--kubeconfig".to_string());
            v.push(k.display().to_string());
        }
        if let Some(c) = &self.cfg.context {
            v.push("--context".to_string());
            v.push(c.clone());
        }
        v.extend(args.iter().map(|a| a.to_string()));
        v
    }

    /// A merge patch of the mesh-wide `istio` ConfigMap in `ns`.
    async fn patch_configmap(&self, exec: &mut Exec, label: &str, ns: &str, patch: &str) -> Ran {
        let args = [
            "patch",
            "configmap",
            "istio",
            "-n",
            ns,
            "--type",
            "merge",
            "-p",
            patch,
        ];
        self.kubectl(exec, label, &args, None, KUBECTL_TIMEOUT)
            .await
    }

    async fn kubectl(
        &self,
        exec: &mut Exec,
        label: &str,
        args: &[&str],
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Ran {
        exec.run(Cmd {
            label,
            program: &self.cfg.kubectl,
            args: self.args(args),
            env: vec![],
            stdin,
            cwd: None,
            timeout,
        })
        .await
    }

    /// Before the first cell: the cluster facts and the workloads' original settings.
    pub async fn start(&mut self, exec: &mut Exec, run: &mut DriverRun) -> Result<(), CellFailed> {
        let v = self
            .kubectl(
                exec,
                "version",
                &["version", "-o", "json"],
                None,
                KUBECTL_TIMEOUT,
            )
            .await;
        if let Ok(j) = serde_json::from_str::<Value>(&v.stdout) {
            run.kubectl_client_version = j
                .pointer("/clientVersion/gitVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
            run.kubernetes_server_version = j
                .pointer("/serverVersion/gitVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        run.kubeconfig = self
            .cfg
            .kubeconfig
            .as_ref()
            .map(|k| k.display().to_string());
        run.context = match &self.cfg.context {
            Some(c) => Some(c.clone()),
            None => {
                let c = self
                    .kubectl(
                        exec,
                        "current-context",
                        &["config", "current-context"],
                        None,
                        KUBECTL_TIMEOUT,
                    )
                    .await;
                c.ok().then(|| c.stdout.trim().to_string())
            }
        };
        let mut originals = Vec::new();
        for w in &self.cfg.workloads {
            let r = self
                .kubectl(
                    exec,
                    "get-workload",
                    &["get", w, "-n", &self.cfg.namespace, "-o", "json"],
                    None,
                    KUBECTL_TIMEOUT,
                )
                .await;
            if !r.ok() {
                return Err(CellFailed::new(
                    format!(
                        "cannot read {w} in namespace {}: {}",
                        self.cfg.namespace,
                        r.failure(KUBECTL_TIMEOUT)
                    ),
                    r.interrupted,
                ));
            }
            let j = parse_json(&r, w).map_err(|e| CellFailed::new(e, false))?;
            let selector = selector(&j).ok_or_else(|| {
                CellFailed::new(
                    format!("{w} has no spec.selector.matchLabels to find its pods by"),
                    false,
                )
            })?;
            originals.push(Original {
                workload: w.clone(),
                cpu_limit: annotation(&j, LIMIT_ANNOTATION),
                cpu_request: annotation(&j, REQUEST_ANNOTATION),
                selector,
            });
        }
        run.originals = serde_json::to_value(&originals).unwrap_or(Value::Null);
        self.originals = Some(originals);
        Ok(())
    }

    /// The changes of a cell, as kubectl calls: (label, args, stdin).
    fn changes(&self, cell: &CellPlan) -> Vec<(String, Vec<String>, Option<String>)> {
        let d = cell.driven.as_ref();
        let limit = d.and_then(|d| d.cpu.millis.map(|_| d.cpu.text.clone()));
        let request = self.cfg.cpu_request.as_ref().map(|(t, _)| Some(t.as_str()));
        let mut out = Vec::new();
        for w in &self.cfg.workloads {
            let patch = annotation_patch(limit.as_deref(), request).to_string();
            out.push((
                "patch".to_string(),
                vec![
                    "patch".into(),
                    w.clone(),
                    "-n".into(),
                    self.cfg.namespace.clone(),
                    "--type".into(),
                    "merge".into(),
                    "-p".into(),
                    patch,
                ],
                None,
            ));
        }
        let on = d.is_some_and(|d| d.access_log == "on");
        match self.cfg.access_log_method {
            AccessLogMethod::Telemetry => out.push((
                "apply-telemetry".into(),
                vec![
                    "apply".into(),
                    "-n".into(),
                    self.cfg.namespace.clone(),
                    "-f".into(),
                    "-".into(),
                ],
                Some(telemetry_manifest(&self.cfg.namespace, on).to_string()),
            )),
            AccessLogMethod::Configmap => out.push((
                "configmap".into(),
                vec![
                    "patch".into(),
                    "configmap".into(),
                    "istio".into(),
                    "-n".into(),
                    self.cfg.istio_namespace.clone(),
                    "--type".into(),
                    "merge".into(),
                    "-p".into(),
                    format!(
                        "{{\"data\":{{\"mesh\":<data.mesh with accessLogFile: {}>}}}}",
                        if on { "/dev/stdout" } else { "\"\"" }
                    ),
                ],
                None,
            )),
        }
        out
    }

    /// What `--dry-run` prints for a cell.
    pub fn describe(&self, cell: &CellPlan) -> Vec<String> {
        let mut out: Vec<String> = self
            .changes(cell)
            .into_iter()
            .map(|(_, args, stdin)| {
                let line = std::iter::once(self.cfg.kubectl.clone())
                    .chain(
                        self.args(&args.iter().map(String::as_str).collect::<Vec<_>>())
                            .iter()
                            .map(|a| shell_quote(a)),
                    )
                    .collect::<Vec<_>>()
                    .join(" ");
                match stdin {
                    Some(s) => format!("{line} <<< {s}"),
                    None => line,
                }
            })
            .collect();
        for w in &self.cfg.workloads {
            out.push(format!(
                "{} rollout status {w} -n {} --timeout={}s, then wait {}, then verify istio-proxy limits.cpu on its pods",
                self.cfg.kubectl,
                self.cfg.namespace,
                self.cfg.rollout_timeout.0.as_secs(),
                self.cfg.settle
            ));
        }
        out
    }

    /// Apply the cell's settings, wait for the rollouts, verify the pods.
    pub async fn apply(
        &mut self,
        exec: &mut Exec,
        cell: &CellPlan,
        run: &mut DriverRun,
        ev: &mut DriverEvidence,
    ) -> Result<(), CellFailed> {
        if self.originals.is_none() {
            self.start(exec, run).await?;
        }
        let t0 = Instant::now();
        let on = cell.driven.as_ref().is_some_and(|d| d.access_log == "on");
        for (label, args, stdin) in self.changes(cell) {
            if label == "configmap" {
                self.configmap(exec, on, ev).await?;
                continue;
            }
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = self
                .kubectl(
                    exec,
                    &label,
                    &argv,
                    stdin.clone().map(String::into_bytes),
                    KUBECTL_TIMEOUT,
                )
                .await;
            ev.applied.push(match &stdin {
                Some(s) => format!("{} <<< {s}", r.cmdline),
                None => r.cmdline.clone(),
            });
            if label == "apply-telemetry" {
                // restore removes it even when applying failed half-way
                self.telemetry_applied = true;
            }
            if !r.ok() {
                return Err(CellFailed::new(r.failure(KUBECTL_TIMEOUT), r.interrupted));
            }
        }
        self.wait_rollouts(exec)
            .await
            .map_err(|(e, i)| CellFailed::new(e, i))?;
        if !exec.sleep(self.cfg.settle.0).await {
            return Err(CellFailed::new(
                "interrupted while the rollout settled".into(),
                true,
            ));
        }
        let want = cell
            .driven
            .as_ref()
            .and_then(|d| d.cpu.millis.map(|m| (m, d.cpu.text.clone())));
        ev.pods = self.verify(exec, want.as_ref()).await?;
        ev.verified = Some(format!(
            "{} pods of {} ready; istio-proxy resources.limits.cpu {} on every one",
            ev.pods.len(),
            self.cfg.workloads.join(", "),
            match &want {
                Some((_, t)) => format!("= {t}"),
                None => {
                    let mut seen: Vec<String> = ev
                        .pods
                        .iter()
                        .filter_map(|p| p.proxy_cpu_limit.clone())
                        .collect();
                    seen.sort();
                    seen.dedup();
                    format!(
                        "as the injector sets it with no annotation ({})",
                        if seen.is_empty() {
                            "none".into()
                        } else {
                            seen.join(", ")
                        }
                    )
                }
            }
        ));
        ev.apply_s = t0.elapsed().as_secs_f64();
        self.since = Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
        Ok(())
    }

    async fn configmap(
        &mut self,
        exec: &mut Exec,
        on: bool,
        ev: &mut DriverEvidence,
    ) -> Result<(), CellFailed> {
        let ns = self.cfg.istio_namespace.clone();
        let r = self
            .kubectl(
                exec,
                "get-configmap",
                &["get", "configmap", "istio", "-n", &ns, "-o", "json"],
                None,
                KUBECTL_TIMEOUT,
            )
            .await;
        if !r.ok() {
            return Err(CellFailed::new(
                format!(
                    "cannot read the istio ConfigMap: {}",
                    r.failure(KUBECTL_TIMEOUT)
                ),
                r.interrupted,
            ));
        }
        let j = parse_json(&r, "configmap istio").map_err(|e| CellFailed::new(e, false))?;
        let mesh = j
            .pointer("/data/mesh")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                CellFailed::new(format!("configmap istio in {ns} has no data.mesh"), false)
            })?
            .to_string();
        if self.configmap_original.is_none() {
            self.configmap_original = Some(mesh.clone());
        }
        let patch = json!({"data": {"mesh": set_access_log_file(&mesh, on)}}).to_string();
        let r = self
            .patch_configmap(exec, "patch-configmap", &ns, &patch)
            .await;
        ev.applied.push(r.cmdline.clone());
        if r.ok() {
            Ok(())
        } else {
            Err(CellFailed::new(r.failure(KUBECTL_TIMEOUT), r.interrupted))
        }
    }

    async fn wait_rollouts(&self, exec: &mut Exec) -> Result<(), (String, bool)> {
        let t = self.cfg.rollout_timeout.0;
        let flag = format!("--timeout={}s", t.as_secs().max(1));
        for w in &self.cfg.workloads {
            let r = self
                .kubectl(
                    exec,
                    "rollout",
                    &["rollout", "status", w, "-n", &self.cfg.namespace, &flag],
                    None,
                    t + Duration::from_secs(30),
                )
                .await;
            if !r.ok() {
                return Err((
                    format!(
                        "the rollout of {w} did not complete within {}: {}",
                        humantime::format_duration(t),
                        r.failure(t)
                    ),
                    r.interrupted,
                ));
            }
        }
        Ok(())
    }

    /// Every live pod of every workload ready, its istio-proxy limit the cell's.
    async fn verify(
        &self,
        exec: &mut Exec,
        want: Option<&(u64, String)>,
    ) -> Result<Vec<PodFacts>, CellFailed> {
        let originals = self.originals.clone().unwrap_or_default();
        let mut pods = Vec::new();
        for o in &originals {
            let r = self
                .kubectl(
                    exec,
                    "get-pods",
                    &[
                        "get",
                        "pods",
                        "-n",
                        &self.cfg.namespace,
                        "-l",
                        &o.selector,
                        "-o",
                        "json",
                    ],
                    None,
                    KUBECTL_TIMEOUT,
                )
                .await;
            if !r.ok() {
                return Err(CellFailed::new(r.failure(KUBECTL_TIMEOUT), r.interrupted));
            }
            let j = parse_json(&r, "pods").map_err(|e| CellFailed::new(e, false))?;
            let items = j
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let live: Vec<&Value> = items
                .iter()
                .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
                .collect();
            if live.is_empty() {
                return Err(CellFailed::new(
                    format!("{} has no pods (selector {})", o.workload, o.selector),
                    false,
                ));
            }
            for p in live {
                let name = p
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string();
                let proxy = p
                    .pointer("/spec/containers")
                    .and_then(Value::as_array)
                    .and_then(|cs| cs.iter().find(|c| c.get("name").and_then(Value::as_str) == Some("istio-proxy")))
                    .ok_or_else(|| {
                        CellFailed::new(
                            format!("pod {name} of {} has no istio-proxy container: is sidecar injection on for namespace {}?", o.workload, self.cfg.namespace),
                            false,
                        )
                    })?;
                let limit = proxy
                    .pointer("/resources/limits/cpu")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let ready = p.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
                    && p.pointer("/status/containerStatuses")
                        .and_then(Value::as_array)
                        .is_some_and(|cs| {
                            !cs.is_empty()
                                && cs
                                    .iter()
                                    .all(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                        });
                let facts = PodFacts {
                    name: name.clone(),
                    workload: o.workload.clone(),
                    node: p
                        .pointer("/spec/nodeName")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    proxy_image: proxy
                        .get("image")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    proxy_cpu_limit: limit.clone(),
                    ready,
                    access_log_lines: None,
                };
                if !ready {
                    return Err(CellFailed::new(
                        format!("pod {name} of {} is not ready", o.workload),
                        false,
                    ));
                }
                if let Some((m, text)) = want {
                    let have = limit.as_deref().and_then(|l| parse_cpu_millis(l).ok());
                    if have != Some(*m) {
                        return Err(CellFailed::new(
                            format!(
                                "pod {name} of {}: istio-proxy resources.limits.cpu is {}, the cell wants {text}",
                                o.workload,
                                limit.as_deref().unwrap_or("not set")
                            ),
                            false,
                        ));
                    }
                }
                pods.push(facts);
            }
        }
        Ok(pods)
    }

    /// After the measured window: did access-log lines appear (on) or not (off)?
    pub async fn after(
        &mut self,
        exec: &mut Exec,
        cell: &CellPlan,
        ev: &mut DriverEvidence,
    ) -> Result<(), String> {
        let Some(since) = self.since.clone() else {
            return Ok(());
        };
        let on = cell.driven.as_ref().is_some_and(|d| d.access_log == "on");
        let mut total = 0u64;
        let flag = format!("--since-time={since}");
        for p in &mut ev.pods {
            let r = self
                .kubectl(
                    exec,
                    "logs",
                    &[
                        "logs",
                        "-n",
                        &self.cfg.namespace,
                        &p.name,
                        "-c",
                        "istio-proxy",
                        &flag,
                    ],
                    None,
                    KUBECTL_TIMEOUT,
                )
                .await;
            if !r.ok() {
                return Err(format!(
                    "cannot read the istio-proxy log of {}: {}",
                    p.name,
                    r.failure(KUBECTL_TIMEOUT)
                ));
            }
            let n = r.stdout.lines().filter(|l| is_access_log_line(l)).count() as u64;
            p.access_log_lines = Some(n);
            total += n;
        }
        ev.after = Some(format!(
            "{total} access-log lines from {} istio-proxy containers since {since} (access log {})",
            ev.pods.len(),
            if on { "on" } else { "off" }
        ));
        match (on, total) {
            (true, 0) => Err("access logging was set on, but no istio-proxy wrote an access-log line during the cell".into()),
            (false, n) if n > 0 => Err(format!("access logging was set off, but {n} access-log lines appeared during the cell")),
            _ => Ok(()),
        }
    }

    /// Put back what the run changed: annotations, the Telemetry resource, the ConfigMap.
    pub async fn restore(
        &mut self,
        exec: &mut Exec,
        restored: &mut Vec<String>,
    ) -> Result<(), String> {
        let mut errors = Vec::new();
        if let Some(originals) = self.originals.take() {
            for o in &originals {
                let request = self
                    .cfg
                    .cpu_request
                    .as_ref()
                    .map(|_| o.cpu_request.as_deref());
                let patch = annotation_patch(o.cpu_limit.as_deref(), request).to_string();
                let r = self
                    .kubectl(
                        exec,
                        "restore-patch",
                        &[
                            "patch",
                            &o.workload,
                            "-n",
                            &self.cfg.namespace,
                            "--type",
                            "merge",
                            "-p",
                            &patch,
                        ],
                        None,
                        KUBECTL_TIMEOUT,
                    )
                    .await;
                restored.push(r.cmdline.clone());
                if !r.ok() {
                    errors.push(r.failure(KUBECTL_TIMEOUT));
                }
            }
            if let Err((e, _)) = self.wait_rollouts(exec).await {
                errors.push(e);
            }
        }
        if self.telemetry_applied {
            let r = self
                .kubectl(
                    exec,
                    "restore-telemetry",
                    &[
                        "delete",
                        "telemetry.telemetry.istio.io",
                        TELEMETRY_NAME,
                        "-n",
                        &self.cfg.namespace,
                        "--ignore-not-found",
                    ],
                    None,
                    KUBECTL_TIMEOUT,
                )
                .await;
            restored.push(r.cmdline.clone());
            if r.ok() {
                self.telemetry_applied = false;
            } else {
                errors.push(r.failure(KUBECTL_TIMEOUT));
            }
        }
        if let Some(mesh) = self.configmap_original.take() {
            let patch = json!({"data": {"mesh": mesh}}).to_string();
            let ns = self.cfg.istio_namespace.clone();
            let r = self
                .patch_configmap(exec, "restore-configmap", &ns, &patch)
                .await;
            restored.push(r.cmdline.clone());
            if !r.ok() {
                errors.push(r.failure(KUBECTL_TIMEOUT));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configmap_text_gets_one_access_log_line() {
        let mesh = "accessLogFile: /dev/stdout\ndefaultConfig:\n  concurrency: 2\n  accessLogFile: nested-stays\n";
        assert_eq!(
            set_access_log_file(mesh, false),
            "defaultConfig:\n  concurrency: 2\n  accessLogFile: nested-stays\naccessLogFile: \"\"\n"
        );
        assert_eq!(
            set_access_log_file("", true),
            "accessLogFile: /dev/stdout\n"
        );
        assert_eq!(
            set_access_log_file("enableTracing: true\n\n", true),
            "enableTracing: true\naccessLogFile: /dev/stdout\n"
        );
    }

    #[test]
    fn access_log_lines_are_told_from_envoy_messages() {
        assert!(is_access_log_line(
            "[2026-12-01T10:00:00.123Z] \"GET / HTTP/1.1\" 200 - via_upstream - \"-\" 0 3 1 0"
        ));
        assert!(is_access_log_line(
            "{\"start_time\":\"2026-12-01T10:00:00Z\",\"response_code\":200}"
        ));
        assert!(!is_access_log_line(
            "2026-12-01T10:00:00.000000Z\tinfo\tEnvoy proxy is ready"
        ));
        assert!(!is_access_log_line(
            "{\"level\":\"info\",\"msg\":\"ready\"}"
        ));
    }

    #[test]
    fn patches_set_or_remove_the_annotations() {
        let p = annotation_patch(Some("100m"), None);
        assert_eq!(
            p.to_string(),
            r#"{"spec":{"template":{"metadata":{"annotations":{"sidecar.istio.io/proxyCPULimit":"100m"}}}}}"#
        );
        let p = annotation_patch(None, Some(Some("50m")));
        let ann = &p["spec"]["template"]["metadata"]["annotations"];
        assert!(ann[LIMIT_ANNOTATION].is_null());
        assert_eq!(ann[REQUEST_ANNOTATION], "50m");
        let t = telemetry_manifest("shop", false);
        assert_eq!(t["spec"]["accessLogging"][0]["disabled"], true);
        assert_eq!(
            t["spec"]["accessLogging"][0]["providers"][0]["name"],
            "envoy"
        );
        assert_eq!(t["metadata"]["namespace"], "shop");
    }
}
