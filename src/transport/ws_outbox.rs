//! The write side of one WebSocket connection: its outbound queue, the worker's
//! flusher, and the connection's writer.
//!
//! Owns encoding frames, writing them (everything queued between two writes goes out
//! in one write), noticing a client that has stopped reading, and the bound on what is
//! queued for it. Frames are queued from any thread (a broadcast is written into every
//! member's queue by its publisher); a queue that goes from empty to not is handed to
//! its worker's [`Flusher`], one task per worker thread that writes every such queue in
//! turn, so a fan-out costs one wake-up per worker rather than one per connection. A
//! queue is also written at once every [`FLUSH_AT`] bytes or frames, so a reading
//! client's queue stays small whatever the burst; only a socket that refuses bytes lets
//! it grow, and past the bound the connection is closed with 1008. The connection's own
//! writer only waits out a full socket and the close. Must not know what the frames mean.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_codec::Encoder;
use actix_http::ws::{CloseCode, CloseReason, Codec, Message};
use bytes::{Buf, BytesMut};
use tokio::net::tcp::OwnedWriteHalf;

use super::WsLimits;
use crate::close::Close;
use crate::outlet::{ClientOutlet, Outbox};
use crate::serializer::{Frame, Serializer};

/// Queued bytes or frames past which they are handed to the socket at once.
const FLUSH_AT: usize = 64 * 1024;
const FLUSH_AT_FRAMES: usize = 64;

/// How long a closing connection may take to flush its close frame to a client that is
/// not reading, before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A WebSocket connection's outlet.
pub(crate) type WsOutlet = ClientOutlet<WsOutbox>;

/// Limits of what may wait for a client that is not reading.
#[derive(Clone, Copy, Debug)]
struct Bound {
    frames: usize,
    bytes: usize,
}

/// Frames encoded but not yet taken by the socket.
pub(crate) struct WsOutbox {
    /// `None` once the connection is over.
    io: Option<OwnedWriteHalf>,
    codec: Codec,
    bound: Bound,
    /// Encoded bytes the socket has not taken; starts at or inside a frame.
    pending: BytesMut,
    /// Where each frame in `pending` ends.
    frame_ends: VecDeque<usize>,
    /// The socket refused bytes; the writer waits until it takes more.
    stalled: bool,
    /// A close frame is queued: nothing is queued after it.
    closing: bool,
    /// How and why the connection was cut off at a bound, until reported.
    cut_off: Option<(Close, String)>,
    failed: Option<io::Error>,
    /// Handed to the flusher, which has not written it yet.
    scheduled: bool,
    flusher: Arc<Flusher>,
    outlet: Weak<WsOutlet>,
    writer: Option<Waker>,
}

/// A new connection's outlet over its socket's write half, flushed by this thread's
/// flusher (the caller runs on the connection's worker).
pub(crate) fn outlet(
    io: OwnedWriteHalf,
    limits: &WsLimits,
    serializer: Serializer,
) -> Arc<WsOutlet> {
    let flusher = Flusher::current();
    let bound = Bound {
        frames: limits.max_outbound_frames,
        bytes: limits.max_outbound_bytes,
    };
    Arc::new_cyclic(|outlet| {
        let outbox = WsOutbox {
            io: Some(io),
            codec: Codec::new(),
            bound,
            pending: BytesMut::new(),
            frame_ends: VecDeque::new(),
            stalled: false,
            closing: false,
            cut_off: None,
            failed: None,
            scheduled: false,
            flusher,
            outlet: outlet.clone(),
            writer: None,
        };
        ClientOutlet::new(serializer, outbox, bound.frames)
    })
}

impl Outbox for WsOutbox {
    fn send(&mut self, frame: Frame) {
        let message = match frame {
            Frame::Text(text) => Message::Text(text),
            Frame::Binary(bytes) => Message::Binary(bytes),
        };
        self.push(message);
    }

    fn close(&mut self, close: Close) {
        self.close_with(Some(close_reason(close)));
    }

    /// A client that is not reading gets its close frame right after the frame it is in
    /// the middle of (what it has not started is dropped); a reading one after its queue.
    fn cut_off(&mut self, close: Close, why: String) {
        if self.closing {
            return;
        }
        let reason = Some(close_reason(close));
        if self.stalled {
            self.close_now(reason);
        } else {
            self.close_with(reason);
        }
        self.cut_off = Some((close, why));
    }
}

impl WsOutbox {
    /// Queues a data or control frame; dropped once the connection is closing.
    pub(crate) fn push(&mut self, message: Message) {
        if self.closing {
            return;
        }
        self.encode(message);
        if self.stalled {
            let (frames, bytes) = (self.frame_ends.len(), self.pending.len());
            if frames > self.bound.frames || bytes > self.bound.bytes {
                let why =
                    format!("the client is not reading ({frames} frames, {bytes} bytes waiting)");
                self.cut_off(Close::OUTBOUND_FULL, why);
            }
            return;
        }
        if self.pending.len() >= FLUSH_AT || self.frame_ends.len() >= FLUSH_AT_FRAMES {
            self.flush();
        }
        self.schedule();
    }

    /// Whether a close frame is queued (or the connection is over).
    pub(crate) fn is_closing(&self) -> bool {
        self.closing
    }

    /// How and why the connection was cut off at a bound, once.
    pub(crate) fn take_cut_off(&mut self) -> Option<(Close, String)> {
        self.cut_off.take()
    }

    /// Queues a close frame after what is queued; nothing is queued after it.
    pub(crate) fn close_with(&mut self, reason: Option<CloseReason>) {
        if self.closing {
            return;
        }
        self.encode(Message::Close(reason));
        self.closing = true;
        // A writer waiting out a full socket now has a deadline to keep.
        self.wake_writer();
        self.schedule();
    }

    /// The connection is over: the socket is let go and nothing more is queued.
    pub(crate) fn detach(&mut self) {
        self.io = None;
        self.closing = true;
        self.pending = BytesMut::new();
        self.frame_ends = VecDeque::new();
    }

    /// Drops what the client has not started to receive and queues a close frame right
    /// after the frame it is in the middle of.
    fn close_now(&mut self, reason: Option<CloseReason>) {
        let keep = self.frame_ends.front().copied().unwrap_or(0);
        self.pending.truncate(keep);
        self.frame_ends.truncate(1);
        self.close_with(reason);
    }

    fn encode(&mut self, message: Message) {
        self.codec
            .encode(message, &mut self.pending)
            .expect("encoding a server frame cannot fail");
        self.frame_ends.push_back(self.pending.len());
    }

    /// Hands the pending bytes to the flusher, unless it has them already or the
    /// writer waits for the socket.
    fn schedule(&mut self) {
        if !self.scheduled && !self.stalled && !self.pending.is_empty() {
            self.scheduled = true;
            self.flusher.schedule(self.outlet.clone());
        }
    }

    /// Hands the socket what it takes now.
    fn flush(&mut self) {
        while !self.pending.is_empty() {
            let Some(io) = &self.io else {
                return;
            };
            match io.try_write(&self.pending) {
                Ok(0) => return self.fail(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.written(written),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.stalled = true;
                    return self.wake_writer();
                }
                Err(error) => return self.fail(error),
            }
        }
        // Nothing is kept between bursts: an idle connection holds no buffer.
        self.pending = BytesMut::new();
        if self.closing {
            self.wake_writer();
        }
    }

    fn fail(&mut self, error: io::Error) {
        self.failed = Some(error);
        self.detach();
        self.wake_writer();
    }

    fn written(&mut self, n: usize) {
        self.pending.advance(n);
        for end in self.frame_ends.iter_mut() {
            *end -= n.min(*end);
        }
        while self.frame_ends.front() == Some(&0) {
            self.frame_ends.pop_front();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(writer) = self.writer.take() {
            writer.wake();
        }
    }

    /// What the writer must do now: `Ready(Ok(true))` wait for the socket,
    /// `Ready(Ok(false))` stop (the close frame is out, or the connection was let go),
    /// `Pending` nothing yet.
    fn writer_turn(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if let Some(error) = self.failed.take() {
            return Poll::Ready(Err(error));
        }
        if self.io.is_none() || (self.closing && self.pending.is_empty()) {
            return Poll::Ready(Ok(false));
        }
        if self.stalled {
            return Poll::Ready(Ok(true));
        }
        self.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Whether the socket takes bytes again; the writer is also woken when a close
    /// starts meanwhile (`closing` says whether one has).
    fn poll_writable(&mut self, cx: &mut Context<'_>, closing: &mut bool) -> Poll<io::Result<()>> {
        if !self.closing {
            self.writer = Some(cx.waker().clone());
        }
        *closing = self.closing;
        match &self.io {
            Some(io) => io.as_ref().poll_write_ready(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// Writes every queue handed to it, on its worker thread; one per worker.
pub(crate) struct Flusher {
    queue: Mutex<FlushQueue>,
}

#[derive(Default)]
struct FlushQueue {
    outlets: Vec<Weak<WsOutlet>>,
    task: Option<Waker>,
    /// The task has ended with its runtime: a new one is needed.
    gone: bool,
}

impl Flusher {
    /// This thread's flusher, started on first use.
    fn current() -> Arc<Flusher> {
        thread_local! {
            static CURRENT: RefCell<Option<Arc<Flusher>>> = const { RefCell::new(None) };
        }
        CURRENT.with(|current| {
            let mut current = current.borrow_mut();
            match &*current {
                Some(flusher) if !flusher.lock().gone => flusher.clone(),
                _ => {
                    let flusher = Arc::new(Flusher {
                        queue: Mutex::default(),
                    });
                    actix::spawn(run_flusher(flusher.clone()));
                    *current = Some(flusher.clone());
                    flusher
                }
            }
        })
    }

    fn lock(&self) -> MutexGuard<'_, FlushQueue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn schedule(&self, outlet: Weak<WsOutlet>) {
        let task = {
            let mut queue = self.lock();
            queue.outlets.push(outlet);
            queue.task.take()
        };
        if let Some(task) = task {
            task.wake();
        }
    }
}

async fn run_flusher(flusher: Arc<Flusher>) {
    /// Marks the flusher gone when its task is dropped with the runtime.
    struct Gone(Arc<Flusher>);
    impl Drop for Gone {
        fn drop(&mut self) {
            self.0.lock().gone = true;
        }
    }
    let flusher = Gone(flusher);
    let mut batch = Vec::new();
    loop {
        poll_fn(|cx| {
            let mut queue = flusher.0.lock();
            if queue.outlets.is_empty() {
                queue.task = Some(cx.waker().clone());
                Poll::Pending
            } else {
                std::mem::swap(&mut batch, &mut queue.outlets);
                Poll::Ready(())
            }
        })
        .await;
        for outlet in batch.drain(..) {
            if let Some(outlet) = outlet.upgrade() {
                outlet.with_outbox(|out| {
                    out.scheduled = false;
                    if !out.stalled {
                        out.flush();
                    }
                });
            }
        }
    }
}

/// Waits out a full socket and the close: returns `Ok` once the close frame is out (or
/// the connection was let go), `Err` when the peer is gone or a closing connection's
/// client has not taken its close frame within [`CLOSE_GRACE`].
pub(crate) async fn write(outlet: Arc<WsOutlet>) -> io::Result<()> {
    let mut grace = None;
    while poll_fn(|cx| outlet.with_outbox(|out| out.writer_turn(cx))).await? {
        poll_fn(|cx| {
            let mut closing = false;
            let writable = outlet.with_outbox(|out| out.poll_writable(cx, &mut closing));
            if closing {
                let deadline =
                    grace.get_or_insert_with(|| Box::pin(tokio::time::sleep(CLOSE_GRACE)));
                if deadline.as_mut().poll(cx).is_ready() {
                    let error = io::Error::new(io::ErrorKind::TimedOut, "close frame not taken");
                    return Poll::Ready(Err(error));
                }
            }
            writable
        })
        .await?;
        outlet.with_outbox(|out| {
            out.stalled = false;
            out.flush();
        });
    }
    Ok(())
}

/// The close frame's reason for `close` (every [`Close`] reason fits a control frame).
fn close_reason(close: Close) -> CloseReason {
    CloseReason {
        code: CloseCode::from(close.code),
        description: Some(close.reason.to_owned()),
    }
}
