//! Who gets in at all (docs/protocol.md §1.4, §1.6): the `Host` allow-list and the
//! `conn` origin check against the DNS-rebinding shape, and the limits on connections
//! and long-poll sessions per source address, through real clients (a WebSocket client,
//! raw HTTP/1.1 over TCP).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use fluxwire::{Config, RunningServer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::Error as WsError;

/// The status of a WebSocket handshake to `/socket/websocket` with `headers` (a `host`
/// among them replaces the real one).
async fn handshake(server: &RunningServer, headers: &[(&'static str, &str)]) -> StatusCode {
    let url = format!("ws://{}/socket/websocket?user=a&vsn=2.0.0", server.addr());
    support::handshake_status(url, headers).await
}

/// One HTTP/1.1 GET on a connection of its own: the status and the body.
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut head = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .expect("a response within 10 s")
        .expect("response read");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body.to_owned())
}

fn json_body(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

#[tokio::test]
async fn host_allow_refuses_the_dns_rebinding_shape() {
    let mut config = Config::ephemeral();
    config.host_allow = Some(fluxwire::HostAllow::parse("127.0.0.1,localhost").unwrap());
    let server = support::start_with(config);
    let addr = server.addr();
    let port = addr.port();
    // A page on evil.example whose name now resolves to this server: the browser sends
    // Origin and Host both naming evil.example, which `conn` alone lets through.
    let evil_host = format!("evil.example:{port}");
    let evil_origin = format!("http://evil.example:{port}");
    let rebound = [
        ("host", evil_host.as_str()),
        ("origin", evil_origin.as_str()),
    ];
    assert_eq!(handshake(&server, &rebound).await, StatusCode::FORBIDDEN);
    let longpoll = "/socket/longpoll?user=a&vsn=2.0.0";
    let (status, body) = get(addr, longpoll, &rebound).await;
    assert_eq!((status, json_body(&body)), (403, json!({"status": 403})));
    // The page and anything else too; /health answers whatever the Host.
    assert_eq!(get(addr, "/", &rebound).await.0, 403);
    assert_eq!(get(addr, "/health", &rebound).await.0, 200);

    // The names listed pass, with any port.
    for host in [addr.to_string(), format!("localhost:{port}")] {
        let origin = format!("http://{host}");
        let sent = [("host", host.as_str()), ("origin", origin.as_str())];
        assert_eq!(
            handshake(&server, &sent).await,
            StatusCode::SWITCHING_PROTOCOLS,
            "{host}"
        );
        let (status, body) = get(addr, longpoll, &sent).await;
        assert_eq!(
            (status, json_body(&body)["status"].clone()),
            (200, json!(410))
        );
        assert_eq!(get(addr, "/", &sent).await.0, 200);
    }
    server.stop();
}

#[tokio::test]
async fn conn_compares_the_scheme_the_request_was_sent_with() {
    let server = support::start();
    let addr = server.addr();
    let host = addr.to_string();
    let http = format!("http://{host}");
    let https = format!("https://{host}");
    // Same host and port, another scheme: an `http:` page is not the `https:` one.
    let cases = [
        (https.as_str(), None, StatusCode::FORBIDDEN),
        (http.as_str(), None, StatusCode::SWITCHING_PROTOCOLS),
        // Behind a TLS-terminating proxy that says so.
        (
            https.as_str(),
            Some("https"),
            StatusCode::SWITCHING_PROTOCOLS,
        ),
        (http.as_str(), Some("https"), StatusCode::FORBIDDEN),
    ];
    let longpoll = "/socket/longpoll?user=a&vsn=2.0.0";
    for (origin, proto, expected) in cases {
        let mut headers = vec![("origin", origin)];
        if let Some(proto) = proto {
            headers.push(("x-forwarded-proto", proto));
        }
        assert_eq!(
            handshake(&server, &headers).await,
            expected,
            "{origin} {proto:?}"
        );
        let (status, _) = get(addr, longpoll, &headers).await;
        let refused = expected == StatusCode::FORBIDDEN;
        assert_eq!(status == 403, refused, "long-poll: {origin} {proto:?}");
    }
    server.stop();
}

// ---------------------------------------------------------------------------------------
// Per source address. The clients connect from loopback addresses of their own
// (127.0.0.2, 127.0.0.3): loopback is exempt by default, so these servers exempt only
// 127.0.0.1.

/// A TCP connection to `addr` from the local address `from`.
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.expect("connects")
}

/// A phoenix WebSocket from `from`; the handshake's status (101 when open).
async fn websocket_from(
    from: &str,
    server: &RunningServer,
) -> Result<support::Ws, Option<StatusCode>> {
    let stream = connect_from(from, server.addr()).await;
    let url = format!("ws://{}/socket/websocket?user=a&vsn=2.0.0", server.addr());
    match tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
        .await
    {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(response)) => Err(Some(response.status())),
        // Refused before the request was read: the close may reset it.
        Err(_) => Err(None),
    }
}

/// What the server says on a connection from `from` that sends nothing: the status
/// line and the body, read until the server closes.
async fn turned_away(from: &str, addr: SocketAddr) -> (u16, String) {
    let mut stream = connect_from(from, addr).await;
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut bytes))
        .await
        .expect("answered and closed within 5 s")
        .expect("response read");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text.split(' ').nth(1).and_then(|code| code.parse().ok());
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status.unwrap_or(0), body.to_owned())
}

/// One GET from `from` on a connection of its own (`Connection: close`): status and body.
async fn get_from(from: &str, addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = connect_from(from, addr).await;
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    // Refused before the request is read, the write may fail: the answer says why.
    let _ = stream.write_all(head.as_bytes()).await;
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut bytes))
        .await
        .expect("answered and closed within 5 s");
    if read.is_err() && bytes.is_empty() {
        return (0, String::new());
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text.split(' ').nth(1).and_then(|code| code.parse().ok());
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status.unwrap_or(0), body.to_owned())
}

fn limited(f: impl FnOnce(&mut Config)) -> RunningServer {
    let mut config = Config::ephemeral();
    config.ip_limits_exempt = fluxwire::AddressSet::parse("127.0.0.1").unwrap();
    f(&mut config);
    support::start_with(config)
}

#[tokio::test]
async fn connections_per_address_are_capped() {
    let server = limited(|c| c.max_connections_per_ip = 3);
    let addr = server.addr();
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(
            websocket_from("127.0.0.2", &server)
                .await
                .expect("under the cap"),
        );
    }
    // A fourth connection from that address is answered 429 before its request is read,
    // whatever it is.
    let (status, body) = turned_away("127.0.0.2", addr).await;
    assert_eq!(
        (status, body.as_str()),
        (429, "too many connections from your address\n")
    );
    assert!(websocket_from("127.0.0.2", &server).await.is_err());
    assert_ne!(get_from("127.0.0.2", addr, "/health").await.0, 200);
    // Other addresses are not affected, nor an exempt one.
    let _other = websocket_from("127.0.0.3", &server)
        .await
        .expect("another address");
    for _ in 0..5 {
        open.push(websocket_from("127.0.0.1", &server).await.expect("exempt"));
    }
    // One closes: another may open.
    drop(open.remove(0));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while websocket_from("127.0.0.2", &server).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "no room after a close"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop();
}

#[tokio::test]
async fn long_poll_sessions_per_address_are_capped() {
    let server = limited(|c| c.max_connections_per_ip = 2);
    let addr = server.addr();
    let handshake = "/socket/longpoll?user=a&vsn=2.0.0";
    // Each handshake comes on a connection of its own, closed after it: the sessions
    // stay, the connections do not.
    for _ in 0..2 {
        let (status, body) = get_from("127.0.0.2", addr, handshake).await;
        assert_eq!(
            (status, json_body(&body)["status"].clone()),
            (200, json!(410))
        );
    }
    let (status, body) = get_from("127.0.0.2", addr, handshake).await;
    assert_eq!((status, json_body(&body)), (429, json!({"status": 403})));
    assert_eq!(server.longpoll_sessions(), 2);
    // Another address still gets one.
    let (_, body) = get_from("127.0.0.3", addr, handshake).await;
    assert_eq!(json_body(&body)["status"], 410);
    server.stop();
}

#[tokio::test]
async fn new_connections_per_address_are_rate_limited() {
    // A burst of 3, then one every 100 s: the test is over long before.
    let server = limited(|c| {
        c.connection_rate_per_ip = 0.01;
        c.connection_burst_per_ip = 3;
    });
    let addr = server.addr();
    for _ in 0..3 {
        assert_eq!(get_from("127.0.0.2", addr, "/health").await.0, 200);
    }
    let (status, body) = turned_away("127.0.0.2", addr).await;
    assert_eq!(
        (status, body.as_str()),
        (429, "too many connections from your address\n")
    );
    assert_eq!(get_from("127.0.0.3", addr, "/health").await.0, 200);
    for _ in 0..5 {
        assert_eq!(get_from("127.0.0.1", addr, "/health").await.0, 200);
    }
    server.stop();
}

#[tokio::test]
async fn loopback_is_exempt_by_default() {
    let mut config = Config::ephemeral();
    config.max_connections_per_ip = 2;
    config.connection_rate_per_ip = 0.01;
    config.connection_burst_per_ip = 2;
    let server = support::start_with(config);
    let mut open = Vec::new();
    for from in ["127.0.0.1", "127.0.0.2", "127.0.0.4"] {
        for _ in 0..4 {
            open.push(
                websocket_from(from, &server)
                    .await
                    .expect("loopback is exempt"),
            );
        }
    }
    server.stop();
}
