//! A member: a connection that joins one topic and then reads every frame until told
//! to stop, handing each to a mode's [`Handler`], heartbeating every 30 s, then closes.
//!
//! Reading all the time matters: a member that stops reading fills the server's
//! queue for it, which is what the slow-consumer mode does on purpose and no other
//! mode may do by accident. Setup (connect + upgrade + join) runs under a semaphore so
//! that at most `concurrency` handshakes are in flight; each member reports its setup
//! once on a channel, which [`collect_setups`] turns into join rate and latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{interval_at, timeout};

use crate::client::{Conn, HEARTBEAT};
use crate::report::{Latency, Outcome};
use crate::{Ctx, Error, Result};

/// What a mode does with the frames a member receives.
pub trait Handler: Send + 'static {
    /// One text frame, received at `at`. Called for the frames that arrive while the
    /// join is in progress too.
    fn on_text(&mut self, text: &str, at: Instant);
}

/// A member's setup: when it started (after waiting for a slot) and when the join
/// reply arrived, or why it failed.
pub struct Setup {
    pub started: Instant,
    pub result: Result<Instant>,
}

/// How a member ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Told to stop; `close_acked`: the server answered our close in time.
    Stopped { close_acked: bool },
    /// The connection ended or failed before the stop: a failure.
    Dropped(String),
    /// Connect, upgrade or join failed (reported by its [`Setup`]).
    SetupFailed,
}

pub struct MemberEnd<H> {
    pub handler: H,
    pub ended: Ended,
}

/// Where a member connects and what it joins.
pub struct Spec {
    pub user: String,
    pub topic: String,
}

/// Spawns one member per spec, `concurrency` setups at a time.
pub fn spawn_members<H: Handler>(
    ctx: &Arc<Ctx>,
    members: impl IntoIterator<Item = (Spec, H)>,
    concurrency: usize,
    stop: &watch::Receiver<bool>,
) -> (
    Vec<JoinHandle<MemberEnd<H>>>,
    mpsc::UnboundedReceiver<Setup>,
) {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let (setup_tx, setup_rx) = mpsc::unbounded_channel();
    let handles = members
        .into_iter()
        .map(|(spec, handler)| {
            tokio::spawn(run_member(
                ctx.clone(),
                spec,
                handler,
                gate.clone(),
                setup_tx.clone(),
                stop.clone(),
            ))
        })
        .collect();
    (handles, setup_rx)
}

async fn run_member<H: Handler>(
    ctx: Arc<Ctx>,
    spec: Spec,
    mut handler: H,
    gate: Arc<Semaphore>,
    setup: mpsc::UnboundedSender<Setup>,
    stop: watch::Receiver<bool>,
) -> MemberEnd<H> {
    let permit = gate.acquire_owned().await;
    let started = Instant::now();
    let joined = async {
        let mut conn = Conn::open(&ctx.target, &spec.user, ctx.timeout).await?;
        let mut other = |text: &str, at: Instant| handler.on_text(text, at);
        conn.join(&spec.topic, ctx.timeout, &mut other).await?;
        Ok::<_, Error>(conn)
    }
    .await;
    drop(permit);
    match joined {
        Ok(conn) => {
            let _ = setup.send(Setup {
                started,
                result: Ok(Instant::now()),
            });
            drop(setup);
            let ended = serve(conn, stop, &mut handler, ctx.timeout).await;
            MemberEnd { handler, ended }
        }
        Err(error) => {
            let _ = setup.send(Setup {
                started,
                result: Err(error),
            });
            MemberEnd {
                handler,
                ended: Ended::SetupFailed,
            }
        }
    }
}

/// Reads `conn` into `handler` until `stop` turns true (then closes, waiting at most
/// `close_limit` for the server's answer) or the connection ends.
pub async fn serve(
    mut conn: Conn,
    mut stop: watch::Receiver<bool>,
    handler: &mut impl Handler,
    close_limit: Duration,
) -> Ended {
    let mut heartbeat = interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    loop {
        if *stop.borrow() {
            return Ended::Stopped {
                close_acked: conn.close(close_limit).await,
            };
        }
        let on_text = &mut |text: &str, at: Instant| handler.on_text(text, at);
        tokio::select! {
            ended = conn.recv(on_text) => match ended {
                Ok(None) => {}
                Ok(Some(how)) => return Ended::Dropped(format!("server ended it: {how}")),
                Err(error) => return Ended::Dropped(error.0),
            },
            // The stop is checked at the top of the loop (a dropped sender stops too).
            changed = stop.changed() => {
                if changed.is_err() {
                    return Ended::Stopped { close_acked: conn.close(close_limit).await };
                }
            }
            _ = heartbeat.tick() => {
                if let Err(error) = conn.heartbeat().await {
                    return Ended::Dropped(format!("heartbeat: {error}"));
                }
            }
        }
    }
}

/// Setups of a group of members: join rate and latency.
pub struct Setups {
    pub joined: usize,
    pub failed: usize,
    /// The first few failures, with their count in `failed`.
    pub errors: Vec<String>,
    pub first_start: Option<Instant>,
    pub last_join: Option<Instant>,
    /// Connect + upgrade + join reply, per member, in microseconds.
    pub latency: Latency,
}

impl Setups {
    /// Joins per second from the first connect to the last join reply.
    pub fn joins_per_sec(&self) -> f64 {
        let secs = self.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.joined as f64 / secs
        } else {
            0.0
        }
    }

    pub fn elapsed(&self) -> Duration {
        match (self.first_start, self.last_join) {
            (Some(first), Some(last)) => last.saturating_duration_since(first),
            _ => Duration::ZERO,
        }
    }

    /// A problem when any setup failed; `what` names the members ("watchers").
    pub fn add_problems(&self, out: &mut Outcome, what: &str) {
        if self.failed > 0 {
            out.problem(format!(
                "{} of {} {what} failed to connect or join: {}",
                self.failed,
                self.joined + self.failed,
                self.errors.join("; ")
            ));
        }
    }
}

/// Waits for `count` setups. Gives up when none arrives for `3 × ctx.timeout` (every
/// setup is bounded by the per-step timeouts, so that only happens if something is
/// badly stuck), counting the missing ones as failed.
pub async fn collect_setups(
    ctx: &Ctx,
    rx: &mut mpsc::UnboundedReceiver<Setup>,
    count: usize,
) -> Setups {
    let mut setups = Setups {
        joined: 0,
        failed: 0,
        errors: Vec::new(),
        first_start: None,
        last_join: None,
        latency: Latency::new(),
    };
    while setups.joined + setups.failed < count {
        let next = match timeout(ctx.timeout * 3, rx.recv()).await {
            Ok(Some(setup)) => setup,
            Ok(None) | Err(_) => {
                let missing = count - setups.joined - setups.failed;
                setups.failed += missing;
                setups
                    .errors
                    .push(format!("{missing} setups never reported (stalled)"));
                break;
            }
        };
        setups.first_start = Some(match setups.first_start {
            Some(first) => first.min(next.started),
            None => next.started,
        });
        match next.result {
            Ok(joined) => {
                setups.joined += 1;
                setups
                    .latency
                    .record(joined.duration_since(next.started).as_micros() as u64);
                setups.last_join = Some(setups.last_join.map_or(joined, |l| l.max(joined)));
            }
            Err(error) => {
                setups.failed += 1;
                if setups.errors.len() < 10 {
                    setups.errors.push(error.0);
                }
            }
        }
    }
    setups
}

/// How a group of members ended.
pub struct Finished<H> {
    /// The members that finished (in spawn order, less the `lost` ones).
    pub ends: Vec<MemberEnd<H>>,
    /// Tasks that did not finish within the limit (aborted) or panicked.
    pub lost: usize,
    /// Members whose connection ended or failed before the stop.
    pub dropped: usize,
    /// The first few reasons of the drops.
    pub drop_reasons: Vec<String>,
    /// Closes the server did not answer in time.
    pub unanswered: usize,
}

impl<H> Finished<H> {
    /// Problems for drops and lost tasks; `what` names the members ("watchers").
    pub fn add_problems(&self, out: &mut Outcome, what: &str) {
        if self.dropped > 0 {
            out.problem(format!(
                "{} {what} ended before the tool closed them: {}",
                self.dropped,
                self.drop_reasons.join("; ")
            ));
        }
        if self.lost > 0 {
            out.problem(format!(
                "{} {what} did not finish closing in time (tasks aborted)",
                self.lost
            ));
        }
    }
}

/// Awaits every member (each closes within its own timeouts once stopped); a member
/// that does not finish within `limit` is aborted and counted as lost.
pub async fn finish_members<H>(
    handles: Vec<JoinHandle<MemberEnd<H>>>,
    limit: Duration,
) -> Finished<H> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut finished = Finished {
        ends: Vec::with_capacity(handles.len()),
        lost: 0,
        dropped: 0,
        drop_reasons: Vec::new(),
        unanswered: 0,
    };
    for mut handle in handles {
        let end = match tokio::time::timeout_at(deadline, &mut handle).await {
            Ok(Ok(end)) => end,
            Ok(Err(_)) => {
                finished.lost += 1;
                continue;
            }
            Err(_) => {
                handle.abort();
                finished.lost += 1;
                continue;
            }
        };
        match &end.ended {
            Ended::Dropped(why) => {
                finished.dropped += 1;
                if finished.drop_reasons.len() < 5 {
                    finished.drop_reasons.push(why.clone());
                }
            }
            Ended::Stopped { close_acked: false } => finished.unanswered += 1,
            _ => {}
        }
        finished.ends.push(end);
    }
    finished
}
