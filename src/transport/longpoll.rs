//! The long-poll transport (docs/protocol.md §8): `{mount}/longpoll`, phoenix.js's fallback
//! where WebSockets are blocked.
//!
//! Owns the HTTP side of long-polling: the handshake that opens a session and answers
//! `410` with its token, poll GETs that wait up to the window, POSTs of ndjson lines
//! (whose body must arrive within a deadline), the CORS preflight, and the JSON status
//! bodies with their headers. Beside it: `body.rs`
//! (reading a POST into lines), `token.rs` (signed session tokens) and `server.rs` (one
//! actor per long-poll session, driving the same [`Session`](crate::session::Session) as
//! WebSocket, and the table of live ones). Must not parse Phoenix messages (the session
//! does) nor know channels or topics; admission (origin, `vsn`, `connect`) is the
//! transport module's, shared with WebSocket.

mod body;
mod server;
mod token;

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use tokio::sync::oneshot;

use self::body::{is_ndjson, ndjson_lines, read_body, unread, whole_body, BodyError};
pub(crate) use self::server::LongPollServers;
use self::server::{Poll, PollOutcome, Post, PostOutcome};
use self::token::ResumeError;
use super::{check_host_and_origin, open_session, peer, Admission, Refusal, Shared};

/// Long-poll's settings and its live sessions.
pub(crate) struct LongPoll {
    /// How long a poll waits for messages before answering 204.
    pub window: Duration,
    /// A session with no poll waiting for this long ends.
    pub timeout: Duration,
    /// Largest POST body accepted; a larger one gets 413.
    pub max_body: usize,
    /// A POST body must arrive whole within this long; past it, 408 and the connection
    /// closes.
    pub body_timeout: Duration,
    /// Most bytes of messages a session queues for its next poll (`--max-outbound-bytes`,
    /// as for a WebSocket client that does not read); past it the session ends.
    pub max_queue_bytes: usize,
    pub servers: LongPollServers,
}

/// `{mount}/longpoll`, every method: origin check, then GET (handshake or poll), POST,
/// OPTIONS (CORS preflight); any other method is a plain 400.
pub(crate) async fn serve(
    req: HttpRequest,
    body: web::Payload,
    shared: web::Data<Arc<Shared>>,
) -> HttpResponse {
    let response = if let Err(refusal) = check_host_and_origin(&shared, &Admission::of(&req)) {
        refuse(&req, &refusal)
    } else {
        match *req.method() {
            Method::GET => get(&shared, &req).await,
            Method::POST => return post(&shared, &req, body).await,
            Method::OPTIONS => preflight(&req),
            _ => HttpResponse::BadRequest()
                .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
                .finish(),
        }
    };
    unread(req.headers(), response, body)
}

/// A GET with the token of a live session polls it; any other GET is a handshake.
async fn get(shared: &Arc<Shared>, req: &HttpRequest) -> HttpResponse {
    let (token, session) = match shared.longpoll.servers.resume(req) {
        Ok(found) => found,
        Err(ResumeError::NoToken) => return handshake(shared, req),
        Err(error) => {
            log::info!("{}: long-poll GET: {error}: new session", peer(req));
            return handshake(shared, req);
        }
    };
    let (reply, outcome) = oneshot::channel();
    if session.send(Poll { reply }).await.is_err() {
        log::info!(
            "{}: long-poll GET: {}: new session",
            peer(req),
            ResumeError::UnknownSession
        );
        return handshake(shared, req);
    }
    match outcome.await {
        Ok(PollOutcome::Messages(frames)) => {
            let messages: Vec<&str> = frames.iter().map(|frame| &**frame).collect();
            status_json(
                StatusCode::OK,
                json!({"status": 200, "token": token, "messages": messages}),
            )
        }
        Ok(PollOutcome::NoContent) => status_json(
            StatusCode::OK,
            json!({"status": 204, "token": token, "messages": []}),
        ),
        // The session ended while this poll waited: "session gone", the client reconnects.
        Ok(PollOutcome::Gone) | Err(_) => status_json(
            StatusCode::OK,
            json!({"status": 410, "token": token, "messages": []}),
        ),
    }
}

/// Admits the client and opens a session: `410` with its token (docs/protocol.md §8.2).
/// An address past its sessions gets HTTP 429 with `{"status":403}`: phoenix.js retries
/// a 403 after its backoff.
fn handshake(shared: &Arc<Shared>, req: &HttpRequest) -> HttpResponse {
    let Ok(ticket) = shared.door.open_session(req.peer_addr()) else {
        return status_only(StatusCode::TOO_MANY_REQUESTS, 403);
    };
    match open_session(shared, &Admission::of(req), "longpoll") {
        Ok(session) => {
            let token = shared
                .longpoll
                .servers
                .start(shared.clone(), session, peer(req), ticket);
            status_json(
                StatusCode::OK,
                json!({"status": 410, "token": token, "messages": []}),
            )
        }
        Err(refusal) => refuse(req, &refusal),
    }
}

/// Client messages for a live session (docs/protocol.md §8.4).
async fn post(shared: &Arc<Shared>, req: &HttpRequest, body: web::Payload) -> HttpResponse {
    let session = match shared.longpoll.servers.resume(req) {
        Ok((_, session)) => session,
        Err(error) => {
            log::info!("{}: long-poll POST: {error}: 410", peer(req));
            return unread(req.headers(), status_only(StatusCode::OK, 410), body);
        }
    };
    let (limit, deadline) = (shared.longpoll.max_body, shared.longpoll.body_timeout);
    let mut payload = body;
    let read =
        actix_web::rt::time::timeout(deadline, read_body(req.headers(), &mut payload, limit));
    let body = match read.await {
        Ok(Ok(body)) => body,
        Ok(Err(BodyError::TooBig)) => {
            log::info!(
                "{}: long-poll POST refused: body over {limit} bytes",
                peer(req)
            );
            return unread(
                req.headers(),
                status_only(StatusCode::PAYLOAD_TOO_LARGE, 413),
                payload,
            );
        }
        Ok(Err(BodyError::Read(error))) => {
            log::debug!("{}: long-poll POST body unreadable: {error}", peer(req));
            let response = HttpResponse::BadRequest()
                .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
                .finish();
            return unread(req.headers(), response, payload);
        }
        Err(_) => {
            log::info!(
                "{}: long-poll POST: body not received within {deadline:?}: 408",
                peer(req)
            );
            return unread(
                req.headers(),
                status_only(StatusCode::REQUEST_TIMEOUT, 408),
                payload,
            );
        }
    };
    let lines = if is_ndjson(req.headers()) {
        ndjson_lines(&body, &peer(req))
    } else {
        whole_body(body)
    };
    let window = shared.longpoll.window;
    match actix_web::rt::time::timeout(window, session.send(Post { lines })).await {
        Ok(Ok(PostOutcome::Accepted)) => status_only(StatusCode::OK, 200),
        Ok(Ok(PostOutcome::Ended)) => status_only(StatusCode::OK, 500),
        Ok(Err(_)) => {
            log::info!(
                "{}: long-poll POST: {}: 410",
                peer(req),
                ResumeError::UnknownSession
            );
            status_only(StatusCode::OK, 410)
        }
        Err(_) => {
            log::warn!(
                "{}: long-poll POST: the session took no message within {window:?}: 408",
                peer(req)
            );
            status_only(StatusCode::OK, 408)
        }
    }
}

/// The CORS preflight, as Phoenix answers it.
fn preflight(req: &HttpRequest) -> HttpResponse {
    let requested: Vec<&str> = req
        .headers()
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter_map(|value| value.to_str().ok())
        .collect();
    HttpResponse::Ok()
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, requested.join(", ")))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "get, post, options"))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "3600"))
        .finish()
}

/// A refused request: HTTP 403 and `{"status":403}` (docs/protocol.md §8.5).
fn refuse(req: &HttpRequest, refusal: &Refusal) -> HttpResponse {
    log::info!("{}: long-poll refused: {refusal}", peer(req));
    status_only(StatusCode::FORBIDDEN, 403)
}

fn status_only(http: StatusCode, status: u16) -> HttpResponse {
    status_json(http, json!({ "status": status }))
}

/// Every long-poll JSON answer, with Phoenix's headers.
fn status_json(http: StatusCode, body: serde_json::Value) -> HttpResponse {
    HttpResponse::build(http)
        .insert_header((header::CONTENT_TYPE, "application/json; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .body(body.to_string())
}
