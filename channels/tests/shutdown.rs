//! The server binary's life: it starts, tells where it listens, and on SIGTERM or SIGINT
//! closes every socket with 1001 and exits 0.

use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the binary on a free port; returns it and the address it logged.
async fn start_server() -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fluxwire"))
        .args(["--port", "0", "--static-dir", "../static"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the fluxwire binary starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some((_, addr)) = line.split_once("fluxwire listening on http://") {
                return addr.trim().to_owned();
            }
        }
        panic!("the server exited before listening");
    })
    .await
    .expect("the server logs its address");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

async fn shuts_down_on(signal: &str) {
    let (mut child, addr) = start_server().await;
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

    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args([signal, &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let code = tokio::time::timeout(TIMEOUT, async {
        while let Some(message) = ws.next().await {
            if let Ok(Message::Close(frame)) = message {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("a close frame after the signal");
    assert_eq!(code, Some(1001));
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
