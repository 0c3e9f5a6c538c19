//! Server configuration: command-line flags, each with an environment variable.
//!
//! Owns the knobs and their defaults; parsing is clap's. Must not act on any of them:
//! the endpoint and transports read what they need.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::cluster::{default_node_id, ClusterConfig, ClusterUrl};
use crate::transport::door::AddressSet;
use crate::transport::origin::{HostAllow, OriginPolicy};

/// fluxwire: a Phoenix Channels server. phoenix.js connects to it unchanged.
#[derive(Clone, Debug, Parser)]
#[command(name = "fluxwire", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 4000)]
    pub port: u16,

    /// Largest WebSocket message accepted, in bytes, after reassembly of fragments.
    /// Larger ones close the connection with code 1009. Also the largest long-poll POST
    /// body: a larger one is refused with 413.
    #[arg(long, env = "FLUXWIRE_MAX_FRAME_SIZE", default_value_t = 1024 * 1024)]
    pub max_frame_size: usize,

    /// Close a WebSocket that has sent no complete message (not even a heartbeat) for
    /// this many milliseconds, with code 1001: pings, pongs and the fragments of an
    /// unfinished message do not count. phoenix.js sends a heartbeat every 30 s.
    #[arg(long, env = "FLUXWIRE_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,

    /// Most frames queued for one WebSocket client, and held for one of its joins in
    /// progress; past it (a client that stopped reading) the connection is closed with 1008.
    #[arg(long, env = "FLUXWIRE_MAX_OUTBOUND_FRAMES", default_value_t = 1000)]
    pub max_outbound_frames: usize,

    /// Most bytes queued for one WebSocket client; past it the connection is closed
    /// with 1008. Also the most bytes a long-poll session queues for its next poll;
    /// past it the session ends (its client's next request gets 410).
    #[arg(long, env = "FLUXWIRE_MAX_OUTBOUND_BYTES", default_value_t = 1024 * 1024)]
    pub max_outbound_bytes: usize,

    /// Most bytes that WebSocket messages still arriving (a frame read in part, the
    /// fragments of a message not yet complete) may hold across all connections. Past
    /// it, a connection that needs more is closed with code 1013 (try again later).
    /// Messages up to 16 KiB never count.
    #[arg(long, env = "FLUXWIRE_MAX_UNFINISHED_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_unfinished_bytes: usize,

    /// Most channels one connection may have joined at once.
    #[arg(long, env = "FLUXWIRE_MAX_CHANNELS", default_value_t = 100)]
    pub max_channels: usize,

    /// Messages one connection may send at once, joins and heartbeats included; its
    /// sustained rate is --rate-messages-per-sec. Past them a message is answered
    /// `error {"reason": "rate limited"}`, and a client that goes on until 10 bursts'
    /// worth are refused is closed with 1008.
    #[arg(long, env = "FLUXWIRE_RATE_MESSAGES_BURST", default_value_t = 4_000, value_parser = clap::value_parser!(u32).range(1..=MAX_RATE))]
    pub rate_messages_burst: u32,

    /// Messages per second that refill a connection's burst (--rate-messages-burst);
    /// 0 turns the message rate limit off.
    #[arg(long, env = "FLUXWIRE_RATE_MESSAGES_PER_SEC", default_value_t = 4_000, value_parser = clap::value_parser!(u32).range(0..=MAX_RATE))]
    pub rate_messages_per_sec: u32,

    /// Joins one connection may send at once; its sustained rate is
    /// --rate-joins-per-sec. Past them a join is answered `error {"reason": "rate
    /// limited"}`, and a client that goes on until 10 bursts' worth are refused is
    /// closed with 1008.
    #[arg(long, env = "FLUXWIRE_RATE_JOINS_BURST", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=MAX_RATE))]
    pub rate_joins_burst: u32,

    /// Joins per second that refill a connection's burst (--rate-joins-burst); 0 turns
    /// the join rate limit off.
    #[arg(long, env = "FLUXWIRE_RATE_JOINS_PER_SEC", default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=MAX_RATE))]
    pub rate_joins_per_sec: u32,

    /// Origin check for browser connections: `conn` (the Origin must be the request's
    /// own: its scheme, `http` unless a proxy in front sets `X-Forwarded-Proto: https`,
    /// and the host and port of its `Host` header), `off`, or a comma-separated list of
    /// allowed origins such as `https://example.com,https://*.example.org:8443` (a
    /// missing scheme or port matches any; `*.` matches the domain and its subdomains).
    /// Requests without an Origin header (non-browser clients) are always allowed.
    #[arg(long, env = "FLUXWIRE_CHECK_ORIGIN", default_value = "conn", value_parser = OriginPolicy::parse)]
    pub check_origin: OriginPolicy,

    /// Host names the server answers to, comma-separated, such as
    /// `chat.example.com,*.example.org,127.0.0.1:4000` (`*.` matches the domain and its
    /// subdomains; a port, if given, must be the one the `Host` header names). A request
    /// whose `Host` header is not listed is refused with 403, whatever its path but
    /// `/health`: this is what stops a DNS-rebinding page, whose Origin and Host both
    /// name the attacker's domain and so pass `--check-origin conn`. Unset: any Host.
    #[arg(long, env = "FLUXWIRE_HOST_ALLOW", value_parser = HostAllow::parse)]
    pub host_allow: Option<HostAllow>,

    /// Most connections open at once from one source address (an IPv6 address counts
    /// by its /64): WebSocket and HTTP connections alike, long-poll requests included.
    /// Also the most long-poll sessions open at once from one address. Past it a new
    /// connection is answered 429 and closed before its request is read (a long-poll
    /// handshake past its sessions: HTTP 429 with `{"status":403}`). 0: no limit.
    /// Addresses in --ip-limits-exempt are not limited.
    #[arg(long, env = "FLUXWIRE_MAX_CONNECTIONS_PER_IP", default_value_t = 1000)]
    pub max_connections_per_ip: usize,

    /// New connections one source address may open per second, on average (decimals
    /// allowed), once it has used its burst (--connection-burst-per-ip); past it, 429.
    /// 0: no limit.
    #[arg(long, env = "FLUXWIRE_CONNECTION_RATE_PER_IP", default_value_t = 100.0, value_parser = parse_rate)]
    pub connection_rate_per_ip: f64,

    /// New connections one source address may open at once before
    /// --connection-rate-per-ip applies.
    #[arg(long, env = "FLUXWIRE_CONNECTION_BURST_PER_IP", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub connection_burst_per_ip: u32,

    /// Source addresses and networks the per-address limits do not apply to,
    /// comma-separated (e.g. `127.0.0.0/8,::1,10.0.0.0/8`), or `none`. Loopback by
    /// default: a reverse proxy on the same host, and the load tool, connect from there.
    /// A reverse proxy elsewhere must be listed, or all its clients share one address.
    #[arg(long, env = "FLUXWIRE_IP_LIMITS_EXEMPT", default_value = "127.0.0.0/8,::1", value_parser = AddressSet::parse)]
    pub ip_limits_exempt: AddressSet,

    /// File descriptors kept free (at least 32): once the open connections reach
    /// RLIMIT_NOFILE less this many, new ones are answered 503 and closed at once, so the
    /// process never runs out (its own descriptors, files it serves, connections being
    /// refused) and existing connections keep working.
    #[arg(long, env = "FLUXWIRE_FD_RESERVE", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(32..))]
    pub fd_reserve: u64,

    /// Directory served at `/` (the demo page).
    #[arg(long, env = "FLUXWIRE_STATIC_DIR", default_value = "static")]
    pub static_dir: PathBuf,

    /// Worker threads (default: one per core).
    #[arg(long, env = "FLUXWIRE_WORKERS")]
    pub workers: Option<usize>,

    /// On SIGINT/SIGTERM, how long open connections get to finish after being asked
    /// to close (code 1001), in milliseconds.
    #[arg(long, env = "FLUXWIRE_SHUTDOWN_TIMEOUT_MS", default_value_t = 5_000)]
    pub shutdown_timeout_ms: u64,

    /// Transports served under each socket mount, comma-separated: `websocket`
    /// (`{mount}/websocket`) and `longpoll` (`{mount}/longpoll`). A transport left out
    /// answers 404, so `--transports longpoll` makes phoenix.js clients created with
    /// `longPollFallbackMs` fall back to long-polling.
    #[arg(long, env = "FLUXWIRE_TRANSPORTS", default_value = "websocket,longpoll", value_parser = Transports::parse)]
    pub transports: Transports,

    /// How long a long-poll GET waits for messages before answering "no content"
    /// (204), in milliseconds. Keep it well below phoenix.js's 20 s request timeout.
    #[arg(long, env = "FLUXWIRE_LONGPOLL_WINDOW_MS", default_value_t = 10_000)]
    pub longpoll_window_ms: u64,

    /// End a long-poll session (its channels terminate, its presences leave) when no
    /// poll has been waiting for this many milliseconds. Phoenix uses 1.5 × the window.
    #[arg(long, env = "FLUXWIRE_LONGPOLL_TIMEOUT_MS", default_value_t = 15_000)]
    pub longpoll_timeout_ms: u64,

    /// A request body (a long-poll POST's) must arrive whole within this many
    /// milliseconds of its request head; past it the request is answered 408 and its
    /// connection closed, so a client that declares a body and never sends it holds no
    /// descriptor for long.
    #[arg(long, env = "FLUXWIRE_BODY_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_ms: u64,

    /// Secret that signs long-poll session tokens (at least 32 bytes, e.g. the output
    /// of `openssl rand -base64 48`). When absent, a random one is generated at start
    /// (with a warning): tokens issued before a restart then no longer verify. Sessions
    /// themselves live in memory either way; a client whose session is gone reconnects.
    #[arg(long, env = "FLUXWIRE_SECRET_KEY_BASE", hide_env_values = true, value_parser = SecretKeyBase::parse)]
    pub secret_key_base: Option<SecretKeyBase>,

    /// Join a cluster of fluxwire nodes through Redis, `redis://HOST:PORT[/DB]`: every
    /// node that uses the same Redis and the same prefix serves one set of topics.
    /// Without it, one node and no Redis.
    #[arg(long, env = "FLUXWIRE_CLUSTER", value_parser = ClusterUrl::parse)]
    pub cluster: Option<ClusterUrl>,

    /// Prefix of the cluster's Redis channels and keys: clusters sharing one Redis
    /// stay apart.
    #[arg(long, env = "FLUXWIRE_CLUSTER_PREFIX", default_value = "fluxwire", value_parser = non_empty)]
    pub cluster_prefix: String,

    /// This node's name in the cluster, unique in it (default: `node-<pid>-<random>`).
    #[arg(long, env = "FLUXWIRE_NODE_ID", value_parser = non_empty)]
    pub node_id: Option<String>,
    /// Directory where persistent state is kept across restarts (the application's
    /// persistent stores, the rooms' messages), created if missing. Without it, all state
    /// lives in memory and starts empty at every start.
    #[arg(long, env = "FLUXWIRE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// A value that must not be empty once trimmed.
fn non_empty(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(value.to_owned())
    }
}

/// The largest burst and rate the `--rate-*` flags accept.
const MAX_RATE: i64 = 1_000_000;

/// Which transports the socket mounts serve (`--transports`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transports {
    pub websocket: bool,
    pub longpoll: bool,
}

impl Transports {
    /// Parses a comma-separated list of `websocket` and `longpoll` (at least one).
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut transports = Transports {
            websocket: false,
            longpoll: false,
        };
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "websocket" => transports.websocket = true,
                "longpoll" => transports.longpoll = true,
                other => {
                    return Err(format!(
                        "unknown transport {other:?} (expected websocket or longpoll)"
                    ))
                }
            }
        }
        if transports.websocket || transports.longpoll {
            Ok(transports)
        } else {
            Err("at least one transport is needed: websocket, longpoll".to_owned())
        }
    }
}

/// The server secret (`--secret-key-base`); never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKeyBase(String);

impl SecretKeyBase {
    /// Shortest secret accepted, in bytes.
    pub const MIN_LEN: usize = 32;

    /// Accepts a secret of at least [`MIN_LEN`](Self::MIN_LEN) bytes.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.len() < Self::MIN_LEN {
            return Err(format!(
                "the secret key base must be at least {} bytes long",
                Self::MIN_LEN
            ));
        }
        Ok(SecretKeyBase(value.to_owned()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for SecretKeyBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKeyBase(<redacted>)")
    }
}

/// A rate per second: a finite number, at least 0.
fn parse_rate(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(format!(
            "{value:?} is not a rate (a number of connections per second, 0 or more)"
        )),
    }
}

impl Config {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    pub fn longpoll_window(&self) -> Duration {
        Duration::from_millis(self.longpoll_window_ms)
    }

    pub fn longpoll_timeout(&self) -> Duration {
        Duration::from_millis(self.longpoll_timeout_ms)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    /// The cluster to join, if `--cluster` is set.
    pub fn cluster_config(&self) -> Option<ClusterConfig> {
        let url = self.cluster.clone()?;
        Some(ClusterConfig {
            url,
            prefix: self.cluster_prefix.clone(),
            node_id: self.node_id.clone().unwrap_or_else(default_node_id),
        })
    }

    /// Defaults for a server embedded in a program or a test: an ephemeral port on
    /// loopback, everything else as the flags' defaults.
    pub fn ephemeral() -> Self {
        Config::parse_from(["fluxwire", "--host", "127.0.0.1", "--port", "0"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("fluxwire").chain(args.iter().copied()))
    }

    #[test]
    fn rate_limits_default_on_and_are_validated() {
        let config = parse(&[]).unwrap();
        let defaults = (
            config.rate_messages_burst,
            config.rate_messages_per_sec,
            config.rate_joins_burst,
            config.rate_joins_per_sec,
        );
        assert_eq!(defaults, (4_000, 4_000, 200, 100));
        let off = parse(&["--rate-messages-per-sec", "0", "--rate-joins-per-sec", "0"]).unwrap();
        assert_eq!((off.rate_messages_per_sec, off.rate_joins_per_sec), (0, 0));
        for bad in [
            ["--rate-messages-burst", "0"],
            ["--rate-joins-burst", "0"],
            ["--rate-messages-per-sec", "-1"],
            ["--rate-joins-per-sec", "1000001"],
            ["--rate-messages-burst", "many"],
        ] {
            assert!(parse(&bad).is_err(), "{bad:?} accepted");
        }
    }
}
