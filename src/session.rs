//! The session: one per connection, whatever its transport.
//!
//! Owns the connection's protocol state: the topic → channel table with join refs,
//! heartbeats, routing of client messages to channel instances (holding them while a
//! join or a leave is in progress), and each instance's life on the connection's
//! [`Outlet`]: joining, joined (the reply goes out first), ended. Also the connection's
//! rate limits (each message, and each join, counted against its [`Quota`] before it is
//! routed; past them a message is answered `rate limited`, and a client that goes on far
//! past them is closed) and its warning budget (a client's repeated warnings, such as
//! unmatched topics, are counted rather than written past it). Must not hold application
//! state (channels do), nor stand between a channel or pubsub and the client: their
//! frames go to the outlet directly.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use actix::Recipient;
use serde_json::json;

use crate::channel::{ChannelMsg, ChannelReport, ChannelStart, Reason, INBOUND_LIMIT};
use crate::close::Close;
use crate::logline::{client_text, one_line, warn_limited, LogPeer, Suppressed};
use crate::message::{event, Message, Payload, PhxReply, Push, Ref, Status, PHOENIX_TOPIC};
use crate::outlet::{InstanceId, Outlet};
use crate::pubsub::PubSub;
use crate::rate::{self, Bucket, Quota, Verdict};
use crate::registry::{Connections, Registration};
use crate::router::Router;
use crate::serializer::{EncodeError, Frame, Serializer};
use crate::socket::Assigns;

/// What every session shares: where topics lead, the pubsub its channels use, the
/// registry it joins, and its limits.
pub(crate) struct SessionShared {
    pub router: Router,
    pub pubsub: PubSub,
    pub connections: Connections,
    /// Most channels one connection may have joined at once.
    pub max_channels: usize,
    /// How many messages (all of them, joins and heartbeats included) and how many joins
    /// one connection may send; `None`: no limit.
    pub message_rate: Option<Quota>,
    pub join_rate: Option<Quota>,
}

/// One connection's protocol state.
pub(crate) struct Session {
    shared: Arc<SessionShared>,
    serializer: Serializer,
    assigns: Arc<Assigns>,
    /// The socket id from the application's `Socket::id`, until registered.
    socket_id: Option<Arc<str>>,
    /// Where channels reach this session, and its client; set once the transport runs.
    mailbox: Option<Recipient<ChannelReport>>,
    outlet: Option<Arc<dyn Outlet>>,
    channels: HashMap<Arc<str>, Entry>,
    peer: LogPeer,
    registration: Option<Registration>,
    messages: Bucket,
    joins: Bucket,
}

/// One joined (or joining, or leaving) topic.
struct Entry {
    instance: InstanceId,
    join_ref: Option<Ref>,
    mailbox: Recipient<ChannelMsg>,
    state: EntryState,
}

enum EntryState {
    /// The join reply is not out yet: client messages wait in the backlog (and the
    /// outlet holds what the channel sends).
    Joining(Box<Pending>),
    Joined,
    /// `phx_leave` was sent to the channel; client messages wait until it has ended.
    Leaving(Box<Pending>),
}

#[derive(Default)]
struct Pending {
    join_msg_ref: Option<Ref>,
    backlog: VecDeque<Message>,
}

impl Session {
    pub(crate) fn new(
        shared: Arc<SessionShared>,
        serializer: Serializer,
        assigns: Assigns,
        socket_id: Option<Arc<str>>,
        peer: String,
    ) -> Self {
        Session {
            shared,
            serializer,
            assigns: Arc::new(assigns),
            socket_id,
            mailbox: None,
            outlet: None,
            channels: HashMap::new(),
            peer: LogPeer::new(peer),
            registration: None,
            messages: Bucket::default(),
            joins: Bucket::default(),
        }
    }

    /// The client's address, as in log lines.
    pub fn peer(&self) -> &str {
        self.peer.name()
    }

    pub fn serializer(&self) -> Serializer {
        self.serializer
    }

    /// The transport is up; `mailbox` is where this session's messages arrive, `outlet`
    /// where its client's frames go.
    pub fn opened(&mut self, mailbox: Recipient<ChannelReport>, outlet: Arc<dyn Outlet>) {
        let registration = self
            .shared
            .connections
            .register(self.socket_id.take(), outlet.clone());
        self.registration = Some(registration);
        self.mailbox = Some(mailbox);
        self.outlet = Some(outlet);
    }

    /// A text frame (or long-poll text message) from the client.
    pub fn handle_text(&mut self, text: &str, out: &dyn Outlet) {
        match self.serializer.decode_text(text) {
            Ok(message) => self.handle_admitted(message, out),
            Err(error) => self.protocol_error(error.close(), &error, out),
        }
    }

    /// A binary frame from the client.
    pub fn handle_binary(&mut self, frame: bytes::Bytes, out: &dyn Outlet) {
        match self.serializer.decode_binary(frame) {
            Ok(message) => self.handle_admitted(message, out),
            Err(error) => self.protocol_error(error.close(), &error, out),
        }
    }

    fn protocol_error(&self, close: Close, error: &dyn std::fmt::Display, out: &dyn Outlet) {
        log::warn!("{}: closing with {close}: {}", self.peer, one_line(error));
        out.close(close);
    }

    /// Handles a client message unless the connection's rates refuse it.
    fn handle_admitted(&mut self, message: Message, out: &dyn Outlet) {
        if self.admit(&message, out) {
            self.handle_message(message, out);
        }
    }

    /// Counts a client message against the connection's rates (docs/protocol.md §10.2):
    /// every message against the message rate, a join also against the join rate.
    /// `false` if it is refused: answered `rate limited`, or the connection closed.
    fn admit(&mut self, message: &Message, out: &dyn Outlet) -> bool {
        let now = rate::now();
        if let Some(quota) = self.shared.message_rate {
            let verdict = quota.check(&mut self.messages, now);
            if !self.passed(verdict, quota, "message", message, out) {
                return false;
            }
        }
        match self.shared.join_rate {
            Some(quota) if message.event == event::JOIN => {
                let verdict = quota.check(&mut self.joins, now);
                self.passed(verdict, quota, "join", message, out)
            }
            _ => true,
        }
    }

    /// Acts on a quota's verdict on `message`; `true` if it passed.
    fn passed(
        &self,
        verdict: Verdict,
        quota: Quota,
        what: &str,
        message: &Message,
        out: &dyn Outlet,
    ) -> bool {
        let (burst, per_sec) = (quota.burst(), quota.per_sec());
        match verdict {
            Verdict::Passed => return true,
            Verdict::Limited { first } => {
                if first {
                    warn_limited!(
                        self.peer,
                        "over the {what} rate limit ({burst} at once, {per_sec}/s): \
                         answering \"rate limited\""
                    );
                }
                let reason = Payload::Json(json!({"reason": "rate limited"}));
                self.reply(
                    message.join_ref.as_ref(),
                    message,
                    Status::Error,
                    reason,
                    out,
                );
            }
            Verdict::Exceeded { first: true } => {
                let close = Close::RATE_LIMITED;
                log::warn!(
                    "{}: closing with {close}: {} {what}s refused over the {what} rate limit \
                     ({burst} at once, {per_sec}/s)",
                    self.peer,
                    quota.close_after()
                );
                out.close(close);
            }
            // Closed already; what was still on its way is dropped.
            Verdict::Exceeded { first: false } => {}
        }
        false
    }

    /// Routes one decoded client message (docs/protocol.md §5.2).
    fn handle_message(&mut self, message: Message, out: &dyn Outlet) {
        if message.topic == PHOENIX_TOPIC && message.event == event::HEARTBEAT {
            let reply = PhxReply {
                join_ref: None,
                msg_ref: message.msg_ref.as_ref(),
                topic: PHOENIX_TOPIC,
                status: Status::Ok,
                response: &Payload::empty(),
            };
            return write(&self.peer, self.serializer.encode_reply(&reply), out);
        }
        let Some(entry) = self.channels.get_mut(message.topic.as_str()) else {
            return self.handle_unjoined(message, out);
        };
        match &mut entry.state {
            EntryState::Joining(pending) | EntryState::Leaving(pending) => {
                if pending.backlog.len() >= INBOUND_LIMIT {
                    return self.overloaded(out);
                }
                pending.backlog.push_back(message);
            }
            EntryState::Joined => {
                if message.event == event::JOIN {
                    self.replace_duplicate(&message.topic, out);
                    return self.join(message, out);
                }
                if message
                    .join_ref
                    .as_ref()
                    .is_some_and(|r| Some(r) != entry.join_ref.as_ref())
                {
                    log::debug!(
                        "{}: dropping {} on {} with stale join_ref {}",
                        self.peer,
                        client_text(&message.event),
                        client_text(&message.topic),
                        client_text(&message.join_ref.as_ref().map_or("".into(), Ref::as_text))
                    );
                    return;
                }
                let to_channel = if message.event == event::LEAVE {
                    entry.state = EntryState::Leaving(Box::default());
                    ChannelMsg::Leave {
                        msg_ref: message.msg_ref,
                    }
                } else {
                    ChannelMsg::In {
                        event: message.event,
                        msg_ref: message.msg_ref,
                        payload: message.payload,
                    }
                };
                if entry.mailbox.try_send(to_channel).is_err() {
                    self.overloaded(out);
                }
            }
        }
    }

    fn handle_unjoined(&mut self, message: Message, out: &dyn Outlet) {
        match message.event.as_str() {
            event::JOIN => self.join(message, out),
            // Leaving what is not joined succeeds quietly, as in Phoenix.
            event::LEAVE => self.reply(
                message.join_ref.as_ref(),
                &message,
                Status::Ok,
                Payload::empty(),
                out,
            ),
            _ => self.reply_unmatched(&message, out),
        }
    }

    fn reply_unmatched(&self, message: &Message, out: &dyn Outlet) {
        warn_limited!(
            self.peer,
            "{} on unmatched topic {}",
            client_text(&message.event),
            client_text(&message.topic)
        );
        let reason = Payload::Json(json!({"reason": "unmatched topic"}));
        self.reply(None, message, Status::Error, reason, out);
    }

    fn reply(
        &self,
        join_ref: Option<&Ref>,
        message: &Message,
        status: Status,
        response: Payload,
        out: &dyn Outlet,
    ) {
        let reply = PhxReply {
            join_ref,
            msg_ref: message.msg_ref.as_ref(),
            topic: &message.topic,
            status,
            response: &response,
        };
        write(&self.peer, self.serializer.encode_reply(&reply), out);
    }

    /// Starts a channel instance for a `phx_join` (docs/protocol.md §5.1).
    fn join(&mut self, mut message: Message, out: &dyn Outlet) {
        let Some(factory) = self.shared.router.route(&message.topic) else {
            return self.reply_unmatched(&message, out);
        };
        let join_ref = message.join_ref.clone().or_else(|| message.msg_ref.clone());
        let refuse = |session: &Self, message: &Message, reason: &str, out: &dyn Outlet| {
            let reason = Payload::Json(json!({ "reason": reason }));
            session.reply(join_ref.as_ref(), message, Status::Error, reason, out);
        };
        if self.channels.len() >= self.shared.max_channels {
            return refuse(self, &message, "too many channels joined", out);
        }
        // The params move to the channel; the rest of the message still answers.
        let Payload::Json(serde_json::Value::Object(params)) =
            std::mem::replace(&mut message.payload, Payload::empty())
        else {
            return refuse(self, &message, "invalid payload", out);
        };
        let (Some(mailbox), Some(outlet)) = (self.mailbox.clone(), self.outlet.clone()) else {
            return;
        };
        let topic: Arc<str> = message.topic.as_str().into();
        let instance = InstanceId::next();
        let start = ChannelStart {
            topic: topic.clone(),
            join_ref: join_ref.clone(),
            instance,
            assigns: self.assigns.clone(),
            session: mailbox,
            outlet,
            pubsub: self.shared.pubsub.clone(),
            params,
        };
        // Before the channel runs, so that nothing it sends can precede the reply.
        out.joining(instance);
        let Some(started) = factory.start(start) else {
            out.ended(instance, None);
            return refuse(self, &message, "join crashed", out);
        };
        let pending = Pending {
            join_msg_ref: message.msg_ref,
            ..Pending::default()
        };
        self.channels.insert(
            topic,
            Entry {
                instance,
                join_ref,
                mailbox: started.mailbox,
                state: EntryState::Joining(Box::new(pending)),
            },
        );
    }

    /// A second join of a joined topic ends the old instance first (docs/protocol.md §5.7).
    fn replace_duplicate(&mut self, topic: &str, out: &dyn Outlet) {
        if let Some(old) = self.channels.remove(topic) {
            old.mailbox
                .do_send(ChannelMsg::Close(Reason::DuplicateJoin));
            let close = self.close_frame(topic, old.join_ref.as_ref(), false);
            out.ended(old.instance, close);
        }
    }

    fn overloaded(&self, out: &dyn Outlet) {
        let close = Close::INBOUND_FULL;
        log::warn!(
            "{}: closing with {close}: more than {INBOUND_LIMIT} messages waiting for one channel",
            self.peer
        );
        out.close(close);
    }

    /// A report from one of this session's channels.
    pub fn handle_report(&mut self, report: ChannelReport, out: &dyn Outlet) {
        match report {
            ChannelReport::Joined {
                instance,
                topic,
                outcome,
            } => self.joined(instance, &topic, outcome, out),
            ChannelReport::Ended {
                instance,
                topic,
                crashed,
            } => {
                if live_entry(&mut self.channels, instance, &topic).is_some() {
                    let entry = self.channels.remove(&*topic).expect("entry just found");
                    let close = self.close_frame(&topic, entry.join_ref.as_ref(), crashed);
                    out.ended(instance, close);
                    if let EntryState::Leaving(pending) | EntryState::Joining(pending) = entry.state
                    {
                        self.replay(pending.backlog, out);
                    }
                }
            }
        }
    }

    fn joined(
        &mut self,
        instance: InstanceId,
        topic: &str,
        outcome: Result<Payload, Payload>,
        out: &dyn Outlet,
    ) {
        let Some(entry) = live_entry(&mut self.channels, instance, topic) else {
            return;
        };
        let EntryState::Joining(pending) = std::mem::replace(&mut entry.state, EntryState::Joined)
        else {
            return;
        };
        let (status, response) = match &outcome {
            Ok(response) => (Status::Ok, response),
            Err(reason) => (Status::Error, reason),
        };
        let reply = PhxReply {
            join_ref: entry.join_ref.as_ref(),
            msg_ref: pending.join_msg_ref.as_ref(),
            topic,
            status,
            response,
        };
        let reply = encoded(&self.peer, self.serializer.encode_reply(&reply));
        if outcome.is_err() {
            self.channels.remove(topic);
            out.ended(instance, reply);
        } else if let Some(reply) = reply {
            out.joined(instance, reply);
        }
        self.replay(pending.backlog, out);
    }

    /// Handles client messages that waited for a join or a leave, in arrival order.
    fn replay(&mut self, backlog: VecDeque<Message>, out: &dyn Outlet) {
        for message in backlog {
            self.handle_message(message, out);
        }
    }

    /// `phx_close`, or `phx_error` for a crash, for the instance joined with `join_ref`.
    fn close_frame(&self, topic: &str, join_ref: Option<&Ref>, crashed: bool) -> Option<Frame> {
        let (event, payload) = if crashed {
            (
                event::ERROR,
                Payload::Json(json!({"reason": "channel_crash"})),
            )
        } else {
            (event::CLOSE, Payload::empty())
        };
        let push = Push {
            join_ref,
            msg_ref: join_ref,
            topic,
            event,
            payload: &payload,
        };
        encoded(&self.peer, self.serializer.encode_push(&push))
    }

    /// The connection is gone: every channel ends with reason "closed" (docs/protocol.md §5.8).
    pub fn closed(&mut self) {
        if let Some(suppressed) = self.peer.take_suppressed() {
            log::warn!("{}", Suppressed(&self.peer, suppressed));
        }
        self.registration = None;
        for (_, entry) in self.channels.drain() {
            entry.mailbox.do_send(ChannelMsg::Close(Reason::Closed));
        }
    }
}

/// The entry of `topic` if it still belongs to `instance` (an older instance's messages
/// arrive late after a leave or a duplicate join, and are dropped).
fn live_entry<'a>(
    channels: &'a mut HashMap<Arc<str>, Entry>,
    instance: InstanceId,
    topic: &str,
) -> Option<&'a mut Entry> {
    channels
        .get_mut(topic)
        .filter(|entry| entry.instance == instance)
}

/// Sends an encoded frame, or logs why it could not be encoded.
fn write(peer: &LogPeer, frame: Result<Frame, EncodeError>, out: &dyn Outlet) {
    if let Some(frame) = encoded(peer, frame) {
        out.send(frame);
    }
}

/// The encoded frame, or `None` with a log line saying why it could not be encoded.
fn encoded(peer: &LogPeer, frame: Result<Frame, EncodeError>) -> Option<Frame> {
    frame
        .map_err(|error| warn_limited!(peer, "message not sent: {error}"))
        .ok()
}

#[cfg(test)]
mod tests {
    use actix::{Actor, Context, Handler};
    use serde_json::Value;
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

    use super::*;
    use crate::channel::{ChannelFactory, StartedChannel};
    use crate::outlet::testing::{Out, RecordedOutlet};

    /// A channel instance that reports every message the session sends it.
    struct RecordedChannel {
        topic: Arc<str>,
        log: UnboundedSender<String>,
    }

    impl Actor for RecordedChannel {
        type Context = Context<Self>;
    }

    impl Handler<ChannelMsg> for RecordedChannel {
        type Result = ();
        fn handle(&mut self, msg: ChannelMsg, _: &mut Context<Self>) {
            let line = match msg {
                ChannelMsg::Join(params) => format!("join {} {}", self.topic, Value::from(params)),
                ChannelMsg::In { event, .. } => format!("in {} {event}", self.topic),
                ChannelMsg::Leave { .. } => format!("leave {}", self.topic),
                ChannelMsg::Close(reason) => format!("close {} {reason:?}", self.topic),
            };
            let _ = self.log.send(line);
        }
    }

    /// Starts [`RecordedChannel`]s, sending each its join as the real factory does.
    struct RecordedFactory {
        log: UnboundedSender<String>,
        started: UnboundedSender<InstanceId>,
    }

    impl ChannelFactory for RecordedFactory {
        fn start(&self, start: ChannelStart) -> Option<StartedChannel> {
            let channel = RecordedChannel {
                topic: start.topic.clone(),
                log: self.log.clone(),
            }
            .start();
            channel.do_send(ChannelMsg::Join(start.params));
            let _ = self.started.send(start.instance);
            Some(StartedChannel {
                mailbox: channel.recipient(),
            })
        }
    }

    /// Stands for the transport's mailbox; the tests hand reports to the session.
    struct NoReports;

    impl Actor for NoReports {
        type Context = Context<Self>;
    }

    impl Handler<ChannelReport> for NoReports {
        type Result = ();
        fn handle(&mut self, _: ChannelReport, _: &mut Context<Self>) {}
    }

    struct Fixture {
        session: Session,
        out: Arc<RecordedOutlet>,
        channels: UnboundedReceiver<String>,
        started: UnboundedReceiver<InstanceId>,
        connections: Connections,
    }

    fn fixture(max_channels: usize) -> Fixture {
        fixture_with(max_channels, None, None)
    }

    fn fixture_with(
        max_channels: usize,
        message_rate: Option<Quota>,
        join_rate: Option<Quota>,
    ) -> Fixture {
        let (log, channels) = unbounded_channel();
        let (started_tx, started) = unbounded_channel();
        let factory = RecordedFactory {
            log,
            started: started_tx,
        };
        let connections = Connections::default();
        let shared = Arc::new(SessionShared {
            router: Router::new().factory("room:*", factory),
            pubsub: PubSub::new(),
            connections: connections.clone(),
            max_channels,
            message_rate,
            join_rate,
        });
        let assigns = Assigns::new().with("user", "alice");
        let mut session = Session::new(
            shared,
            Serializer::V2,
            assigns,
            Some("alice".into()),
            "peer".into(),
        );
        let out = Arc::new(RecordedOutlet::new(Serializer::V2));
        session.opened(NoReports.start().recipient(), out.clone());
        Fixture {
            session,
            out,
            channels,
            started,
            connections,
        }
    }

    impl Fixture {
        fn text(&mut self, message: Value) {
            let out = self.out.clone();
            self.session.handle_text(&message.to_string(), &*out);
        }

        fn report(&mut self, report: ChannelReport) {
            let out = self.out.clone();
            self.session.handle_report(report, &*out);
        }

        async fn join(&mut self, topic: &str, join_ref: &str) -> InstanceId {
            self.text(json!([join_ref, join_ref, topic, "phx_join", {"n": 1}]));
            let instance = self.started.recv().await.expect("a channel started");
            assert_eq!(self.out.take(), [Out::Joining(instance)]);
            assert_eq!(
                self.channels.recv().await.unwrap(),
                format!("join {topic} {{\"n\":1}}")
            );
            instance
        }

        fn joined(&mut self, instance: InstanceId, topic: &str) {
            self.report(ChannelReport::Joined {
                instance,
                topic: topic.into(),
                outcome: Ok(Payload::Json(json!({"hi": 1}))),
            });
        }
    }

    fn reply(join_ref: Value, msg_ref: &str, topic: &str, status: &str, response: Value) -> Value {
        json!([join_ref, msg_ref, topic, "phx_reply", {"status": status, "response": response}])
    }

    #[actix::test]
    async fn a_heartbeat_is_answered_by_the_session_itself() {
        let mut f = fixture(10);
        f.text(json!([null, "7", "phoenix", "heartbeat", {}]));
        assert_eq!(
            f.out.take(),
            [Out::Send(reply(
                Value::Null,
                "7",
                "phoenix",
                "ok",
                json!({})
            ))]
        );
        assert_eq!(f.connections.len(), 1, "registered once opened");
        f.session.closed();
        assert_eq!(f.connections.len(), 0, "unregistered once closed");
    }

    #[actix::test]
    async fn messages_wait_for_the_join_reply_then_reach_the_channel() {
        let mut f = fixture(10);
        let a = f.join("room:a", "1").await;
        f.text(json!(["1", "2", "room:a", "early", {}]));
        assert!(f.channels.try_recv().is_err(), "held while joining");
        f.joined(a, "room:a");
        let ok = reply(json!("1"), "1", "room:a", "ok", json!({"hi": 1}));
        assert_eq!(f.out.take(), [Out::Joined(a, ok)]);
        assert_eq!(f.channels.recv().await.unwrap(), "in room:a early");
        f.text(json!(["1", "3", "room:a", "later", {}]));
        assert_eq!(f.channels.recv().await.unwrap(), "in room:a later");
        f.text(json!(["0", "4", "room:a", "stale", {}]));
        f.text(json!(["1", "5", "room:a", "fresh", {}]));
        assert_eq!(
            f.channels.recv().await.unwrap(),
            "in room:a fresh",
            "a message with another join_ref is dropped"
        );
    }

    #[actix::test]
    async fn a_refused_join_ends_the_instance_and_frees_the_topic() {
        let mut f = fixture(10);
        let a = f.join("room:a", "1").await;
        f.text(json!(["1", "2", "room:a", "early", {}]));
        f.report(ChannelReport::Joined {
            instance: a,
            topic: "room:a".into(),
            outcome: Err(Payload::Json(json!({"reason": "no"}))),
        });
        let refusal = reply(json!("1"), "1", "room:a", "error", json!({"reason": "no"}));
        // The message that waited is answered as for any topic not joined.
        let unmatched = reply(
            Value::Null,
            "2",
            "room:a",
            "error",
            json!({"reason": "unmatched topic"}),
        );
        assert_eq!(
            f.out.take(),
            [Out::Ended(a, Some(refusal)), Out::Send(unmatched)]
        );
        assert!(f.channels.try_recv().is_err());
    }

    #[actix::test]
    async fn a_leave_waits_for_the_channel_to_end_then_closes() {
        let mut f = fixture(10);
        let a = f.join("room:a", "1").await;
        f.joined(a, "room:a");
        f.out.take();
        f.text(json!(["1", "2", "room:a", "phx_leave", {}]));
        assert_eq!(f.channels.recv().await.unwrap(), "leave room:a");
        f.text(json!(["1", "3", "room:a", "after", {}]));
        f.report(ChannelReport::Ended {
            instance: a,
            topic: "room:a".into(),
            crashed: false,
        });
        let close = json!(["1", "1", "room:a", "phx_close", {}]);
        let unmatched = reply(
            Value::Null,
            "3",
            "room:a",
            "error",
            json!({"reason": "unmatched topic"}),
        );
        assert_eq!(
            f.out.take(),
            [Out::Ended(a, Some(close)), Out::Send(unmatched)]
        );
        // A late report of the ended instance changes nothing.
        f.report(ChannelReport::Ended {
            instance: a,
            topic: "room:a".into(),
            crashed: true,
        });
        assert_eq!(f.out.take(), []);
    }

    #[actix::test]
    async fn a_crash_is_reported_with_phx_error() {
        let mut f = fixture(10);
        let a = f.join("room:a", "1").await;
        f.joined(a, "room:a");
        f.out.take();
        f.report(ChannelReport::Ended {
            instance: a,
            topic: "room:a".into(),
            crashed: true,
        });
        let error = json!(["1", "1", "room:a", "phx_error", {"reason": "channel_crash"}]);
        assert_eq!(f.out.take(), [Out::Ended(a, Some(error))]);
    }

    #[actix::test]
    async fn a_second_join_replaces_the_first_instance() {
        let mut f = fixture(10);
        let a = f.join("room:a", "1").await;
        f.joined(a, "room:a");
        f.out.take();
        f.text(json!(["5", "5", "room:a", "phx_join", {"n": 1}]));
        let b = f.started.recv().await.unwrap();
        assert_eq!(
            f.channels.recv().await.unwrap(),
            "close room:a DuplicateJoin"
        );
        let close = json!(["1", "1", "room:a", "phx_close", {}]);
        assert_eq!(f.out.take(), [Out::Ended(a, Some(close)), Out::Joining(b)]);
        // The old instance's late join report is ignored.
        f.joined(a, "room:a");
        assert_eq!(f.out.take(), []);
    }

    #[actix::test]
    async fn joins_past_the_channel_limit_and_unrouted_topics_are_refused() {
        let mut f = fixture(1);
        f.join("room:a", "1").await;
        f.text(json!(["2", "2", "room:b", "phx_join", {}]));
        let too_many = reply(
            json!("2"),
            "2",
            "room:b",
            "error",
            json!({"reason": "too many channels joined"}),
        );
        assert_eq!(f.out.take(), [Out::Send(too_many)]);
        f.text(json!(["3", "3", "lobby", "phx_join", {}]));
        let unmatched = reply(
            Value::Null,
            "3",
            "lobby",
            "error",
            json!({"reason": "unmatched topic"}),
        );
        assert_eq!(f.out.take(), [Out::Send(unmatched)]);
        assert!(f.started.try_recv().is_err());
    }

    /// A quota that refills once an hour: nothing refills during a test.
    fn hourly(burst: u32) -> Option<Quota> {
        Some(Quota::every(burst, std::time::Duration::from_secs(3600)))
    }

    fn rate_limited(join_ref: Value, msg_ref: &str, topic: &str) -> Out {
        Out::Send(reply(
            join_ref,
            msg_ref,
            topic,
            "error",
            json!({"reason": "rate limited"}),
        ))
    }

    #[actix::test]
    async fn messages_past_the_rate_are_refused_and_a_flood_is_closed() {
        let mut f = fixture_with(10, hourly(3), None);
        let a = f.join("room:a", "1").await;
        f.joined(a, "room:a");
        f.out.take();
        // The join took one of the 3; a heartbeat and a push take the rest.
        f.text(json!([null, "2", "phoenix", "heartbeat", {}]));
        f.text(json!(["1", "3", "room:a", "hi", {}]));
        assert_eq!(f.channels.recv().await.unwrap(), "in room:a hi");
        f.out.take();
        f.text(json!(["1", "4", "room:a", "hi", {}]));
        f.text(json!([null, "5", "phoenix", "heartbeat", {}]));
        f.text(json!(["2", "6", "room:b", "phx_join", {}]));
        assert_eq!(
            f.out.take(),
            [
                rate_limited(json!("1"), "4", "room:a"),
                rate_limited(Value::Null, "5", "phoenix"),
                rate_limited(json!("2"), "6", "room:b"),
            ]
        );
        assert!(
            f.channels.try_recv().is_err(),
            "refused messages go nowhere"
        );
        assert!(f.started.try_recv().is_err(), "nor do refused joins");
        // 10 bursts' worth refused (30): the 30th closes, later ones are dropped.
        for n in 7..34 {
            f.text(json!(["1", n.to_string(), "room:a", "hi", {}]));
        }
        let mut calls = f.out.take();
        assert_eq!(calls.pop(), Some(Out::Close(Close::RATE_LIMITED)));
        assert_eq!(calls.len(), 26, "refused 4 to 29 answered, the 30th closes");
        f.text(json!(["1", "99", "room:a", "hi", {}]));
        assert_eq!(f.out.take(), []);
    }

    #[actix::test]
    async fn joins_past_the_join_rate_are_refused() {
        let mut f = fixture_with(10, None, hourly(1));
        f.join("room:a", "1").await;
        f.text(json!(["2", "2", "room:b", "phx_join", {}]));
        assert_eq!(f.out.take(), [rate_limited(json!("2"), "2", "room:b")]);
        assert!(f.started.try_recv().is_err());
        // Other messages are not joins: they pass.
        f.text(json!([null, "3", "phoenix", "heartbeat", {}]));
        assert_eq!(
            f.out.take(),
            [Out::Send(reply(
                Value::Null,
                "3",
                "phoenix",
                "ok",
                json!({})
            ))]
        );
    }

    #[actix::test]
    async fn messages_that_waited_for_a_join_are_not_counted_twice() {
        // Join, one message held behind it, then the join reply: 2 messages of 2.
        let mut f = fixture_with(10, hourly(2), None);
        let a = f.join("room:a", "1").await;
        f.text(json!(["1", "2", "room:a", "early", {}]));
        f.joined(a, "room:a");
        assert_eq!(f.channels.recv().await.unwrap(), "in room:a early");
        f.out.take();
        f.text(json!(["1", "3", "room:a", "late", {}]));
        assert_eq!(f.out.take(), [rate_limited(json!("1"), "3", "room:a")]);
    }

    #[actix::test]
    async fn an_undecodable_message_closes_the_connection() {
        let mut f = fixture(10);
        let out = f.out.clone();
        f.session.handle_text("{not json", &*out);
        assert_eq!(f.out.take(), [Out::Close(Close::INVALID_MESSAGE)]);
    }
}
