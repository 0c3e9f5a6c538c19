//! The WebSocket transport, and the only module that touches actix-web-actors.
//!
//! Owns the handshake (admission, then upgrade with the `phoenix` sub-protocol), and the
//! WebSocket rules: reassembly of fragmented messages under the size limit, UTF-8
//! validation of text, ping/pong, the close handshake with the right close codes, and
//! the idle timeout. Hands whole messages to a [`Connection`]; must not parse them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, AsyncContext, Handler, StreamHandler};
use actix_http::ws::Item;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError, WebsocketContext};
use bytes::{Bytes, BytesMut};

use super::{admit, close_code, peer, Connection, Outbox};
use crate::endpoint::Shared;
use crate::serializer::Frame;

/// `GET {mount}/websocket`: admits the client (403 on refusal) and upgrades.
pub(crate) async fn handshake(
    req: HttpRequest,
    body: web::Payload,
    shared: web::Data<Arc<Shared>>,
) -> actix_web::Result<HttpResponse> {
    let session = match admit(&shared, &req, "websocket") {
        Ok(session) => session,
        Err(refusal) => {
            log::info!("{}: websocket refused: {refusal}", peer(&req));
            return Ok(HttpResponse::Forbidden().finish());
        }
    };
    upgrade(session, &shared.config, &req, body)
}

/// Upgrades `req` to a WebSocket served by `connection`.
pub(crate) fn upgrade<C: Connection>(
    connection: C,
    config: &crate::config::Config,
    req: &HttpRequest,
    body: web::Payload,
) -> actix_web::Result<HttpResponse> {
    let actor = WsActor {
        connection,
        limits: Limits {
            max_message: config.max_frame_size,
            idle_timeout: config.idle_timeout(),
        },
        fragments: None,
        last_seen: Instant::now(),
        closed: false,
    };
    ws::WsResponseBuilder::new(actor, req, body)
        .frame_size(config.max_frame_size)
        .protocols(&["phoenix"])
        .start()
}

struct Limits {
    max_message: usize,
    idle_timeout: Duration,
}

/// A fragmented message being reassembled.
struct Fragments {
    text: bool,
    data: BytesMut,
    /// How much of `data` is known to be valid UTF-8 (text only).
    valid_up_to: usize,
}

/// One WebSocket connection, driving a [`Connection`].
struct WsActor<C: Connection> {
    connection: C,
    limits: Limits,
    fragments: Option<Fragments>,
    last_seen: Instant,
    closed: bool,
}

/// The [`Outbox`] over actix's WebSocket context.
struct WsOutbox<'a, C: Connection> {
    ctx: &'a mut WebsocketContext<WsActor<C>>,
    closed: &'a mut bool,
}

impl<C: Connection> Outbox for WsOutbox<'_, C> {
    fn send(&mut self, frame: Frame) {
        if *self.closed {
            return;
        }
        match frame {
            Frame::Text(text) => self.ctx.text(text),
            Frame::Binary(bytes) => self.ctx.binary(bytes),
        }
    }

    fn close(&mut self, code: u16, reason: &str) {
        if std::mem::replace(self.closed, true) {
            return;
        }
        self.ctx.close(Some(CloseReason {
            code: CloseCode::from(code),
            description: Some(reason.to_owned()),
        }));
        self.ctx.stop();
    }
}

impl<C: Connection> WsActor<C> {
    fn outbox<'a>(closed: &'a mut bool, ctx: &'a mut WebsocketContext<Self>) -> WsOutbox<'a, C> {
        WsOutbox { ctx, closed }
    }

    fn fail(&mut self, code: u16, reason: &str, ctx: &mut WebsocketContext<Self>) {
        log::warn!("websocket closed with {code}: {reason}");
        Self::outbox(&mut self.closed, ctx).close(code, reason);
    }

    fn deliver_text(&mut self, data: &[u8], ctx: &mut WebsocketContext<Self>) {
        match std::str::from_utf8(data) {
            Ok(text) => {
                let mut out = Self::outbox(&mut self.closed, ctx);
                self.connection.text(text, &mut out);
            }
            Err(_) => self.fail(
                close_code::INVALID_DATA,
                "invalid UTF-8 in text message",
                ctx,
            ),
        }
    }

    fn deliver_binary(&mut self, data: Bytes, ctx: &mut WebsocketContext<Self>) {
        let mut out = Self::outbox(&mut self.closed, ctx);
        self.connection.binary(data, &mut out);
    }

    fn continuation(&mut self, item: Item, ctx: &mut WebsocketContext<Self>) {
        let (chunk, last) = match item {
            Item::FirstText(_) | Item::FirstBinary(_) if self.fragments.is_some() => {
                return self.fail(
                    close_code::PROTOCOL_ERROR,
                    "new message inside a fragmented one",
                    ctx,
                );
            }
            Item::FirstText(chunk) => (self.start_fragments(true, chunk), false),
            Item::FirstBinary(chunk) => (self.start_fragments(false, chunk), false),
            Item::Continue(chunk) => (chunk, false),
            Item::Last(chunk) => (chunk, true),
        };
        let Some(fragments) = self.fragments.as_mut() else {
            return self.fail(
                close_code::PROTOCOL_ERROR,
                "continuation without a message",
                ctx,
            );
        };
        if fragments.data.len() + chunk.len() > self.limits.max_message {
            return self.fail(close_code::TOO_BIG, "message too big", ctx);
        }
        fragments.data.extend_from_slice(&chunk);
        if fragments.text && !fragments.extend_valid_utf8(last) {
            return self.fail(
                close_code::INVALID_DATA,
                "invalid UTF-8 in text message",
                ctx,
            );
        }
        if last {
            let Fragments { text, data, .. } = self.fragments.take().expect("checked above");
            if text {
                self.deliver_text(&data, ctx);
            } else {
                self.deliver_binary(data.freeze(), ctx);
            }
        }
    }

    fn start_fragments(&mut self, text: bool, first: Bytes) -> Bytes {
        self.fragments = Some(Fragments {
            text,
            data: BytesMut::new(),
            valid_up_to: 0,
        });
        first
    }

    fn schedule_idle_check(&self, after: Duration, ctx: &mut WebsocketContext<Self>) {
        ctx.run_later(after, |actor, ctx| {
            let idle = actor.last_seen.elapsed();
            if idle >= actor.limits.idle_timeout {
                log::info!("websocket idle for {idle:?}: closing with 1001");
                Self::outbox(&mut actor.closed, ctx).close(close_code::GOING_AWAY, "idle timeout");
            } else {
                actor.schedule_idle_check(actor.limits.idle_timeout - idle, ctx);
            }
        });
    }
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

impl<C: Connection> Actor for WsActor<C> {
    type Context = WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.connection.opened(ctx.address().recipient());
        self.schedule_idle_check(self.limits.idle_timeout, ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.connection.closed();
    }
}

impl<C: Connection> StreamHandler<Result<ws::Message, ProtocolError>> for WsActor<C> {
    fn handle(&mut self, item: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        if self.closed {
            return;
        }
        self.last_seen = Instant::now();
        let message = match item {
            Ok(message) => message,
            Err(error) => return self.protocol_error(error, ctx),
        };
        match message {
            ws::Message::Text(_) | ws::Message::Binary(_) if self.fragments.is_some() => self.fail(
                close_code::PROTOCOL_ERROR,
                "new message inside a fragmented one",
                ctx,
            ),
            ws::Message::Text(text) => {
                let mut out = Self::outbox(&mut self.closed, ctx);
                self.connection.text(&text, &mut out);
            }
            ws::Message::Binary(bytes) => self.deliver_binary(bytes, ctx),
            ws::Message::Continuation(item) => self.continuation(item, ctx),
            ws::Message::Ping(payload) => ctx.pong(&payload),
            ws::Message::Pong(_) | ws::Message::Nop => {}
            ws::Message::Close(reason) => {
                // Echo the client's code, as RFC 6455 §5.5.1 asks; then we are done.
                self.closed = true;
                ctx.close(reason.map(|r| CloseReason {
                    code: r.code,
                    description: None,
                }));
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl<C: Connection> WsActor<C> {
    fn protocol_error(&mut self, error: ProtocolError, ctx: &mut WebsocketContext<Self>) {
        match error {
            ProtocolError::Overflow => self.fail(close_code::TOO_BIG, "message too big", ctx),
            // actix-web-actors reports a text frame that is not UTF-8 as an I/O error
            // carrying the Utf8Error's text; a real I/O error means the peer is gone.
            ProtocolError::Io(io) if io.to_string().contains("utf-8") => self.fail(
                close_code::INVALID_DATA,
                "invalid UTF-8 in text message",
                ctx,
            ),
            ProtocolError::Io(io) => {
                log::debug!("websocket read failed: {io}");
                self.closed = true;
                ctx.stop();
            }
            other => self.fail(close_code::PROTOCOL_ERROR, &other.to_string(), ctx),
        }
    }
}

impl<C: Connection> Handler<C::Msg> for WsActor<C> {
    type Result = ();

    fn handle(&mut self, msg: C::Msg, ctx: &mut Self::Context) {
        let mut out = Self::outbox(&mut self.closed, ctx);
        self.connection.message(msg, &mut out);
    }
}

/// A connection that sends every message back: the Autobahn test target, served only
/// when the `echo-endpoint` feature is on.
#[cfg(feature = "echo-endpoint")]
pub(crate) mod echo {
    use super::*;

    pub(crate) struct Echo;

    #[derive(actix::Message)]
    #[rtype(result = "()")]
    pub(crate) enum Never {}

    impl Connection for Echo {
        type Msg = Never;

        fn opened(&mut self, _mailbox: actix::Recipient<Never>) {}

        fn text(&mut self, text: &str, out: &mut dyn Outbox) {
            out.send(Frame::Text(text.into()));
        }

        fn binary(&mut self, bytes: Bytes, out: &mut dyn Outbox) {
            out.send(Frame::Binary(bytes));
        }

        fn message(&mut self, never: Never, _out: &mut dyn Outbox) {
            match never {}
        }

        fn closed(&mut self) {}
    }

    /// `GET {path}`: upgrades without admission and echoes.
    pub(crate) async fn handshake(
        req: HttpRequest,
        body: web::Payload,
        shared: web::Data<Arc<Shared>>,
    ) -> actix_web::Result<HttpResponse> {
        upgrade(Echo, &shared.config, &req, body)
    }
}
