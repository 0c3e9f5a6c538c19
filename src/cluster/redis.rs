//! The Redis engine: broadcasts cross nodes over Redis pub/sub, one channel per topic.
//!
//! Owns the node's two Redis connections (one multiplexed connection for every publish,
//! so one node's broadcasts keep their order; one subscriber connection), the channels
//! this node subscribes to (a topic's channel while the node has a subscriber to it,
//! plus the heartbeat channel), the live nodes it hears, and reconnecting: while Redis is
//! away the node keeps serving its own clients, says so once, and on its return
//! subscribes again to every topic it serves. Runs on a thread of its own; pubsub reaches
//! it through a queue that never blocks. Must not deliver to clients itself: remote
//! broadcasts go to [`PubSub::deliver_remote`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
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

/// What pubsub asks of the engine's thread.
enum Command {
    Publish { channel: String, bytes: Vec<u8> },
    Interest { topic: String, on: bool },
}

/// What the engine's thread and `/health` share.
#[derive(Default)]
struct State {
    connected: AtomicBool,
    /// Other nodes, by id, with when each was last heard.
    nodes: Mutex<HashMap<String, Instant>>,
    /// Broadcasts published while Redis was away: they reached this node's clients only.
    unsent: AtomicU64,
}

impl State {
    fn nodes(&self) -> MutexGuard<'_, HashMap<String, Instant>> {
        self.nodes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
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
            pubsub,
            state: state.clone(),
            queue,
            topics: HashSet::new(),
        };
        let started = std::thread::Builder::new()
            .name("fluxwire-cluster".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(worker.run()),
                    Err(error) => log::error!("cluster: cannot start its runtime: {error}"),
                }
            });
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
}

impl Engine for RedisEngine {
    fn status(&self) -> ClusterStatus {
        ClusterStatus {
            engine: "redis",
            connected: self.state.connected.load(Ordering::Relaxed),
            nodes: self.state.nodes().len() + 1,
        }
    }

    fn node_id(&self) -> &str {
        &self.node
    }
}

fn topic_channel(prefix: &str, topic: &str) -> String {
    format!("{prefix}:t:{topic}")
}

/// The engine's thread: connects, relays, reconnects.
struct Worker {
    url: String,
    prefix: String,
    node: Arc<str>,
    pubsub: PubSub,
    state: Arc<State>,
    queue: UnboundedReceiver<Command>,
    /// Topics this node has subscribers to, connected or not.
    topics: HashSet<String>,
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

    fn came_up(&self, lost_at: Option<Instant>) {
        // Nodes heard before an outage get a fresh grace: our own outage is not theirs.
        let now = Instant::now();
        self.state.nodes().values_mut().for_each(|seen| *seen = now);
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
        let mut channels = vec![self.heartbeat_channel()];
        channels.extend(self.topics.iter().map(|t| topic_channel(&self.prefix, t)));
        sink.subscribe(channels).await?;
        Ok((publisher, sink, stream))
    }

    fn heartbeat_channel(&self) -> String {
        format!("{}:hb", self.prefix)
    }

    /// Relays until Redis is lost or the engine is dropped.
    async fn serve(
        &mut self,
        mut publisher: MultiplexedConnection,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
    ) -> Ended {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let heartbeat_channel = self.heartbeat_channel();
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
                    self.received(message.get_channel_name(), message.get_payload_bytes());
                }
                _ = heartbeat.tick() => {
                    let beat = redis::cmd("PUBLISH")
                        .arg(&heartbeat_channel)
                        .arg(&*self.node)
                        .exec_async(&mut publisher)
                        .await;
                    if let Err(error) = beat {
                        return Ended::Lost(error);
                    }
                    let now = Instant::now();
                    self.state
                        .nodes()
                        .retain(|_, seen| now.duration_since(*seen) < NODE_TIMEOUT);
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

    fn received(&self, channel: &str, bytes: &[u8]) {
        if channel == self.heartbeat_channel() {
            if let Ok(node) = std::str::from_utf8(bytes) {
                if node != &*self.node {
                    self.state.nodes().insert(node.to_owned(), Instant::now());
                }
            }
            return;
        }
        let Some(topic) = channel.strip_prefix(&format!("{}:t:", self.prefix)) else {
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
                self.pubsub.deliver_remote(topic, &envelope.event, payload);
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
                },
            }
        }
    }
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
