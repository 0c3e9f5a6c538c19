//! The WebSocket transport: the upgrade handshake and the connection, on lean I/O of
//! our own.
//!
//! Owns the handshake (admission, then `101` selecting the `phoenix` sub-protocol, `403`
//! before any upgrade, or `400`), the WebSocket rules (reassembly of fragments under the
//! size limit, UTF-8 validation, ping/pong, the close handshake with the right codes,
//! the idle timeout) and the connection's outlet over its outbound queue (`ws_outbox.rs`:
//! bounded, written by the worker's flusher). Hands whole messages to a [`Connection`];
//! must not parse them.
//!
//! Framing is actix-http's `ws::Codec`, the buffers are ours: behind actix-http's HTTP/1
//! dispatcher (with actix-web-actors) every connection held two 8 KiB buffers for its
//! whole life, 12.5 KB per idle upgraded connection; here an idle one holds none.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, StreamHandler};
use actix_codec::Decoder;
use actix_http::ws::{
    hash_key, CloseReason, Codec, Frame as WsFrame, Item, Message, ProtocolError,
};
use actix_web::http::Method;
use actix_web::rt::net::TcpStream;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;

use super::door::Ticket;
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
    version_13: bool,
    key: Option<String>,
    protocols: Option<String>,
}

/// Reads `head` as an upgrade to one of `shared`'s WebSocket paths; `None` for any other
/// request, which actix-web serves.
pub(crate) fn upgrade_request(head: &[u8], shared: &Shared) -> Option<UpgradeRequest> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = request.parse(head).ok()? else {
        return None;
    };
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
        version_13: text("sec-websocket-version").as_deref() == Some("13"),
        key: text("sec-websocket-key"),
        protocols: text("sec-websocket-protocol"),
    })
}

/// Answers an upgrade request on `io`: admission, then `101` and the connection runs on
/// this thread, or a plain `403` / `400`. `head` holds what was read so far.
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
    let key = match (&request.key, request.connection_upgrade, request.version_13) {
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
    let limits = shared.websocket;
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

/// A refusal before any upgrade: the status line, no body, and the connection closed.
async fn respond(io: &mut TcpStream, status: &str) {
    let response = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
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
        ctx.add_stream(FrameReader {
            io: read_half,
            buf: early,
            codec: Codec::new().max_size(limits.max_message),
            eof: false,
        });
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
            fragments: None,
            last_seen: Instant::now(),
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

/// Reads frames from the socket. Between messages it holds no buffer.
struct FrameReader {
    io: OwnedReadHalf,
    buf: BytesMut,
    codec: Codec,
    eof: bool,
}

/// Bytes read from the socket per read call.
const READ_CHUNK: usize = 8 * 1024;

impl futures_core::Stream for FrameReader {
    type Item = Result<WsFrame, ProtocolError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if !this.buf.is_empty() {
                match this.codec.decode(&mut this.buf) {
                    Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                    Ok(None) => {}
                    Err(error) => return Poll::Ready(Some(Err(error))),
                }
            }
            if this.eof {
                return Poll::Ready(None);
            }
            // Not zeroed: the socket writes what is read.
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut read = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => this.eof = true,
                Poll::Ready(Ok(())) => this.buf.extend_from_slice(read.filled()),
                Poll::Ready(Err(error)) => return Poll::Ready(Some(Err(ProtocolError::Io(error)))),
                Poll::Pending => {
                    if this.buf.is_empty() {
                        // An idle connection keeps no read buffer.
                        this.buf = BytesMut::new();
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// A fragmented message being reassembled.
struct Fragments {
    text: bool,
    data: BytesMut,
    /// How much of `data` is known to be valid UTF-8 (text only).
    valid_up_to: usize,
}

impl Fragments {
    /// Validates the UTF-8 received so far, failing as soon as a sequence is invalid
    /// (not merely incomplete, unless this is the last fragment).
    fn extend_valid_utf8(&mut self, last: bool) -> bool {
        match std::str::from_utf8(&self.data[self.valid_up_to..]) {
            Ok(_) => {
                self.valid_up_to = self.data.len();
                true
            }
            Err(error) => {
                self.valid_up_to += error.valid_up_to();
                error.error_len().is_none() && !last
            }
        }
    }
}

/// One WebSocket connection, driving a [`Connection`].
struct WsActor<C: Connection> {
    connection: C,
    limits: WsLimits,
    outlet: Arc<WsOutlet>,
    fragments: Option<Fragments>,
    last_seen: Instant,
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

    fn deliver_text(&mut self, data: &[u8]) {
        match std::str::from_utf8(data) {
            Ok(text) => self.connection.text(text, &*self.outlet),
            Err(error) => self.fail(Close::INVALID_UTF8, &error),
        }
    }

    fn deliver_binary(&mut self, data: Bytes) {
        self.connection.binary(data, &*self.outlet);
    }

    fn start_fragments(&mut self, text: bool, first: Bytes) -> Bytes {
        self.fragments = Some(Fragments {
            text,
            data: BytesMut::new(),
            valid_up_to: 0,
        });
        first
    }

    fn continuation(&mut self, item: Item) {
        let (chunk, last) = match item {
            Item::FirstText(_) | Item::FirstBinary(_) if self.fragments.is_some() => {
                let close = Close::INTERLEAVED_FRAGMENT;
                return self.fail(close, &close.reason);
            }
            Item::FirstText(chunk) => (self.start_fragments(true, chunk), false),
            Item::FirstBinary(chunk) => (self.start_fragments(false, chunk), false),
            Item::Continue(chunk) => (chunk, false),
            Item::Last(chunk) => (chunk, true),
        };
        let Some(fragments) = self.fragments.as_mut() else {
            let close = Close::STRAY_CONTINUATION;
            return self.fail(close, &close.reason);
        };
        let size = fragments.data.len() + chunk.len();
        if size > self.limits.max_message {
            let limit = self.limits.max_message;
            return self.fail(
                Close::TOO_BIG,
                &format_args!("{size} bytes so far, over {limit}"),
            );
        }
        fragments.data.extend_from_slice(&chunk);
        if fragments.text && !fragments.extend_valid_utf8(last) {
            let close = Close::INVALID_UTF8;
            return self.fail(close, &close.reason);
        }
        if last {
            let Fragments { text, data, .. } = self.fragments.take().expect("checked above");
            if text {
                self.deliver_text(&data);
            } else {
                self.deliver_binary(data.freeze());
            }
        }
    }

    fn protocol_error(&mut self, error: ProtocolError, ctx: &mut Context<Self>) {
        match error {
            ProtocolError::Overflow => {
                let limit = self.limits.max_message;
                self.fail(Close::TOO_BIG, &format_args!("a frame over {limit} bytes"))
            }
            // The codec reports reserved bits as InvalidData; anything else from the
            // socket means the peer is gone.
            ProtocolError::Io(io) if io.kind() == io::ErrorKind::InvalidData => {
                self.fail(Close::PROTOCOL_ERROR, &io)
            }
            ProtocolError::Io(io) => {
                log::debug!("websocket read failed: {io}");
                ctx.stop();
            }
            other => self.fail(Close::PROTOCOL_ERROR, &other),
        }
    }

    fn schedule_idle_check(&self, after: Duration, ctx: &mut Context<Self>) {
        ctx.run_later(after, |actor, ctx| {
            let idle = actor.last_seen.elapsed();
            if idle >= actor.limits.idle_timeout {
                let close = Close::IDLE;
                log::info!(
                    "{}: websocket idle for {idle:?}: closing with {close}",
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

impl<C: Connection> StreamHandler<Result<WsFrame, ProtocolError>> for WsActor<C> {
    fn handle(&mut self, item: Result<WsFrame, ProtocolError>, ctx: &mut Self::Context) {
        if self.closing() {
            return;
        }
        self.last_seen = Instant::now();
        let frame = match item {
            Ok(frame) => frame,
            Err(error) => return self.protocol_error(error, ctx),
        };
        match frame {
            WsFrame::Text(_) | WsFrame::Binary(_) if self.fragments.is_some() => {
                let close = Close::INTERLEAVED_FRAGMENT;
                self.fail(close, &close.reason)
            }
            WsFrame::Text(data) => self.deliver_text(&data),
            WsFrame::Binary(data) => self.deliver_binary(data),
            WsFrame::Continuation(item) => self.continuation(item),
            WsFrame::Ping(payload) => self
                .outlet
                .with_outbox(|out| out.push(Message::Pong(payload))),
            WsFrame::Pong(_) => {}
            WsFrame::Close(reason) => {
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
