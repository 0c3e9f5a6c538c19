//! `fluxwire-bench`: a load tool for any server speaking the Phoenix Channels V2
//! protocol with the chat-room contract of docs/contract.md (`room:NAME` topics with
//! presence, `new_msg` replied `ok {"id"}` and broadcast to every member).
//!
//! The tool runs in one process and measures with one monotonic clock, so a publish
//! time and the receive times of its deliveries are directly comparable. It shares the
//! machine's cores with the server it measures, so it reports its own CPU beside every
//! figure, and it is built to be cheap per frame: frames are scanned, not parsed, except
//! for the few fields a mode needs.
//!
//! Modules: [`cli`] (options), [`target`] (the loopback-only target and source-address
//! spreading), [`wire`] (V2 frame scanning and encoding), [`client`] (one WebSocket
//! connection speaking V2), [`member`] (a joined connection that keeps reading until
//! told to stop), [`presence`] (phoenix.js's presence algorithm), [`proc`] (server and
//! tool RSS/CPU from `/proc`), [`report`] (histograms and the output), and one module
//! per mode: [`connect`], [`fanout`], [`throughput`], [`churn`], [`slow_consumer`],
//! [`stores`].

pub mod churn;
pub mod cli;
pub mod client;
pub mod connect;
pub mod fanout;
pub mod member;
pub mod presence;
pub mod proc;
pub mod report;
pub mod slow_consumer;
pub mod stores;
pub mod target;
pub mod throughput;
pub mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cli::{Cli, Mode};
use report::Outcome;
use target::Target;

/// An error that ends a run or one connection: a message with its context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Error(error.to_string())
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error(message.to_owned())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// What every mode needs: where to connect, whom to watch, how long to wait.
pub struct Ctx {
    pub target: Target,
    pub server_pid: Option<u32>,
    /// Upper bound of every single wait (connect, handshake, reply, close, drain).
    pub timeout: Duration,
    /// Unique to this run; tags message bodies so that frames of other clients or of
    /// earlier runs on the same topics are told apart.
    pub run_id: String,
}

/// Runs the mode `cli` selects and returns its outcome (never panics on a server
/// failure: failures are in [`Outcome::problems`]). `Err` only for a setup error such
/// as a non-loopback target.
pub async fn run(cli: &Cli) -> Result<Outcome> {
    let target = Target::parse(&cli.common.url, cli.common.sources)?;
    if let Some(pid) = cli.common.server_pid {
        if proc::rss_bytes(pid).is_none() {
            return Err(Error(format!(
                "--server-pid {pid}: no readable /proc/{pid}/status"
            )));
        }
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let ctx = Arc::new(Ctx {
        target,
        server_pid: cli.common.server_pid,
        timeout: Duration::from_secs(cli.common.timeout_secs),
        run_id: format!("{:x}", (nanos as u64) ^ u64::from(std::process::id())),
    });
    wire::init_clock();
    let mut outcome = match &cli.mode {
        Mode::Connect(args) => connect::run(&ctx, args).await?,
        Mode::Fanout(args) => fanout::run(&ctx, args).await?,
        Mode::Throughput(args) => throughput::run(&ctx, args).await?,
        Mode::Churn(args) => churn::run(&ctx, args).await?,
        Mode::SlowConsumer(args) => slow_consumer::run(&ctx, args).await?,
        Mode::Stores(args) => stores::run(&ctx, args).await?,
    };
    outcome.set("url", ctx.target.url());
    outcome.set("sources", ctx.target.sources().len());
    outcome.set("server_pid", ctx.server_pid);
    outcome.set("run_id", ctx.run_id.clone());
    outcome.set("tool_peak_rss_bytes", proc::self_peak_rss_bytes());
    Ok(outcome)
}

/// Raises this process's RLIMIT_NOFILE soft limit to its hard limit; returns
/// `(soft before, soft after)`.
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let before = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((before, limit.rlim_cur))
    }
}

/// The current RLIMIT_NOFILE soft limit.
pub fn nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        0
    }
}
