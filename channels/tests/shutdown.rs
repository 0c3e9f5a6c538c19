//! The server binary's life: it starts, tells where it listens, and on SIGTERM or SIGINT
//! closes every socket with 1001 and exits 0; a connection that cannot take its close
//! frame holds the exit back for the shutdown timeout only.

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use support::{fluxwire, signal, Log, Server, TIMEOUT};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Starts the binary on a free port with `args`; returns it, the address it logged, and
/// its log.
async fn start_server(args: &[&str]) -> (Child, String, Log) {
    let mut command = fluxwire();
    command.args(args);
    let Server {
        child, addr, log, ..
    } = Server::start(command).await;
    (child, addr, log)
}

/// The server's close code, skipping what comes before it.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    tokio::time::timeout(TIMEOUT, async {
        while let Some(message) = ws.next().await {
            if let Ok(Message::Close(frame)) = message {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("a close frame after the signal")
}

async fn shuts_down_on(signal_name: &str) {
    let (mut child, addr, _) = start_server(&[]).await;
    let health = http_get(&addr, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with(r#"{"status":"ok"}"#), "{health}");

    let url = format!("ws://{addr}/socket/websocket?user=bye&vsn=2.0.0");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::Text(r#"["1","1","all","phx_join",{}]"#.into()))
        .await
        .unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    assert!(
        reply.to_text().unwrap().contains(r#""status":"ok""#),
        "{reply}"
    );

    signal(&child, signal_name).await;
    assert_eq!(close_code(&mut ws).await, Some(1001));
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("the server exits after the signal")
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

/// A minimal HTTP/1.1 GET, enough for /health.
async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn sigterm_closes_sockets_with_1001_and_exits_0() {
    shuts_down_on("-TERM").await;
}

#[tokio::test]
async fn sigint_closes_sockets_with_1001_and_exits_0() {
    shuts_down_on("-INT").await;
}

/// Reads `ws` until a text frame for which `wanted` holds; returns it.
async fn next_text(ws: &mut Ws, mut wanted: impl FnMut(&Value) -> bool) -> Value {
    loop {
        let message = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("a frame in time")
            .expect("the connection is open")
            .expect("no WebSocket error");
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).expect("JSON");
            if wanted(&value) {
                return value;
            }
        }
    }
}

/// The largest send buffer the kernel lets a TCP socket grow to (`tcp_wmem`'s maximum).
fn max_send_buffer() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|text| text.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

/// A client that stops reading while the server has more for it than the two kernels'
/// buffers hold cannot take its close frame. On SIGTERM the other clients get 1001 and
/// the binary waits for that connection for the shutdown timeout only (not the 5 s it
/// would give the close frame), logs it, and exits 0.
#[tokio::test]
async fn a_connection_that_cannot_close_holds_the_exit_for_the_shutdown_timeout_only() {
    const SHUTDOWN_MS: u64 = 300;
    let (mut child, addr, log) = start_server(&[
        "--shutdown-timeout-ms",
        &SHUTDOWN_MS.to_string(),
        // No cut-off at the outbound bound: the stuck connection is only closed by
        // the shutdown.
        "--max-outbound-frames",
        "100000000",
        "--max-outbound-bytes",
        "1000000000",
    ])
    .await;
    let url = |user: &str| format!("ws://{addr}/socket/websocket?user={user}&vsn=2.0.0");
    let join = Message::Text(r#"["1","1","room:stuck","phx_join",{}]"#.into());
    let is_reply = |v: &Value| v[3] == "phx_reply";

    // The stuck client: a small receive buffer, so that the kernel holds little for it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    let (mut stuck, _) =
        tokio_tungstenite::client_async(url("stuck"), MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    stuck.send(join.clone()).await.unwrap();
    assert_eq!(next_text(&mut stuck, is_reply).await[4]["status"], "ok");
    let (mut reader, _) = tokio_tungstenite::connect_async(url("reader"))
        .await
        .unwrap();
    reader.send(join).await.unwrap();
    assert_eq!(next_text(&mut reader, is_reply).await[4]["status"], "ok");

    // The stuck client posts messages of 2,000 characters, which the room broadcasts to
    // both members, until more is queued for it than both kernels can buffer. The reader
    // paces the posts (at most 100 unanswered, well under a channel's inbound limit) and
    // tells when all have been broadcast.
    let body = "x".repeat(2000);
    let count = (max_send_buffer() + (2 << 20)) / body.len();
    let mut seen = 0;
    for i in 0..count {
        let post = json!(["1", (i + 2).to_string(), "room:stuck", "new_msg", {"body": body}]);
        stuck
            .send(Message::Text(post.to_string().into()))
            .await
            .unwrap();
        while seen + 100 <= i || (i + 1 == count && seen < count) {
            next_text(&mut reader, |v| v[3] == "new_msg").await;
            seen += 1;
        }
    }

    let signalled = Instant::now();
    signal(&child, "-TERM").await;
    assert_eq!(close_code(&mut reader).await, Some(1001));
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("the server exits after the signal")
        .unwrap();
    let took = signalled.elapsed();
    println!("exited {took:?} after SIGTERM, having sent {count} messages of 2,000 characters");
    assert!(status.success(), "exit status {status}");
    // It waited the timeout for the stuck connection, and not much more: ten timeouts
    // of slack, still short of the 5 s a close frame is given.
    assert!(
        took >= Duration::from_millis(SHUTDOWN_MS),
        "exited {took:?} after the signal, before the {SHUTDOWN_MS} ms timeout"
    );
    assert!(
        took < Duration::from_millis(SHUTDOWN_MS * 10),
        "exited {took:?} after the signal, far past the {SHUTDOWN_MS} ms timeout"
    );
    let waited = format!("1 connections did not close within {SHUTDOWN_MS}ms");
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(&waited)),
        "no {waited:?} in the log: {:?}",
        log.lock().unwrap()
    );
    drop(stuck);
}
