//! The validated plan: every default resolved, every value checked, every error placed at
//! `file:line:col`. The plan expands into cells (one when there is no matrix); the run loop
//! runs the cells in turn.

use crate::scenario::{DistRaw, ModeRaw, ProtocolRaw, Scenario, ScenarioError, Source};
use crate::units::Dur;
use meshbench_schema::{CellSettings, LoadMode};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which HTTP version to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http1,
    Http2,
    /// HTTP/2 when the server picks it through ALPN, else HTTP/1.1 (plain: HTTP/1.1).
    Auto,
}

/// Service-time distribution of the built-in app server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Dist {
    #[default]
    Fixed,
    Exp,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub name: String,
    pub description: Option<String>,
    pub scenario_file: Option<PathBuf>,
    pub target: TargetPlan,
    pub load: LoadPlan,
    /// The built-in app server, when the scenario asks for one.
    pub app: Option<AppPlan>,
    pub slo: Vec<String>,
    pub cells: Vec<CellPlan>,
    /// The embedded mesh, when the scenario has a `[mesh]` section.
    pub mesh: Option<mesh::MeshSpec>,
    /// Canary split / STRICT mTLS checks (embedded mesh, or `[checks]` for a real one).
    pub checks: Option<mesh::ChecksSpec>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetPlan {
    /// Absent when a cell target (the built-in app, the embedded mesh) provides it.
    pub url: Option<String>,
    pub method: String,
    /// Path and query sent, e.g. `/api?x=1`; overrides the path of `url`.
    pub path: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub protocol: Protocol,
    pub timeout: Dur,
    pub connect_timeout: Dur,
    pub subset_header: Option<String>,
    pub tls: TlsPlan,
}

/// TLS files and identity checks; paths are resolved (relative to the scenario file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsPlan {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: Option<String>,
    pub expected_identity: Option<String>,
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadPlan {
    pub mode: LoadMode,
    /// Requests/s; always set in open loop.
    pub rate: Option<f64>,
    pub connections: u32,
    /// Measured window; at least one of `duration` and `requests` is set.
    pub duration: Option<Dur>,
    pub requests: Option<u64>,
    pub warmup: Dur,
    pub think_time: Dur,
    /// Concurrent HTTP/2 streams per connection (HTTP/1.1 always 1).
    pub max_in_flight: u32,
    pub threads: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppPlan {
    pub service_time: Dur,
    pub service_time_dist: Dist,
    pub headers: Vec<(String, String)>,
    pub body_bytes: usize,
    pub stall: Option<Dur>,
    pub stall_every: Option<Dur>,
}

/// One cell of the run: what distinguishes it and how hard to push.
#[derive(Debug, Clone, Serialize)]
pub struct CellPlan {
    pub index: usize,
    /// Stable id, e.g. `default` or `cpu=100m,log=off`.
    pub id: String,
    pub mode: LoadMode,
    pub rate: Option<f64>,
    pub connections: u32,
    pub settings: CellSettings,
}

impl Plan {
    /// Read, override, parse and validate a scenario file.
    pub fn load(path: &Path, sets: &[String]) -> Result<Plan, ScenarioError> {
        let src = Source::load(path, sets)?;
        let sc = src.parse()?;
        Plan::from_scenario(&sc, &src)
    }

    /// Validate a parsed scenario.
    pub fn from_scenario(sc: &Scenario, src: &Source) -> Result<Plan, ScenarioError> {
        let name = match &sc.name {
            Some(n) => {
                let v = n.get_ref().trim();
                if v.is_empty()
                    || !v
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return Err(src.error_at(
                        n.span(),
                        "name must be non-empty and use only letters, digits, '-', '_' and '.'",
                    ));
                }
                v.to_string()
            }
            None => src
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "scenario".into()),
        };

        let t = &sc.target;
        let mut scheme_https = false;
        let url = match &t.url {
            Some(u) => {
                let uri: http::Uri = u
                    .get_ref()
                    .parse()
                    .map_err(|e| src.error_at(u.span(), format!("target.url is not a URL: {e}")))?;
                match uri.scheme_str() {
                    Some("http") => {}
                    Some("https") => scheme_https = true,
                    _ => {
                        return Err(src
                            .error_at(u.span(), "target.url must start with http:// or https://"))
                    }
                }
                if uri.host().is_none() {
                    return Err(src.error_at(u.span(), "target.url has no host"));
                }
                Some(u.get_ref().clone())
            }
            None => None,
        };
        if url.is_none() && sc.app.is_none() && sc.mesh.is_none() {
            return Err(src.error_file(
                "target.url is required (or an [app] section to run against the built-in app server)",
            ));
        }
        if url.is_some() {
            if let Some(app) = &sc.app {
                return Err(src.error_at(
                    app.span(),
                    "[app] and target.url are exclusive: the built-in app server is the target",
                ));
            }
        }
        let method = match &t.method {
            Some(m) => {
                let v = m.get_ref().to_ascii_uppercase();
                http::Method::from_bytes(v.as_bytes())
                    .map_err(|_| src.error_at(m.span(), "target.method is not an HTTP method"))?;
                v
            }
            None => "GET".into(),
        };
        let path = match &t.path {
            Some(p) => {
                if !p.get_ref().starts_with('/') {
                    return Err(src.error_at(p.span(), "target.path must start with '/'"));
                }
                http::uri::PathAndQuery::try_from(p.get_ref().as_str())
                    .map_err(|e| src.error_at(p.span(), format!("target.path: {e}")))?;
                Some(p.get_ref().clone())
            }
            None => None,
        };
        let mut headers = Vec::new();
        for (k, v) in &t.headers {
            http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                src.error_at(
                    v.span(),
                    format!("target.headers: `{k}` is not a header name"),
                )
            })?;
            http::HeaderValue::from_str(v.get_ref()).map_err(|_| {
                src.error_at(
                    v.span(),
                    format!("target.headers.{k}: not a valid header value"),
                )
            })?;
            headers.push((k.clone(), v.get_ref().clone()));
        }
        let timeout = t
            .timeout
            .as_ref()
            .map(|d| positive_dur(src, d, "target.timeout"))
            .transpose()?
            .unwrap_or(Dur(Duration::from_secs(5)));
        let connect_timeout = t
            .connect_timeout
            .as_ref()
            .map(|d| positive_dur(src, d, "target.connect_timeout"))
            .transpose()?
            .unwrap_or(timeout);
        let subset_header = match &t.subset_header {
            Some(h) => {
                http::HeaderName::from_bytes(h.get_ref().as_bytes()).map_err(|_| {
                    src.error_at(h.span(), "target.subset_header is not a header name")
                })?;
                Some(h.get_ref().to_ascii_lowercase())
            }
            None => None,
        };
        let protocol = match t.protocol {
            None | Some(ProtocolRaw::Auto) => Protocol::Auto,
            Some(ProtocolRaw::Http1) => Protocol::Http1,
            Some(ProtocolRaw::Http2) => Protocol::Http2,
        };

        let mut tls = TlsPlan::default();
        if let Some(ts) = &t.tls {
            if url.is_some() && !scheme_https {
                return Err(src.error_at(
                    ts.span(),
                    "[target.tls] is set but target.url uses http://; use https://",
                ));
            }
            let ts_ref = ts.get_ref();
            let file = |f: &Option<toml::Spanned<String>>, what: &str| {
                f.as_ref()
                    .map(|p| {
                        let path = src.resolve_path(&p.span(), p.get_ref());
                        std::fs::File::open(&path).map_err(|e| {
                            src.error_at(
                                p.span(),
                                format!("target.tls.{what}: cannot read {}: {e}", path.display()),
                            )
                        })?;
                        Ok::<_, ScenarioError>(path)
                    })
                    .transpose()
            };
            tls.ca = file(&ts_ref.ca, "ca")?;
            tls.cert = file(&ts_ref.cert, "cert")?;
            tls.key = file(&ts_ref.key, "key")?;
            match (&ts_ref.cert, &ts_ref.key) {
                (Some(c), None) => {
                    return Err(src.error_at(c.span(), "target.tls.cert needs target.tls.key"))
                }
                (None, Some(k)) => {
                    return Err(src.error_at(k.span(), "target.tls.key needs target.tls.cert"))
                }
                _ => {}
            }
            if let Some(sn) = &ts_ref.server_name {
                rustls_pki_types::ServerName::try_from(sn.get_ref().as_str()).map_err(|_| {
                    src.error_at(sn.span(), "target.tls.server_name is not a DNS name or IP")
                })?;
                tls.server_name = Some(sn.get_ref().clone());
            }
            if let Some(id) = &ts_ref.expected_identity {
                if id.get_ref().trim().is_empty() {
                    return Err(src.error_at(id.span(), "target.tls.expected_identity is empty"));
                }
                tls.expected_identity = Some(id.get_ref().trim().to_string());
            }
            tls.insecure_skip_verify = ts_ref.insecure_skip_verify;
        }

        let l = &sc.load;
        let mode = match l.mode {
            None | Some(ModeRaw::Open) => LoadMode::Open,
            Some(ModeRaw::Closed) => LoadMode::Closed,
        };
        let rate = match &l.rate {
            Some(r) => {
                let v = *r.get_ref();
                if !v.is_finite() || v <= 0.0 {
                    return Err(src.error_at(r.span(), "load.rate must be > 0"));
                }
                if mode == LoadMode::Closed {
                    return Err(src.error_at(
                        r.span(),
                        "load.rate applies to open loop only (load.mode = \"closed\")",
                    ));
                }
                Some(v)
            }
            None if mode == LoadMode::Open => {
                return Err(src.error_file("load.rate is required in open loop (requests/s)"))
            }
            None => None,
        };
        let int = |v: &Option<toml::Spanned<i64>>, what: &str, min: i64, max: i64, def: i64| match v
        {
            Some(x) => {
                let n = *x.get_ref();
                if n < min || n > max {
                    Err(src.error_at(x.span(), format!("{what} must be between {min} and {max}")))
                } else {
                    Ok(n)
                }
            }
            None => Ok(def),
        };
        let connections = int(&l.connections, "load.connections", 1, 100_000, 4)? as u32;
        let max_in_flight = int(&l.max_in_flight, "load.max_in_flight", 1, 10_000, 16)? as u32;
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as i64)
            .unwrap_or(1);
        let threads = int(&l.threads, "load.threads", 1, 1024, cpus)? as u32;
        let duration = l
            .duration
            .as_ref()
            .map(|d| positive_dur(src, d, "load.duration"))
            .transpose()?;
        let requests = match &l.requests {
            Some(r) if *r.get_ref() <= 0 => {
                return Err(src.error_at(r.span(), "load.requests must be > 0"))
            }
            Some(r) => Some(*r.get_ref() as u64),
            None => None,
        };
        if duration.is_none() && requests.is_none() {
            return Err(src.error_file(
                "load.duration or load.requests is required (the run must be bounded)",
            ));
        }
        let warmup = l
            .warmup
            .as_ref()
            .map(|d| *d.get_ref())
            .unwrap_or(Dur(Duration::ZERO));
        let think_time = match &l.think_time {
            Some(d) if mode == LoadMode::Open => {
                return Err(src.error_at(
                    d.span(),
                    "load.think_time applies to closed loop only (load.mode = \"closed\")",
                ))
            }
            Some(d) => *d.get_ref(),
            None => Dur(Duration::ZERO),
        };

        let app = match &sc.app {
            Some(a) => {
                let a_ref = a.get_ref();
                let body_bytes = int(&a_ref.body_bytes, "app.body_bytes", 0, 64 << 20, 0)? as usize;
                let mut hs = Vec::new();
                for (k, v) in &a_ref.headers {
                    if http::HeaderName::from_bytes(k.as_bytes()).is_err()
                        || http::HeaderValue::from_str(v).is_err()
                    {
                        return Err(src.error_at(
                            a.span(),
                            format!("app.headers: `{k}: {v}` is not a valid header"),
                        ));
                    }
                    hs.push((k.clone(), v.clone()));
                }
                if a_ref.stall.is_some() != a_ref.stall_every.is_some() {
                    return Err(src.error_at(a.span(), "app.stall and app.stall_every go together"));
                }
                if let (Some(s), Some(e)) = (a_ref.stall, a_ref.stall_every) {
                    if s.0 >= e.0 || e.0.is_zero() {
                        return Err(src
                            .error_at(a.span(), "app.stall must be shorter than app.stall_every"));
                    }
                }
                Some(AppPlan {
                    service_time: a_ref.service_time.unwrap_or(Dur(Duration::ZERO)),
                    service_time_dist: match a_ref.service_time_dist {
                        Some(DistRaw::Exp) => Dist::Exp,
                        _ => Dist::Fixed,
                    },
                    headers: hs,
                    body_bytes,
                    stall: a_ref.stall,
                    stall_every: a_ref.stall_every,
                })
            }
            None => None,
        };

        let slo = sc.slo.iter().map(|s| s.get_ref().clone()).collect();
        let load = LoadPlan {
            mode,
            rate,
            connections,
            duration,
            requests,
            warmup,
            think_time,
            max_in_flight,
            threads,
        };
        let mesh_plan = crate::mesh_target::plan_mesh(
            sc,
            src,
            mode,
            rate,
            connections,
            scheme_https && tls.ca.is_some(),
        )?;
        let subset_header = subset_header.or(mesh_plan.subset_header);
        let cells = mesh_plan.cells.unwrap_or_else(|| {
            vec![CellPlan {
                index: 0,
                id: "default".into(),
                mode,
                rate,
                connections,
                settings: CellSettings {
                    rate,
                    connections,
                    ..Default::default()
                },
            }]
        });
        Ok(Plan {
            name,
            description: sc.description.clone(),
            scenario_file: Some(src.path.clone()),
            target: TargetPlan {
                url,
                method,
                path,
                headers,
                body: t.body.clone().unwrap_or_default(),
                protocol,
                timeout,
                connect_timeout,
                subset_header,
                tls,
            },
            load,
            app,
            slo,
            cells,
            mesh: mesh_plan.mesh,
            checks: mesh_plan.checks,
        })
    }
}

fn positive_dur(src: &Source, d: &toml::Spanned<Dur>, what: &str) -> Result<Dur, ScenarioError> {
    if d.get_ref().0.is_zero() {
        return Err(src.error_at(d.span(), format!("{what} must be > 0")));
    }
    Ok(*d.get_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Result<Plan, String> {
        let src = Source::new("s.toml", text);
        let sc = src.parse().map_err(|e| e.to_string())?;
        Plan::from_scenario(&sc, &src).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_resolved() {
        let p =
            plan("[target]\nurl = \"http://127.0.0.1:1/\"\n[load]\nrate = 10\nduration = \"2s\"\n")
                .unwrap();
        assert_eq!(p.name, "s");
        assert_eq!(p.load.mode, LoadMode::Open);
        assert_eq!(p.load.connections, 4);
        assert_eq!(p.target.method, "GET");
        assert_eq!(p.target.timeout.0, Duration::from_secs(5));
        assert_eq!(p.cells.len(), 1);
        assert_eq!(p.cells[0].settings.rate, Some(10.0));
    }

    #[test]
    fn errors_are_placed() {
        let e = plan("[target]\nurl = \"http://x/\"\n[load]\nrate = 0\nduration = \"2s\"\n")
            .unwrap_err();
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
}
