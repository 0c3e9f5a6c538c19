//! The long-poll transport (PROTOCOL.md §8): `{mount}/longpoll`, phoenix.js's fallback
//! where WebSockets are blocked.
//!
//! Owns the HTTP side of long-polling (the handshake that opens a session and answers
//! `410` with its token, poll GETs that wait up to the window, POSTs of ndjson lines, the
//! CORS preflight, the JSON status bodies and their headers), the signed session tokens,
//! the table of live long-poll sessions, their expiry when polls stop, and one actor per
//! session that drives the same [`Session`] as WebSocket through the [`Connection`] calls,
//! with an [`Outbox`] that queues encoded text frames until a poll takes them. Must not
//! parse Phoenix messages (the session does) nor know channels or topics; admission
//! (origin, `vsn`, `connect`) is the transport module's, shared with WebSocket.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, Addr, AsyncContext, Context, Handler, MessageResult, Recipient};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use bytestring::ByteString;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{check_origin, close_code, open_session, peer, Admission, Connection, Outbox, Refusal};
use crate::config::Config;
use crate::endpoint::Shared;
use crate::outlet::{Lane, Outlet};
use crate::serializer::Frame;
use crate::session::{Session, SessionMsg};
use crate::socket::Params;

/// Most encoded messages a session queues for its next poll; past it the session ends
/// (PROTOCOL.md §8.6) and the client's next request gets `410`, so it reconnects.
const QUEUE_LIMIT: usize = 10_000;

/// Lines of one POST that are processed; phoenix.js never sends more (PROTOCOL.md §8.4).
const MAX_LINES: usize = 100;

/// The header a client may carry its token in instead of the `token` query parameter.
const TOKEN_HEADER: &str = "x-phoenix-longpoll-token";

type HmacSha256 = Hmac<Sha256>;

/// `{mount}/longpoll`, every method: origin check, then GET (handshake or poll), POST,
/// OPTIONS (CORS preflight); any other method is a plain 400.
pub(crate) async fn serve(
    req: HttpRequest,
    body: web::Payload,
    shared: web::Data<Arc<Shared>>,
) -> HttpResponse {
    if let Err(refusal) = check_origin(&shared, &Admission::of(&req)) {
        return refuse(&req, &refusal);
    }
    match *req.method() {
        Method::GET => get(&shared, &req).await,
        Method::POST => post(&shared, &req, body).await,
        Method::OPTIONS => preflight(&req),
        _ => HttpResponse::BadRequest()
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
            .finish(),
    }
}

/// A GET with the token of a live session polls it; any other GET is a handshake.
async fn get(shared: &Arc<Shared>, req: &HttpRequest) -> HttpResponse {
    let (token, session) = match shared.longpoll.resume(req) {
        Ok(found) => found,
        Err(ResumeError::NoToken) => return handshake(shared, req),
        Err(error) => {
            log::info!("{}: long-poll GET: {error}: new session", peer(req));
            return handshake(shared, req);
        }
    };
    let (reply, outcome) = oneshot::channel();
    if session.send(Poll { reply }).await.is_err() {
        log::info!(
            "{}: long-poll GET: {}: new session",
            peer(req),
            ResumeError::UnknownSession
        );
        return handshake(shared, req);
    }
    match outcome.await {
        Ok(PollOutcome::Messages(frames)) => {
            let messages: Vec<&str> = frames.iter().map(|frame| &**frame).collect();
            status_json(
                StatusCode::OK,
                json!({"status": 200, "token": token, "messages": messages}),
            )
        }
        Ok(PollOutcome::NoContent) => status_json(
            StatusCode::OK,
            json!({"status": 204, "token": token, "messages": []}),
        ),
        // The session ended while this poll waited: "session gone", the client reconnects.
        Ok(PollOutcome::Gone) | Err(_) => status_json(
            StatusCode::OK,
            json!({"status": 410, "token": token, "messages": []}),
        ),
    }
}

/// Admits the client and opens a session: `410` with its token (PROTOCOL.md §8.2).
fn handshake(shared: &Arc<Shared>, req: &HttpRequest) -> HttpResponse {
    match open_session(shared, &Admission::of(req), "longpoll") {
        Ok(session) => {
            let token = shared.longpoll.start(shared.clone(), session, peer(req));
            status_json(
                StatusCode::OK,
                json!({"status": 410, "token": token, "messages": []}),
            )
        }
        Err(refusal) => refuse(req, &refusal),
    }
}

/// Client messages for a live session (PROTOCOL.md §8.4).
async fn post(shared: &Arc<Shared>, req: &HttpRequest, body: web::Payload) -> HttpResponse {
    let session = match shared.longpoll.resume(req) {
        Ok((_, session)) => session,
        Err(error) => {
            log::info!("{}: long-poll POST: {error}: 410", peer(req));
            return status_only(StatusCode::OK, 410);
        }
    };
    let limit = shared.config.max_frame_size;
    let body = match read_body(req.headers(), body, limit).await {
        Ok(body) => body,
        Err(BodyError::TooBig) => {
            log::info!(
                "{}: long-poll POST refused: body over {limit} bytes",
                peer(req)
            );
            return status_only(StatusCode::PAYLOAD_TOO_LARGE, 413);
        }
        Err(BodyError::Read(error)) => {
            log::debug!("{}: long-poll POST body unreadable: {error}", peer(req));
            return HttpResponse::BadRequest()
                .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
                .finish();
        }
    };
    let lines = if is_ndjson(req.headers()) {
        ndjson_lines(&body, &peer(req))
    } else {
        whole_body(body)
    };
    let window = shared.config.longpoll_window();
    match actix_web::rt::time::timeout(window, session.send(Post { lines })).await {
        Ok(Ok(PostOutcome::Accepted)) => status_only(StatusCode::OK, 200),
        Ok(Ok(PostOutcome::Ended)) => status_only(StatusCode::OK, 500),
        Ok(Err(_)) => {
            log::info!(
                "{}: long-poll POST: {}: 410",
                peer(req),
                ResumeError::UnknownSession
            );
            status_only(StatusCode::OK, 410)
        }
        Err(_) => {
            log::warn!(
                "{}: long-poll POST: the session took no message within {window:?}: 408",
                peer(req)
            );
            status_only(StatusCode::OK, 408)
        }
    }
}

/// The CORS preflight, as Phoenix answers it.
fn preflight(req: &HttpRequest) -> HttpResponse {
    let requested: Vec<&str> = req
        .headers()
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter_map(|value| value.to_str().ok())
        .collect();
    HttpResponse::Ok()
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, requested.join(", ")))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "get, post, options"))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "3600"))
        .finish()
}

/// A refused request: HTTP 403 and `{"status":403}` (PROTOCOL.md §8.5).
fn refuse(req: &HttpRequest, refusal: &Refusal) -> HttpResponse {
    log::info!("{}: long-poll refused: {refusal}", peer(req));
    status_only(StatusCode::FORBIDDEN, 403)
}

fn status_only(http: StatusCode, status: u16) -> HttpResponse {
    status_json(http, json!({ "status": status }))
}

/// Every long-poll JSON answer, with Phoenix's headers.
fn status_json(http: StatusCode, body: serde_json::Value) -> HttpResponse {
    HttpResponse::build(http)
        .insert_header((header::CONTENT_TYPE, "application/json; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .body(body.to_string())
}

#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("body too big")]
    TooBig,
    #[error(transparent)]
    Read(#[from] actix_web::Error),
}

/// The POST body, at most `limit` bytes; a declared length over it is refused unread.
async fn read_body(
    headers: &HeaderMap,
    body: web::Payload,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(BodyError::TooBig);
    }
    body.to_bytes_limited(limit)
        .await
        .map_err(|_| BodyError::TooBig)?
        .map_err(BodyError::Read)
}

/// Whether the body is `application/x-ndjson` (parameters such as `charset` ignored).
fn is_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/x-ndjson"))
}

/// One client message of a POST.
enum Line {
    Text(ByteString),
    Binary(Bytes),
}

/// A POST line that is no message; the session ends on it (PROTOCOL.md §10).
#[derive(Debug, thiserror::Error)]
enum LineError {
    #[error("long-poll text line is not valid UTF-8")]
    NotUtf8,
    #[error("long-poll binary line is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
}

/// ndjson: one message per line (`\n` or `\r\n`), empty lines skipped, at most
/// [`MAX_LINES`]. A line starting with `[` (V2) or `{` (V1; never valid base64) is text;
/// any other is the standard base64 of a binary frame.
fn ndjson_lines(body: &Bytes, peer: &str) -> Vec<Result<Line, LineError>> {
    let mut lines = body
        .split(|&byte| byte == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.is_empty());
    let taken: Vec<_> = lines
        .by_ref()
        .take(MAX_LINES)
        .map(|line| parse_line(body.slice_ref(line)))
        .collect();
    let ignored = lines.count();
    if ignored > 0 {
        log::warn!("{peer}: long-poll POST: {ignored} lines past the first {MAX_LINES} ignored");
    }
    taken
}

fn parse_line(line: Bytes) -> Result<Line, LineError> {
    match line.first() {
        Some(b'[' | b'{') => text(line),
        _ => Ok(Line::Binary(Bytes::from(STANDARD.decode(&line)?))),
    }
}

fn text(bytes: Bytes) -> Result<Line, LineError> {
    ByteString::try_from(bytes)
        .map(Line::Text)
        .map_err(|_| LineError::NotUtf8)
}

/// Any other content type (old clients): the whole body is one text message.
fn whole_body(body: Bytes) -> Vec<Result<Line, LineError>> {
    if body.is_empty() {
        Vec::new()
    } else {
        vec![text(body)]
    }
}

// ---------------------------------------------------------------------------------------
// Tokens and the session table

/// Why a request's token names no live session.
#[derive(Debug, thiserror::Error)]
enum ResumeError {
    #[error("no token")]
    NoToken,
    #[error("malformed token")]
    Malformed,
    #[error("token with an invalid signature")]
    BadSignature,
    #[error("token of a session that no longer exists")]
    UnknownSession,
}

/// Signs and verifies tokens: `base64url(session id) "." base64url(HMAC-SHA256(id))`,
/// keyed with a key derived from the secret key base.
struct Signer {
    mac: HmacSha256,
}

impl Signer {
    fn new(secret: &[u8]) -> Self {
        // A key of its own for tokens, so the secret key base may serve other uses.
        let key = keyed(secret)
            .chain_update(b"fluxwire long-poll token")
            .finalize()
            .into_bytes();
        Signer { mac: keyed(&key) }
    }

    fn sign(&self, id: Uuid) -> String {
        let tag = self.mac.clone().chain_update(id.as_bytes()).finalize();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(id.as_bytes()),
            URL_SAFE_NO_PAD.encode(tag.into_bytes())
        )
    }

    /// The session id a token names, if its signature holds (compared in constant time).
    fn verify(&self, token: &str) -> Result<Uuid, ResumeError> {
        let (id, tag) = token.split_once('.').ok_or(ResumeError::Malformed)?;
        let id = URL_SAFE_NO_PAD
            .decode(id)
            .ok()
            .and_then(|bytes| Uuid::from_slice(&bytes).ok())
            .ok_or(ResumeError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| ResumeError::Malformed)?;
        self.mac
            .clone()
            .chain_update(id.as_bytes())
            .verify_slice(&tag)
            .map_err(|_| ResumeError::BadSignature)?;
        Ok(id)
    }
}

fn keyed(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// The live long-poll sessions of the endpoint, by id, and the token signer.
pub(crate) struct LongPollSessions {
    signer: Signer,
    live: Mutex<HashMap<Uuid, Addr<LongPollSession>>>,
}

impl LongPollSessions {
    /// With the configured secret, or a random one (logged: sessions then do not
    /// survive a restart).
    pub(crate) fn new(config: &Config) -> Self {
        let secret = match &config.secret_key_base {
            Some(secret) => secret.as_bytes().to_vec(),
            None => {
                if config.transports.longpoll {
                    log::warn!(
                        "no --secret-key-base (FLUXWIRE_SECRET_KEY_BASE): signing long-poll \
                         tokens with a random secret; long-poll sessions will not survive a \
                         restart"
                    );
                }
                random_secret()
            }
        };
        LongPollSessions {
            signer: Signer::new(&secret),
            live: Mutex::new(HashMap::new()),
        }
    }

    /// Live sessions.
    pub(crate) fn len(&self) -> usize {
        self.table().len()
    }

    fn table(&self) -> MutexGuard<'_, HashMap<Uuid, Addr<LongPollSession>>> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The request's token (header first, then the `token` query parameter) and the
    /// session it names.
    fn resume(&self, req: &HttpRequest) -> Result<(String, Addr<LongPollSession>), ResumeError> {
        let token = match req.headers().get(TOKEN_HEADER) {
            Some(value) => value
                .to_str()
                .map_err(|_| ResumeError::Malformed)?
                .to_owned(),
            None => Params::from_query(req.query_string())
                .get("token")
                .filter(|token| !token.is_empty())
                .ok_or(ResumeError::NoToken)?
                .to_owned(),
        };
        let id = self.signer.verify(&token)?;
        let session = self
            .table()
            .get(&id)
            .cloned()
            .ok_or(ResumeError::UnknownSession)?;
        Ok((token, session))
    }

    /// Starts the actor of a new session; returns its token.
    fn start(&self, shared: Arc<Shared>, session: Session, peer: String) -> String {
        let id = Uuid::new_v4();
        log::debug!("{peer}: long-poll session {id} opened");
        LongPollSession::create(|ctx| {
            // In the table before the handshake's answer, so the first poll finds it.
            self.table().insert(id, ctx.address());
            let queue = Queue {
                frames: VecDeque::new(),
                ended: None,
                peer: peer.clone(),
                actor: Some(ctx.address().recipient()),
                notified: false,
            };
            LongPollSession {
                id,
                lane: Arc::new(Lane::new(session.serializer(), queue, QUEUE_LIMIT)),
                connection: session,
                shared,
                peer,
                waiting: None,
                polls: 0,
                last_poll: Instant::now(),
                flush_scheduled: false,
            }
        });
        self.signer.sign(id)
    }

    fn remove(&self, id: Uuid) {
        self.table().remove(&id);
    }
}

/// 48 bytes from the OS's random source: three uuid v4, 366 random bits.
fn random_secret() -> Vec<u8> {
    (0..3).flat_map(|_| Uuid::new_v4().into_bytes()).collect()
}

// ---------------------------------------------------------------------------------------
// The session actor

/// One long-poll session: owns its [`Session`] and the queue of frames for the next poll.
pub(crate) struct LongPollSession {
    id: Uuid,
    connection: Session,
    shared: Arc<Shared>,
    peer: String,
    /// The session's outlet over its queue of encoded text frames.
    lane: Arc<Lane<Queue>>,
    waiting: Option<Waiting>,
    /// Polls received, to tell a waiting poll's window timer from an older one's.
    polls: u64,
    /// When a poll last started or ended: the session expires this long after it
    /// while no poll waits.
    last_poll: Instant,
    flush_scheduled: bool,
}

/// A poll GET waiting for frames.
struct Waiting {
    poll: u64,
    reply: oneshot::Sender<PollOutcome>,
}

/// Why a session ends by itself.
enum End {
    Closed {
        code: u16,
        reason: String,
    },
    /// A bound was reached: why.
    CutOff(String),
    /// The end was reported and the actor is stopping (or has stopped): nothing more
    /// is queued or reported.
    Stopping,
}

/// A poll GET arrived; the outcome goes to `reply` (now, or when frames or the window
/// end come).
#[derive(actix::Message)]
#[rtype(result = "()")]
struct Poll {
    reply: oneshot::Sender<PollOutcome>,
}

enum PollOutcome {
    /// `200` with these messages.
    Messages(Vec<ByteString>),
    /// `204`: the window ended, or a newer poll took over.
    NoContent,
    /// `410`: the session ended.
    Gone,
}

/// The lines of a POST, in order.
#[derive(actix::Message)]
#[rtype(result = "PostOutcome")]
struct Post {
    lines: Vec<Result<Line, LineError>>,
}

enum PostOutcome {
    /// Every line went to the session: `200`.
    Accepted,
    /// The session ended on a line (undecodable, protocol error): `500`, the rest
    /// unprocessed.
    Ended,
}

/// Frames were queued from outside the actor (a broadcast, a channel's push).
#[derive(actix::Message)]
#[rtype(result = "()")]
struct FramesQueued;

/// The [`Outbox`] of a long-poll session: text frames queue for the next poll; binary
/// frames cannot travel over long-poll and are dropped (PROTOCOL.md §8.3).
struct Queue {
    frames: VecDeque<ByteString>,
    ended: Option<End>,
    peer: String,
    /// Told when frames arrive, so that a waiting poll is answered.
    actor: Option<Recipient<FramesQueued>>,
    /// A [`FramesQueued`] is on its way.
    notified: bool,
}

impl Queue {
    fn notify(&mut self) {
        if !self.notified {
            if let Some(actor) = &self.actor {
                self.notified = true;
                actor.do_send(FramesQueued);
            }
        }
    }
}

impl Outbox for Queue {
    fn send(&mut self, frame: Frame) {
        if self.ended.is_some() {
            return;
        }
        match frame {
            Frame::Text(text) if self.frames.len() < QUEUE_LIMIT => self.frames.push_back(text),
            Frame::Text(_) => {
                let why = format!("more than {QUEUE_LIMIT} messages waiting for a poll");
                return self.cut_off("too many messages waiting", why);
            }
            Frame::Binary(_) => {
                return log::warn!(
                    "{}: binary message not sent: long-poll carries text only",
                    self.peer
                )
            }
        }
        self.notify();
    }

    fn close(&mut self, code: u16, reason: &str) {
        if self.ended.is_none() {
            self.ended = Some(End::Closed {
                code,
                reason: reason.to_owned(),
            });
            self.notify();
        }
    }

    fn cut_off(&mut self, _reason: &str, why: String) {
        // Long-poll has no close frame: the next poll gets 410.
        if self.ended.is_none() {
            self.ended = Some(End::CutOff(why));
            self.notify();
        }
    }
}

impl LongPollSession {
    /// Runs `f` on the session with this session's outlet.
    fn drive(&mut self, f: impl FnOnce(&mut Session, &dyn Outlet)) {
        f(&mut self.connection, &*self.lane);
    }

    fn ended(&self) -> bool {
        self.lane.with_outbox(|queue| queue.ended.is_some())
    }

    /// After the session wrote: end it if it must, or get new frames to a waiting poll.
    fn after_output(&mut self, ctx: &mut Context<Self>) {
        let (ended, has_frames) = self.lane.with_outbox(|queue| {
            let ended = match queue.ended.replace(End::Stopping) {
                None => {
                    queue.ended = None;
                    false
                }
                Some(End::Stopping) => false,
                Some(End::CutOff(why)) => {
                    log::warn!("{}: long-poll session {} ended: {why}", self.peer, self.id);
                    true
                }
                Some(End::Closed { code, reason }) => {
                    log::debug!(
                        "{}: long-poll session {} ended ({code}: {reason})",
                        self.peer,
                        self.id
                    );
                    true
                }
            };
            (ended, !queue.frames.is_empty())
        });
        if ended {
            // What was queued still reaches a waiting poll; the next one gets 410.
            self.flush();
            ctx.stop();
        } else if has_frames && self.waiting.is_some() && !self.flush_scheduled {
            // Answer after the messages already in the mailbox, so that a burst (a join
            // reply and its pushes) goes out in one response.
            self.flush_scheduled = true;
            ctx.run_later(Duration::ZERO, |session, _| {
                session.flush_scheduled = false;
                session.flush();
            });
        }
    }

    /// Answers the waiting poll with every queued frame, if there are any.
    fn flush(&mut self) {
        if self.waiting.is_none() || !self.lane.with_outbox(|queue| !queue.frames.is_empty()) {
            return;
        }
        let Some(waiting) = self.waiting.take() else {
            return;
        };
        self.last_poll = Instant::now();
        let frames = self
            .lane
            .with_outbox(|queue| Vec::from(std::mem::take(&mut queue.frames)));
        if let Err(PollOutcome::Messages(frames)) =
            waiting.reply.send(PollOutcome::Messages(frames))
        {
            // That request is gone (the client gave up on it): keep them for the next,
            // ahead of any queued meanwhile.
            self.lane.with_outbox(|queue| {
                let newer = std::mem::take(&mut queue.frames);
                queue.frames = frames.into_iter().chain(newer).collect();
            });
        }
    }

    /// Whether a poll is waiting whose client still waits too.
    fn polled(&self) -> bool {
        self.waiting
            .as_ref()
            .is_some_and(|waiting| !waiting.reply.is_closed())
    }

    /// Ends the session when no poll has waited for the timeout (PROTOCOL.md §8.6).
    fn schedule_expiry(&self, after: Duration, ctx: &mut Context<Self>) {
        ctx.run_later(after, |session, ctx| {
            let timeout = session.shared.config.longpoll_timeout();
            let idle = session.last_poll.elapsed();
            if session.polled() {
                session.schedule_expiry(timeout, ctx);
            } else if idle >= timeout {
                log::info!(
                    "{}: long-poll session {} expired: no poll for {idle:?}",
                    session.peer,
                    session.id
                );
                ctx.stop();
            } else {
                session.schedule_expiry(timeout - idle, ctx);
            }
        });
    }
}

impl Actor for LongPollSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let outlet: Arc<dyn Outlet> = self.lane.clone();
        Connection::opened(&mut self.connection, ctx.address().recipient(), outlet);
        self.schedule_expiry(self.shared.config.longpoll_timeout(), ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.lane.with_outbox(|queue| {
            queue.ended = Some(End::Stopping);
            queue.actor = None;
            queue.frames.clear();
        });
        Connection::closed(&mut self.connection);
        self.shared.longpoll.remove(self.id);
        if let Some(waiting) = self.waiting.take() {
            let _ = waiting.reply.send(PollOutcome::Gone);
        }
    }
}

impl Handler<Poll> for LongPollSession {
    type Result = ();

    fn handle(&mut self, poll: Poll, ctx: &mut Self::Context) {
        self.last_poll = Instant::now();
        // A newer poll takes over; the older one answers 204 (PROTOCOL.md §8.3).
        if let Some(older) = self.waiting.take() {
            let _ = older.reply.send(PollOutcome::NoContent);
        }
        self.polls += 1;
        let id = self.polls;
        self.waiting = Some(Waiting {
            poll: id,
            reply: poll.reply,
        });
        if self.lane.with_outbox(|queue| !queue.frames.is_empty()) {
            return self.flush();
        }
        ctx.run_later(self.shared.config.longpoll_window(), move |session, _| {
            if session.waiting.as_ref().is_some_and(|w| w.poll == id) {
                if let Some(waiting) = session.waiting.take() {
                    session.last_poll = Instant::now();
                    let _ = waiting.reply.send(PollOutcome::NoContent);
                }
            }
        });
    }
}

impl Handler<Post> for LongPollSession {
    type Result = MessageResult<Post>;

    fn handle(&mut self, post: Post, ctx: &mut Self::Context) -> Self::Result {
        for line in post.lines {
            match line {
                Ok(Line::Text(text)) => self.drive(|session, out| session.text(&text, out)),
                Ok(Line::Binary(bytes)) => self.drive(|session, out| session.binary(bytes, out)),
                Err(error) => {
                    log::warn!("{}: closing long-poll session: {error}", self.peer);
                    self.drive(|_, out| out.close(close_code::INVALID_DATA, "invalid message"));
                }
            }
            if self.ended() {
                break;
            }
        }
        let outcome = if self.ended() {
            PostOutcome::Ended
        } else {
            PostOutcome::Accepted
        };
        self.after_output(ctx);
        MessageResult(outcome)
    }
}

impl Handler<SessionMsg> for LongPollSession {
    type Result = ();

    fn handle(&mut self, msg: SessionMsg, ctx: &mut Self::Context) {
        self.drive(|session, out| session.message(msg, out));
        self.after_output(ctx);
    }
}

impl Handler<FramesQueued> for LongPollSession {
    type Result = ();

    fn handle(&mut self, _: FramesQueued, ctx: &mut Self::Context) {
        self.lane.with_outbox(|queue| queue.notified = false);
        self.after_output(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretKeyBase;

    fn signer() -> Signer {
        let secret = SecretKeyBase::parse(&"s".repeat(SecretKeyBase::MIN_LEN)).unwrap();
        Signer::new(secret.as_bytes())
    }

    #[test]
    fn tokens_round_trip_and_resist_tampering() {
        let signer = signer();
        let id = Uuid::new_v4();
        let token = signer.sign(id);
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        assert_eq!(signer.verify(&token).unwrap(), id);

        let (id_part, tag_part) = token.split_once('.').unwrap();
        let other = URL_SAFE_NO_PAD.encode(Uuid::new_v4().as_bytes());
        assert!(matches!(
            signer.verify(&format!("{other}.{tag_part}")),
            Err(ResumeError::BadSignature)
        ));
        let mut tag = URL_SAFE_NO_PAD.decode(tag_part).unwrap();
        tag[0] ^= 1;
        let altered = format!("{id_part}.{}", URL_SAFE_NO_PAD.encode(tag));
        assert!(matches!(
            signer.verify(&altered),
            Err(ResumeError::BadSignature)
        ));
        for malformed in ["", ".", "abc", "abc.def", "!!.??", id_part] {
            assert!(signer.verify(malformed).is_err(), "{malformed:?}");
        }

        let other_secret = Signer::new(&[7; 32]);
        assert!(matches!(
            other_secret.verify(&token),
            Err(ResumeError::BadSignature)
        ));
    }

    #[test]
    fn ndjson_lines_split_and_decode() {
        let body = Bytes::from_static(b"[1]\r\n\n{\"a\":1}\nAAEC\n");
        let lines = ndjson_lines(&body, "test");
        assert_eq!(lines.len(), 3);
        assert!(matches!(&lines[0], Ok(Line::Text(t)) if &**t == "[1]"));
        assert!(matches!(&lines[1], Ok(Line::Text(t)) if &**t == "{\"a\":1}"));
        assert!(matches!(&lines[2], Ok(Line::Binary(b)) if b[..] == [0, 1, 2]));

        let bad = ndjson_lines(&Bytes::from_static(b"not base64!\n[\xff]"), "test");
        assert!(matches!(bad[0], Err(LineError::Base64(_))));
        assert!(matches!(bad[1], Err(LineError::NotUtf8)));

        let many = Bytes::from("[]\n".repeat(MAX_LINES + 5));
        assert_eq!(ndjson_lines(&many, "test").len(), MAX_LINES);
    }
}
