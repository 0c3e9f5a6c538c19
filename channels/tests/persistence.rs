//! The binary with `--data-dir`: `store:todos` and the rooms' messages survive a clean
//! restart with the same epoch (a client coming back gets operations, not the state); a
//! `kill -9` loses no acknowledged action and starts a new epoch; a corrupt or unusable
//! data dir stops the start with one line and a non-zero exit.

mod support;

use std::path::{Path, PathBuf};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use support::{fluxwire, signal, Server, TIMEOUT};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "fluxwire-persistence-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts the binary on a free port with `--data-dir dir`; returns it and its address.
async fn start_server(dir: &Path) -> (Child, String) {
    let mut command = fluxwire();
    command.arg("--data-dir").arg(dir);
    let Server { child, addr, .. } = Server::start(command).await;
    (child, addr)
}

async fn stop(mut child: Child, how: &str) {
    signal(&child, how).await;
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("the server exits")
        .unwrap();
    if how == "-TERM" {
        assert!(status.success(), "exit status {status}");
    }
}

/// A V2 client that numbers its messages and reads replies by ref.
struct Client {
    ws: Ws,
    next: u64,
}

impl Client {
    async fn connect(addr: &str, user: &str) -> Client {
        let url = format!("ws://{addr}/socket/websocket?user={user}&vsn=2.0.0");
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Client { ws, next: 0 }
    }

    /// Sends `event` and returns the reply's `{status, response}`.
    async fn call(&mut self, join_ref: &str, topic: &str, event: &str, payload: Value) -> Value {
        self.next += 1;
        let msg_ref = self.next.to_string();
        let frame = json!([join_ref, msg_ref, topic, event, payload]);
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
        tokio::time::timeout(TIMEOUT, async {
            loop {
                let message = self.ws.next().await.unwrap().unwrap();
                let Message::Text(text) = message else {
                    continue;
                };
                let frame: Value = serde_json::from_str(&text).unwrap();
                if frame[1] == msg_ref.as_str() && frame[3] == "phx_reply" {
                    return frame[4].clone();
                }
            }
        })
        .await
        .expect("a reply")
    }

    async fn join(&mut self, join_ref: &str, topic: &str, payload: Value) -> Value {
        let reply = self.call(join_ref, topic, "phx_join", payload).await;
        assert_eq!(reply["status"], "ok", "join {topic}: {reply}");
        reply["response"].clone()
    }

    async fn ok(&mut self, join_ref: &str, topic: &str, event: &str, payload: Value) -> Value {
        let reply = self.call(join_ref, topic, event, payload).await;
        assert_eq!(reply["status"], "ok", "{event}: {reply}");
        reply["response"].clone()
    }
}

#[tokio::test]
async fn a_clean_restart_keeps_todos_room_messages_and_the_epoch() {
    let dir = temp_dir("clean");
    let (child, addr) = start_server(&dir).await;
    let mut client = Client::connect(&addr, "keeper").await;
    let first = client.join("1", "store:todos", json!({})).await;
    for text in ["one", "two", "three"] {
        client
            .ok("1", "store:todos", "add", json!({"text": text}))
            .await;
    }
    let toggled = client
        .ok(
            "1",
            "store:todos",
            "toggle",
            json!({"id": first["version"].as_u64().unwrap() + 2}),
        )
        .await;
    let version = toggled["version"].as_u64().unwrap();
    let before = client.join("2", "store:todos", json!({})).await;
    client.join("3", "room:kept", json!({})).await;
    for body in ["hello", "again"] {
        client
            .ok("3", "room:kept", "new_msg", json!({"body": body}))
            .await;
    }
    stop(child, "-TERM").await;

    let (child, addr) = start_server(&dir).await;
    let mut client = Client::connect(&addr, "back").await;
    let epoch = before["epoch"].clone();
    let same = client
        .join(
            "1",
            "store:todos",
            json!({"epoch": epoch, "version": version}),
        )
        .await;
    assert_eq!(same, json!({"epoch": epoch, "version": version, "ops": []}));
    let older = client
        .join(
            "2",
            "store:todos",
            json!({"epoch": epoch, "version": version - 2}),
        )
        .await;
    assert_eq!(older["ops"].as_array().map(Vec::len), Some(2), "{older}");
    let state = client.join("3", "store:todos", json!({})).await;
    assert_eq!(state["state"], before["state"]);
    assert_eq!(state["version"], version);
    let room = client.join("4", "room:kept", json!({})).await;
    let bodies: Vec<&str> = room["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["hello", "again"]);
    let posted = client
        .ok("4", "room:kept", "new_msg", json!({"body": "later"}))
        .await;
    assert_eq!(posted["id"], 3, "ids continue after a restart");
    stop(child, "-TERM").await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_action_and_starts_a_new_epoch() {
    let dir = temp_dir("kill");
    let (child, addr) = start_server(&dir).await;
    let mut client = Client::connect(&addr, "doomed").await;
    let first = client.join("1", "store:todos", json!({})).await;
    let mut last = 0;
    for n in 0..25 {
        let added = client
            .ok("1", "store:todos", "add", json!({"text": format!("t{n}")}))
            .await;
        last = added["version"].as_u64().unwrap();
    }
    stop(child, "-KILL").await;

    let (child, addr) = start_server(&dir).await;
    let mut client = Client::connect(&addr, "after").await;
    let back = client
        .join(
            "1",
            "store:todos",
            json!({"epoch": first["epoch"], "version": last}),
        )
        .await;
    assert_ne!(back["epoch"], first["epoch"], "a crash starts a new epoch");
    assert_eq!(back["version"], last, "versions go on");
    let texts: Vec<&str> = back["state"]["todos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..25).map(|n| format!("t{n}")).collect();
    assert_eq!(texts, expected, "every acknowledged todo is there");
    let added = client
        .ok("1", "store:todos", "add", json!({"text": "new"}))
        .await;
    assert_eq!(added["version"], last + 1);
    stop(child, "-TERM").await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs the binary with `--data-dir dir`; it must exit non-zero; returns its stderr.
async fn refused_start(dir: &Path) -> String {
    let output = tokio::time::timeout(
        TIMEOUT,
        fluxwire()
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .output(),
    )
    .await
    .expect("the server exits")
    .unwrap();
    assert!(
        !output.status.success(),
        "a bad data dir must stop the start"
    );
    String::from_utf8(output.stderr).unwrap()
}

#[tokio::test]
async fn a_corrupt_or_unusable_data_dir_stops_the_start_with_one_line() {
    let dir = temp_dir("corrupt");
    std::fs::write(dir.join("fluxwire.redb"), vec![0xa5; 8192]).unwrap();
    let stderr = refused_start(&dir).await;
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let expected = format!(
        "fluxwire: data dir {}: cannot open fluxwire.redb",
        dir.display()
    );
    assert!(lines[0].starts_with(&expected), "{stderr}");

    let file = dir.join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let stderr = refused_start(&file).await;
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot create it"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
