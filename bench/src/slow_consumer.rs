//! `slow-consumer`: `members` join one topic; one of them (the slow one) never reads
//! its socket after its join reply (it stays open, and heartbeats every 30 s so that an
//! idle timeout is not what ends it). A publisher posts `rate` messages per second of
//! `payload_bytes` characters for `duration_secs`, or until it has posted `messages`.
//!
//! Recorded: whether and when the server gave up on the slow connection, watched every
//! 100 ms without reading it: the server side of its TCP connection in `/proc/net/tcp`
//! (leaving ESTABLISHED, or vanishing after it was listed, means the server closed it,
//! even when its FIN is still stuck behind unread data; when the table cannot be read,
//! nothing is concluded from it) and `poll(POLLRDHUP)` on the client side; at the end
//! the slow socket is drained to see how it ended (close frame and code, EOF, reset, or
//! still open: the drain takes silence for "still open" only once the server's side
//! holds nothing more for it, see `drain_gives_up`). The server closed it only if one
//! of these was seen; a close frame is reported only if one was read (a server that
//! gives up on a client that never reads may drop the connection with its close frame
//! still unsent: then the drain ends in EOF). Also: the other members' delivery latency
//! and loss, and the server's RSS over time.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

use crate::cli::SlowConsumerArgs;
use crate::client::{Closed, Conn, HEARTBEAT};
use crate::member::{collect_setups, finish_members, spawn_members, Ended, Spec};
use crate::proc::{rss_bytes, CpuMeter, RssSampler};
use crate::report::{mib, round1, rss_line, Counters, Latency, Outcome};
use crate::throughput::{
    parse_body, publisher, wait_deliveries, PublisherResult, PublisherSpec, Subscriber,
};
use crate::wire;
use crate::{Ctx, Error, Result};

/// Most pushes the publisher has waiting for their reply.
const PUBLISH_WINDOW: usize = 1_000;

/// What was seen of the slow connection while the topic was broadcasting.
#[derive(Debug, Default, Serialize)]
struct Watch {
    /// Milliseconds after the first publish when the server-side TCP socket was seen
    /// to leave ESTABLISHED (or to vanish after it had been listed), and the state it
    /// was in then.
    server_closed_at_ms: Option<u64>,
    server_state: Option<String>,
    /// The server-side TCP state at the last look, before the drain ("unwatched" when
    /// `/proc/net/tcp` could not be read or the target is not IPv4).
    server_state_last: Option<String>,
    /// Whether the server side was ever found in `/proc/net/tcp`.
    server_side_listed: bool,
    /// Largest send queue of the server-side socket (bytes in the server's kernel).
    server_tx_queue_max: u64,
    /// Milliseconds after the first publish when the client side saw the peer hang up
    /// (POLLRDHUP / POLLHUP / POLLERR).
    client_hup_at_ms: Option<u64>,
    /// Largest number of unread bytes in the slow client's receive queue.
    client_unread_max: u64,
    heartbeat_error: Option<String>,
}

pub async fn run(ctx: &Arc<Ctx>, args: &SlowConsumerArgs) -> Result<Outcome> {
    let mut out = Outcome::new("slow-consumer");
    let pid = ctx.server_pid;
    let prefix: Arc<str> = format!("{}/p", ctx.run_id).into();
    let progress = Counters::new(64);
    let latency = Arc::new(Latency::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let normal = args.members - 1;

    let members = (0..normal).map(|i| {
        let spec = Spec {
            user: format!("slow-peer-{i}"),
            topic: args.topic.clone(),
        };
        let sub = Subscriber::new(i, prefix.clone(), 1, progress.clone(), latency.clone());
        (spec, sub)
    });
    let (handles, mut setup_rx) = spawn_members(ctx, members, 100, &stop_rx);
    let setups = collect_setups(ctx, &mut setup_rx, normal).await;

    let slow_user = format!("slow-{}", ctx.run_id);
    let mut slow = Conn::open(&ctx.target, &slow_user, ctx.timeout)
        .await
        .map_err(|e| Error(format!("the slow member: {e}")))?;
    slow.join(&args.topic, ctx.timeout, &mut |_, _| {})
        .await
        .map_err(|e| Error(format!("the slow member: {e}")))?;
    let slow_local = slow.local_addr();

    // The publisher joins, then everything starts.
    let (start_tx, start_rx) = watch::channel(None);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let spec = PublisherSpec {
        id: 0,
        user: format!("slow-pub-{}", ctx.run_id),
        topic: args.topic.clone(),
        rate: Some(args.rate),
        // Fewer unanswered pushes than a server's inbound limit per channel (fluxwire
        // closes a connection with more than 1,024 waiting for one channel with 1008):
        // the publisher must never be the client the server cuts off. A server slower
        // than the rate paces the publisher instead (max_schedule_lag_us).
        window: PUBLISH_WINDOW,
        duration: Duration::from_secs(args.duration_secs),
        messages: args.messages,
        pad_to: args.payload_bytes as usize,
        prefix: prefix.clone(),
    };
    let publishing = tokio::spawn(publisher(ctx.clone(), spec, ready_tx, start_rx));
    let publisher_ready = matches!(ready_rx.recv().await, Some(Ok(())));

    let baseline = pid.and_then(rss_bytes);
    let sampler = RssSampler::start(pid, Duration::from_millis(250));
    let cpu = CpuMeter::start(pid);
    let begin = Instant::now();
    let _ = start_tx.send(Some(begin));

    // Watch the slow connection without reading it until the publisher is done.
    let mut seen = Watch::default();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut heartbeat = tokio::time::interval_at((begin + HEARTBEAT).into(), HEARTBEAT);
    let fd = slow.raw_fd();
    tokio::pin!(publishing);
    let result = loop {
        tokio::select! {
            done = &mut publishing => break PublisherResult::of_task(0, done),
            _ = tick.tick() => observe(&mut seen, fd, slow_local, ctx.target.addr(), begin),
            _ = heartbeat.tick() => {
                if seen.heartbeat_error.is_none() {
                    if let Err(error) = slow.heartbeat().await {
                        seen.heartbeat_error = Some(format!(
                            "{} ms: {error}",
                            begin.elapsed().as_millis()
                        ));
                    }
                }
            }
        }
    };
    observe(&mut seen, fd, slow_local, ctx.target.addr(), begin);
    let expected = result.acked * setups.joined as u64;
    wait_deliveries(&progress, expected, Instant::now() + ctx.timeout).await;
    observe(&mut seen, fd, slow_local, ctx.target.addr(), begin);
    let cpu = cpu.stop();
    let peak = sampler.peak();
    let end_rss = pid.and_then(rss_bytes);
    let series: Vec<(f64, u64)> = sampler.series(Duration::from_secs(1));

    let _ = stop_tx.send(true);
    let mut finished = finish_members(handles, ctx.timeout * 3).await;
    let mut received = 0u64;
    let mut missing = 0u64;
    let mut violations = 0u64;
    for end in finished.ends.iter_mut() {
        end.handler.latency.flush();
        if end.ended == Ended::SetupFailed {
            continue;
        }
        received += end.handler.received[0];
        missing += result.acked.saturating_sub(end.handler.received[0]);
        violations += end.handler.violations;
    }
    let summary = latency.summary();

    // Now read what the slow socket holds, to see how it ended.
    let drained = drain(slow, &prefix, ctx.target.addr(), ctx.timeout).await;
    // Only what was seen: the server side leaving ESTABLISHED, the client seeing the
    // peer hang up, or the drain reading the end of the stream.
    let closed_by_server = seen.server_closed_at_ms.is_some()
        || seen.client_hup_at_ms.is_some()
        || drained.ended.is_some();
    let close_frame = match drained.ended {
        Some(Closed::Frame(code)) => Some(code),
        _ => None,
    };

    out.line(format!(
        "{} members on {} ({} normal joined, 1 slow), publisher at {}/s × {}s{}, bodies of {} characters",
        args.members,
        args.topic,
        setups.joined,
        args.rate,
        args.duration_secs,
        args.messages.map_or(String::new(), |n| format!(" or {n} messages")),
        args.payload_bytes
    ));
    out.line(format!(
        "published {} (ok {}, refused {}); other members: {received} deliveries, missing {missing}, order violations {violations}",
        result.sent, result.acked, result.refused
    ));
    out.line(format!("other members' latency: {}", summary.human()));
    out.line(format!(
        "slow member: server-side TCP left ESTABLISHED at {} ({}; last seen {}), client saw a hang-up at {}; server-side send queue up to {}, client unread up to {}",
        seen.server_closed_at_ms.map_or("never".into(), |t| format!("{t} ms")),
        seen.server_state.as_deref().unwrap_or("-"),
        seen.server_state_last.as_deref().unwrap_or("-"),
        seen.client_hup_at_ms.map_or("never".into(), |t| format!("{t} ms")),
        mib(seen.server_tx_queue_max),
        mib(seen.client_unread_max)
    ));
    let last_sent_ms = drained
        .last
        .map(|(_, nanos)| nanos.saturating_sub(wire::nanos_of(begin)) / 1_000_000);
    out.line(format!(
        "slow member drained at the end: {} messages ({}, the last one published at {}) then {}",
        drained.messages,
        mib(drained.bytes),
        last_sent_ms.map_or("-".into(), |t| format!("{t} ms")),
        drained.ended.as_ref().map_or_else(
            || format!(
                "still open ({})",
                drained
                    .error
                    .as_deref()
                    .or(drained.gave_up.as_deref())
                    .unwrap_or("-")
            ),
            |c| c.to_string()
        )
    ));
    if drained.tcp_wait >= Duration::from_secs(1) {
        out.line(format!(
            "slow member's drain waited up to {:.1?} for TCP to send again, with up to {} queued for it on the server's side",
            drained.tcp_wait,
            mib(drained.tcp_queued)
        ));
    }
    out.line(format!(
        "slow member closed by the server: {}",
        match (&drained.ended, closed_by_server) {
            (Some(Closed::Frame(Some(code))), _) => format!("yes, close frame {code} read"),
            (Some(Closed::Frame(None)), _) => "yes, close frame without a code read".into(),
            (Some(Closed::Eof), _) =>
                "yes, TCP EOF without a close frame (no close frame reached this client)".into(),
            (Some(Closed::Reset), _) => "yes, TCP reset".into(),
            (None, true) => "yes, seen in its TCP state, though the drain found it open".into(),
            (None, false) => "no".into(),
        }
    ));
    out.line(rss_line(
        &[("baseline", baseline), ("max", peak), ("end", end_rss)],
        "",
    ));
    out.line(cpu.human());

    if !publisher_ready {
        out.problem("the publisher failed to connect or join");
    }
    if let Some(error) = &result.error {
        out.problem(format!("publisher: {error}"));
    }
    if result.refused > 0 {
        out.problem(format!(
            "{} pushes refused: {}",
            result.refused,
            result.refusals.join("; ")
        ));
    }
    setups.add_problems(&mut out, "other members");
    if missing > 0 {
        out.problem(format!("other members lost {missing} deliveries"));
    }
    if violations > 0 {
        out.problem(format!("{violations} order violations at other members"));
    }
    finished.add_problems(&mut out, "other members");
    if !closed_by_server && result.acked > 0 && drained.messages >= result.acked {
        // Then perhaps nothing ever waited in the server: say how much the sockets held.
        out.problem(format!(
            "the server did not close the slow consumer, which got every message published \
             ({} messages, {}; the sockets' buffers held up to {} + {} of it while it did not read)",
            drained.messages,
            mib(drained.bytes),
            mib(seen.server_tx_queue_max),
            mib(seen.client_unread_max)
        ));
    } else if !closed_by_server {
        out.problem("the server did not close the slow consumer");
    }
    match close_frame {
        Some(Some(1008)) | None => {}
        Some(Some(code)) => out.problem(format!(
            "the server closed the slow consumer with {code}, not 1008 (policy violation)"
        )),
        Some(None) => out.problem("the server closed the slow consumer without a close code"),
    }

    out.set("members", args.members);
    out.set("topic", &args.topic);
    out.set("rate", args.rate);
    out.set("duration_secs", args.duration_secs);
    out.set("messages", args.messages);
    out.set("payload_bytes", args.payload_bytes);
    out.set("joined", setups.joined);
    out.set("failed", setups.failed);
    out.set("sent", result.sent);
    out.set("acked", result.acked);
    out.set("refused", result.refused);
    out.set("max_schedule_lag_us", result.max_lag_us);
    out.set("deliveries", received);
    out.set("loss", missing);
    out.set("order_violations", violations);
    out.set("latency_us", summary);
    out.set("slow_closed_by_server", closed_by_server);
    // The code of the close frame the slow member read, if it read one.
    out.set("slow_close_code", close_frame.flatten());
    out.set("slow_watch", &seen);
    out.set("slow_drained_messages", drained.messages);
    out.set("slow_drained_bytes", drained.bytes);
    out.set("slow_last_message_seq", drained.last.map(|l| l.0));
    // When the server gave up, at the latest as far as the slow member can tell: the
    // publish time of the last message it got before the end of its stream.
    out.set("slow_last_message_sent_ms", last_sent_ms);
    out.set(
        "slow_end",
        drained.ended.as_ref().map(|c| match c {
            Closed::Frame(code) => serde_json::json!({"how": "close_frame", "code": code}),
            Closed::Eof => serde_json::json!({"how": "eof"}),
            Closed::Reset => serde_json::json!({"how": "reset"}),
        }),
    );
    out.set("slow_drain_error", drained.error);
    out.set("slow_drain_gave_up", drained.gave_up);
    // The longest the drain heard nothing while the server's side still held bytes for
    // the slow member (TCP resuming after its zero window), and the most it held then.
    out.set(
        "slow_drain_tcp_wait_ms",
        drained.tcp_wait.as_millis() as u64,
    );
    out.set("slow_drain_tcp_queued_bytes", drained.tcp_queued);
    out.set_cpu("run", &cpu);
    out.set("rss_baseline_bytes", baseline);
    out.set("rss_max_bytes", peak);
    out.set("rss_end_bytes", end_rss);
    out.set(
        "rss_series",
        series
            .iter()
            .map(|&(t, b)| (round1(t), b))
            .collect::<Vec<_>>(),
    );
    out.set("dropped", finished.dropped);
    Ok(out)
}

/// One look at the slow connection, without reading it.
fn observe(
    seen: &mut Watch,
    fd: RawFd,
    local: Option<SocketAddr>,
    server: SocketAddr,
    begin: Instant,
) {
    let now_ms = begin.elapsed().as_millis() as u64;
    if seen.client_hup_at_ms.is_none() && peer_hung_up(fd) {
        seen.client_hup_at_ms = Some(now_ms);
    }
    if let Some(unread) = unread_bytes(fd) {
        seen.client_unread_max = seen.client_unread_max.max(unread);
    }
    let Some(local) = local else {
        seen.server_state_last = Some("unwatched".to_owned());
        return;
    };
    match server_side(server, local) {
        ServerSide::Listed { state, tx_queue } => {
            seen.server_side_listed = true;
            seen.server_state_last = Some(tcp_state_name(state).to_owned());
            seen.server_tx_queue_max = seen.server_tx_queue_max.max(tx_queue);
            if state != 0x01 && seen.server_closed_at_ms.is_none() {
                seen.server_closed_at_ms = Some(now_ms);
                seen.server_state = Some(tcp_state_name(state).to_owned());
            }
        }
        // Gone after it was listed: closed (and already released) by the server. Never
        // listed: nothing can be concluded.
        ServerSide::NotListed if seen.server_side_listed => {
            seen.server_state_last = Some("gone".to_owned());
            if seen.server_closed_at_ms.is_none() {
                seen.server_closed_at_ms = Some(now_ms);
                seen.server_state = Some("gone".to_owned());
            }
        }
        ServerSide::NotListed | ServerSide::Unwatched => {
            seen.server_state_last = Some("unwatched".to_owned());
        }
    }
}

fn peer_hung_up(fd: RawFd) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one pollfd we own, zero timeout.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready > 0 && poll.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

fn unread_bytes(fd: RawFd) -> Option<u64> {
    let mut unread: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int.
    let ok = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut unread) } == 0;
    ok.then_some(unread.max(0) as u64)
}

/// What `/proc/net/tcp` says of the server's end of a connection.
#[derive(Debug, PartialEq, Eq)]
enum ServerSide {
    /// Listed, with its TCP state and send queue (bytes).
    Listed { state: u8, tx_queue: u64 },
    /// The table was read and the connection is not in it.
    NotListed,
    /// The table cannot be read or parsed, or the addresses are not IPv4.
    Unwatched,
}

/// The server's end of the connection `server` ↔ `client` in `/proc/net/tcp`.
fn server_side(server: SocketAddr, client: SocketAddr) -> ServerSide {
    let (SocketAddr::V4(server), SocketAddr::V4(client)) = (server, client) else {
        return ServerSide::Unwatched;
    };
    let hex = |ip: std::net::Ipv4Addr, port: u16| {
        format!("{:08X}:{:04X}", u32::from_ne_bytes(ip.octets()), port)
    };
    let local = hex(*server.ip(), server.port());
    let remote = hex(*client.ip(), client.port());
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return ServerSide::Unwatched;
    };
    for line in table.lines().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(_), Some(l), Some(r), Some(st), Some(queues)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return ServerSide::Unwatched;
        };
        if l == local && r == remote {
            let state = u8::from_str_radix(st, 16).ok();
            let tx_queue = queues
                .split(':')
                .next()
                .and_then(|t| u64::from_str_radix(t, 16).ok());
            return match (state, tx_queue) {
                (Some(state), Some(tx_queue)) => ServerSide::Listed { state, tx_queue },
                _ => ServerSide::Unwatched,
            };
        }
    }
    ServerSide::NotListed
}

fn tcp_state_name(state: u8) -> &'static str {
    match state {
        0x01 => "ESTABLISHED",
        0x04 => "FIN_WAIT1",
        0x05 => "FIN_WAIT2",
        0x06 => "TIME_WAIT",
        0x07 => "CLOSE",
        0x08 => "CLOSE_WAIT",
        0x09 => "LAST_ACK",
        0x0B => "CLOSING",
        _ => "other",
    }
}

#[derive(Default)]
struct Drained {
    messages: u64,
    bytes: u64,
    /// The last message read: its sequence number and send time (tool clock, ns).
    last: Option<(u64, u64)>,
    /// How the connection ended; `None`: still open after the drain.
    ended: Option<Closed>,
    error: Option<String>,
    /// Why the drain stopped reading a connection still open.
    gave_up: Option<String>,
    /// The longest the drain heard nothing while the server's side of the connection
    /// still held bytes for it, and the most it held then.
    tcp_wait: Duration,
    tcp_queued: u64,
}

/// How long a drain waits on a silent connection whose server side holds nothing more
/// for it: the server has then sent all it had, and only a close frame (or the end of
/// the connection) is still to come.
const QUIET: Duration = Duration::from_secs(3);
/// How often a silent drain looks at the server's side of the connection.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// Whether a drain that has heard nothing for `silent` stops, given what the server's
/// side of the connection holds. Not while it holds bytes for the client: after seconds
/// of a zero window the server's kernel sends again only once it learns that the window
/// has opened, from the client's window update (a bare ACK, never sent again if lost) or
/// from its own next zero-window probe, backed off to seconds by then. So silence with
/// bytes queued is TCP catching up, not the server keeping the connection open.
fn drain_gives_up(side: &ServerSide, silent: Duration, limit: Duration) -> bool {
    match side {
        ServerSide::Listed { tx_queue, .. } if *tx_queue > 0 => false,
        ServerSide::Listed { .. } | ServerSide::NotListed => silent >= QUIET,
        ServerSide::Unwatched => silent >= limit,
    }
}

/// Reads the slow socket until its stream ends, or until [`drain_gives_up`], or
/// `limit × 3` in all. `server` is the server's address, to find its side of the
/// connection in `/proc/net/tcp`.
async fn drain(mut conn: Conn, prefix: &str, server: SocketAddr, limit: Duration) -> Drained {
    let mut drained = Drained::default();
    let local = conn.local_addr();
    let start = Instant::now();
    let deadline = start + limit * 3;
    let mut heard = start;
    loop {
        if Instant::now() >= deadline {
            drained.gave_up = Some(format!("the drain's limit of {:?}", limit * 3));
            break;
        }
        let (bytes, messages, last) =
            (&mut drained.bytes, &mut drained.messages, &mut drained.last);
        let on_text = &mut |text: &str, _at: Instant| {
            *bytes += text.len() as u64;
            let parsed = wire::decode(text)
                .filter(|frame| frame.event == "new_msg")
                .and_then(|frame| parse_body(prefix, &wire::new_msg_body(frame.payload)?));
            if let Some((_, seq, nanos)) = parsed {
                *messages += 1;
                *last = Some((seq, nanos));
            }
        };
        match timeout(LOOK_EVERY, conn.recv(on_text)).await {
            Ok(Ok(None)) => heard = Instant::now(),
            Ok(Ok(Some(how))) => {
                drained.ended = Some(how);
                return drained;
            }
            Ok(Err(error)) => {
                drained.error = Some(error.0);
                return drained;
            }
            Err(_) => {
                let silent = heard.elapsed();
                let side = local.map_or(ServerSide::Unwatched, |local| server_side(server, local));
                if let ServerSide::Listed { tx_queue, .. } = side {
                    if tx_queue > 0 {
                        drained.tcp_wait = drained.tcp_wait.max(silent);
                        drained.tcp_queued = drained.tcp_queued.max(tx_queue);
                    }
                }
                if drain_gives_up(&side, silent, limit) {
                    drained.gave_up = Some(match side {
                        ServerSide::Unwatched => format!("nothing more for {silent:.1?}"),
                        _ => format!(
                            "nothing more for {silent:.1?}, nothing left for it on the server's side"
                        ),
                    });
                    break;
                }
            }
        }
    }
    conn.close(limit).await;
    drained
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn finds_a_listed_connection_and_sees_it_closed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let (at, from) = (listener.local_addr().unwrap(), client.local_addr().unwrap());
        let ServerSide::Listed { state, .. } = server_side(at, from) else {
            panic!("not listed: {:?}", server_side(at, from));
        };
        assert_eq!(tcp_state_name(state), "ESTABLISHED");

        let begin = Instant::now();
        let mut seen = Watch::default();
        observe(&mut seen, client.as_raw_fd(), Some(from), at, begin);
        assert!(seen.server_side_listed);
        assert_eq!(seen.server_closed_at_ms, None);
        assert_eq!(seen.client_hup_at_ms, None);
        // The server's end closes: it leaves ESTABLISHED, and the client sees a hang-up.
        drop(server);
        observe(&mut seen, client.as_raw_fd(), Some(from), at, begin);
        assert!(seen.server_closed_at_ms.is_some(), "{seen:?}");
        assert_ne!(seen.server_state.as_deref(), Some("ESTABLISHED"));
        assert!(seen.client_hup_at_ms.is_some(), "{seen:?}");
    }

    #[test]
    fn a_drain_waits_while_the_server_side_still_holds_bytes() {
        let limit = Duration::from_secs(10);
        let long = Duration::from_secs(25);
        let queued = ServerSide::Listed {
            state: 0x01,
            tx_queue: 3 << 20,
        };
        assert!(!drain_gives_up(&queued, long, limit));
        let empty = ServerSide::Listed {
            state: 0x01,
            tx_queue: 0,
        };
        assert!(!drain_gives_up(&empty, QUIET - LOOK_EVERY, limit));
        assert!(drain_gives_up(&empty, QUIET, limit));
        assert!(drain_gives_up(&ServerSide::NotListed, QUIET, limit));
        // Nothing known of the server's side: the longer wait.
        assert!(!drain_gives_up(&ServerSide::Unwatched, QUIET, limit));
        assert!(drain_gives_up(&ServerSide::Unwatched, limit, limit));
    }

    /// A server that pauses for more than a second before its close frame: the drain
    /// reads on to the close frame.
    #[tokio::test]
    async fn a_drain_reads_through_a_pause_to_the_close_frame() {
        use tokio::io::AsyncWriteExt;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = crate::client::scripted::accept_upgrade(listener).await;
            let mut out = Vec::new();
            out.extend([0x81, 5]);
            out.extend(b"hello");
            socket.write_all(&out).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            socket.write_all(&[0x88, 2, 0x03, 0xF0]).await.unwrap();
        });

        let target = crate::target::Target::parse(&format!("ws://{at}/ws"), 1).unwrap();
        let limit = Duration::from_secs(5);
        let conn = Conn::open(&target, "u", limit).await.unwrap();
        let drained = drain(conn, "p", at, limit).await;
        assert_eq!(drained.ended, Some(Closed::Frame(Some(1008))));
        assert_eq!(drained.bytes, 5);
        assert_eq!(drained.error, None);
        server.await.unwrap();
    }

    #[test]
    fn an_unknown_connection_is_not_taken_for_a_closed_one() {
        let nobody: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut seen = Watch::default();
        observe(
            &mut seen,
            client.as_raw_fd(),
            Some(client.local_addr().unwrap()),
            nobody,
            Instant::now(),
        );
        assert!(!seen.server_side_listed);
        assert_eq!(seen.server_closed_at_ms, None, "{seen:?}");
        assert_eq!(seen.server_state_last.as_deref(), Some("unwatched"));
    }
}
