//! Server configuration: command-line flags, each with an environment variable.
//!
//! Owns the knobs and their defaults; parsing is clap's. Must not act on any of them:
//! the endpoint and transports read what they need.

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
    /// Larger ones close the connection with code 1009.
    #[arg(long, env = "FLUXWIRE_MAX_FRAME_SIZE", default_value_t = 1024 * 1024)]
    pub max_frame_size: usize,

    /// Close a WebSocket that has sent nothing (not even a heartbeat) for this many
    /// milliseconds, with code 1001. phoenix.js sends a heartbeat every 30 s.
    #[arg(long, env = "FLUXWIRE_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,

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
}

impl Config {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// Defaults for a server embedded in a program or a test: an ephemeral port on
    /// loopback, everything else as the flags' defaults.
    pub fn ephemeral() -> Self {
        Config::parse_from(["fluxwire", "--host", "127.0.0.1", "--port", "0"])
    }
}
