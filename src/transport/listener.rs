//! The listener: where every TCP connection starts.
//!
//! Owns asking the door whether a new connection comes in at all (per source address,
//! and within the descriptor limit; a refusal comes before a byte is read), reading a
//! connection's first request head, and choosing who serves the connection: a
//! WebSocket upgrade on a socket mount goes to the WebSocket transport (our lean I/O);
//! anything else (pages, `/health`, long-poll, bad requests) goes to actix-web, which
//! then owns the connection, the bytes already read replayed to it. Must not answer
//! HTTP itself beyond the WebSocket handshake and the door's refusals.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_service::Service;
use actix_web::rt::net::TcpStream;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::{door, websocket, Shared};

/// Largest request head read before handing the connection to actix-web (which answers
/// 431 for larger ones).
const MAX_HEAD: usize = 16 * 1024;
/// A client must send its request head within this time.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection whose first bytes were already read: they are replayed first.
pub(crate) struct Replayed {
    head: Bytes,
    io: TcpStream,
}

impl AsyncRead for Replayed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.head.is_empty() {
            let n = self.head.len().min(buf.remaining());
            buf.put_slice(&self.head[..n]);
            self.head.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replayed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Serves one accepted connection.
pub(crate) async fn serve<H>(mut io: TcpStream, shared: Arc<Shared>, http: Rc<H>)
where
    H: Service<(Replayed, Option<std::net::SocketAddr>)>,
    H::Error: std::fmt::Debug,
{
    let peer = io.peer_addr().ok();
    let ticket = match shared.door.enter(peer) {
        Ok(ticket) => ticket,
        Err(turned) => return door::turn_away(io, turned),
    };
    let _ = io.set_nodelay(true);
    let mut head = BytesMut::with_capacity(1024);
    let complete = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut io, &mut head)).await;
    if let Ok(Ok(true)) = complete {
        if let Some(upgrade) = websocket::upgrade_request(&head, &shared) {
            return websocket::handshake(upgrade, io, head, peer, shared, ticket).await;
        }
    }
    let replayed = Replayed {
        head: head.freeze(),
        io,
    };
    // Boxed so that this future stays small for the WebSocket connections above.
    if let Err(error) = Box::pin(http.call((replayed, peer))).await {
        log::debug!("http connection ended: {error:?}");
    }
    drop(ticket);
}

/// Reads until the end of the request head; `false` if the connection ended, the head
/// is too large, or it is not HTTP (actix-web will answer those).
async fn read_head(io: &mut TcpStream, head: &mut BytesMut) -> io::Result<bool> {
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(true);
        }
        if head.len() >= MAX_HEAD {
            return Ok(false);
        }
        head.reserve(1024);
        if io.read_buf(head).await? == 0 {
            return Ok(false);
        }
    }
}
