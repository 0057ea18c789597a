//! File content sent with sendfile(2) instead of copied into the socket, on plain TCP
//! HTTP/1 connections, as nginx sends files.
//!
//! hyper writes a response body from memory: a cached 64 KiB file cost a 64 KiB copy into
//! fresh socket buffers per GET (the reader then copies it out of them), and a large file
//! cost a read into memory and that copy, per chunk. With sendfile the socket refers to the
//! file's page-cache pages instead, so the only copy is the reader's.
//!
//! How, without hyper knowing: each such connection runs in a [`scope`] (a task-local
//! `Offers`, in `store/offer.rs`), its socket wrapped in [`Stream`]. The file store keeps an
//! open handle next to each cached content of 16 KiB or more, and offers the pair when it
//! hands the memory to a response. Any slice hyper writes from that memory goes out from the file instead. Exact
//! because the memory holds the file's bytes at the same offset (read from that open file;
//! larder never writes a version in place, every write is a new file renamed over the old
//! one) and the offer keeps the memory alive, so no other data can come to live at its
//! addresses. If the file cannot be sent (cut short behind larder's back) the memory is
//! written instead. So whatever hyper does with the memory (copies it into a buffer of its
//! own, for one), the bytes that go out are the file's.
//!
//! Files too large for the cache (over 1 MiB) are read and sent as bytes: sent from the file,
//! as read chunks offered or as placeholders handed to hyper unread (until 2026-12-07; a
//! copy of one would have gone out as it was), they went 23-37% slower on loopback, for
//! less CPU (docs/performance.md).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use rustix::net::SendFlags;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::store::offer::Target;
pub use crate::store::offer::scope;

/// A plain TCP connection that sends offered content and stand-ins from their files.
pub struct Stream(pub TcpStream);

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(target) = crate::store::offer::target(bufs) else {
            return Pin::new(&mut this.0).poll_write_vectored(cx, bufs);
        };
        let head = &bufs[..target.index];
        let head_len: usize = head.iter().map(|slice| slice.len()).sum();
        let socket = &this.0;
        loop {
            ready!(socket.poll_write_ready(cx))?;
            let attempt = || send(socket, head, head_len, &target, &bufs[target.index]);
            match socket.try_io(Interest::WRITABLE, attempt) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                done => return Poll::Ready(done),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Sends `head` (`head_len` bytes, held back with MSG_MORE so they leave in the same packet
/// as what follows), then `body` from the target's file. Returns how many bytes went out;
/// WouldBlock only if none did.
fn send(
    socket: &TcpStream,
    head: &[IoSlice<'_>],
    head_len: usize,
    target: &Target,
    body: &[u8],
) -> io::Result<usize> {
    let mut sent = 0;
    if head_len > 0 {
        let more = SendFlags::MORE | SendFlags::NOSIGNAL;
        sent = rustix::net::sendmsg(socket, head, &mut Default::default(), more)?;
        if sent < head_len {
            return Ok(sent);
        }
    }
    let mut at = target.offset;
    let result = match rustix::fs::sendfile(socket, &target.file, Some(&mut at), body.len()) {
        Ok(n) if n > 0 => Ok(n),
        Err(e) if e == rustix::io::Errno::AGAIN => Err(io::Error::from(e)),
        // The file is shorter than when its memory was read, or cannot be read: the memory
        // has the bytes.
        _ => rustix::net::send(socket, body, SendFlags::NOSIGNAL).map_err(io::Error::from),
    };
    match result {
        Ok(n) => Ok(sent + n),
        Err(_) if sent > 0 => Ok(sent),
        Err(e) => Err(e),
    }
}
