//! Bringing a mesh up for one cell and down again: PKI (once per run), one app process
//! per subset, the sidecar process inside its cgroup, the 1 Hz throttling sampler, and
//! the [`SidecarStats`] of the cell.
use crate::cgroup::{unique_name, Cgroup, Cgroups, Limits};
use crate::pki::{MeshPki, PkiSpec};
use crate::process::{ChildProc, Role};
use crate::spec::{CellMeshSettings, MeshSpec};
use crate::MeshError;
use meshbench_schema::{CpuStat, SidecarStats};
use sidecar::{AccessLogMode, Route, SidecarConfig};
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

    /// Start apps and a fresh sidecar with `settings`. `tag` names the cell (cgroup name,
    /// file names). Blocks until every process has said `listening on`.
    pub fn up(&mut self, settings: &CellMeshSettings, tag: &str) -> Result<RunningMesh, MeshError> {
        // cell-0, cell-1, ... like the run's interval logs
        let cell_dir = self.dir.join(format!("cell-{}", self.cells));
        self.cells += 1;
        std::fs::create_dir_all(&cell_dir).map_err(|source| MeshError::Io {
            path: cell_dir.clone(),
            source,
        })?;
        // The cgroup first: if it cannot be made, nothing is started. A cell without
        // limits runs without one where cgroups cannot be written (nothing to apply), and
        // says that its cpu.stat was not measured.
        let needs_cgroup = settings.cpu_millis.is_some() || settings.memory_bytes.is_some();
        let mut note = None;
        let cgroup = if !settings.apply_limits {
            None
        } else {
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
                        Ok(cg) => Some(cg),
                        Err(e) if !needs_cgroup => {
                            note = Some(format!("sidecar cpu.stat not measured: {e}"));
                            None
                        }
                        Err(e) => return Err(MeshError::Cgroup(e.to_string())),
                    }
                }
                Err(e) if !needs_cgroup => {
                    note = Some(format!("sidecar cpu.stat not measured: {e}"));
                    None
                }
                Err(e) => return Err(e),
            }
        };

        let mut apps = Vec::new();
        for s in &self.spec.subsets {
            let config = app::AppConfig {
                headers: vec![(self.spec.subset_header.clone(), s.name.clone())],
                service_time: s.service_time,
                service_time_dist: s.service_time_dist,
                body_bytes: self.spec.response_bytes.unwrap_or(0) as usize,
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

        let access_log_path = cell_dir.join("access.log");
        let config = SidecarConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            cert: self.pki.server_cert.clone(),
            key: self.pki.server_key.clone(),
            ca: self.pki.ca_cert.clone(),
            routes: self
                .spec
                .subsets
                .iter()
                .zip(&apps)
                .map(|(s, a)| Route {
                    subset: s.name.clone(),
                    weight: s.weight,
                    upstream: a.addr(),
                })
                .collect(),
            concurrency: settings.concurrency,
            access_log: settings.access_log,
            access_log_path: (settings.access_log != AccessLogMode::Off)
                .then(|| access_log_path.clone()),
            upstream_timeout_ms: 15_000,
        };
        let sidecar = ChildProc::start(
            "sidecar",
            &self.exe,
            Role::Sidecar,
            &config,
            &cell_dir,
            |pid| match &cgroup {
                // All threads move with the pid; the few µs before this are not limited.
                Some(cg) => cg
                    .add_pid(pid)
                    .map_err(|e| MeshError::Cgroup(e.to_string())),
                None => Ok(()),
            },
        )?;
        let addr = sidecar.addr();
        Ok(RunningMesh {
            url: format!("https://{}:{}/", self.pki.server_name, addr.port()),
            addr,
            pki: self.pki.clone(),
            subset_header: self.spec.subset_header.clone(),
            weights: self.spec.weights(),
            settings: settings.clone(),
            access_log_path: (settings.access_log != AccessLogMode::Off).then_some(access_log_path),
            cell_dir,
            sidecar,
            apps,
            cgroup,
            note,
            baseline: Arc::new(Mutex::new(None)),
            sampler: None,
        })
    }
}

/// A mesh serving one cell. Stopped by [`RunningMesh::down`] or on drop.
pub struct RunningMesh {
    /// `https://<service>.<namespace>.svc.cluster.local:<port>/`; connect to [`Self::addr`]
    /// and verify the server by that name (the name does not resolve: use `addr`).
    pub url: String,
    /// The sidecar's listening address on loopback.
    pub addr: SocketAddr,
    /// CA, client certificate/key, server name and SPIFFE ids.
    pub pki: MeshPki,
    pub subset_header: String,
    pub weights: Vec<(String, u32)>,
    pub settings: CellMeshSettings,
    pub access_log_path: Option<PathBuf>,
    pub cell_dir: PathBuf,
    /// Why no cgroup was used for a cell without limits (cgroups not writable).
    pub note: Option<String>,
    sidecar: ChildProc,
    apps: Vec<ChildProc>,
    cgroup: Option<Cgroup>,
    baseline: Arc<Mutex<Option<CpuStat>>>,
    sampler: Option<Sampler>,
}

struct Sampler {
    stop: mpsc::Sender<()>,
    handle: std::thread::JoinHandle<()>,
    per_second: Arc<Mutex<Vec<u64>>>,
}

/// The sidecar's counters now: from its cgroup, or from /proc without one.
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

impl RunningMesh {
    /// Pid of the sidecar process.
    pub fn sidecar_pid(&self) -> u32 {
        self.sidecar.pid()
    }

    /// Pids of the app processes.
    pub fn app_pids(&self) -> Vec<u32> {
        self.apps.iter().map(|a| a.pid()).collect()
    }

    /// The sidecar's cgroup directories (empty without limits).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.cgroup
            .as_ref()
            .map(|c| c.dirs().to_vec())
            .unwrap_or_default()
    }

    /// Whether the CPU limit is enforced by a cgroup.
    pub fn cpu_limit_applied(&self) -> bool {
        self.cgroup.is_some()
    }

    /// The measured window starts `delay` from now (the engine's warmup): cpu.stat
    /// deltas and the 1 Hz throttled-time samples count from then. Without a cgroup
    /// there is nothing to sample.
    pub fn begin_measurement_after(&mut self, delay: Duration) {
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
                        ps.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(n.throttled_usec.saturating_sub(p.throttled_usec));
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

    fn stop_sampler(&mut self) -> Vec<u64> {
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

    /// What the sidecar did since [`Self::begin_measurement`] (or since it started).
    /// Access-log lines are counted in the file; a buffered log may still hold up to a
    /// second of lines, which [`Self::down`] flushes first.
    pub fn stats(&self) -> SidecarStats {
        let cpu = cpu_now(self.cgroup.as_ref()).map(|now| match self.baseline() {
            Some(b) => delta(b, now),
            None => now,
        });
        let per_second = self
            .sampler
            .as_ref()
            .map(|s| {
                s.per_second
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            })
            .unwrap_or_default();
        SidecarStats {
            cpu_stat: cpu,
            memory_peak_bytes: self
                .cgroup
                .as_ref()
                .and_then(|c| c.memory_peak())
                .or_else(|| crate::proc::peak_rss(self.sidecar.pid())),
            access_log_lines: self.count_log_lines(),
            throttled_usec_per_second: per_second,
        }
    }

    /// CPU time the sidecar used so far (µs), with or without a cgroup.
    pub fn sidecar_cpu_usec(&self) -> u64 {
        match cpu_now(self.cgroup.as_ref()) {
            Some(s) => s.usage_usec,
            None => crate::proc::cpu_usec(self.sidecar.pid()),
        }
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

    /// Stop everything and return the cell's sidecar statistics: the sampler stops, the
    /// final cpu.stat and memory peak are read, the sidecar gets SIGTERM (flushing its
    /// access log), the apps are stopped, the cgroup is removed.
    pub fn down(mut self) -> Result<SidecarStats, MeshError> {
        let per_second = self.stop_sampler();
        let cpu = cpu_now(self.cgroup.as_ref()).map(|now| match self.baseline() {
            Some(b) => delta(b, now),
            None => now,
        });
        let memory_peak_bytes = self
            .cgroup
            .as_ref()
            .and_then(|c| c.memory_peak())
            .or_else(|| crate::proc::peak_rss(self.sidecar.pid()));
        let clean = self.sidecar.stop();
        let access_log_lines = self.count_log_lines();
        for a in &mut self.apps {
            a.stop();
        }
        if let Some(mut cg) = self.cgroup.take() {
            cg.remove().map_err(|e| MeshError::Cgroup(e.to_string()))?;
        }
        if !clean {
            return Err(MeshError::NotReady {
                what: "sidecar".into(),
                reason: "did not exit on SIGTERM and was killed; its access log may be incomplete"
                    .into(),
            });
        }
        Ok(SidecarStats {
            cpu_stat: cpu,
            memory_peak_bytes,
            access_log_lines,
            throttled_usec_per_second: per_second,
        })
    }
}

impl Drop for RunningMesh {
    fn drop(&mut self) {
        self.stop_sampler();
        self.sidecar.stop();
        for a in &mut self.apps {
            a.stop();
        }
        // `cgroup` drops after this and removes itself.
    }
}
