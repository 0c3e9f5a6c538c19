//! `fanout`: `members` connections join ONE topic; then one more connection publishes
//! `messages` new_msg pushes, one every `interval_ms`, each body a unique id. Every
//! member notes when each message arrives (the tool's one monotonic clock), so per
//! message: time from the publish (just before the send) to the LAST member's delivery,
//! and loss (members without it when the wait ends, `--timeout-secs` after the last
//! publish). Also counts the presence_diff frames members receive during the joins
//! (until they stop arriving), which shows whether the server batches presence or
//! storms: without batching, member j receives one diff per later join, ~N²/2 in all.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::cli::FanoutArgs;
use crate::client::Conn;
use crate::member::{collect_setups, finish_members, spawn_members, Handler, Spec};
use crate::proc::{rss_bytes, CpuMeter, RssSampler};
use crate::report::{mib, ms, round1, rss_line, Counters, Latency, Outcome};
use crate::wire;
use crate::{Ctx, Result};

struct Member {
    slot: usize,
    prefix: Arc<str>,
    /// When message k arrived, by k.
    arrivals: Vec<Option<Instant>>,
    delivered: Arc<Vec<AtomicU32>>,
    diffs: Arc<Counters>,
    presence_bytes: Arc<Counters>,
    duplicates: u64,
    foreign: u64,
}

impl Handler for Member {
    fn on_text(&mut self, text: &str, at: Instant) {
        let Some(frame) = wire::decode(text) else {
            self.foreign += 1;
            return;
        };
        match &*frame.event {
            "presence_diff" => {
                self.diffs.add(self.slot, 1);
                self.presence_bytes.add(self.slot, text.len() as u64);
            }
            "presence_state" => self.presence_bytes.add(self.slot, text.len() as u64),
            "new_msg" => {
                let id = wire::new_msg_body(frame.payload).and_then(|body| {
                    body.strip_prefix(&*self.prefix)
                        .and_then(|k| k.parse::<usize>().ok())
                });
                match id {
                    Some(k) if k < self.arrivals.len() => {
                        if self.arrivals[k].is_some() {
                            self.duplicates += 1;
                        } else {
                            self.arrivals[k] = Some(at);
                            self.delivered[k].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => self.foreign += 1,
                }
            }
            _ => {}
        }
    }
}

pub async fn run(ctx: &Arc<Ctx>, args: &FanoutArgs) -> Result<Outcome> {
    let mut out = Outcome::new("fanout");
    let pid = ctx.server_pid;
    let baseline = pid.and_then(rss_bytes);
    let sampler = RssSampler::start(pid, Duration::from_millis(250));
    let prefix: Arc<str> = format!("{}/f/", ctx.run_id).into();
    let delivered: Arc<Vec<AtomicU32>> =
        Arc::new((0..args.messages).map(|_| AtomicU32::new(0)).collect());
    let diffs = Counters::new(64);
    let presence_bytes = Counters::new(64);
    let (stop_tx, stop_rx) = watch::channel(false);

    // Joins.
    let join_cpu = CpuMeter::start(pid);
    let members = (0..args.members).map(|i| {
        let spec = Spec {
            user: format!("fan-{i}"),
            topic: args.topic.clone(),
        };
        let member = Member {
            slot: i,
            prefix: prefix.clone(),
            arrivals: vec![None; args.messages],
            delivered: delivered.clone(),
            diffs: diffs.clone(),
            presence_bytes: presence_bytes.clone(),
            duplicates: 0,
            foreign: 0,
        };
        (spec, member)
    });
    let (handles, mut setup_rx) = spawn_members(ctx, members, args.concurrency, &stop_rx);
    let setups = collect_setups(ctx, &mut setup_rx, args.members).await;
    let diffs_at_last_join = diffs.total();
    // Presence diffs may keep arriving after the last join reply: wait until they stop.
    let quiet_limit = (ctx.timeout * 6).max(Duration::from_secs(60));
    let (diffs_during_joins, diffs_settled) = quiesce(&diffs, quiet_limit).await;
    let join_cpu = join_cpu.stop();
    let rss_after_joins = pid.and_then(rss_bytes);

    // The publisher, one more member of the topic.
    let publish_cpu = CpuMeter::start(pid);
    let publisher = publish(ctx, args, &prefix, &delivered, setups.joined).await;
    let publish_cpu = publish_cpu.stop();
    let diffs_after = diffs.total().saturating_sub(diffs_during_joins);

    let _ = stop_tx.send(true);
    let finished = finish_members(handles, ctx.timeout * 3).await;
    let peak = sampler.peak();

    // Per message: deliveries, time to the last one; per delivery: latency.
    let latency = Latency::new();
    let mut received = vec![0usize; args.messages];
    let mut last = vec![None::<Instant>; args.messages];
    let mut duplicates = 0;
    let mut foreign = 0;
    for end in &finished.ends {
        duplicates += end.handler.duplicates;
        foreign += end.handler.foreign;
        for (k, &at) in end.handler.arrivals.iter().enumerate() {
            let Some(at) = at else { continue };
            received[k] += 1;
            last[k] = Some(last[k].map_or(at, |l: Instant| l.max(at)));
            if let Some(sent) = publisher.published.get(k).copied().flatten() {
                latency.record(at.saturating_duration_since(sent).as_micros() as u64);
            }
        }
    }
    let expected = setups.joined;
    let mut to_last_us: Vec<u64> = Vec::new();
    let mut loss = 0usize;
    let mut per_message = Vec::with_capacity(args.messages);
    for k in 0..args.messages {
        let sent = publisher.published[k];
        let missing = expected.saturating_sub(received[k]);
        let to_last = match (sent, last[k]) {
            (Some(sent), Some(last)) if missing == 0 => {
                Some(last.saturating_duration_since(sent).as_micros() as u64)
            }
            _ => None,
        };
        if sent.is_some() {
            loss += missing;
        }
        if let Some(t) = to_last {
            to_last_us.push(t);
        }
        per_message.push(serde_json::json!({
            "received": received[k], "missing": missing, "to_last_us": to_last,
        }));
    }
    to_last_us.sort_unstable();
    let pick = |q: f64| -> Option<u64> {
        (!to_last_us.is_empty())
            .then(|| to_last_us[((to_last_us.len() - 1) as f64 * q).round() as usize])
    };
    let (median, p90, max) = (pick(0.5), pick(0.9), to_last_us.last().copied());
    let latency = latency.summary();
    let total_presence_bytes = presence_bytes.total();

    out.line(format!(
        "{} members on {}: {} joined, {} failed in {:.2}s ({:.0} joins/s); join latency {}",
        args.members,
        args.topic,
        setups.joined,
        setups.failed,
        setups.elapsed().as_secs_f64(),
        setups.joins_per_sec(),
        setups.latency.summary().human()
    ));
    out.line(format!(
        "presence_diff frames received during the joins: {diffs_during_joins} ({:.1} per member; {diffs_at_last_join} by the last join reply{}); presence bytes received in all: {}",
        diffs_during_joins as f64 / args.members as f64,
        if diffs_settled { "" } else { "; still arriving when the wait ended" },
        mib(total_presence_bytes)
    ));
    out.line(format!("joins: {}", join_cpu.human()));
    out.line(format!(
        "{} messages every {} ms: {} published ({} ok replies); time to last delivery: median {} p90 {} max {} over {} complete messages",
        args.messages,
        args.interval_ms,
        publisher.published.iter().flatten().count(),
        publisher.ok,
        median.map_or("-".into(), ms),
        p90.map_or("-".into(), ms),
        max.map_or("-".into(), ms),
        to_last_us.len()
    ));
    out.line(format!("per-delivery latency: {}", latency.human()));
    out.line(format!(
        "loss: {loss} deliveries missing; publishing: {}",
        publish_cpu.human()
    ));
    out.line(rss_line(
        &[
            ("baseline", baseline),
            ("after joins", rss_after_joins),
            ("peak", peak),
        ],
        "",
    ));

    setups.add_problems(&mut out, "members");
    if let Some(error) = &publisher.error {
        out.problem(format!("publisher: {error}"));
    }
    if publisher.ok < args.messages {
        out.problem(format!(
            "{} of {} publishes were not replied ok: {}",
            args.messages - publisher.ok,
            args.messages,
            publisher.refusals.join("; ")
        ));
    }
    if loss > 0 {
        out.problem(format!(
            "{loss} deliveries lost (not received within {:?} of the last publish)",
            ctx.timeout
        ));
    }
    if duplicates > 0 {
        out.problem(format!("{duplicates} duplicate deliveries"));
    }
    finished.add_problems(&mut out, "members");

    out.set("members", args.members);
    out.set("topic", &args.topic);
    out.set("joined", setups.joined);
    out.set("failed", setups.failed);
    out.set("errors", &setups.errors);
    out.set("joins_per_sec", round1(setups.joins_per_sec()));
    // From the first connect to the last join reply: the span of the diffs counted next.
    out.set("joins_elapsed_us", setups.elapsed().as_micros() as u64);
    out.set("join_latency_us", setups.latency.summary());
    out.set_cpu("join", &join_cpu);
    out.set("presence_diffs_during_joins", diffs_during_joins);
    out.set("presence_diffs_by_last_join_reply", diffs_at_last_join);
    out.set("presence_diffs_settled", diffs_settled);
    out.set("presence_diffs_after_joins", diffs_after);
    out.set("presence_bytes", total_presence_bytes);
    out.set("messages", args.messages);
    out.set("interval_ms", args.interval_ms);
    out.set("published", publisher.published.iter().flatten().count());
    out.set("publish_ok", publisher.ok);
    out.set(
        "time_to_last_us",
        serde_json::json!({
            "median": median, "p90": p90, "max": max, "complete_messages": to_last_us.len(),
        }),
    );
    out.set("delivery_latency_us", latency);
    out.set("per_message", per_message);
    out.set("loss", loss);
    out.set("duplicates", duplicates);
    out.set("foreign_frames", foreign);
    out.set_cpu("publish", &publish_cpu);
    out.set("rss_baseline_bytes", baseline);
    out.set("rss_after_joins_bytes", rss_after_joins);
    out.set("rss_peak_bytes", peak);
    out.set("dropped", finished.dropped);
    out.set("closes_unanswered", finished.unanswered);
    Ok(out)
}

/// Waits until `counter` has not moved for one second (at most `limit`); returns its
/// value and whether it settled.
async fn quiesce(counter: &Counters, limit: Duration) -> (u64, bool) {
    let deadline = Instant::now() + limit;
    let mut last = counter.total();
    let mut still_since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = counter.total();
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() >= Duration::from_secs(1) {
            return (now, true);
        }
    }
    (counter.total(), false)
}

struct Published {
    /// When message k was sent (`None`: never sent).
    published: Vec<Option<Instant>>,
    ok: usize,
    refusals: Vec<String>,
    error: Option<String>,
}

/// Joins the publisher and publishes on schedule, reading its socket all along, then
/// waits until every joined member has every message (or the timeout).
async fn publish(
    ctx: &Ctx,
    args: &FanoutArgs,
    prefix: &str,
    delivered: &[AtomicU32],
    members: usize,
) -> Published {
    let mut result = Published {
        published: vec![None; args.messages],
        ok: 0,
        refusals: Vec::new(),
        error: None,
    };
    let user = format!("fan-pub-{}", ctx.run_id);
    let mut conn = match Conn::open(&ctx.target, &user, ctx.timeout).await {
        Ok(conn) => conn,
        Err(error) => {
            result.error = Some(error.0);
            return result;
        }
    };
    let join_ref = match conn.join(&args.topic, ctx.timeout, &mut |_, _| {}).await {
        Ok(join_ref) => join_ref,
        Err(error) => {
            result.error = Some(error.0);
            return result;
        }
    };
    let interval = Duration::from_millis(args.interval_ms);
    let start = Instant::now();
    let mut refs: Vec<u64> = Vec::with_capacity(args.messages);
    let mut replies = 0;
    let mut next = 0;
    let mut last_publish = start;
    loop {
        let now = Instant::now();
        if next < args.messages && now >= start + interval * next as u32 {
            let body = format!("{prefix}{next}");
            let reference = conn.take_ref();
            let frame = wire::encode(
                Some(join_ref),
                reference,
                &args.topic,
                "new_msg",
                &wire::body_payload(&body),
            );
            let sent = Instant::now();
            if let Err(error) = conn.send(&frame).await {
                result.error = Some(format!("send: {error}"));
                break;
            }
            result.published[next] = Some(sent);
            last_publish = sent;
            refs.push(reference);
            next += 1;
            continue;
        }
        if next == args.messages {
            let complete = delivered
                .iter()
                .all(|c| c.load(Ordering::Relaxed) as usize >= members);
            if complete && replies == args.messages {
                break;
            }
            if now >= last_publish + ctx.timeout {
                if replies < args.messages {
                    result.error = Some(format!(
                        "{} replies missing after {:?}",
                        args.messages - replies,
                        ctx.timeout
                    ));
                }
                break;
            }
        }
        let wake = if next < args.messages {
            start + interval * next as u32
        } else {
            now + Duration::from_millis(2)
        };
        let mut on_text = |text: &str, _at: Instant| {
            let Some(frame) = wire::decode(text) else {
                return;
            };
            if frame.event != "phx_reply" {
                return;
            }
            if frame.ref_number().is_some_and(|r| refs.contains(&r)) {
                replies += 1;
                match wire::reply_status(frame.payload) {
                    Some(status) if status == "ok" => result.ok += 1,
                    _ => result.refusals.push(wire::reply_response(frame.payload)),
                }
            }
        };
        tokio::select! {
            ended = conn.recv(&mut on_text) => match ended {
                Ok(None) => {}
                Ok(Some(how)) => {
                    result.error = Some(format!("the server ended the publisher's connection: {how}"));
                    break;
                }
                Err(error) => {
                    result.error = Some(error.0);
                    break;
                }
            },
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    conn.close(ctx.timeout).await;
    result
}
