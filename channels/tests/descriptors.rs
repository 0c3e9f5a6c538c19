//! The server binary under a low RLIMIT_NOFILE (set in the child before it starts): once
//! its connections reach the limit less `--fd-reserve`, new ones are answered 503 and
//! closed at once, the open ones keep working, the condition is logged once per interval,
//! and the process never runs out of descriptors (no "Too many open files" from the
//! accept loop, no connection left waiting in the backlog).

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use support::{fluxwire, Log, Server, TIMEOUT};

/// The child's descriptor limit, and the reserve: room for 80 connections.
const NOFILE: u64 = 128;
const RESERVE: u64 = 48;
const ROOM: usize = (NOFILE - RESERVE) as usize;

/// Starts the binary on a free port with RLIMIT_NOFILE at [`NOFILE`]; returns it, its
/// address, and every line it logs.
async fn start_server() -> (Child, String, Log) {
    let mut command = fluxwire();
    command
        .args(["--workers", "1"])
        .env("FLUXWIRE_FD_RESERVE", RESERVE.to_string());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: NOFILE,
                rlim_max: NOFILE,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let Server {
        child, addr, log, ..
    } = Server::start(command).await;
    (child, addr, log)
}

/// What the server answers a new connection that sends nothing, read until it closes.
async fn silent_connection(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut bytes))
        .await
        .expect("answered and closed within 5 s, not left in the backlog")
        .expect("response read");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The status line of a GET on a connection of its own.
async fn get_status(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(request.as_bytes()).await;
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut bytes))
        .await
        .expect("answered within 5 s");
    let text = String::from_utf8_lossy(&bytes);
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn past_the_descriptor_reserve_new_connections_get_503_and_open_ones_live_on() {
    let (mut child, addr, logged) = start_server().await;
    let url = format!("ws://{addr}/socket/websocket?user=fd&vsn=2.0.0");

    // Far more WebSockets than the limit itself, one after the other.
    let mut open = Vec::new();
    let mut refused = 0;
    for attempt in 1..=NOFILE as usize + 32 {
        let connect = tokio_tungstenite::connect_async(url.as_str());
        match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok((ws, _))) => open.push(ws),
            Ok(Err(WsError::Http(response))) => {
                assert_eq!(response.status(), 503, "attempt {attempt}");
                refused += 1;
            }
            // Refused before its request was read: the close may reset it.
            Ok(Err(_)) => refused += 1,
            Err(_) => panic!("attempt {attempt} got no answer within 5 s"),
        }
    }
    assert_eq!(open.len(), ROOM, "connections let in");
    assert_eq!(refused, NOFILE as usize + 32 - ROOM);

    // A new connection is told why, at once.
    let answer = silent_connection(&addr).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(
        answer.ends_with("the server is at its connection limit\n"),
        "{answer}"
    );
    assert!(get_status(&addr, "/health").await.contains("503"));

    // The open ones still work.
    let ws = &mut open[0];
    ws.send(Message::Text(
        r#"[null,"1","phoenix","heartbeat",{}]"#.into(),
    ))
    .await
    .unwrap();
    let reply = tokio::time::timeout(TIMEOUT, ws.next())
        .await
        .expect("a heartbeat reply")
        .unwrap()
        .unwrap();
    assert!(
        reply.to_text().unwrap().contains(r#""status":"ok""#),
        "{reply}"
    );

    // Some close: new connections come in again.
    for mut ws in open.drain(..10) {
        let _ = ws.close(None).await;
    }
    let deadline = Instant::now() + TIMEOUT;
    while !get_status(&addr, "/health").await.contains("200") {
        assert!(Instant::now() < deadline, "no room after 10 closes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let _ = child.start_kill();
    let _ = child.wait().await;
    let logged = logged.lock().unwrap();
    let exhausted: Vec<&String> = logged
        .iter()
        .filter(|line| {
            line.contains("Too many open files") || line.contains("accepting connection")
        })
        .collect();
    assert!(exhausted.is_empty(), "the process ran out: {exhausted:#?}");
    // Well over a hundred refusals, logged once per 10 s interval.
    let lines = logged
        .iter()
        .filter(|line| line.contains("refusing new connections with 503"))
        .count();
    assert!(
        (1..=3).contains(&lines),
        "{lines} refusal lines: {logged:#?}"
    );
}
