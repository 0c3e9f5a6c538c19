//! `throughput`: `subscribers` spread over `rooms` (subscriber i in `room:tp-<i % rooms>`),
//! `publishers` spread the same way (publisher p in room p % rooms). Each publisher keeps
//! up to `window` pushes waiting for their reply, sending the next as each reply
//! arrives, or with `--rate` sends on a fixed schedule. A body is
//! `<run>/p<id>/<seq>/<nanos>`: publisher, sequence number and send time on the tool's
//! clock (the scheduled time with `--rate`). Subscribers count deliveries per
//! publisher, check that sequence numbers strictly increase per publisher, and record
//! latency. After the duration the publishers collect their outstanding replies and the
//! tool waits for the deliveries in flight; expected deliveries are, per publisher, its
//! ok replies × the subscribers of its room.
//!
//! The [`Subscriber`] handler and [`publisher`] are shared with the slow-consumer mode.

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinError;

use crate::cli::ThroughputArgs;
use crate::client::Conn;
use crate::member::{collect_setups, finish_members, spawn_members, Ended, Handler, Spec};
use crate::proc::CpuMeter;
use crate::report::{round1, Counters, Latency, LocalLatency, Outcome};
use crate::wire;
use crate::{Ctx, Error, Result};

/// A member that checks per-publisher order and records delivery latency.
pub struct Subscriber {
    pub slot: usize,
    /// `<run>/p`: bodies of this run's publishers start with it.
    prefix: Arc<str>,
    /// Highest sequence number seen, per publisher.
    pub last_seq: Vec<u64>,
    /// Deliveries, per publisher.
    pub received: Vec<u64>,
    pub violations: u64,
    pub foreign: u64,
    progress: Arc<Counters>,
    pub latency: LocalLatency,
}

impl Subscriber {
    pub fn new(
        slot: usize,
        prefix: Arc<str>,
        publishers: usize,
        progress: Arc<Counters>,
        latency: Arc<Latency>,
    ) -> Self {
        Subscriber {
            slot,
            prefix,
            last_seq: vec![0; publishers],
            received: vec![0; publishers],
            violations: 0,
            foreign: 0,
            progress,
            latency: LocalLatency::new(latency),
        }
    }
}

impl Handler for Subscriber {
    fn on_text(&mut self, text: &str, at: Instant) {
        let Some(frame) = wire::decode(text) else {
            self.foreign += 1;
            return;
        };
        if frame.event != "new_msg" {
            return;
        }
        let parsed =
            wire::new_msg_body(frame.payload).and_then(|body| parse_body(&self.prefix, &body));
        match parsed {
            Some((id, seq, nanos)) if id < self.received.len() => {
                if seq <= self.last_seq[id] {
                    self.violations += 1;
                } else {
                    self.last_seq[id] = seq;
                }
                self.received[id] += 1;
                self.progress.add(self.slot, 1);
                self.latency
                    .record(wire::nanos_of(at).saturating_sub(nanos) / 1_000);
            }
            _ => self.foreign += 1,
        }
    }
}

/// `<prefix><id>/<seq>/<nanos>[/padding]` → `(id, seq, nanos)`.
pub fn parse_body(prefix: &str, body: &str) -> Option<(usize, u64, u64)> {
    let rest = body.strip_prefix(prefix)?;
    let mut parts = rest.splitn(4, '/');
    let id = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let nanos = parts.next()?.parse().ok()?;
    Some((id, seq, nanos))
}

/// What one publisher does.
#[derive(Clone)]
pub struct PublisherSpec {
    pub id: usize,
    pub user: String,
    pub topic: String,
    /// Messages per second; `None`: as fast as the window allows.
    pub rate: Option<f64>,
    /// Most pushes waiting for their reply.
    pub window: usize,
    pub duration: Duration,
    /// Stop after this many messages, even before `duration` is up.
    pub messages: Option<u64>,
    /// Pad bodies with `/xxx…` to this many characters (0: no padding).
    pub pad_to: usize,
    /// `<run>/p`.
    pub prefix: Arc<str>,
}

#[derive(Debug, Default)]
pub struct PublisherResult {
    pub id: usize,
    pub sent: u64,
    pub acked: u64,
    pub refused: u64,
    pub refusals: Vec<String>,
    /// Replies that never came (within the timeout after the end).
    pub missing_replies: u64,
    pub error: Option<String>,
    /// With a rate: how far the publisher fell behind its schedule, at most (µs).
    pub max_lag_us: u64,
    /// When the last reply arrived (or the publisher gave up).
    pub finished: Option<Instant>,
}

/// Connects and joins a publisher, reports readiness on `ready`, reads its socket until
/// `start` holds a start time, publishes until `start + duration`, then collects the
/// outstanding replies (at most `ctx.timeout`).
pub async fn publisher(
    ctx: Arc<Ctx>,
    spec: PublisherSpec,
    ready: mpsc::UnboundedSender<Result<()>>,
    mut start: watch::Receiver<Option<Instant>>,
) -> PublisherResult {
    let mut result = PublisherResult {
        id: spec.id,
        ..PublisherResult::default()
    };
    let joined = async {
        let mut conn = Conn::open(&ctx.target, &spec.user, ctx.timeout).await?;
        let join_ref = conn.join(&spec.topic, ctx.timeout, &mut |_, _| {}).await?;
        Ok::<_, Error>((conn, join_ref))
    }
    .await;
    let (mut conn, join_ref) = match joined {
        Ok(joined) => {
            let _ = ready.send(Ok(()));
            joined
        }
        Err(error) => {
            let _ = ready.send(Err(error.clone()));
            result.error = Some(error.0);
            return result;
        }
    };
    drop(ready);

    // Keep reading until the start.
    let begin = loop {
        let begin = *start.borrow();
        if let Some(begin) = begin {
            break begin;
        }
        let ignore = &mut |_: &str, _: Instant| {};
        tokio::select! {
            ended = conn.recv(ignore) => match ended {
                Ok(None) => {}
                Ok(Some(how)) => {
                    result.error = Some(format!("the server ended the connection before the start: {how}"));
                    return result;
                }
                Err(error) => {
                    result.error = Some(error.0);
                    return result;
                }
            },
            changed = start.changed() => {
                if changed.is_err() {
                    result.error = Some("the run ended before the start".into());
                    conn.close(ctx.timeout).await;
                    return result;
                }
            }
        }
    };

    let end = begin + spec.duration;
    // Replies are waited for at most the timeout after the last push.
    let mut stopped: Option<Instant> = None;
    let step = spec
        .rate
        .map(|rate| Duration::from_secs_f64(1.0 / rate.max(1e-3)));
    let mut due = begin;
    let mut seq = 0u64;
    let mut outstanding = 0usize;
    let window = spec.window.max(1);
    let mut body = String::with_capacity(spec.pad_to.max(64));
    loop {
        let now = Instant::now();
        let sending = now < end && spec.messages.is_none_or(|n| result.sent < n);
        if sending && outstanding < window {
            let mut batch = 0;
            while outstanding < window
                && batch < 64
                && spec.messages.is_none_or(|n| result.sent < n)
            {
                let stamp = match step {
                    Some(step) => {
                        if due > now || due >= end {
                            break;
                        }
                        let stamp = due;
                        due += step;
                        result.max_lag_us = result
                            .max_lag_us
                            .max(now.duration_since(stamp).as_micros() as u64);
                        stamp
                    }
                    None => Instant::now(),
                };
                seq += 1;
                body.clear();
                let _ = write!(
                    body,
                    "{}{}/{seq}/{}",
                    spec.prefix,
                    spec.id,
                    wire::nanos_of(stamp)
                );
                if spec.pad_to > body.len() + 1 {
                    body.push('/');
                    let pad = spec.pad_to - body.len();
                    body.extend(std::iter::repeat_n('x', pad));
                }
                let reference = conn.take_ref();
                conn.feed(&wire::encode(
                    Some(join_ref),
                    reference,
                    &spec.topic,
                    "new_msg",
                    &wire::body_payload(&body),
                ));
                outstanding += 1;
                result.sent += 1;
                batch += 1;
            }
            if batch > 0 {
                if let Err(error) = conn.flush().await {
                    result.error = Some(format!("send: {error}"));
                    return finish(result, conn, &ctx).await;
                }
                continue;
            }
        }
        if !sending && outstanding == 0 {
            break;
        }
        let drain_deadline = (!sending).then(|| *stopped.get_or_insert(now.min(end)) + ctx.timeout);
        let wake = match (drain_deadline, step) {
            (Some(deadline), _) => deadline,
            (None, Some(_)) if outstanding < window => due.min(end),
            (None, _) => end,
        };
        if drain_deadline.is_some_and(|deadline| now >= deadline) {
            result.missing_replies = outstanding as u64;
            result.error = Some(format!(
                "{outstanding} replies missing {:?} after the end",
                ctx.timeout
            ));
            break;
        }
        let on_text = &mut |text: &str, _at: Instant| {
            let Some(frame) = wire::decode(text) else {
                return;
            };
            if frame.event != "phx_reply" || frame.ref_number().is_none_or(|r| r <= join_ref) {
                return;
            }
            outstanding = outstanding.saturating_sub(1);
            match wire::reply_status(frame.payload) {
                Some(status) if status == "ok" => result.acked += 1,
                _ => {
                    result.refused += 1;
                    if result.refusals.len() < 5 {
                        result.refusals.push(wire::reply_response(frame.payload));
                    }
                }
            }
        };
        tokio::select! {
            ended = conn.recv(on_text) => {
                let error = match ended {
                    Ok(None) => continue,
                    Ok(Some(how)) => format!("the server ended the connection: {how}"),
                    Err(error) => error.0,
                };
                result.missing_replies = outstanding as u64;
                result.error = Some(error);
                result.finished = Some(Instant::now());
                return result;
            },
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    finish(result, conn, &ctx).await
}

async fn finish(mut result: PublisherResult, conn: Conn, ctx: &Ctx) -> PublisherResult {
    result.finished = Some(Instant::now());
    conn.close(ctx.timeout).await;
    result
}

impl PublisherResult {
    /// The result of publisher `id`'s task; a task that panicked is an error.
    pub fn of_task(id: usize, joined: std::result::Result<Self, JoinError>) -> Self {
        joined.unwrap_or_else(|error| PublisherResult {
            id,
            error: Some(format!("publisher task failed: {error}")),
            ..PublisherResult::default()
        })
    }
}

/// Waits until `progress` reaches `expected`, at most until `deadline`; returns when
/// it stopped waiting.
pub async fn wait_deliveries(progress: &Counters, expected: u64, deadline: Instant) -> Instant {
    loop {
        let now = Instant::now();
        if progress.total() >= expected || now >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub async fn run(ctx: &Arc<Ctx>, args: &ThroughputArgs) -> Result<Outcome> {
    let mut out = Outcome::new("throughput");
    let pid = ctx.server_pid;
    let prefix: Arc<str> = format!("{}/p", ctx.run_id).into();
    let topic = |r: usize| format!("room:tp-{r}");
    let progress = Counters::new(256);
    let latency = Arc::new(Latency::new());
    let (stop_tx, stop_rx) = watch::channel(false);

    let members = (0..args.subscribers).map(|i| {
        let spec = Spec {
            user: format!("tp-sub-{i}"),
            topic: topic(i % args.rooms),
        };
        let sub = Subscriber::new(
            i,
            prefix.clone(),
            args.publishers,
            progress.clone(),
            latency.clone(),
        );
        (spec, sub)
    });
    let (handles, mut setup_rx) = spawn_members(ctx, members, args.concurrency, &stop_rx);
    let setups = collect_setups(ctx, &mut setup_rx, args.subscribers).await;

    let (start_tx, start_rx) = watch::channel(None);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let publishers: Vec<_> = (0..args.publishers)
        .map(|p| {
            let spec = PublisherSpec {
                id: p,
                user: format!("tp-pub-{p}"),
                topic: topic(p % args.rooms),
                rate: args.rate,
                window: args.window,
                duration: Duration::from_secs(args.duration_secs),
                messages: None,
                pad_to: 0,
                prefix: prefix.clone(),
            };
            tokio::spawn(publisher(
                ctx.clone(),
                spec,
                ready_tx.clone(),
                start_rx.clone(),
            ))
        })
        .collect();
    drop(ready_tx);
    let mut ready = 0;
    while let Some(result) = ready_rx.recv().await {
        if result.is_ok() {
            ready += 1;
        }
    }

    let cpu = CpuMeter::start(pid);
    let begin = Instant::now();
    let _ = start_tx.send(Some(begin));
    let mut results = Vec::with_capacity(args.publishers);
    for (p, handle) in publishers.into_iter().enumerate() {
        results.push(PublisherResult::of_task(p, handle.await));
    }
    let mut subs_in_room = vec![0u64; args.rooms];
    for i in 0..args.subscribers {
        subs_in_room[i % args.rooms] += 1;
    }
    let expected_all: u64 = results
        .iter()
        .map(|r| r.acked * subs_in_room[r.id % args.rooms])
        .sum();
    let drained = wait_deliveries(&progress, expected_all, Instant::now() + ctx.timeout).await;
    let cpu = cpu.stop();

    let _ = stop_tx.send(true);
    let mut finished = finish_members(handles, ctx.timeout * 3).await;
    let mut received = 0u64;
    let mut expected = 0u64;
    let mut missing = 0u64;
    let mut extra = 0u64;
    let mut violations = 0u64;
    let mut foreign = 0u64;
    for end in finished.ends.iter_mut() {
        end.handler.latency.flush();
        if end.ended == Ended::SetupFailed {
            continue;
        }
        let room = end.handler.slot % args.rooms;
        violations += end.handler.violations;
        foreign += end.handler.foreign;
        for r in &results {
            let got = end.handler.received[r.id];
            received += got;
            if r.id % args.rooms == room {
                expected += r.acked;
                missing += r.acked.saturating_sub(got);
                extra += got.saturating_sub(r.acked);
            } else {
                extra += got;
            }
        }
    }
    let elapsed = drained.duration_since(begin).as_secs_f64().max(1e-6);
    let acked: u64 = results.iter().map(|r| r.acked).sum();
    let sent: u64 = results.iter().map(|r| r.sent).sum();
    let refused: u64 = results.iter().map(|r| r.refused).sum();
    let deliveries_per_sec = received as f64 / elapsed;
    let summary = latency.summary();
    let max_lag = results.iter().map(|r| r.max_lag_us).max().unwrap_or(0);

    out.line(format!(
        "{} subscribers over {} rooms ({} joined, {} failed), {} publishers ({} ready), {}s, {}",
        args.subscribers,
        args.rooms,
        setups.joined,
        setups.failed,
        args.publishers,
        ready,
        args.duration_secs,
        match args.rate {
            Some(rate) => format!("{rate} msgs/s per publisher (window {})", args.window),
            None => format!("unlimited rate, window {}", args.window),
        }
    ));
    out.line(format!(
        "published {sent}, replied ok {acked} ({:.0}/s), refused {refused}",
        acked as f64 / args.duration_secs.max(1) as f64
    ));
    out.line(format!(
        "deliveries: {received} of {expected} expected in {elapsed:.2}s: {deliveries_per_sec:.0} deliveries/s at window {}; missing {missing}, unexpected {extra}, order violations {violations}",
        args.window
    ));
    out.line(format!("delivery latency: {}", summary.human()));
    if args.rate.is_some() {
        out.line(format!(
            "publishers fell behind their schedule by at most {}",
            crate::report::ms(max_lag)
        ));
    }
    out.line(cpu.human());

    setups.add_problems(&mut out, "subscribers");
    for r in &results {
        if let Some(error) = &r.error {
            out.problem(format!("publisher {}: {error}", r.id));
        }
        if r.refused > 0 {
            out.problem(format!(
                "publisher {}: {} pushes refused: {}",
                r.id,
                r.refused,
                r.refusals.join("; ")
            ));
        }
    }
    if missing > 0 {
        out.problem(format!(
            "{missing} deliveries lost (of {expected} expected)"
        ));
    }
    if extra > 0 {
        out.problem(format!(
            "{extra} unexpected deliveries (not replied ok to their publisher, or in the wrong room)"
        ));
    }
    if violations > 0 {
        out.problem(format!("{violations} per-publisher order violations"));
    }
    finished.add_problems(&mut out, "subscribers");

    out.set("subscribers", args.subscribers);
    out.set("rooms", args.rooms);
    out.set("publishers", args.publishers);
    out.set("duration_secs", args.duration_secs);
    out.set("rate_per_publisher", args.rate);
    out.set("window", args.window);
    out.set("joined", setups.joined);
    out.set("failed", setups.failed);
    out.set("errors", &setups.errors);
    out.set("publishers_ready", ready);
    out.set("sent", sent);
    out.set("acked", acked);
    out.set("refused", refused);
    out.set(
        "acked_per_sec",
        round1(acked as f64 / args.duration_secs.max(1) as f64),
    );
    out.set("expected_deliveries", expected);
    out.set("deliveries", received);
    out.set("deliveries_per_sec", round1(deliveries_per_sec));
    out.set("elapsed_secs", elapsed);
    out.set("loss", missing);
    out.set("unexpected", extra);
    out.set("order_violations", violations);
    out.set("foreign_frames", foreign);
    out.set("latency_us", summary);
    out.set("max_schedule_lag_us", max_lag);
    out.set_cpu("run", &cpu);
    out.set("dropped", finished.dropped);
    out.set("closes_unanswered", finished.unanswered);
    Ok(out)
}
