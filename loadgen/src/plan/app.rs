//! `[app]`: the built-in app server as the target, as an [`app::AppConfig`].

use crate::scenario::{AppSection, Source, SpecError};
use app::{AppConfig, Stall};
use toml::Spanned;

pub(super) fn app(src: &Source, a: &Spanned<AppSection>) -> Result<AppConfig, SpecError> {
    let s = a.get_ref();
    let body_bytes = super::load::int(
        src,
        &s.body_bytes,
        "app.body_bytes",
        0,
        app::MAX_BODY_BYTES as i64,
        0,
    )? as usize;
    let mut headers = Vec::new();
    for (k, v) in &s.headers {
        if http::HeaderName::from_bytes(k.as_bytes()).is_err()
            || http::HeaderValue::from_str(v).is_err()
        {
            return Err(src.error_at(
                a.span(),
                format!("app.headers: `{k}: {v}` is not a valid header"),
            ));
        }
        headers.push((k.clone(), v.clone()));
    }
    let stall = match (s.stall, s.stall_every) {
        (None, None) => None,
        (Some(stall), Some(every)) => Some(Stall { stall, every }),
        _ => return Err(src.error_at(a.span(), "app.stall and app.stall_every go together")),
    };
    let cfg = AppConfig {
        service_time: s.service_time.unwrap_or_default(),
        service_time_dist: s.service_time_dist.unwrap_or_default(),
        headers,
        body_bytes,
        stall,
        ..AppConfig::default()
    };
    cfg.check()
        .map_err(|e| src.error_at(a.span(), format!("[app]: {e}")))?;
    Ok(cfg)
}
