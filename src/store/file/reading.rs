//! Reading a version's bytes: whole into memory (small, cached), or as a stream of chunks.

use super::*;

/// Reads the whole of a small file (`len` bytes) from an open handle.
pub(super) fn read_all(file: &File, len: u64) -> io::Result<Bytes> {
    let mut buf = vec![0; len as usize];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64)? {
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            n => filled += n,
        }
    }
    Ok(Bytes::from(buf))
}

/// `len` bytes of `handle` from `start`. A large file's chunks are sent as they are: sent
/// from the file instead (offered, as cached content is), they went 23-37% slower
/// (docs/performance.md, 2026-12-07).
pub(super) fn content(handle: &Handle, start: u64, len: u64) -> Result<ByteStream, Error> {
    fail::fail_point!("store-read", |arg| Err(Error::Io(crate::store::injected(arg))));
    let file = match handle {
        Handle::Memory(content) => {
            let end = start.saturating_add(len).min(content.bytes.len() as u64) as usize;
            let slice = content.to_send((start as usize).min(end)..end);
            return Ok(Box::pin(futures_util::stream::once(async move { Ok(slice) })));
        }
        Handle::File(file) => file.clone(),
    };
    let end = start.saturating_add(len);
    let stream = futures_util::stream::try_unfold(start, move |offset| {
        let file = file.clone();
        async move {
            if offset >= end {
                return Ok(None);
            }
            let want = (end - offset).min(CHUNK) as usize;
            let mut buf = chunks::take();
            // What the page cache holds is read here, on the loop, as nginx reads it;
            // only a read that would wait for the disk goes to a blocking thread.
            let cached = rustix::io::preadv2(
                &*file,
                &mut [io::IoSliceMut::new(&mut buf[..want])],
                offset,
                rustix::io::ReadWriteFlags::NOWAIT,
            );
            let chunk = match cached {
                Ok(n) if n > 0 => chunks::freeze(buf, n),
                _ => tokio::task::spawn_blocking(move || {
                    let mut filled = 0;
                    while filled < want {
                        let at = offset + filled as u64;
                        match file.read_at(&mut buf[filled..want], at)? {
                            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                            n => filled += n,
                        }
                    }
                    Ok(chunks::freeze(buf, want))
                })
                .await
                .map_err(io::Error::other)??,
            };
            let next = offset + chunk.len() as u64;
            Ok(Some((chunk, next)))
        }
    });
    Ok(Box::pin(stream))
}
