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
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::Error as WsError;

/// The status of a WebSocket handshake to `/socket/websocket` with `headers` (a `host`
/// among them replaces the real one).
async fn handshake(server: &RunningServer, headers: &[(&'static str, &str)]) -> StatusCode {
    let url = format!("ws://{}/socket/websocket?user=a&vsn=2.0.0", server.addr());
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
