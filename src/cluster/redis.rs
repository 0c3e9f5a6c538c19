//! The Redis engine: broadcasts cross nodes over Redis pub/sub, one channel per topic;
//! replicated state (presence) over one control channel.
//!
//! Owns the node's two Redis connections (one multiplexed connection for every publish,
//! so everything one node sends keeps its order; one subscriber connection), the
//! channels this node subscribes to (a topic's channel while the node has a subscriber
//! to it, and the control channel), the other nodes it hears (heartbeats every second;
//! silent for 5 s means gone, and their replicated state is dropped), the replication
//! protocol (each node numbers its changes; a gap, a restarted node or a node not known
//! yet is answered with a request for its whole state), and reconnecting: while Redis is
//! away the node keeps serving its own clients, says so once, and on its return
//! subscribes again and asks every node for its state. Runs on a thread of its own;
//! pubsub reaches it through a queue that never blocks. Must not deliver to clients
//! itself: remote broadcasts go to [`PubSub::broadcast_here`], replicated changes to the
//! [`Replica`]s.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::{ClusterConfig, ClusterStatus, Engine, Envelope};
use crate::message::Payload;
use crate::pubsub::{PubSub, Relay};

/// How often a node says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not heard for this long is gone (kill -9, a cut network).
const NODE_TIMEOUT: Duration = Duration::from_secs(5);
/// Waits between attempts to reach Redis: doubling from the first to the last.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// Most publishes sent to Redis in one pipeline.
const PIPELINE: usize = 512;

/// Checks that `url` is one the Redis client can use.
pub(super) fn check_url(url: &str) -> Result<(), String> {
    redis::Client::open(url)
        .map(drop)
        .map_err(|error| format!("{url:?} is not a usable Redis URL: {error}"))
}

/// How long a node waits before asking the same node for its state again.
const SYNC_AGAIN: Duration = Duration::from_secs(1);

/// What pubsub asks of the engine's thread.
enum Command {
    Publish { channel: String, bytes: Vec<u8> },
    Interest { topic: String, on: bool },
    Replicate { replica: usize, change: Vec<u8> },
}

/// A message on the control channel, `{"kind": {...}}` (externally tagged, so that the
/// embedded JSON is read without a copy). `n` is the sending node, `v` its incarnation
/// (new at every start), `s` the number of the last change it sent.
#[derive(Serialize, Deserialize)]
enum Control<'a> {
    /// Alive; every second.
    #[serde(rename = "hb")]
    Beat {
        #[serde(borrow)]
        n: Cow<'a, str>,
        #[serde(borrow)]
        v: Cow<'a, str>,
        s: u64,
    },
    /// Change number `s` of the sender's replica `r`.
    #[serde(rename = "ch")]
    Change {
        #[serde(borrow)]
        n: Cow<'a, str>,
        #[serde(borrow)]
        v: Cow<'a, str>,
        s: u64,
        r: usize,
        #[serde(borrow)]
        c: &'a RawValue,
    },
    /// Node `n` asks node `to` (or every node, `*`) for its whole state.
    #[serde(rename = "sync")]
    Sync {
        #[serde(borrow)]
        n: Cow<'a, str>,
        #[serde(borrow)]
        to: Cow<'a, str>,
    },
    /// The sender's whole state, one snapshot per replica, as of change `s`.
    #[serde(rename = "full")]
    Full {
        #[serde(borrow)]
        n: Cow<'a, str>,
        #[serde(borrow)]
        v: Cow<'a, str>,
        s: u64,
        #[serde(borrow)]
        f: Vec<&'a RawValue>,
    },
}

impl Control<'_> {
    fn sender(&self) -> &str {
        match self {
            Control::Beat { n, .. }
            | Control::Change { n, .. }
            | Control::Sync { n, .. }
            | Control::Full { n, .. } => n,
        }
    }
}

/// What this node knows of another.
struct Peer {
    incarnation: String,
    /// The last change applied; `None` until its whole state has arrived.
    applied: Option<u64>,
    last_seen: Instant,
    asked: Option<Instant>,
}

/// What the engine's thread and `/health` share.
#[derive(Default)]
struct State {
    connected: AtomicBool,
    /// Other live nodes.
    nodes: AtomicU64,
    /// Broadcasts published while Redis was away: they reached this node's clients only.
    unsent: AtomicU64,
}

pub(crate) struct RedisEngine {
    node: Arc<str>,
    prefix: String,
    commands: UnboundedSender<Command>,
    state: Arc<State>,
}

impl RedisEngine {
    pub(crate) fn start(config: ClusterConfig, pubsub: PubSub) -> Arc<Self> {
        let (commands, queue) = unbounded_channel();
        let state = Arc::new(State::default());
        let node: Arc<str> = config.node_id.as_str().into();
        let worker = Worker {
            url: config.url.as_str().to_owned(),
            prefix: config.prefix.clone(),
            node: node.clone(),
            incarnation: uuid::Uuid::new_v4().simple().to_string(),
            sent: 0,
            pubsub,
            state: state.clone(),
            queue,
            topics: HashSet::new(),
            peers: HashMap::new(),
            control: format!("{}:ctl", config.prefix),
            topics_prefix: topic_channel(&config.prefix, ""),
        };
        // An actix system of its own: replicas (presence) schedule their flushes with it.
        let started = std::thread::Builder::new()
            .name("fluxwire-cluster".into())
            .spawn(move || actix::System::new().block_on(worker.run()));
        if let Err(error) = started {
            log::error!("cluster: cannot start its thread: {error}");
        }
        Arc::new(RedisEngine {
            node,
            prefix: config.prefix,
            commands,
            state,
        })
    }
}

impl Relay for RedisEngine {
    fn publish(&self, topic: &str, event: &str, payload: &Payload) {
        if !self.state.connected.load(Ordering::Relaxed) {
            self.state.unsent.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let command = Command::Publish {
            channel: topic_channel(&self.prefix, topic),
            bytes: Envelope::encode(&self.node, event, payload),
        };
        let _ = self.commands.send(command);
    }

    fn interest(&self, topic: &str, on: bool) {
        let topic = topic.to_owned();
        let _ = self.commands.send(Command::Interest { topic, on });
    }

    fn replicate(&self, replica: usize, change: Vec<u8>) {
        let _ = self.commands.send(Command::Replicate { replica, change });
    }
}

impl Engine for RedisEngine {
    fn status(&self) -> ClusterStatus {
        ClusterStatus {
            engine: "redis",
            connected: self.state.connected.load(Ordering::Relaxed),
            nodes: self.state.nodes.load(Ordering::Relaxed) as usize + 1,
        }
    }

    fn node_id(&self) -> &str {
        &self.node
    }
}

fn topic_channel(prefix: &str, topic: &str) -> String {
    format!("{prefix}:t:{topic}")
}

/// The engine's thread: connects, relays, replicates, reconnects.
struct Worker {
    url: String,
    prefix: String,
    node: Arc<str>,
    /// New at every start, so that other nodes tell a restart from a gap.
    incarnation: String,
    /// Changes sent (or lost while Redis was away, so that others see the gap).
    sent: u64,
    pubsub: PubSub,
    state: Arc<State>,
    queue: UnboundedReceiver<Command>,
    /// Topics this node has subscribers to, connected or not.
    topics: HashSet<String>,
    peers: HashMap<String, Peer>,
    /// The control channel's name, and what every topic channel's name starts with:
    /// made once, compared for every message received.
    control: String,
    topics_prefix: String,
}

/// Why a connected spell ended.
enum Ended {
    /// Every handle to the engine is gone: the server stopped.
    Stopped,
    Lost(redis::RedisError),
}

impl Worker {
    async fn run(mut self) {
        let mut wait = RECONNECT_FIRST;
        let mut lost_at: Option<Instant> = None;
        let mut logged_failure = false;
        loop {
            match self.connect().await {
                Ok((publisher, sink, stream)) => {
                    wait = RECONNECT_FIRST;
                    logged_failure = false;
                    self.came_up(lost_at.take());
                    match self.serve(publisher, sink, stream).await {
                        Ended::Stopped => return,
                        Ended::Lost(error) => {
                            self.state.connected.store(false, Ordering::Relaxed);
                            lost_at = Some(Instant::now());
                            log::warn!(
                                "cluster: lost Redis ({error}); serving this node's clients \
                                 only, reconnecting"
                            );
                        }
                    }
                }
                Err(error) => {
                    if !logged_failure {
                        logged_failure = true;
                        log::warn!(
                            "cluster: cannot reach Redis ({error}); serving this node's \
                             clients only, retrying"
                        );
                    }
                }
            }
            if !self.wait_to_retry(wait).await {
                return;
            }
            wait = (wait * 2).min(RECONNECT_MAX);
        }
    }

    fn came_up(&mut self, lost_at: Option<Instant>) {
        // Nodes heard before an outage get a fresh grace: our own outage is not theirs.
        let now = Instant::now();
        self.peers
            .values_mut()
            .for_each(|peer| peer.last_seen = now);
        self.state.connected.store(true, Ordering::Relaxed);
        let unsent = self.state.unsent.swap(0, Ordering::Relaxed);
        match lost_at {
            None => log::info!(
                "cluster: node {} joined through {}",
                self.node,
                redacted(&self.url)
            ),
            Some(at) => log::info!(
                "cluster: Redis back after {:.1?}; {unsent} broadcasts published meanwhile \
                 reached this node's clients only",
                at.elapsed()
            ),
        }
    }

    async fn connect(
        &self,
    ) -> redis::RedisResult<(MultiplexedConnection, PubSubSink, PubSubStream)> {
        let client = redis::Client::open(self.url.as_str())?;
        let publisher = client.get_multiplexed_async_connection().await?;
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        let mut channels = vec![self.control.clone()];
        channels.extend(self.topics.iter().map(|t| topic_channel(&self.prefix, t)));
        sink.subscribe(channels).await?;
        Ok((publisher, sink, stream))
    }

    fn control_channel(&self) -> &str {
        &self.control
    }

    async fn control(
        &self,
        publisher: &mut MultiplexedConnection,
        message: &Control<'_>,
    ) -> redis::RedisResult<()> {
        let bytes = serde_json::to_vec(message).expect("a control message always serializes");
        redis::cmd("PUBLISH")
            .arg(self.control_channel())
            .arg(bytes)
            .exec_async(publisher)
            .await
    }

    /// Relays until Redis is lost or the engine is dropped.
    async fn serve(
        &mut self,
        mut publisher: MultiplexedConnection,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
    ) -> Ended {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        // Every node's state: ours may have changed while we could not hear it.
        let everyone = Control::Sync {
            n: Cow::Borrowed(&self.node),
            to: Cow::Borrowed("*"),
        };
        if let Err(error) = self.control(&mut publisher, &everyone).await {
            return Ended::Lost(error);
        }
        loop {
            tokio::select! {
                command = self.queue.recv() => {
                    let Some(command) = command else {
                        return Ended::Stopped;
                    };
                    if let Err(error) = self.relay(command, &mut publisher, &mut sink).await {
                        return Ended::Lost(error);
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else {
                        let closed = redis::RedisError::from((
                            redis::ErrorKind::Io,
                            "subscriber connection closed",
                        ));
                        return Ended::Lost(closed);
                    };
                    let channel = message.get_channel_name();
                    let answer = if channel == self.control_channel() {
                        self.controlled(message.get_payload_bytes())
                    } else {
                        self.received(channel, message.get_payload_bytes());
                        Vec::new()
                    };
                    for message in answer {
                        if let Err(error) = self.send_owned(&mut publisher, message).await {
                            return Ended::Lost(error);
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    let beat = Control::Beat {
                        n: Cow::Borrowed(&self.node),
                        v: Cow::Borrowed(&self.incarnation),
                        s: self.sent,
                    };
                    if let Err(error) = self.control(&mut publisher, &beat).await {
                        return Ended::Lost(error);
                    }
                    self.drop_silent_peers();
                }
            }
        }
    }

    /// Sends `first` and whatever else is queued: publishes in one pipeline, in order.
    async fn relay(
        &mut self,
        first: Command,
        publisher: &mut MultiplexedConnection,
        sink: &mut PubSubSink,
    ) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        let mut queued = 0;
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Publish { channel, bytes } => {
                    pipe.publish(channel, bytes).ignore();
                    queued += 1;
                }
                Command::Interest { topic, on } => {
                    let channel = topic_channel(&self.prefix, &topic);
                    if on {
                        self.topics.insert(topic);
                        sink.subscribe(channel).await?;
                    } else {
                        self.topics.remove(&topic);
                        sink.unsubscribe(channel).await?;
                    }
                }
                Command::Replicate { replica, change } => {
                    self.sent += 1;
                    match raw_json(change) {
                        Some(change) => {
                            let message = Control::Change {
                                n: Cow::Borrowed(&self.node),
                                v: Cow::Borrowed(&self.incarnation),
                                s: self.sent,
                                r: replica,
                                c: &change,
                            };
                            let bytes = serde_json::to_vec(&message)
                                .expect("a control message always serializes");
                            pipe.publish(self.control_channel(), bytes).ignore();
                            queued += 1;
                        }
                        // Not sent: the others see the gap and ask for the whole state.
                        None => log::warn!("cluster: a replica's change is not JSON; not sent"),
                    }
                }
            }
            if queued < PIPELINE {
                next = self.queue.try_recv().ok();
            }
        }
        if queued > 0 {
            pipe.exec_async(publisher).await?;
        }
        Ok(())
    }

    /// Sends a control message this node made in answer to one it heard.
    async fn send_owned(
        &self,
        publisher: &mut MultiplexedConnection,
        message: Owned,
    ) -> redis::RedisResult<()> {
        match message {
            Owned::Ask(peer) => {
                let ask = Control::Sync {
                    n: Cow::Borrowed(&self.node),
                    to: Cow::Owned(peer),
                };
                self.control(publisher, &ask).await
            }
            Owned::Full => {
                let snapshots: Vec<Box<RawValue>> = self
                    .pubsub
                    .replicas()
                    .into_iter()
                    .map(|replica| {
                        let snapshot = replica.map_or_else(|| b"[]".to_vec(), |r| r.snapshot());
                        raw_json(snapshot)
                            .unwrap_or_else(|| raw_json(b"[]".to_vec()).expect("[] is JSON"))
                    })
                    .collect();
                let full = Control::Full {
                    n: Cow::Borrowed(&self.node),
                    v: Cow::Borrowed(&self.incarnation),
                    s: self.sent,
                    f: snapshots.iter().map(AsRef::as_ref).collect(),
                };
                self.control(publisher, &full).await
            }
        }
    }

    /// A control message from the channel: what to send in answer.
    fn controlled(&mut self, bytes: &[u8]) -> Vec<Owned> {
        let Ok(message) = serde_json::from_slice::<Control<'_>>(bytes) else {
            log::warn!("cluster: an unreadable control message dropped");
            return Vec::new();
        };
        if message.sender() == &*self.node {
            return Vec::new();
        }
        let mut answer = Vec::new();
        match message {
            Control::Sync { to, .. } => {
                if to == "*" || to == *self.node {
                    answer.push(Owned::Full);
                }
            }
            Control::Beat { n, v, s } => {
                let peer = self.peer(&n, &v);
                if peer.applied != Some(s) {
                    answer.extend(self.ask(&n));
                }
            }
            Control::Change { n, v, s, r, c } => {
                let peer = self.peer(&n, &v);
                match peer.applied {
                    Some(last) if s == last + 1 => {
                        peer.applied = Some(s);
                        if let Some(Some(replica)) = self.pubsub.replicas().get(r) {
                            replica.clone().apply(&n, c.get().as_bytes());
                        }
                    }
                    Some(last) if s <= last => {}
                    _ => {
                        peer.applied = None;
                        answer.extend(self.ask(&n));
                    }
                }
            }
            Control::Full { n, v, s, f } => {
                let peer = self.peer(&n, &v);
                peer.applied = Some(s);
                peer.asked = None;
                for (replica, snapshot) in self.pubsub.replicas().into_iter().zip(&f) {
                    if let Some(replica) = replica {
                        replica.replace(&n, snapshot.get().as_bytes());
                    }
                }
            }
        }
        answer
    }

    /// The peer `node` in its incarnation `incarnation` (a new one is unknown again).
    fn peer(&mut self, node: &str, incarnation: &str) -> &mut Peer {
        let now = Instant::now();
        let peer = self.peers.entry(node.to_owned()).or_insert_with(|| Peer {
            incarnation: incarnation.to_owned(),
            applied: None,
            last_seen: now,
            asked: None,
        });
        if peer.incarnation != incarnation {
            peer.incarnation = incarnation.to_owned();
            peer.applied = None;
        }
        peer.last_seen = now;
        self.state
            .nodes
            .store(self.peers.len() as u64, Ordering::Relaxed);
        self.peers.get_mut(node).expect("just inserted")
    }

    /// A request for `node`'s whole state, unless one was sent within [`SYNC_AGAIN`].
    fn ask(&mut self, node: &str) -> Option<Owned> {
        let peer = self.peers.get_mut(node)?;
        if peer.asked.is_some_and(|at| at.elapsed() < SYNC_AGAIN) {
            return None;
        }
        peer.asked = Some(Instant::now());
        Some(Owned::Ask(node.to_owned()))
    }

    /// Nodes not heard for [`NODE_TIMEOUT`] are gone: their replicated state too.
    fn drop_silent_peers(&mut self) {
        let gone: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, peer)| peer.last_seen.elapsed() >= NODE_TIMEOUT)
            .map(|(node, _)| node.clone())
            .collect();
        for node in gone {
            self.peers.remove(&node);
            log::info!("cluster: node {node} is gone (silent for {NODE_TIMEOUT:?})");
            for replica in self.pubsub.replicas().into_iter().flatten() {
                replica.forget(&node);
            }
        }
        self.state
            .nodes
            .store(self.peers.len() as u64, Ordering::Relaxed);
    }

    fn received(&self, channel: &str, bytes: &[u8]) {
        let Some(topic) = channel.strip_prefix(&self.topics_prefix) else {
            return;
        };
        let Some(envelope) = Envelope::decode(bytes) else {
            return log::warn!("cluster: an undecodable message on {channel:?} dropped");
        };
        if envelope.node == &*self.node {
            // Delivered here when it was published.
            return;
        }
        match envelope.payload() {
            Some(payload) => {
                self.pubsub.broadcast_here(topic, &envelope.event, payload);
            }
            None => log::warn!("cluster: a message without a payload on {channel:?} dropped"),
        }
    }

    /// Waits `wait` before the next attempt, meanwhile keeping track of interest and
    /// counting publishes that cannot cross. `false` once the engine is dropped.
    async fn wait_to_retry(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return true,
                command = self.queue.recv() => match command {
                    None => return false,
                    Some(Command::Publish { .. }) => {
                        self.state.unsent.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Command::Interest { topic, on: true }) => {
                        self.topics.insert(topic);
                    }
                    Some(Command::Interest { topic, on: false }) => {
                        self.topics.remove(&topic);
                    }
                    // Lost, but numbered: the others see the gap and ask for our state.
                    Some(Command::Replicate { .. }) => self.sent += 1,
                },
            }
        }
    }
}

/// A control message this node sends in answer to one it heard.
enum Owned {
    /// Ask this node for its whole state.
    Ask(String),
    /// Send our whole state.
    Full,
}

/// `bytes` as a JSON value to embed, if they are JSON.
fn raw_json(bytes: Vec<u8>) -> Option<Box<RawValue>> {
    String::from_utf8(bytes)
        .ok()
        .and_then(|text| RawValue::from_string(text).ok())
}

/// The URL without a password, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_the_logs() {
        assert_eq!(redacted("redis://:pw@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redacted("redis://h:1"), "redis://h:1");
    }
}
