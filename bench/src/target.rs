//! The target server: its WebSocket URL, restricted to loopback, and the source
//! addresses client sockets are spread over.
//!
//! Only loopback targets are accepted (a rule of this workplace): `127.0.0.0/8`,
//! `localhost` and `::1`. For an IPv4 target, connection i binds to
//! `127.0.0.(1 + i % K)` before connecting, so that K addresses each bring their own
//! ephemeral port range; `IP_BIND_ADDRESS_NO_PORT` lets the kernel pick the port at
//! connect time (by the full 4-tuple) rather than at bind time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpSocket, TcpStream};

use crate::{Error, Result};

pub struct Target {
    url: String,
    /// `Host` header value.
    host: String,
    /// `/path?` or `/path?query&`: our parameters are appended.
    path: String,
    addr: SocketAddr,
    sources: Vec<IpAddr>,
    next: AtomicUsize,
}

impl Target {
    /// Parses a `ws://host[:port][/path][?query]` URL, refusing any host that is not
    /// loopback.
    pub fn parse(url: &str, sources: u8) -> Result<Target> {
        let refuse = |why: &str| Error(format!("--url {url:?}: {why}"));
        let rest = if let Some(rest) = url.strip_prefix("ws://") {
            rest
        } else if url.starts_with("wss://") {
            return Err(refuse(
                "wss is not supported (loopback targets only, no TLS)",
            ));
        } else {
            return Err(refuse("the scheme must be ws://"));
        };
        let (authority, path_query) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = split_host_port(authority).ok_or_else(|| refuse("bad host or port"))?;
        let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| refuse(&format!("refusing host {host:?}: {LOOPBACK_ONLY}")))?
        };
        if !ip.is_loopback() {
            return Err(refuse(&format!("refusing host {host:?}: {LOOPBACK_ONLY}")));
        }
        let (path, query) = match path_query.split_once('?') {
            Some((path, query)) => (path, query),
            None => (path_query, ""),
        };
        let path = if path.is_empty() { "/" } else { path };
        let path = if query.is_empty() {
            format!("{path}?")
        } else {
            format!("{path}?{query}&")
        };
        let sources = match ip {
            IpAddr::V4(_) => (1..=sources)
                .map(|k| IpAddr::V4(Ipv4Addr::new(127, 0, 0, k)))
                .collect(),
            // ::1 is the only IPv6 loopback address: nothing to spread over.
            IpAddr::V6(_) => Vec::new(),
        };
        Ok(Target {
            url: url.to_owned(),
            host: authority.to_owned(),
            path,
            addr: SocketAddr::new(ip, port),
            sources,
            next: AtomicUsize::new(0),
        })
    }

    /// The URL as given (without our query parameters).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The request target of a connection of `user` (`user` must be URL-safe: the
    /// tool's own names are letters, digits and `-`).
    pub fn request_path(&self, user: &str) -> String {
        format!("{}user={user}&vsn=2.0.0", self.path)
    }

    /// The `Host` header.
    pub fn host_header(&self) -> &str {
        &self.host
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn sources(&self) -> &[IpAddr] {
        &self.sources
    }

    /// Opens the next TCP connection, bound to the next source address in turn.
    pub async fn connect_tcp(&self) -> Result<TcpStream> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if !self.sources.is_empty() {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let source = self.sources[i % self.sources.len()];
            bind_address_no_port(&socket);
            socket
                .bind(SocketAddr::new(source, 0))
                .map_err(|e| Error(format!("bind {source}: {e}")))?;
        }
        socket.set_nodelay(true)?;
        let stream = socket
            .connect(self.addr)
            .await
            .map_err(|e| Error(format!("connect {}: {e}", self.addr)))?;
        Ok(stream)
    }
}

const LOOPBACK_ONLY: &str =
    "only loopback targets (127.0.0.0/8, localhost, ::1) may be load-tested here";

/// `host[:port]` or `[v6][:port]`; the port defaults to 80.
fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']')?;
        let host = &authority[..=close];
        match &authority[close + 1..] {
            "" => (host, None),
            rest => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => 80,
    };
    Some((host, port))
}

/// Asks Linux to choose the source port at connect time (by the whole 4-tuple), so a
/// bound address is not limited to one connection per port. Best effort.
fn bind_address_no_port(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a plain setsockopt on a socket we own, with a c_int option value.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(Target::parse("ws://127.0.0.1:4000/socket/websocket", 4).is_ok());
        assert!(Target::parse("ws://127.9.9.9:4000/socket/websocket", 4).is_ok());
        assert!(Target::parse("ws://localhost:4000/socket/websocket", 4).is_ok());
        assert!(Target::parse("ws://[::1]:4000/socket/websocket", 4).is_ok());
        for url in [
            "ws://10.0.0.1:4000/socket/websocket",
            "ws://example.com/socket/websocket",
            "ws://0.0.0.0:4000/socket/websocket",
            "wss://127.0.0.1/socket/websocket",
            "http://127.0.0.1:4000/",
        ] {
            let error = Target::parse(url, 4).err().expect(url);
            assert!(error.0.contains(url), "{error}");
        }
    }

    #[test]
    fn urls_and_sources() {
        let target = Target::parse("ws://127.0.0.1:4000/socket/websocket", 3).unwrap();
        assert_eq!(
            target.request_path("bob"),
            "/socket/websocket?user=bob&vsn=2.0.0"
        );
        assert_eq!(target.host_header(), "127.0.0.1:4000");
        assert_eq!(target.url(), "ws://127.0.0.1:4000/socket/websocket");
        assert_eq!(target.addr(), "127.0.0.1:4000".parse().unwrap());
        assert_eq!(target.sources().len(), 3);
        assert_eq!(target.sources()[2], "127.0.0.3".parse::<IpAddr>().unwrap());
        let with_query = Target::parse("ws://localhost/s/websocket?token=x", 1).unwrap();
        assert_eq!(
            with_query.request_path("a"),
            "/s/websocket?token=x&user=a&vsn=2.0.0"
        );
        assert_eq!(with_query.addr(), "127.0.0.1:80".parse().unwrap());
        let v6 = Target::parse("ws://[::1]:4000", 4).unwrap();
        assert_eq!(v6.request_path("a"), "/?user=a&vsn=2.0.0");
        assert!(v6.sources().is_empty());
        assert!(Target::parse("ws://127.0.0.1:x/", 1).is_err());
        assert!(Target::parse("ws://user@127.0.0.1/", 1).is_err());
    }
}
