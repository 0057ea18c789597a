//! The file store's memory: entries (metadata), the bytes of small files, and listings, so a
//! hot GET needs no system call and no database query.
//!
//! Correctness rules:
//! - every write through the store invalidates what it changes before it answers (the path,
//!   its parent's listing; a recursive delete empties the cache) and bumps [`Cache::generation`];
//! - a reader fills the cache only if the generation did not move while it read the disk, so a
//!   read that raced a write never stores what the write replaced;
//! - entries older than [`TTL`] are read again, which bounds how long a file changed behind
//!   larder's back can be served stale.
//!
//! Memory is bounded by [`BUDGET`] bytes of content; past it, arbitrary entries are dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::Entry;
use super::offer::Source;
use crate::state::Fingerprint;

/// How long a cached entry is trusted without looking at the disk.
pub const TTL: Duration = Duration::from_secs(1);
/// Files up to this size are kept in memory.
pub const MAX_FILE: u64 = 1 << 20;
/// At most this many bytes of file content are kept.
pub const BUDGET: usize = 128 << 20;
/// At most this many entries (metadata, listings) are kept.
const MAX_ENTRIES: usize = 100_000;

/// A cached resource or collection.
#[derive(Clone)]
pub struct Object {
    /// What `open` returns.
    pub entry: Arc<Entry>,
    /// The whole content, for small files.
    pub content: Option<Content>,
    /// The version, for large files (whose bytes are read from disk on each GET).
    pub fingerprint: Option<Fingerprint>,
    at: Instant,
}

/// A small file's whole content, with the file it was read from if that is kept open (to
/// be sent with sendfile: [`super::offer`]).
#[derive(Clone)]
pub struct Content {
    pub bytes: Bytes,
    pub file: Option<Source>,
}

impl Content {
    fn len(&self) -> usize {
        self.bytes.len()
    }

    /// `bytes[range]` for an answer, offered to the connection being served with the file
    /// they were read from.
    pub fn to_send(&self, range: std::ops::Range<usize>) -> Bytes {
        let start = range.start as u64;
        let slice = self.bytes.slice(range);
        if let Some(file) = &self.file {
            super::offer::offer(&slice, file, start);
        }
        slice
    }
}

/// The key of an object: its path without a trailing slash (the root is "").
fn object_key(path: &str) -> &str {
    path.trim_end_matches('/')
}

struct Listing {
    members: Arc<Vec<Entry>>,
    at: Instant,
}

#[derive(Default)]
struct Maps {
    objects: HashMap<String, Object>,
    listings: HashMap<String, Listing>,
    content_bytes: usize,
}

/// The cache.
#[derive(Default)]
pub struct Cache {
    maps: Mutex<Maps>,
    generation: AtomicU64,
}

impl Cache {
    fn maps(&self) -> MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current generation: read it before reading the disk, pass it to `put_*`.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The fresh cached object for `key` (a path without its trailing slash).
    pub fn object(&self, key: &str) -> Option<Object> {
        let maps = self.maps();
        maps.objects.get(object_key(key)).filter(|o| o.at.elapsed() < TTL).cloned()
    }

    /// The fresh cached listing of the collection `key` (ending in `/`).
    pub fn listing(&self, key: &str) -> Option<Arc<Vec<Entry>>> {
        let maps = self.maps();
        maps.listings.get(key).filter(|l| l.at.elapsed() < TTL).map(|l| l.members.clone())
    }

    /// Remembers an object read at `generation`, unless a write came since.
    pub fn put_object(
        &self,
        key: String,
        entry: Entry,
        content: Option<Content>,
        fingerprint: Option<Fingerprint>,
        generation: u64,
    ) {
        let mut maps = self.maps();
        if self.generation() != generation {
            return;
        }
        let size = content.as_ref().map_or(0, Content::len);
        if maps.content_bytes + size > BUDGET || maps.objects.len() >= MAX_ENTRIES {
            shrink(&mut maps, size);
        }
        maps.content_bytes += size;
        let object = Object { entry: Arc::new(entry), content, fingerprint, at: Instant::now() };
        if let Some(old) = maps.objects.insert(object_key(&key).to_owned(), object) {
            maps.content_bytes -= old.content.map_or(0, |c| c.len());
        }
    }

    /// Remembers a listing read at `generation`, unless a write came since.
    pub fn put_listing(&self, key: String, members: Arc<Vec<Entry>>, generation: u64) {
        let mut maps = self.maps();
        if self.generation() != generation {
            return;
        }
        if maps.listings.len() >= MAX_ENTRIES {
            maps.listings.clear();
        }
        maps.listings.insert(key, Listing { members, at: Instant::now() });
    }

    /// Forgets `key` and its parent's listing (a write to `key` happened).
    pub fn invalidate(&self, key: &str) {
        let mut maps = self.maps();
        self.generation.fetch_add(1, Ordering::AcqRel);
        let trimmed = object_key(key);
        if let Some(old) = maps.objects.remove(trimmed) {
            maps.content_bytes -= old.content.map_or(0, |c| c.len());
        }
        let parent = &trimmed[..trimmed.rfind('/').map_or(0, |i| i + 1)];
        maps.listings.remove(if parent.is_empty() { "/" } else { parent });
        maps.listings.remove(&format!("{trimmed}/"));
    }

    /// Forgets everything (a collection and all beneath it went).
    pub fn clear(&self) {
        let mut maps = self.maps();
        self.generation.fetch_add(1, Ordering::AcqRel);
        *maps = Maps::default();
    }
}

/// Drops arbitrary objects until `incoming` more bytes fit the budget.
fn shrink(maps: &mut Maps, incoming: usize) {
    let mut freed = 0;
    let need = (maps.content_bytes + incoming).saturating_sub(BUDGET / 2);
    let victims: Vec<String> = maps
        .objects
        .iter()
        .take_while(|(_, o)| {
            let keep_going = freed < need || maps.objects.len() >= MAX_ENTRIES;
            freed += o.content.as_ref().map_or(0, Content::len);
            keep_going
        })
        .map(|(k, _)| k.clone())
        .collect();
    for key in victims {
        if let Some(old) = maps.objects.remove(&key) {
            maps.content_bytes -= old.content.map_or(0, |c| c.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::ResourcePath;
    use crate::store::Kind;

    fn entry(path: &str) -> Entry {
        Entry {
            path: ResourcePath::parse(path).unwrap(),
            kind: Kind::Resource,
            size: 1,
            modified: std::time::UNIX_EPOCH,
            etag: Some("e".into()),
            content_type: None,
            owner: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn writes_invalidate_and_races_do_not_fill() {
        let cache = Cache::default();
        let generation = cache.generation();
        cache.put_object(
            "/a".into(),
            entry("/a"),
            Some(Content { bytes: Bytes::from_static(b"x"), file: None }),
            None,
            generation,
        );
        cache.put_listing("/".into(), Arc::new(vec![entry("/a")]), generation);
        assert!(cache.object("/a").is_some() && cache.listing("/").is_some());
        // A read that started before a write does not fill the cache.
        let before = cache.generation();
        cache.invalidate("/a");
        assert!(cache.object("/a").is_none() && cache.listing("/").is_none());
        cache.put_object("/a".into(), entry("/a"), None, None, before);
        assert!(cache.object("/a").is_none());
        // Entries expire.
        cache.put_object("/b".into(), entry("/b"), None, None, cache.generation());
        tokio::time::advance(TTL).await;
        assert!(cache.object("/b").is_none());
    }

    #[test]
    fn stays_within_budget() {
        let cache = Cache::default();
        let big = Bytes::from(vec![0u8; MAX_FILE as usize]);
        for i in 0..(BUDGET / MAX_FILE as usize) * 2 {
            cache.put_object(
                format!("/f{i}"),
                entry("/f"),
                Some(Content { bytes: big.clone(), file: None }),
                None,
                cache.generation(),
            );
        }
        assert!(cache.maps().content_bytes <= BUDGET);
    }
}
