//! The long-poll transport (docs/protocol.md §8) over raw HTTP/1.1: handshake, polls, POSTs,
//! status codes and headers, tokens, limits, expiry, and a long-poll client and a
//! WebSocket client in one topic.
//!
//! The HTTP client is a few lines over tokio's TcpStream (one request per connection,
//! `Connection: close`): no new dependency, and full control over what goes on the wire
//! (a declared length without its body, chunked bodies, raw headers).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use fluxwire::{Config, RunningServer};
use serde_json::{json, Value};
use support::{eventually, reply, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends `head` (request line and headers, without the final blank line) and `body`,
/// then reads the whole response.
async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> Response {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let mut request = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n").into_bytes();
    request.extend_from_slice(body);
    // The server may answer (413) before reading everything: ignore a failed write.
    let _ = stream.write_all(&request).await;
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut bytes))
        .await
        .expect("a response within 20 s")
        .expect("response read");
    parse_response(&bytes)
}

fn parse_response(bytes: &[u8]) -> Response {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(bytes)));
    let head = std::str::from_utf8(&bytes[..end]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = bytes[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = std::str::from_utf8(&data[..eol]).expect("chunk size");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 4 + size..];
    }
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut head = format!("GET {path} HTTP/1.1\r\nAccept: application/json");
    for (k, v) in headers {
        head.push_str(&format!("\r\n{k}: {v}"));
    }
    raw(addr, &head, b"").await
}

async fn post(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nContent-Type: {content_type}\r\nContent-Length: {}",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("\r\n{k}: {v}"));
    }
    raw(addr, &head, body).await
}

// ---------------------------------------------------------------------------------------
// A long-poll Phoenix client on top of it

const QUERY: &str = "user=bob&vsn=2.0.0";

/// Asserts the headers every long-poll JSON answer carries.
fn assert_json_headers(response: &Response) {
    assert_eq!(
        response.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
}

struct LongPoll {
    addr: SocketAddr,
    mount: &'static str,
    query: String,
    token: String,
}

impl LongPoll {
    /// Handshake on `/socket` as `bob`, V2.
    async fn open(server: &RunningServer) -> LongPoll {
        Self::open_at(server.addr(), "/socket", QUERY).await
    }

    async fn open_at(addr: SocketAddr, mount: &'static str, query: &str) -> LongPoll {
        // phoenix.js's first GET ends in a bare `&` (its token is still null).
        let response = get(addr, &format!("{mount}/longpoll?{query}&"), &[]).await;
        assert_eq!(response.status, 200);
        assert_json_headers(&response);
        let body = response.json();
        assert_eq!(body["status"], 410, "{body}");
        assert_eq!(body["messages"], json!([]));
        let token = body["token"].as_str().expect("a token").to_owned();
        LongPoll {
            addr,
            mount,
            query: query.to_owned(),
            token,
        }
    }

    fn url(&self) -> String {
        self.url_with(&self.token)
    }

    fn url_with(&self, token: &str) -> String {
        format!("{}/longpoll?{}&token={token}", self.mount, self.query)
    }

    /// One poll GET: its JSON body (checked to carry this session's token unless 410).
    async fn poll(&self) -> Value {
        let response = get(self.addr, &self.url(), &[]).await;
        assert_eq!(response.status, 200);
        assert_json_headers(&response);
        let body = response.json();
        if body["status"] != 410 {
            assert_eq!(body["token"], json!(self.token), "{body}");
        }
        body
    }

    /// Polls until `n` messages have arrived (each decoded from its string).
    async fn messages(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        while out.len() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} messages: {out:?}",
                out.len()
            );
            let body = self.poll().await;
            match body["status"].as_u64() {
                Some(200) => {
                    for message in body["messages"].as_array().expect("messages") {
                        let text = message.as_str().expect("each message is a string");
                        out.push(serde_json::from_str(text).expect("an encoded message"));
                    }
                }
                Some(204) => {}
                _ => panic!("unexpected poll answer {body}"),
            }
        }
        out
    }

    async fn post_lines(&self, lines: &[String]) -> Response {
        let body = lines.join("\n");
        post(
            self.addr,
            &self.url(),
            "application/x-ndjson",
            &[],
            body.as_bytes(),
        )
        .await
    }

    /// POSTs V2 messages as ndjson; asserts `{"status":200}`.
    async fn send(&self, messages: &[Value]) {
        let lines: Vec<String> = messages.iter().map(Value::to_string).collect();
        let response = self.post_lines(&lines).await;
        assert_eq!(response.status, 200);
        assert_json_headers(&response);
        assert_eq!(response.json(), json!({"status": 200}));
    }

    async fn join(&self, topic: &str, join_ref: &str) {
        self.send(&[json!([join_ref, join_ref, topic, "phx_join", {}])])
            .await;
        let got = self.messages(1).await;
        assert_eq!(got[0][3], "phx_reply");
        assert_eq!(got[0][4]["status"], "ok", "{got:?}");
    }
}

fn config_with(f: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::ephemeral();
    f(&mut config);
    config
}

/// A poll the session is known to be holding. Two polls go out at once; the session
/// answers the older one 204 as soon as it takes the newer (docs/protocol.md §8.3), so once
/// one of them has answered 204, well before the window ends, the other is waiting.
/// Needs a window far longer than [`support::TIMEOUT`].
async fn a_waiting_poll(lp: &LongPoll) -> tokio::task::JoinHandle<Value> {
    let poll = || {
        let (addr, url) = (lp.addr, lp.url());
        tokio::spawn(async move { get(addr, &url, &[]).await.json() })
    };
    let (mut one, mut other) = (poll(), poll());
    let answered = tokio::time::timeout(support::TIMEOUT, async {
        tokio::select! {
            body = &mut one => (body.unwrap(), other),
            body = &mut other => (body.unwrap(), one),
        }
    })
    .await;
    let (body, waiting) = answered.expect("one of two polls answered before its window ended");
    assert_eq!(
        body,
        json!({"status": 204, "token": lp.token, "messages": []})
    );
    waiting
}

// ---------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn handshake_answers_410_with_a_url_safe_token_on_both_mounts() {
    let server = support::start();
    for mount in ["/socket", "/status"] {
        let lp = LongPoll::open_at(server.addr(), mount, QUERY).await;
        assert!(lp.token.len() >= 40, "{}", lp.token);
        assert!(
            lp.token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "{}",
            lp.token
        );
    }
    let other = LongPoll::open(&server).await;
    let again = LongPoll::open(&server).await;
    assert_ne!(other.token, again.token);
    assert_eq!(server.longpoll_sessions(), 4);
    server.stop();
}

#[tokio::test]
async fn poll_answers_204_with_the_token_when_the_window_ends() {
    let server = support::start_with(config_with(|c| c.longpoll_window_ms = 300));
    let lp = LongPoll::open(&server).await;
    let started = Instant::now();
    let body = lp.poll().await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(
        body,
        json!({"status": 204, "token": lp.token, "messages": []})
    );
    server.stop();
}

#[tokio::test]
async fn join_by_post_and_reply_by_poll() {
    let server = support::start();
    let lp = LongPoll::open(&server).await;
    lp.send(&[json!(["1", "1", "echo:lp", "phx_join", {}])])
        .await;
    let got = lp.messages(1).await;
    assert_eq!(
        got,
        vec![reply(
            json!("1"),
            json!("1"),
            "echo:lp",
            "ok",
            json!({"topic": "echo:lp", "user": "bob"})
        )]
    );
    lp.send(&[json!(["1", "2", "echo:lp", "echo", {"n": 1}])])
        .await;
    assert_eq!(
        lp.messages(1).await,
        vec![reply(
            json!("1"),
            json!("2"),
            "echo:lp",
            "ok",
            json!({"n": 1})
        )]
    );
    // Heartbeats work too (phoenix.js sends none over long-poll, other clients may).
    lp.send(&[json!([null, "3", "phoenix", "heartbeat", {}])])
        .await;
    assert_eq!(
        lp.messages(1).await,
        vec![reply(json!(null), json!("3"), "phoenix", "ok", json!({}))]
    );
    server.stop();
}

#[tokio::test]
async fn an_ndjson_batch_is_processed_in_order() {
    let server = support::start();
    let lp = LongPoll::open(&server).await;
    let body = [
        json!(["1", "1", "echo:batch", "phx_join", {}]).to_string(),
        json!(["1", "2", "echo:batch", "echo", {"n": 2}]).to_string(),
        String::new(),
        json!(["1", "3", "echo:batch", "later", {}]).to_string(),
        json!(["1", "4", "echo:batch", "echo", {"n": 4}]).to_string(),
    ]
    .join("\r\n");
    let response = post(
        lp.addr,
        &lp.url(),
        "application/x-ndjson; charset=UTF-8",
        &[],
        body.as_bytes(),
    )
    .await;
    assert_eq!(response.json(), json!({"status": 200}));
    let got = lp.messages(4).await;
    let refs: Vec<&Value> = got.iter().map(|m| &m[1]).collect();
    // The channel handles them one after the other, "later" (a 50 ms reply) included.
    assert_eq!(refs, [&json!("1"), &json!("2"), &json!("3"), &json!("4")]);
    assert_eq!(got[1][4]["response"], json!({"n": 2}));
    assert_eq!(got[2][4]["response"], json!({"later": true}));
    assert_eq!(got[3][4]["response"], json!({"n": 4}));
    server.stop();
}

#[tokio::test]
async fn a_body_of_another_content_type_is_one_message() {
    let server = support::start();
    let lp = LongPoll::open(&server).await;
    let join = json!(["1", "1", "echo:plain", "phx_join", {}]).to_string();
    let response = post(lp.addr, &lp.url(), "application/json", &[], join.as_bytes()).await;
    assert_eq!(response.json(), json!({"status": 200}));
    assert_eq!(lp.messages(1).await[0][4]["status"], "ok");
    server.stop();
}

#[tokio::test]
async fn a_base64_line_is_a_binary_push_and_binary_never_goes_out_over_long_poll() {
    let server = support::start();
    let lp = LongPoll::open(&server).await;
    lp.join("echo:bin", "1").await;
    let mut ws = Client::v2(&server, "wendy").await;
    ws.join("echo:bin", "5", json!({})).await;

    // Kind 0 push: join_ref "1", ref "2", topic "echo:bin", event "bin_shout", 9 9.
    let mut frame = vec![0, 1, 1, 8, 9];
    frame.extend_from_slice(b"12echo:binbin_shout");
    frame.extend_from_slice(&[9, 9]);
    let line = base64::engine::general_purpose::STANDARD.encode(&frame);
    let response = lp.post_lines(&[line]).await;
    assert_eq!(response.json(), json!({"status": 200}));

    // The WebSocket member gets the binary broadcast...
    let mut expected = vec![2, 8, 9];
    expected.extend_from_slice(b"echo:binbin_shout");
    expected.extend_from_slice(&[9, 9]);
    assert_eq!(ws.recv_binary().await.as_ref(), expected.as_slice());
    // ...the long-poll sender only its (JSON) reply: the binary broadcast is dropped.
    let got = lp.messages(1).await;
    assert_eq!(
        got,
        vec![reply(json!("1"), json!("2"), "echo:bin", "ok", json!({}))]
    );
    lp.send(&[json!(["1", "3", "echo:bin", "echo", {"after": true}])])
        .await;
    assert_eq!(lp.messages(1).await[0][1], "3");
    server.stop();
}

#[tokio::test]
async fn an_undecodable_line_ends_the_session_with_500() {
    let server = support::start();
    let lp = LongPoll::open(&server).await;
    let response = lp.post_lines(&["not base64!".to_owned()]).await;
    assert_eq!(response.json(), json!({"status": 500}));
    eventually("the session to end", || server.longpoll_sessions() == 0).await;
    let response = lp.post_lines(&["[]".to_owned()]).await;
    assert_eq!(response.json(), json!({"status": 410}));

    let lp = LongPoll::open(&server).await;
    let response = lp.post_lines(&["[\"not a message\"]".to_owned()]).await;
    assert_eq!(response.json(), json!({"status": 500}));
    server.stop();
}

#[tokio::test]
async fn forged_altered_or_unknown_tokens_get_a_new_session() {
    let server = support::start_with(config_with(|c| c.longpoll_window_ms = 200));
    let lp = LongPoll::open(&server).await;
    let (id, tag) = lp.token.split_once('.').unwrap();
    let mut altered_tag = tag.to_owned().into_bytes();
    altered_tag[0] = if altered_tag[0] == b'A' { b'B' } else { b'A' };
    let altered = format!("{id}.{}", String::from_utf8(altered_tag).unwrap());
    let other_id = format!("{}.{tag}", "A".repeat(id.len()));
    for token in [
        altered.as_str(),
        other_id.as_str(),
        "garbage",
        "undefined",
        id,
    ] {
        let response = get(lp.addr, &lp.url_with(token), &[]).await;
        assert_eq!(response.status, 200);
        let body = response.json();
        assert_eq!(body["status"], 410, "{token}: {body}");
        let fresh = body["token"].as_str().unwrap();
        assert_ne!(fresh, lp.token);
        assert_ne!(fresh, token);
    }
    // Each of those was a handshake; the real session is untouched.
    assert_eq!(server.longpoll_sessions(), 6);
    assert_eq!(lp.poll().await["status"], 204);

    // A POST with a token naming no session is told 410, and opens nothing.
    for token in [altered.as_str(), "garbage", ""] {
        let response = post(
            lp.addr,
            &lp.url_with(token),
            "application/x-ndjson",
            &[],
            b"[]",
        )
        .await;
        assert_eq!(response.status, 200);
        assert_json_headers(&response);
        assert_eq!(response.json(), json!({"status": 410}), "{token:?}");
    }
    assert_eq!(server.longpoll_sessions(), 6);
    server.stop();
}

#[tokio::test]
async fn the_token_may_come_in_the_header() {
    let server = support::start_with(config_with(|c| c.longpoll_window_ms = 200));
    let lp = LongPoll::open(&server).await;
    let path = format!("/socket/longpoll?{QUERY}");
    let headers = [("X-Phoenix-Longpoll-Token", lp.token.as_str())];
    let body = b"[\"1\",\"1\",\"echo:hdr\",\"phx_join\",{}]";
    let response = post(lp.addr, &path, "application/x-ndjson", &headers, body).await;
    assert_eq!(response.json(), json!({"status": 200}));
    let response = get(lp.addr, &path, &headers).await;
    let body = response.json();
    assert_eq!(body["status"], 200, "{body}");
    assert_eq!(body["token"], json!(lp.token));
    // The header wins over the query parameter.
    let response = get(lp.addr, &lp.url_with("garbage"), &headers).await;
    assert_eq!(response.json()["status"], 204);
    server.stop();
}

#[tokio::test]
async fn refusals_are_http_403_with_status_403() {
    let server = support::start();
    let addr = server.addr();
    for query in ["vsn=2.0.0", "user=&vsn=2.0.0", "user=bob&vsn=3.0.0"] {
        let response = get(addr, &format!("/socket/longpoll?{query}"), &[]).await;
        assert_eq!(response.status, 403, "{query}");
        assert_json_headers(&response);
        assert_eq!(response.json(), json!({"status": 403}), "{query}");
    }
    // The origin check applies to every request, polls and POSTs included.
    let lp = LongPoll::open(&server).await;
    let evil = [("Origin", "http://evil.example")];
    let response = get(addr, &format!("/socket/longpoll?{QUERY}"), &evil).await;
    assert_eq!(
        (response.status, response.json()),
        (403, json!({"status": 403}))
    );
    let response = get(addr, &lp.url(), &evil).await;
    assert_eq!(
        (response.status, response.json()),
        (403, json!({"status": 403}))
    );
    let response = post(addr, &lp.url(), "application/x-ndjson", &evil, b"[]").await;
    assert_eq!(
        (response.status, response.json()),
        (403, json!({"status": 403}))
    );
    let same = [("Origin", &*format!("http://{addr}"))];
    let response = post(addr, &lp.url(), "application/x-ndjson", &same, b"").await;
    assert_eq!(response.json(), json!({"status": 200}));
    assert_eq!(server.longpoll_sessions(), 1);
    server.stop();
}

#[tokio::test]
async fn a_post_over_the_size_limit_is_413() {
    let server = support::start_with(config_with(|c| c.max_frame_size = 1024));
    let lp = LongPoll::open(&server).await;
    lp.join("echo:big", "1").await;
    let big = json!(["1", "2", "echo:big", "echo", {"x": "y".repeat(1100)}]).to_string();
    // Declared too long: refused before the body is read.
    let head = format!(
        "POST {} HTTP/1.1\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}",
        lp.url(),
        big.len()
    );
    let response = raw(lp.addr, &head, b"").await;
    assert_eq!(response.status, 413);
    assert_json_headers(&response);
    assert_eq!(response.json(), json!({"status": 413}));
    // Chunked, no declared length: refused once past the limit.
    let chunk = |data: &[u8]| {
        let mut out = format!("{:x}\r\n", data.len()).into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        out
    };
    let (first, second) = big.as_bytes().split_at(600);
    let mut body = chunk(first);
    body.extend(chunk(second));
    body.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "POST {} HTTP/1.1\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked",
        lp.url()
    );
    let response = raw(lp.addr, &head, &body).await;
    assert_eq!(
        (response.status, response.json()),
        (413, json!({"status": 413}))
    );
    // Just under the limit is fine.
    let fits = json!(["1", "3", "echo:big", "echo", {"x": "y".repeat(900)}]).to_string();
    assert!(fits.len() <= 1024);
    lp.send(&[serde_json::from_str(&fits).unwrap()]).await;
    assert_eq!(lp.messages(1).await[0][1], "3");
    server.stop();
}

#[tokio::test]
async fn a_second_poll_ends_the_waiting_one_with_204() {
    let server = support::start_with(config_with(|c| c.longpoll_window_ms = 60_000));
    let lp = LongPoll::open(&server).await;
    // Of two polls sent at once, one is answered 204 when the session takes the other
    // (whichever it takes first)...
    let waiting = a_waiting_poll(&lp).await;
    // ...so now the order is known: a third poll is newer than the waiting one, which
    // is answered 204 at once, long before its window ends.
    let (addr, url) = (lp.addr, lp.url());
    let newest = tokio::spawn(async move { get(addr, &url, &[]).await.json() });
    let body = tokio::time::timeout(support::TIMEOUT, waiting)
        .await
        .expect("the older poll is answered when a newer one arrives")
        .unwrap();
    assert_eq!(
        body,
        json!({"status": 204, "token": lp.token, "messages": []})
    );
    // The newest poll is the one that gets the next messages.
    lp.send(&[json!(["1", "1", "echo:two", "phx_join", {}])])
        .await;
    let body = tokio::time::timeout(support::TIMEOUT, newest)
        .await
        .expect("the newest poll gets the join reply")
        .unwrap();
    assert_eq!(body["status"], 200, "{body}");
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
    server.stop();
}

#[tokio::test]
async fn a_session_without_polls_expires_and_its_channels_end() {
    let server = support::start_with(config_with(|c| {
        c.longpoll_window_ms = 200;
        c.longpoll_timeout_ms = 600;
    }));
    let topic = "echo:expiry";
    let lp = LongPoll::open(&server).await;
    lp.join(topic, "1").await;
    let services = server.services().clone();
    assert_eq!(services.pubsub.subscriber_count(topic), 1);
    assert_eq!(services.connections.len(), 1);

    // Polling keeps it alive well past the timeout.
    let until = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < until {
        assert_eq!(lp.poll().await["status"], 204);
    }
    assert_eq!(services.pubsub.subscriber_count(topic), 1);
    assert_eq!(server.longpoll_sessions(), 1);

    // Then the client goes away.
    let stopped = Instant::now();
    eventually("the channel to end", || {
        services.pubsub.subscriber_count(topic) == 0
    })
    .await;
    assert!(stopped.elapsed() >= Duration::from_millis(500));
    eventually("the session to unregister", || {
        services.connections.is_empty()
    })
    .await;
    assert_eq!(server.longpoll_sessions(), 0);

    // Its token is now unknown: a GET is a new handshake, a POST gets 410.
    let body = lp.poll().await;
    assert_eq!(body["status"], 410);
    assert_ne!(body["token"], json!(lp.token));
    let response = lp.post_lines(&["[]".to_owned()]).await;
    assert_eq!(response.json(), json!({"status": 410}));
    server.stop();
}

#[tokio::test]
async fn disconnecting_the_user_answers_the_waiting_poll_410() {
    let server = support::start_with(config_with(|c| c.longpoll_window_ms = 60_000));
    let lp = LongPoll::open(&server).await;
    lp.join("echo:kick", "1").await;
    let waiting = a_waiting_poll(&lp).await;
    assert_eq!(server.services().connections.disconnect("bob"), 1);
    let body = tokio::time::timeout(support::TIMEOUT, waiting)
        .await
        .expect("answered at once")
        .unwrap();
    // The waiting poll itself, with its session's token (a handshake would bring a
    // new one): "session gone".
    assert_eq!(
        body,
        json!({"status": 410, "token": lp.token, "messages": []})
    );
    let services = server.services().clone();
    eventually("the channel to end", || {
        services.pubsub.subscriber_count("echo:kick") == 0
    })
    .await;
    assert_eq!(server.longpoll_sessions(), 0);
    server.stop();
}

#[tokio::test]
async fn long_poll_and_websocket_clients_share_a_topic() {
    let server = support::start();
    let lp = LongPoll::open(&server).await;
    lp.join("echo:mixed", "1").await;
    let mut ws = Client::v2(&server, "wendy").await;
    ws.join("echo:mixed", "7", json!({})).await;

    ws.send(
        json!("7"),
        json!("8"),
        "echo:mixed",
        "shout",
        json!({"from": "ws"}),
    )
    .await;
    let got = lp.messages(1).await;
    assert_eq!(
        got[0],
        json!([null, null, "echo:mixed", "shout", {"from": "ws"}])
    );

    lp.send(&[json!(["1", "2", "echo:mixed", "shout", {"from": "lp"}])])
        .await;
    // The WebSocket member gets its own shout and reply, then the long-poll one's shout,
    // and nothing else.
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(ws.recv_json().await);
    }
    got.sort_by_key(Value::to_string);
    let mut expected = vec![
        json!([null, null, "echo:mixed", "shout", {"from": "ws"}]),
        reply(json!("7"), json!("8"), "echo:mixed", "ok", json!({})),
        json!([null, null, "echo:mixed", "shout", {"from": "lp"}]),
    ];
    expected.sort_by_key(Value::to_string);
    assert_eq!(got, expected);
    ws.expect_nothing_pending().await;
    let got = lp.messages(2).await;
    assert!(got.contains(&reply(
        json!("1"),
        json!("2"),
        "echo:mixed",
        "ok",
        json!({})
    )));
    assert!(got.contains(&json!([null, null, "echo:mixed", "shout", {"from": "lp"}])));

    lp.send(&[json!(["1", "3", "echo:mixed", "phx_leave", {}])])
        .await;
    let got = lp.messages(2).await;
    assert_eq!(
        got[0],
        reply(json!("1"), json!("3"), "echo:mixed", "ok", json!({}))
    );
    assert_eq!(got[1], json!(["1", "1", "echo:mixed", "phx_close", {}]));
    server.stop();
}

#[tokio::test]
async fn cors_preflight_and_other_methods() {
    let server = support::start();
    let head = "OPTIONS /socket/longpoll?vsn=2.0.0 HTTP/1.1\r\n\
                Access-Control-Request-Method: POST\r\n\
                Access-Control-Request-Headers: content-type, x-phoenix-longpoll-token";
    let response = raw(server.addr(), head, b"").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        response.header("access-control-allow-headers"),
        Some("content-type, x-phoenix-longpoll-token")
    );
    assert_eq!(
        response.header("access-control-allow-methods"),
        Some("get, post, options")
    );
    assert_eq!(response.header("access-control-max-age"), Some("3600"));
    assert!(response.body.is_empty());

    for method in ["PUT", "DELETE", "PATCH"] {
        let head = format!("{method} /socket/longpoll?{QUERY} HTTP/1.1\r\nContent-Length: 0");
        let response = raw(server.addr(), &head, b"").await;
        assert_eq!(response.status, 400, "{method}");
    }
    server.stop();
}

#[tokio::test]
async fn transports_can_be_switched_off() {
    let websocket_off = support::start_with(config_with(|c| {
        c.transports = fluxwire::Transports::parse("longpoll").unwrap();
    }));
    let response = get(
        websocket_off.addr(),
        &format!("/socket/websocket?{QUERY}"),
        &[],
    )
    .await;
    assert_eq!(response.status, 404);
    LongPoll::open(&websocket_off).await;
    websocket_off.stop();

    let longpoll_off = support::start_with(config_with(|c| {
        c.transports = fluxwire::Transports::parse("websocket").unwrap();
    }));
    let response = get(
        longpoll_off.addr(),
        &format!("/socket/longpoll?{QUERY}"),
        &[],
    )
    .await;
    assert_eq!(response.status, 404);
    Client::v2(&longpoll_off, "wendy").await;
    longpoll_off.stop();
}

#[tokio::test]
async fn a_full_queue_ends_the_session() {
    let server = support::start();
    let lp = LongPoll::open(&server).await;
    lp.join("echo:flood", "1").await;
    // Nobody polls while more than the queue's 10 000 messages pile up.
    let pubsub = server.services().pubsub.clone();
    for n in 0..10_001 {
        pubsub.broadcast("echo:flood", "shout", json!({ "n": n }).into());
    }
    eventually("the session to end", || server.longpoll_sessions() == 0).await;
    let body = lp.poll().await;
    assert_eq!(body["status"], 410, "{}", body["status"]);
    eventually("the channel to end", || {
        pubsub.subscriber_count("echo:flood") == 0
    })
    .await;
    server.stop();
}

#[tokio::test]
async fn a_post_whose_body_never_comes_gets_408_and_its_connection_closes() {
    let server = support::start_with(config_with(|c| {
        c.body_timeout_ms = 300;
        c.longpoll_window_ms = 200;
    }));
    let lp = LongPoll::open(&server).await;
    let started = Instant::now();
    // Declares 100 bytes and sends none; keeps its side open (no `Connection: close`).
    let mut silent = start_post(&lp, &lp.url(), "Content-Length: 100").await;
    // Trickle a chunked body, one byte every 100 ms for 6 s: longer than the deadline
    // and than this test waits for the connection to close.
    let (mut trickle, dripping) = trickle_post(&lp, &lp.url()).await;
    // The same to a session that does not exist: refused at once, unread.
    let (mut stranger, dripping_too) = trickle_post(&lp, &lp.url_with("garbage")).await;
    for (what, bytes, status) in [
        ("silent", read_all(&mut silent).await, 408),
        ("trickling", read_all(&mut trickle).await, 408),
        ("unknown session", read_all(&mut stranger).await, 410),
    ] {
        let response = parse_response(&bytes);
        let http = if status == 408 { 408 } else { 200 };
        assert_eq!(response.status, http, "{what}");
        assert_json_headers(&response);
        assert_eq!(response.json(), json!({ "status": status }), "{what}");
    }
    assert!(started.elapsed() >= Duration::from_millis(250));
    dripping.abort();
    dripping_too.abort();
    // The session itself lives on.
    assert_eq!(lp.poll().await["status"], 204);
    server.stop();
}

/// Sends the head of a POST to `url` with `extra` headers, and no body.
async fn start_post(lp: &LongPoll, url: &str, extra: &str) -> TcpStream {
    let head = format!(
        "POST {url} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-ndjson\r\n{extra}\r\n\r\n",
        lp.addr
    );
    let mut stream = TcpStream::connect(lp.addr).await.expect("connects");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// A chunked POST to `url` whose body comes one byte every 100 ms for 6 s: the read
/// half, and the task writing.
async fn trickle_post(
    lp: &LongPoll,
    url: &str,
) -> (tokio::net::tcp::OwnedReadHalf, tokio::task::JoinHandle<()>) {
    let stream = start_post(lp, url, "Transfer-Encoding: chunked").await;
    let (reader, mut writer) = stream.into_split();
    let dripping = tokio::spawn(async move {
        for _ in 0..60 {
            if writer.write_all(b"1\r\n[\r\n").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (reader, dripping)
}

/// Reads until the server closes the connection; fails after 5 s.
async fn read_all(stream: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut bytes))
        .await
        .expect("answered and closed within 5 s")
        .expect("response read");
    bytes
}

#[tokio::test]
async fn a_queue_over_the_byte_bound_ends_the_session() {
    let server = support::start_with(config_with(|c| c.max_outbound_bytes = 4096));
    let topic = "echo:bytes";
    let lp = LongPoll::open(&server).await;
    lp.join(topic, "1").await;
    let pubsub = server.services().pubsub.clone();
    let filler = "x".repeat(200);
    let shout = |n: usize| json!({ "n": n, "filler": filler });
    // Under the bound: queued, then taken by a poll.
    for n in 0..10 {
        pubsub.broadcast(topic, "shout", shout(n).into());
    }
    assert_eq!(lp.messages(10).await.len(), 10);
    // Nobody polls while 40 messages of ~250 bytes pile up: far fewer than the queue's
    // 10 000 messages, but over the 4 KiB of --max-outbound-bytes.
    for n in 0..40 {
        pubsub.broadcast(topic, "shout", shout(n).into());
    }
    eventually("the session to end", || server.longpoll_sessions() == 0).await;
    assert_eq!(lp.poll().await["status"], 410);
    eventually("the channel to end", || pubsub.subscriber_count(topic) == 0).await;
    server.stop();
}
