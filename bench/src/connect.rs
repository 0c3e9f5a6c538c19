//! `connect`: opens `connections` WebSockets, at most `concurrency` setting up at once;
//! each joins one of the rooms `room:bench-<r>` (`per_room` to a room, arriving in the
//! `order` asked for: interleaved by default) and waits for the ok reply. Measures
//! joins/s (first connect to last join reply) and join latency, then holds every
//! connection for `hold_secs` while the server's RSS is sampled: baseline (before the
//! first connect), peak, settled (end of the hold) and (settled − baseline) per
//! connection. Presence frames keep arriving all along; every member reads and drops
//! them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::cli::ConnectArgs;
use crate::member::{collect_setups, finish_members, spawn_members, Handler, Spec};
use crate::proc::{rss_bytes, CpuMeter, RssSampler};
use crate::report::{mib, round1, rss_line, Outcome};
use crate::wire;
use crate::{Ctx, Result};

/// Counts what a held connection receives.
#[derive(Default)]
struct Counts {
    presence_state: u64,
    presence_diff: u64,
    other: u64,
    bytes: u64,
}

impl Handler for Counts {
    fn on_text(&mut self, text: &str, _at: Instant) {
        self.bytes += text.len() as u64;
        match wire::decode(text).as_ref().map(|f| &*f.event) {
            Some("presence_state") => self.presence_state += 1,
            Some("presence_diff") => self.presence_diff += 1,
            _ => self.other += 1,
        }
    }
}

pub async fn run(ctx: &Arc<Ctx>, args: &ConnectArgs) -> Result<Outcome> {
    let mut out = Outcome::new("connect");
    let limit = crate::nofile_limit();
    if args.connections as u64 + 64 > limit {
        out.line(format!(
            "warning: {} connections need more file descriptors than RLIMIT_NOFILE {limit}",
            args.connections
        ));
    }
    let pid = ctx.server_pid;
    let baseline = pid.and_then(rss_bytes);
    let mut sampler = RssSampler::start(pid, Duration::from_millis(250));
    let (stop_tx, stop_rx) = watch::channel(false);

    let join_cpu = CpuMeter::start(pid);
    let rooms_in_order = args.order.rooms(args.connections, args.per_room);
    let members = rooms_in_order.into_iter().enumerate().map(|(i, room)| {
        let spec = Spec {
            user: format!("bench-{i}"),
            topic: format!("room:bench-{room}"),
        };
        (spec, Counts::default())
    });
    let (handles, mut setup_rx) = spawn_members(ctx, members, args.concurrency, &stop_rx);
    let setups = collect_setups(ctx, &mut setup_rx, args.connections).await;
    let join_cpu = join_cpu.stop();

    let hold_cpu = CpuMeter::start(pid);
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let settled = pid.and_then(rss_bytes);
    let hold_cpu = hold_cpu.stop();
    let peak = sampler.peak().max(settled);
    sampler.stop();

    let _ = stop_tx.send(true);
    let finished = finish_members(handles, ctx.timeout * 3).await;
    let mut counts = Counts::default();
    for end in &finished.ends {
        counts.presence_state += end.handler.presence_state;
        counts.presence_diff += end.handler.presence_diff;
        counts.other += end.handler.other;
        counts.bytes += end.handler.bytes;
    }

    let rooms = args.connections.div_ceil(args.per_room);
    let joins_per_sec = setups.joins_per_sec();
    let latency = setups.latency.summary();
    let per_conn = match (baseline, settled) {
        (Some(b), Some(s)) if setups.joined > 0 => {
            Some((s as f64 - b as f64) / setups.joined as f64)
        }
        _ => None,
    };

    out.line(format!(
        "{} connections ({rooms} rooms of {}, {:?} arrival), concurrency {}: {} joined, {} failed in {:.2}s: {:.0} joins/s",
        args.connections,
        args.per_room,
        args.order,
        args.concurrency,
        setups.joined,
        setups.failed,
        setups.elapsed().as_secs_f64(),
        joins_per_sec
    ));
    out.line(format!(
        "join latency (connect + upgrade + join reply): {}",
        latency.human()
    ));
    out.line(format!("joins: {}", join_cpu.human()));
    out.line(rss_line(
        &[("baseline", baseline), ("peak", peak), ("settled", settled)],
        &format!(
            " after {}s hold{}",
            args.hold_secs,
            per_conn.map_or(String::new(), |per| format!(
                ": {per:.0} bytes per connection"
            ))
        ),
    ));
    out.line(format!("hold: {}", hold_cpu.human()));
    out.line(format!(
        "received: {} presence_state, {} presence_diff, {} other frames ({}); dropped before the end: {}; closes unanswered: {}",
        counts.presence_state,
        counts.presence_diff,
        counts.other,
        mib(counts.bytes),
        finished.dropped,
        finished.unanswered
    ));

    setups.add_problems(&mut out, "connections");
    finished.add_problems(&mut out, "connections");

    out.set("connections", args.connections);
    out.set("per_room", args.per_room);
    out.set("order", format!("{:?}", args.order).to_lowercase());
    out.set("rooms", rooms);
    out.set("concurrency", args.concurrency);
    out.set("joined", setups.joined);
    out.set("failed", setups.failed);
    out.set("errors", &setups.errors);
    out.set("joins_per_sec", round1(joins_per_sec));
    out.set("join_secs", setups.elapsed().as_secs_f64());
    out.set("join_latency_us", latency);
    out.set_cpu("join", &join_cpu);
    out.set("hold_secs", args.hold_secs);
    out.set_cpu("hold", &hold_cpu);
    out.set("rss_baseline_bytes", baseline);
    out.set("rss_peak_bytes", peak);
    out.set("rss_settled_bytes", settled);
    out.set("rss_per_connection_bytes", per_conn.map(round1));
    out.set("presence_state_frames", counts.presence_state);
    out.set("presence_diff_frames", counts.presence_diff);
    out.set("other_frames", counts.other);
    out.set("received_bytes", counts.bytes);
    out.set("dropped", finished.dropped);
    out.set("closes_unanswered", finished.unanswered);
    Ok(out)
}
