//! Command-line options (clap). Every mode takes the common options, before or after
//! the mode's name.

use clap::{Args, Parser, Subcommand};

pub const DEFAULT_URL: &str = "ws://127.0.0.1:4000/socket/websocket";

/// Load tool for any Phoenix Channels server (V2 protocol) that serves the chat-room
/// contract: `room:NAME` topics with presence, `new_msg` {"body"} replied ok and
/// broadcast to every member. Connects as `?user=NAME&vsn=2.0.0`.
///
/// Prints a short human summary, then one JSON line with every figure (the last line of
/// stdout). Exits 0 when the run had no failure, no loss and no order violation, 1 when
/// it had any (the reasons are printed), 2 on a usage or setup error.
/// Latencies are in microseconds; CPU is a percentage of one core over the measured
/// interval, for the tool itself and (with --server-pid) for the server.
#[derive(Debug, Parser)]
#[command(
    name = "fluxwire-bench",
    version,
    about,
    long_about,
    subcommand_value_name = "MODE",
    subcommand_help_heading = "Modes"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub mode: Mode,
}

#[derive(Debug, Args)]
pub struct Common {
    /// WebSocket URL of the server's socket. Only loopback hosts (127.0.0.0/8,
    /// localhost, ::1) are accepted; `?user=NAME&vsn=2.0.0` is appended.
    #[arg(long, global = true, default_value = DEFAULT_URL)]
    pub url: String,

    /// The server's process id: its RSS (VmRSS) and CPU are sampled from /proc.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,

    /// Source addresses for client sockets: connection i binds to 127.0.0.(1 + i % K),
    /// so that each address has its own ephemeral ports (~28k each).
    #[arg(long, global = true, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub sources: u8,

    /// Print only the JSON line on stdout (reasons for failure still go to stderr).
    #[arg(long, global = true)]
    pub json_only: bool,

    /// Upper bound, in seconds, of every single wait: connect, handshake, a reply, a
    /// close, the delivery of the last message.
    #[arg(long, global = true, default_value_t = 10)]
    pub timeout_secs: u64,

    /// Worker threads of the tool's runtime (default: one per core).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Open many connections, each joined to one room; join rate, join latency, and the
    /// server's RSS per connection while they are held.
    Connect(ConnectArgs),
    /// Many members on ONE topic; a publisher posts messages: time from publish to the
    /// last member's delivery, loss, and presence_diff frames received during the joins.
    Fanout(FanoutArgs),
    /// Subscribers over rooms, publishers posting as fast as a window of outstanding
    /// pushes allows (or at a fixed rate): deliveries/s, loss, per-publisher order,
    /// delivery latency.
    Throughput(ThroughputArgs),
    /// Connect, join, post, leave, close cycles at a fixed rate while watchers track
    /// presence: errors, cycle latency, presence exact at the end, RSS back to baseline.
    Churn(ChurnArgs),
    /// One member stops reading while its topic keeps broadcasting: whether and when the
    /// server closes it, other members' latency and loss, server RSS over time.
    SlowConsumer(SlowConsumerArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Connections to open (each joins one room).
    #[arg(long, default_value_t = 19_000)]
    pub connections: usize,
    /// Connections per room: connection i joins `room:bench-<i / per_room>`.
    #[arg(long, default_value_t = 100)]
    pub per_room: usize,
    /// Most connections being set up (connect + upgrade + join) at once.
    #[arg(long, default_value_t = 500)]
    pub concurrency: usize,
    /// Seconds to hold every connection open after the joins, sampling RSS.
    #[arg(long, default_value_t = 5)]
    pub hold_secs: u64,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Members joined to the one topic (the publisher is one more connection).
    #[arg(long, default_value_t = 19_000)]
    pub members: usize,
    /// Messages to publish.
    #[arg(long, default_value_t = 20)]
    pub messages: usize,
    /// Milliseconds between two publishes.
    #[arg(long, default_value_t = 500)]
    pub interval_ms: u64,
    /// Most members being set up at once.
    #[arg(long, default_value_t = 500)]
    pub concurrency: usize,
    /// The topic every member joins.
    #[arg(long, default_value = "room:fanout")]
    pub topic: String,
}

#[derive(Debug, Clone, Args)]
pub struct ThroughputArgs {
    /// Subscribers, spread evenly over the rooms (subscriber i joins room i % rooms).
    #[arg(long, default_value_t = 1_000)]
    pub subscribers: usize,
    /// Rooms `room:tp-<r>`.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Publishers, spread over the rooms (publisher p posts to room p % rooms).
    #[arg(long, default_value_t = 10)]
    pub publishers: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Messages per second per publisher (default: unlimited, bounded by --window).
    /// With a rate, each body carries its scheduled send time, so a publisher that falls
    /// behind shows in the latency (no coordinated omission).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Most pushes a publisher has waiting for their reply.
    #[arg(long, default_value_t = 50)]
    pub window: usize,
    /// Most subscribers being set up at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
}

#[derive(Debug, Clone, Args)]
pub struct ChurnArgs {
    /// Cycles started per second (connect, join, post and wait for the reply, leave and
    /// wait for the reply, close).
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Seconds during which cycles are started.
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// Long-lived members of `room:churn` that track presence.
    #[arg(long, default_value_t = 10)]
    pub watchers: usize,
    /// Most cycles in flight at once; a start waits for a free slot (the achieved rate
    /// and the lag are reported).
    #[arg(long, default_value_t = 1_000)]
    pub concurrency: usize,
    /// Seconds to wait after the last cycle before checking presence and RSS.
    #[arg(long, default_value_t = 2)]
    pub settle_secs: u64,
    /// The topic of the cycles and watchers.
    #[arg(long, default_value = "room:churn")]
    pub topic: String,
}

#[derive(Debug, Clone, Args)]
pub struct SlowConsumerArgs {
    /// Members of the room, the slow one included (the publisher is one more).
    #[arg(long, default_value_t = 50)]
    pub members: usize,
    /// Messages per second from the publisher.
    #[arg(long, default_value_t = 2_000.0)]
    pub rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 20)]
    pub duration_secs: u64,
    /// Characters in each message body (at most 2000, the contract's limit).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(64..=2000))]
    pub payload_bytes: u64,
    /// The topic.
    #[arg(long, default_value = "room:slow")]
    pub topic: String,
}
