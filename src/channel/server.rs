//! The machinery behind [`Channel`]: the actor that runs one channel instance.
//!
//! Owns an instance's life: it calls the application with panics caught, subscribes the
//! instance to its topic, sends replies and pushes to the connection's [`Outlet`] (which
//! holds them until the join reply is out), starts and stops its presence, and reports
//! the join's outcome and its end to the session that started it, as a
//! [`ChannelReport`] this module defines. Must not know the session.

use std::any::Any;
use std::sync::Arc;

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Recipient, WeakRecipient,
    WrapFuture,
};
use serde_json::json;

use super::{Channel, ChannelContext, JoinParams, Pusher, Reason, Reply, Subscription};
use crate::logline::{client_text, one_line};
use crate::message::{Payload, Ref, Status};
use crate::outlet::{InstanceId, Outlet, Sender};
use crate::panic::{catch_panic, CatchUnwind};
use crate::presence::Tracked;
use crate::pubsub::{Intercept, Intercepted, PubSub, Subscriber};
use crate::socket::Assigns;

/// Most client messages one channel instance may have waiting; past it the connection is
/// closed (1008) rather than buffering without bound.
pub(crate) const INBOUND_LIMIT: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SubscriptionState {
    /// The framework subscribes when `join` returns.
    Framework,
    /// The channel took the subscription and activates it itself.
    Channel,
}

/// Everything a channel instance knows besides the application's own value.
pub(crate) struct ChannelCore {
    pub(super) topic: Arc<str>,
    pub(super) join_ref: Option<Ref>,
    pub(super) instance: InstanceId,
    pub(super) assigns: Arc<Assigns>,
    session: Recipient<ChannelReport>,
    pub(super) outlet: Arc<dyn Outlet>,
    pub(super) pubsub: PubSub,
    /// The events this channel intercepts, with its own address for them (weak: an
    /// actor holding its own address would never see its last one dropped).
    intercepts: Option<(&'static [&'static str], WeakRecipient<Intercepted>)>,
    subscription: SubscriptionState,
    pub(super) tracks: Vec<Tracked>,
    joined: bool,
    pub(super) stop_requested: bool,
    finished: bool,
}

impl ChannelCore {
    pub(super) fn sender(&self) -> Sender<'_> {
        Sender {
            instance: self.instance,
            topic: &self.topic,
            join_ref: self.join_ref.as_ref(),
        }
    }

    pub(super) fn pusher(&self) -> Pusher {
        Pusher {
            outlet: self.outlet.clone(),
            topic: self.topic.clone(),
            instance: self.instance,
            join_ref: self.join_ref.clone(),
        }
    }

    /// The subscription, for a channel that activates it itself; `None` if taken.
    pub(super) fn take_subscription(&mut self) -> Option<Subscription> {
        if self.subscription != SubscriptionState::Framework {
            return None;
        }
        self.subscription = SubscriptionState::Channel;
        Some(self.subscription())
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
    pub session: Recipient<ChannelReport>,
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
    /// End now, without telling the client (the session already did, or cannot).
    Close(Reason),
}

/// What a channel instance tells the session that started it.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(crate) enum ChannelReport {
    /// A join's outcome: the reply, and for a refusal the end of the instance.
    Joined {
        instance: InstanceId,
        topic: Arc<str>,
        outcome: Result<Payload, Payload>,
    },
    /// The instance ended by itself (leave, stop, crash): `phx_close` or `phx_error`.
    Ended {
        instance: InstanceId,
        topic: Arc<str>,
        crashed: bool,
    },
}

/// A message for [`Channel::handle_info`].
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(crate) struct Info(pub Box<dyn Any + Send>);

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
                log::error!(
                    "channel {}: constructor panicked: {}",
                    client_text(&start.topic),
                    one_line(&message)
                )
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
            ChannelMsg::Close(reason) => self.finish(reason, false, ctx),
        }
    }
}

impl<C: Channel> Handler<Intercepted> for ChannelActor<C> {
    type Result = ();

    fn handle(&mut self, Intercepted(frame): Intercepted, ctx: &mut Context<Self>) {
        if self.core.finished {
            return;
        }
        let outcome = self.call(ctx, |channel, cx| {
            channel.handle_out(frame.event(), frame.payload(), cx)
        });
        self.after_call(outcome, ctx);
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
                log::error!(
                    "channel {}: join panicked: {}",
                    client_text(&self.core.topic),
                    one_line(&message)
                );
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
        self.core.session.do_send(ChannelReport::Joined {
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
        self.core.session.do_send(ChannelReport::Joined {
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
                log::error!(
                    "channel {}: crashed: {}",
                    client_text(&self.core.topic),
                    one_line(&message)
                );
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
                log::error!(
                    "channel {}: terminate panicked: {}",
                    client_text(&self.core.topic),
                    one_line(&message)
                );
            }
        }
        for tracked in self.core.tracks.drain(..) {
            tracked.stop();
        }
        self.core
            .pubsub
            .unsubscribe(&self.core.topic, self.core.instance);
        if notify_session {
            self.core.session.do_send(ChannelReport::Ended {
                instance: self.core.instance,
                topic: self.core.topic.clone(),
                crashed: reason == Reason::Crashed,
            });
        }
        ctx.stop();
    }
}
