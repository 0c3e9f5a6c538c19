//! Transports: how bytes reach a [`Connection`] and how its frames go back out, over a
//! WebSocket ([`websocket`]) or long-polling ([`longpoll`]).
//!
//! Owns admission (origin, `vsn`, the socket's `connect`) shared by every transport, and
//! the two seams a transport implements: [`Outbox`] (send a frame, close; wrapped in the
//! connection's [`Outlet`]) and [`Connection`] (what receives frames). Must not parse
//! Phoenix messages: the session does that.

pub(crate) mod listener;
pub mod longpoll;
pub mod origin;
mod outbound;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

use actix::Recipient;
use actix_web::http::header;
use actix_web::HttpRequest;

use crate::endpoint::Shared;
use crate::outlet::Outlet;
use crate::serializer::{Frame, Serializer};
use crate::session::Session;
use crate::socket::{ConnectInfo, Params};

/// WebSocket close codes fluxwire sends (PROTOCOL.md §4.3).
pub mod close_code {
    /// Idle timeout, server shutdown, "disconnect this user".
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A binary frame on a V1 connection.
    pub const UNSUPPORTED: u16 = 1003;
    /// Invalid UTF-8 or an undecodable message.
    pub const INVALID_DATA: u16 = 1007;
    /// Outbound queue full, or too many inbound messages waiting.
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// Where a transport puts a connection's frames, in the order given; behind the
/// connection's [`Outlet`], which serialises every sender. Writes after a close are
/// dropped silently.
pub trait Outbox {
    fn send(&mut self, frame: Frame);
    fn close(&mut self, code: u16, reason: &str);
    /// Closes with 1008 because a bound was reached (`reason` goes to the client); the
    /// transport logs `why` once, naming the client.
    fn cut_off(&mut self, reason: &str, why: String);
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
    type Msg = crate::session::SessionMsg;

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

    fn message(&mut self, msg: Self::Msg, out: &dyn Outlet) {
        self.handle_msg(msg, out);
    }

    fn closed(&mut self) {
        Session::closed(self);
    }

    fn peer(&self) -> &str {
        Session::peer(self)
    }
}

/// Why a connection attempt was refused; every variant is a 403 (PROTOCOL.md §1.3).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("origin {0:?} not allowed")]
    Origin(String),
    #[error(transparent)]
    Vsn(#[from] crate::serializer::UnsupportedVsn),
    #[error("connect refused: {0}")]
    Connect(#[from] crate::socket::Refused),
}

/// What admission reads from a connection attempt, whichever transport it came by.
pub(crate) struct Admission<'a> {
    /// The `Origin` header; a header that is not text reads as `Some("")` (refused).
    pub origin: Option<&'a str>,
    pub host: Option<&'a str>,
    pub query: &'a str,
    pub peer: Option<SocketAddr>,
}

impl<'a> Admission<'a> {
    /// The admission facts of an actix-web request.
    pub(crate) fn of(req: &'a HttpRequest) -> Self {
        let text = |name| req.headers().get(name).map(|v| v.to_str().unwrap_or(""));
        Admission {
            origin: text(header::ORIGIN),
            host: text(header::HOST),
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
    check_origin(shared, admission)?;
    open_session(shared, admission, transport)
}

/// The origin check (PROTOCOL.md §1.4), alone: long-poll applies it to every request.
pub(crate) fn check_origin(shared: &Shared, admission: &Admission<'_>) -> Result<(), Refusal> {
    let allowed = shared
        .config
        .check_origin
        .allows(admission.origin, admission.host);
    if allowed {
        Ok(())
    } else {
        Err(Refusal::Origin(
            admission.origin.unwrap_or_default().to_owned(),
        ))
    }
}

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
    Ok(Session::new(
        shared.clone(),
        serializer,
        assigns,
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
