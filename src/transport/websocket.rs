//! The WebSocket transport: the upgrade handshake and the connection, on lean I/O of
//! our own.
//!
//! Owns the handshake (admission, then `101` selecting the `phoenix` sub-protocol, `403`
//! before any upgrade, `426` for a WebSocket version other than 13, or `400`) and the
//! connection: what each message from its reader
//! (`ws_inbound.rs`: framing, reassembly, UTF-8, limits) calls for, ping/pong, the close
//! handshake with the right codes, the idle timeout, and the connection's outlet over its
//! outbound queue (`ws_outbox.rs`: bounded, written by the worker's flusher). Hands whole
//! messages to a [`Connection`]; must not parse them.
//!
//! Framing is actix-http's `ws::Codec`, the buffers are ours: behind actix-http's HTTP/1
//! dispatcher (with actix-web-actors) every connection held two 8 KiB buffers for its
//! whole life, 12.5 KB per idle upgraded connection; here an idle one holds none.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, StreamHandler};
use actix_http::ws::{hash_key, CloseReason, Message};
use actix_web::http::Method;
use actix_web::rt::net::TcpStream;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use super::door::Ticket;
use super::ws_inbound::{Incoming, ReadError, Reader};
use super::ws_outbox::{self, WsOutbox, WsOutlet};
use super::{admit, Admission, Connection, Mounts, Shared, WsLimits};
use crate::close::Close;
use crate::outlet::Outlet;
use crate::serializer::{Frame, Serializer};

/// Who serves an upgraded connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A Phoenix socket mount.
    Socket,
    /// The test echo (Autobahn), never mounted by default.
    Echo,
}

impl Mounts {
    /// Who serves a WebSocket upgrade to `path`, if anyone.
    fn websocket_target(&self, path: &str) -> Option<Target> {
        if self.echo.as_deref() == Some(path) {
            return Some(Target::Echo);
        }
        let socket = path
            .strip_suffix("/websocket")
            .is_some_and(|mount| self.paths.iter().any(|m| m == mount));
        (socket && self.websocket).then_some(Target::Socket)
    }
}

/// A WebSocket upgrade request, read from a connection's first request head.
pub(crate) struct UpgradeRequest {
    target: Target,
    /// Length of the request head; what follows it is WebSocket data.
    head_len: usize,
    query: String,
    origin: Option<String>,
    host: Option<String>,
    forwarded_proto: Option<String>,
    connection_upgrade: bool,
    version: Option<String>,
    key: Option<String>,
    protocols: Option<String>,
}

/// Headers parsed without allocating; a head with more gets room for all of them (the
/// head's size is what is limited: 16 KiB, `listener.rs`).
const USUAL_HEADERS: usize = 64;

/// Reads `head` as an upgrade to one of `shared`'s WebSocket paths; `None` for any other
/// request, which actix-web serves.
pub(crate) fn upgrade_request(head: &[u8], shared: &Shared) -> Option<UpgradeRequest> {
    let mut headers = [httparse::EMPTY_HEADER; USUAL_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(head_len)) => read_upgrade(&request, head_len, shared),
        Err(httparse::Error::TooManyHeaders) => {
            // One header per line at most.
            let lines = head.windows(2).filter(|w| w == b"\r\n").count();
            let mut headers = vec![httparse::EMPTY_HEADER; lines];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(head).ok()? {
                httparse::Status::Complete(head_len) => read_upgrade(&request, head_len, shared),
                httparse::Status::Partial => None,
            }
        }
        _ => None,
    }
}

/// The upgrade in a parsed request head, if it is one to a WebSocket path.
fn read_upgrade(
    request: &httparse::Request<'_, '_>,
    head_len: usize,
    shared: &Shared,
) -> Option<UpgradeRequest> {
    if request.method? != "GET" {
        return None;
    }
    let (path, query) = request.path?.split_once('?').unwrap_or((request.path?, ""));
    let target = shared.mounts.websocket_target(path)?;
    let text = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    let has_token = |name: &str, token: &str| {
        text(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") {
        return None;
    }
    Some(UpgradeRequest {
        target,
        head_len,
        query: query.to_owned(),
        origin: text("origin"),
        host: text("host"),
        forwarded_proto: text(super::X_FORWARDED_PROTO),
        connection_upgrade: has_token("connection", "upgrade"),
        version: text("sec-websocket-version"),
        key: text("sec-websocket-key"),
        protocols: text("sec-websocket-protocol"),
    })
}

/// Answers an upgrade request on `io`: admission, then `101` and the connection runs on
/// this thread, or a plain `403` / `426` / `400`. `head` holds what was read so far.
pub(crate) async fn handshake(
    request: UpgradeRequest,
    mut io: TcpStream,
    mut head: BytesMut,
    peer: Option<SocketAddr>,
    shared: Arc<Shared>,
    ticket: Ticket,
) {
    let early = head.split_off(request.head_len);
    let admission = Admission {
        origin: request.origin.as_deref(),
        host: request.host.as_deref(),
        forwarded_proto: request.forwarded_proto.as_deref(),
        query: &request.query,
        peer,
    };
    let offers_phoenix = request
        .protocols
        .as_deref()
        .map(|offered| offered.split(',').any(|p| p.trim() == "phoenix"));
    let session = match request.target {
        Target::Echo => None,
        // A client offering sub-protocols needs one selected: only `phoenix` is spoken.
        Target::Socket if offers_phoenix == Some(false) => {
            log::info!(
                "{}: websocket refused: no phoenix sub-protocol offered",
                admission.peer()
            );
            return respond(&mut io, "403 Forbidden").await;
        }
        Target::Socket => match admit(&shared, &admission, "websocket") {
            Ok(session) => Some(session),
            Err(refusal) => {
                log::info!("{}: websocket refused: {refusal}", admission.peer());
                return respond(&mut io, "403 Forbidden").await;
            }
        },
    };
    if request.version.as_deref().is_some_and(|v| v.trim() != "13") {
        // RFC 6455 §4.2.2: say which version is spoken.
        log::info!(
            "{}: websocket refused: a version other than 13",
            admission.peer()
        );
        let version = "sec-websocket-version: 13\r\n";
        return respond_with(&mut io, "426 Upgrade Required", version).await;
    }
    let key = request.key.as_deref().filter(|key| valid_key(key));
    let key = match (key, request.connection_upgrade, request.version.is_some()) {
        (Some(key), true, true) => key,
        _ => {
            log::info!("{}: not a valid WebSocket upgrade", admission.peer());
            return respond(&mut io, "400 Bad Request").await;
        }
    };
    let accept = hash_key(key.trim().as_bytes());
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: {}\r\n",
        String::from_utf8_lossy(&accept)
    );
    if offers_phoenix == Some(true) {
        response.push_str("sec-websocket-protocol: phoenix\r\n");
    }
    response.push_str("\r\n");
    if io.write_all(response.as_bytes()).await.is_err() {
        return;
    }
    let limits = shared.websocket.clone();
    match session {
        Some(session) => serve(session, io, early, limits, ticket),
        None => serve(Echo, io, early, limits, ticket),
    }
}

/// `{mount}/websocket` that reached actix-web: not an upgrade opening a connection.
/// Admission still comes first (a refused client gets 403, as from Phoenix), then 400.
pub(crate) async fn not_upgraded(req: HttpRequest, shared: web::Data<Arc<Shared>>) -> HttpResponse {
    if req.method() == Method::GET {
        if let Err(refusal) = admit(&shared, &Admission::of(&req), "websocket") {
            log::info!("{}: websocket refused: {refusal}", super::peer(&req));
            return HttpResponse::Forbidden().finish();
        }
    }
    HttpResponse::BadRequest().body("expected a WebSocket upgrade as a connection's first request")
}

/// Whether `key` is a `Sec-WebSocket-Key`: the base64 of 16 bytes (RFC 6455 §4.1).
fn valid_key(key: &str) -> bool {
    BASE64
        .decode(key.trim())
        .is_ok_and(|nonce| nonce.len() == 16)
}

/// A refusal before any upgrade: the status line, no body, and the connection closed.
async fn respond(io: &mut TcpStream, status: &str) {
    respond_with(io, status, "").await;
}

/// The same, with `headers` (whole lines) added.
async fn respond_with(io: &mut TcpStream, status: &str, headers: &str) {
    let response =
        format!("HTTP/1.1 {status}\r\n{headers}content-length: 0\r\nconnection: close\r\n\r\n");
    if io.write_all(response.as_bytes()).await.is_ok() {
        let _ = io.shutdown().await;
    }
}

/// Starts serving `stream` (already upgraded; `early` holds any bytes read past the
/// handshake) with `connection` on the current thread.
fn serve<C: Connection>(
    connection: C,
    stream: TcpStream,
    early: BytesMut,
    limits: WsLimits,
    ticket: Ticket,
) {
    let (read_half, write_half) = stream.into_split();
    WsActor::create(move |ctx| {
        let budget = limits.unfinished.clone();
        ctx.add_stream(Reader::new(read_half, early, limits.max_message, budget));
        let outlet = ws_outbox::outlet(write_half, &limits, connection.serializer());
        let writer = actix::fut::wrap_future::<_, WsActor<C>>(ws_outbox::write(outlet.clone()));
        ctx.spawn(writer.map(|result, actor, ctx| {
            if let Some((close, why)) = actor.outlet.with_outbox(WsOutbox::take_cut_off) {
                log::warn!(
                    "{}: websocket closed with {close}: {why}",
                    actor.connection.peer()
                );
            }
            if let Err(error) = result {
                log::debug!(
                    "{}: websocket write ended: {error}",
                    actor.connection.peer()
                );
            }
            ctx.stop();
        }));
        WsActor {
            connection,
            limits,
            outlet,
            last_message: Instant::now(),
            _ticket: ticket,
        }
    });
}

/// A connection that sends every message back: the Autobahn test target.
struct Echo;

#[derive(actix::Message)]
#[rtype(result = "()")]
enum Never {}

impl Connection for Echo {
    type Msg = Never;

    fn serializer(&self) -> Serializer {
        // Echo encodes nothing; the outlet needs one all the same.
        Serializer::V2
    }

    fn opened(&mut self, _mailbox: actix::Recipient<Never>, _outlet: Arc<dyn Outlet>) {}

    fn text(&mut self, text: &str, out: &dyn Outlet) {
        out.send(Frame::Text(text.into()));
    }

    fn binary(&mut self, bytes: Bytes, out: &dyn Outlet) {
        out.send(Frame::Binary(bytes));
    }

    fn message(&mut self, never: Never, _out: &dyn Outlet) {
        match never {}
    }

    fn closed(&mut self) {}

    fn peer(&self) -> &str {
        "echo client"
    }
}

/// One WebSocket connection, driving a [`Connection`].
struct WsActor<C: Connection> {
    connection: C,
    limits: WsLimits,
    outlet: Arc<WsOutlet>,
    /// When the last complete message arrived: only messages (a Phoenix heartbeat, say)
    /// keep a connection open, not pings, pongs or the fragments of a message that never
    /// ends (docs/protocol.md §4.2).
    last_message: Instant,
    /// The door's count of this connection, given back when the actor ends.
    _ticket: Ticket,
}

impl<C: Connection> WsActor<C> {
    /// A close frame is queued (or the peer is gone): nothing more is read.
    fn closing(&self) -> bool {
        self.outlet.with_outbox(|out| out.is_closing())
    }

    /// Closes with `close`, logged with what happened; the writer drops a client that
    /// does not take the close frame within the grace period.
    fn fail(&mut self, close: Close, what: &dyn std::fmt::Display) {
        log::warn!(
            "{}: websocket closed with {close}: {what}",
            self.connection.peer()
        );
        self.outlet.close(close);
    }

    fn schedule_idle_check(&self, after: Duration, ctx: &mut Context<Self>) {
        ctx.run_later(after, |actor, ctx| {
            let idle = actor.last_message.elapsed();
            if idle >= actor.limits.idle_timeout {
                let close = Close::IDLE;
                log::info!(
                    "{}: websocket sent no complete message for {idle:?}: closing with {close}",
                    actor.connection.peer()
                );
                actor.outlet.close(close);
            } else {
                actor.schedule_idle_check(actor.limits.idle_timeout - idle, ctx);
            }
        });
    }
}

impl<C: Connection> Actor for WsActor<C> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let outlet: Arc<dyn Outlet> = self.outlet.clone();
        self.connection.opened(ctx.address().recipient(), outlet);
        self.schedule_idle_check(self.limits.idle_timeout, ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        // Pubsub may hold the outlet a moment longer; the socket goes now.
        self.outlet.with_outbox(WsOutbox::detach);
        self.connection.closed();
    }
}

impl<C: Connection> StreamHandler<Result<Incoming, ReadError>> for WsActor<C> {
    fn handle(&mut self, item: Result<Incoming, ReadError>, ctx: &mut Self::Context) {
        if self.closing() {
            return;
        }
        let message = match item {
            Ok(message) => message,
            Err(ReadError::Refused { close, why }) => return self.fail(close, &why),
            Err(ReadError::Gone(error)) => {
                log::debug!("{}: websocket read failed: {error}", self.connection.peer());
                return ctx.stop();
            }
        };
        match message {
            Incoming::Text(text) => {
                self.last_message = Instant::now();
                self.connection.text(&text, &*self.outlet);
            }
            Incoming::Binary(bytes) => {
                self.last_message = Instant::now();
                self.connection.binary(bytes, &*self.outlet);
            }
            Incoming::Ping(payload) => self
                .outlet
                .with_outbox(|out| out.push(Message::Pong(payload))),
            Incoming::Pong => {}
            Incoming::Close(reason) => {
                // Echo the client's code, as RFC 6455 §5.5.1 asks; then we are done.
                let echo = reason.map(|r| CloseReason {
                    code: r.code,
                    description: None,
                });
                self.outlet.with_outbox(|out| out.close_with(echo));
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The peer closed its side; whatever is queued cannot matter to it.
        ctx.stop();
    }
}

impl<C: Connection> Handler<C::Msg> for WsActor<C> {
    type Result = ();

    fn handle(&mut self, msg: C::Msg, _ctx: &mut Self::Context) {
        self.connection.message(msg, &*self.outlet);
    }
}
