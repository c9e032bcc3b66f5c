//! A lane: takes a ticket, sends one request on its connection (HTTP/1.1: its own; HTTP/2:
//! a stream of the shared one), and records the outcome in its worker's recorder.

use super::conn::{self, Failure, SendKind, Sender};
use super::schedule::Schedule;
use super::target::Target;
use super::{stopped, CONN_ERROR_WAIT};
use crate::record::{ErrorClass, Outcome, Recorder};
use http_body_util::BodyExt;
use meshbench_schema::LoadMode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

pub(super) struct Lane {
    pub(super) target: Arc<Target>,
    pub(super) sched: Arc<Schedule>,
    pub(super) rec: Arc<Mutex<Recorder>>,
    pub(super) slot: Arc<tokio::sync::Mutex<Option<Sender>>>,
    /// HTTP/1.1: the lane's own connection between requests (no lock on the hot path).
    pub(super) own: Option<Sender>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) think: Duration,
    /// The target endpoint this lane's connection goes to (0 without a split).
    pub(super) endpoint: usize,
}

impl Lane {
    pub async fn run(mut self) {
        let closed = self.sched.mode == LoadMode::Closed;
        loop {
            let waiting_since = Instant::now();
            let ticket = tokio::select! {
                t = self.sched.claim(self.endpoint) => t,
                _ = stopped(&mut self.stop) => None,
            };
            let Some(ticket) = ticket else { break };
            let before = Instant::now();
            let intended = if closed { before } else { ticket.intended };
            if ticket.measured {
                self.sched.dispatched.fetch_add(1, Ordering::Relaxed);
            }
            let (sent, outcome) = match self.acquire().await {
                Err(f) => (
                    before,
                    Outcome::Failed {
                        class: f.class,
                        message: f.message,
                    },
                ),
                Ok(mut s) => {
                    let sent = Instant::now();
                    match tokio::time::timeout(self.target.timeout, self.send(&mut s)).await {
                        Err(_) => (
                            sent,
                            Outcome::Failed {
                                class: ErrorClass::RequestTimeout,
                                message: format!(
                                    "no complete response within {}",
                                    humantime::format_duration(self.target.timeout)
                                ),
                            },
                        ),
                        Ok(Err(f)) => {
                            let f = s.state.explain(f, CONN_ERROR_WAIT).await;
                            (
                                sent,
                                Outcome::Failed {
                                    class: f.class,
                                    message: f.message,
                                },
                            )
                        }
                        Ok(Ok((status, subset))) => {
                            self.release(s);
                            (sent, Outcome::Response { status, subset })
                        }
                    }
                }
            };
            let done = Instant::now();
            if ticket.measured {
                let mut rec = self.rec.lock().expect("recorder lock");
                // The generator's own lateness: only when this lane was already free at
                // the intended time. A ticket that waited for a lane to come free waited on
                // the target (every connection busy), which is not the generator's doing.
                if !closed && waiting_since <= intended {
                    rec.record_lag(before.saturating_duration_since(intended));
                }
                rec.record(intended, sent, done, outcome);
            }
            if closed && !self.think.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(self.think) => {}
                    _ = stopped(&mut self.stop) => break,
                }
            }
        }
    }

    /// A sender for one request: the connection's (HTTP/2: a clone of the shared one;
    /// HTTP/1.1: the lane's own, kept by `release`), or a new connection when there is none
    /// or it closed.
    async fn acquire(&mut self) -> Result<Sender, Failure> {
        if let Some(s) = self.own.take() {
            if !s.is_closed() {
                return Ok(s);
            }
        }
        let mut g = self.slot.lock().await;
        if let Some(s) = g.as_ref() {
            if !s.is_closed() {
                return Ok(match s.try_clone() {
                    Some(c) => c,
                    None => g.take().expect("checked above"),
                });
            }
        }
        *g = None;
        let s = conn::connect(&self.target, self.endpoint).await?;
        Ok(match s.try_clone() {
            Some(c) => {
                self.rec.lock().expect("recorder lock").saw_h2 = true;
                *g = Some(s);
                c
            }
            None => s,
        })
    }

    fn release(&mut self, s: Sender) {
        if !s.is_h2() {
            self.own = Some(s);
        }
    }

    async fn send(&self, s: &mut Sender) -> Result<(u16, Option<String>), Failure> {
        let resp = match &mut s.kind {
            SendKind::H1(s) => {
                s.ready()
                    .await
                    .map_err(|e| conn::failure(&e, "connection"))?;
                s.send_request(self.target.request(false)).await
            }
            SendKind::H2(s) => s.send_request(self.target.request(true)).await,
        }
        .map_err(|e| conn::failure(&e, "request"))?;
        s.state.answered.store(true, Ordering::Relaxed);
        let status = resp.status().as_u16();
        let subset = self.target.subset_header.as_ref().and_then(|h| {
            resp.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            frame.map_err(|e| conn::failure(&e, "response body"))?;
        }
        Ok((status, subset))
    }
}
