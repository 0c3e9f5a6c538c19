//! `stores`: fluxwire's stores over the wire (docs/contract.md, "Stores over the
//! wire"), in three scenarios:
//!
//! - `status`: `users` connections join `all` (and, with `--store`, `store:status` too).
//!   Counts the bytes members receive per kind of frame (`status_users`, store patches
//!   and join replies, presence), the server's CPU, and the time from the first connect
//!   until every member is current: its last `status_users` (or its copy of
//!   `store:status`) counts all `users`.
//! - `fanout`: `members` connections join `store:todos`; a publisher adds `actions`
//!   todos, one every `interval_ms`: time from each action to the last member's patch
//!   carrying it, and loss.
//! - `actions`: `members` connections join `store:todos`; `actors` connections toggle a
//!   todo of their own as fast as `window` pushes in flight allow, for `duration_secs`:
//!   actions per second, reply latency, the patch frames and bytes each member got, and
//!   whether every member reached the last version.
//!
//! Frames are scanned, not parsed, except the few numbers each scenario needs.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::cli::{StoreScenario, StoresArgs};
use crate::client::Conn;
use crate::member::{
    collect_setups, finish_members, serve, spawn_members, Ended, Handler, MemberEnd, Setup, Spec,
};
use crate::proc::CpuMeter;
use crate::report::{mib, ms, round1, Counters, Latency, Outcome};
use crate::wire;
use crate::{Ctx, Error, Result};

/// Kinds of frames a status member counts the bytes of.
const STATUS_USERS: usize = 0;
const STORE_CHANGES: usize = 1;
const STORE_REPLY: usize = 2;
const PRESENCE: usize = 3;
const OTHER: usize = 4;
const KINDS: [&str; 5] = [
    "status_users",
    "store:status patches and states",
    "store:status join replies",
    "presence",
    "other",
];

/// The last number after `key` in `text` (e.g. `"user_count":` in a status).
fn last_number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.rfind(key)? + key.len();
    let digits: String = text[at..]
        .chars()
        .skip_while(|c| c.is_whitespace())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

pub async fn run(ctx: &Arc<Ctx>, args: &StoresArgs) -> Result<Outcome> {
    match args.scenario {
        StoreScenario::Status => status(ctx, args).await,
        StoreScenario::Fanout => fanout(ctx, args).await,
        StoreScenario::Actions => actions(ctx, args).await,
    }
}

// ---------------------------------------------------------------------------------------
// status

struct StatusMember {
    slot: usize,
    users: u64,
    bytes: Arc<[Arc<Counters>; 5]>,
    /// user_count in the last status_users, and in the copy of store:status.
    via_all: u64,
    via_store: u64,
    current: Option<Instant>,
    current_count: Arc<AtomicU32>,
    store: bool,
}

impl StatusMember {
    fn count(&mut self, kind: usize, text: &str) {
        self.bytes[kind].add(self.slot, text.len() as u64);
    }

    fn check(&mut self, at: Instant) {
        let seen = if self.store {
            self.via_store
        } else {
            self.via_all
        };
        if self.current.is_none() && seen >= self.users {
            self.current = Some(at);
            self.current_count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Handler for StatusMember {
    fn on_text(&mut self, text: &str, at: Instant) {
        let Some(frame) = wire::decode(text) else {
            return self.count(OTHER, text);
        };
        match (&*frame.topic, &*frame.event) {
            (_, "presence_state" | "presence_diff") => self.count(PRESENCE, text),
            ("all", "status_users") => {
                self.count(STATUS_USERS, text);
                if let Some(n) = last_number_after(frame.payload, "\"user_count\":") {
                    self.via_all = n;
                }
            }
            ("store:status", "patch" | "state") => {
                self.count(STORE_CHANGES, text);
                let n = last_number_after(frame.payload, "\"path\":\"/user_count\",\"value\":")
                    .or_else(|| last_number_after(frame.payload, "\"user_count\":"));
                if let Some(n) = n {
                    self.via_store = n;
                }
            }
            ("store:status", "phx_reply") => {
                self.count(STORE_REPLY, text);
                if let Some(n) = last_number_after(frame.payload, "\"user_count\":") {
                    self.via_store = n;
                }
            }
            _ => self.count(OTHER, text),
        }
        self.check(at);
    }
}

/// Connects as `user`, joins each topic in turn (every frame, join replies included,
/// goes to `handler`), then reads until stopped.
async fn member_on(
    ctx: Arc<Ctx>,
    user: String,
    topics: Vec<String>,
    mut handler: StatusMember,
    gate: Arc<Semaphore>,
    setups: mpsc::UnboundedSender<Setup>,
    stop: watch::Receiver<bool>,
) -> MemberEnd<StatusMember> {
    let permit = gate.acquire_owned().await;
    let started = Instant::now();
    let joined = async {
        let mut conn = Conn::open(&ctx.target, &user, ctx.timeout).await?;
        for topic in &topics {
            join_seeing_reply(&mut conn, topic, ctx.timeout, &mut handler).await?;
        }
        Ok::<_, Error>(conn)
    }
    .await;
    drop(permit);
    match joined {
        Ok(conn) => {
            let _ = setups.send(Setup {
                started,
                result: Ok(Instant::now()),
            });
            drop(setups);
            let ended = serve(conn, stop, &mut handler, ctx.timeout).await;
            MemberEnd { handler, ended }
        }
        Err(error) => {
            let _ = setups.send(Setup {
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

/// Joins `topic`, handing every frame (the reply too) to `handler`.
async fn join_seeing_reply(
    conn: &mut Conn,
    topic: &str,
    limit: Duration,
    handler: &mut impl Handler,
) -> Result<()> {
    let reference = conn.take_ref();
    conn.send(&wire::encode(
        Some(reference),
        reference,
        topic,
        "phx_join",
        "{}",
    ))
    .await?;
    let wanted = reference.to_string();
    let wait = async {
        loop {
            let mut reply = None;
            let mut on_text = |text: &str, at: Instant| {
                if let Some(frame) = wire::decode(text) {
                    if frame.event == "phx_reply" && frame.reference.as_deref() == Some(&wanted) {
                        reply = wire::reply_status(frame.payload).map(|s| s.into_owned());
                    }
                }
                handler.on_text(text, at);
            };
            let ended = conn.recv(&mut on_text).await?;
            match reply.as_deref() {
                Some("ok") => return Ok(()),
                Some(other) => return Err(Error(format!("join {topic}: {other}"))),
                None => {}
            }
            if let Some(how) = ended {
                return Err(Error(format!("connection ended joining {topic}: {how}")));
            }
        }
    };
    tokio::time::timeout(limit, wait)
        .await
        .map_err(|_| Error(format!("no join reply for {topic} within {limit:?}")))?
}

async fn status(ctx: &Arc<Ctx>, args: &StoresArgs) -> Result<Outcome> {
    let mut out = Outcome::new("stores-status");
    let users = args.users;
    let bytes: Arc<[Arc<Counters>; 5]> = Arc::new(std::array::from_fn(|_| Counters::new(64)));
    let current = Arc::new(AtomicU32::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (setup_tx, mut setup_rx) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut topics = vec!["all".to_owned()];
    if args.store {
        topics.push("store:status".to_owned());
    }
    let cpu = CpuMeter::start(ctx.server_pid);
    let started = Instant::now();
    let handles: Vec<JoinHandle<MemberEnd<StatusMember>>> = (0..users)
        .map(|i| {
            let member = StatusMember {
                slot: i,
                users: users as u64,
                bytes: bytes.clone(),
                via_all: 0,
                via_store: 0,
                current: None,
                current_count: current.clone(),
                store: args.store,
            };
            tokio::spawn(member_on(
                ctx.clone(),
                format!("st-{}-{i}", ctx.run_id),
                topics.clone(),
                member,
                gate.clone(),
                setup_tx.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    drop(setup_tx);
    let setups = collect_setups(ctx, &mut setup_rx, users).await;
    // Every member current, or nothing new for the timeout.
    let deadline = Instant::now() + ctx.timeout * 6;
    while (current.load(Ordering::Relaxed) as usize) < setups.joined && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = cpu.stop();
    let _ = stop_tx.send(true);
    let finished = finish_members(handles, ctx.timeout * 3).await;
    let last_current = finished.ends.iter().filter_map(|e| e.handler.current).max();
    let all_current = finished
        .ends
        .iter()
        .filter(|e| e.handler.current.is_some())
        .count();
    let to_current = last_current.map(|at| at.saturating_duration_since(started));

    let via = if args.store { "store:status" } else { "all" };
    out.line(format!(
        "{users} users joining {}: {} joined in {:.2}s ({:.0}/s), {} failed",
        topics.join(" + "),
        setups.joined,
        setups.elapsed().as_secs_f64(),
        setups.joins_per_sec(),
        setups.failed
    ));
    out.line(format!(
        "current through {via}: {all_current} of {} members, the last {} after the first connect",
        setups.joined,
        to_current.map_or("-".into(), |d| ms(d.as_micros() as u64))
    ));
    let mut total = 0;
    for (kind, name) in KINDS.iter().enumerate() {
        let n = bytes[kind].total();
        total += n;
        out.line(format!("bytes received, {name}: {}", mib(n)));
        out.set(&format!("bytes_{}", name.replace([' ', ':'], "_")), n);
    }
    out.line(format!(
        "bytes received in all: {}; {}",
        mib(total),
        cpu.human()
    ));
    out.set("users", users);
    out.set("store", args.store);
    out.set("joined", setups.joined);
    out.set("current", all_current);
    out.set("to_current_us", to_current.map(|d| d.as_micros() as u64));
    out.set("bytes_total", total);
    out.set_cpu("cpu", &cpu);
    setups.add_problems(&mut out, "users");
    finished.add_problems(&mut out, "users");
    if all_current < setups.joined {
        out.problem(format!(
            "{} members never saw all {users} users through {via}",
            setups.joined - all_current
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// fanout

struct PatchMember {
    slot: usize,
    /// `"<marker><k>"` for action k, as it appears in a patch.
    markers: Arc<Vec<String>>,
    arrivals: Vec<Option<Instant>>,
    /// Members that got action k, by k.
    delivered: Arc<Vec<AtomicU32>>,
    /// The version each member holds, by slot.
    latest: Arc<Vec<AtomicU64>>,
    /// The highest `to` (or state version) seen.
    version: u64,
    frames: u64,
    bytes: u64,
}

impl Handler for PatchMember {
    fn on_text(&mut self, text: &str, at: Instant) {
        let Some(frame) = wire::decode(text) else {
            return;
        };
        if frame.topic != "store:todos" || !(frame.event == "patch" || frame.event == "state") {
            return;
        }
        self.frames += 1;
        self.bytes += text.len() as u64;
        let version = last_number_after(frame.payload, "\"to\":")
            .or_else(|| last_number_after(frame.payload, "\"version\":"));
        self.version = self.version.max(version.unwrap_or(0));
        self.latest[self.slot].store(self.version, Ordering::Relaxed);
        for (k, marker) in self.markers.iter().enumerate() {
            if self.arrivals[k].is_none() && frame.payload.contains(marker.as_str()) {
                self.arrivals[k] = Some(at);
                self.delivered[k].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Connects and joins `store:todos` as `user`.
async fn actor(ctx: &Ctx, user: &str) -> Result<(Conn, u64)> {
    let mut conn = Conn::open(&ctx.target, user, ctx.timeout).await?;
    let join_ref = conn
        .join("store:todos", ctx.timeout, &mut |_, _| {})
        .await?;
    Ok((conn, join_ref))
}

/// Sends one action and waits for its reply: the version, or why it failed.
async fn act(ctx: &Ctx, conn: &mut Conn, join_ref: u64, event: &str, payload: &str) -> Result<u64> {
    let reference = conn.take_ref();
    conn.send(&wire::encode(
        Some(join_ref),
        reference,
        "store:todos",
        event,
        payload,
    ))
    .await?;
    let wanted = reference.to_string();
    let wait = async {
        loop {
            let mut reply = None;
            let ended = conn
                .recv(&mut |text: &str, _| {
                    if let Some(frame) = wire::decode(text) {
                        if frame.event == "phx_reply" && frame.reference.as_deref() == Some(&wanted)
                        {
                            reply = Some(frame.payload.to_owned());
                        }
                    }
                })
                .await?;
            if let Some(payload) = reply {
                return match last_number_after(&payload, "\"version\":") {
                    Some(version) if payload.contains("\"ok\"") => Ok(version),
                    _ => Err(Error(format!("{event}: {payload}"))),
                };
            }
            if let Some(how) = ended {
                return Err(Error(format!("connection ended awaiting {event}: {how}")));
            }
        }
    };
    tokio::time::timeout(ctx.timeout, wait)
        .await
        .map_err(|_| Error(format!("no {event} reply within {:?}", ctx.timeout)))?
}

fn text_payload(text: &str) -> String {
    let mut out = String::from("{\"text\":");
    wire::push_json_string(&mut out, text);
    out.push('}');
    out
}

async fn fanout(ctx: &Arc<Ctx>, args: &StoresArgs) -> Result<Outcome> {
    let mut out = Outcome::new("stores-fanout");
    let markers: Arc<Vec<String>> = Arc::new(
        (0..args.actions)
            .map(|k| format!("fx-{}-{k}\"", ctx.run_id))
            .collect(),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let delivered: Arc<Vec<AtomicU32>> =
        Arc::new((0..args.actions).map(|_| AtomicU32::new(0)).collect());
    let latest: Arc<Vec<AtomicU64>> =
        Arc::new((0..args.members).map(|_| AtomicU64::new(0)).collect());
    let join_cpu = CpuMeter::start(ctx.server_pid);
    let members = (0..args.members).map(|i| {
        let spec = Spec {
            user: format!("sf-{i}"),
            topic: "store:todos".to_owned(),
        };
        let member = PatchMember {
            slot: i,
            markers: markers.clone(),
            arrivals: vec![None; args.actions],
            delivered: delivered.clone(),
            latest: latest.clone(),
            version: 0,
            frames: 0,
            bytes: 0,
        };
        (spec, member)
    });
    let (handles, mut setup_rx) = spawn_members(ctx, members, args.concurrency, &stop_rx);
    let setups = collect_setups(ctx, &mut setup_rx, args.members).await;
    let join_cpu = join_cpu.stop();
    // Let the joins' presence settle before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let act_cpu = CpuMeter::start(ctx.server_pid);
    let (mut conn, join_ref) = actor(ctx, &format!("sf-pub-{}", ctx.run_id)).await?;
    let mut sent = Vec::with_capacity(args.actions);
    let mut ids = Vec::new();
    for k in 0..args.actions {
        let text = markers[k].trim_end_matches('"').to_owned();
        let at = Instant::now();
        match act(ctx, &mut conn, join_ref, "add", &text_payload(&text)).await {
            Ok(version) => {
                ids.push(version);
                sent.push(Some(at));
            }
            Err(error) => {
                out.problem(format!("action {k}: {error}"));
                sent.push(None);
            }
        }
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    // Every member has every patch, or the timeout passed.
    let deadline = Instant::now() + ctx.timeout;
    while Instant::now() < deadline
        && delivered
            .iter()
            .zip(&sent)
            .any(|(n, sent)| sent.is_some() && (n.load(Ordering::Relaxed) as usize) < setups.joined)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let act_cpu = act_cpu.stop();
    for id in ids {
        let _ = act(
            ctx,
            &mut conn,
            join_ref,
            "remove",
            &format!("{{\"id\":{id}}}"),
        )
        .await;
    }
    let _ = conn.close(ctx.timeout).await;
    let _ = stop_tx.send(true);
    let finished = finish_members(handles, ctx.timeout * 3).await;

    let mut to_last = Vec::new();
    let mut loss = 0;
    let latency = Latency::new();
    for (k, sent) in sent.iter().enumerate() {
        let Some(sent) = sent else { continue };
        let arrivals: Vec<Instant> = finished
            .ends
            .iter()
            .filter_map(|e| e.handler.arrivals[k])
            .collect();
        loss += setups.joined.saturating_sub(arrivals.len());
        for at in &arrivals {
            latency.record(at.saturating_duration_since(*sent).as_micros() as u64);
        }
        if arrivals.len() == setups.joined {
            if let Some(last) = arrivals.iter().max() {
                to_last.push(last.saturating_duration_since(*sent).as_micros() as u64);
            }
        }
    }
    to_last.sort_unstable();
    let pick = |q: f64| {
        (!to_last.is_empty()).then(|| to_last[((to_last.len() - 1) as f64 * q).round() as usize])
    };
    out.line(format!(
        "{} members on store:todos: {} joined in {:.2}s ({:.0}/s); joins: {}",
        args.members,
        setups.joined,
        setups.elapsed().as_secs_f64(),
        setups.joins_per_sec(),
        join_cpu.human()
    ));
    out.line(format!(
        "{} actions every {} ms: time from the action to the last member's patch: median {} p90 {} max {}; loss {loss}",
        args.actions,
        args.interval_ms,
        pick(0.5).map_or("-".into(), ms),
        pick(0.9).map_or("-".into(), ms),
        to_last.last().copied().map_or("-".into(), ms),
    ));
    out.line(format!("per-member latency: {}", latency.summary().human()));
    out.line(format!("actions: {}", act_cpu.human()));
    out.set("members", args.members);
    out.set("joined", setups.joined);
    out.set("to_last_median_us", pick(0.5));
    out.set("to_last_p90_us", pick(0.9));
    out.set("to_last_max_us", to_last.last().copied());
    out.set("loss", loss);
    out.set_cpu("cpu_actions", &act_cpu);
    setups.add_problems(&mut out, "members");
    finished.add_problems(&mut out, "members");
    if loss > 0 {
        out.problem(format!("{loss} patches missing"));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// actions

async fn actions(ctx: &Arc<Ctx>, args: &StoresArgs) -> Result<Outcome> {
    let mut out = Outcome::new("stores-actions");
    let (stop_tx, stop_rx) = watch::channel(false);
    let latest: Arc<Vec<AtomicU64>> =
        Arc::new((0..args.members).map(|_| AtomicU64::new(0)).collect());
    let members = (0..args.members).map(|i| {
        let spec = Spec {
            user: format!("sa-{i}"),
            topic: "store:todos".to_owned(),
        };
        let member = PatchMember {
            slot: i,
            markers: Arc::new(Vec::new()),
            arrivals: Vec::new(),
            delivered: Arc::new(Vec::new()),
            latest: latest.clone(),
            version: 0,
            frames: 0,
            bytes: 0,
        };
        (spec, member)
    });
    let (handles, mut setup_rx) = spawn_members(ctx, members, args.concurrency, &stop_rx);
    let setups = collect_setups(ctx, &mut setup_rx, args.members).await;

    let latency = Arc::new(Latency::new());
    let cpu = CpuMeter::start(ctx.server_pid);
    let started = Instant::now();
    let run_for = Duration::from_secs(args.duration_secs);
    let tasks: Vec<JoinHandle<Result<(u64, u64, u64)>>> = (0..args.actors)
        .map(|a| {
            let (ctx, latency, window) = (ctx.clone(), latency.clone(), args.window);
            tokio::spawn(async move {
                let (mut conn, join_ref) =
                    actor(&ctx, &format!("sa-act-{}-{a}", ctx.run_id)).await?;
                let text = text_payload(&format!("busy-{}-{a}", ctx.run_id));
                let id = act(&ctx, &mut conn, join_ref, "add", &text).await?;
                let toggle = format!("{{\"id\":{id}}}");
                let (done, top) = toggle_loop(
                    &ctx, &mut conn, join_ref, &toggle, window, run_for, &latency,
                )
                .await?;
                let _ = act(&ctx, &mut conn, join_ref, "remove", &toggle).await;
                let _ = conn.close(ctx.timeout).await;
                Ok((done, top, id))
            })
        })
        .collect();
    let mut done = 0;
    let mut top = 0;
    for task in tasks {
        match task.await {
            Ok(Ok((n, version, _))) => {
                done += n;
                top = top.max(version);
            }
            Ok(Err(error)) => out.problem(format!("actor: {error}")),
            Err(error) => out.problem(format!("actor task: {error}")),
        }
    }
    let elapsed = started.elapsed();
    let cpu = cpu.stop();
    // Every member reaches the last toggle's version (or the timeout passes).
    let deadline = Instant::now() + ctx.timeout;
    while Instant::now() < deadline
        && latest
            .iter()
            .take(setups.joined)
            .any(|v| v.load(Ordering::Relaxed) < top)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let finished = finish_members(handles, ctx.timeout * 3).await;
    let behind = finished
        .ends
        .iter()
        .filter(|e| e.handler.version < top)
        .count();
    let frames: u64 = finished.ends.iter().map(|e| e.handler.frames).sum();
    let bytes: u64 = finished.ends.iter().map(|e| e.handler.bytes).sum();
    let per_sec = done as f64 / elapsed.as_secs_f64().max(1e-6);
    let n = finished.ends.len().max(1) as f64;
    out.line(format!(
        "{} members; {} actors, {} in flight each, for {:.1}s: {done} actions ({:.0}/s); reply latency {}",
        setups.joined,
        args.actors,
        args.window,
        elapsed.as_secs_f64(),
        per_sec,
        latency.summary().human()
    ));
    out.line(format!(
        "patch frames per member: {:.1} ({:.2} actions per frame); bytes per member {}; members behind the last version {top}: {behind}",
        frames as f64 / n,
        done as f64 / (frames as f64 / n).max(1.0),
        mib((bytes as f64 / n) as u64),
    ));
    out.line(cpu.human());
    out.set("members", setups.joined);
    out.set("actions", done);
    out.set("actions_per_sec", round1(per_sec));
    out.set("frames_per_member", round1(frames as f64 / n));
    out.set("behind", behind);
    out.set_cpu("cpu", &cpu);
    setups.add_problems(&mut out, "members");
    finished.add_problems(&mut out, "members");
    if behind > 0 {
        out.problem(format!("{behind} members never reached version {top}"));
    }
    Ok(out)
}

/// Toggles as fast as `window` pushes in flight allow, for `run_for`: the number of ok
/// replies and the highest version.
async fn toggle_loop(
    ctx: &Ctx,
    conn: &mut Conn,
    join_ref: u64,
    payload: &str,
    window: usize,
    run_for: Duration,
    latency: &Latency,
) -> Result<(u64, u64)> {
    let end = Instant::now() + run_for;
    let mut in_flight: std::collections::HashMap<String, Instant> = Default::default();
    let (mut done, mut top) = (0u64, 0u64);
    loop {
        while in_flight.len() < window && Instant::now() < end {
            let reference = conn.take_ref();
            conn.feed(&wire::encode(
                Some(join_ref),
                reference,
                "store:todos",
                "toggle",
                payload,
            ));
            in_flight.insert(reference.to_string(), Instant::now());
        }
        conn.flush().await?;
        if in_flight.is_empty() {
            return Ok((done, top));
        }
        let mut failure = None;
        let ended = tokio::time::timeout(
            ctx.timeout,
            conn.recv(&mut |text: &str, at: Instant| {
                let Some(frame) = wire::decode(text) else {
                    return;
                };
                if frame.event != "phx_reply" {
                    return;
                }
                let Some(sent) = frame.reference.as_deref().and_then(|r| in_flight.remove(r))
                else {
                    return;
                };
                latency.record(at.saturating_duration_since(sent).as_micros() as u64);
                match last_number_after(frame.payload, "\"version\":") {
                    Some(version) if frame.payload.contains("\"ok\"") => {
                        done += 1;
                        top = top.max(version);
                    }
                    _ => failure = Some(frame.payload.to_owned()),
                }
            }),
        )
        .await
        .map_err(|_| Error(format!("no reply within {:?}", ctx.timeout)))??;
        if let Some(payload) = failure {
            return Err(Error(format!("toggle refused: {payload}")));
        }
        if let Some(how) = ended {
            return Err(Error(format!("connection ended: {how}")));
        }
    }
}
