//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not an API).
//!
//! Each function feeds arbitrary bytes to one of the readers of untrusted input and
//! discards the result: a fuzz target fails only on a panic, an abort or a hang. Must
//! not check anything itself, nor be used outside `fuzz/` and its regression tests.

use std::cell::RefCell;
use std::sync::Arc;

use actix::SystemRunner;
use actix_web::{test::TestRequest, web, FromRequest};
use bytes::Bytes;

use crate::config::Config;
use crate::endpoint::{transport_shared, Services};
use crate::router::Router;
use crate::serializer::Serializer;
use crate::socket::{Assigns, ConnectInfo, Params, Refused, Socket};
use crate::transport::{longpoll, websocket, Mounts, Shared};

/// A text frame on a V1 (JSON object) connection. The transport hands the serializer
/// valid UTF-8 only, so other input is skipped.
pub fn decode_v1_text(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Serializer::V1.decode_text(text);
    }
}

/// A text frame on a V2 (JSON array) connection; valid UTF-8 only, as above.
pub fn decode_v2_text(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Serializer::V2.decode_text(text);
    }
}

/// A binary frame on a V2 connection.
pub fn decode_v2_binary(data: &[u8]) {
    let _ = Serializer::V2.decode_binary(Bytes::copy_from_slice(data));
}

/// A connection's first request head, as the listener hands it to the WebSocket
/// transport to tell an upgrade on a socket mount from anything else.
pub fn upgrade_request(data: &[u8]) {
    with_server(|server| {
        let _ = websocket::upgrade_request(data, &server.shared);
    });
}

/// The body of a long-poll POST (`application/x-ndjson`), through the transport's own
/// handler into a live session: a handshake opens the session, `data` is posted to it,
/// then a line that is no message ends it. The first byte picks the serializer (odd:
/// V1, else V2); the rest is the body.
pub fn longpoll_body(data: &[u8]) {
    let (vsn, body) = match data.split_first() {
        Some((first, rest)) if first & 1 == 1 => ("1.0.0", rest),
        Some((_, rest)) => ("2.0.0", rest),
        None => ("2.0.0", data),
    };
    let body = Bytes::copy_from_slice(body);
    with_server(|server| {
        let shared = web::Data::new(server.shared.clone());
        server.runner.block_on(async move {
            let uri = format!("/socket/longpoll?user=fuzz&vsn={vsn}");
            let Some(token) = handshake(&uri, &shared).await else {
                return;
            };
            post(&uri, &token, body, &shared).await;
            // Not a base64 line: the session ends, if the body has not ended it.
            post(&uri, &token, Bytes::from_static(b"!\n"), &shared).await;
        });
    });
}

/// A server's shared state with no application (every topic unmatched), and the actix
/// system that long-poll sessions run on; one per thread, made at first use.
struct Server {
    shared: Arc<Shared>,
    runner: SystemRunner,
}

thread_local! {
    static SERVER: RefCell<Option<Server>> = const { RefCell::new(None) };
}

fn with_server(f: impl FnOnce(&Server)) {
    SERVER.with(|cell| {
        let mut server = cell.borrow_mut();
        f(server.get_or_insert_with(Server::new));
    });
}

impl Server {
    fn new() -> Self {
        let runner = actix::System::new();
        let mounts = Mounts {
            paths: vec!["/socket".to_owned(), "/status".to_owned()],
            websocket: true,
            echo: None,
        };
        let shared = transport_shared(
            &Config::ephemeral(),
            Arc::new(Anyone),
            Router::new(),
            &Services::with_storage(None),
            mounts,
        )
        .expect("the fuzzing server's settings are valid");
        Server {
            shared: Arc::new(shared),
            runner,
        }
    }
}

/// Admits every connection.
struct Anyone;

impl Socket for Anyone {
    fn connect(&self, _params: &Params, _info: &ConnectInfo) -> Result<Assigns, Refused> {
        Ok(Assigns::new())
    }
}

/// Opens a long-poll session; its token.
async fn handshake(uri: &str, shared: &web::Data<Arc<Shared>>) -> Option<String> {
    let (req, mut payload) = TestRequest::get().uri(uri).to_http_parts();
    let body = web::Payload::from_request(&req, &mut payload).await.ok()?;
    let response = longpoll::serve(req, body, shared.clone()).await;
    let bytes = actix_web::body::to_bytes(response.into_body()).await.ok()?;
    let answer: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(answer.get("token")?.as_str()?.to_owned())
}

async fn post(uri: &str, token: &str, body: Bytes, shared: &web::Data<Arc<Shared>>) {
    let (req, mut payload) = TestRequest::post()
        .uri(uri)
        .insert_header(("x-phoenix-longpoll-token", token))
        .insert_header(("content-type", "application/x-ndjson"))
        .set_payload(body)
        .to_http_parts();
    if let Ok(body) = web::Payload::from_request(&req, &mut payload).await {
        let response = longpoll::serve(req, body, shared.clone()).await;
        let _ = actix_web::body::to_bytes(response.into_body()).await;
    }
}
