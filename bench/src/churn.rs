//! `churn`: `watchers` long-lived members of one topic track its presence with
//! phoenix.js's algorithm ([`crate::presence`]); meanwhile cycles start at `rate` per
//! second for `duration_secs` (at most `concurrency` in flight): connect, join, post one
//! new_msg and wait for its ok, phx_leave and wait for its ok, close and wait for the
//! server's close. Reports cycles, errors (any step failing or refused), cycle latency;
//! after `settle_secs`, whether every watcher's presence map holds exactly the watchers
//! (one meta each), whether every watcher received every posted message, and the
//! server's RSS: baseline (watchers joined, no cycle yet), peak, end.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinError, JoinSet};

use crate::cli::ChurnArgs;
use crate::client::{Conn, ReplyStatus};
use crate::member::{collect_setups, finish_members, spawn_members, Handler, Spec};
use crate::presence::Presence;
use crate::proc::{rss_bytes, CpuMeter, RssSampler};
use crate::report::{ms, round1, rss_line, Latency, Outcome};
use crate::wire;
use crate::{Ctx, Error, Result};

struct Watcher {
    topic: String,
    prefix: Arc<str>,
    presence: Presence,
    errors: Vec<String>,
    messages: u64,
}

impl Handler for Watcher {
    fn on_text(&mut self, text: &str, _at: Instant) {
        let Some(frame) = wire::decode(text) else {
            self.error(format!("undecodable frame {text:.100}"));
            return;
        };
        if frame.topic != self.topic {
            return;
        }
        let applied = match &*frame.event {
            "presence_state" => self.presence.on_state(frame.payload),
            "presence_diff" => self.presence.on_diff(frame.payload),
            "new_msg" => {
                if wire::new_msg_body(frame.payload).is_some_and(|b| b.starts_with(&*self.prefix)) {
                    self.messages += 1;
                }
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(error) = applied {
            self.error(error);
        }
    }
}

impl Watcher {
    /// Keeps the first few errors (the run fails on any).
    fn error(&mut self, error: String) {
        if self.errors.len() < 5 {
            self.errors.push(error);
        }
    }
}

/// One cycle's result.
struct Cycle {
    /// Whole cycle, when every step succeeded.
    latency: Option<Duration>,
    /// The new_msg was replied ok (so watchers must receive it).
    posted: bool,
    error: Option<String>,
}

async fn cycle(ctx: Arc<Ctx>, topic: Arc<str>, user: String, body: String) -> Cycle {
    let started = Instant::now();
    let mut posted = false;
    let steps = async {
        let mut conn = Conn::open(&ctx.target, &user, ctx.timeout)
            .await
            .map_err(|e| Error(format!("connect: {e}")))?;
        let ignore = &mut |_: &str, _: Instant| {};
        let join_ref = conn
            .join(&topic, ctx.timeout, ignore)
            .await
            .map_err(|e| Error(format!("join: {e}")))?;
        let payload = wire::body_payload(&body);
        match conn
            .request(join_ref, &topic, "new_msg", &payload, ctx.timeout, ignore)
            .await
            .map_err(|e| Error(format!("new_msg: {e}")))?
        {
            ReplyStatus::Ok => posted = true,
            ReplyStatus::Refused(why) => return Err(Error(format!("new_msg refused: {why}"))),
        }
        match conn
            .request(join_ref, &topic, "phx_leave", "{}", ctx.timeout, ignore)
            .await
            .map_err(|e| Error(format!("leave: {e}")))?
        {
            ReplyStatus::Ok => {}
            ReplyStatus::Refused(why) => return Err(Error(format!("leave refused: {why}"))),
        }
        if !conn.close(ctx.timeout).await {
            return Err(Error("close: the server did not answer the close".into()));
        }
        Ok(())
    }
    .await;
    match steps {
        Ok(()) => Cycle {
            latency: Some(started.elapsed()),
            posted,
            error: None,
        },
        Err(error) => Cycle {
            latency: None,
            posted,
            error: Some(error.0),
        },
    }
}

#[derive(Default)]
struct Tally {
    started: u64,
    completed: u64,
    posted: u64,
    errors: u64,
    first_errors: Vec<String>,
}

impl Tally {
    /// A finished cycle task; one that panicked is an error.
    fn add_task(&mut self, done: std::result::Result<Cycle, JoinError>, latency: &Latency) {
        let cycle = done.unwrap_or_else(|error| Cycle {
            latency: None,
            posted: false,
            error: Some(format!("cycle task failed: {error}")),
        });
        self.add(cycle, latency);
    }

    fn add(&mut self, cycle: Cycle, latency: &Latency) {
        if cycle.posted {
            self.posted += 1;
        }
        if let Some(l) = cycle.latency {
            self.completed += 1;
            latency.record(l.as_micros() as u64);
        }
        if let Some(error) = cycle.error {
            self.errors += 1;
            if self.first_errors.len() < 10 {
                self.first_errors.push(error);
            }
        }
    }
}

pub async fn run(ctx: &Arc<Ctx>, args: &ChurnArgs) -> Result<Outcome> {
    let mut out = Outcome::new("churn");
    let pid = ctx.server_pid;
    let prefix: Arc<str> = format!("{}/c/", ctx.run_id).into();
    let topic: Arc<str> = args.topic.clone().into();
    let (stop_tx, stop_rx) = watch::channel(false);

    let names: Vec<String> = (0..args.watchers)
        .map(|j| format!("watch-{j}-{}", ctx.run_id))
        .collect();
    let watchers = names.iter().map(|name| {
        let spec = Spec {
            user: name.clone(),
            topic: args.topic.clone(),
        };
        let watcher = Watcher {
            topic: args.topic.clone(),
            prefix: prefix.clone(),
            presence: Presence::new(),
            errors: Vec::new(),
            messages: 0,
        };
        (spec, watcher)
    });
    let (handles, mut setup_rx) = spawn_members(ctx, watchers, args.watchers, &stop_rx);
    let setups = collect_setups(ctx, &mut setup_rx, args.watchers).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = pid.and_then(rss_bytes);
    let sampler = RssSampler::start(pid, Duration::from_millis(250));

    let cpu = CpuMeter::start(pid);
    let latency = Latency::new();
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut cycles = JoinSet::new();
    let mut tally = Tally::default();
    let begin = Instant::now();
    let mut max_lag = Duration::ZERO;
    for i in 0u64.. {
        let offset = i as f64 / args.rate;
        if offset >= args.duration_secs as f64 {
            break;
        }
        let due = begin + Duration::from_secs_f64(offset);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        max_lag = max_lag.max(Instant::now().saturating_duration_since(due));
        let (ctx, topic) = (ctx.clone(), topic.clone());
        let (user, body) = (format!("churn-{i}"), format!("{prefix}{i}"));
        cycles.spawn(async move {
            let result = cycle(ctx, topic, user, body).await;
            drop(permit);
            result
        });
        tally.started += 1;
        while let Some(done) = cycles.try_join_next() {
            tally.add_task(done, &latency);
        }
    }
    let scheduled_secs = begin.elapsed().as_secs_f64();
    // Every cycle is bounded by its steps' timeouts (five of them).
    let deadline = tokio::time::Instant::now() + ctx.timeout * 6;
    while !cycles.is_empty() {
        match tokio::time::timeout_at(deadline, cycles.join_next()).await {
            Ok(Some(done)) => tally.add_task(done, &latency),
            Ok(None) => break,
            Err(_) => {
                let stuck = cycles.len() as u64;
                cycles.abort_all();
                tally.errors += stuck;
                tally.first_errors.push(format!("{stuck} cycles stuck"));
                break;
            }
        }
    }
    let cycles_secs = begin.elapsed().as_secs_f64();
    let cpu = cpu.stop();

    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let end_rss = pid.and_then(rss_bytes);
    let peak = sampler.peak().max(end_rss);
    let _ = stop_tx.send(true);
    let finished = finish_members(handles, ctx.timeout * 3).await;

    // Presence exact: every watcher sees exactly the watchers, one meta each.
    let expected: HashSet<&str> = names.iter().map(String::as_str).collect();
    let mut exact = 0;
    let mut presence_problems = Vec::new();
    let mut watcher_errors = Vec::new();
    let mut message_loss = 0u64;
    for end in &finished.ends {
        let w = &end.handler;
        watcher_errors.extend(w.errors.iter().cloned());
        message_loss += tally.posted.saturating_sub(w.messages);
        match w.presence.state() {
            None => presence_problems.push("a watcher never received presence_state".to_owned()),
            Some(state) => {
                let keys: HashSet<&str> = state.keys().map(String::as_str).collect();
                let extra: Vec<&&str> = keys.difference(&expected).take(5).collect();
                let missing: Vec<&&str> = expected.difference(&keys).take(5).collect();
                let multi = state.values().filter(|metas| metas.len() != 1).count();
                if extra.is_empty() && missing.is_empty() && multi == 0 {
                    exact += 1;
                } else if presence_problems.len() < 5 {
                    presence_problems.push(format!(
                        "a watcher's presence has {} keys: extra {extra:?}, missing {missing:?}, {multi} keys without exactly one meta",
                        state.len()
                    ));
                }
            }
        }
    }
    let summary = latency.summary();
    let achieved = tally.started as f64 / scheduled_secs.max(1e-6);
    let rss_ratio = match (baseline, end_rss) {
        (Some(b), Some(e)) if b > 0 => Some(e as f64 / b as f64),
        _ => None,
    };

    out.line(format!(
        "{} watchers on {} ({} joined); cycles at {}/s for {}s (concurrency {}): {} started ({achieved:.0}/s achieved, start lag at most {}), {} completed, {} errors",
        args.watchers,
        args.topic,
        setups.joined,
        args.rate,
        args.duration_secs,
        args.concurrency,
        tally.started,
        ms(max_lag.as_micros() as u64),
        tally.completed,
        tally.errors
    ));
    out.line(format!("cycle latency: {}", summary.human()));
    out.line(format!(
        "presence exact at the end in {exact} of {} watchers; watchers' deliveries missing: {message_loss} (of {} posted × {})",
        finished.ends.len(),
        tally.posted,
        finished.ends.len()
    ));
    let ratio_text = rss_ratio.map_or(String::new(), |ratio| {
        let within = if ratio <= 1.10 { "" } else { "NOT " };
        format!(
            " ({:+.1}% vs baseline: {within}within 10%)",
            (ratio - 1.0) * 100.0
        )
    });
    out.line(rss_line(
        &[("baseline", baseline), ("peak", peak), ("end", end_rss)],
        &ratio_text,
    ));
    out.line(cpu.human());

    setups.add_problems(&mut out, "watchers");
    if tally.errors > 0 {
        out.problem(format!(
            "{} cycles failed: {}",
            tally.errors,
            tally.first_errors.join("; ")
        ));
    }
    if exact < args.watchers {
        out.problem(format!(
            "presence not exact in {} watchers: {}",
            args.watchers - exact,
            presence_problems.join("; ")
        ));
    }
    if message_loss > 0 {
        out.problem(format!("watchers missed {message_loss} posted messages"));
    }
    if !watcher_errors.is_empty() {
        out.problem(format!("watcher errors: {}", watcher_errors.join("; ")));
    }
    finished.add_problems(&mut out, "watchers");

    out.set("rate", args.rate);
    out.set("duration_secs", args.duration_secs);
    out.set("concurrency", args.concurrency);
    out.set("watchers", args.watchers);
    out.set("watchers_joined", setups.joined);
    out.set("cycles_started", tally.started);
    out.set("cycles_completed", tally.completed);
    out.set(
        "cycles_per_sec",
        round1(tally.completed as f64 / cycles_secs.max(1e-6)),
    );
    out.set("starts_per_sec", round1(achieved));
    out.set("max_start_lag_us", max_lag.as_micros() as u64);
    out.set("errors", tally.errors);
    out.set("first_errors", &tally.first_errors);
    out.set("posted", tally.posted);
    out.set("cycle_latency_us", summary);
    out.set("presence_exact_watchers", exact);
    out.set("presence_exact", exact == args.watchers);
    out.set("watcher_message_loss", message_loss);
    out.set_cpu("run", &cpu);
    out.set("settle_secs", args.settle_secs);
    out.set("rss_baseline_bytes", baseline);
    out.set("rss_peak_bytes", peak);
    out.set("rss_end_bytes", end_rss);
    out.set(
        "rss_end_vs_baseline",
        rss_ratio.map(|r| (r * 1000.0).round() / 1000.0),
    );
    out.set("rss_end_within_10pct", rss_ratio.map(|r| r <= 1.10));
    Ok(out)
}
