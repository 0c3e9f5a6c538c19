//! PubSub: who is subscribed to each topic, and fan-out of broadcasts to their sessions.
//!
//! Owns the topic → subscribers table (one entry per channel instance) and the
//! [`BroadcastFrame`], which encodes a broadcast at most once per serializer version, the
//! same bytes then going to every subscriber ("fastlane"): written by the publisher's
//! thread straight into each subscriber's [`Outlet`], with no message to its session.
//! Events a channel intercepts go to its actor instead. Must not encode per recipient
//! or know how an outlet reaches its client.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use actix::WeakRecipient;

use crate::channel::{ChannelMsg, InstanceId};
use crate::message::{Broadcast, Payload};
use crate::outlet::Outlet;
use crate::serializer::{Frame, Serializer};

/// Shards of the topic table: broadcasts on different topics rarely share a lock.
const SHARDS: usize = 32;

type Subscribers = HashMap<InstanceId, Subscriber>;

/// Where one channel instance's broadcasts go.
pub(crate) struct Subscriber {
    pub outlet: Arc<dyn Outlet>,
    /// Only for a channel that intercepts some events.
    pub intercept: Option<Box<Intercept>>,
}

/// Events that go to the channel's [`Channel::handle_out`](crate::Channel::handle_out).
pub(crate) struct Intercept {
    pub events: &'static [&'static str],
    /// Weak, so that a subscription does not keep its channel's actor alive.
    pub channel: WeakRecipient<ChannelMsg>,
}

/// The in-process PubSub. Cheap to clone; all clones share one table.
#[derive(Clone)]
pub struct PubSub {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Vec<RwLock<HashMap<Arc<str>, Subscribers>>>,
    hasher: RandomState,
    stats: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    broadcasts: AtomicU64,
    deliveries: AtomicU64,
    encodes: AtomicU64,
}

/// Counters since start, for benchmarks and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Broadcasts published.
    pub broadcasts: u64,
    /// Broadcasts handed to a subscriber's session.
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
            }),
        }
    }

    fn shard(&self, topic: &str) -> &RwLock<HashMap<Arc<str>, Subscribers>> {
        let index = self.inner.hasher.hash_one(topic) as usize % SHARDS;
        &self.inner.shards[index]
    }

    /// Subscribes a channel instance to the topic's broadcasts. Subscribing the same
    /// instance twice is harmless.
    pub(crate) fn subscribe(&self, topic: &Arc<str>, instance: InstanceId, subscriber: Subscriber) {
        let mut table = write(self.shard(topic));
        table
            .entry(topic.clone())
            .or_default()
            .insert(instance, subscriber);
    }

    pub fn unsubscribe(&self, topic: &str, instance: InstanceId) {
        let mut table = write(self.shard(topic));
        if let Some(subscribers) = table.get_mut(topic) {
            subscribers.remove(&instance);
            if subscribers.is_empty() {
                table.remove(topic);
            }
        }
    }

    pub fn subscriber_count(&self, topic: &str) -> usize {
        read(self.shard(topic)).get(topic).map_or(0, HashMap::len)
    }

    /// Sends `event` to every subscriber of `topic`; returns how many were reached.
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

    fn fan_out(
        &self,
        except: Option<InstanceId>,
        topic: &str,
        event: &str,
        payload: Payload,
    ) -> usize {
        self.inner.stats.broadcasts.fetch_add(1, Ordering::Relaxed);
        let table = read(self.shard(topic));
        let Some(subscribers) = table.get(topic) else {
            return 0;
        };
        let frame = Arc::new(BroadcastFrame {
            topic: topic.into(),
            event: event.to_owned(),
            payload,
            encoded: Default::default(),
            stats: self.inner.stats.clone(),
        });
        // The shard's read lock stays held over the loop: an outlet never waits (it
        // queues, and at most makes a non-blocking write), and cloning 19,000
        // subscribers out would cost more than the subscribes to this shard that wait
        // meanwhile.
        let mut delivered = 0;
        for (&instance, subscriber) in subscribers {
            if Some(instance) == except {
                continue;
            }
            match &subscriber.intercept {
                Some(intercept) if intercept.events.contains(&event) => {
                    if let Some(channel) = intercept.channel.upgrade() {
                        channel.do_send(ChannelMsg::Out(frame.clone()));
                    }
                }
                _ => subscriber.outlet.deliver(instance, &frame),
            }
            delivered += 1;
        }
        self.inner
            .stats
            .deliveries
            .fetch_add(delivered as u64, Ordering::Relaxed);
        delivered
    }
}

/// One broadcast on its way to many sessions, encoded lazily and at most once per
/// serializer version.
pub struct BroadcastFrame {
    topic: Arc<str>,
    event: String,
    payload: Payload,
    /// Indexed by [`serializer_slot`]; `None` inside when the broadcast cannot be encoded
    /// for that version (binary on V1).
    encoded: [OnceLock<Option<Frame>>; 2],
    stats: Arc<Counters>,
}

impl BroadcastFrame {
    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn event(&self) -> &str {
        &self.event
    }

    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// The encoded frame for `serializer`; `None` if this broadcast cannot be encoded
    /// for it (logged once).
    pub fn frame(&self, serializer: Serializer) -> Option<&Frame> {
        self.encoded[serializer_slot(serializer)]
            .get_or_init(|| {
                self.stats.encodes.fetch_add(1, Ordering::Relaxed);
                let broadcast = Broadcast {
                    topic: &self.topic,
                    event: &self.event,
                    payload: &self.payload,
                };
                serializer
                    .encode_broadcast(&broadcast)
                    .map_err(|error| {
                        log::warn!("broadcast {} on {}: {error}", self.event, self.topic)
                    })
                    .ok()
            })
            .as_ref()
    }
}

fn serializer_slot(serializer: Serializer) -> usize {
    match serializer {
        Serializer::V1 => 0,
        Serializer::V2 => 1,
    }
}

/// Locks survive a panicking holder: the table holds no invariant a panic could break.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
