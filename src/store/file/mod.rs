//! [`FileStore`]: resources as files under ROOT, metadata in the state database.
//!
//! A write goes to a new unnamed file in the target's own folder (or one named with
//! [`TEMP_PREFIX`], which no request path may use, swept when the store opens), which is
//! synced with its metadata in [`META_ATTR`], recorded in the state database, linked or
//! renamed over the target, and the folder is synced; only then does `put` return. Every
//! path is resolved by descriptor beneath ROOT ([`resolve`](super::resolve)), never through
//! a symlink, never into the state folder.
//!
//! Here: the store, its opening and the [`Store`] operations. `lookup.rs`: what is at a
//! path and the folders a write needs; `versions.rs`: fingerprints, ETags and the metadata
//! a file carries; `publishing.rs`: a new version from its temporary file to its place,
//! synced or journaled; `recovery.rs`: what a start recovers; `reading.rs`: bytes out.

use std::ffi::CStr;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use rustix::fs::{AtFlags, CWD, Mode, OFlags, RenameFlags, StatxFlags};
use rustix::io::Errno;

use super::cache::{self, Cache, Content};
use super::chunks;
use super::dirsync::DirSyncs;
use super::journal::{Journal, Rows, Shared, Survivor};
use super::lock::Locks;
use super::offer::{self, Kept};
use super::resolve::{Announce, Dir, PROC_FD, Root};
use super::spool::Spool;
use super::{
    ByteStream, Entry, Error, Head, Kind, Opened, Put, Store, Upload, etag_of, gather, guess_type,
};
use crate::path::{ResourcePath, TEMP_PREFIX, is_servable_name};
use crate::state::object::{Outcome, OverQuota};
use crate::state::{Described, Fingerprint, ObjectMeta, Row, Sqlite, State};

mod copying;
mod lookup;
mod moving;
mod publishing;
mod reading;
mod recovery;
mod versions;

use publishing::*;
use reading::*;
use recovery::*;
use versions::*;

/// Request bodies up to this size are gathered in memory before touching the disk.
const SMALL_BODY: usize = 256 * 1024;
/// A new file with a body up to this size may be written on the connection's own loop
/// ([`Inner::create_here`]).
const HERE_BODY: u64 = 64 * 1024;
/// Bytes read from disk per chunk when streaming a resource.
const CHUNK: u64 = chunks::CHUNK as u64;

/// A folder of resources.
pub struct FileStore {
    inner: Arc<Inner>,
    locks: Locks,
}

struct Inner {
    cache: Cache,
    root: PathBuf,
    /// ROOT, held open: every request's path is resolved from it.
    tree: Root,
    /// The state folder, when it lies inside ROOT: never served, listed or written.
    reserved: Option<PathBuf>,
    state: Arc<State>,
    /// Whether files written here carry their metadata in [`META_ATTR`].
    carries_meta: bool,
    /// Whether files here keep modification times to the nanosecond ([`stamp_new_file`]).
    exact_times: bool,
    /// The journal that makes small writes durable, where files carry their metadata.
    journal: Option<Arc<Journal>>,
}

/// An opened version of a resource: its bytes in memory (small, hot files) or an open file.
pub enum Handle {
    /// The whole content.
    Memory(Content),
    /// The open file.
    File(Arc<File>),
}

/// Runs blocking file-system work off the async workers; a panic in it stays a panic.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::Io(io::Error::other(e))),
    }
}

impl FileStore {
    /// Opens the store on `root` (created if missing), sweeping temporary files left by a
    /// crash and forgetting metadata of versions no longer on disk.
    ///
    /// Where the folder keeps extended attributes, every file written here carries its
    /// content type and owner in [`META_ATTR`], synced with its bytes, and metadata commits
    /// do not wait for the disk ([`crate::state::Sqlite::relax_object_commits`]): a crash of
    /// larder loses none of them, but a crash of the machine may take the last ones. So at
    /// every start (a boot id cannot tell whether the disk lost its cache) every file is
    /// checked, and one carrying larder's metadata without a matching row gets its row back,
    /// its ETag from hashing its bytes.
    pub fn open(root: &Path, state: Arc<State>, state_dir: &Path) -> io::Result<FileStore> {
        if state.sqlite().is_none() {
            let problem = "the folder store keeps its metadata in the embedded database";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, problem));
        }
        fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        let reserved = state_dir.canonicalize().ok().filter(|s| s.starts_with(&root));
        let carries_meta = keeps_attributes(&root);
        if !carries_meta {
            tracing::warn!(
                "{} keeps no extended attributes: every metadata commit waits for the disk",
                root.display()
            );
        }
        let exact_times = keeps_exact_times(&root);
        if !*PROC_FD {
            tracing::warn!(
                "/proc is not mounted: paths are checked by descriptor but written by name, so \
                 a folder that another local user swaps for a symlink during a write is not \
                 defended against, and follow_symlinks follows nothing"
            );
        }
        let tree = Root::open(&root, reserved.as_deref())?;
        let mut inner = Inner {
            cache: Cache::default(),
            tree,
            root,
            reserved,
            state,
            carries_meta,
            exact_times,
            journal: None,
        };
        if carries_meta {
            let rows = Box::new(StateRows(inner.state.clone()));
            let journal = Journal::open(state_dir, &inner.root, rows, |s, earlier| {
                // The boot id is not trusted to tell that the disk still has the file: a disk
                // or controller reset, or a restored snapshot, loses its cache in one boot.
                if earlier || !inner.holds_survivor(s)? {
                    inner.replay(s)?;
                }
                inner.recover_row(&inner.root.join(s.key.trim_start_matches('/'))).map(drop)
            })?;
            inner.journal = Some(journal);
            Sqlite::commit_behind(&inner.state)?;
        }
        // One walk of ROOT: temporary files swept, rows given back from what files carry.
        let recovered = inner.tidy(&inner.root.clone(), carries_meta)?;
        if recovered > 0 {
            tracing::warn!("gave back the metadata of {recovered} files written before a crash");
        }
        inner.reconcile()?;
        if carries_meta {
            inner.db().relax_object_commits();
        }
        Ok(FileStore { inner: Arc::new(inner), locks: Locks::new() })
    }

    /// The canonical ROOT.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }
}

impl Inner {
    /// The embedded database, which [`FileStore::open`] made sure the state is.
    fn db(&self) -> &Sqlite {
        sqlite(&self.state)
    }

    fn is_reserved(&self, path: &Path) -> bool {
        self.reserved.as_ref().is_some_and(|r| path.starts_with(r))
    }
}

impl Store for FileStore {
    type Handle = Handle;

    async fn open(&self, path: &ResourcePath) -> Result<Opened<Handle>, Error> {
        fail::fail_point!("store-read", |arg| Err(Error::Io(super::injected(arg))));
        let key = path.as_key();
        if let Some(hit) = self.inner.cache.object(&key) {
            match (hit.content, hit.fingerprint) {
                (Some(content), _) => {
                    return Ok(Some(((*hit.entry).clone(), Some(Handle::Memory(content)))));
                }
                (None, None) => return Ok(Some(((*hit.entry).clone(), None))),
                (None, Some(fp)) => {
                    // A large file: open it, and use the cached entry if it is that version.
                    let (inner, segments) = (self.inner.clone(), path.segments().to_vec());
                    let file = blocking(move || {
                        let file = inner.tree.file(&segments)?;
                        Ok((fingerprint(&file.metadata()?) == fp).then_some(file))
                    })
                    .await;
                    if let Ok(Some(file)) = file {
                        return Ok(Some((
                            (*hit.entry).clone(),
                            Some(Handle::File(Arc::new(file))),
                        )));
                    }
                }
            }
        }
        let inner = self.inner.clone();
        let path = path.clone();
        blocking(move || {
            let generation = inner.cache.generation();
            // Open first, then describe the open file: the bytes and the metadata are of
            // the same version even if a write renames a new one into place meanwhile.
            let file = match inner.tree.file(path.segments()).map_err(Error::from_io) {
                Ok(file) => file,
                Err(Error::NotFound | Error::Conflict(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            let meta = file.metadata()?;
            // Only files and folders are resources: a FIFO, socket or device someone put
            // here is not served (a FIFO would hold a reader forever).
            if !meta.is_file() && !meta.is_dir() {
                return Ok(None);
            }
            let entry = inner.entry(&path, &meta)?;
            let (content, fp, large) = match meta.is_dir() {
                true => (None, None, None),
                false if meta.len() <= cache::MAX_FILE => {
                    let bytes = read_all(&file, meta.len())?;
                    let file = match bytes.len() >= offer::MIN {
                        true => Kept::keep(file),
                        false => None,
                    };
                    (Some(Content { bytes, file }), None, None)
                }
                false => (None, Some(fingerprint(&meta)), Some(Arc::new(file))),
            };
            let key = path.as_key();
            inner.cache.put_object(key, entry.clone(), content.clone(), fp, generation);
            let handle = match (content, large) {
                (Some(content), _) => Some(Handle::Memory(content)),
                (None, large) => large.map(Handle::File),
            };
            Ok(Some((entry, handle)))
        })
        .await
    }

    async fn canonical(&self, path: &ResourcePath) -> Result<Option<ResourcePath>, Error> {
        let inner = self.inner.clone();
        let path = path.clone();
        blocking(move || {
            let segments = path.segments();
            let (real, len) = inner.tree.followed(segments)?;
            if real == segments[..len] {
                return Ok(None);
            }
            let mut canonical = ResourcePath::root();
            let all = real.iter().chain(&segments[len..]);
            let count = real.len() + segments.len() - len;
            for (i, segment) in all.enumerate() {
                let last = i + 1 == count;
                canonical = canonical
                    .child(segment, !last || path.is_collection())
                    .map_err(|_| Error::NotFound)?;
            }
            Ok(Some(canonical.with_collection(path.is_collection())))
        })
        .await
    }

    fn in_memory(&self, handle: &Handle) -> Option<Bytes> {
        match handle {
            Handle::Memory(content) => Some(content.to_send(0..content.bytes.len())),
            Handle::File(_) => None,
        }
    }

    async fn read(&self, handle: &Handle, start: u64, len: u64) -> Result<ByteStream, Error> {
        content(handle, start, len)
    }

    async fn list(&self, path: &ResourcePath) -> Result<Arc<Vec<Entry>>, Error> {
        let path = path.with_collection(true);
        let key = path.as_key();
        if let Some(members) = self.inner.cache.listing(&key) {
            return Ok(members);
        }
        let inner = self.inner.clone();
        blocking(move || {
            let generation = inner.cache.generation();
            let dir = inner.folder_of(&path)?;
            let mut recorded = inner.db().objects_in(&key)?;
            let mut folders = inner.db().folders_in(&key)?;
            let mut entries = Vec::new();
            for item in fs::read_dir(&*dir)? {
                let item = item?;
                let Ok(name) = item.file_name().into_string() else { continue };
                if !is_servable_name(&name) {
                    continue;
                }
                // Symlinks are not followed: they are not listed, as they are not served.
                let Ok(meta) = item.metadata() else { continue };
                if !meta.is_file() && !meta.is_dir() {
                    continue; // symlinks, FIFOs, sockets, devices: not resources
                }
                let Ok(child) = path.child(&name, meta.is_dir()) else { continue };
                if inner.tree.is_reserved(child.segments()) {
                    continue;
                }
                let fp = fingerprint(&meta);
                let known =
                    recorded.remove(&child.with_collection(false).as_key()).and_then(|versions| {
                        versions
                            .into_iter()
                            .find(|(version, _)| *version == fp)
                            .map(|(_, meta)| meta)
                    });
                let mut entry = entry_of(&child, &meta, known.filter(|_| !meta.is_dir()))?;
                if meta.is_dir() {
                    entry.owner = folders.remove(&child.as_key());
                }
                entries.push(entry);
            }
            entries.sort_by(|a, b| a.path.name().cmp(b.path.name()));
            let entries = Arc::new(entries);
            inner.cache.put_listing(key, entries.clone(), generation);
            Ok(entries)
        })
        .await
    }

    async fn put<R: Send + 'static>(
        &self,
        path: &ResourcePath,
        upload: Upload,
        mut body: ByteStream,
        check: impl FnOnce(Option<&Entry>) -> Result<(), R> + Send + 'static,
    ) -> Result<Result<Put, R>, Error> {
        let inner = self.inner.clone();
        let path = path.with_collection(false);
        let key = path.as_key();
        let Head { chunks: mut head, more, mut hasher, .. } = gather(&mut body, SMALL_BODY).await?;
        // A small body is written in the same trip to the blocking pool that makes it the new
        // version; a larger one is streamed to its new file as it comes, before the lock.
        let mut streamed = None;
        if more {
            let (inner, path, upload) = (inner.clone(), path.clone(), upload.clone());
            let (parent, temp, file) =
                blocking(move || inner.create_temp(&path, &upload, &[])).await?;
            let mut spool = Spool::new(file)?;
            for chunk in std::mem::take(&mut head) {
                spool.write(&chunk).await?;
            }
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(Error::Body)?;
                fail::fail_point!("store-write", |arg| Err(Error::from_io(super::injected(arg))));
                hasher.update(&chunk);
                spool.write(&chunk).await?;
            }
            streamed = Some((parent, temp, spool.finish().await?));
        }
        let _guard = self.locks.lock(&key).await;
        let _forget = Forget { cache: &self.inner.cache, key: Some(key) };
        let etag = etag_of(&hasher);
        let Some(journal) = inner.journal.clone().filter(|_| streamed.is_none()) else {
            return blocking(move || {
                let new = match streamed {
                    Some(streamed) => streamed,
                    None => inner.create_temp(&path, &upload, &head)?,
                };
                inner.finish(&path, Staged::of(new, etag, upload), check)
            })
            .await;
        };
        // A small body goes to the journal, whose writer thread answers once its version
        // is visible: no blocking thread waits for the flush.
        let (answer, answered) = tokio::sync::oneshot::channel();
        let size: u64 = head.iter().map(|chunk| chunk.len() as u64).sum();
        let shared = journal.try_shared().filter(|_| size <= HERE_BODY);
        let here = match &shared {
            Some(_) => inner.create_here(&path, &head)?,
            None => None,
        };
        let recorded = match (shared, here) {
            (Some(shared), Some(new)) => {
                // create_here found no version, and the path's lock keeps it so.
                let journal = (&journal, shared, true);
                let staged = (Staged::of(new, etag, upload), &head[..]);
                inner.record(journal, &path, staged, check, answer)?.map(Written::Journaled)
            }
            (shared, _) => {
                blocking({
                    let (inner, journal) = (inner.clone(), journal.clone());
                    move || {
                        let new = inner.create_temp(&path, &upload, &head)?;
                        if !inner.tree.holds(&new.0)? {
                            // On a file system mounted beneath ROOT, which a checkpoint (that
                            // syncs ROOT's) would not make durable: the synced way.
                            let put = inner.finish(&path, Staged::of(new, etag, upload), check);
                            return Ok(put?.map(Written::Synced));
                        }
                        let shared = shared.unwrap_or_else(|| journal.shared());
                        let journal = (&journal, shared, false);
                        let staged = (Staged::of(new, etag, upload), &head[..]);
                        let recorded = inner.record(journal, &path, staged, check, answer);
                        Ok(recorded?.map(Written::Journaled))
                    }
                })
                .await?
            }
        };
        let recorded = match recorded {
            Ok(Written::Journaled(recorded)) => recorded,
            Ok(Written::Synced(put)) => return Ok(Ok(put)),
            Err(refusal) => return Ok(Err(refusal)),
        };
        let failed = match answered.await {
            Ok(Ok(put)) => return Ok(Ok(put)),
            Ok(Err(Unsettled::Refused(over))) => return Err(Error::OverQuota(over)),
            Ok(Err(Unsettled::Failed(e))) => e,
            Err(_) => io::Error::other("making the version visible panicked"),
        };
        blocking(move || {
            inner.undo(&journal, recorded);
            Ok(())
        })
        .await?;
        Err(failed.into())
    }

    async fn create_collection<R: Send + 'static>(
        &self,
        path: &ResourcePath,
        upload: Upload,
        check: impl FnOnce(Option<&Entry>) -> Result<(), R> + Send + 'static,
    ) -> Result<Result<Put, R>, Error> {
        let path = path.with_collection(true);
        let _guard = self.locks.lock(&path.as_key()).await;
        let inner = self.inner.clone();
        let current = {
            let (inner, path) = (inner.clone(), path.clone());
            blocking(move || inner.current(&path)).await?
        };
        if let Some(entry) = &current
            && !entry.is_collection()
        {
            return Err(Error::Conflict(format!("{} is a resource", entry.path)));
        }
        if let Err(refusal) = check(current.as_ref()) {
            return Ok(Err(refusal));
        }
        if let Some(entry) = current {
            return Ok(Ok(Put { entry, created: false }));
        }
        let entry = blocking(move || {
            let made = inner.folder_made(path.segments(), Some((&upload, 0)))?;
            let made = made.expect("every level is created");
            inner.entry(&path, &made.metadata()?)
        })
        .await?;
        self.inner.cache.invalidate(&entry.path.as_key());
        Ok(Ok(Put { entry, created: true }))
    }

    async fn close(&self) -> io::Result<()> {
        let Some(journal) = self.inner.journal.clone() else { return Ok(()) };
        // Files removed by hand while larder is stopped then stay removed: a start finds no
        // record to write them again from.
        blocking(move || Ok(journal.close()?)).await.map_err(|e| match e {
            Error::Io(e) => e,
            other => io::Error::other(other.to_string()),
        })
    }

    async fn rename<R: Send + 'static>(
        &self,
        from: &ResourcePath,
        to: &ResourcePath,
        check: impl FnOnce(&Entry, Option<&Entry>) -> Result<(), R> + Send + 'static,
    ) -> Result<Result<Put, R>, Error> {
        let _guards = self.locks.lock_two(&from.as_key(), &to.as_key()).await;
        // Whatever happens on disk, nothing cached of either tree is served again.
        let _forget = Forget { cache: &self.inner.cache, key: None };
        let (inner, from, to) = (self.inner.clone(), from.clone(), to.clone());
        blocking(move || inner.move_now(&from, &to, check)).await
    }

    async fn copy_tree(
        &self,
        plan: Vec<(Entry, ResourcePath)>,
        upload: Upload,
    ) -> Result<Put, Error> {
        let to = plan.first().map(|(_, to)| to.as_key()).ok_or(Error::NotFound)?;
        let _guard = self.locks.lock(&to).await;
        let _forget = Forget { cache: &self.inner.cache, key: Some(to) };
        let inner = self.inner.clone();
        blocking(move || inner.copy_now(&plan, &upload)).await
    }

    async fn delete<R: Send + 'static>(
        &self,
        path: &ResourcePath,
        recursive: bool,
        check: impl FnOnce(Option<&Entry>) -> Result<(), R> + Send + 'static,
    ) -> Result<Result<(), R>, Error> {
        let _guard = self.locks.lock(&path.as_key()).await;
        let inner = self.inner.clone();
        let current = {
            let (inner, path) = (inner.clone(), path.clone());
            blocking(move || inner.current(&path)).await?
        };
        let Some(entry) = current else {
            return Err(Error::NotFound);
        };
        if let Err(refusal) = check(Some(&entry)) {
            return Ok(Err(refusal));
        }
        // Whatever happens on disk (a failure, a panic), forget what was cached about it.
        let _forget = Forget {
            cache: &self.inner.cache,
            key: (!entry.is_collection()).then(|| entry.path.as_key()),
        };
        let result = blocking(move || -> Result<(), Error> {
            // Remove the link itself, not what a symlink points to.
            let parent = inner.folder_of(&entry.path.parent())?;
            let real = parent.join(entry.path.name());
            let is_dir = fs::symlink_metadata(&real)?.is_dir();
            if is_dir && !recursive && fs::read_dir(&real)?.next().is_some() {
                return Err(Error::NotEmpty);
            }
            // A folder's removal touches paths under other locks: no small write may be
            // between its record and its rename meanwhile (see [`Journal`]).
            let journal = inner.journal.as_ref();
            let _exclusive = journal.filter(|_| is_dir).map(|j| j.exclusive());
            // Out of sight first, under a temporary name that opening the store sweeps away
            // (made durable before the metadata goes); then the metadata; then the bytes. A
            // crash anywhere leaves the resource with its metadata, or neither. (The crash
            // campaign found the old order, metadata first, leaving a resource that a crash
            // kept without its owner, uncounted in its quota.)
            let hidden = parent.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
            fs::rename(&real, &hidden)?;
            let superseded = std::sync::atomic::AtomicBool::new(false);
            let put_back = |error: Error| {
                // The journal forgot the versions beneath: make them durable first.
                if superseded.load(std::sync::atomic::Ordering::Relaxed)
                    && let Err(e) = File::open(&hidden)
                        .and_then(|dir| rustix::fs::syncfs(&dir).map_err(io::Error::from))
                {
                    tracing::error!("cannot sync {} before putting it back: {e}", real.display());
                }
                if let Err(e) = fs::rename(&hidden, &real) {
                    tracing::error!("cannot put back {}: {e}", real.display());
                }
                error
            };
            let key = entry.path.as_key();
            let forgotten = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                sync_dir(&parent)?;
                if let Some(journal) = journal {
                    journal.supersede(&parent.key_of(entry.path.name()), is_dir)?;
                    superseded.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                inner.db().delete_objects(&key, entry.is_collection())?;
                Ok::<_, Error>(())
            }));
            match forgotten {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(put_back(e)),
                Err(panic) => {
                    put_back(Error::NotFound);
                    std::panic::resume_unwind(panic);
                }
            }
            // Gone for good once the metadata is; a crash before this line leaves only a
            // temporary name to sweep.
            match (is_dir, recursive) {
                (true, true) => fs::remove_dir_all(&hidden)?,
                // Something may have been put inside since it was found empty: keep it.
                (true, false) => fs::remove_dir(&hidden).map_err(|e| put_back(e.into()))?,
                (false, _) => fs::remove_file(&hidden)?,
            }
            Ok(())
        })
        .await;
        result.map(Ok)
    }
}
