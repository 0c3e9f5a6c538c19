//! Several fluxwire processes as one cluster over a real Redis: broadcasts cross nodes
//! exactly once and in each publisher's order, `/health` tells the cluster's state, a
//! Redis restart is survived, and a node killed without a word leaves the count.
//!
//! Each test starts its own `redis-server` (Debian's package) on a free loopback port and
//! stops it. Without redis-server the tests say so loudly and pass, except under CI
//! (`CI` set), where its absence is a failure.

mod support;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use support::{fluxwire, Log, Server};

const TIMEOUT: Duration = Duration::from_secs(15);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` of the test's own, on a free loopback port.
struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    /// `None` when redis-server is not installed (outside CI only).
    async fn start() -> Option<Redis> {
        let found = std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok();
        if !found {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is not installed: the cluster tests need it under CI"
            );
            eprintln!(
                "\n*** SKIPPED: redis-server is not installed (apt-get install redis-server) ***\n"
            );
            return None;
        }
        Some(Redis::on_port(free_port()).await)
    }

    async fn on_port(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        eventually("redis-server to listen", || async move {
            TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        Redis { port, child }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn stop(&mut self) {
        self.child.kill().await.unwrap();
    }

    async fn restart(&mut self) {
        self.stop().await;
        *self = Redis::on_port(self.port).await;
    }
}

/// Polls `check` until it holds, for at most [`TIMEOUT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Deadline::new(what);
    while !check().await {
        deadline.pause().await;
    }
}

/// A bound on a wait, for loops that borrow mutably what they poll.
struct Deadline {
    what: String,
    at: Instant,
}

impl Deadline {
    fn new(what: &str) -> Deadline {
        Deadline {
            what: what.to_owned(),
            at: Instant::now() + TIMEOUT,
        }
    }

    /// Waits a little before the next look; fails the test past the deadline.
    async fn pause(&self) {
        assert!(
            Instant::now() < self.at,
            "timed out waiting for {}",
            self.what
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One fluxwire process of the cluster.
struct Node {
    child: Child,
    addr: String,
    log: Log,
}

impl Node {
    async fn start(redis: &Redis, id: &str, prefix: &str) -> Node {
        let mut command = fluxwire();
        command
            .args(["--cluster", &redis.url(), "--cluster-prefix", prefix])
            .args(["--node-id", id]);
        let Server {
            child, addr, log, ..
        } = Server::start(command).await;
        Node { child, addr, log }
    }

    async fn health(&self) -> Value {
        let mut stream = TcpStream::connect(&self.addr).await.unwrap();
        let request = "GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (_, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        serde_json::from_str(body).expect("a JSON body")
    }

    /// Waits until this node reaches Redis and sees `nodes` nodes, itself included.
    async fn sees(&self, nodes: usize) {
        eventually(&format!("{} to see {nodes} nodes", self.addr), || async {
            let health = self.health().await;
            health["cluster"]["connected"] == json!(true)
                && health["cluster"]["nodes"] == json!(nodes)
        })
        .await;
    }

    fn log_lines(&self, containing: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|line| line.contains(containing)).count()
    }
}

/// A client joined to one room: every `new_msg` body it receives, in order.
struct Member {
    sink: futures_util::stream::SplitSink<
        tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
        Message,
    >,
    bodies: mpsc::UnboundedReceiver<String>,
    /// The `presence_state` pushed after the join.
    presence_state: Value,
    /// `+user` and `-user` for each join and leave in the `presence_diff`s received.
    diffs: mpsc::UnboundedReceiver<String>,
    /// Received since the last clear.
    seen: Vec<String>,
    /// Everything received.
    all: Vec<String>,
    next_ref: u64,
    topic: String,
}

impl Member {
    async fn join(node: &Node, user: &str, topic: &str) -> Member {
        let url = format!("ws://{}/socket/websocket?vsn=2.0.0&user={user}", node.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connects");
        let (mut sink, mut stream) = ws.split();
        let join = json!(["1", "1", topic, "phx_join", {}]).to_string();
        sink.send(Message::text(join)).await.unwrap();
        let (joined_tx, mut joined) = mpsc::unbounded_channel();
        let (state_tx, mut state) = mpsc::unbounded_channel();
        let (bodies_tx, bodies) = mpsc::unbounded_channel();
        let (diffs_tx, diffs) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(Message::Text(text))) = stream.next().await {
                let frame: Value = serde_json::from_str(&text).unwrap();
                match frame[3].as_str() {
                    Some("phx_reply") if frame[1] == json!("1") => {
                        let _ = joined_tx.send(frame[4]["status"].clone());
                    }
                    Some("presence_state") => {
                        let _ = state_tx.send(frame[4].clone());
                    }
                    Some("presence_diff") => {
                        for (side, sign) in [("joins", '+'), ("leaves", '-')] {
                            for user in frame[4][side].as_object().unwrap().keys() {
                                let _ = diffs_tx.send(format!("{sign}{user}"));
                            }
                        }
                    }
                    Some("new_msg") => {
                        let _ = bodies_tx.send(frame[4]["body"].as_str().unwrap().to_owned());
                    }
                    _ => {}
                }
            }
        });
        let status = tokio::time::timeout(TIMEOUT, joined.recv()).await.unwrap();
        assert_eq!(status, Some(json!("ok")), "{user} joins {topic}");
        let presence_state = tokio::time::timeout(TIMEOUT, state.recv())
            .await
            .expect("presence_state after the join")
            .unwrap();
        Member {
            sink,
            bodies,
            presence_state,
            diffs,
            seen: Vec::new(),
            all: Vec::new(),
            next_ref: 2,
            topic: topic.to_owned(),
        }
    }

    async fn post(&mut self, body: &str) {
        let msg_ref = self.next_ref.to_string();
        self.next_ref += 1;
        let push = json!(["1", msg_ref, self.topic, "new_msg", {"body": body}]);
        self.sink
            .send(Message::text(push.to_string()))
            .await
            .unwrap();
    }

    /// Waits for a `presence_diff` carrying `change` (`+user` or `-user`).
    async fn diff(&mut self, change: &str) {
        let wait = async {
            while let Some(seen) = self.diffs.recv().await {
                if seen == change {
                    return;
                }
            }
            panic!("the connection ended");
        };
        tokio::time::timeout(TIMEOUT, wait)
            .await
            .unwrap_or_else(|_| panic!("no presence_diff with {change}"));
    }

    /// Closes the connection (the reader half would keep it open if only dropped).
    async fn close(mut self) {
        let _ = self.sink.send(Message::Close(None)).await;
    }

    /// Takes what has arrived so far.
    fn drain(&mut self) {
        while let Ok(body) = self.bodies.try_recv() {
            self.all.push(body.clone());
            self.seen.push(body);
        }
    }

    fn saw(&mut self, body: &str) -> bool {
        self.drain();
        self.seen.iter().any(|seen| seen == body)
    }
}

/// Posts probes from each node's first member until every member has seen one from
/// every node: each node now subscribes to the room's channel.
async fn wait_until_connected(members: &mut [Vec<Member>]) {
    let deadline = Deadline::new("every member to hear every node");
    let nodes = members.len();
    for round in 0.. {
        for (node, on_node) in members.iter_mut().enumerate() {
            on_node[0].post(&format!("probe-{node}-{round}")).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let heard = members.iter_mut().flatten().all(|member| {
            member.drain();
            (0..nodes).all(|node| {
                let probe = format!("probe-{node}-");
                member.seen.iter().any(|body| body.starts_with(&probe))
            })
        });
        if heard {
            break;
        }
        deadline.pause().await;
    }
    for member in members.iter_mut().flatten() {
        member.drain();
        member.seen.clear();
    }
}

#[tokio::test]
async fn broadcasts_cross_nodes_exactly_once_and_in_each_publishers_order() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let prefix = format!("t{}", free_port());
    let mut nodes = Vec::new();
    for id in ["n1", "n2", "n3"] {
        nodes.push(Node::start(&redis, id, &prefix).await);
    }
    for node in &nodes {
        node.sees(3).await;
        let health = node.health().await;
        assert_eq!(health["status"], "ok");
        assert_eq!(health["cluster"]["engine"], "redis");
    }
    let ids: Vec<Value> = {
        let mut ids = Vec::new();
        for node in &nodes {
            ids.push(node.health().await["node"].clone());
        }
        ids
    };
    assert_eq!(ids, [json!("n1"), json!("n2"), json!("n3")]);

    let mut members = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let mut on_node = Vec::new();
        for m in 0..3 {
            on_node.push(Member::join(node, &format!("u{n}{m}"), "room:cluster").await);
        }
        members.push(on_node);
    }
    wait_until_connected(&mut members).await;

    const EACH: usize = 40;
    for i in 0..EACH {
        for (n, on_node) in members.iter_mut().enumerate() {
            on_node[0].post(&format!("m-{n}-{i}")).await;
        }
    }
    let expected = EACH * nodes.len();
    let deadline = Deadline::new("every member to receive every message");
    while !members.iter_mut().flatten().all(|member| {
        member.drain();
        member.seen.iter().filter(|b| b.starts_with("m-")).count() >= expected
    }) {
        deadline.pause().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for member in members.iter_mut().flatten() {
        member.drain();
        let real: Vec<&String> = member.seen.iter().filter(|b| b.starts_with("m-")).collect();
        let mut count: HashMap<&str, usize> = HashMap::new();
        for body in &real {
            *count.entry(body.as_str()).or_default() += 1;
        }
        assert_eq!(real.len(), expected, "exactly once: {count:?}");
        assert!(count.values().all(|&c| c == 1), "a duplicate: {count:?}");
        for n in 0..nodes.len() {
            let order: Vec<usize> = real
                .iter()
                .filter_map(|b| b.strip_prefix(&format!("m-{n}-")))
                .map(|i| i.parse().unwrap())
                .collect();
            assert_eq!(
                order,
                (0..EACH).collect::<Vec<_>>(),
                "publisher {n}'s order"
            );
        }
    }
}

#[tokio::test]
async fn a_redis_restart_is_survived_and_logged_once() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let prefix = format!("t{}", free_port());
    let a = Node::start(&redis, "a", &prefix).await;
    let b = Node::start(&redis, "b", &prefix).await;
    a.sees(2).await;
    b.sees(2).await;
    let mut members = vec![
        vec![Member::join(&a, "alice", "room:restart").await],
        vec![Member::join(&b, "bob", "room:restart").await],
    ];
    wait_until_connected(&mut members).await;

    redis.stop().await;
    for node in [&a, &b] {
        eventually("the node to notice Redis is gone", || async {
            node.health().await["cluster"]["connected"] == json!(false)
        })
        .await;
    }
    // Local clients are still served while Redis is away; nothing crosses.
    for i in 0..20 {
        members[0][0].post(&format!("during-{i}")).await;
    }
    let deadline = Deadline::new("alice's own messages while Redis is away");
    while !members[0][0].saw("during-19") {
        deadline.pause().await;
    }

    redis.restart().await;
    a.sees(2).await;
    b.sees(2).await;
    wait_until_connected(&mut members).await;
    members[0][0].post("after").await;
    let deadline = Deadline::new("bob to receive a message after the restart");
    while !members[1][0].saw("after") {
        deadline.pause().await;
    }
    let bob = &mut members[1][0];
    bob.drain();
    assert!(
        !bob.all.iter().any(|body| body.starts_with("during-")),
        "what was published while Redis was away does not arrive later"
    );
    for node in [&a, &b] {
        assert_eq!(
            node.log_lines("cluster: lost Redis"),
            1,
            "{:?}",
            node.log.lock().unwrap()
        );
        assert_eq!(node.log_lines("cluster: Redis back"), 1);
    }
    assert_eq!(a.log_lines("20 broadcasts published meanwhile"), 1);
}

#[tokio::test]
async fn a_node_killed_without_a_word_leaves_the_count() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let prefix = format!("t{}", free_port());
    let a = Node::start(&redis, "a", &prefix).await;
    let b = Node::start(&redis, "b", &prefix).await;
    let mut c = Node::start(&redis, "c", &prefix).await;
    a.sees(3).await;
    let killed = Instant::now();
    c.child.kill().await.unwrap();
    a.sees(2).await;
    b.sees(2).await;
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed.elapsed()
    );
}

/// The users a fresh joiner on `node` finds in `topic`'s presence.
async fn present(node: &Node, topic: &str) -> Vec<String> {
    let observer = Member::join(node, &format!("observer{}", free_port()), topic).await;
    let mut users: Vec<String> = observer
        .presence_state
        .as_object()
        .unwrap()
        .keys()
        .filter(|user| !user.starts_with("observer"))
        .cloned()
        .collect();
    users.sort();
    users
}

/// Waits until a fresh joiner on every node finds exactly `users` in `topic`.
async fn everyone_sees(nodes: &[&Node], topic: &str, users: &[&str]) {
    for node in nodes {
        let deadline = Deadline::new(&format!("{} to list {users:?} on {topic}", node.addr));
        while present(node, topic).await != users {
            deadline.pause().await;
        }
    }
}

#[tokio::test]
async fn presence_is_the_union_of_every_nodes_members_and_survives_faults() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let prefix = format!("t{}", free_port());
    let a = Node::start(&redis, "a", &prefix).await;
    let b = Node::start(&redis, "b", &prefix).await;
    let mut c = Node::start(&redis, "c", &prefix).await;
    for node in [&a, &b, &c] {
        node.sees(3).await;
    }
    let topic = "room:presence";
    let mut alice = Member::join(&a, "alice", topic).await;
    let mut bob = Member::join(&b, "bob", topic).await;
    let _carol = Member::join(&c, "carol", topic).await;
    everyone_sees(&[&a, &b, &c], topic, &["alice", "bob", "carol"]).await;
    // Members already there hear of the others' joins as diffs.
    alice.diff("+bob").await;
    alice.diff("+carol").await;

    // A node that dies without a word: its users leave everywhere within 10 s.
    let killed = Instant::now();
    c.child.kill().await.unwrap();
    everyone_sees(&[&a, &b], topic, &["alice", "bob"]).await;
    bob.diff("-carol").await;
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed.elapsed()
    );

    // Redis restarted while users come and go: exact again once it is back.
    redis.stop().await;
    for node in [&a, &b] {
        let deadline = Deadline::new("the node to notice Redis is gone");
        while node.health().await["cluster"]["connected"] != json!(false) {
            deadline.pause().await;
        }
    }
    alice.close().await;
    let _dave = Member::join(&b, "dave", topic).await;
    redis.restart().await;
    everyone_sees(&[&a, &b], topic, &["bob", "dave"]).await;
    assert!(
        a.log_lines("is gone") == 1 && b.log_lines("is gone") == 1,
        "a Redis outage is not taken for the death of the other node"
    );
}
