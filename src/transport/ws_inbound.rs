//! The read side of one WebSocket connection: frames in, whole messages out.
//!
//! Owns reading the socket, framing (actix-http's `ws::Codec`) under the size limit,
//! the reassembly of fragmented messages, the UTF-8 validation of text, and the checks
//! of a close frame's code and reason (the codec reports both as "Bad opcode"). Yields
//! [`Incoming`] messages, or the [`Close`] a violation calls for; after a violation it
//! drops whatever arrives. Must not answer anything nor know what a message means: the
//! connection (`websocket.rs`) decides what each message or failure calls for.
//!
//! What a connection holds is bounded here. The codec checks a frame's size only once
//! the whole frame has arrived, so a header declaring 2 GiB had the server buffer all
//! of it: each header is read first, and a frame (or a continuation, counting the
//! fragments before it) declaring more than the limit is refused at once with 1009. A
//! frame larger than one read is read up to its end and no further, so the read buffer
//! never holds more than the largest frame allowed. Between messages it holds no buffer.
//!
//! Across connections, what messages still arriving hold (a frame read in part, the
//! fragments joined so far) counts against one [`UnfinishedBudget`]: a connection whose
//! message needs more than the budget has left is closed with 1013 (try again later).
//! Messages up to [`FREE`] bytes never count, so ordinary Phoenix traffic never meets
//! it. How long an unfinished message may take is the idle timeout's business
//! (`websocket.rs`): only a complete message restarts it.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_codec::Decoder;
use actix_http::ws::{CloseReason, Codec, Frame, Item, ProtocolError};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::io::{AsyncRead, ReadBuf};

use crate::close::Close;

/// A whole message from the client, or a control frame.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A text message, fragments joined, valid UTF-8.
    Text(ByteString),
    /// A binary message, fragments joined.
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    /// The client starts the close handshake, with its code (already checked).
    Close(Option<CloseReason>),
}

/// Why no more messages come from a connection.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The client broke a rule or a limit: the connection closes with `close`, and
    /// `why` goes to the log.
    Refused { close: Close, why: String },
    /// The socket failed: the peer is gone.
    Gone(io::Error),
}

impl ReadError {
    fn refused(close: Close, why: impl std::fmt::Display) -> Self {
        ReadError::Refused {
            close,
            why: why.to_string(),
        }
    }
}

/// Bytes held by WebSocket messages still arriving, across all connections, and the
/// most they may hold (`--max-unfinished-bytes`).
#[derive(Debug)]
pub(crate) struct UnfinishedBudget {
    held: AtomicUsize,
    max: usize,
}

impl UnfinishedBudget {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(UnfinishedBudget {
            held: AtomicUsize::new(0),
            max,
        })
    }

    /// Takes `bytes` more, unless that would pass the bound.
    fn take(&self, bytes: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&total| total <= self.max)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes held now.
    fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

/// A message that holds up to this many bytes while it arrives never counts against the
/// budget (nor is refused for it): every ordinary Phoenix message is far smaller.
const FREE: usize = 16 * 1024;

/// What one connection's unfinished message holds of the budget; given back on drop.
#[derive(Debug)]
struct Claim {
    budget: Arc<UnfinishedBudget>,
    bytes: usize,
}

impl Claim {
    /// Holds `bytes` in all (nothing up to [`FREE`]); `false`, holding what it held, if
    /// the budget cannot give more.
    fn hold(&mut self, bytes: usize) -> bool {
        let bytes = if bytes <= FREE { 0 } else { bytes };
        if bytes <= self.bytes {
            self.budget.give_back(self.bytes - bytes);
        } else if !self.budget.take(bytes - self.bytes) {
            return false;
        }
        self.bytes = bytes;
        true
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// Reads a connection's messages from `io`.
pub(crate) struct Reader<R> {
    io: R,
    /// Bytes read and not yet decoded; empty between messages.
    buf: BytesMut,
    codec: Codec,
    max_message: usize,
    /// The fragmented message being reassembled, if any.
    fragments: Option<Fragments>,
    /// What the message being read holds of the server-wide budget.
    claim: Claim,
    eof: bool,
    /// A violation was reported: what arrives is dropped unread.
    failed: bool,
    /// The most the read buffer has held, for the tests.
    #[cfg(test)]
    peak: usize,
}

/// Bytes read from the socket per read call, at most.
const READ_CHUNK: usize = 8 * 1024;

/// Reads a closing connection's reader makes before letting other tasks run.
const DRAIN_READS: usize = 16;

/// The longest frame header: two bytes, a 64-bit length, a 4-byte masking key.
const MAX_HEADER: usize = 14;

/// The longest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// What a frame's header declares, read before the frame itself is buffered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    opcode: u8,
    /// The header's own length, masking key included.
    len: usize,
    payload_len: u64,
}

impl Header {
    /// The header at the start of `buf`, once its length field is complete. `None`
    /// before that, and for a header the codec refuses from its first two bytes anyway
    /// (reserved bits, an unmasked frame, an unknown opcode).
    fn peek(buf: &[u8]) -> Option<Header> {
        let (&first, &second) = (buf.first()?, buf.get(1)?);
        let opcode = first & 0x0f;
        let known = matches!(opcode, 0x0..=0x2 | 0x8..=0xa);
        if first & 0x70 != 0 || second & 0x80 == 0 || !known {
            return None;
        }
        let (payload_len, len) = match second & 0x7f {
            126 => (
                u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
                4,
            ),
            127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
            short => (u64::from(short), 2),
        };
        Some(Header {
            opcode,
            len: len + 4,
            payload_len,
        })
    }

    fn is_control(self) -> bool {
        self.opcode & 0x8 != 0
    }

    /// The whole frame's length; only called once the payload is known to be within
    /// the limit.
    fn frame_len(self) -> usize {
        self.len + usize::try_from(self.payload_len).unwrap_or(usize::MAX - self.len)
    }
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// A reader of messages up to `max_message` bytes, whose unfinished messages count
    /// against `budget`; `early` holds bytes already read past the handshake.
    pub(crate) fn new(
        io: R,
        early: BytesMut,
        max_message: usize,
        budget: Arc<UnfinishedBudget>,
    ) -> Self {
        Reader {
            io,
            buf: early,
            codec: Codec::new().max_size(max_message),
            max_message,
            fragments: None,
            claim: Claim { budget, bytes: 0 },
            eof: false,
            failed: false,
            #[cfg(test)]
            peak: 0,
        }
    }

    /// Reports `error` and stops: what was buffered is let go.
    fn fail(&mut self, error: ReadError) -> Poll<Option<Result<Incoming, ReadError>>> {
        self.failed = true;
        self.buf = BytesMut::new();
        self.fragments = None;
        self.claim.hold(0);
        Poll::Ready(Some(Err(error)))
    }

    /// After a violation, reads what the client still sends and drops it, keeping
    /// nothing: the connection is closing, and unread bytes would turn the socket's
    /// close into a reset that can cost the client its close frame.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Incoming, ReadError>>> {
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        for _ in 0..DRAIN_READS {
            let mut read = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut self.io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if !read.filled().is_empty() => continue,
                // The end, an error, or nothing yet: the close frame ends the connection.
                _ => return Poll::Pending,
            }
        }
        // A client that never pauses does not keep the worker: others run first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Bytes the unfinished message holds, counting the frame being read as whole (the
    /// codec reserves room for all of it); its header must have passed [`Self::check`].
    fn unfinished(&self) -> usize {
        let fragments = self.fragments.as_ref().map_or(0, |f| f.data.capacity());
        let frame = Header::peek(&self.buf).map_or(0, Header::frame_len);
        fragments + frame.max(self.buf.len())
    }

    /// Holds `bytes` of the budget, or says why not.
    fn hold(&mut self, bytes: usize) -> Result<(), ReadError> {
        if self.claim.hold(bytes) {
            return Ok(());
        }
        let budget = &self.claim.budget;
        let (held, max) = (budget.held(), budget.max);
        let why = format_args!(
            "its unfinished message needs {bytes} bytes; unfinished messages hold {held} \
             of the {max} allowed across connections (--max-unfinished-bytes)"
        );
        Err(ReadError::refused(Close::SERVER_BUSY, why))
    }

    /// Refuses the frame `header` announces if it breaks a limit: a control frame over
    /// 125 bytes, a data frame over the message limit, or a continuation that would take
    /// its message over it.
    fn check(&self, header: Header) -> Result<(), ReadError> {
        let declared = header.payload_len;
        if header.is_control() {
            if declared > MAX_CONTROL_PAYLOAD {
                let why = format_args!("a control frame declaring {declared} bytes");
                return Err(ReadError::refused(Close::PROTOCOL_ERROR, why));
            }
            return match header.opcode {
                0x8 => close_payload(header, &self.buf),
                _ => Ok(()),
            };
        }
        let max = self.max_message;
        let before = match (header.opcode, &self.fragments) {
            (0x0, Some(fragments)) => fragments.data.len(),
            _ => 0,
        };
        if (before as u64).saturating_add(declared) > max as u64 {
            let why = if before > 0 {
                format!("a fragment declaring {declared} bytes after {before}, over {max}")
            } else {
                format!("a frame declaring {declared} bytes, over {max}")
            };
            return Err(ReadError::refused(Close::TOO_BIG, why));
        }
        Ok(())
    }

    /// How many bytes the next read may take. A frame larger than a read is read up to
    /// its end and no further (its room reserved once, exactly), so the buffer holds at
    /// most one frame of the largest size allowed.
    fn room(&mut self) -> usize {
        let Some(header) = Header::peek(&self.buf) else {
            return READ_CHUNK;
        };
        let frame_len = header.frame_len();
        debug_assert!(frame_len <= self.max_message.max(125) + MAX_HEADER);
        if frame_len <= READ_CHUNK {
            return READ_CHUNK;
        }
        if self.buf.capacity() < frame_len {
            self.buf.reserve(frame_len - self.buf.len());
        }
        (frame_len - self.buf.len()).min(READ_CHUNK)
    }

    /// What one decoded frame gives: a message, or nothing yet (a fragment).
    fn frame(&mut self, frame: Frame) -> Result<Option<Incoming>, ReadError> {
        match frame {
            Frame::Text(data) => text(data).map(Some),
            Frame::Binary(data) => Ok(Some(Incoming::Binary(data))),
            Frame::Continuation(item) => self.continuation(item),
            Frame::Ping(payload) => Ok(Some(Incoming::Ping(payload))),
            Frame::Pong(_) => Ok(Some(Incoming::Pong)),
            Frame::Close(reason) => Ok(Some(Incoming::Close(reason))),
        }
    }

    fn continuation(&mut self, item: Item) -> Result<Option<Incoming>, ReadError> {
        let (chunk, last) = match item {
            Item::FirstText(_) | Item::FirstBinary(_) if self.fragments.is_some() => {
                let close = Close::INTERLEAVED_FRAGMENT;
                return Err(ReadError::refused(close, close.reason));
            }
            Item::FirstText(chunk) => (self.start_fragments(true, chunk), false),
            Item::FirstBinary(chunk) => (self.start_fragments(false, chunk), false),
            Item::Continue(chunk) => (chunk, false),
            Item::Last(chunk) => (chunk, true),
        };
        let max = self.max_message;
        let Some(fragments) = self.fragments.as_mut() else {
            let close = Close::STRAY_CONTINUATION;
            return Err(ReadError::refused(close, close.reason));
        };
        let size = fragments.data.len() + chunk.len();
        if size > max {
            let why = format_args!("{size} bytes so far, over {max}");
            return Err(ReadError::refused(Close::TOO_BIG, why));
        }
        let capacity = fragments.data.capacity();
        if capacity < size {
            // Room doubles (up to the limit) when the budget allows, so that many small
            // fragments are not copied over and over; the last one takes what it needs.
            let doubled = capacity.saturating_mul(2).clamp(size, max);
            let wanted = if last { size } else { doubled };
            let room = if self.claim.hold(wanted) {
                wanted
            } else {
                self.hold(size)?;
                size
            };
            let data = &mut self.fragments.as_mut().expect("checked above").data;
            data.reserve_exact(room - data.len());
        }
        let fragments = self.fragments.as_mut().expect("checked above");
        fragments.data.extend_from_slice(&chunk);
        if fragments.text && !fragments.extend_valid_utf8(last) {
            let close = Close::INVALID_UTF8;
            return Err(ReadError::refused(close, close.reason));
        }
        if !last {
            return Ok(None);
        }
        let Fragments {
            text: is_text,
            data,
            ..
        } = self.fragments.take().expect("checked above");
        // The message is whole: what it held of the budget is free again. The buffer
        // holds at most a read of what follows, claimed before anything more is read.
        self.claim.hold(0);
        let data = Bytes::from(data);
        if is_text {
            text(data).map(Some)
        } else {
            Ok(Some(Incoming::Binary(data)))
        }
    }

    fn start_fragments(&mut self, text: bool, first: Bytes) -> Bytes {
        self.fragments = Some(Fragments {
            text,
            data: Vec::new(),
            valid_up_to: 0,
        });
        first
    }
}

/// Checks the close frame `header` announces, once it is whole in `buf`: a code no
/// endpoint may send (RFC 6455 §7.4; the same codes the codec accepts) is a protocol
/// error, a reason that is not UTF-8 invalid data (§8.1).
fn close_payload(header: Header, buf: &[u8]) -> Result<(), ReadError> {
    let Some(masked) = buf.get(header.len..header.frame_len()) else {
        return Ok(());
    };
    let mask = &buf[header.len - 4..header.len];
    let payload: Vec<u8> = masked
        .iter()
        .zip(mask.iter().cycle())
        .map(|(byte, key)| byte ^ key)
        .collect();
    let [high, low, reason @ ..] = payload.as_slice() else {
        // Empty, or one byte (which the codec refuses).
        return Ok(());
    };
    let code = u16::from_be_bytes([*high, *low]);
    if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
        let why = format_args!("the client's close frame carries code {code}");
        return Err(ReadError::refused(Close::INVALID_CLOSE_CODE, why));
    }
    if let Err(error) = std::str::from_utf8(reason) {
        return Err(ReadError::refused(Close::INVALID_CLOSE_REASON, error));
    }
    Ok(())
}

/// A text message, once its bytes are known to be UTF-8.
fn text(data: Bytes) -> Result<Incoming, ReadError> {
    ByteString::try_from(data)
        .map(Incoming::Text)
        .map_err(|error| ReadError::refused(Close::INVALID_UTF8, error))
}

/// The close that a codec error calls for.
fn codec_error(error: ProtocolError, max_message: usize) -> ReadError {
    match error {
        ProtocolError::Overflow => ReadError::refused(
            Close::TOO_BIG,
            format_args!("a frame over {max_message} bytes"),
        ),
        // The codec reports reserved bits as InvalidData; anything else from the socket
        // means the peer is gone.
        ProtocolError::Io(io) if io.kind() == io::ErrorKind::InvalidData => {
            ReadError::refused(Close::PROTOCOL_ERROR, io)
        }
        ProtocolError::Io(io) => ReadError::Gone(io),
        ProtocolError::ContinuationStarted => {
            let close = Close::INTERLEAVED_FRAGMENT;
            ReadError::refused(close, close.reason)
        }
        ProtocolError::ContinuationNotStarted => {
            let close = Close::STRAY_CONTINUATION;
            ReadError::refused(close, close.reason)
        }
        // The codec's word for a close frame it refuses, which `close_payload` has
        // already checked; kept in case the codec finds more.
        ProtocolError::BadOpCode => {
            ReadError::refused(Close::INVALID_CLOSE_CODE, "the codec refused a close frame")
        }
        other => ReadError::refused(Close::PROTOCOL_ERROR, other),
    }
}

impl<R: AsyncRead + Unpin> futures_core::Stream for Reader<R> {
    type Item = Result<Incoming, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.failed {
                return this.drain(cx);
            }
            if let Some(header) = Header::peek(&this.buf) {
                if let Err(error) = this.check(header) {
                    return this.fail(error);
                }
            }
            if !this.buf.is_empty() {
                match this.codec.decode(&mut this.buf) {
                    Ok(Some(frame)) => match this.frame(frame) {
                        Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                        Ok(None) => continue,
                        Err(error) => return this.fail(error),
                    },
                    Ok(None) => {}
                    Err(error) => {
                        let error = codec_error(error, this.max_message);
                        return this.fail(error);
                    }
                }
            }
            if this.eof {
                return Poll::Ready(None);
            }
            // What the message being read will hold once this frame is in.
            let unfinished = this.unfinished();
            if let Err(error) = this.hold(unfinished) {
                return this.fail(error);
            }
            let room = this.room();
            // Not zeroed: the socket writes what is read.
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut read = ReadBuf::uninit(&mut chunk[..room]);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => this.eof = true,
                Poll::Ready(Ok(())) => {
                    this.buf.extend_from_slice(read.filled());
                    #[cfg(test)]
                    {
                        this.peak = this.peak.max(this.buf.capacity());
                    }
                }
                Poll::Ready(Err(error)) => return this.fail(ReadError::Gone(error)),
                Poll::Pending => {
                    if this.buf.is_empty() {
                        // An idle connection keeps no read buffer.
                        this.buf = BytesMut::new();
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// A fragmented message being reassembled.
struct Fragments {
    text: bool,
    /// A `Vec`, whose room grows only as asked (see [`Reader::continuation`]).
    data: Vec<u8>,
    /// How much of `data` is known to be valid UTF-8 (text only).
    valid_up_to: usize,
}

impl Fragments {
    /// Validates the UTF-8 received so far, failing as soon as a sequence is invalid
    /// (not merely incomplete, unless this is the last fragment).
    fn extend_valid_utf8(&mut self, last: bool) -> bool {
        match std::str::from_utf8(&self.data[self.valid_up_to..]) {
            Ok(_) => {
                self.valid_up_to = self.data.len();
                true
            }
            Err(error) => {
                self.valid_up_to += error.valid_up_to();
                error.error_len().is_none() && !last
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::io::{AsyncWriteExt, DuplexStream};

    use super::*;

    const MASK: [u8; 4] = [1, 2, 3, 4];

    /// A masked client frame whose header declares `declared` bytes, with `payload`.
    fn frame(opcode: u8, fin: bool, declared: u64, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![if fin { 0x80 | opcode } else { opcode }];
        match declared {
            0..=125 => bytes.push(0x80 | declared as u8),
            126..=0xffff => {
                bytes.push(0x80 | 126);
                bytes.extend_from_slice(&(declared as u16).to_be_bytes());
            }
            _ => {
                bytes.push(0x80 | 127);
                bytes.extend_from_slice(&declared.to_be_bytes());
            }
        }
        bytes.extend_from_slice(&MASK);
        bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        bytes
    }

    fn whole(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        frame(opcode, fin, payload.len() as u64, payload)
    }

    /// A reader of messages up to `max` bytes, fed `bytes` by a writer task.
    fn reader(max: usize, bytes: Vec<u8>) -> Reader<DuplexStream> {
        reader_within(UnfinishedBudget::new(usize::MAX), max, bytes)
    }

    /// The same, its unfinished messages counted against `budget`.
    fn reader_within(
        budget: Arc<UnfinishedBudget>,
        max: usize,
        bytes: Vec<u8>,
    ) -> Reader<DuplexStream> {
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        tokio::spawn(async move {
            let _ = client.write_all(&bytes).await;
            // Keeps the stream open: the reader must decide without an end of stream.
            std::future::pending::<()>().await;
        });
        Reader::new(server, BytesMut::new(), max, budget)
    }

    async fn next(reader: &mut Reader<DuplexStream>) -> Result<Incoming, ReadError> {
        let next = poll_fn(|cx| futures_core::Stream::poll_next(Pin::new(&mut *reader), cx));
        tokio::time::timeout(std::time::Duration::from_secs(5), next)
            .await
            .expect("the reader decides within 5 s")
            .expect("the stream goes on")
    }

    fn refused(result: Result<Incoming, ReadError>) -> (Close, String) {
        match result {
            Err(ReadError::Refused { close, why }) => (close, why),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_header_tells_its_length_before_the_frame_arrives() {
        let two_gib = frame(0x2, true, 2 << 30, &[]);
        assert_eq!(
            Header::peek(&two_gib),
            Some(Header {
                opcode: 0x2,
                len: 14,
                payload_len: 2 << 30
            })
        );
        assert_eq!(Header::peek(&two_gib[..9]), None, "length field incomplete");
        let medium = frame(0x1, true, 300, &[]);
        assert_eq!(
            Header::peek(&medium).map(|h| (h.len, h.payload_len)),
            Some((8, 300))
        );
        // Headers the codec refuses by their first bytes are left to it.
        assert_eq!(
            Header::peek(&[0x80 | 0x40 | 0x1, 0x80]),
            None,
            "reserved bit"
        );
        assert_eq!(Header::peek(&[0x81, 0x05]), None, "unmasked");
        assert_eq!(Header::peek(&[0x83, 0x80]), None, "unknown opcode");
    }

    #[tokio::test]
    async fn a_frame_declaring_more_than_the_limit_is_refused_at_its_header() {
        let mut bytes = frame(0x1, true, 2 << 30, &[]);
        bytes.extend_from_slice(&[b'x'; 64]);
        let mut reader = reader(1024, bytes);
        let (close, why) = refused(next(&mut reader).await);
        assert_eq!(close, Close::TOO_BIG);
        assert_eq!(why, "a frame declaring 2147483648 bytes, over 1024");
        assert!(reader.peak <= 2 * READ_CHUNK, "held {} bytes", reader.peak);
    }

    #[tokio::test]
    async fn a_control_frame_over_125_bytes_is_refused_at_its_header() {
        let mut reader = reader(1024, frame(0x9, true, 126, &[]));
        assert_eq!(refused(next(&mut reader).await).0, Close::PROTOCOL_ERROR);
    }

    #[tokio::test]
    async fn the_read_buffer_holds_at_most_one_largest_frame() {
        const MAX: usize = 100 * 1024;
        // Three frames at the limit back to back, then small ones: each big frame is
        // read to its end and no further.
        let big = vec![7u8; MAX];
        let mut bytes = Vec::new();
        for _ in 0..3 {
            bytes.extend(whole(0x2, true, &big));
        }
        for _ in 0..10 {
            bytes.extend(whole(0x1, true, b"small"));
        }
        let mut reader = reader(MAX, bytes);
        for _ in 0..3 {
            match next(&mut reader).await {
                Ok(Incoming::Binary(data)) => assert_eq!(data.len(), MAX),
                other => panic!("expected the big frame, got {other:?}"),
            }
        }
        for _ in 0..10 {
            assert!(matches!(next(&mut reader).await, Ok(Incoming::Text(t)) if t == "small"));
        }
        assert!(
            reader.peak <= MAX + MAX_HEADER,
            "the read buffer held {} bytes",
            reader.peak
        );
    }

    #[tokio::test]
    async fn fragments_are_joined_and_bounded_at_each_header() {
        let mut bytes = whole(0x1, false, b"hel");
        bytes.extend(whole(0x9, true, b"ping"));
        bytes.extend(whole(0x0, true, b"lo"));
        bytes.extend(whole(0x2, false, &[0; 600]));
        bytes.extend(frame(0x0, true, 600, &[]));
        let mut reader = reader(1024, bytes);
        assert!(matches!(next(&mut reader).await, Ok(Incoming::Ping(p)) if p == "ping"));
        assert!(matches!(next(&mut reader).await, Ok(Incoming::Text(t)) if t == "hello"));
        let (close, why) = refused(next(&mut reader).await);
        assert_eq!(close, Close::TOO_BIG);
        assert_eq!(why, "a fragment declaring 600 bytes after 600, over 1024");
    }

    #[tokio::test]
    async fn unfinished_messages_share_one_budget_and_give_it_back() {
        const K: usize = 1024;
        let budget = UnfinishedBudget::new(100 * K);
        // Fragments of 30 KiB: room doubles while the budget allows (30, 60 KiB), then
        // grows only as needed (90, 95 KiB), and the message completes within 100 KiB.
        let mut bytes = whole(0x2, false, &[1; 30 * K]);
        bytes.extend(whole(0x0, false, &[2; 30 * K]));
        bytes.extend(whole(0x0, false, &[3; 30 * K]));
        bytes.extend(whole(0x9, true, b"held"));
        bytes.extend(whole(0x0, true, &[4; 5 * K]));
        let mut a = reader_within(budget.clone(), 1024 * K, bytes);
        assert!(matches!(next(&mut a).await, Ok(Incoming::Ping(_))));
        assert_eq!(budget.held(), 90 * K, "three fragments held");

        // Meanwhile another connection's 20 KiB frame does not fit.
        let mut b = reader_within(budget.clone(), 1024 * K, whole(0x2, true, &[0; 20 * K]));
        let (close, why) = refused(next(&mut b).await);
        assert_eq!(close, Close::SERVER_BUSY);
        assert!(why.contains("(--max-unfinished-bytes)"), "{why}");
        assert_eq!(budget.held(), 90 * K, "the refused one holds nothing");

        match next(&mut a).await {
            Ok(Incoming::Binary(data)) => assert_eq!(data.len(), 95 * K),
            other => panic!("expected the whole message, got {other:?}"),
        }
        assert_eq!(
            budget.held(),
            0,
            "a whole message holds nothing of the budget"
        );

        // Small messages never count, even with no budget at all.
        let none = UnfinishedBudget::new(0);
        let mut bytes = whole(0x1, false, b"[null,");
        bytes.extend(whole(0x0, true, br#""1","phoenix","heartbeat",{}]"#));
        let mut c = reader_within(none, 1024 * K, bytes);
        assert!(matches!(next(&mut c).await, Ok(Incoming::Text(_))));

        // A connection that ends mid-message gives its share back.
        let mut bytes = whole(0x2, false, &[0; 50 * K]);
        bytes.extend(whole(0x9, true, b"held"));
        let mut d = reader_within(budget.clone(), 1024 * K, bytes);
        assert!(matches!(next(&mut d).await, Ok(Incoming::Ping(_))));
        assert_eq!(budget.held(), 50 * K);
        drop(d);
        assert_eq!(budget.held(), 0);
    }
}
