//! Reusable buffers for reading large files in [`CHUNK`]-sized pieces. A fresh 512 KiB
//! buffer is a fresh mapping (main.rs keeps blocks that large out of malloc's heaps), so each
//! chunk would cost its page faults and an unmap; a buffer handed back when hyper drops the
//! chunk's `Bytes` costs neither. At most [`KEEP`] buffers wait here (16 MiB).

use std::sync::Mutex;

use bytes::Bytes;

/// Bytes read from a file at a time.
pub const CHUNK: usize = 512 * 1024;
/// Free buffers kept at most.
const KEEP: usize = 32;

static FREE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn free() -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
    FREE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A buffer of [`CHUNK`] bytes: a free one, or a new one.
pub fn take() -> Vec<u8> {
    free().pop().unwrap_or_else(|| vec![0; CHUNK])
}

/// The first `len` bytes of `buf`, as `Bytes` that hand `buf` back when dropped.
pub fn freeze(buf: Vec<u8>, len: usize) -> Bytes {
    Bytes::from_owner(Chunk { buf, len })
}

struct Chunk {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let mut free = free();
        if free.len() < KEEP {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_show_only_their_bytes() {
        let mut buf = take();
        buf[..3].copy_from_slice(b"abc");
        let address = buf.as_ptr();
        let bytes = freeze(buf, 3);
        assert_eq!(&bytes[..], b"abc");
        drop(bytes);
        // Another test may take it first; otherwise it is the one just handed back.
        let again = take();
        assert_eq!(again.len(), CHUNK);
        if again.as_ptr() == address {
            assert_eq!(&again[..3], b"abc", "the same buffer, not a new one");
        }
    }
}
