//! Content offered for sendfile: memory that holds a file's bytes, and the file.
//!
//! The file store keeps an open handle next to each cached content of [`MIN`] bytes or more
//! ([`Kept`]), and [`offer`]s the pair when it hands the memory to a response. A plain TCP
//! HTTP/1 connection runs in a [`scope`] (a task-local `Offers`); its socket
//! (`crate::zerocopy::Stream`) asks for the [`target`] of each write, and sends a slice that
//! lies in the offered memory from the file instead (the reasons, and why it is exact:
//! `src/zerocopy.rs`). The mailbox lives here, below both: the store offers, the connection
//! layer takes, and neither calls the other.

use std::cell::RefCell;
use std::fs::File;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use bytes::Bytes;

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
pub struct Target {
    /// Which of the write's slices.
    pub index: usize,
    /// Where in the file it starts.
    pub offset: u64,
    /// The file.
    pub file: Source,
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

/// Runs `connection` (a plain TCP HTTP/1 connection's future, over
/// `crate::zerocopy::Stream`) so that the responses it serves can [`offer`] their content.
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

/// The first of `bufs` that the connection being served may send from a file, if any.
pub fn target(bufs: &[IoSlice<'_>]) -> Option<Target> {
    OFFERED.try_with(|offers| offers.borrow().target(bufs)).ok().flatten()
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
