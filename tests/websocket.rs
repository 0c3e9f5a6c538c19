//! The WebSocket layer through a raw TCP client, for what no well-behaved library sends:
//! the handshake's edge cases, frame headers that lie about their length, unfinished
//! messages, bad close frames, and pings without messages (docs/protocol.md §1.3, §3.5,
//! §4.2, §4.3, §10).

mod support;

use std::time::Duration;

use fluxwire::{Config, RunningServer};
use serde_json::json;
use support::{start, start_with, TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The masking key of every client frame here.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame header (with its masking key) declaring `len` payload bytes.
fn header(opcode: u8, fin: bool, len: u64) -> Vec<u8> {
    let mut bytes = vec![if fin { 0x80 | opcode } else { opcode }];
    match len {
        0..=125 => bytes.push(0x80 | len as u8),
        126..=0xffff => {
            bytes.push(0x80 | 126);
            bytes.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            bytes.push(0x80 | 127);
            bytes.extend_from_slice(&len.to_be_bytes());
        }
    }
    bytes.extend_from_slice(&MASK);
    bytes
}

/// A whole masked client frame.
fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut bytes = header(opcode, fin, payload.len() as u64);
    bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    bytes
}

/// A close frame with a raw payload: the code, then the reason bytes.
fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    frame(CLOSE, true, &payload)
}

/// The server's answer to a handshake.
struct Response {
    status: u16,
    /// Header lines, names lowercased.
    headers: Vec<(String, String)>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A WebSocket client on a bare TCP socket.
struct Raw {
    io: TcpStream,
    /// Read but not yet parsed.
    buf: Vec<u8>,
}

/// A frame from the server.
struct ServerFrame {
    opcode: u8,
    payload: Vec<u8>,
}

impl std::fmt::Debug for ServerFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let payload = String::from_utf8_lossy(&self.payload);
        write!(f, "opcode {:#x}, payload {payload:?}", self.opcode)
    }
}

impl ServerFrame {
    /// The code and reason of a close frame.
    fn close(&self) -> (u16, String) {
        assert_eq!(self.opcode, CLOSE, "expected a close frame, got {self:?}");
        assert!(self.payload.len() >= 2, "a close frame without a code");
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        (
            code,
            String::from_utf8_lossy(&self.payload[2..]).into_owned(),
        )
    }
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The usual upgrade request for `target`, with `extra` header lines (each ending in
/// CRLF) and `key` and `version` as given (`None` leaves the header out).
fn upgrade(target: &str, key: Option<&str>, version: Option<&str>, extra: &str) -> String {
    let mut request = format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    );
    if let Some(key) = key {
        request.push_str(&format!("Sec-WebSocket-Key: {key}\r\n"));
    }
    if let Some(version) = version {
        request.push_str(&format!("Sec-WebSocket-Version: {version}\r\n"));
    }
    request.push_str(extra);
    request.push_str("\r\n");
    request
}

impl Raw {
    /// Sends `request` and reads the response head.
    async fn handshake(server: &RunningServer, request: &str) -> (Response, Raw) {
        let io = TcpStream::connect(server.addr()).await.expect("connects");
        let mut raw = Raw {
            io,
            buf: Vec::new(),
        };
        raw.io.write_all(request.as_bytes()).await.expect("sends");
        let end = loop {
            if let Some(at) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(raw.fill().await, "the server answered the handshake");
        };
        let head = String::from_utf8(raw.buf.drain(..end).collect()).expect("a text head");
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap();
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, value) = l.split_once(':').expect("a header line");
                (name.trim().to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        let response = Response {
            status: status.parse().unwrap(),
            headers,
        };
        (response, raw)
    }

    /// An upgraded V2 connection to the Phoenix socket.
    async fn socket(server: &RunningServer) -> Raw {
        let request = upgrade(
            "/socket/websocket?user=raw&vsn=2.0.0",
            Some(KEY),
            Some("13"),
            "",
        );
        let (response, raw) = Raw::handshake(server, &request).await;
        assert_eq!(response.status, 101);
        raw
    }

    /// An upgraded connection to the echo mount.
    async fn echo(server: &RunningServer) -> Raw {
        let (response, raw) =
            Raw::handshake(server, &upgrade("/echo", Some(KEY), Some("13"), "")).await;
        assert_eq!(response.status, 101);
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("sends");
    }

    /// Reads more; `false` at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(TIMEOUT, self.io.read(&mut chunk))
            .await
            .expect("the server answers within 5 s")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next frame; `None` once the server has closed the TCP connection.
    async fn recv(&mut self) -> Option<ServerFrame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if !self.fill().await {
                assert!(self.buf.is_empty(), "the stream ended inside a frame");
                return None;
            }
        }
    }

    /// The server's close frame (skipping pongs and data), then the end of the stream.
    async fn expect_close(&mut self) -> (u16, String) {
        let close = loop {
            let frame = self.recv().await.expect("a close frame before the end");
            if frame.opcode == CLOSE {
                break frame.close();
            }
        };
        self.expect_end().await;
        close
    }

    /// The server ends the TCP connection (what it sends meanwhile is ignored).
    async fn expect_end(&mut self) {
        while self.recv().await.is_some() {}
    }
}

/// An unmasked server frame at the start of `buf`, and its length.
fn parse_server_frame(buf: &[u8]) -> Option<(ServerFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frames are not masked");
    let (len, start) = match buf[1] & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().unwrap()) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().unwrap()) as usize,
            10,
        ),
        len => (len as usize, 2),
    };
    let payload = buf.get(start..start + len)?.to_vec();
    let frame = ServerFrame {
        opcode: buf[0] & 0x0f,
        payload,
    };
    Some((frame, start + len))
}

// ---------------------------------------------------------------------------------
// Issue 10, hole 1: a frame header can claim unlimited memory.

/// A header declaring 2 GiB is refused with 1009 as soon as it is read: the client has
/// sent the header and 16 bytes, far from the 1 MiB limit, and gets its close.
#[tokio::test]
async fn a_frame_declaring_more_than_the_limit_is_refused_at_its_header() {
    let server = start();
    for opcode in [TEXT, BINARY] {
        let mut raw = Raw::socket(&server).await;
        let mut bytes = header(opcode, true, 2 << 30);
        bytes.extend_from_slice(&[b'x'; 16]);
        raw.send(&bytes).await;
        assert_eq!(
            raw.expect_close().await,
            (1009, "message too big".to_owned())
        );
    }
    server.stop();
}

/// A continuation whose header would take the message past the limit is refused at its
/// header too, with what came before it counted.
#[tokio::test]
async fn a_continuation_declaring_past_the_limit_is_refused_at_its_header() {
    let mut config = Config::ephemeral();
    config.max_frame_size = 64 * 1024;
    let server = start_with(config);
    let mut raw = Raw::echo(&server).await;
    raw.send(&frame(BINARY, false, &[1; 40 * 1024])).await;
    let mut bytes = header(CONTINUATION, true, 40 * 1024);
    bytes.extend_from_slice(&[2; 16]);
    raw.send(&bytes).await;
    assert_eq!(
        raw.expect_close().await,
        (1009, "message too big".to_owned())
    );
    server.stop();
}

/// A frame just at the limit still travels, and so does one after it read in the same
/// chunks (the read buffer is capped, not the traffic).
#[tokio::test]
async fn a_frame_at_the_limit_still_travels() {
    let mut config = Config::ephemeral();
    config.max_frame_size = 64 * 1024;
    let server = start_with(config);
    let mut raw = Raw::echo(&server).await;
    let big = vec![7u8; 64 * 1024];
    let mut bytes = frame(BINARY, true, &big);
    bytes.extend(frame(TEXT, true, b"after"));
    raw.send(&bytes).await;
    let echoed = raw.recv().await.unwrap();
    assert_eq!((echoed.opcode, echoed.payload.len()), (BINARY, big.len()));
    let after = raw.recv().await.unwrap();
    assert_eq!(
        (after.opcode, after.payload.as_slice()),
        (TEXT, &b"after"[..])
    );
    server.stop();
}

// ---------------------------------------------------------------------------------
// Issue 10, hole 7: unfinished messages are bounded in time and across the server.

/// A fragmented message that never ends does not keep its connection: fragments do not
/// restart the idle clock, only a complete message does.
#[tokio::test]
async fn an_unfinished_message_does_not_keep_the_connection_open() {
    let mut config = Config::ephemeral();
    config.idle_timeout_ms = 300;
    let server = start_with(config);
    let mut raw = Raw::socket(&server).await;
    raw.send(&frame(TEXT, false, b"[null,")).await;
    // One byte every 50 ms: well inside the idle timeout each time. The close must come
    // long before the 400th (20 s); without it the client would be served forever.
    for sent in 0..400 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        raw.send(&frame(CONTINUATION, false, b" ")).await;
        let readable = tokio::time::timeout(Duration::ZERO, raw.io.readable()).await;
        if readable.is_ok() {
            assert_eq!(
                raw.expect_close().await,
                (1001, "idle timeout".to_owned()),
                "after {sent} fragments"
            );
            server.stop();
            return;
        }
    }
    panic!("400 fragments over 20 s kept an unfinished message open");
}

/// WebSocket pings alone do not keep a connection open: it is closed at the idle
/// timeout like a silent one (they are still answered meanwhile).
#[tokio::test]
async fn pings_alone_do_not_keep_a_connection_open() {
    let mut config = Config::ephemeral();
    config.idle_timeout_ms = 300;
    let server = start_with(config);
    let mut raw = Raw::socket(&server).await;
    for sent in 0..400 {
        raw.send(&frame(PING, true, b"hi")).await;
        let answer = raw.recv().await.expect("an answer to the ping");
        if answer.opcode == CLOSE {
            assert_eq!(
                answer.close(),
                (1001, "idle timeout".to_owned()),
                "after {sent} pings"
            );
            raw.expect_end().await;
            server.stop();
            return;
        }
        assert_eq!(
            (answer.opcode, answer.payload.as_slice()),
            (PONG, &b"hi"[..])
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("400 pings over 20 s kept the connection open");
}

/// Bytes held by unfinished messages count against one server-wide budget: past it a
/// connection that needs more is closed with 1013 (try again later); a message that
/// completes gives its share back.
#[tokio::test]
async fn unfinished_messages_share_a_server_wide_budget() {
    let mut config = Config::ephemeral();
    config.max_unfinished_bytes = 100 * 1024;
    let server = start_with(config);
    let first_half = vec![b'a'; 60 * 1024];

    let mut holder = Raw::echo(&server).await;
    holder.send(&frame(TEXT, false, &first_half)).await;
    // The ping is answered only after the fragment before it was read: it is held now.
    holder.send(&frame(PING, true, b"1")).await;
    assert_eq!(holder.recv().await.unwrap().opcode, PONG);

    let mut refused = Raw::echo(&server).await;
    let mut bytes = frame(TEXT, false, &first_half);
    bytes.extend(frame(PING, true, b"1"));
    refused.send(&bytes).await;
    // The close comes where the pong would have.
    let answer = refused.recv().await.expect("an answer");
    assert_eq!(
        answer.close(),
        (1013, "server busy, try again later".to_owned())
    );
    refused.expect_end().await;

    // The holder finishes: its message is whole, and its share is free again.
    holder.send(&frame(CONTINUATION, true, b"b")).await;
    let echoed = holder.recv().await.unwrap();
    assert_eq!((echoed.opcode, echoed.payload.len()), (TEXT, 60 * 1024 + 1));

    let mut next = Raw::echo(&server).await;
    next.send(&frame(TEXT, false, &first_half)).await;
    next.send(&frame(CONTINUATION, true, b"c")).await;
    let echoed = next.recv().await.unwrap();
    assert_eq!((echoed.opcode, echoed.payload.len()), (TEXT, 60 * 1024 + 1));
    server.stop();
}

/// Small messages never wait on the budget: with the budget taken, a heartbeat split
/// across fragments still gets its reply.
#[tokio::test]
async fn small_messages_pass_when_the_budget_is_taken() {
    let mut config = Config::ephemeral();
    config.max_unfinished_bytes = 100 * 1024;
    let server = start_with(config);
    let mut holder = Raw::echo(&server).await;
    holder.send(&frame(BINARY, false, &[0; 99 * 1024])).await;
    holder.send(&frame(PING, true, b"1")).await;
    assert_eq!(holder.recv().await.unwrap().opcode, PONG);

    let mut raw = Raw::socket(&server).await;
    raw.send(&frame(TEXT, false, br#"[null,"1","phoenix","#))
        .await;
    raw.send(&frame(CONTINUATION, true, br#""heartbeat",{}]"#))
        .await;
    let reply = raw.recv().await.unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(
        reply,
        json!([null, "1", "phoenix", "phx_reply", {"status": "ok", "response": {}}])
    );
    server.stop();
}

/// Refs longer than 64 bytes and topics or events longer than 255 close the connection
/// with 1008; up to those lengths they are served.
#[tokio::test]
async fn oversized_refs_topics_and_events_close_with_1008() {
    let server = start();
    let long_ref = "r".repeat(65);
    let long_name = "t".repeat(256);
    let cases = [
        json!([long_ref, "1", "echo:x", "phx_join", {}]),
        json!(["1", long_ref, "echo:x", "phx_join", {}]),
        json!([null, long_ref, "phoenix", "heartbeat", {}]),
        json!([null, "1", format!("echo:{long_name}"), "phx_join", {}]),
        json!([null, "1", "phoenix", long_name, {}]),
    ];
    for case in cases {
        let mut raw = Raw::socket(&server).await;
        raw.send(&frame(TEXT, true, case.to_string().as_bytes()))
            .await;
        let answer = raw.recv().await.expect("an answer");
        assert_eq!(
            answer.close(),
            (1008, "ref, topic or event too long".to_owned()),
            "{case}: {:?}",
            String::from_utf8_lossy(&answer.payload)
        );
        raw.expect_end().await;
    }
    // A V2 binary push's fields are at most 255 bytes; a ref there is still capped at 64.
    let mut raw = Raw::socket(&server).await;
    let mut push = vec![0u8, 65, 1, 6, 4];
    push.extend_from_slice(long_ref.as_bytes());
    push.extend_from_slice(b"1echo:xfile");
    raw.send(&frame(BINARY, true, &push)).await;
    assert_eq!(
        raw.expect_close().await,
        (1008, "ref, topic or event too long".to_owned())
    );

    // At the limits: served.
    let mut raw = Raw::socket(&server).await;
    let ref_64 = "r".repeat(64);
    let topic_255 = format!("echo:{}", "t".repeat(250));
    let join = json!([ref_64, ref_64, topic_255, "phx_join", {}]);
    raw.send(&frame(TEXT, true, join.to_string().as_bytes()))
        .await;
    let reply: serde_json::Value =
        serde_json::from_slice(&raw.recv().await.unwrap().payload).unwrap();
    assert_eq!(reply[0], json!(ref_64));
    assert_eq!(reply[4]["status"], "ok");
    server.stop();
}

// ---------------------------------------------------------------------------------
// Issue 10, hole 10: the handshake and the close handshake, by RFC 6455.

/// `Sec-WebSocket-Key` must be the base64 of 16 bytes (RFC 6455 §4.2.1); anything else
/// is a bad request.
#[tokio::test]
async fn a_malformed_websocket_key_gets_400() {
    let server = start();
    let target = "/socket/websocket?user=a&vsn=2.0.0";
    for key in [
        None,
        Some("abc"),
        Some("not base64 at all!!!!!!!"),
        Some("AAECAwQFBgcICQoLDA0O"),     // 15 bytes
        Some("AAECAwQFBgcICQoLDA0ODxA="), // 17 bytes
    ] {
        let (response, _) = Raw::handshake(&server, &upgrade(target, key, Some("13"), "")).await;
        assert_eq!(response.status, 400, "key {key:?}");
    }
    let (response, _) = Raw::handshake(&server, &upgrade(target, Some(KEY), Some("13"), "")).await;
    assert_eq!(response.status, 101);
    assert_eq!(
        response.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    server.stop();
}

/// A version other than 13 gets 426 Upgrade Required naming the version spoken
/// (RFC 6455 §4.2.2).
#[tokio::test]
async fn a_wrong_websocket_version_gets_426_naming_13() {
    let server = start();
    let target = "/socket/websocket?user=a&vsn=2.0.0";
    for version in ["8", "14", "13, 8"] {
        let (response, _) =
            Raw::handshake(&server, &upgrade(target, Some(KEY), Some(version), "")).await;
        assert_eq!(response.status, 426, "version {version}");
        assert_eq!(
            response.header("sec-websocket-version"),
            Some("13"),
            "version {version}"
        );
    }
    server.stop();
}

/// An upgrade with many headers (proxies add their own) is an upgrade all the same; only
/// the head's size is limited.
#[tokio::test]
async fn an_upgrade_with_many_headers_is_accepted() {
    let server = start();
    let extra: String = (0..150).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect();
    let request = upgrade(
        "/socket/websocket?user=a&vsn=2.0.0",
        Some(KEY),
        Some("13"),
        &extra,
    );
    let (response, mut raw) = Raw::handshake(&server, &request).await;
    assert_eq!(response.status, 101);
    raw.send(&frame(
        TEXT,
        true,
        br#"[null,"1","phoenix","heartbeat",{}]"#,
    ))
    .await;
    let reply: serde_json::Value =
        serde_json::from_slice(&raw.recv().await.unwrap().payload).unwrap();
    assert_eq!(reply[3], "phx_reply");
    server.stop();
}

/// A close code no endpoint may send (RFC 6455 §7.4) is a protocol error: 1002 with a
/// reason that says so. A close reason that is not UTF-8 is 1007. A valid code is echoed.
#[tokio::test]
async fn bad_close_frames_are_answered_with_what_is_wrong() {
    let server = start();
    for code in [999, 1004, 1005, 1006, 1015, 2000, 2999, 5000] {
        let mut raw = Raw::socket(&server).await;
        raw.send(&close_frame(code, b"")).await;
        assert_eq!(
            raw.expect_close().await,
            (1002, "invalid close code".to_owned()),
            "code {code}"
        );
    }
    let mut raw = Raw::socket(&server).await;
    raw.send(&close_frame(1000, &[0xce, 0xba, 0xff])).await;
    assert_eq!(
        raw.expect_close().await,
        (1007, "invalid UTF-8 in close reason".to_owned())
    );
    for code in [1000, 1001, 3000, 4999] {
        let mut raw = Raw::socket(&server).await;
        raw.send(&close_frame(code, b"bye")).await;
        assert_eq!(
            raw.expect_close().await,
            (code, String::new()),
            "code {code}"
        );
    }
    server.stop();
}

/// The fragment rules each have their own reason: a data frame inside a fragmented
/// message, and a continuation with nothing to continue.
#[tokio::test]
async fn fragment_violations_close_with_their_own_reason() {
    let server = start();
    let mut raw = Raw::socket(&server).await;
    let mut bytes = frame(TEXT, false, b"[null,");
    bytes.extend(frame(TEXT, true, b"[]"));
    raw.send(&bytes).await;
    assert_eq!(
        raw.expect_close().await,
        (1002, "new message inside a fragmented one".to_owned())
    );
    let mut raw = Raw::socket(&server).await;
    raw.send(&frame(CONTINUATION, true, b"]")).await;
    assert_eq!(
        raw.expect_close().await,
        (1002, "continuation without a message".to_owned())
    );
    server.stop();
}
