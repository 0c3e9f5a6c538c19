//! Command-line options (clap). Every mode takes the common options, before or after
//! the mode's name.

use clap::{Args, Parser, Subcommand, ValueEnum};

pub const DEFAULT_URL: &str = "ws://127.0.0.1:4000/socket/websocket";

/// Load tool for any Phoenix Channels server (V2 protocol) that serves the chat-room
/// contract: `room:NAME` topics with presence, `new_msg` {"body"} replied ok and
/// broadcast to every member. Connects as `?user=NAME&vsn=2.0.0`.
///
/// Prints a short human summary, then one JSON line with every figure (the last line of
/// stdout). Exits 0 when the run had no failure, no loss and no order violation, 1 when
/// it had any (the reasons are printed), 2 on a usage or setup error.
/// In the JSON, latencies are in microseconds and sizes in bytes; CPU is a percentage of
/// one core over the measured interval, for the tool itself and (with --server-pid) for
/// the server.
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

    /// Source addresses for client sockets: connections bind to 127.0.0.1 … 127.0.0.K
    /// in turn (IPv4 targets only), so that each address has its own ephemeral ports
    /// (~28k each).
    #[arg(long, global = true, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub sources: u8,

    /// Print only the JSON line on stdout (reasons for failure still go to stderr).
    #[arg(long, global = true)]
    pub json_only: bool,

    /// Seconds a single step may take: connect + upgrade, a reply, a close, the last
    /// delivery after the last publish. Waits on a whole group of members allow a few
    /// times this.
    #[arg(long, global = true, default_value_t = 10, value_parser = |s: &str| seconds(s, 1))]
    pub timeout_secs: u64,

    /// Worker threads of the tool's runtime (default: one per core).
    #[arg(long, global = true, value_parser = |s: &str| count(s, 1))]
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
    /// presence: errors, cycle latency, presence exact at the end, and the server's RSS
    /// at the end against its baseline (reported, not a failure).
    Churn(ChurnArgs),
    /// One member stops reading while its topic keeps broadcasting: whether and when the
    /// server closes it (the run fails if it never does), other members' latency and
    /// loss, server RSS over time.
    SlowConsumer(SlowConsumerArgs),
    /// fluxwire's stores (store:NAME): `all` against `store:status` while users join,
    /// patch fan-out to many members of `store:todos`, actions per second on one store.
    Stores(StoresArgs),
}

/// What the `stores` mode measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreScenario {
    /// `--users` connections join `all` (with `--store`, `store:status` too): bytes per
    /// kind of frame, server CPU, time until every member counts every user.
    Status,
    /// `--members` on `store:todos`, `--actions` adds: time to the last member's patch.
    Fanout,
    /// `--members` on `store:todos`, `--actors` toggling with `--window` in flight for
    /// `--duration-secs`: actions per second, patch frames per member.
    Actions,
}

#[derive(Debug, Clone, Args)]
pub struct StoresArgs {
    #[arg(long, value_enum, default_value_t = StoreScenario::Status)]
    pub scenario: StoreScenario,
    /// status: users joining.
    #[arg(long, default_value_t = 1_000, value_parser = |s: &str| count(s, 1))]
    pub users: usize,
    /// status: also join `store:status`, and count a member current by its copy of it.
    #[arg(long)]
    pub store: bool,
    /// fanout, actions: members of `store:todos`.
    #[arg(long, default_value_t = 100, value_parser = |s: &str| count(s, 1))]
    pub members: usize,
    /// fanout: actions (todos added).
    #[arg(long, default_value_t = 10, value_parser = |s: &str| count(s, 1))]
    pub actions: usize,
    /// fanout: milliseconds between two actions.
    #[arg(long, default_value_t = 500, value_parser = |s: &str| number(s, 0, MAX_SECS * 1000))]
    pub interval_ms: u64,
    /// actions: connections acting at once.
    #[arg(long, default_value_t = 1, value_parser = |s: &str| count(s, 1))]
    pub actors: usize,
    /// actions: pushes each actor has waiting for their reply.
    #[arg(long, default_value_t = 50, value_parser = |s: &str| count(s, 1))]
    pub window: usize,
    /// actions: seconds of acting.
    #[arg(long, default_value_t = 10, value_parser = |s: &str| seconds(s, 0))]
    pub duration_secs: u64,
    /// Most connections being set up at once.
    #[arg(long, default_value_t = 500, value_parser = |s: &str| count(s, 1))]
    pub concurrency: usize,
}

/// In which order connections arrive in their rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Order {
    /// Connection i joins room `i mod rooms`: every room fills a little at a time, as
    /// when users arrive independently (the realistic case, and the default).
    Interleaved,
    /// Connection i joins room `i / per_room`: each room fills in one burst (the
    /// friendliest case for presence coalescing).
    Sequential,
    /// Every room still gets `per_room` connections, in a shuffled order (fixed seed,
    /// so runs compare).
    Random,
}

impl Order {
    /// The room of each of `connections` connections, `per_room` to a room (the last
    /// room may have fewer).
    pub fn rooms(self, connections: usize, per_room: usize) -> Vec<usize> {
        let rooms = connections.div_ceil(per_room);
        match self {
            Order::Sequential => (0..connections).map(|i| i / per_room).collect(),
            Order::Interleaved => {
                // Round-robin over the rooms, skipping the ones already full, so that each
                // room still gets its share when the last room is a short one.
                let mut left: Vec<usize> = (0..rooms)
                    .map(|r| per_room.min(connections - r * per_room))
                    .collect();
                let mut order = Vec::with_capacity(connections);
                while order.len() < connections {
                    for (room, left) in left.iter_mut().enumerate() {
                        if *left > 0 {
                            *left -= 1;
                            order.push(room);
                        }
                    }
                }
                order
            }
            Order::Random => {
                let mut order = Order::Sequential.rooms(connections, per_room);
                // Fisher-Yates with xorshift64: no dependency for a fixed shuffle.
                let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
                for i in (1..order.len()).rev() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    order.swap(i, (state % (i as u64 + 1)) as usize);
                }
                order
            }
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Connections to open (each joins one room).
    #[arg(long, default_value_t = 19_000, value_parser = |s: &str| count(s, 1))]
    pub connections: usize,
    /// Connections per room: rooms `room:bench-<r>`, each with this many members.
    #[arg(long, default_value_t = 100, value_parser = |s: &str| count(s, 1))]
    pub per_room: usize,
    /// The order in which connections arrive in their rooms.
    #[arg(long, value_enum, default_value_t = Order::Interleaved)]
    pub order: Order,
    /// Most connections being set up (connect + upgrade + join) at once.
    #[arg(long, default_value_t = 500, value_parser = |s: &str| count(s, 1))]
    pub concurrency: usize,
    /// Seconds to hold every connection open after the joins, sampling RSS.
    #[arg(long, default_value_t = 5, value_parser = |s: &str| seconds(s, 0))]
    pub hold_secs: u64,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Members joined to the one topic (the publisher is one more connection).
    #[arg(long, default_value_t = 19_000, value_parser = |s: &str| count(s, 1))]
    pub members: usize,
    /// Messages to publish.
    #[arg(long, default_value_t = 20, value_parser = |s: &str| count(s, 1))]
    pub messages: usize,
    /// Milliseconds between two publishes.
    #[arg(long, default_value_t = 500, value_parser = |s: &str| number(s, 0, MAX_SECS * 1000))]
    pub interval_ms: u64,
    /// Most members being set up at once.
    #[arg(long, default_value_t = 500, value_parser = |s: &str| count(s, 1))]
    pub concurrency: usize,
    /// The topic every member joins.
    #[arg(long, default_value = "room:fanout")]
    pub topic: String,
}

#[derive(Debug, Clone, Args)]
pub struct ThroughputArgs {
    /// Subscribers, spread evenly over the rooms (subscriber i joins room i % rooms).
    #[arg(long, default_value_t = 1_000, value_parser = |s: &str| count(s, 1))]
    pub subscribers: usize,
    /// Rooms `room:tp-<r>`.
    #[arg(long, default_value_t = 10, value_parser = |s: &str| count(s, 1))]
    pub rooms: usize,
    /// Publishers, spread over the rooms (publisher p posts to room p % rooms).
    #[arg(long, default_value_t = 10, value_parser = |s: &str| count(s, 1))]
    pub publishers: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10, value_parser = |s: &str| seconds(s, 0))]
    pub duration_secs: u64,
    /// Messages per second per publisher (default: unlimited, bounded by --window).
    /// With a rate, each body carries its scheduled send time, so a publisher that falls
    /// behind shows in the latency (no coordinated omission).
    #[arg(long, value_parser = rate)]
    pub rate: Option<f64>,
    /// Most pushes a publisher has waiting for their reply.
    #[arg(long, default_value_t = 50, value_parser = |s: &str| count(s, 1))]
    pub window: usize,
    /// Most subscribers being set up at once.
    #[arg(long, default_value_t = 200, value_parser = |s: &str| count(s, 1))]
    pub concurrency: usize,
}

#[derive(Debug, Clone, Args)]
pub struct ChurnArgs {
    /// Cycles started per second (connect, join, post and wait for the reply, leave and
    /// wait for the reply, close).
    #[arg(long, default_value_t = 500.0, value_parser = rate)]
    pub rate: f64,
    /// Seconds during which cycles are started.
    #[arg(long, default_value_t = 60, value_parser = |s: &str| seconds(s, 0))]
    pub duration_secs: u64,
    /// Long-lived members of the topic that track its presence.
    #[arg(long, default_value_t = 10, value_parser = |s: &str| count(s, 1))]
    pub watchers: usize,
    /// Most cycles in flight at once; a start waits for a free slot (the achieved rate
    /// and the lag are reported).
    #[arg(long, default_value_t = 1_000, value_parser = |s: &str| count(s, 1))]
    pub concurrency: usize,
    /// Seconds to wait after the last cycle before checking presence and RSS.
    #[arg(long, default_value_t = 2, value_parser = |s: &str| seconds(s, 0))]
    pub settle_secs: u64,
    /// The topic of the cycles and watchers.
    #[arg(long, default_value = "room:churn")]
    pub topic: String,
}

#[derive(Debug, Clone, Args)]
pub struct SlowConsumerArgs {
    /// Members of the room, the slow one included (the publisher is one more).
    #[arg(long, default_value_t = 50, value_parser = |s: &str| count(s, 2))]
    pub members: usize,
    /// Messages per second from the publisher.
    #[arg(long, default_value_t = 2_000.0, value_parser = rate)]
    pub rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 20, value_parser = |s: &str| seconds(s, 0))]
    pub duration_secs: u64,
    /// Stop publishing after this many messages, even before --duration-secs is up: what
    /// is published is then set by volume, not by how fast a busy server takes it (the
    /// duration is only the limit).
    #[arg(long, value_parser = |s: &str| count(s, 1).map(|n| n as u64))]
    pub messages: Option<u64>,
    /// Characters in each message body (64 to 2000, the contract's limit).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(64..=2000))]
    pub payload_bytes: u64,
    /// The topic.
    #[arg(long, default_value = "room:slow")]
    pub topic: String,
}

/// Longest duration any option may ask for: a week (beyond it, deadlines overflow).
const MAX_SECS: u64 = 7 * 24 * 3600;
/// Rates any option may ask for, per second.
const MIN_RATE: f64 = 0.001;
const MAX_RATE: f64 = 1e6;

/// A whole number in `min..=max`.
fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    text: &str,
    min: T,
    max: T,
) -> Result<T, String> {
    let n: T = text.parse().map_err(|_| "not a whole number".to_owned())?;
    if n < min {
        Err(format!("must be at least {min}"))
    } else if n > max {
        Err(format!("must be at most {max}"))
    } else {
        Ok(n)
    }
}

/// A count of at least `min`.
fn count(text: &str, min: usize) -> Result<usize, String> {
    number(text, min, usize::MAX)
}

/// Seconds, from `min` to a week.
fn seconds(text: &str, min: u64) -> Result<u64, String> {
    number(text, min, MAX_SECS)
}

/// A rate per second, from one per 1000 s to a million.
fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (MIN_RATE..=MAX_RATE).contains(&r) => Ok(r),
        _ => Err(format!("must be a number from {MIN_RATE} to {MAX_RATE}")),
    }
}

#[cfg(test)]
mod order_tests {
    use super::Order;

    fn per_room(order: &[usize]) -> Vec<usize> {
        let mut counts = vec![0; order.iter().max().map_or(0, |m| m + 1)];
        for &room in order {
            counts[room] += 1;
        }
        counts
    }

    #[test]
    fn every_order_fills_each_room_with_its_share() {
        for order in [Order::Interleaved, Order::Sequential, Order::Random] {
            let rooms = order.rooms(1_050, 100);
            assert_eq!(rooms.len(), 1_050, "{order:?}");
            let mut expected = vec![100; 10];
            expected.push(50);
            assert_eq!(per_room(&rooms), expected, "{order:?}");
        }
        assert_eq!(Order::Interleaved.rooms(5, 2), [0, 1, 2, 0, 1]);
        assert_eq!(Order::Sequential.rooms(5, 2), [0, 0, 1, 1, 2]);
        assert_ne!(
            Order::Random.rooms(1_000, 100),
            Order::Sequential.rooms(1_000, 100)
        );
        assert_eq!(
            Order::Random.rooms(1_000, 100),
            Order::Random.rooms(1_000, 100)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked() {
        let parse = |args: &str| Cli::try_parse_from(args.split_whitespace());
        assert!(parse("b connect --per-room 1 --timeout-secs 1").is_ok());
        assert!(parse("b connect --order sequential").is_ok());
        assert!(parse("b connect --order sideways").is_err());
        for bad in [
            "b connect --per-room 0",
            "b --timeout-secs 0 connect",
            "b --timeout-secs 18446744073709551615 connect",
            "b churn --rate 0",
            "b churn --rate NaN",
            "b throughput --rate=-1",
            "b slow-consumer --members 1",
            "b slow-consumer --messages 0",
            "b fanout --interval-ms x",
        ] {
            let error = parse(bad).expect_err(bad).to_string();
            assert!(error.contains("invalid value"), "{bad}: {error}");
        }
    }
}
