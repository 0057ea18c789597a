//! The journal's segments: files `journal-NNNNNNNNNNNNNNNN` in the state folder, each
//! headed with [`MAGIC`] and the kernel's boot id, then records (`record.rs`). A segment is
//! written in whole aligned blocks (`O_DIRECT` where taken), zero-filled and synced ahead of
//! its records, so a flush writes data alone and a crash leaves zeros past the last record.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{Record, decode};

/// What every segment begins with, before the boot id and a newline.
pub(super) const MAGIC: &[u8] = b"larder journal 1\n";
/// A segment is retired once it holds this many bytes.
pub(super) const SEGMENT_LIMIT: u64 = 64 << 20;
/// A segment is zero-filled this much at a time, ahead of its records.
const ZERO_CHUNK: u64 = 4 << 20;
/// Segments are written in aligned blocks of this size, so that they can bypass the page
/// cache (`O_DIRECT`).
const BLOCK: usize = 4096;
/// Segment file names start with this.
pub(super) const PREFIX: &str = "journal-";
/// A segment being written.
pub(super) struct Segment {
    pub(super) file: File,
    pub(super) path: PathBuf,
    /// Where the next record goes.
    pub(super) len: u64,
    /// How far the file is zero-filled, durably.
    pub(super) zeroed: u64,
    /// What the block `len` falls in holds before `len`: written again with what follows.
    pub(super) partial: Vec<u8>,
}

/// A zeroed, block-aligned buffer of `len` bytes (a multiple of [`BLOCK`]), for `O_DIRECT`.
fn aligned(len: usize) -> io::Result<(Vec<u8>, std::ops::Range<usize>)> {
    let raw = vec![0; len + BLOCK];
    let at = raw.as_ptr().align_offset(BLOCK);
    if at >= BLOCK {
        return Err(io::Error::other("cannot align a buffer"));
    }
    Ok((raw, at..at + len))
}

impl Segment {
    /// Makes sure the file is zero-filled, durably, up to at least `end`.
    pub(super) fn zero_fill(&mut self, end: u64) -> io::Result<()> {
        if end <= self.zeroed {
            return Ok(());
        }
        let to = end.next_multiple_of(ZERO_CHUNK);
        let (zeros, range) = aligned(usize::try_from(to - self.zeroed).map_err(io::Error::other)?)?;
        self.file.write_all_at(&zeros[range], self.zeroed)?;
        self.file.sync_all()?;
        self.zeroed = to;
        Ok(())
    }

    /// Writes `records` at `len`, in whole blocks (the partial one's earlier bytes again,
    /// unchanged), and flushes them.
    pub(super) fn append(&mut self, records: &[u8]) -> io::Result<()> {
        let start = self.len - self.partial.len() as u64;
        let used = self.partial.len() + records.len();
        let span = used.next_multiple_of(BLOCK);
        self.zero_fill(start + span as u64)?;
        let (mut raw, range) = aligned(span)?;
        let out = &mut raw[range];
        out[..self.partial.len()].copy_from_slice(&self.partial);
        out[self.partial.len()..used].copy_from_slice(records);
        self.file.write_all_at(out, start)?;
        self.file.sync_data()?;
        self.len += records.len() as u64;
        self.partial = out[used - used % BLOCK..used].to_vec();
        Ok(())
    }
}

pub(super) fn segment_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?;
    (digits.len() == 16).then(|| u64::from_str_radix(digits, 16).ok()).flatten()
}

/// The segments in `dir`, oldest first.
pub(super) fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for item in fs::read_dir(dir)? {
        let item = item?;
        if let Some(number) = item.file_name().to_str().and_then(segment_number) {
            found.push((number, item.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Reads a segment: its boot id and its records.
pub(super) fn read_segment(path: &Path) -> io::Result<(String, Vec<Record>)> {
    let bytes = fs::read(path)?;
    let Some(rest) = bytes.strip_prefix(MAGIC) else {
        return Ok((String::new(), Vec::new())); // torn while being created: nothing in it
    };
    let Some(end) = rest.iter().position(|b| *b == b'\n') else {
        return Ok((String::new(), Vec::new()));
    };
    let boot = String::from_utf8_lossy(&rest[..end]).into_owned();
    Ok((boot, decode(&rest[end + 1..])))
}
