//! File content sent with sendfile(2) instead of copied into the socket, on plain TCP
//! HTTP/1 connections, as nginx sends files.
//!
//! hyper writes a response body from memory: a cached 64 KiB file cost a 64 KiB copy into
//! fresh socket buffers per GET (the reader then copies it out of them), and a large file
//! cost a read into memory and that copy, per chunk. With sendfile the socket refers to the
//! file's page-cache pages instead, so the only copy is the reader's.
//!
//! How, without hyper knowing: each such connection runs in a [`scope`] (a task-local
//! `Offers`), its socket wrapped in [`Stream`]. Two ways in:
//!
//! - *offered memory*: the file store keeps an open handle next to each cached content of
//!   [`MIN`] bytes or more ([`Kept`]), and [`offer`]s the pair when it hands the content to a
//!   response. Any slice hyper writes from that memory goes out from the file instead. Exact
//!   because the memory holds the file's bytes at the same offset (read from that open
//!   file; larder never writes a version in place, every write is a new file renamed over
//!   the old one) and the offer keeps the memory alive, so no other data can come to live at
//!   its addresses. If the file cannot be sent (cut short behind larder's back) the memory
//!   is written instead.
//! - *stand-ins*: for a large file's answer body the store asks for [`stand_in`]s instead of
//!   reading: slices of one region, handed to hyper, that the connection knows, in order,
//!   as file bytes at an offset. [`Stream`] sends each from the file; a stand-in met out of
//!   turn (or one the file no longer has the bytes for) ends the connection, and so does a
//!   copy of one (the region holds a random canary, looked for in all else written), so
//!   none is ever sent in place of the file's bytes. Only answers ask for them
//!   (`Store::read_to_send`), and only in a scope.

use std::cell::RefCell;
use std::collections::VecDeque;
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

/// The largest stand-in.
pub const STAND_IN_MAX: usize = 512 * 1024;
/// Stand-ins handed out and not yet sent, at most, per connection.
const QUEUED_MAX: usize = 4;
/// Slots of the stand-in region, taken in turn: more than [`QUEUED_MAX`], so the stand-ins
/// queued on a connection never share an address.
const SLOTS: usize = 2 * QUEUED_MAX;

/// This process's canary: eight random bytes, never sent, that fill [`STAND_INS`].
static CANARY: LazyLock<[u8; 8]> = LazyLock::new(rand::random);

/// Finds the canary in bytes about to be written.
static CANARY_FINDER: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(&CANARY[..]));

/// What stand-ins are cut from: the canary over and over (4 MiB). Never sent: a write that
/// meets a stand-in where it was handed out sends from the file or fails; and should
/// anything copy one (a write strategy that flattens the body into its own buffer, a layer
/// that re-chunks it), the copy carries the canary (any 15 bytes of it hold a whole one),
/// which a connection that handed out stand-ins looks for in all it writes, and refuses to
/// send: the answer is cut off, never filled with what stands in for the file.
static STAND_INS: LazyLock<Box<[u8]>> = LazyLock::new(|| {
    let canary = *CANARY;
    canary.iter().copied().cycle().take(SLOTS * STAND_IN_MAX).collect()
});

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

/// `len` bytes of `file` from `offset` on, handed to hyper as the zeros at `at` in
/// [`STAND_INS`]; `sent` of them have gone out.
struct StandIn {
    at: usize,
    len: usize,
    sent: usize,
    offset: u64,
    file: Source,
}

/// What a connection's responses offered.
#[derive(Default)]
struct Offers {
    /// Whether a stand-in was ever handed out here: then every write is checked for copies.
    handed_out: bool,
    /// The last memory offered.
    mirror: Option<Mirror>,
    /// The stand-ins handed out, in the order hyper writes them (the order of the body).
    stand_ins: VecDeque<StandIn>,
    /// The slot of the next stand-in.
    next_slot: usize,
}

/// Where a write sends from a file: `bufs[index]` (all of it) is `file`'s bytes at `offset`.
struct Target {
    index: usize,
    offset: u64,
    file: Source,
    stand_in: bool,
}

impl Offers {
    /// The first of `bufs` to send from a file; an error if one is a stand-in out of turn,
    /// or if what would be written as it is carries a copy of one.
    fn target(&self, bufs: &[IoSlice<'_>]) -> io::Result<Option<Target>> {
        let target = self.find(bufs)?;
        if self.handed_out {
            let written = &bufs[..target.as_ref().map_or(bufs.len(), |t| t.index)];
            if written.iter().any(|slice| CANARY_FINDER.find(slice).is_some()) {
                return Err(io::Error::other("a copy of a stand-in was about to be sent"));
            }
        }
        Ok(target)
    }

    fn find(&self, bufs: &[IoSlice<'_>]) -> io::Result<Option<Target>> {
        let region = STAND_INS.as_ptr() as usize..STAND_INS.as_ptr() as usize + STAND_INS.len();
        for (index, slice) in bufs.iter().enumerate() {
            let address = slice.as_ptr() as usize;
            if region.contains(&address) {
                let at = address - region.start;
                let next = self.stand_ins.front().filter(|next| {
                    at == next.at + next.sent && slice.len() <= next.len - next.sent
                });
                let Some(next) = next else {
                    return Err(io::Error::other("a stand-in written out of turn"));
                };
                let offset = next.offset + next.sent as u64;
                return Ok(Some(Target { index, offset, file: next.file.clone(), stand_in: true }));
            }
            if let Some(mirror) = &self.mirror
                && let Some(offset) = mirror.find(slice)
            {
                return Ok(Some(Target {
                    index,
                    offset,
                    file: mirror.file.clone(),
                    stand_in: false,
                }));
            }
        }
        Ok(None)
    }

    /// `n` bytes of the next stand-in went out.
    fn sent(&mut self, n: usize) {
        if let Some(next) = self.stand_ins.front_mut() {
            next.sent += n;
            if next.sent == next.len {
                self.stand_ins.pop_front();
            }
        }
    }
}

tokio::task_local! {
    static OFFERED: RefCell<Offers>;
}

/// Runs `connection` (a plain TCP HTTP/1 connection's future, over [`Stream`]) so that the
/// responses it serves can [`offer`] their content and ask for [`stand_in`]s.
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

/// Bytes that stand in for `len` bytes of `file` from `offset` on, which the connection
/// being served sends from the file without their being read; `None` where it cannot (not
/// a plain HTTP/1 connection, too small to be worth it, too many queued, not in the page
/// cache). Only for a response body, handed to hyper in order: nothing may look into them.
pub fn stand_in(file: &Source, offset: u64, len: usize) -> Option<Bytes> {
    if !(MIN..=STAND_IN_MAX).contains(&len) {
        return None;
    }
    OFFERED
        .try_with(|offers| {
            let mut offers = offers.borrow_mut();
            if offers.stand_ins.len() >= QUEUED_MAX || !in_page_cache(file, offset) {
                return None;
            }
            let at = offers.next_slot * STAND_IN_MAX;
            offers.next_slot = (offers.next_slot + 1) % SLOTS;
            offers.handed_out = true;
            offers.stand_ins.push_back(StandIn { at, len, sent: 0, offset, file: file.clone() });
            Some(Bytes::from_static(&STAND_INS[at..at + len]))
        })
        .ok()
        .flatten()
}

/// Whether the page cache holds `file`'s byte at `offset`. sendfile runs on the loop and
/// would wait there for the disk: a stand-in is handed out only where the chunk's start is
/// cached (the kernel's readahead keeps the rest of a sequential read ahead); a cold chunk is
/// read by the store on a blocking thread.
fn in_page_cache(file: &Source, offset: u64) -> bool {
    let mut probe = [0u8; 1];
    let slices = &mut [io::IoSliceMut::new(&mut probe)];
    matches!(rustix::io::preadv2(file, slices, offset, rustix::io::ReadWriteFlags::NOWAIT), Ok(1))
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
        let target = match OFFERED.try_with(|offers| offers.borrow().target(bufs)) {
            Ok(Ok(Some(target))) => target,
            Ok(Err(e)) => return Poll::Ready(Err(e)),
            Ok(Ok(None)) | Err(_) => return Pin::new(&mut this.0).poll_write_vectored(cx, bufs),
        };
        let head = &bufs[..target.index];
        let head_len: usize = head.iter().map(|slice| slice.len()).sum();
        let socket = &this.0;
        loop {
            ready!(socket.poll_write_ready(cx))?;
            let attempt = || send(socket, head, head_len, &target, &bufs[target.index]);
            match socket.try_io(Interest::WRITABLE, attempt) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Ok(n) => {
                    if target.stand_in && n > head_len {
                        let _ = OFFERED.try_with(|offers| offers.borrow_mut().sent(n - head_len));
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) => return Poll::Ready(Err(e)),
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
        // The file is shorter than when its answer began, or cannot be read: a stand-in has
        // nothing else to send (the answer is cut short, as nginx cuts it), offered memory
        // has the bytes.
        Ok(_) | Err(_) if target.stand_in => {
            Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file is shorter than its answer"))
        }
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

    fn stand_in_at(slot: usize, from: usize, len: usize) -> IoSlice<'static> {
        let at = slot * STAND_IN_MAX + from;
        IoSlice::new(&STAND_INS[at..at + len])
    }

    #[test]
    fn stand_ins_are_sent_in_turn_or_not_at_all() {
        let mut offers = Offers::default();
        let none = offers.target(&[stand_in_at(0, 0, 10)]);
        assert!(none.is_err(), "a stand-in nobody handed out");
        for (offset, len) in [(1000, 100_000), (500_000, 20_000)] {
            let at = offers.next_slot * STAND_IN_MAX;
            offers.next_slot += 1;
            offers.stand_ins.push_back(StandIn { at, len, sent: 0, offset, file: source() });
        }
        let head = IoSlice::new(b"HTTP/1.1 200 OK\r\n\r\n");
        let target = offers.target(&[head, stand_in_at(0, 0, 100_000)]).unwrap().unwrap();
        assert_eq!((target.index, target.offset, target.stand_in), (1, 1000, true));
        assert!(
            offers.target(&[stand_in_at(1, 0, 20_000)]).is_err(),
            "the second before the first"
        );
        offers.sent(60_000);
        assert!(offers.target(&[stand_in_at(0, 0, 40_000)]).is_err(), "sent bytes again");
        assert!(offers.target(&[stand_in_at(0, 60_000, 40_001)]).is_err(), "past its end");
        let rest = offers.target(&[stand_in_at(0, 60_000, 40_000)]).unwrap().unwrap();
        assert_eq!(rest.offset, 61_000);
        offers.sent(40_000);
        let second = offers.target(&[stand_in_at(1, 0, 20_000)]).unwrap().unwrap();
        assert_eq!(second.offset, 500_000);
    }

    #[test]
    fn a_copy_of_a_stand_in_is_never_written() {
        let mut offers = Offers::default();
        let copy = STAND_INS[3..3 + 15].to_vec();
        let mut text = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        text.extend_from_slice(&copy);
        let plain = IoSlice::new(b"HTTP/1.1 200 OK\r\n\r\nplain bytes");
        // Nothing looked for where no stand-in was handed out.
        assert!(offers.target(&[IoSlice::new(&text)]).unwrap().is_none());
        offers.handed_out = true;
        assert!(offers.target(&[plain]).unwrap().is_none());
        assert!(offers.target(&[plain, IoSlice::new(&text)]).is_err(), "15 bytes of one");
        // Behind the stand-in to send, a copy is looked for in the next write.
        offers.stand_ins.push_back(StandIn { at: 0, len: 100, sent: 0, offset: 0, file: source() });
        let found = offers.target(&[plain, stand_in_at(0, 0, 100), IoSlice::new(&text)]);
        assert_eq!(found.unwrap().map(|t| t.index), Some(1));
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
        let offers = Offers { mirror: Some(mirror), ..Offers::default() };
        let target =
            offers.target(&[IoSlice::new(&other), IoSlice::new(&bytes[50..])]).unwrap().unwrap();
        assert_eq!((target.index, target.offset, target.stand_in), (1, 4146, false));
    }
}
