//! One Phoenix V2 WebSocket connection: a small RFC 6455 client written for this tool,
//! plus what Phoenix needs on top (refs, joins, replies, heartbeats).
//!
//! Why not tokio-tungstenite: its read buffer grows to the largest message a
//! connection ever received and keeps that capacity, and it zero-fills the whole
//! capacity before every read. In `fanout` every member receives one `presence_state`
//! holding the whole roster (~165 bytes per member), so with tungstenite the tool kept
//! ~400 KB per member at 5,000 members (2 GB in all, measured) and would need tens of
//! GB at 19,000, and every later read of a member paid a memset of that size. Here each
//! connection has a fixed 8 KiB read buffer: a message that fits is handed to the
//! caller in place (no copy, no allocation), a larger one is assembled in a buffer of
//! its exact size that is freed right after.
//!
//! Reading is callback-based: [`Conn::recv`] hands every complete message already
//! received to the caller, waiting only when there is none. It is cancel safe (partial
//! data stays in the connection), so it can sit in a `select!`.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use base64::Engine;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::target::Target;
use crate::wire;
use crate::{Error, Result};

/// How often a long-lived connection sends a heartbeat (phoenix.js's interval).
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// Read buffer per connection; larger messages are assembled apart.
const READ_BUF: usize = 8 * 1024;
/// Largest message accepted from the server.
const MAX_MESSAGE: usize = 256 << 20;
/// Largest HTTP response head accepted at the upgrade.
const MAX_HEAD: usize = 16 * 1024;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// How a connection ended, as seen by the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// A close frame with this code (`None`: a close frame without a code).
    Frame(Option<u16>),
    /// The TCP stream ended without a close frame.
    Eof,
    /// The TCP connection was reset.
    Reset,
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::Frame(Some(code)) => write!(f, "close frame {code}"),
            Closed::Frame(None) => f.write_str("close frame without a code"),
            Closed::Eof => f.write_str("TCP EOF without a close frame"),
            Closed::Reset => f.write_str("TCP reset"),
        }
    }
}

/// A server reply to one of our messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyStatus {
    Ok,
    /// Not ok: the status and the response, as text.
    Refused(String),
}

/// A message being assembled from continuation frames.
struct Fragments {
    text: bool,
    data: Vec<u8>,
}

/// A frame larger than the read buffer, being read into a buffer of its exact size.
struct Large {
    header: Header,
    payload: Vec<u8>,
    filled: usize,
}

pub struct Conn {
    stream: TcpStream,
    /// Received bytes not yet parsed: `rbuf[start..end]`.
    rbuf: Box<[u8]>,
    start: usize,
    end: usize,
    fragments: Option<Fragments>,
    large: Option<Large>,
    /// Bytes that arrived with the upgrade response and did not fit `rbuf`: read
    /// before the socket.
    pending: Vec<u8>,
    /// Frames queued for the socket ([`feed`](Self::feed), pongs).
    wbuf: Vec<u8>,
    /// The server's close frame arrived (how the connection ended).
    closed: Option<Closed>,
    next_ref: u64,
    /// Longest a send may wait for the socket (a server that stops reading us).
    send_limit: Duration,
    /// Masking keys (xorshift; RFC 6455 wants unpredictable, not secret, keys).
    mask_state: u64,
    /// Binary messages received (the contract's servers send none; counted, skipped).
    pub binary_frames: u64,
}

impl Conn {
    /// Connects (TCP from the next source address, then the upgrade) as `user`, within
    /// `limit`; later sends fail when they wait for the socket longer than `limit`.
    pub async fn open(target: &Target, user: &str, limit: Duration) -> Result<Conn> {
        let open = async {
            let stream = target.connect_tcp().await?;
            upgrade(stream, target, user, limit).await
        };
        timeout(limit, open)
            .await
            .map_err(|_| Error(format!("connect + upgrade took more than {limit:?}")))?
    }

    /// A fresh ref for the next message.
    pub fn take_ref(&mut self) -> u64 {
        let reference = self.next_ref;
        self.next_ref += 1;
        reference
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.stream.local_addr().ok()
    }

    pub fn raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Sends one text frame now (with anything queued before it).
    pub async fn send(&mut self, text: &str) -> Result<()> {
        self.feed(text);
        self.flush().await
    }

    /// Queues one text frame; [`flush`](Self::flush) writes the queue.
    pub fn feed(&mut self, text: &str) {
        self.queue(OP_TEXT, text.as_bytes());
    }

    /// Writes every queued frame, waiting at most the send limit.
    pub async fn flush(&mut self) -> Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let limit = self.send_limit;
        match timeout(limit, self.stream.write_all(&self.wbuf)).await {
            Ok(Ok(())) => {
                self.wbuf.clear();
                Ok(())
            }
            Ok(Err(error)) => Err(Error(format!("send: {error}"))),
            Err(_) => Err(Error(format!(
                "send blocked for more than {limit:?} (the server is not reading)"
            ))),
        }
    }

    /// Sends a heartbeat (its reply arrives as a frame on topic `phoenix`).
    pub async fn heartbeat(&mut self) -> Result<()> {
        let reference = self.take_ref();
        self.send(&wire::encode(None, reference, "phoenix", "heartbeat", "{}"))
            .await
    }

    /// Hands every complete text message already received to `on_text` (with the time
    /// its last bytes were read), waiting for data only when there is none. Returns
    /// `Ok(None)` after at least one message, `Ok(Some(how))` once the connection has
    /// ended. Cancel safe: a partly read frame stays in the connection.
    pub async fn recv(
        &mut self,
        on_text: &mut (dyn FnMut(&str, Instant) + Send),
    ) -> Result<Option<Closed>> {
        let mut at = Instant::now();
        loop {
            if let Some(closed) = &self.closed {
                return Ok(Some(closed.clone()));
            }
            if let Some(large) = self.large.take_if(|l| l.filled == l.payload.len()) {
                if self.on_frame(large.header, &large.payload, on_text, at)? > 0 {
                    return Ok(None);
                }
                continue;
            }
            if self.large.is_none() {
                if self.parse_buffered(on_text, at)? > 0 {
                    if !self.wbuf.is_empty() {
                        // A pong to send: best effort, without waiting.
                        let _ = self.try_write_queued();
                    }
                    return Ok(None);
                }
                if self.closed.is_some() || self.large.is_some() {
                    continue;
                }
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                } else if self.end == self.rbuf.len() {
                    self.rbuf.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                }
            }
            if self.read_some().await? {
                at = Instant::now();
            }
        }
    }

    /// Reads more of the large frame being assembled, or else into the read buffer.
    /// `false` when the stream ended (recorded in `closed`).
    async fn read_some(&mut self) -> Result<bool> {
        let buf = match &mut self.large {
            Some(large) => &mut large.payload[large.filled..],
            None => &mut self.rbuf[self.end..],
        };
        let read = read_into(&mut self.stream, &mut self.pending, buf).await;
        let Some(n) = self.bytes_read(read)? else {
            return Ok(false);
        };
        match &mut self.large {
            Some(large) => large.filled += n,
            None => self.end += n,
        }
        Ok(true)
    }

    /// The outcome of a socket read: `Some(n)` bytes, `None` when the stream ended
    /// (recorded in `closed`), or an error.
    fn bytes_read(&mut self, read: std::io::Result<usize>) -> Result<Option<usize>> {
        match read {
            Ok(0) => {
                self.closed = Some(Closed::Eof);
                Ok(None)
            }
            Ok(n) => Ok(Some(n)),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                self.closed = Some(Closed::Reset);
                Ok(None)
            }
            Err(error) => Err(Error(format!("read: {error}"))),
        }
    }

    /// Handles the complete frames in the read buffer; returns how many text messages
    /// were handed over. A frame too large for the buffer becomes `self.large` (when
    /// nothing was handed over yet: the caller reads it next).
    fn parse_buffered(
        &mut self,
        on_text: &mut (dyn FnMut(&str, Instant) + Send),
        at: Instant,
    ) -> Result<usize> {
        let mut delivered = 0;
        while self.closed.is_none() {
            let Some(header) = parse_header(&self.rbuf[self.start..self.end])? else {
                break;
            };
            let total = header.header_len + header.len;
            let available = self.end - self.start;
            if total > available {
                if total > self.rbuf.len() && delivered == 0 {
                    let mut payload = vec![0u8; header.len];
                    let buffered = available - header.header_len;
                    payload[..buffered]
                        .copy_from_slice(&self.rbuf[self.start + header.header_len..self.end]);
                    self.large = Some(Large {
                        header,
                        payload,
                        filled: buffered,
                    });
                    self.start = 0;
                    self.end = 0;
                }
                break;
            }
            let payload = self.start + header.header_len..self.start + total;
            self.start += total;
            // The payload stays in rbuf while the rest of self is updated.
            let rbuf = std::mem::take(&mut self.rbuf);
            let result = self.on_frame(header, &rbuf[payload], on_text, at);
            self.rbuf = rbuf;
            delivered += result?;
        }
        Ok(delivered)
    }

    /// One frame's payload: text delivered (or added to a fragmented message), control
    /// frames answered, binary counted.
    fn on_frame(
        &mut self,
        header: Header,
        payload: &[u8],
        on_text: &mut (dyn FnMut(&str, Instant) + Send),
        at: Instant,
    ) -> Result<usize> {
        match header.opcode {
            OP_TEXT | OP_BINARY => {
                if self.fragments.is_some() {
                    return Err(Error(
                        "protocol: new message inside a fragmented one".into(),
                    ));
                }
                let text = header.opcode == OP_TEXT;
                if header.fin {
                    return self.deliver(text, payload, on_text, at);
                }
                self.fragments = Some(Fragments {
                    text,
                    data: payload.to_vec(),
                });
                Ok(0)
            }
            OP_CONTINUATION => {
                let Some(fragments) = self.fragments.as_mut() else {
                    return Err(Error("protocol: continuation without a message".into()));
                };
                if fragments.data.len() + payload.len() > MAX_MESSAGE {
                    return Err(Error("protocol: message too large".into()));
                }
                fragments.data.extend_from_slice(payload);
                match self.fragments.take_if(|_| header.fin) {
                    Some(whole) => self.deliver(whole.text, &whole.data, on_text, at),
                    None => Ok(0),
                }
            }
            OP_CLOSE => {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                self.closed = Some(Closed::Frame(code));
                Ok(0)
            }
            OP_PING => {
                self.queue(OP_PONG, payload);
                Ok(0)
            }
            OP_PONG => Ok(0),
            other => Err(Error(format!("protocol: unknown opcode {other}"))),
        }
    }

    /// A whole message: text handed to `on_text` (1), binary counted (0).
    fn deliver(
        &mut self,
        text: bool,
        data: &[u8],
        on_text: &mut (dyn FnMut(&str, Instant) + Send),
        at: Instant,
    ) -> Result<usize> {
        if !text {
            self.binary_frames += 1;
            return Ok(0);
        }
        let text = std::str::from_utf8(data)
            .map_err(|_| Error("protocol: text message not UTF-8".into()))?;
        on_text(text, at);
        Ok(1)
    }

    /// Sends `event` on `topic` and waits (at most `limit`) for its reply; every other
    /// message received meanwhile goes to `other`, with its arrival time.
    pub async fn request(
        &mut self,
        join_ref: u64,
        topic: &str,
        event: &str,
        payload: &str,
        limit: Duration,
        other: &mut (dyn FnMut(&str, Instant) + Send),
    ) -> Result<ReplyStatus> {
        let reference = self.take_ref();
        self.send(&wire::encode(
            Some(join_ref),
            reference,
            topic,
            event,
            payload,
        ))
        .await?;
        let mut reply = None;
        let wait = async {
            loop {
                let mut on_text = |text: &str, at: Instant| match reply_to(text, reference) {
                    Some(status) if reply.is_none() => reply = Some(status),
                    _ => other(text, at),
                };
                let ended = self.recv(&mut on_text).await?;
                if let Some(status) = reply.take() {
                    return Ok(status);
                }
                if let Some(how) = ended {
                    return Err(Error(format!(
                        "connection ended awaiting the {event} reply: {how}"
                    )));
                }
            }
        };
        timeout(limit, wait)
            .await
            .map_err(|_| Error(format!("no {event} reply within {limit:?}")))?
    }

    /// Joins `topic`; returns the join ref, or an error if refused or not answered.
    pub async fn join(
        &mut self,
        topic: &str,
        limit: Duration,
        other: &mut (dyn FnMut(&str, Instant) + Send),
    ) -> Result<u64> {
        let join_ref = self.next_ref;
        match self
            .request(join_ref, topic, "phx_join", "{}", limit, other)
            .await?
        {
            ReplyStatus::Ok => Ok(join_ref),
            ReplyStatus::Refused(why) => Err(Error(format!("join {topic} refused: {why}"))),
        }
    }

    /// Closes with code 1000 and waits for the server's close frame or the end of the
    /// stream, dropping whatever still arrives; all within `limit`. Returns whether the
    /// server answered in time. The socket is closed either way.
    pub async fn close(mut self, limit: Duration) -> bool {
        let handshake = async {
            let server_closed_first = matches!(self.closed, Some(Closed::Frame(_)));
            self.queue(OP_CLOSE, &1000u16.to_be_bytes());
            if self.flush().await.is_err() {
                return server_closed_first;
            }
            if server_closed_first {
                return true;
            }
            loop {
                match self.recv(&mut |_, _| {}).await {
                    Ok(Some(Closed::Frame(_))) | Ok(Some(Closed::Eof)) => return true,
                    Ok(Some(Closed::Reset)) | Err(_) => return false,
                    Ok(None) => {}
                }
            }
        };
        let answered = timeout(limit, handshake).await.unwrap_or(false);
        let _ = self.stream.shutdown().await;
        answered
    }

    /// Appends one masked frame to the write queue.
    fn queue(&mut self, opcode: u8, payload: &[u8]) {
        self.wbuf.push(0x80 | opcode);
        let len = payload.len();
        if len < 126 {
            self.wbuf.push(0x80 | len as u8);
        } else if len <= u16::MAX as usize {
            self.wbuf.push(0x80 | 126);
            self.wbuf.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            self.wbuf.push(0x80 | 127);
            self.wbuf.extend_from_slice(&(len as u64).to_be_bytes());
        }
        self.mask_state ^= self.mask_state << 13;
        self.mask_state ^= self.mask_state >> 7;
        self.mask_state ^= self.mask_state << 17;
        let mask = (self.mask_state as u32).to_ne_bytes();
        self.wbuf.extend_from_slice(&mask);
        self.wbuf
            .extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    }

    /// Writes as much of the queue as the socket takes now, without waiting.
    fn try_write_queued(&mut self) -> std::io::Result<()> {
        while !self.wbuf.is_empty() {
            let written = self.stream.try_write(&self.wbuf)?;
            self.wbuf.drain(..written);
        }
        Ok(())
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    fin: bool,
    opcode: u8,
    header_len: usize,
    len: usize,
}

/// The header at the start of `buf`, `None` if incomplete. Server frames are never
/// masked.
fn parse_header(buf: &[u8]) -> Result<Option<Header>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    if buf[0] & 0x70 != 0 {
        return Err(Error(
            "protocol: reserved bits set (no extension negotiated)".into(),
        ));
    }
    let opcode = buf[0] & 0x0F;
    if buf[1] & 0x80 != 0 {
        return Err(Error("protocol: masked frame from the server".into()));
    }
    let (header_len, len) = match buf[1] & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (4, u16::from_be_bytes([buf[2], buf[3]]) as u64)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&buf[2..10]);
            (10, u64::from_be_bytes(bytes))
        }
        len => (2, len as u64),
    };
    if len > MAX_MESSAGE as u64 {
        return Err(Error(format!("protocol: frame of {len} bytes")));
    }
    if opcode >= 0x8 && (len > 125 || !fin) {
        return Err(Error("protocol: invalid control frame".into()));
    }
    Ok(Some(Header {
        fin,
        opcode,
        header_len,
        len: len as usize,
    }))
}

/// The HTTP upgrade: request, then a 101 with the right `Sec-WebSocket-Accept`.
async fn upgrade(
    mut stream: TcpStream,
    target: &Target,
    user: &str,
    limit: Duration,
) -> Result<Conn> {
    let mut nonce = [0u8; 16];
    random_bytes(&mut nonce);
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        target.request_path(user),
        target.host_header()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| Error(format!("upgrade request: {e}")))?;
    let mut rbuf = vec![0u8; READ_BUF.max(MAX_HEAD)];
    let mut end = 0;
    let head_len = loop {
        let n = stream
            .read(&mut rbuf[end..])
            .await
            .map_err(|e| Error(format!("upgrade response: {e}")))?;
        if n == 0 {
            return Err(Error("upgrade: the server closed the connection".into()));
        }
        end += n;
        if let Some(pos) = rbuf[..end].windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if end == rbuf.len() {
            return Err(Error("upgrade: response head too large".into()));
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    response
        .parse(&rbuf[..head_len])
        .map_err(|e| Error(format!("upgrade: bad HTTP response: {e}")))?;
    let status = response.code.unwrap_or(0);
    if status != 101 {
        return Err(Error(format!("upgrade refused: HTTP {status}")));
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    let expected = accept_key(&key);
    if header("sec-websocket-accept").as_deref() != Some(expected.as_str()) {
        return Err(Error("upgrade: wrong Sec-WebSocket-Accept".into()));
    }
    if !header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return Err(Error("upgrade: no Upgrade: websocket".into()));
    }
    // Frames that came with the head are read first.
    let extra = end - head_len;
    let mut buffer = vec![0u8; READ_BUF].into_boxed_slice();
    let kept = extra.min(READ_BUF);
    buffer[..kept].copy_from_slice(&rbuf[head_len..head_len + kept]);
    let pending = rbuf[head_len + kept..end].to_vec();
    let mut seed = [0u8; 8];
    random_bytes(&mut seed);
    Ok(Conn {
        stream,
        rbuf: buffer,
        start: 0,
        end: kept,
        fragments: None,
        large: None,
        pending,
        wbuf: Vec::new(),
        closed: None,
        next_ref: 1,
        send_limit: limit,
        mask_state: u64::from_ne_bytes(seed) | 1,
        binary_frames: 0,
    })
}

/// Reads into `buf`: first what is left in `pending`, then from the socket.
async fn read_into(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    if pending.is_empty() {
        return stream.read(buf).await;
    }
    let n = pending.len().min(buf.len());
    buf[..n].copy_from_slice(&pending[..n]);
    pending.drain(..n);
    Ok(n)
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455 §4.2.2).
pub(crate) fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Fills `buf` from the kernel's random source (falls back to the clock).
fn random_bytes(buf: &mut [u8]) {
    // SAFETY: getrandom writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_ne_bytes();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = nanos[i % nanos.len()] ^ (i as u8);
        }
    }
}

/// If `text` is the reply to our message `reference`: its status.
fn reply_to(text: &str, reference: u64) -> Option<ReplyStatus> {
    let frame = wire::decode(text)?;
    if frame.event != "phx_reply" || frame.ref_number() != Some(reference) {
        return None;
    }
    match wire::reply_status(frame.payload) {
        Some(status) if status == "ok" => Some(ReplyStatus::Ok),
        Some(status) => Some(ReplyStatus::Refused(format!(
            "{status} {}",
            wire::reply_response(frame.payload)
        ))),
        None => Some(ReplyStatus::Refused(format!(
            "malformed reply {}",
            frame.payload
        ))),
    }
}

/// A scripted WebSocket server for the tool's own tests.
#[cfg(test)]
pub(crate) mod scripted {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Accepts one connection on `listener`, reads its request head and answers the
    /// upgrade; returns the socket and the head.
    pub(crate) async fn accept_upgrade(listener: TcpListener) -> (TcpStream, String) {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            socket.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            super::accept_key(key)
        );
        socket.write_all(answer.as_bytes()).await.unwrap();
        (socket, head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_of_the_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    /// A scripted server: upgrade, then small, fragmented, large and binary messages,
    /// a ping (whose pong must come back masked) and a close 1008.
    #[tokio::test]
    async fn reads_every_kind_of_frame() {
        use tokio::net::TcpListener;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let large = "x".repeat(20_000);
        let server_large = large.clone();
        let server = tokio::spawn(async move {
            let (mut socket, head) = scripted::accept_upgrade(listener).await;
            assert!(
                head.starts_with("GET /ws?user=u&vsn=2.0.0 HTTP/1.1\r\n"),
                "{head}"
            );
            let mut out = Vec::new();
            out.extend([0x81, 1, b'a']);
            out.extend([0x01, 2, b'h', b'e']);
            out.extend([0x89, 2, b'p', b'!']);
            out.extend([0x80, 3, b'l', b'l', b'o']);
            out.extend([0x81, 126]);
            out.extend((server_large.len() as u16).to_be_bytes());
            out.extend(server_large.as_bytes());
            out.extend([0x82, 2, 1, 2]);
            out.extend([0x88, 2, 0x03, 0xF0]);
            socket.write_all(&out).await.unwrap();
            // The pong, masked, then the client's close.
            let mut frame = [0u8; 8];
            socket.read_exact(&mut frame).await.unwrap();
            assert_eq!(frame[0], 0x8A);
            assert_eq!(frame[1], 0x80 | 2);
            assert_eq!([frame[6] ^ frame[2], frame[7] ^ frame[3]], *b"p!");
            let mut close = [0u8; 8];
            socket.read_exact(&mut close).await.unwrap();
            assert_eq!(close[0], 0x88);
        });

        let target = Target::parse(&format!("ws://127.0.0.1:{port}/ws"), 1).unwrap();
        let mut conn = Conn::open(&target, "u", Duration::from_secs(5))
            .await
            .unwrap();
        let mut texts = Vec::new();
        let ended = loop {
            if let Some(how) = conn
                .recv(&mut |t, _| texts.push(t.to_owned()))
                .await
                .unwrap()
            {
                break how;
            }
        };
        assert_eq!(ended, Closed::Frame(Some(1008)));
        assert_eq!(texts, vec!["a".to_owned(), "hello".to_owned(), large]);
        assert_eq!(conn.binary_frames, 1);
        assert!(conn.large.is_none());
        assert!(conn.close(Duration::from_secs(5)).await);
        server.await.unwrap();
    }

    #[test]
    fn headers() {
        assert_eq!(parse_header(&[0x81]).unwrap(), None);
        assert_eq!(
            parse_header(&[0x81, 5]).unwrap(),
            Some(Header {
                fin: true,
                opcode: 1,
                header_len: 2,
                len: 5
            })
        );
        assert_eq!(
            parse_header(&[0x01, 126, 1, 0]).unwrap(),
            Some(Header {
                fin: false,
                opcode: 1,
                header_len: 4,
                len: 256
            })
        );
        assert_eq!(parse_header(&[0x82, 127, 0, 0, 0, 0, 0]).unwrap(), None);
        assert_eq!(
            parse_header(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]).unwrap(),
            Some(Header {
                fin: true,
                opcode: 2,
                header_len: 10,
                len: 65536
            })
        );
        assert!(parse_header(&[0x81, 0x85]).is_err(), "masked");
        assert!(parse_header(&[0xC1, 1]).is_err(), "RSV1");
        assert!(parse_header(&[0x09, 0]).is_err(), "fragmented ping");
    }
}
