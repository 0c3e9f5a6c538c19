//! One actor per long-poll session, and the table of live ones.
//!
//! Owns a session's life: it drives the same [`Session`] as WebSocket through the
//! [`Connection`] calls, with a [`PollOutbox`] that queues encoded text frames until a
//! poll takes them (bounded in frames and in bytes: past either bound the session
//! ends); it answers polls (frames, 204 at the window's end, 410 once ended), takes the
//! lines of POSTs, and expires when polls stop. Must not answer HTTP: the handlers in
//! `longpoll.rs` turn its outcomes into responses.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, Addr, AsyncContext, Context, Handler, MessageResult, Recipient};
use actix_web::HttpRequest;
use bytestring::ByteString;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::body::{Line, LineError};
use super::token::{random_secret, ResumeError, Signer};
use crate::channel::ChannelReport;
use crate::close::Close;
use crate::outlet::{ClientOutlet, Outbox, Outlet};
use crate::serializer::Frame;
use crate::session::Session;
use crate::socket::Params;
use crate::transport::door::SessionTicket;
use crate::transport::{Connection, Shared};

/// Most encoded messages a session queues for its next poll; past it (or past
/// `--max-outbound-bytes` of them) the session ends (docs/protocol.md §8.6) and the
/// client's next request gets `410`, so it reconnects.
const QUEUE_LIMIT: usize = 10_000;

/// The header a client may carry its token in instead of the `token` query parameter.
const TOKEN_HEADER: &str = "x-phoenix-longpoll-token";

/// The live long-poll sessions of the endpoint, by id, and the token signer.
pub(crate) struct LongPollServers {
    signer: Signer,
    live: Mutex<HashMap<Uuid, Addr<LongPollServer>>>,
}

impl LongPollServers {
    /// Tokens signed with `secret`, or with a random one (sessions then do not survive
    /// a restart).
    pub(crate) fn new(secret: Option<&[u8]>) -> Self {
        let secret = secret.map_or_else(random_secret, <[u8]>::to_vec);
        LongPollServers {
            signer: Signer::new(&secret),
            live: Mutex::new(HashMap::new()),
        }
    }

    /// Live sessions.
    pub(crate) fn len(&self) -> usize {
        self.table().len()
    }

    fn table(&self) -> MutexGuard<'_, HashMap<Uuid, Addr<LongPollServer>>> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The request's token (header first, then the `token` query parameter) and the
    /// session it names.
    pub(super) fn resume(
        &self,
        req: &HttpRequest,
    ) -> Result<(String, Addr<LongPollServer>), ResumeError> {
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
    pub(super) fn start(
        &self,
        shared: Arc<Shared>,
        session: Session,
        peer: String,
        ticket: SessionTicket,
    ) -> String {
        let id = Uuid::new_v4();
        log::debug!("{peer}: long-poll session {id} opened");
        LongPollServer::create(|ctx| {
            // In the table before the handshake's answer, so the first poll finds it.
            self.table().insert(id, ctx.address());
            let queue = PollOutbox {
                frames: VecDeque::new(),
                bytes: 0,
                max_bytes: shared.longpoll.max_queue_bytes,
                ended: None,
                peer: peer.clone(),
                actor: Some(ctx.address().recipient()),
                notified: false,
            };
            LongPollServer {
                id,
                outlet: Arc::new(ClientOutlet::new(session.serializer(), queue, QUEUE_LIMIT)),
                connection: session,
                shared,
                peer,
                waiting: None,
                polls: 0,
                last_poll: Instant::now(),
                flush_scheduled: false,
                _ticket: ticket,
            }
        });
        self.signer.sign(id)
    }

    fn remove(&self, id: Uuid) {
        self.table().remove(&id);
    }
}

/// One long-poll session: owns its [`Session`] and the queue of frames for the next poll.
pub(crate) struct LongPollServer {
    id: Uuid,
    connection: Session,
    shared: Arc<Shared>,
    peer: String,
    /// The session's outlet over its queue of encoded text frames.
    outlet: Arc<ClientOutlet<PollOutbox>>,
    waiting: Option<Waiting>,
    /// Polls received, to tell a waiting poll's window timer from an older one's.
    polls: u64,
    /// When a poll last started or ended: the session expires this long after it
    /// while no poll waits.
    last_poll: Instant,
    flush_scheduled: bool,
    /// The door's count of this session, given back when the actor ends.
    _ticket: SessionTicket,
}

/// A poll GET waiting for frames.
struct Waiting {
    poll: u64,
    reply: oneshot::Sender<PollOutcome>,
}

/// Why a session ends by itself.
enum End {
    Closed(Close),
    /// A bound was reached: which, and why.
    CutOff(Close, String),
    /// The end was reported and the actor is stopping (or has stopped): nothing more
    /// is queued or reported.
    Stopping,
}

/// A poll GET arrived; the outcome goes to `reply` (now, or when frames or the window
/// end come).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(super) struct Poll {
    pub reply: oneshot::Sender<PollOutcome>,
}

pub(super) enum PollOutcome {
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
pub(super) struct Post {
    pub lines: Vec<Result<Line, LineError>>,
}

pub(super) enum PostOutcome {
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
/// frames cannot travel over long-poll and are dropped (docs/protocol.md §8.3).
struct PollOutbox {
    frames: VecDeque<ByteString>,
    /// The bytes of `frames`, and their bound.
    bytes: usize,
    max_bytes: usize,
    ended: Option<End>,
    peer: String,
    /// Told when frames arrive, so that a waiting poll is answered.
    actor: Option<Recipient<FramesQueued>>,
    /// A [`FramesQueued`] is on its way.
    notified: bool,
}

impl PollOutbox {
    /// Every queued frame, oldest first; the queue is left empty.
    fn take(&mut self) -> VecDeque<ByteString> {
        self.bytes = 0;
        std::mem::take(&mut self.frames)
    }

    /// Puts `frames` back ahead of any queued meanwhile.
    fn put_back(&mut self, frames: Vec<ByteString>) {
        let newer = self.take();
        self.frames = frames.into_iter().chain(newer).collect();
        self.bytes = self.frames.iter().map(|frame| frame.len()).sum();
    }

    fn notify(&mut self) {
        if !self.notified {
            if let Some(actor) = &self.actor {
                self.notified = true;
                actor.do_send(FramesQueued);
            }
        }
    }
}

impl Outbox for PollOutbox {
    fn send(&mut self, frame: Frame) {
        if self.ended.is_some() {
            return;
        }
        match frame {
            Frame::Text(_) if self.frames.len() >= QUEUE_LIMIT => {
                let why = format!("more than {QUEUE_LIMIT} messages waiting for a poll");
                return self.cut_off(Close::POLL_QUEUE_FULL, why);
            }
            Frame::Text(text) if self.bytes + text.len() > self.max_bytes => {
                let why = format!(
                    "more than {} bytes waiting for a poll ({} messages)",
                    self.max_bytes,
                    self.frames.len() + 1
                );
                return self.cut_off(Close::POLL_QUEUE_FULL, why);
            }
            Frame::Text(text) => {
                self.bytes += text.len();
                self.frames.push_back(text);
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

    fn close(&mut self, close: Close) {
        if self.ended.is_none() {
            self.ended = Some(End::Closed(close));
            self.notify();
        }
    }

    fn cut_off(&mut self, close: Close, why: String) {
        // Long-poll has no close frame: the next poll gets 410.
        if self.ended.is_none() {
            self.ended = Some(End::CutOff(close, why));
            self.notify();
        }
    }
}

impl LongPollServer {
    /// Runs `f` on the session with this session's outlet.
    fn drive(&mut self, f: impl FnOnce(&mut Session, &dyn Outlet)) {
        f(&mut self.connection, &*self.outlet);
    }

    fn ended(&self) -> bool {
        self.outlet.with_outbox(|queue| queue.ended.is_some())
    }

    /// After the session wrote: end it if it must, or get new frames to a waiting poll.
    fn after_output(&mut self, ctx: &mut Context<Self>) {
        let (ended, has_frames) = self.outlet.with_outbox(|queue| {
            let ended = match queue.ended.replace(End::Stopping) {
                None => {
                    queue.ended = None;
                    false
                }
                Some(End::Stopping) => false,
                Some(End::CutOff(close, why)) => {
                    log::warn!(
                        "{}: long-poll session {} ended with {close}: {why}",
                        self.peer,
                        self.id
                    );
                    true
                }
                Some(End::Closed(close)) => {
                    log::debug!(
                        "{}: long-poll session {} ended ({close})",
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
        if self.waiting.is_none() || !self.outlet.with_outbox(|queue| !queue.frames.is_empty()) {
            return;
        }
        let Some(waiting) = self.waiting.take() else {
            return;
        };
        self.last_poll = Instant::now();
        let frames = self.outlet.with_outbox(|queue| Vec::from(queue.take()));
        if let Err(PollOutcome::Messages(frames)) =
            waiting.reply.send(PollOutcome::Messages(frames))
        {
            // That request is gone (the client gave up on it): keep them for the next,
            // ahead of any queued meanwhile.
            self.outlet.with_outbox(|queue| queue.put_back(frames));
        }
    }

    /// Whether a poll is waiting whose client still waits too.
    fn polled(&self) -> bool {
        self.waiting
            .as_ref()
            .is_some_and(|waiting| !waiting.reply.is_closed())
    }

    /// Ends the session when no poll has waited for the timeout (docs/protocol.md §8.6).
    fn schedule_expiry(&self, after: Duration, ctx: &mut Context<Self>) {
        ctx.run_later(after, |session, ctx| {
            let timeout = session.shared.longpoll.timeout;
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

impl Actor for LongPollServer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let outlet: Arc<dyn Outlet> = self.outlet.clone();
        Connection::opened(&mut self.connection, ctx.address().recipient(), outlet);
        self.schedule_expiry(self.shared.longpoll.timeout, ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.outlet.with_outbox(|queue| {
            queue.ended = Some(End::Stopping);
            queue.actor = None;
            queue.take();
        });
        Connection::closed(&mut self.connection);
        self.shared.longpoll.servers.remove(self.id);
        if let Some(waiting) = self.waiting.take() {
            let _ = waiting.reply.send(PollOutcome::Gone);
        }
    }
}

impl Handler<Poll> for LongPollServer {
    type Result = ();

    fn handle(&mut self, poll: Poll, ctx: &mut Self::Context) {
        self.last_poll = Instant::now();
        // A newer poll takes over; the older one answers 204 (docs/protocol.md §8.3).
        if let Some(older) = self.waiting.take() {
            let _ = older.reply.send(PollOutcome::NoContent);
        }
        self.polls += 1;
        let id = self.polls;
        self.waiting = Some(Waiting {
            poll: id,
            reply: poll.reply,
        });
        if self.outlet.with_outbox(|queue| !queue.frames.is_empty()) {
            return self.flush();
        }
        ctx.run_later(self.shared.longpoll.window, move |session, _| {
            if session.waiting.as_ref().is_some_and(|w| w.poll == id) {
                if let Some(waiting) = session.waiting.take() {
                    session.last_poll = Instant::now();
                    let _ = waiting.reply.send(PollOutcome::NoContent);
                }
            }
        });
    }
}

impl Handler<Post> for LongPollServer {
    type Result = MessageResult<Post>;

    fn handle(&mut self, post: Post, ctx: &mut Self::Context) -> Self::Result {
        for line in post.lines {
            match line {
                Ok(Line::Text(text)) => self.drive(|session, out| session.text(&text, out)),
                Ok(Line::Binary(bytes)) => self.drive(|session, out| session.binary(bytes, out)),
                Err(error) => {
                    log::warn!("{}: closing long-poll session: {error}", self.peer);
                    self.drive(|_, out| out.close(Close::INVALID_MESSAGE));
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

impl Handler<ChannelReport> for LongPollServer {
    type Result = ();

    fn handle(&mut self, report: ChannelReport, ctx: &mut Self::Context) {
        self.drive(|session, out| session.message(report, out));
        self.after_output(ctx);
    }
}

impl Handler<FramesQueued> for LongPollServer {
    type Result = ();

    fn handle(&mut self, _: FramesQueued, ctx: &mut Self::Context) {
        self.outlet.with_outbox(|queue| queue.notified = false);
        self.after_output(ctx);
    }
}
