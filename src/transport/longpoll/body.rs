//! A long-poll POST body, read into client messages: ndjson lines (text, or base64 for
//! binary frames), or the whole body as one text message for older clients; and the
//! answer that closes the connection when a body was not read to its end. Must not
//! decode Phoenix messages: the session does.

use std::convert::Infallible;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::ConnectionType;
use actix_web::{web, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_core::Stream;

/// Lines of one POST that are processed; phoenix.js never sends more (docs/protocol.md §8.4).
const MAX_LINES: usize = 100;

#[derive(Debug, thiserror::Error)]
pub(super) enum BodyError {
    #[error("body too big")]
    TooBig,
    #[error(transparent)]
    Read(#[from] PayloadError),
}

/// The POST body, at most `limit` bytes; a declared length over it is refused unread.
/// The payload stays the caller's: if the body is not read to its end (too big, or the
/// caller's deadline passed), the answer must close the connection ([`unread`]).
pub(super) async fn read_body(
    headers: &HeaderMap,
    payload: &mut web::Payload,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(BodyError::TooBig);
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = poll_fn(|cx| Pin::new(&mut *payload).poll_next(cx)).await {
        let chunk = chunk?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooBig);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// `response` to a request whose body (if it declared one) was not read to its end:
/// the connection closes after it. The unread payload goes into the response body and
/// lives until that is written, so actix-http closes the connection; dropped earlier, a
/// chunked body would be drained instead, for as long as the client kept trickling it.
pub(super) fn unread(
    headers: &HeaderMap,
    mut response: HttpResponse,
    payload: web::Payload,
) -> HttpResponse {
    let declared = |name| headers.get(name).and_then(|value| value.to_str().ok());
    let has_body = declared(header::TRANSFER_ENCODING).is_some()
        || declared(header::CONTENT_LENGTH).is_some_and(|length| length.trim() != "0");
    if !has_body {
        return response;
    }
    response
        .head_mut()
        .set_connection_type(ConnectionType::Close);
    response.map_body(|_, body| {
        let body = body.try_into_bytes().unwrap_or_default();
        BoxBody::new(Unread {
            body: Some(body),
            _payload: payload,
        })
    })
}

/// A response body that holds the request's unread payload until it is written.
struct Unread {
    body: Option<Bytes>,
    _payload: web::Payload,
}

impl MessageBody for Unread {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.body.as_ref().map_or(0, |body| body.len() as u64))
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Infallible>>> {
        Poll::Ready(self.get_mut().body.take().map(Ok))
    }
}

/// Whether the body is `application/x-ndjson` (parameters such as `charset` ignored).
pub(super) fn is_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/x-ndjson"))
}

/// One client message of a POST.
pub(super) enum Line {
    Text(ByteString),
    Binary(Bytes),
}

/// A POST line that is no message; the session ends on it (docs/protocol.md §10).
#[derive(Debug, thiserror::Error)]
pub(super) enum LineError {
    #[error("long-poll text line is not valid UTF-8")]
    NotUtf8,
    #[error("long-poll binary line is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
}

/// ndjson: one message per line (`\n` or `\r\n`), empty lines skipped, at most
/// [`MAX_LINES`]. A line starting with `[` (V2) or `{` (V1; never valid base64) is text;
/// any other is the standard base64 of a binary frame.
pub(super) fn ndjson_lines(body: &Bytes, peer: &str) -> Vec<Result<Line, LineError>> {
    let mut lines = body
        .split(|&byte| byte == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.is_empty());
    let taken: Vec<_> = lines
        .by_ref()
        .take(MAX_LINES)
        .map(|line| parse_line(body.slice_ref(line)))
        .collect();
    let ignored = lines.count();
    if ignored > 0 {
        log::warn!("{peer}: long-poll POST: {ignored} lines past the first {MAX_LINES} ignored");
    }
    taken
}

fn parse_line(line: Bytes) -> Result<Line, LineError> {
    match line.first() {
        Some(b'[' | b'{') => text(line),
        _ => Ok(Line::Binary(Bytes::from(STANDARD.decode(&line)?))),
    }
}

fn text(bytes: Bytes) -> Result<Line, LineError> {
    ByteString::try_from(bytes)
        .map(Line::Text)
        .map_err(|_| LineError::NotUtf8)
}

/// Any other content type (old clients): the whole body is one text message.
pub(super) fn whole_body(body: Bytes) -> Vec<Result<Line, LineError>> {
    if body.is_empty() {
        Vec::new()
    } else {
        vec![text(body)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_lines_split_and_decode() {
        let body = Bytes::from_static(b"[1]\r\n\n{\"a\":1}\nAAEC\n");
        let lines = ndjson_lines(&body, "test");
        assert_eq!(lines.len(), 3);
        assert!(matches!(&lines[0], Ok(Line::Text(t)) if &**t == "[1]"));
        assert!(matches!(&lines[1], Ok(Line::Text(t)) if &**t == "{\"a\":1}"));
        assert!(matches!(&lines[2], Ok(Line::Binary(b)) if b[..] == [0, 1, 2]));

        let bad = ndjson_lines(&Bytes::from_static(b"not base64!\n[\xff]"), "test");
        assert!(matches!(bad[0], Err(LineError::Base64(_))));
        assert!(matches!(bad[1], Err(LineError::NotUtf8)));

        let many = Bytes::from("[]\n".repeat(MAX_LINES + 5));
        assert_eq!(ndjson_lines(&many, "test").len(), MAX_LINES);
    }
}
