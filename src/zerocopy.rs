//! File content sent with sendfile(2) instead of copied into the socket, on plain TCP
//! HTTP/1 connections, as nginx sends files.
//!
//! hyper writes a response body from memory: a cached 64 KiB file cost a 64 KiB copy into
//! fresh socket buffers per GET (the reader then copies it out of them), and a large file
//! cost a read into memory and that copy, per chunk. With sendfile the socket refers to the
//! file's page-cache pages instead, so the only copy is the reader's.
//!
//! How, without hyper knowing: each such connection runs in a [`scope`] (a task-local
//! `Offers`), its socket wrapped in [`Stream`]. The file store keeps an open handle next to
//! each cached content of [`MIN`] bytes or more ([`Kept`]), and [`offer`]s the pair when it
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

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use rustix::net::SendFlags;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Content smaller than this is copied: the system call sendfile adds costs more than the
/// copy it saves.
pub const MIN: usize = 16 * 1024;
/// At most this many files are kept open next to cached content: 1,024, or an eighth of the
/// open-file limit if that is less (file descriptors are the connections' too).
static MAX_KEPT: LazyLock<usize> = LazyLock::new(|| {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    limit.map_or(1024, |files| (files / 8).min(1024) as usize)
});

static KEPT: AtomicUsize = AtomicUsize::new(0);

/// An open file kept next to its cached content; at most [`MAX_KEPT`] at a time.
#[derive(Debug)]
pub struct Kept(File);

impl Kept {
    /// Keeps `file`, unless [`MAX_KEPT`] are kept already.
    pub fn keep(file: File) -> Option<Source> {
        if KEPT.fetch_add(1, Ordering::Relaxed) >= *MAX_KEPT {
            KEPT.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Arc::new(Kept(file)))
    }
}

impl AsFd for Kept {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        KEPT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An open file to send from.
pub type Source = Arc<dyn AsFd + Send + Sync>;

/// Memory that holds `file`'s bytes from `offset` on.
struct Mirror {
    start: usize,
    len: usize,
    offset: u64,
    file: Source,
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

/// What a connection's responses offered.
#[derive(Default)]
struct Offers {
    /// The last memory offered.
    mirror: Option<Mirror>,
}

/// Where a write sends from a file: `bufs[index]` (all of it) is `file`'s bytes at `offset`.
struct Target {
    index: usize,
    offset: u64,
    file: Source,
}

impl Offers {
    /// The first of `bufs` to send from a file.
    fn target(&self, bufs: &[IoSlice<'_>]) -> Option<Target> {
        let mirror = self.mirror.as_ref()?;
        bufs.iter().enumerate().find_map(|(index, slice)| {
            let offset = mirror.find(slice)?;
            Some(Target { index, offset, file: mirror.file.clone() })
        })
    }
}

tokio::task_local! {
    static OFFERED: RefCell<Offers>;
}

/// Runs `connection` (a plain TCP HTTP/1 connection's future, over [`Stream`]) so that the
/// responses it serves can [`offer`] their content.
pub async fn scope<F: Future>(connection: F) -> F::Output {
    OFFERED.scope(RefCell::new(Offers::default()), connection).await
}

/// Tells the connection being served, if it can use it, that `bytes` are `file`'s bytes from
/// `offset` on.
pub fn offer(bytes: &Bytes, file: &Source, offset: u64) {
    if bytes.len() < MIN {
        return;
    }
    let _ = OFFERED.try_with(|offers| {
        offers.borrow_mut().mirror = Some(Mirror {
            start: bytes.as_ptr() as usize,
            len: bytes.len(),
            offset,
            file: file.clone(),
            _bytes: bytes.clone(),
        });
    });
}

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
        let Ok(Some(target)) = OFFERED.try_with(|offers| offers.borrow().target(bufs)) else {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        Arc::new(File::open("/dev/null").unwrap())
    }

    #[test]
    fn offered_memory_is_found_only_whole() {
        let bytes = Bytes::from(vec![7u8; 100]);
        let mirror = Mirror {
            start: bytes.as_ptr() as usize,
            len: 100,
            offset: 4096,
            file: source(),
            _bytes: bytes.clone(),
        };
        assert_eq!(mirror.find(&bytes[10..60]), Some(4106));
        assert_eq!(mirror.find(&bytes[..]), Some(4096));
        let other = vec![7u8; 100];
        assert_eq!(mirror.find(&other), None);
        assert_eq!(mirror.find(&bytes[100..]), None, "empty");
        let offers = Offers { mirror: Some(mirror) };
        let target = offers.target(&[IoSlice::new(&other), IoSlice::new(&bytes[50..])]).unwrap();
        assert_eq!((target.index, target.offset), (1, 4146));
    }
}
