//! Channels: the application's per-topic code, each joined topic running as its own actor.
//!
//! Owns the [`Channel`] trait (join / handle_in / handle_info / terminate / handle_out),
//! the [`ChannelContext`] handed to it, and the actor that runs one instance: it calls
//! the application with panics caught, subscribes the instance to its topic, sends
//! replies and pushes to the connection's [`Outlet`] (which holds them until the join
//! reply is out) and reports the join's outcome and its end to its session. Must not
//! write to the socket, nor decide when a frame may reach the client: the outlet does.

use std::any::Any;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Recipient, WeakRecipient,
    WrapFuture,
};
use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::message::{Payload, Ref, Status};
use crate::outlet::{Outlet, Sender};
use crate::presence::{Presence, Tracked};
use crate::pubsub::{BroadcastFrame, Intercept, PubSub, Subscriber};
use crate::session::SessionMsg;
use crate::socket::Assigns;

/// Most client messages one channel instance may have waiting; past it the connection is
/// closed (1008) rather than buffering without bound.
pub(crate) const INBOUND_LIMIT: usize = 1024;

/// Identifies one channel instance (one join of one topic on one connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(u64);

impl InstanceId {
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        InstanceId(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

/// A join object: the payload of `phx_join`.
pub type JoinParams = Map<String, Value>;

/// A future that produces a [`Reply`]; runs on the channel's own thread.
pub type ReplyFuture = Pin<Box<dyn Future<Output = Reply>>>;

/// What a channel answers to a join or a client message.
pub enum Reply {
    /// `phx_reply` with status `ok`. For a join: accepted, with this response.
    Ok(Payload),
    /// `phx_reply` with status `error`. For a join: refused, with this reason.
    Error(Payload),
    /// No reply (the client's push times out). For a join: accepted with `{}`.
    NoReply,
    /// The answer comes later. The channel handles nothing else meanwhile, as Phoenix's
    /// channel process would while it waits.
    Later(ReplyFuture),
}

impl Reply {
    pub fn ok(response: impl Into<Payload>) -> Self {
        Reply::Ok(response.into())
    }

    /// `ok` with an empty object.
    pub fn ok_empty() -> Self {
        Reply::Ok(Payload::empty())
    }

    pub fn error(response: impl Into<Payload>) -> Self {
        Reply::Error(response.into())
    }

    /// `error {"reason": reason}`, the conventional refusal.
    pub fn reason(reason: &str) -> Self {
        Reply::Error(Payload::Json(json!({ "reason": reason })))
    }

    pub fn later(future: impl Future<Output = Reply> + 'static) -> Self {
        Reply::Later(Box::pin(future))
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Self {
        Payload::Binary(bytes)
    }
}

/// Why a channel instance ends; given to [`Channel::terminate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The client sent `phx_leave`.
    Left,
    /// The connection ended (close, error, idle timeout, shutdown).
    Closed,
    /// The client joined the same topic again; this instance is replaced.
    DuplicateJoin,
    /// The channel asked to stop ([`ChannelContext::stop`]).
    Stopped,
    /// The channel's own code panicked.
    Crashed,
}

/// The application's code for one topic pattern. One value per joined instance.
///
/// Every method runs on the channel's actor, one at a time, with panics caught: a panic
/// in `join` refuses the join (`join crashed`), anywhere else it ends this instance with
/// `phx_error` while the connection and its other channels live on.
pub trait Channel: Sized + Unpin + 'static {
    /// Accept (`Ok`, `NoReply`) or refuse (`Error`) a join.
    fn join(&mut self, params: &JoinParams, ctx: &mut ChannelContext<'_, Self>) -> Reply;

    /// A client message on this topic.
    fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext<'_, Self>,
    ) -> Reply {
        let _ = (event, payload, ctx);
        Reply::reason("unknown event")
    }

    /// A message sent to this instance through its [`ChannelRef`].
    fn handle_info(&mut self, message: Box<dyn Any + Send>, ctx: &mut ChannelContext<'_, Self>) {
        let _ = (message, ctx);
    }

    /// The instance ends, for any reason; presence and subscriptions are cleaned up by
    /// the framework after this returns.
    fn terminate(&mut self, reason: Reason, ctx: &mut ChannelContext<'_, Self>) {
        let _ = (reason, ctx);
    }

    /// Broadcast events this channel wants to see before they reach its client; they
    /// go through [`Channel::handle_out`] instead of the shared pre-encoded frame.
    fn intercepts(&self) -> &'static [&'static str] {
        &[]
    }

    /// An intercepted broadcast: by default it is pushed to the client unchanged.
    fn handle_out(&mut self, event: &str, payload: &Payload, ctx: &mut ChannelContext<'_, Self>) {
        ctx.push(event, payload.clone());
    }
}

/// What a channel's code may do: read who and where it is, and talk to its client and
/// its topic.
pub struct ChannelContext<'a, C: Channel> {
    core: &'a mut ChannelCore,
    actor: &'a mut Context<ChannelActor<C>>,
}

impl<C: Channel> ChannelContext<'_, C> {
    pub fn topic(&self) -> &str {
        &self.core.topic
    }

    pub fn join_ref(&self) -> Option<&Ref> {
        self.core.join_ref.as_ref()
    }

    pub fn instance(&self) -> InstanceId {
        self.core.instance
    }

    /// What the socket's `connect` attached to this connection.
    pub fn assigns(&self) -> &Assigns {
        &self.core.assigns
    }

    pub fn pubsub(&self) -> &PubSub {
        &self.core.pubsub
    }

    /// Sends `event` to this instance's client only.
    pub fn push(&self, event: &str, payload: impl Into<Payload>) {
        self.core
            .outlet
            .push(&self.core.sender(), event, &payload.into());
    }

    /// A handle that pushes to this instance's client from anywhere (a store, a
    /// future). Pushes sent before the join reply are held and follow it.
    pub fn pusher(&self) -> Pusher {
        self.core.pusher()
    }

    /// Sends `event` to every subscriber of this topic, this client included.
    pub fn broadcast(&self, event: &str, payload: impl Into<Payload>) {
        self.core
            .pubsub
            .broadcast(&self.core.topic, event, payload.into());
    }

    /// Sends `event` to every subscriber of this topic except this instance.
    pub fn broadcast_from(&self, event: &str, payload: impl Into<Payload>) {
        self.core.pubsub.broadcast_from(
            self.core.instance,
            &self.core.topic,
            event,
            payload.into(),
        );
    }

    /// Ends this instance after the current call returns (and its reply is sent); the
    /// client gets `phx_close` and does not rejoin.
    pub fn stop(&mut self) {
        self.core.stop_requested = true;
    }

    /// A handle for sending this instance messages later ([`Channel::handle_info`]).
    pub fn handle(&self) -> ChannelRef {
        ChannelRef(self.actor.address().recipient())
    }

    /// Takes over the moment this instance subscribes to its topic. By default the
    /// framework subscribes as soon as `join` returns; a channel that must subscribe
    /// atomically with reading some state (e.g. inside a store's update, so that no
    /// message falls between its history and its subscription) takes the subscription
    /// here and activates it there. `None` if already taken.
    pub fn take_subscription(&mut self) -> Option<Subscription> {
        if self.core.subscription != SubscriptionState::Framework {
            return None;
        }
        self.core.subscription = SubscriptionState::Channel;
        Some(self.core.subscription())
    }

    /// Tracks this instance's presence on its topic under `key` with `meta`, once the
    /// join is accepted: the client gets `presence_state`, every member a
    /// `presence_diff`. Untracked when the instance ends.
    pub fn track(&mut self, presence: &Presence, key: &str, meta: Map<String, Value>) {
        self.core.tracks.push(Tracked::new(presence, key, meta));
    }
}

/// Sends [`Channel::handle_info`] messages to one channel instance.
#[derive(Clone)]
pub struct ChannelRef(Recipient<Info>);

impl ChannelRef {
    /// Delivers `message` unless the instance has ended.
    pub fn send(&self, message: impl Any + Send) -> bool {
        let alive = self.0.connected();
        self.0.do_send(Info(Box::new(message)));
        alive
    }
}

/// Pushes to one channel instance's client; see [`ChannelContext::pusher`].
#[derive(Clone)]
pub struct Pusher {
    outlet: Arc<dyn Outlet>,
    topic: Arc<str>,
    instance: InstanceId,
    join_ref: Option<Ref>,
}

impl Pusher {
    pub fn push(&self, event: &str, payload: impl Into<Payload>) {
        let from = Sender {
            instance: self.instance,
            topic: &self.topic,
            join_ref: self.join_ref.as_ref(),
        };
        self.outlet.push(&from, event, &payload.into());
    }
}

/// A pending subscription of one instance to its topic; see
/// [`ChannelContext::take_subscription`].
pub struct Subscription {
    pubsub: PubSub,
    topic: Arc<str>,
    instance: InstanceId,
    subscriber: Subscriber,
}

impl Subscription {
    pub fn activate(self) {
        self.pubsub
            .subscribe(&self.topic, self.instance, self.subscriber);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SubscriptionState {
    /// The framework subscribes when `join` returns.
    Framework,
    /// The channel took the subscription and activates it itself.
    Channel,
}

/// Everything a channel instance knows besides the application's own value.
pub(crate) struct ChannelCore {
    topic: Arc<str>,
    join_ref: Option<Ref>,
    instance: InstanceId,
    assigns: Arc<Assigns>,
    session: Recipient<SessionMsg>,
    outlet: Arc<dyn Outlet>,
    pubsub: PubSub,
    /// The events this channel intercepts, with its own address for them (weak: an
    /// actor holding its own address would never see its last one dropped).
    intercepts: Option<(&'static [&'static str], WeakRecipient<ChannelMsg>)>,
    subscription: SubscriptionState,
    tracks: Vec<Tracked>,
    joined: bool,
    stop_requested: bool,
    finished: bool,
}

impl ChannelCore {
    fn sender(&self) -> Sender<'_> {
        Sender {
            instance: self.instance,
            topic: &self.topic,
            join_ref: self.join_ref.as_ref(),
        }
    }

    fn pusher(&self) -> Pusher {
        Pusher {
            outlet: self.outlet.clone(),
            topic: self.topic.clone(),
            instance: self.instance,
            join_ref: self.join_ref.clone(),
        }
    }

    fn subscription(&self) -> Subscription {
        let intercept = self.intercepts.as_ref().map(|(events, channel)| {
            Box::new(Intercept {
                events,
                channel: channel.clone(),
            })
        });
        Subscription {
            pubsub: self.pubsub.clone(),
            topic: self.topic.clone(),
            instance: self.instance,
            subscriber: Subscriber {
                outlet: self.outlet.clone(),
                intercept,
            },
        }
    }
}

/// What the session gives a channel factory to start an instance.
pub(crate) struct ChannelStart {
    pub topic: Arc<str>,
    pub join_ref: Option<Ref>,
    pub instance: InstanceId,
    pub assigns: Arc<Assigns>,
    pub session: Recipient<SessionMsg>,
    pub outlet: Arc<dyn Outlet>,
    pub pubsub: PubSub,
    pub params: JoinParams,
}

/// A started instance, as the session keeps it.
pub(crate) struct StartedChannel {
    pub mailbox: Recipient<ChannelMsg>,
}

/// Messages from the session to a channel instance.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(crate) enum ChannelMsg {
    Join(JoinParams),
    In {
        event: String,
        msg_ref: Option<Ref>,
        payload: Payload,
    },
    Leave {
        msg_ref: Option<Ref>,
    },
    /// An intercepted broadcast.
    Out(Arc<BroadcastFrame>),
    /// End now, without telling the client (the session already did, or cannot).
    Close(Reason),
}

/// A message for [`Channel::handle_info`].
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Info(Box<dyn Any + Send>);

/// Starts instances of one channel type; the router holds one per topic pattern.
pub(crate) trait ChannelFactory: Send + Sync {
    /// Starts an instance on the current thread and sends it the join. `None` if the
    /// application's constructor panicked.
    fn start(&self, start: ChannelStart) -> Option<StartedChannel>;
}

/// A [`ChannelFactory`] from a constructor closure taking the topic.
pub(crate) struct FactoryFn<F>(pub F);

impl<C, F> ChannelFactory for FactoryFn<F>
where
    C: Channel,
    F: Fn(&str) -> C + Send + Sync,
{
    fn start(&self, start: ChannelStart) -> Option<StartedChannel> {
        let channel = catch_panic(|| (self.0)(&start.topic))
            .map_err(|message| {
                log::error!("channel {}: constructor panicked: {message}", start.topic)
            })
            .ok()?;
        let addr = ChannelActor::create(|ctx| {
            let intercepts = match channel.intercepts() {
                [] => None,
                events => Some((events, ctx.address().recipient().downgrade())),
            };
            let core = ChannelCore {
                topic: start.topic,
                join_ref: start.join_ref,
                instance: start.instance,
                assigns: start.assigns,
                session: start.session,
                outlet: start.outlet,
                pubsub: start.pubsub,
                intercepts,
                subscription: SubscriptionState::Framework,
                tracks: Vec::new(),
                joined: false,
                stop_requested: false,
                finished: false,
            };
            ChannelActor { channel, core }
        });
        addr.do_send(ChannelMsg::Join(start.params));
        Some(StartedChannel {
            mailbox: addr.recipient(),
        })
    }
}

/// The actor running one channel instance.
pub(crate) struct ChannelActor<C: Channel> {
    channel: C,
    core: ChannelCore,
}

impl<C: Channel> Actor for ChannelActor<C> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(INBOUND_LIMIT);
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        // Every address dropped without a Close (the session vanished): still clean up.
        self.finish(Reason::Closed, false, ctx);
    }
}

impl<C: Channel> Handler<ChannelMsg> for ChannelActor<C> {
    type Result = ();

    fn handle(&mut self, msg: ChannelMsg, ctx: &mut Context<Self>) {
        if self.core.finished {
            return;
        }
        match msg {
            ChannelMsg::Join(params) => {
                let reply = self.call(ctx, |channel, cx| channel.join(&params, cx));
                self.settle_join(reply, ctx);
            }
            ChannelMsg::In {
                event,
                msg_ref,
                payload,
            } => {
                let reply = self.call(ctx, |channel, cx| channel.handle_in(&event, payload, cx));
                self.settle_reply(msg_ref, reply, ctx);
            }
            ChannelMsg::Leave { msg_ref } => {
                self.send_reply(msg_ref, Status::Ok, Payload::empty());
                self.finish(Reason::Left, true, ctx);
            }
            ChannelMsg::Out(frame) => {
                let outcome = self.call(ctx, |channel, cx| {
                    channel.handle_out(frame.event(), frame.payload(), cx)
                });
                self.after_call(outcome, ctx);
            }
            ChannelMsg::Close(reason) => self.finish(reason, false, ctx),
        }
    }
}

impl<C: Channel> Handler<Info> for ChannelActor<C> {
    type Result = ();

    fn handle(&mut self, Info(message): Info, ctx: &mut Context<Self>) {
        if self.core.finished {
            return;
        }
        let outcome = self.call(ctx, |channel, cx| channel.handle_info(message, cx));
        self.after_call(outcome, ctx);
    }
}

impl<C: Channel> ChannelActor<C> {
    /// Calls into the application with a context, catching a panic.
    fn call<R>(
        &mut self,
        actor: &mut Context<Self>,
        f: impl FnOnce(&mut C, &mut ChannelContext<'_, C>) -> R,
    ) -> Result<R, String> {
        let channel = &mut self.channel;
        let mut cx = ChannelContext {
            core: &mut self.core,
            actor,
        };
        catch_panic(|| f(channel, &mut cx))
    }

    fn settle_join(&mut self, reply: Result<Reply, String>, ctx: &mut Context<Self>) {
        let reply = match reply {
            Ok(reply) => reply,
            Err(message) => {
                log::error!("channel {}: join panicked: {message}", self.core.topic);
                return self.refuse_join(Payload::Json(json!({"reason": "join crashed"})), ctx);
            }
        };
        match reply {
            Reply::Ok(response) => self.accept_join(response, ctx),
            Reply::NoReply => self.accept_join(Payload::empty(), ctx),
            Reply::Error(reason) => self.refuse_join(reason, ctx),
            Reply::Later(future) => {
                // Subscribe now so that broadcasts during an asynchronous join are held
                // by the outlet and delivered right after the join reply.
                self.subscribe_if_framework();
                ctx.wait(
                    CatchUnwind(future)
                        .into_actor(self)
                        .map(|outcome, act, ctx| act.settle_join(outcome, ctx)),
                );
            }
        }
    }

    fn accept_join(&mut self, response: Payload, ctx: &mut Context<Self>) {
        self.subscribe_if_framework();
        self.core.joined = true;
        self.core.session.do_send(SessionMsg::Joined {
            instance: self.core.instance,
            topic: self.core.topic.clone(),
            outcome: Ok(response),
        });
        // Presence after the subscription (so no diff falls between the snapshot and
        // the subscription) and after the reply (so the state follows it on the wire).
        let mut tracks = std::mem::take(&mut self.core.tracks);
        for tracked in &mut tracks {
            tracked.start(&self.core.topic, &self.core.sender(), &*self.core.outlet);
        }
        self.core.tracks = tracks;
        if self.core.stop_requested {
            self.finish(Reason::Stopped, true, ctx);
        }
    }

    fn refuse_join(&mut self, reason: Payload, ctx: &mut Context<Self>) {
        self.core
            .pubsub
            .unsubscribe(&self.core.topic, self.core.instance);
        self.core.tracks.clear();
        self.core.finished = true;
        self.core.session.do_send(SessionMsg::Joined {
            instance: self.core.instance,
            topic: self.core.topic.clone(),
            outcome: Err(reason),
        });
        ctx.stop();
    }

    fn subscribe_if_framework(&mut self) {
        if self.core.subscription == SubscriptionState::Framework {
            self.core.subscription = SubscriptionState::Channel;
            self.core.subscription().activate();
        }
    }

    fn settle_reply(
        &mut self,
        msg_ref: Option<Ref>,
        reply: Result<Reply, String>,
        ctx: &mut Context<Self>,
    ) {
        let outcome = match reply {
            Ok(Reply::Ok(response)) => {
                self.send_reply(msg_ref, Status::Ok, response);
                Ok(())
            }
            Ok(Reply::Error(response)) => {
                self.send_reply(msg_ref, Status::Error, response);
                Ok(())
            }
            Ok(Reply::NoReply) => Ok(()),
            Ok(Reply::Later(future)) => {
                return ctx.wait(
                    CatchUnwind(future)
                        .into_actor(self)
                        .map(move |outcome, act, ctx| act.settle_reply(msg_ref, outcome, ctx)),
                );
            }
            Err(message) => Err(message),
        };
        self.after_call(outcome, ctx);
    }

    /// Ends the instance if its code panicked or asked to stop.
    fn after_call(&mut self, outcome: Result<(), String>, ctx: &mut Context<Self>) {
        match outcome {
            Err(message) => {
                log::error!("channel {}: crashed: {message}", self.core.topic);
                self.finish(Reason::Crashed, true, ctx);
            }
            Ok(()) if self.core.stop_requested => self.finish(Reason::Stopped, true, ctx),
            Ok(()) => {}
        }
    }

    fn send_reply(&self, msg_ref: Option<Ref>, status: Status, response: Payload) {
        self.core
            .outlet
            .reply(&self.core.sender(), msg_ref.as_ref(), status, &response);
    }

    /// Runs `terminate`, drops presence and subscription, and (when the client should
    /// hear of it) tells the session to send `phx_close` / `phx_error`.
    fn finish(&mut self, reason: Reason, notify_session: bool, ctx: &mut Context<Self>) {
        if self.core.finished {
            return;
        }
        self.core.finished = true;
        if self.core.joined {
            if let Err(message) = self.call(ctx, |channel, cx| channel.terminate(reason, cx)) {
                log::error!("channel {}: terminate panicked: {message}", self.core.topic);
            }
        }
        for tracked in self.core.tracks.drain(..) {
            tracked.stop();
        }
        self.core
            .pubsub
            .unsubscribe(&self.core.topic, self.core.instance);
        if notify_session {
            self.core.session.do_send(SessionMsg::Ended {
                instance: self.core.instance,
                topic: self.core.topic.clone(),
                crashed: reason == Reason::Crashed,
            });
        }
        ctx.stop();
    }
}

/// Runs `f`, turning a panic into its message.
pub(crate) fn catch_panic<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_message(&*payload))
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".to_owned()
    }
}

/// A future whose panics come out as `Err(message)`.
struct CatchUnwind<F>(Pin<Box<F>>)
where
    F: Future + ?Sized;

impl<F: Future + ?Sized> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_panic(move || inner.poll(cx)) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(message) => Poll::Ready(Err(message)),
        }
    }
}
