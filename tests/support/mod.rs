//! Shared by the integration tests: a test application (an echo channel and its socket),
//! a server started on an ephemeral port, and a small Phoenix V1/V2 WebSocket client.
#![allow(dead_code)]

use std::any::Any;
use std::time::Duration;

use bytes::Bytes;
use fluxwire::{
    Assigns, Channel, ChannelContext, Config, ConnectInfo, Endpoint, JoinParams, Params, Payload,
    Reason, Refused, Reply, Router, RunningServer, Socket, SocketHandler,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Accepts any non-empty `user`; the socket id is the user name.
pub struct TestSocket;

impl Socket for TestSocket {
    fn connect(&self, params: &Params, _info: &ConnectInfo) -> Result<Assigns, Refused> {
        match params.get("user") {
            Some(user) if !user.is_empty() => Ok(Assigns::new().with("user", user)),
            _ => Err(Refused("missing user".into())),
        }
    }

    fn id(&self, assigns: &Assigns) -> Option<String> {
        assigns.get_str("user").map(str::to_owned)
    }
}

/// `echo:*`: the channel the phoenix.js tests (tests/js) and the Rust tests use. Join
/// parameters and events ask it to panic in each place the framework catches a panic:
/// `join` (`crash`), an asynchronous join (`crash_later`), `handle_in` (`crash`), an
/// asynchronous reply (`crash_later`), `handle_info` (`crash_info`), `handle_out` (a
/// `fragile` broadcast naming the member's user) and `terminate` (joined with
/// `crash_on_terminate`).
#[derive(Default)]
pub struct EchoChannel {
    crash_on_terminate: bool,
}

/// Sent to a channel's own `handle_info` to make it panic there.
struct CrashInInfo;

impl Channel for EchoChannel {
    fn join(&mut self, params: &JoinParams, ctx: &mut ChannelContext<'_, Self>) -> Reply {
        let asked = |key: &str| params.get(key) == Some(&json!(true));
        if asked("refuse") {
            return Reply::reason("refused");
        }
        if asked("crash") {
            panic!("join asked to crash");
        }
        if asked("crash_later") {
            return Reply::later(async { panic!("the asynchronous join asked to crash") });
        }
        self.crash_on_terminate = asked("crash_on_terminate");
        let response = json!({"topic": ctx.topic(), "user": ctx.assigns().get_str("user")});
        match params.get("delay_ms").and_then(Value::as_u64) {
            Some(ms) => Reply::later(async move {
                actix::clock::sleep(Duration::from_millis(ms)).await;
                Reply::ok(response)
            }),
            None => Reply::ok(response),
        }
    }

    fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext<'_, Self>,
    ) -> Reply {
        match event {
            "echo" => Reply::Ok(payload),
            "shout" | "bin_shout" | "censored" | "fragile" => {
                ctx.broadcast(event, payload);
                Reply::ok_empty()
            }
            "shout_others" => {
                ctx.broadcast_from("shout", payload);
                Reply::ok_empty()
            }
            "bin" => match payload {
                Payload::Binary(bytes) => Reply::Ok(Payload::Binary(bytes)),
                Payload::Json(_) | Payload::Encoded(_) => Reply::reason("expected binary"),
            },
            "push_me" => {
                ctx.push("pushed", json!({"n": 1}));
                Reply::ok_empty()
            }
            "interleave" => {
                ctx.push("pushed", json!({"n": 1}));
                ctx.broadcast("shout", json!({"n": 2}));
                ctx.push("pushed", json!({"n": 3}));
                Reply::ok(json!({"n": 4}))
            }
            "later" => Reply::later(async {
                actix::clock::sleep(Duration::from_millis(50)).await;
                Reply::ok(json!({"later": true}))
            }),
            "stop" => {
                ctx.stop();
                Reply::ok_empty()
            }
            "crash" => panic!("handle_in asked to crash"),
            "crash_later" => Reply::later(async {
                actix::clock::sleep(Duration::from_millis(10)).await;
                panic!("the asynchronous reply asked to crash")
            }),
            "crash_info" => {
                ctx.handle().send(CrashInInfo);
                Reply::ok_empty()
            }
            "info_me" => {
                ctx.handle().send(payload);
                Reply::ok_empty()
            }
            _ => Reply::reason("unknown event"),
        }
    }

    /// Sends a message's payload back to the client as an `info` push.
    fn handle_info(&mut self, message: Box<dyn Any + Send>, ctx: &mut ChannelContext<'_, Self>) {
        if message.is::<CrashInInfo>() {
            panic!("handle_info asked to crash");
        }
        if let Ok(payload) = message.downcast::<Payload>() {
            ctx.push("info", *payload);
        }
    }

    fn terminate(&mut self, _reason: Reason, _ctx: &mut ChannelContext<'_, Self>) {
        if self.crash_on_terminate {
            panic!("terminate asked to crash");
        }
    }

    /// `censored` and `fragile` broadcasts are rewritten per member instead of going out
    /// as shared frames.
    fn intercepts(&self) -> &'static [&'static str] {
        &["censored", "fragile"]
    }

    /// A `fragile` broadcast whose `crash_for` names this member's user panics here.
    fn handle_out(&mut self, event: &str, payload: &Payload, ctx: &mut ChannelContext<'_, Self>) {
        let original = payload.as_json().cloned().unwrap_or_default();
        if event == "fragile" && original.get("crash_for") == ctx.assigns().get("user") {
            panic!("handle_out asked to crash");
        }
        ctx.push(
            event,
            json!({"censored": true, "original": original, "for": ctx.assigns().get_str("user")}),
        );
    }
}

pub fn test_router() -> Router {
    Router::new()
        .channel("echo:*", |_topic: &str| EchoChannel::default())
        .channel("crash:*", |topic: &str| -> EchoChannel {
            panic!("the constructor of {topic} asked to crash")
        })
}

/// Starts the test application with `config`, mounted at `/socket` and `/status`, plus
/// the WebSocket echo at `/echo`.
pub fn start_with(config: Config) -> RunningServer {
    let _ = env_logger::builder().is_test(true).try_init();
    Endpoint::new(config, |_| SocketHandler::new(TestSocket, test_router()))
        .mount("/socket")
        .mount("/status")
        .echo("/echo")
        .spawn()
        .expect("server starts")
}

pub fn start() -> RunningServer {
    start_with(Config::ephemeral())
}

/// Starts the real default application (fluxwire-channels) with `config`, mounted at
/// `/socket` and `/status`, serving the demo page from static/.
pub fn start_app_with(mut config: Config) -> RunningServer {
    let _ = env_logger::builder().is_test(true).try_init();
    config.static_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
    Endpoint::new(config, fluxwire_channels::app)
        .mount("/socket")
        .mount("/status")
        .spawn()
        .expect("the app server starts")
}

pub fn start_app() -> RunningServer {
    start_app_with(Config::ephemeral())
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw Phoenix client over tungstenite.
pub struct Client {
    pub ws: Ws,
}

pub const TIMEOUT: Duration = Duration::from_secs(5);

impl Client {
    pub async fn connect(server: &RunningServer, query: &str) -> Client {
        let url = format!("ws://{}/socket/websocket?{query}", server.addr());
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Client { ws }
    }

    /// Connects with `vsn=2.0.0` as `user`.
    pub async fn v2(server: &RunningServer, user: &str) -> Client {
        Self::connect(server, &format!("user={user}&vsn=2.0.0")).await
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("send");
    }

    /// Sends a V2 message.
    pub async fn send(
        &mut self,
        join_ref: Value,
        msg_ref: Value,
        topic: &str,
        event: &str,
        payload: Value,
    ) {
        let frame = json!([join_ref, msg_ref, topic, event, payload]);
        self.send_text(&frame.to_string()).await;
    }

    /// Next data frame, skipping pings; panics on timeout or close.
    pub async fn recv(&mut self) -> Message {
        loop {
            let next = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("a message within 5 s")
                .expect("stream open")
                .expect("no websocket error");
            match next {
                Message::Ping(_) | Message::Pong(_) => continue,
                other => return other,
            }
        }
    }

    /// Next text frame, parsed as JSON.
    pub async fn recv_json(&mut self) -> Value {
        match self.recv().await {
            Message::Text(text) => serde_json::from_str(&text).expect("server sends JSON"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    pub async fn recv_binary(&mut self) -> Bytes {
        match self.recv().await {
            Message::Binary(bytes) => bytes,
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }

    /// Joins `topic` with `join_ref` (also its ref) and returns the reply.
    pub async fn join(&mut self, topic: &str, join_ref: &str, payload: Value) -> Value {
        self.send(json!(join_ref), json!(join_ref), topic, "phx_join", payload)
            .await;
        self.recv_json().await
    }

    /// Waits for the server's close frame; returns its code.
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            let next = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("a close within 5 s");
            match next {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(Message::Close(None))) => return u16::from(CloseCode::Status),
                Some(Ok(Message::Text(text))) => panic!("expected a close, got {text}"),
                Some(Ok(_)) => continue,
                Some(Err(error)) => panic!("expected a close frame, got error {error}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }

    /// Asserts that nothing the server queued for this client before now is still
    /// unread: a heartbeat's reply is the very next frame. A connection's frames leave
    /// in the order they were queued (pushes, replies and broadcasts alike, through its
    /// outlet), so anything queued before the heartbeat would arrive first. A close, a
    /// broken connection or a timeout fails too. V2 clients only.
    pub async fn expect_nothing_pending(&mut self) {
        let marker = format!("pending-check-{}", uuid::Uuid::new_v4());
        self.send(
            json!(null),
            json!(marker),
            "phoenix",
            "heartbeat",
            json!({}),
        )
        .await;
        assert_eq!(
            self.recv_json().await,
            reply(json!(null), json!(marker), "phoenix", "ok", json!({})),
            "expected nothing before the heartbeat's reply"
        );
    }
}

/// Polls `check` every 5 ms for up to 5 s; fails naming `what` if it never holds.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The reply a V2 client expects: `[join_ref, ref, topic, "phx_reply", {status, response}]`.
pub fn reply(join_ref: Value, msg_ref: Value, topic: &str, status: &str, response: Value) -> Value {
    json!([join_ref, msg_ref, topic, "phx_reply", {"status": status, "response": response}])
}

/// The first `n` fields of a V2 message, to compare without the payload.
pub fn head(message: &Value, n: usize) -> Value {
    Value::Array(message.as_array().expect("a V2 array")[..n].to_vec())
}

/// Runs `node --test <file>` in tests/js against `url` (installing the npm packages
/// with `npm ci` first if they are missing) and fails with node's output if any test
/// fails.
pub fn run_node_tests(file: &str, url: &str) {
    run_node_tests_with_env(file, &[("FLUXWIRE_URL", url)], &[]);
}

/// Runs `node --test <file>` in tests/js with `env` (e.g. `FLUXWIRE_URL`,
/// `FLUXWIRE_HTTP`); fails with node's output if any test fails. Installs the npm packages with `npm ci`
/// when `node_modules` is missing or lacks one of the `required` packages.
pub fn run_node_tests_with_env(file: &str, env: &[(&str, &str)], required: &[&str]) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    let modules = dir.join("node_modules");
    if !modules.is_dir() || required.iter().any(|p| !modules.join(p).is_dir()) {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm runs (Node.js 20 and npm must be installed)");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    let mut command = std::process::Command::new("node");
    command
        .args(["--test", "--test-reporter=spec", file])
        .current_dir(&dir);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command
        .output()
        .expect("node runs (Node.js 20 must be installed)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "node --test {file} failed:\n{stdout}\n{stderr}"
    );
}

/// The HTTP status a WebSocket handshake to `url` with `headers` gets (101 when upgraded).
pub async fn handshake_status(url: String, headers: &[(&'static str, &str)]) -> StatusCode {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status(),
        Err(WsError::Http(response)) => response.status(),
        Err(other) => panic!("unexpected handshake error: {other}"),
    }
}
