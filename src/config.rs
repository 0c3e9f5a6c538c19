//! Server configuration: command-line flags, each with an environment variable.
//!
//! Owns the knobs and their defaults; parsing is clap's. Must not act on any of them:
//! the endpoint and transports read what they need.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::transport::origin::OriginPolicy;

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

    /// Close a WebSocket that has sent nothing (not even a heartbeat) for this many
    /// milliseconds, with code 1001. phoenix.js sends a heartbeat every 30 s.
    #[arg(long, env = "FLUXWIRE_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,

    /// Most frames queued for one WebSocket client, and held for one of its joins in
    /// progress; past it (a client that stopped reading) the connection is closed with 1008.
    #[arg(long, env = "FLUXWIRE_MAX_OUTBOUND_FRAMES", default_value_t = 1000)]
    pub max_outbound_frames: usize,

    /// Most bytes queued for one WebSocket client; past it the connection is closed
    /// with 1008.
    #[arg(long, env = "FLUXWIRE_MAX_OUTBOUND_BYTES", default_value_t = 1024 * 1024)]
    pub max_outbound_bytes: usize,

    /// Most channels one connection may have joined at once.
    #[arg(long, env = "FLUXWIRE_MAX_CHANNELS", default_value_t = 100)]
    pub max_channels: usize,

    /// Origin check for browser connections: `conn` (the Origin must name the host and
    /// port the request was sent to), `off`, or a comma-separated list of allowed
    /// origins such as `https://example.com,https://*.example.org:8443` (a missing scheme
    /// or port matches any; `*.` matches the domain and its subdomains). Requests without
    /// an Origin header (non-browser clients) are always allowed.
    #[arg(long, env = "FLUXWIRE_CHECK_ORIGIN", default_value = "conn", value_parser = OriginPolicy::parse)]
    pub check_origin: OriginPolicy,

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

    /// Secret that signs long-poll session tokens (at least 32 bytes, e.g. the output
    /// of `openssl rand -base64 48`). When absent, a random one is generated at start
    /// (with a warning): tokens issued before a restart then no longer verify. Sessions
    /// themselves live in memory either way; a client whose session is gone reconnects.
    #[arg(long, env = "FLUXWIRE_SECRET_KEY_BASE", hide_env_values = true, value_parser = SecretKeyBase::parse)]
    pub secret_key_base: Option<SecretKeyBase>,

    /// Directory where persistent state is kept across restarts (the application's
    /// persistent stores, the rooms' messages), created if missing. Without it, all state
    /// lives in memory and starts empty at every start.
    #[arg(long, env = "FLUXWIRE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

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

    /// Defaults for a server embedded in a program or a test: an ephemeral port on
    /// loopback, everything else as the flags' defaults.
    pub fn ephemeral() -> Self {
        Config::parse_from(["fluxwire", "--host", "127.0.0.1", "--port", "0"])
    }
}
