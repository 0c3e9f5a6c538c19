//! The read side of one WebSocket connection: frames in, whole messages out.
//!
//! Owns reading the socket, framing (actix-http's `ws::Codec`) under the size limit,
//! the reassembly of fragmented messages and the UTF-8 validation of text. Yields
//! [`Incoming`] messages, or the [`Close`] a violation calls for; after a violation it
//! reads nothing more. Must not answer anything nor know what a message means: the
//! connection (`websocket.rs`) decides what each message or failure calls for.
//! Between messages it holds no buffer.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
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

/// Reads a connection's messages from `io`.
pub(crate) struct Reader<R> {
    io: R,
    /// Bytes read and not yet decoded; empty between messages.
    buf: BytesMut,
    codec: Codec,
    max_message: usize,
    /// The fragmented message being reassembled, if any.
    fragments: Option<Fragments>,
    eof: bool,
    /// A violation was reported: nothing more is read.
    failed: bool,
}

/// Bytes read from the socket per read call.
const READ_CHUNK: usize = 8 * 1024;

impl<R: AsyncRead + Unpin> Reader<R> {
    /// A reader of messages up to `max_message` bytes; `early` holds bytes already read
    /// past the handshake.
    pub(crate) fn new(io: R, early: BytesMut, max_message: usize) -> Self {
        Reader {
            io,
            buf: early,
            codec: Codec::new().max_size(max_message),
            max_message,
            fragments: None,
            eof: false,
            failed: false,
        }
    }

    /// Reports `error` and stops: what was buffered is let go.
    fn fail(&mut self, error: ReadError) -> Poll<Option<Result<Incoming, ReadError>>> {
        self.failed = true;
        self.buf = BytesMut::new();
        self.fragments = None;
        Poll::Ready(Some(Err(error)))
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
        let data = data.freeze();
        if is_text {
            text(data).map(Some)
        } else {
            Ok(Some(Incoming::Binary(data)))
        }
    }

    fn start_fragments(&mut self, text: bool, first: Bytes) -> Bytes {
        self.fragments = Some(Fragments {
            text,
            data: BytesMut::new(),
            valid_up_to: 0,
        });
        first
    }
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
        other => ReadError::refused(Close::PROTOCOL_ERROR, other),
    }
}

impl<R: AsyncRead + Unpin> futures_core::Stream for Reader<R> {
    type Item = Result<Incoming, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.failed {
                // The connection is closing; its close frame ends it.
                return Poll::Pending;
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
            // Not zeroed: the socket writes what is read.
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut read = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => this.eof = true,
                Poll::Ready(Ok(())) => this.buf.extend_from_slice(read.filled()),
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
    data: BytesMut,
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
