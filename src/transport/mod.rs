//! Transports: how bytes reach a [`Connection`] and how its frames go back out, over a
//! WebSocket ([`websocket`]) or long-polling ([`longpoll`]); [`listener`] picks one for
//! each TCP connection.
//!
//! Owns admission (`Host`, origin, `vsn`, the socket's `connect`) shared by every
//! transport, the door before it ([`door`]: connections and sessions per source address,
//! descriptors), the [`Shared`] context every connection gets, and the seam a transport
//! drives: [`Connection`] (what receives frames); each transport implements the outlet's
//! `Outbox` for its way out. Must not parse Phoenix messages: the session does that.

pub(crate) mod door;
pub(crate) mod listener;
pub(crate) mod longpoll;
pub(crate) mod origin;
pub(crate) mod websocket;
mod ws_inbound;
mod ws_outbox;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use actix_web::http::header;
use actix_web::HttpRequest;

use self::door::Door;
use self::longpoll::LongPoll;
use self::origin::{HostAllow, OriginPolicy, Target};
pub(crate) use self::ws_inbound::UnfinishedBudget;
use crate::channel::ChannelReport;
use crate::logline::{client_text, one_line};
use crate::outlet::Outlet;
use crate::serializer::Serializer;
use crate::session::{Session, SessionShared};
use crate::socket::{ConnectInfo, Params, Socket};

/// What every connection shares, whichever transport it comes by: the admission rules,
/// what its session shares, and each transport's settings.
pub(crate) struct Shared {
    /// Who is let in at all, before a byte is read.
    pub door: Arc<Door>,
    pub origin: OriginPolicy,
    pub hosts: HostAllow,
    pub socket: Arc<dyn Socket>,
    pub sessions: Arc<SessionShared>,
    pub mounts: Mounts,
    pub websocket: WsLimits,
    pub longpoll: LongPoll,
}

/// Where the transports are served.
pub(crate) struct Mounts {
    /// Socket mounts, e.g. `/socket`.
    pub paths: Vec<String>,
    /// Whether `{mount}/websocket` is served (`--transports`).
    pub websocket: bool,
    /// The test echo's path, if served.
    pub echo: Option<String>,
}

impl Mounts {
    /// Whether `path` is a transport's path under a socket mount (`{mount}/websocket`,
    /// `{mount}/longpoll`), whose admission checks `Host` and origin itself.
    pub(crate) fn serves(&self, path: &str) -> bool {
        ["/websocket", "/longpoll"].iter().any(|transport| {
            path.strip_suffix(transport)
                .is_some_and(|mount| self.paths.iter().any(|m| m == mount))
        })
    }
}

/// Limits of WebSocket connections: each one's, and the budget they share.
#[derive(Clone, Debug)]
pub(crate) struct WsLimits {
    /// Largest message, after reassembly of fragments (1009 past it).
    pub max_message: usize,
    /// A connection that sends nothing this long is closed (1001).
    pub idle_timeout: Duration,
    /// Most frames and bytes queued for a client that is not reading (1008 past it).
    pub max_outbound_frames: usize,
    pub max_outbound_bytes: usize,
    /// What messages still arriving may hold across connections (1013 past it).
    pub unfinished: Arc<UnfinishedBudget>,
}

/// What sits behind a transport: the Phoenix session, or the test echo.
pub trait Connection: Sized + Unpin + 'static {
    type Msg: actix::Message<Result = ()> + Send + 'static;

    /// How this connection's frames are encoded.
    fn serializer(&self) -> Serializer;
    /// The transport runs; `mailbox` reaches this connection, `outlet` its client.
    fn opened(&mut self, mailbox: Recipient<Self::Msg>, outlet: Arc<dyn Outlet>);
    fn text(&mut self, text: &str, out: &dyn Outlet);
    fn binary(&mut self, bytes: bytes::Bytes, out: &dyn Outlet);
    fn message(&mut self, msg: Self::Msg, out: &dyn Outlet);
    /// The transport has ended; nothing more can be sent.
    fn closed(&mut self);
    /// Who is on the other end, for log lines.
    fn peer(&self) -> &str;
}

impl Connection for Session {
    type Msg = ChannelReport;

    fn serializer(&self) -> Serializer {
        Session::serializer(self)
    }

    fn opened(&mut self, mailbox: Recipient<Self::Msg>, outlet: Arc<dyn Outlet>) {
        Session::opened(self, mailbox, outlet);
    }

    fn text(&mut self, text: &str, out: &dyn Outlet) {
        self.handle_text(text, out);
    }

    fn binary(&mut self, bytes: bytes::Bytes, out: &dyn Outlet) {
        self.handle_binary(bytes, out);
    }

    fn message(&mut self, report: Self::Msg, out: &dyn Outlet) {
        self.handle_report(report, out);
    }

    fn closed(&mut self) {
        Session::closed(self);
    }

    fn peer(&self) -> &str {
        Session::peer(self)
    }
}

/// Why a connection attempt was refused; every variant is a 403 (docs/protocol.md §1.3).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("host {} not in --host-allow", client_text(.0))]
    Host(String),
    #[error("origin {} not allowed", client_text(.0))]
    Origin(String),
    #[error(
        "origin {} is not the request's own: the request came over {scheme} \
         (a TLS-terminating proxy in front must say so in X-Forwarded-Proto)",
        client_text(origin)
    )]
    OriginScheme {
        origin: String,
        scheme: &'static str,
    },
    #[error(transparent)]
    Vsn(#[from] crate::serializer::UnsupportedVsn),
    /// The application's reason, which may quote what the client sent.
    #[error("connect refused: {}", one_line(&.0 .0))]
    Connect(#[from] crate::socket::Refused),
}

/// What admission reads from a connection attempt, whichever transport it came by.
pub(crate) struct Admission<'a> {
    /// The `Origin` header; a header that is not text reads as `Some("")` (refused).
    pub origin: Option<&'a str>,
    pub host: Option<&'a str>,
    /// `X-Forwarded-Proto`, set by a TLS-terminating proxy in front.
    pub forwarded_proto: Option<&'a str>,
    pub query: &'a str,
    pub peer: Option<SocketAddr>,
}

impl<'a> Admission<'a> {
    /// The admission facts of an actix-web request.
    pub(crate) fn of(req: &'a HttpRequest) -> Self {
        let text = |name: &str| req.headers().get(name).map(|v| v.to_str().unwrap_or(""));
        Admission {
            origin: text(header::ORIGIN.as_str()),
            host: text(header::HOST.as_str()),
            forwarded_proto: text(X_FORWARDED_PROTO),
            query: req.query_string(),
            peer: req.peer_addr(),
        }
    }

    /// The client's address, for logs.
    pub(crate) fn peer(&self) -> String {
        peer_name(self.peer)
    }
}

/// Runs the admission steps shared by all transports: origin, serializer, `connect`.
/// On success, a new session for the connection.
pub(crate) fn admit(
    shared: &Arc<Shared>,
    admission: &Admission<'_>,
    transport: &'static str,
) -> Result<Session, Refusal> {
    check_host_and_origin(shared, admission)?;
    open_session(shared, admission, transport)
}

/// The `Host` and origin checks (docs/protocol.md §1.4), alone: long-poll applies them
/// to every request.
pub(crate) fn check_host_and_origin(
    shared: &Shared,
    admission: &Admission<'_>,
) -> Result<(), Refusal> {
    if !shared.hosts.allows(admission.host) {
        return Err(Refusal::Host(admission.host.unwrap_or_default().to_owned()));
    }
    let target = Target::new(admission.host, admission.forwarded_proto);
    if shared.origin.allows(admission.origin, &target) {
        return Ok(());
    }
    let origin = admission.origin.unwrap_or_default().to_owned();
    let other_scheme = Target {
        secure: !target.secure,
        ..target
    };
    if shared.origin.allows(admission.origin, &other_scheme) {
        let scheme = if target.secure { "https" } else { "http" };
        Err(Refusal::OriginScheme { origin, scheme })
    } else {
        Err(Refusal::Origin(origin))
    }
}

/// The header in which a TLS-terminating proxy tells the scheme its client used.
pub(crate) const X_FORWARDED_PROTO: &str = "x-forwarded-proto";

/// The admission steps after the origin check: serializer from `vsn`, then `connect`.
pub(crate) fn open_session(
    shared: &Arc<Shared>,
    admission: &Admission<'_>,
    transport: &'static str,
) -> Result<Session, Refusal> {
    let params = Params::from_query(admission.query);
    let vsn = if params.has_nested("vsn") {
        Some("(not a string)")
    } else {
        params.get("vsn")
    };
    let serializer = Serializer::from_vsn(vsn)?;
    let info = ConnectInfo {
        peer: admission.peer,
        transport,
    };
    let assigns = shared.socket.connect(&params, &info)?;
    let socket_id = shared.socket.id(&assigns).map(Arc::from);
    Ok(Session::new(
        shared.sessions.clone(),
        serializer,
        assigns,
        socket_id,
        admission.peer(),
    ))
}

/// A client's address, for logs.
pub(crate) fn peer_name(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "unknown peer".to_owned(), |addr| addr.to_string())
}

/// The client's address of an actix-web request, for logs.
pub(crate) fn peer(req: &HttpRequest) -> String {
    peer_name(req.peer_addr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serializer::UnsupportedVsn;
    use crate::socket::Refused;

    /// Refusals are logged: what the client sent (origin, vsn, the user name an
    /// application's refusal may quote) must make one short line.
    #[test]
    fn a_refusal_prints_what_the_client_sent_on_one_short_line() {
        let forged = format!(
            "x\n[2030-01-01T00:00:00Z ERROR fluxwire] forged{}",
            "y".repeat(8000)
        );
        let refusals = [
            Refusal::Origin(forged.clone()),
            Refusal::Vsn(UnsupportedVsn(forged.clone())),
            Refusal::Connect(Refused(format!("invalid user {forged:?}"))),
        ];
        for refusal in refusals {
            let line = refusal.to_string();
            assert!(!line.contains('\n'), "{line}");
            assert!(line.contains(r"x\n[2030-01-01T00:00:00Z ERROR fluxwire] forged"));
            assert!(line.len() < 400, "{} bytes: {line}", line.len());
        }
    }
}
