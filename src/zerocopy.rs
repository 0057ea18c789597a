//! Cached file content sent with sendfile(2) instead of copied into the socket, on plain TCP
//! connections, as nginx sends files.
//!
//! hyper writes a response body from memory: a cached 64 KiB file costs a 64 KiB copy into
//! fresh socket buffers per GET, and the reader then copies it out of them. With sendfile the
//! socket refers to the file's page-cache pages instead, so the only copy is the reader's,
//! from pages that stay hot.
//!
//! How, without hyper knowing: the file store keeps an open handle next to each cached
//! content of [`MIN`] bytes or more ([`Kept`]). When it hands such content to a response it
//! [`offer`]s the pair to the connection being served (a task-local value, set by [`scope`]
//! around each plain TCP connection). When hyper then writes, [`Stream`] looks for slices
//! that lie in the offered memory and sends those from the file instead.
//!
//! Why that is exact: an offered slice's memory holds the file's bytes at the same offset (it
//! was read from that open file, and larder never writes a version in place: every write is
//! a new file renamed over the old one, so an open handle's bytes do not change). The offer
//! keeps the memory alive, so no other data can come to live at those addresses. A slice
//! found nowhere in the offer is written as usual, and if the file cannot be sent (it was
//! cut short behind larder's back) the memory is written instead.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use rustix::net::SendFlags;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Content smaller than this is copied: the system call sendfile adds costs more than the
/// copy it saves.
pub const MIN: usize = 16 * 1024;
/// At most this many files are kept open next to cached content (file descriptors are the
/// connections' too).
const MAX_KEPT: usize = 1024;

static KEPT: AtomicUsize = AtomicUsize::new(0);

/// An open file kept next to its cached content; at most [`MAX_KEPT`] at a time.
#[derive(Debug)]
pub struct Kept(File);

impl Kept {
    /// Keeps `file`, unless [`MAX_KEPT`] are kept already.
    pub fn keep(file: File) -> Option<Arc<Kept>> {
        if KEPT.fetch_add(1, Ordering::Relaxed) >= MAX_KEPT {
            KEPT.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Arc::new(Kept(file)))
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        KEPT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Memory that holds `file`'s bytes from `offset` on.
struct Mirror {
    start: usize,
    len: usize,
    offset: u64,
    file: Arc<Kept>,
    /// Keeps the memory alive (and so its addresses taken) while it is offered.
    _bytes: Bytes,
}

impl Mirror {
    /// Where in the file `slice` lies, if it lies wholly in this memory.
    fn find(&self, slice: &[u8]) -> Option<u64> {
        let at = (slice.as_ptr() as usize).checked_sub(self.start)?;
        (!slice.is_empty() && at + slice.len() <= self.len).then_some(self.offset + at as u64)
    }
}

tokio::task_local! {
    /// The last offer made while serving this connection.
    static OFFERED: RefCell<Option<Mirror>>;
}

/// Runs `connection` (a plain TCP connection's future) so that the responses it serves can
/// [`offer`] their content.
pub async fn scope<F: Future>(connection: F) -> F::Output {
    OFFERED.scope(RefCell::new(None), connection).await
}

/// Tells the connection being served, if it can use it, that `bytes` are `file`'s bytes from
/// `offset` on.
pub fn offer(bytes: &Bytes, file: &Arc<Kept>, offset: u64) {
    if bytes.len() < MIN {
        return;
    }
    let _ = OFFERED.try_with(|offered| {
        *offered.borrow_mut() = Some(Mirror {
            start: bytes.as_ptr() as usize,
            len: bytes.len(),
            offset,
            file: file.clone(),
            _bytes: bytes.clone(),
        });
    });
}

/// A plain TCP connection that sends offered content from its file.
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
        let found = OFFERED
            .try_with(|offered| {
                let offered = offered.borrow();
                let mirror = offered.as_ref()?;
                bufs.iter().enumerate().find_map(|(i, slice)| {
                    mirror.find(slice).map(|offset| (i, offset, mirror.file.clone()))
                })
            })
            .ok()
            .flatten();
        let Some((i, offset, file)) = found else {
            return Pin::new(&mut this.0).poll_write_vectored(cx, bufs);
        };
        let socket = &this.0;
        loop {
            ready!(socket.poll_write_ready(cx))?;
            match socket
                .try_io(Interest::WRITABLE, || send(socket, &bufs[..i], &file, offset, &bufs[i]))
            {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                sent => return Poll::Ready(sent),
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

/// Sends `head` (held back with MSG_MORE, so it leaves in the same packet as what follows),
/// then `body` from `file` at `offset`. Returns how many bytes went out; WouldBlock only if
/// none did.
fn send(
    socket: &TcpStream,
    head: &[IoSlice<'_>],
    file: &Kept,
    offset: u64,
    body: &[u8],
) -> io::Result<usize> {
    let head_len: usize = head.iter().map(|slice| slice.len()).sum();
    let mut sent = 0;
    if head_len > 0 {
        let more = SendFlags::MORE | SendFlags::NOSIGNAL;
        sent = rustix::net::sendmsg(socket, head, &mut Default::default(), more)?;
        if sent < head_len {
            return Ok(sent);
        }
    }
    let mut at = offset;
    let result = match rustix::fs::sendfile(socket, &file.0, Some(&mut at), body.len()) {
        Ok(n) if n > 0 => Ok(n),
        Err(e) if e == rustix::io::Errno::AGAIN => Err(io::Error::from(e)),
        // The file is shorter than when it was read, or cannot be read: the memory has the
        // bytes.
        _ => rustix::net::send(socket, body, SendFlags::NOSIGNAL).map_err(io::Error::from),
    };
    match result {
        Ok(n) => Ok(sent + n),
        Err(_) if sent > 0 => Ok(sent),
        Err(e) => Err(e),
    }
}
