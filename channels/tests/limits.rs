//! What one client may cost the binary, through a real client and the server's own log
//! (its stderr, at the default level): rate limits on messages and joins, and log lines
//! a client cannot forge nor multiply (docs/protocol.md §10).

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use support::{fluxwire, Server, TIMEOUT};

/// The binary at its default log level (`RUST_LOG` unset), with `env` set.
async fn start(env: &[(&str, &str)]) -> Server {
    let mut command = fluxwire();
    command.env_remove("RUST_LOG");
    for (key, value) in env {
        command.env(key, value);
    }
    Server::start(command).await
}

struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// How the server's log lines name this client.
    peer: String,
}

/// The log lines about `client`.
fn lines_of<'a>(log: &'a [String], client: &Client) -> Vec<&'a String> {
    let prefix = format!("{}: ", client.peer);
    log.iter().filter(|line| line.contains(&prefix)).collect()
}

impl Client {
    async fn connect(server: &Server, user: &str) -> Client {
        let stream = TcpStream::connect(&server.addr).await.unwrap();
        let peer = stream.local_addr().unwrap().to_string();
        let url = format!(
            "ws://{}/socket/websocket?user={user}&vsn=2.0.0",
            server.addr
        );
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("websocket connects");
        Client { ws, peer }
    }

    /// Queues a V2 message; `flush` sends everything queued at once.
    async fn feed(&mut self, message: Value) {
        self.ws
            .feed(Message::Text(message.to_string().into()))
            .await
            .unwrap();
    }

    async fn flush(&mut self) {
        self.ws.flush().await.unwrap();
    }

    async fn send(&mut self, message: Value) {
        self.feed(message).await;
        self.flush().await;
    }

    /// The next message, or the close code.
    async fn recv(&mut self) -> Result<Value, u16> {
        loop {
            let next = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("a message within the timeout");
            match next {
                Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(frame))) => {
                    return Err(frame.map_or(1005, |f| u16::from(f.code)))
                }
                Some(Ok(_)) => continue,
                other => panic!("expected a message or a close, got {other:?}"),
            }
        }
    }

    async fn recv_json(&mut self) -> Value {
        self.recv().await.expect("a message, not a close")
    }
}

fn heartbeat(msg_ref: usize) -> Value {
    json!([null, msg_ref.to_string(), "phoenix", "heartbeat", {}])
}

/// The `status` and `reason` of a reply.
fn outcome(reply: &Value) -> (String, String) {
    let payload = &reply[4];
    let reason = payload["response"]["reason"].as_str().unwrap_or("");
    (
        payload["status"].as_str().unwrap().to_owned(),
        reason.to_owned(),
    )
}

#[tokio::test]
async fn a_newline_in_an_event_name_does_not_forge_a_log_line() {
    let server = start(&[]).await;
    let mut client = Client::connect(&server, "forger").await;
    let forged = "[2030-01-01T00:00:00Z ERROR fluxwire] forged by the client";
    client
        .send(json!([null, "1", "nope", format!("ev\n{forged}"), {}]))
        .await;
    let reply = client.recv_json().await;
    assert_eq!(outcome(&reply), ("error".into(), "unmatched topic".into()));
    server.wait_for("on unmatched topic").await;
    let log = server.stop().await;
    // A newline would start a line of its own (env_logger indents it by four spaces).
    let forgeries: Vec<&String> = log
        .iter()
        .filter(|line| line.trim_start().starts_with(forged))
        .collect();
    assert!(forgeries.is_empty(), "forged lines: {forgeries:?}");
    let expected = format!("\"ev\\n{forged}\" on unmatched topic \"nope\"");
    assert_eq!(lines_of(&log, &client).len(), 1);
    assert!(lines_of(&log, &client)[0].ends_with(&expected), "{log:#?}");
}

#[tokio::test]
async fn a_flood_of_unmatched_topics_writes_a_bounded_log() {
    let server = start(&[]).await;
    let mut client = Client::connect(&server, "flooder").await;
    // 1,000 messages with 250-byte event names (the longest the server takes is 255):
    // 250 KB of names, within the message burst.
    const COUNT: usize = 1_000;
    let name = "x".repeat(250);
    for n in 0..COUNT {
        client
            .feed(json!([null, n.to_string(), format!("nope:{n}"), name, {}]))
            .await;
    }
    client.flush().await;
    for _ in 0..COUNT {
        let reply = client.recv_json().await;
        assert_eq!(outcome(&reply), ("error".into(), "unmatched topic".into()));
    }
    client.ws.close(None).await.unwrap();
    // The count of what was left out is told when the connection ends.
    server.wait_for("from this client suppressed").await;
    let log = server.stop().await;
    let of_client = lines_of(&log, &client);
    assert!(
        of_client.len() <= 11,
        "{} lines about the client: at most 10 warnings and the count",
        of_client.len()
    );
    let told = format!(
        "{}: 990 more warnings from this client suppressed",
        client.peer
    );
    let last = of_client.last().unwrap();
    assert!(
        last.ends_with(&format!("{told} (at most 10 per 60 s)")),
        "{last}"
    );
    assert!(
        of_client.iter().all(|line| line.len() < 400),
        "each line short: {of_client:#?}"
    );
    let bytes: usize = log.iter().map(|l| l.len() + 1).sum();
    assert!(
        bytes < 8_000,
        "{bytes} bytes of log for 1 MB of event names"
    );
}

const SMALL_RATES: [(&str, &str); 4] = [
    ("FLUXWIRE_RATE_MESSAGES_BURST", "5"),
    ("FLUXWIRE_RATE_MESSAGES_PER_SEC", "1"),
    ("FLUXWIRE_RATE_JOINS_BURST", "1"),
    ("FLUXWIRE_RATE_JOINS_PER_SEC", "1"),
];

#[tokio::test]
async fn a_burst_over_the_rate_is_refused_then_served_after_the_refill() {
    let server = start(&SMALL_RATES).await;
    let mut client = Client::connect(&server, "eager").await;
    let started = Instant::now();
    for n in 0..10 {
        client.feed(heartbeat(n)).await;
    }
    client.flush().await;
    let mut outcomes = Vec::new();
    for n in 0..10 {
        let reply = client.recv_json().await;
        assert_eq!(reply[1], json!(n.to_string()), "replies in order");
        outcomes.push(outcome(&reply));
    }
    let ok = ("ok".to_owned(), String::new());
    let limited = ("error".to_owned(), "rate limited".to_owned());
    assert_eq!(
        outcomes[..5],
        [ok.clone(), ok.clone(), ok.clone(), ok.clone(), ok.clone()]
    );
    // One message a second refills the burst: at most that many more got through.
    let refilled = started.elapsed().as_secs() as usize + 1;
    let refused = outcomes.iter().filter(|o| **o == limited).count();
    assert!(refused >= 5_usize.saturating_sub(refilled), "{outcomes:?}");
    assert!(refused >= 1, "{outcomes:?}");
    assert_eq!(refused + outcomes.iter().filter(|o| **o == ok).count(), 10);
    server
        .wait_for(&format!(
            "{}: over the message rate limit (5 at once, 1/s)",
            client.peer
        ))
        .await;

    // The connection lives on, and is served again once the rate has refilled.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    client.send(heartbeat(10)).await;
    assert_eq!(outcome(&client.recv_json().await), ok);

    // Joins have their own rate: one at once here.
    let mut joiner = Client::connect(&server, "joiner").await;
    for (n, room) in ["a", "b", "c", "d"].iter().enumerate() {
        let join_ref = n.to_string();
        joiner
            .feed(json!([
                join_ref,
                join_ref,
                format!("room:{room}"),
                "phx_join",
                {}
            ]))
            .await;
    }
    joiner.flush().await;
    // Replies by ref: the refusals may come before the first join's reply.
    let mut join_outcomes = [None, None, None, None];
    while join_outcomes.iter().any(Option::is_none) {
        let message = joiner.recv_json().await;
        if message[3] == "phx_reply" {
            let n: usize = message[1].as_str().unwrap().parse().unwrap();
            join_outcomes[n] = Some(outcome(&message));
        }
    }
    assert_eq!(join_outcomes[0], Some(ok), "{join_outcomes:?}");
    assert!(join_outcomes.contains(&Some(limited)), "{join_outcomes:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_flood_far_past_the_rate_is_closed_with_1008_and_one_line() {
    let server = start(&SMALL_RATES).await;
    let mut client = Client::connect(&server, "flood").await;
    for n in 0..200 {
        client.feed(heartbeat(n)).await;
    }
    client.flush().await;
    let (mut ok, mut limited) = (0, 0);
    let code = loop {
        match client.recv().await {
            Ok(reply) if outcome(&reply).0 == "ok" => ok += 1,
            Ok(_) => limited += 1,
            Err(code) => break code,
        }
    };
    assert_eq!(code, 1008);
    assert!(ok >= 5, "the burst was served: {ok}");
    // 10 bursts' worth refused: 49 answered, the 50th closes.
    assert!(limited <= 49, "{limited}");
    let closing = format!(
        "{}: closing with 1008 (rate limit exceeded): 50 messages refused",
        client.peer
    );
    server.wait_for(&closing).await;
    let log = server.stop().await;
    let of_client = lines_of(&log, &client);
    let closes = of_client.iter().filter(|l| l.contains("closing")).count();
    assert_eq!(closes, 1, "{of_client:#?}");
    // The close, and the one line saying the client went over the limit.
    assert_eq!(of_client.len(), 2, "{of_client:#?}");
}
