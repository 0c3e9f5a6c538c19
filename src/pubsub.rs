//! PubSub: who is subscribed to each topic, and fan-out of broadcasts to them.
//!
//! Owns the topic → subscribers table (one entry per channel instance) and the fan-out:
//! one [`BroadcastFrame`] per broadcast, encoded at most once per serializer version, its
//! bytes written by the publisher's thread straight into each subscriber's [`Outlet`]
//! ("fastlane"), with no message to its session. Events a channel intercepts go to its
//! actor instead, as an [`Intercepted`] message this module defines. Must not encode per
//! recipient, know how an outlet reaches its client, or know channels.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use actix::WeakRecipient;

use crate::message::Payload;
use crate::outlet::{InstanceId, Outlet};
use crate::serializer::BroadcastFrame;

/// Shards of the topic table: broadcasts on different topics rarely share a lock.
const SHARDS: usize = 32;

type Subscribers = HashMap<InstanceId, Subscriber>;

/// Where one channel instance's broadcasts go.
pub(crate) struct Subscriber {
    pub outlet: Arc<dyn Outlet>,
    /// Only for a channel that intercepts some events.
    pub intercept: Option<Box<Intercept>>,
}

/// Events that go to the channel's [`Channel::handle_out`](crate::Channel::handle_out)
/// instead of straight to its client.
pub(crate) struct Intercept {
    pub events: &'static [&'static str],
    /// Weak, so that a subscription does not keep its channel's actor alive.
    pub channel: WeakRecipient<Intercepted>,
}

/// Where broadcasts go beyond this process: a cluster engine, set once at start. Without
/// one (a single node) nothing on the broadcast path pays for it but one load.
pub(crate) trait Relay: Send + Sync {
    /// A broadcast published on this node, after its local delivery; it must not block
    /// (it is called from the publisher's thread).
    fn publish(&self, topic: &str, event: &str, payload: &Payload);
    /// This node's first subscriber to `topic` came (`true`), or its last one left: the
    /// engine need only bring this node the topics it serves.
    fn interest(&self, topic: &str, on: bool);
    /// A change of this node's [`Replica`] number `replica`, for every other node, in
    /// the order given; it must not block.
    fn replicate(&self, replica: usize, change: Vec<u8>);
}

/// State that every node holds a copy of and each node changes only for its own part
/// (presence): the cluster engine hands it the other nodes' changes. Registered with
/// [`PubSub::add_replica`], in the same order on every node.
pub(crate) trait Replica: Send + Sync {
    /// A change `node` made (as its [`Relay::replicate`] sent it); applying one twice
    /// changes nothing.
    fn apply(self: Arc<Self>, node: &str, change: &[u8]);
    /// `node`'s whole part, replacing what was held of it (as [`Replica::snapshot`] made
    /// it there).
    fn replace(self: Arc<Self>, node: &str, snapshot: &[u8]);
    /// `node` is gone: its part is dropped.
    fn forget(self: Arc<Self>, node: &str);
    /// This node's whole part.
    fn snapshot(&self) -> Vec<u8>;
}

/// A broadcast that a subscriber intercepts, sent to it instead of to its client.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(crate) struct Intercepted(pub Arc<BroadcastFrame>);

/// The in-process PubSub. Cheap to clone; all clones share one table.
#[derive(Clone)]
pub struct PubSub {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Vec<RwLock<HashMap<Arc<str>, Subscribers>>>,
    hasher: RandomState,
    stats: Arc<Counters>,
    relay: OnceLock<Arc<dyn Relay>>,
    /// Weak: a replica (presence) holds this pubsub, and must not be kept by it.
    replicas: Mutex<Vec<Weak<dyn Replica>>>,
}

#[derive(Default)]
struct Counters {
    broadcasts: AtomicU64,
    deliveries: AtomicU64,
    /// Shared with every [`BroadcastFrame`], which counts its own encodings.
    encodes: Arc<AtomicU64>,
}

/// Counters since start, for benchmarks and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Broadcasts published.
    pub broadcasts: u64,
    /// Broadcasts handed to a subscriber: written to its client's outlet, or sent to
    /// its channel when intercepted.
    pub deliveries: u64,
    /// Broadcast frames encoded: at most one per broadcast and serializer version in use.
    pub encodes: u64,
}

impl Default for PubSub {
    fn default() -> Self {
        Self::new()
    }
}

impl PubSub {
    pub fn new() -> Self {
        PubSub {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
                hasher: RandomState::new(),
                stats: Arc::default(),
                relay: OnceLock::new(),
                replicas: Mutex::default(),
            }),
        }
    }

    fn shard(&self, topic: &str) -> &RwLock<HashMap<Arc<str>, Subscribers>> {
        let index = self.inner.hasher.hash_one(topic) as usize % SHARDS;
        &self.inner.shards[index]
    }

    /// Sends every broadcast published here on through `relay` too, and asks it for the
    /// topics subscribed here. Set once, before any subscriber; `false` if one was set.
    pub(crate) fn set_relay(&self, relay: Arc<dyn Relay>) -> bool {
        self.inner.relay.set(relay).is_ok()
    }

    /// Subscribes a channel instance to the topic's broadcasts. Subscribing the same
    /// instance twice is harmless.
    pub(crate) fn subscribe(&self, topic: &Arc<str>, instance: InstanceId, subscriber: Subscriber) {
        let mut table = write(self.shard(topic));
        let subscribers = table.entry(topic.clone()).or_default();
        if subscribers.is_empty() {
            // Under the lock, so the relay hears of interest in the table's order.
            if let Some(relay) = self.inner.relay.get() {
                relay.interest(topic, true);
            }
        }
        subscribers.insert(instance, subscriber);
    }

    pub fn unsubscribe(&self, topic: &str, instance: InstanceId) {
        let mut table = write(self.shard(topic));
        if let Some(subscribers) = table.get_mut(topic) {
            subscribers.remove(&instance);
            if subscribers.is_empty() {
                table.remove(topic);
                if let Some(relay) = self.inner.relay.get() {
                    relay.interest(topic, false);
                }
            }
        }
    }

    pub fn subscriber_count(&self, topic: &str) -> usize {
        read(self.shard(topic)).get(topic).map_or(0, HashMap::len)
    }

    /// Sends `event` to every subscriber of `topic`; returns how many were reached (a
    /// V1 client is not reached by a binary payload).
    pub fn broadcast(&self, topic: &str, event: &str, payload: Payload) -> usize {
        self.fan_out(None, topic, event, payload)
    }

    /// As [`PubSub::broadcast`], except to the instance `from`.
    pub fn broadcast_from(
        &self,
        from: InstanceId,
        topic: &str,
        event: &str,
        payload: Payload,
    ) -> usize {
        self.fan_out(Some(from), topic, event, payload)
    }

    pub fn stats(&self) -> Stats {
        let c = &self.inner.stats;
        Stats {
            broadcasts: c.broadcasts.load(Ordering::Relaxed),
            deliveries: c.deliveries.load(Ordering::Relaxed),
            encodes: c.encodes.load(Ordering::Relaxed),
        }
    }

    /// Registers state replicated across nodes; returns its number, for
    /// [`PubSub::replicate`].
    pub(crate) fn add_replica(&self, replica: Weak<dyn Replica>) -> usize {
        let mut replicas = lock(&self.inner.replicas);
        replicas.push(replica);
        replicas.len() - 1
    }

    /// The replicas still alive, by number.
    pub(crate) fn replicas(&self) -> Vec<Option<Arc<dyn Replica>>> {
        lock(&self.inner.replicas)
            .iter()
            .map(Weak::upgrade)
            .collect()
    }

    /// Sends a change of replica `replica` to the other nodes, if in a cluster.
    pub(crate) fn replicate(&self, replica: usize, change: impl FnOnce() -> Vec<u8>) {
        if let Some(relay) = self.inner.relay.get() {
            relay.replicate(replica, change());
        }
    }

    /// Delivers a broadcast to this node's subscribers only, never relayed: one another
    /// node published, or one each node makes for its own members (presence diffs).
    pub(crate) fn broadcast_here(&self, topic: &str, event: &str, payload: Payload) -> usize {
        self.inner.stats.broadcasts.fetch_add(1, Ordering::Relaxed);
        let table = read(self.shard(topic));
        let Some(subscribers) = table.get(topic) else {
            return 0;
        };
        let encodes = self.inner.stats.encodes.clone();
        let frame = Arc::new(BroadcastFrame::new(topic, event, payload, encodes));
        self.deliver(subscribers, None, &frame)
    }

    fn fan_out(
        &self,
        except: Option<InstanceId>,
        topic: &str,
        event: &str,
        payload: Payload,
    ) -> usize {
        self.inner.stats.broadcasts.fetch_add(1, Ordering::Relaxed);
        let relay = self.inner.relay.get();
        let table = read(self.shard(topic));
        let Some(subscribers) = table.get(topic) else {
            drop(table);
            if let Some(relay) = relay {
                relay.publish(topic, event, &payload);
            }
            return 0;
        };
        let encodes = self.inner.stats.encodes.clone();
        let frame = Arc::new(BroadcastFrame::new(topic, event, payload, encodes));
        let delivered = self.deliver(subscribers, except, &frame);
        drop(table);
        if let Some(relay) = relay {
            relay.publish(topic, event, frame.payload());
        }
        delivered
    }

    fn deliver(
        &self,
        subscribers: &Subscribers,
        except: Option<InstanceId>,
        frame: &Arc<BroadcastFrame>,
    ) -> usize {
        let event = frame.event();
        // The shard's read lock stays held over the loop: an outlet never waits (it
        // queues, and at most makes a non-blocking write), and cloning 19,000
        // subscribers out would cost more than the subscribes to this shard that wait
        // meanwhile.
        let mut delivered = 0;
        for (&instance, subscriber) in subscribers {
            if Some(instance) == except {
                continue;
            }
            let reached = match &subscriber.intercept {
                Some(intercept) if intercept.events.contains(&event) => intercept
                    .channel
                    .upgrade()
                    .map(|channel| channel.do_send(Intercepted(frame.clone())))
                    .is_some(),
                _ => subscriber.outlet.deliver(instance, frame),
            };
            delivered += usize::from(reached);
        }
        self.inner
            .stats
            .deliveries
            .fetch_add(delivered as u64, Ordering::Relaxed);
        delivered
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Locks survive a panicking holder: the table holds no invariant a panic could break.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::outlet::testing::{Out, RecordedOutlet};
    use crate::serializer::Serializer;

    fn recorded(serializer: Serializer) -> Arc<RecordedOutlet> {
        Arc::new(RecordedOutlet::new(serializer))
    }

    fn subscribe(pubsub: &PubSub, topic: &str, outlet: &Arc<RecordedOutlet>) -> InstanceId {
        let instance = InstanceId::next();
        let subscriber = Subscriber {
            outlet: outlet.clone(),
            intercept: None,
        };
        pubsub.subscribe(&topic.into(), instance, subscriber);
        instance
    }

    #[test]
    fn fan_out_reaches_each_subscriber_of_the_topic_once() {
        let pubsub = PubSub::new();
        let (v2, v1, other) = (
            recorded(Serializer::V2),
            recorded(Serializer::V1),
            recorded(Serializer::V2),
        );
        let a = subscribe(&pubsub, "t", &v2);
        let b = subscribe(&pubsub, "t", &v1);
        subscribe(&pubsub, "elsewhere", &other);
        assert_eq!(pubsub.subscriber_count("t"), 2);

        assert_eq!(
            pubsub.broadcast("t", "e", Payload::Json(json!({"n": 1}))),
            2
        );
        assert_eq!(pubsub.broadcast_from(a, "t", "e", Payload::empty()), 1);
        assert_eq!(
            v2.take(),
            [Out::SendFrom(a, json!([null, null, "t", "e", {"n": 1}]))]
        );
        let v1_broadcast =
            |payload| json!({"topic": "t", "event": "e", "payload": payload, "ref": null});
        assert_eq!(
            v1.take(),
            [
                Out::SendFrom(b, v1_broadcast(json!({"n": 1}))),
                Out::SendFrom(b, v1_broadcast(json!({}))),
            ]
        );
        assert_eq!(other.take(), []);
        assert_eq!(
            pubsub.stats(),
            Stats {
                broadcasts: 2,
                deliveries: 3,
                encodes: 3
            }
        );

        pubsub.unsubscribe("t", a);
        pubsub.unsubscribe("t", b);
        assert_eq!(pubsub.subscriber_count("t"), 0);
        assert_eq!(pubsub.broadcast("t", "e", Payload::empty()), 0);
    }

    #[test]
    fn a_broadcast_a_client_cannot_read_is_not_counted_as_delivered() {
        let pubsub = PubSub::new();
        let (v1, v2) = (recorded(Serializer::V1), recorded(Serializer::V2));
        subscribe(&pubsub, "t", &v1);
        let b = subscribe(&pubsub, "t", &v2);
        let binary = Payload::Binary(Bytes::from_static(b"\x01"));
        assert_eq!(pubsub.broadcast("t", "b", binary), 1);
        assert_eq!(v1.take(), []);
        assert!(matches!(&v2.take()[..], [Out::SendFrom(to, _)] if *to == b));
        assert_eq!(pubsub.stats().deliveries, 1);
    }

    #[test]
    fn an_intercepting_subscriber_that_is_gone_is_not_counted() {
        struct Gone;
        impl actix::Actor for Gone {
            type Context = actix::Context<Self>;
        }
        impl actix::Handler<Intercepted> for Gone {
            type Result = ();
            fn handle(&mut self, _: Intercepted, _: &mut Self::Context) {}
        }
        let system = actix::System::new();
        let channel = system.block_on(async { actix::Actor::start(Gone).recipient().downgrade() });
        drop(system);
        let pubsub = PubSub::new();
        let outlet = recorded(Serializer::V2);
        let subscriber = Subscriber {
            outlet: outlet.clone(),
            intercept: Some(Box::new(Intercept {
                events: &["secret"],
                channel,
            })),
        };
        pubsub.subscribe(&"t".into(), InstanceId::next(), subscriber);
        assert_eq!(pubsub.broadcast("t", "secret", Payload::empty()), 0);
        assert_eq!(pubsub.broadcast("t", "plain", Payload::empty()), 1);
        assert_eq!(outlet.take().len(), 1);
    }
}
