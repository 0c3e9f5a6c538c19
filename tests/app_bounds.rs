//! What one user can make the default application send or keep (issue 10): `all`'s
//! `status_users` stays small enough for a member reading at an ordinary speed, whatever
//! another user posts; chat rooms are capped in number and dropped when idle.

mod support;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use fluxwire::{Config, Endpoint};
use fluxwire_channels::AppConfig;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::Client;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::Message;

/// The default `--max-outbound-bytes`.
const BOUND: usize = 1024 * 1024;

/// A TCP stream that reads at most `rate` bytes per second (a client on a slow link), with
/// a small receive buffer so that the kernel does not read ahead for it.
struct Throttled {
    io: TcpStream,
    rate: f64,
    start: Instant,
    taken: usize,
    wait: Option<Pin<Box<Sleep>>>,
}

const CHUNK: usize = 16 * 1024;

impl Throttled {
    async fn connect(addr: std::net::SocketAddr, rate: f64) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(64 * 1024).unwrap();
        Throttled {
            io: socket.connect(addr).await.expect("connects"),
            rate,
            start: Instant::now(),
            taken: 0,
            wait: None,
        }
    }
}

impl AsyncRead for Throttled {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(wait) = &mut this.wait {
                ready!(wait.as_mut().poll(cx));
                this.wait = None;
            }
            let earned = (this.start.elapsed().as_secs_f64() * this.rate) as usize;
            // Credit saved while idle is capped: at most two chunks in a burst.
            this.taken = this.taken.max(earned.saturating_sub(2 * CHUNK));
            let room = earned.saturating_sub(this.taken).min(buf.remaining());
            if room == 0 {
                this.wait = Some(Box::pin(tokio::time::sleep(Duration::from_millis(2))));
                continue;
            }
            let mut chunk = vec![0; room.min(CHUNK)];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            this.taken += read.filled().len();
            buf.put_slice(read.filled());
            return Poll::Ready(Ok(()));
        }
    }
}

impl AsyncWrite for Throttled {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// What the slow member saw.
#[derive(Debug, Default)]
struct Seen {
    largest_status: usize,
    statuses: usize,
    last_hits: u64,
    closed: Option<String>,
}

/// The largest body the contract allows, in bytes: 2000 astral code points (4 bytes
/// each) and 2000 ideographic spaces around them (3 bytes each).
fn worst_body(i: u32) -> String {
    let pad = "\u{3000}".repeat(1000);
    let text = char::from_u32(0x1F600 + i % 10)
        .unwrap()
        .to_string()
        .repeat(2000);
    format!("{pad}{text}{pad}")
}

/// Sends `event` on `all` and reads (skipping broadcasts) until its reply.
async fn call(client: &mut Client, r: &mut u64, event: &str, payload: Value) -> Value {
    *r += 1;
    let msg_ref = r.to_string();
    client
        .send(json!("1"), json!(msg_ref), "all", event, payload)
        .await;
    loop {
        let message = client.recv_json().await;
        if message[1] == json!(msg_ref) && message[3] == "phx_reply" {
            assert_eq!(message[4]["status"], "ok", "{event}: {message}");
            return message[4]["response"].clone();
        }
    }
}

#[tokio::test]
async fn a_member_reading_at_5_mb_per_s_is_not_cut_off_by_worst_case_posts_and_a_hit_flood() {
    let server = support::start_app();
    // The member on a slow link: 5 MB/s.
    let stream = Throttled::connect(server.addr(), 5_000_000.0).await;
    let url = format!(
        "ws://{}/socket/websocket?user=slow&vsn=2.0.0",
        server.addr()
    );
    let (mut slow, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("the slow member connects");
    slow.send(Message::Text(r#"["1","1","all","phx_join",{}]"#.into()))
        .await
        .unwrap();
    let (stop, mut stopped) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn(async move {
        let mut seen = Seen::default();
        let mut target = None;
        loop {
            let next = tokio::select! {
                next = slow.next() => next,
                _ = stopped.changed() => {
                    target = Some(*stopped.borrow());
                    continue;
                }
            };
            match next {
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(&text).unwrap();
                    if message[3] == "status_users" {
                        seen.statuses += 1;
                        seen.largest_status = seen.largest_status.max(text.len());
                        seen.last_hits = message[4]["hits"].as_u64().unwrap();
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    seen.closed = Some(format!("{frame:?}"));
                    return seen;
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    seen.closed = Some(format!("error {error}"));
                    return seen;
                }
                None => {
                    seen.closed = Some("connection ended".into());
                    return seen;
                }
            }
            if target.is_some_and(|hits| seen.last_hits >= hits) {
                return seen;
            }
        }
    });

    let mut poster = Client::v2(&server, "poster").await;
    let joined = poster.join("all", "1", json!({})).await;
    assert_eq!(joined[4]["status"], "ok", "{joined}");
    let mut r = 1;
    // 100 of the largest bodies, paced so that the new_msg broadcasts themselves
    // (14 KB each) stay under the member's 5 MB/s: only status_users is on trial.
    for i in 0..100 {
        call(
            &mut poster,
            &mut r,
            "new_msg",
            json!({ "body": worst_body(i) }),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(6)).await;
    }
    // Then 3 s of hits, each making a new status_users for every member.
    let flood = Instant::now();
    let mut hits = 0;
    while flood.elapsed() < Duration::from_secs(3) {
        hits = call(&mut poster, &mut r, "hit", json!({})).await["hits"]
            .as_u64()
            .unwrap();
    }
    // The reader may have ended already (cut off): its result says so.
    let _ = stop.send(hits);
    let seen = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the slow member catches up with the last hit within 20 s")
        .unwrap();
    println!("the slow member saw: {seen:?}");
    assert_eq!(seen.closed, None, "the slow member was cut off: {seen:?}");
    assert!(seen.last_hits >= hits, "{seen:?}");
    assert!(
        seen.largest_status < BOUND / 10,
        "largest status_users: {} bytes (bound {BOUND}): {seen:?}",
        seen.largest_status
    );
    server.stop();
}

/// `room:NAME` with small bounds (3 rooms, 500 ms idle), through phoenix.js
/// (tests/js/app_bounds.test.mjs): the cap, and idle rooms dropped.
#[test]
fn rooms_are_capped_and_idle_ones_dropped_through_phoenix_js() {
    let app = AppConfig {
        max_rooms: 3,
        room_idle_timeout_ms: 500,
    };
    let mut config = Config::ephemeral();
    config.static_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
    let server = Endpoint::new(config, fluxwire_channels::app_with(app.clone()))
        .mount("/socket")
        .spawn()
        .expect("the app server starts");
    let url = format!("ws://{}/socket", server.addr());
    let (max_rooms, idle) = (
        app.max_rooms.to_string(),
        app.room_idle_timeout_ms.to_string(),
    );
    support::run_node_tests_with_env(
        "app_bounds.test.mjs",
        &[
            ("FLUXWIRE_URL", &url),
            ("FLUXWIRE_MAX_ROOMS", &max_rooms),
            ("FLUXWIRE_ROOM_IDLE_TIMEOUT_MS", &idle),
        ],
        &[],
    );
    server.stop();
}
