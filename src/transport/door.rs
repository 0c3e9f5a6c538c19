//! The door: whether a new TCP connection, or a new long-poll session, is let in at all.
//!
//! Owns the count of open connections against the descriptor limit (`RLIMIT_NOFILE` less
//! `--fd-reserve`, so that the process never runs out: existing connections keep
//! working, and new ones are refused at once instead of waiting in the kernel's backlog
//! while the accept loop logs "Too many open files"), the limits per source address (open
//! connections, open long-poll sessions, new connections per second) with the addresses
//! exempt from them, and the log of refusals: one line per cause and interval, with how
//! many were refused meanwhile. Must not read requests: the listener asks before it reads
//! a connection's first byte, long-poll before it opens a session.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::rt::net::TcpStream;

/// A cause of refusal is logged at most once per this interval.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Past this many addresses in the table, the ones that hold nothing are swept.
const SWEEP_AT: usize = 1024;

/// The limits of the door, as configured.
#[derive(Clone, Debug)]
pub(crate) struct DoorLimits {
    /// Open connections per address, and open long-poll sessions per address; 0: none.
    pub per_address: usize,
    /// New connections per second per address (refilled continuously); 0: no limit.
    pub rate: f64,
    /// New connections one address may open at once before the rate applies.
    pub burst: u32,
    /// Addresses the per-address limits do not apply to.
    pub exempt: AddressSet,
    /// Descriptors kept free: connections are refused past `RLIMIT_NOFILE` less this.
    pub fd_reserve: usize,
}

/// A set of addresses and networks (`--ip-limits-exempt`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressSet(Vec<(IpAddr, u8)>);

impl AddressSet {
    /// Parses a comma-separated list of addresses and networks (`10.0.0.0/8`, `::1`);
    /// `none` (or nothing) is the empty set.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.trim().eq_ignore_ascii_case("none") {
            return Ok(AddressSet::default());
        }
        value
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let invalid = || format!("invalid address or network {entry:?}");
                let (ip, bits) = match entry.split_once('/') {
                    Some((ip, bits)) => (ip, Some(bits.parse::<u8>().map_err(|_| invalid())?)),
                    None => (entry, None),
                };
                let ip: IpAddr = ip.parse().map_err(|_| invalid())?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                match bits {
                    Some(bits) if bits > max => Err(invalid()),
                    bits => Ok((ip, bits.unwrap_or(max))),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(AddressSet)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|&(network, bits)| match (network, ip) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                prefix(u32::from(network).into(), 32, bits)
                    == prefix(u32::from(ip).into(), 32, bits)
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                prefix(network.into(), 128, bits) == prefix(ip.into(), 128, bits)
            }
            _ => false,
        })
    }
}

/// The first `bits` of a `width`-bit address.
fn prefix(address: u128, width: u32, bits: u8) -> u128 {
    let drop = width - u32::from(bits);
    address.checked_shr(drop).unwrap_or(0)
}

impl fmt::Display for AddressSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let entries: Vec<String> = self
            .0
            .iter()
            .map(|(ip, bits)| match (ip, bits) {
                (IpAddr::V4(_), 32) | (IpAddr::V6(_), 128) => ip.to_string(),
                _ => format!("{ip}/{bits}"),
            })
            .collect();
        f.write_str(&entries.join(","))
    }
}

/// Whom the per-address limits count: an IPv4 address, or an IPv6 address's /64 (one
/// host usually holds a whole /64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Source(IpAddr);

impl Source {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V6(ip) => {
                let network = u128::from(ip) & !((1u128 << 64) - 1);
                Source(IpAddr::V6(Ipv6Addr::from(network)))
            }
            v4 => Source(v4),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V6(network) => write!(f, "{network}/64"),
            IpAddr::V4(ip) => write!(f, "{ip}"),
        }
    }
}

/// Why the door stayed shut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Turned {
    /// The process is at its connection limit (descriptors).
    Full,
    /// The address has its most connections open.
    Address,
    /// The address opens connections faster than its rate.
    Rate,
    /// The address has its most long-poll sessions open.
    Sessions,
}

/// What one source address holds, and its allowance of new connections.
struct Peer {
    open: usize,
    sessions: usize,
    tokens: f64,
    refilled: Instant,
}

impl Peer {
    /// An address seen for the first time: nothing open, a full burst.
    fn new(limits: &DoorLimits, now: Instant) -> Peer {
        Peer {
            open: 0,
            sessions: 0,
            tokens: f64::from(limits.burst),
            refilled: now,
        }
    }
}

struct Peers {
    table: HashMap<Source, Peer>,
    swept: Instant,
}

/// The door of one endpoint; every worker shares it.
pub(crate) struct Door {
    limits: DoorLimits,
    /// Most connections open at once: `RLIMIT_NOFILE` less the reserve.
    max_open: usize,
    /// `RLIMIT_NOFILE` (soft), for the log.
    nofile: u64,
    open: AtomicUsize,
    peers: Mutex<Peers>,
    logs: [Throttled; 4],
}

/// A connection let in; dropping it lets another in.
pub(crate) struct Ticket {
    door: Arc<Door>,
    source: Option<Source>,
}

/// A long-poll session let in; dropping it lets another in.
pub(crate) struct SessionTicket {
    door: Arc<Door>,
    source: Option<Source>,
}

impl Door {
    /// The door for `limits`, under this process's `RLIMIT_NOFILE`; an error if the
    /// reserve leaves no descriptor for connections.
    pub(crate) fn new(limits: DoorLimits) -> io::Result<Self> {
        let nofile = nofile_limit();
        let max_open = usize::try_from(nofile)
            .unwrap_or(usize::MAX)
            .saturating_sub(limits.fd_reserve);
        if max_open == 0 {
            return Err(io::Error::other(format!(
                "RLIMIT_NOFILE {nofile} leaves no descriptor for connections with \
                 --fd-reserve {}",
                limits.fd_reserve
            )));
        }
        log::info!(
            "at most {max_open} connections at once (RLIMIT_NOFILE {nofile} less --fd-reserve {})",
            limits.fd_reserve
        );
        Ok(Door {
            limits,
            max_open,
            nofile,
            open: AtomicUsize::new(0),
            peers: Mutex::new(Peers {
                table: HashMap::new(),
                swept: Instant::now(),
            }),
            logs: Default::default(),
        })
    }

    /// Lets a new connection from `peer` in, or says why not (and logs it, throttled).
    pub(crate) fn enter(self: &Arc<Self>, peer: Option<SocketAddr>) -> Result<Ticket, Turned> {
        let source = self.limited(peer);
        let result = match source {
            None => self.take_descriptor().map(|()| None),
            Some(source) => {
                let mut peers = self.peers();
                peers.sweep(&self.limits);
                let now = Instant::now();
                let limits = &self.limits;
                let state = peers
                    .table
                    .entry(source)
                    .or_insert_with(|| Peer::new(limits, now));
                state.refill(limits, now);
                if limits.rate > 0.0 && state.tokens < 1.0 {
                    Err(Turned::Rate)
                } else if limits.per_address > 0 && state.open >= limits.per_address {
                    Err(Turned::Address)
                } else {
                    self.take_descriptor().map(|()| {
                        state.open += 1;
                        state.tokens -= 1.0;
                        Some(source)
                    })
                }
            }
        };
        match result {
            Ok(source) => Ok(Ticket {
                door: self.clone(),
                source,
            }),
            Err(turned) => {
                self.log(turned, source, peer);
                Err(turned)
            }
        }
    }

    /// Lets a new long-poll session from `peer` in, or says why not (logged, throttled).
    pub(crate) fn open_session(
        self: &Arc<Self>,
        peer: Option<SocketAddr>,
    ) -> Result<SessionTicket, Turned> {
        let source = self.limited(peer).filter(|_| self.limits.per_address > 0);
        if let Some(source) = source {
            let mut peers = self.peers();
            let now = Instant::now();
            let limits = &self.limits;
            let state = peers
                .table
                .entry(source)
                .or_insert_with(|| Peer::new(limits, now));
            if state.sessions >= limits.per_address {
                drop(peers);
                self.log(Turned::Sessions, Some(source), peer);
                return Err(Turned::Sessions);
            }
            state.sessions += 1;
        }
        Ok(SessionTicket {
            door: self.clone(),
            source,
        })
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Whom the per-address limits count for `peer`, if they apply to it.
    fn limited(&self, peer: Option<SocketAddr>) -> Option<Source> {
        let limits = &self.limits;
        if limits.per_address == 0 && limits.rate <= 0.0 {
            return None;
        }
        let ip = peer?.ip();
        (!limits.exempt.contains(ip)).then(|| Source::of(ip))
    }

    /// One descriptor's worth of the budget, or [`Turned::Full`].
    fn take_descriptor(&self) -> Result<(), Turned> {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before >= self.max_open {
            self.open.fetch_sub(1, Ordering::AcqRel);
            Err(Turned::Full)
        } else {
            Ok(())
        }
    }

    fn peers(&self) -> MutexGuard<'_, Peers> {
        self.peers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Logs a refusal: once per [`LOG_EVERY`] per cause, with the count since.
    fn log(&self, turned: Turned, source: Option<Source>, peer: Option<SocketAddr>) {
        let limits = &self.limits;
        let who = source.map_or_else(|| super::peer_name(peer), |source| source.to_string());
        let log = &self.logs[turned as usize];
        log.log(|quiet| {
            let since = if quiet > 0 {
                format!("; {quiet} more refused since the last such line")
            } else {
                String::new()
            };
            match turned {
                Turned::Full => log::warn!(
                    "refusing new connections with 503: {} open, the most with RLIMIT_NOFILE \
                     {} less --fd-reserve {} (latest from {who}){since}",
                    self.open(),
                    self.nofile,
                    limits.fd_reserve
                ),
                Turned::Address => log::warn!(
                    "{who}: refusing new connections with 429: {} open from this address \
                     (--max-connections-per-ip){since}",
                    limits.per_address
                ),
                Turned::Rate => log::warn!(
                    "{who}: refusing new connections with 429: more than {} per second \
                     after a burst of {} from this address (--connection-rate-per-ip){since}",
                    limits.rate,
                    limits.burst
                ),
                Turned::Sessions => log::warn!(
                    "{who}: refusing new long-poll sessions with 429: {} open from this \
                     address (--max-connections-per-ip){since}",
                    limits.per_address
                ),
            }
        });
    }
}

impl Peer {
    fn refill(&mut self, limits: &DoorLimits, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limits.rate).min(f64::from(limits.burst));
        self.refilled = now;
    }

    /// Holds nothing, and a fresh entry would be the same.
    fn idle(&mut self, limits: &DoorLimits, now: Instant) -> bool {
        self.refill(limits, now);
        self.open == 0
            && self.sessions == 0
            && (limits.rate <= 0.0 || self.tokens >= f64::from(limits.burst))
    }
}

impl Peers {
    /// Forgets the addresses that hold nothing, now and then once there are many.
    fn sweep(&mut self, limits: &DoorLimits) {
        if self.table.len() < SWEEP_AT || self.swept.elapsed() < Duration::from_secs(1) {
            return;
        }
        let now = Instant::now();
        self.swept = now;
        self.table.retain(|_, peer| !peer.idle(limits, now));
    }

    /// `source` let go of something: forget it if it holds nothing more.
    fn release(&mut self, source: Source, limits: &DoorLimits, f: impl FnOnce(&mut Peer)) {
        if let Some(peer) = self.table.get_mut(&source) {
            f(peer);
            if peer.idle(limits, Instant::now()) {
                self.table.remove(&source);
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.door.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(source) = self.source {
            let limits = &self.door.limits;
            self.door.peers().release(source, limits, |peer| {
                peer.open = peer.open.saturating_sub(1);
            });
        }
    }
}

impl Drop for SessionTicket {
    fn drop(&mut self) {
        if let Some(source) = self.source {
            let limits = &self.door.limits;
            self.door.peers().release(source, limits, |peer| {
                peer.sessions = peer.sessions.saturating_sub(1);
            });
        }
    }
}

/// A log line at most every [`LOG_EVERY`], with how many were kept quiet since.
#[derive(Default)]
struct Throttled {
    last: Mutex<Option<Instant>>,
    quiet: AtomicU64,
}

impl Throttled {
    fn log(&self, line: impl FnOnce(u64)) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            self.quiet.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(Instant::now());
        line(self.quiet.swap(0, Ordering::Relaxed));
    }
}

/// Refuses a connection the door did not let in: a status line and a short text (no
/// JSON, which a long-poll client would misread), without waiting for the request, and
/// the connection closed. Whatever the client already sent is read first, so that the
/// close does not reset the connection before the answer is read.
pub(crate) fn turn_away(io: TcpStream, turned: Turned) {
    let (status, text) = match turned {
        Turned::Full => (
            "503 Service Unavailable",
            "the server is at its connection limit\n",
        ),
        Turned::Address | Turned::Rate | Turned::Sessions => (
            "429 Too Many Requests",
            "too many connections from your address\n",
        ),
    };
    // Out of the runtime: plain non-blocking calls, no wait for readiness.
    let Ok(mut io) = io.into_std() else {
        return;
    };
    let mut scratch = [0u8; 4096];
    while matches!(io.read(&mut scratch), Ok(n) if n > 0) {}
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\nretry-after: 5\r\n\r\n{text}",
        text.len()
    );
    // A new socket's send buffer is empty: the answer fits at once, or not at all.
    let _ = io.write(response.as_bytes());
}

/// The soft `RLIMIT_NOFILE` of this process (`u64::MAX` when unlimited or unknown).
fn nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return u64::MAX;
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_address: usize, rate: f64, burst: u32) -> DoorLimits {
        DoorLimits {
            per_address,
            rate,
            burst,
            exempt: AddressSet::parse("127.0.0.0/8,::1").unwrap(),
            fd_reserve: 0,
        }
    }

    fn door(limits: DoorLimits, max_open: usize) -> Arc<Door> {
        let mut door = Door::new(limits).unwrap();
        door.max_open = max_open;
        Arc::new(door)
    }

    fn from(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 40_000))
    }

    #[test]
    fn address_sets() {
        let set = AddressSet::parse("127.0.0.0/8, ::1, 10.1.0.0/16, 2001:db8::/32").unwrap();
        assert!(set.contains("127.0.0.4".parse().unwrap()));
        assert!(set.contains("::1".parse().unwrap()));
        assert!(set.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(set.contains("10.1.200.3".parse().unwrap()));
        assert!(set.contains("2001:db8:1::7".parse().unwrap()));
        assert!(!set.contains("10.2.0.1".parse().unwrap()));
        assert!(!set.contains("::2".parse().unwrap()));
        assert_eq!(set.to_string(), "127.0.0.0/8,::1,10.1.0.0/16,2001:db8::/32");
        let none = AddressSet::parse("none").unwrap();
        assert!(!none.contains("127.0.0.1".parse().unwrap()));
        assert_eq!(none, AddressSet::parse("").unwrap());
        assert!(AddressSet::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(AddressSet::parse("10.0.0.0/33").is_err());
        assert!(AddressSet::parse("localhost").is_err());
    }

    #[test]
    fn an_ipv6_source_is_its_64() {
        let a = Source::of("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = Source::of("2001:db8:1:2:bbbb::9".parse().unwrap());
        let c = Source::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            Source::of("::ffff:10.0.0.1".parse().unwrap()),
            Source::of("10.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn per_address_cap_and_release() {
        let door = door(limits(2, 0.0, 1), usize::MAX);
        let first = door.enter(from("10.0.0.1")).unwrap();
        let _second = door.enter(from("10.0.0.1")).unwrap();
        assert_eq!(door.enter(from("10.0.0.1")).err(), Some(Turned::Address));
        let _other = door.enter(from("10.0.0.2")).unwrap();
        // Loopback is exempt.
        let _local: Vec<_> = (0..5)
            .map(|_| door.enter(from("127.0.0.1")).unwrap())
            .collect();
        drop(first);
        let _again = door.enter(from("10.0.0.1")).unwrap();
        assert_eq!(door.open(), 8);
    }

    #[test]
    fn rate_per_address_with_a_burst() {
        let door = door(limits(0, 0.001, 3), usize::MAX);
        for _ in 0..3 {
            drop(door.enter(from("10.0.0.1")).unwrap());
        }
        assert_eq!(door.enter(from("10.0.0.1")).err(), Some(Turned::Rate));
        assert!(door.enter(from("10.0.0.2")).is_ok());
        assert!(door.enter(from("127.0.0.1")).is_ok());
    }

    #[test]
    fn the_descriptor_budget_holds_for_every_address() {
        let door = door(limits(0, 0.0, 1), 2);
        let a = door.enter(from("127.0.0.1")).unwrap();
        let _b = door.enter(from("10.0.0.1")).unwrap();
        assert_eq!(door.enter(from("127.0.0.1")).err(), Some(Turned::Full));
        assert_eq!(door.enter(from("10.0.0.9")).err(), Some(Turned::Full));
        assert_eq!(door.open(), 2);
        drop(a);
        assert!(door.enter(None).is_ok());
    }

    #[test]
    fn sessions_per_address() {
        let door = door(limits(1, 0.0, 1), usize::MAX);
        let session = door.open_session(from("10.0.0.1")).unwrap();
        assert_eq!(
            door.open_session(from("10.0.0.1")).err(),
            Some(Turned::Sessions)
        );
        // Sessions and connections are counted apart.
        let _connection = door.enter(from("10.0.0.1")).unwrap();
        drop(session);
        assert!(door.open_session(from("10.0.0.1")).is_ok());
        assert!(door.open_session(from("127.0.0.1")).is_ok());
    }

    #[test]
    fn an_address_holding_nothing_is_forgotten() {
        let door = door(limits(5, 0.0, 1), usize::MAX);
        let ticket = door.enter(from("10.0.0.1")).unwrap();
        let session = door.open_session(from("10.0.0.1")).unwrap();
        assert_eq!(door.peers().table.len(), 1);
        drop(ticket);
        drop(session);
        assert!(door.peers().table.is_empty());
    }

    #[test]
    fn a_refusal_is_logged_once_per_interval_with_a_count() {
        let throttled = Throttled::default();
        let mut lines = Vec::new();
        for _ in 0..5 {
            throttled.log(|quiet| lines.push(quiet));
        }
        assert_eq!(lines, [0]);
        *throttled.last.lock().unwrap() = Some(Instant::now() - LOG_EVERY);
        throttled.log(|quiet| lines.push(quiet));
        assert_eq!(lines, [0, 4]);
    }
}
