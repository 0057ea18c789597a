//! [`FileStore`]: resources as files under ROOT, metadata in the state database.
//!
//! A write goes to a new unnamed file in the target's own folder (or one named with
//! [`TEMP_PREFIX`], which no request path may use, swept when the store opens), which is
//! synced with its metadata in [`META_ATTR`], recorded in the state database, linked or
//! renamed over the target, and the folder is synced; only then does `put` return. Every
//! path is resolved by descriptor beneath ROOT ([`resolve`](super::resolve)), never through
//! a symlink, never into the state folder.

use std::ffi::CStr;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use rustix::fs::{AtFlags, CWD, Mode, OFlags, StatxFlags};
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

fn fingerprint(meta: &fs::Metadata) -> Fingerprint {
    Fingerprint {
        ino: meta.ino(),
        size: meta.len(),
        mtime_ns: meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec()),
    }
}

fn derived_etag(fp: Fingerprint) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&fp.ino.to_le_bytes());
    hasher.update(&fp.size.to_le_bytes());
    hasher.update(&fp.mtime_ns.to_le_bytes());
    etag_of(&hasher)
}

/// The entry for `meta` at `path`, with what larder recorded about this version, if anything.
fn entry_of(
    path: &ResourcePath,
    meta: &fs::Metadata,
    recorded: Option<ObjectMeta>,
) -> Result<Entry, Error> {
    let modified = meta.modified()?;
    if meta.is_dir() {
        return Ok(Entry::collection(path, modified));
    }
    let (etag, content_type, owner) = match recorded {
        Some(ObjectMeta { etag, content_type, owner }) => (etag, content_type, owner),
        None => (derived_etag(fingerprint(meta)), None, None),
    };
    Ok(Entry {
        path: path.with_collection(false),
        kind: Kind::Resource,
        size: meta.len(),
        modified,
        etag: Some(etag),
        content_type: Some(content_type.unwrap_or_else(|| guess_type(path.name()))),
        owner,
    })
}

/// Reads the whole of a small file (`len` bytes) from an open handle.
fn read_all(file: &File, len: u64) -> io::Result<Bytes> {
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

/// The fingerprint of `file`, new and holding `size` bytes, without asking the file system
/// for its times: its modification time is set to now instead. Under Linux's multigrain
/// timestamps (6.13+), a file whose times were asked for takes a fine-grained timestamp at
/// its next change (here, its link into its folder), and every file changed after it until
/// the next clock tick takes one too: the journal's segment then has a new modification time
/// at each flush, and each flush writes its inode as well. Only where the file system keeps
/// times to the nanosecond ([`Inner::exact_times`]).
fn stamp_new_file(file: &File, size: u64) -> io::Result<Fingerprint> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    stamp(file, size, now.map_err(io::Error::other)?)
}

/// Sets `file`'s modification time to `at` (since the epoch): its fingerprint, with `size`.
fn stamp(file: &File, size: u64, at: std::time::Duration) -> io::Result<Fingerprint> {
    use rustix::fs::{Timespec, Timestamps, UTIME_OMIT};
    let (secs, nanos) = (at.as_secs() as i64, i64::from(at.subsec_nanos()));
    let times = Timestamps {
        last_access: Timespec { tv_sec: 0, tv_nsec: UTIME_OMIT },
        last_modification: Timespec { tv_sec: secs, tv_nsec: nanos },
    };
    rustix::fs::futimens(file, &times)?;
    let ino = rustix::fs::statx(file, c"", AtFlags::EMPTY_PATH, StatxFlags::INO)?.stx_ino;
    Ok(Fingerprint { ino, size, mtime_ns: secs * 1_000_000_000 + nanos })
}

/// Flushes a just-written temporary file to stable storage and returns its fingerprint.
fn sync_new_file(file: &File) -> Result<Fingerprint, Error> {
    fail::fail_point!("store-sync", |arg| Err(Error::from_io(super::injected(arg))));
    file.sync_all()?;
    Ok(fingerprint(&file.metadata()?))
}

/// The extended attribute in which a file written by larder carries its content type and
/// owner (`TYPE\nOWNER`, either empty when unknown), made durable by the file's own sync.
const META_ATTR: &CStr = c"user.larder";

/// Whether files in `dir` keep extended attributes (tried on a temporary file).
fn keeps_attributes(dir: &Path) -> bool {
    if super::simulated("fs-no-xattrs") {
        return false;
    }
    let probe = temp_name(dir);
    let Ok(file) = File::create(&probe) else { return false };
    let meta = ObjectMeta { etag: String::new(), content_type: None, owner: None };
    let kept = carry_meta(&file, &meta).is_ok();
    let _ = fs::remove_file(&probe);
    kept
}

/// Whether files in `dir` keep modification times to the nanosecond (tried on a temporary
/// file), as [`stamp_new_file`] needs.
fn keeps_exact_times(dir: &Path) -> bool {
    let probe = temp_name(dir);
    let Ok(file) = File::create(&probe) else { return false };
    let stamped = stamp(&file, 0, std::time::Duration::new(1_700_000_000, 123_456_789));
    let kept = stamped.ok().zip(file.metadata().ok()).is_some_and(|(fp, meta)| {
        let found = fingerprint(&meta);
        (found.ino, found.mtime_ns) == (fp.ino, fp.mtime_ns)
    });
    let _ = fs::remove_file(&probe);
    kept
}

/// What [`META_ATTR`] holds for `meta`.
fn meta_value(meta: &ObjectMeta) -> String {
    format!(
        "{}\n{}",
        meta.content_type.as_deref().unwrap_or(""),
        meta.owner.as_deref().unwrap_or("")
    )
}

/// Writes `meta`'s content type and owner into `file`'s [`META_ATTR`].
fn carry_meta(file: &File, meta: &ObjectMeta) -> io::Result<()> {
    carry_value(file, meta_value(meta).as_bytes())
}

/// Writes `value` into `file`'s [`META_ATTR`].
fn carry_value(file: &File, value: &[u8]) -> io::Result<()> {
    rustix::fs::fsetxattr(file, META_ATTR, value, rustix::fs::XattrFlags::empty())?;
    Ok(())
}

/// The metadata the file at `path` carries, if larder wrote it: the content type and owner
/// from [`META_ATTR`], the ETag from hashing its bytes.
fn carried_meta(path: &Path) -> Option<ObjectMeta> {
    let mut value = vec![0u8; rustix::fs::lgetxattr_query(path, META_ATTR).ok()?];
    let len = rustix::fs::lgetxattr(path, META_ATTR, &mut value[..]).ok()?;
    let (content_type, owner) = std::str::from_utf8(&value[..len]).ok()?.split_once('\n')?;
    let given = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    Some(ObjectMeta {
        etag: etag_of_bytes(path)?,
        content_type: given(content_type),
        owner: given(owner),
    })
}

/// The ETag of the bytes of the file at `path` (as a PUT of them would answer).
fn etag_of_bytes(path: &Path) -> Option<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::open(path).ok()?).ok()?;
    Some(etag_of(&hasher))
}

/// The folder fsyncs of this process, shared by concurrent writers to one folder.
static DIR_SYNCS: std::sync::LazyLock<DirSyncs> = std::sync::LazyLock::new(DirSyncs::default);

fn sync_dir(dir: &Dir) -> io::Result<()> {
    fail::fail_point!("store-sync", |arg| Err(super::injected(arg)));
    DIR_SYNCS.sync(dir)
}

impl Inner {
    /// The embedded database, which [`FileStore::open`] made sure the state is.
    fn db(&self) -> &Sqlite {
        sqlite(&self.state)
    }

    fn is_reserved(&self, path: &Path) -> bool {
        self.reserved.as_ref().is_some_and(|r| path.starts_with(r))
    }

    /// What is at `path` (not following a symlink: one answers as missing).
    fn meta_of(&self, path: &ResourcePath) -> Result<fs::Metadata, Error> {
        let found = self
            .tree
            .open_at(path.segments(), OFlags::PATH)
            .and_then(|fd| File::from(fd).metadata());
        found.map_err(|e| match Error::from_io(e) {
            Error::Conflict(_) => Error::NotFound,
            other => other,
        })
    }

    /// The folder `path` names, held open.
    fn folder_of(&self, path: &ResourcePath) -> Result<Dir, Error> {
        self.tree.dir(path.segments()).map_err(|e| match Error::from_io(e) {
            Error::Conflict(_) => Error::NotFound,
            other => other,
        })
    }

    /// The entry for the file-system object described by `meta`, which `path` names.
    fn entry(&self, path: &ResourcePath, meta: &fs::Metadata) -> Result<Entry, Error> {
        if meta.is_dir() {
            let mut entry = entry_of(path, meta, None)?;
            entry.owner = self.db().folder_owner(&entry.path.as_key())?;
            return Ok(entry);
        }
        let recorded =
            self.db().object(&path.with_collection(false).as_key(), fingerprint(meta))?;
        entry_of(path, meta, recorded)
    }

    /// The current entry at `path` and its fingerprint, if it exists (for writers, under the
    /// path's lock).
    fn current_with_fingerprint(
        &self,
        path: &ResourcePath,
    ) -> Result<Option<(Entry, Fingerprint)>, Error> {
        let meta = match self.meta_of(path) {
            Ok(meta) => meta,
            Err(Error::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some((self.entry(path, &meta)?, fingerprint(&meta))))
    }

    /// [`Inner::current_with_fingerprint`] for `path` in `parent`, its held folder: looked
    /// up there, not again from ROOT. A symlink there answers as missing.
    fn current_in(
        &self,
        path: &ResourcePath,
        parent: &Dir,
    ) -> Result<Option<(Entry, Fingerprint)>, Error> {
        let meta = match fs::symlink_metadata(parent.join(path.name())) {
            Ok(meta) if meta.file_type().is_symlink() => return Ok(None),
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::from_io(e)),
        };
        Ok(Some((self.entry(path, &meta)?, fingerprint(&meta))))
    }

    /// The current entry at `path`, if any (for writers, under the path's lock).
    fn current(&self, path: &ResourcePath) -> Result<Option<Entry>, Error> {
        Ok(self.current_with_fingerprint(path)?.map(|(entry, _)| entry))
    }

    /// Makes sure the parent collection of `path` exists (creating and syncing missing
    /// levels, made by `upload`'s writer) and returns it, held open.
    fn prepare_parent(&self, path: &ResourcePath, upload: &Upload) -> Result<Dir, Error> {
        let segments = path.segments();
        let parents = &segments[..segments.len().saturating_sub(1)];
        // A missing parent means a new file in it: one resource more.
        let made = self.folder_made(parents, Some((upload, 1)))?;
        Ok(made.expect("every level is created"))
    }

    /// The parent collection of `path`, held open, if every level of it exists. A level
    /// that is a resource is a conflict; one that is a symlink, missing.
    fn parent_folder(&self, path: &ResourcePath) -> Result<Option<Dir>, Error> {
        let segments = path.segments();
        self.folder_made(&segments[..segments.len().saturating_sub(1)], None)
    }

    /// The folder `segments` names, held open. With `make`, its missing levels are made and
    /// synced, recorded first as the writer's, within its quota's resources with `then`
    /// more to come; else a missing level makes it `None`.
    fn folder_made(
        &self,
        segments: &[String],
        make: Option<(&Upload, u64)>,
    ) -> Result<Option<Dir>, Error> {
        let claim = |keys: &[String]| -> io::Result<()> {
            let Some((upload, then)) = make else { return Ok(()) };
            let Some(owner) = upload.owner.as_deref() else { return Ok(()) };
            let quota = upload.quotas.get(owner).copied();
            self.db().claim_folders(owner, keys, then, quota)?.map_err(io::Error::other)
        };
        let create = make.map(|_| &claim as Announce<'_>);
        self.tree.folder(segments, create, sync_dir).map_err(|e| match Error::from_io(e) {
            Error::Conflict(_) => Error::Conflict(format!(
                "a resource stands where a collection of /{} is needed",
                segments.join("/")
            )),
            other => other,
        })
    }

    /// A new file holding `head` in the folder of `path` (created if missing): the folder,
    /// the file's guard and the file.
    fn create_temp(
        &self,
        path: &ResourcePath,
        upload: &Upload,
        head: &[Bytes],
    ) -> Result<(Dir, Temp, File), Error> {
        let parent = self.prepare_parent(path, upload)?;
        let (temp, mut file) = self.open_new(&parent)?;
        head.iter().try_for_each(|chunk| file.write_all(chunk))?;
        Ok((parent, temp, file))
    }

    /// [`Inner::create_temp`] on the caller's thread, where nothing makes it wait for the
    /// disk or a lock: a new file (`None` if `path` has a current version, whose metadata
    /// may have to be read from SQLite) in a folder that exists (`None` if one must be
    /// created and synced). A small new file is so written on the connection's own loop,
    /// as nginx writes its files: some 30 µs of system calls, less than the two hops to the
    /// blocking pool and back cost (12% of the durable small-PUT rate, measured).
    fn create_here(
        &self,
        path: &ResourcePath,
        head: &[Bytes],
    ) -> Result<Option<(Dir, Temp, File)>, Error> {
        let Some(parent) = self.parent_folder(path)? else {
            return Ok(None);
        };
        if !self.tree.holds(&parent)? {
            return Ok(None);
        }
        match fs::symlink_metadata(parent.join(path.name())) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            _ => return Ok(None),
        }
        let (temp, mut file) = self.open_new(&parent)?;
        head.iter().try_for_each(|chunk| file.write_all(chunk))?;
        Ok(Some((parent, temp, file)))
    }

    /// An unnamed new file in `parent`, or a named temporary one where unsupported.
    fn open_new(&self, parent: &Dir) -> Result<(Temp, File), Error> {
        // Unnamed files may need `/proc/self/fd` to get a name ([`link_unnamed`]).
        if *PROC_FD && !super::simulated("fs-no-tmpfile") {
            let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
            match rustix::fs::open(&**parent, flags, Mode::from_raw_mode(0o666)) {
                Ok(fd) => return Ok((Temp::unnamed(), File::from(fd))),
                // Not on this file system: a named one, below.
                Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOSYS) => {}
                Err(e) => return Err(io::Error::from(e).into()),
            }
        }
        let temp_path = temp_name(parent);
        let file = fs::OpenOptions::new().write(true).create_new(true).open(&temp_path)?;
        Ok((Temp::named(parent, temp_path), file))
    }

    /// Checks that `file`, the temporary file `temp` in `parent` holding a whole new body
    /// whose ETag is `etag`, may become the new version of `path`: the current version and
    /// `check`; then puts the metadata into the file itself (when the folder keeps extended
    /// attributes) and, unless the version goes to the journal (`journaled` given), the file to
    /// the disk. The caller holds the path's lock.
    fn prepare<R>(
        &self,
        path: &ResourcePath,
        Staged { parent, temp, file, etag, upload }: Staged,
        journaled: Option<Journaled>,
        check: impl FnOnce(Option<&Entry>) -> Result<(), R>,
    ) -> Result<Result<Ready, R>, Error> {
        let current = match &journaled {
            Some(Journaled { absent: true, .. }) => None,
            _ => self.current_in(path, &parent)?,
        };
        if current.as_ref().is_some_and(|(entry, _)| entry.is_collection()) {
            return Err(Error::Conflict(format!("{} is a collection", path.with_collection(true))));
        }
        if let Err(refusal) = check(current.as_ref().map(|(entry, _)| entry)) {
            return Ok(Err(refusal));
        }
        let current_fp = current.as_ref().map(|(_, fp)| *fp);
        let owner = current.as_ref().and_then(|(entry, _)| entry.owner.clone()).or(upload.owner);
        let meta = ObjectMeta { etag, content_type: upload.content_type, owner };
        if self.carries_meta {
            carry_meta(&file, &meta)?;
        }
        let fp = match &journaled {
            Some(journaled) if self.exact_times => stamp_new_file(&file, journaled.size)?,
            Some(_) => fingerprint(&file.metadata()?),
            None => sync_new_file(&file)?,
        };
        let quota = meta.owner.as_ref().and_then(|owner| upload.quotas.get(owner).copied());
        let row = Row { path: path.as_key(), fp, meta, current: current_fp, quota };
        let replace = current.is_some();
        let _shared = journaled.map(|journaled| journaled.shared);
        Ok(Ok(Ready { path: path.clone(), row, parent, temp, file, replace, _shared }))
    }

    /// Makes `file` (see [`Inner::prepare`]) the new version of `path`, if `check` allows
    /// it, without the journal. In order: the file and its metadata to the disk; the row
    /// committed, quota included; the rename, which makes the version visible; the folder to
    /// the disk; a record that the journal's versions of the path are superseded. A failure
    /// before the rename leaves the old version as it was.
    fn finish<R>(
        &self,
        path: &ResourcePath,
        staged: Staged,
        check: impl FnOnce(Option<&Entry>) -> Result<(), R>,
    ) -> Result<Result<Put, R>, Error> {
        let mut ready = match self.prepare(path, staged, None, check)? {
            Ok(ready) => ready,
            Err(refusal) => return Ok(Err(refusal)),
        };
        // A fail point may panic in the commit. The row must not outlive a version that did
        // not become visible.
        let committed = std::panic::AssertUnwindSafe(|| self.db().put_row(ready.row.clone()));
        match std::panic::catch_unwind(committed) {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(over))) => return Err(Error::OverQuota(over)),
            Ok(Err(e)) => {
                self.revert(&ready.row);
                return Err(e.into());
            }
            Err(panic) => {
                self.revert(&ready.row);
                std::panic::resume_unwind(panic);
            }
        }
        if let Err(e) = ready.publish() {
            self.revert(&ready.row);
            return Err(e.into());
        }
        // Visible now: the row stays, matching the folder, even if the folder's sync fails
        // (the request then fails, and its outcome is unknown, as after a crash).
        sync_dir(&ready.parent)?;
        if let Some(journal) = &self.journal {
            journal.supersede(&ready.parent.key_of(ready.path.name()), false)?;
        }
        Ok(Ok(ready.put()))
    }

    /// Records `file` (see [`Inner::prepare`]), holding the small `body`, in the journal as
    /// the new version of `path`, if `check` allows it: neither the file nor the folder is
    /// synced. The journal's writer thread commits the row (with the rows of every version
    /// in the same flush: before it if a quota is to be checked, else behind it), flushes the
    /// record, makes the version visible and sends what came of it to `answer`. A failure
    /// sent there is for [`Inner::undo`].
    fn record<R>(
        &self,
        (journal, shared, absent): (&Arc<Journal>, Shared, bool),
        path: &ResourcePath,
        (staged, body): (Staged, &[Bytes]),
        check: impl FnOnce(Option<&Entry>) -> Result<(), R>,
        answer: tokio::sync::oneshot::Sender<Result<Put, Unsettled>>,
    ) -> Result<Result<Recorded, R>, Error> {
        let size = body.iter().map(|chunk| chunk.len() as u64).sum();
        let journaled = Some(Journaled { shared, size, absent });
        let ready = match self.prepare(path, staged, journaled, check)? {
            Ok(ready) => ready,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let at = ready.parent.key_of(ready.path.name());
        let meta = meta_value(&ready.row.meta);
        let row = ready.row.clone();
        let then = Box::new(move |outcome| drop(answer.send(ready.settle(outcome))));
        let ticket = journal.record(&at, meta.as_bytes(), body, row.clone(), then)?;
        Ok(Ok(Recorded { ticket, row }))
    }

    /// After a recorded version failed to become visible: its row reverted, its record
    /// cancelled.
    fn undo(&self, journal: &Arc<Journal>, Recorded { ticket, row }: Recorded) {
        self.revert(&row);
        if let Err(e) = journal.cancel(ticket) {
            tracing::error!("cannot cancel the journal's record of {}: {e}", row.path);
        }
    }

    /// Takes back the committed `row` of a version that did not become visible.
    fn revert(&self, row: &Row) {
        if let Err(revert) = self.db().revert_object(&row.path, row.fp, row.current) {
            tracing::error!("cannot revert the metadata of {}: {revert}", row.path);
        }
    }

    /// Rewrites a version the journal kept (from an earlier boot, or one the disk does not
    /// hold), with the usual syncs. Its row comes back from what it carries
    /// ([`Inner::recover_row`]).
    fn replay(&self, survivor: &Survivor) -> io::Result<()> {
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        let mut path = ResourcePath::root();
        let segments: Vec<&str> = survivor.key.trim_start_matches('/').split('/').collect();
        for (i, segment) in segments.iter().enumerate() {
            path = path
                .child(segment, i + 1 < segments.len())
                .map_err(|e| invalid(format!("a recorded path is invalid: {e}")))?;
        }
        let fail = |e: Error| match e {
            Error::Io(e) | Error::Body(e) => e,
            other => invalid(other.to_string()),
        };
        let parent = self.prepare_parent(&path, &Upload::default()).map_err(fail)?;
        let (mut temp, mut file) = self.open_new(&parent).map_err(fail)?;
        file.write_all(&survivor.body)?;
        carry_value(&file, &survivor.meta)?;
        file.sync_all()?;
        let replace = fs::symlink_metadata(parent.join(path.name())).is_ok();
        publish(&file, &mut temp, &parent, path.name(), replace)?;
        parent.sync()
    }

    /// Whether the file at `survivor`'s key is that version: its bytes and its metadata. A
    /// symlink there, or anything but a file, is not.
    fn holds_survivor(&self, survivor: &Survivor) -> io::Result<bool> {
        let segments: Vec<String> =
            survivor.key.trim_start_matches('/').split('/').map(str::to_owned).collect();
        let file = match self.tree.file(&segments) {
            Ok(file) => file,
            Err(e)
                if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) =>
            {
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() != survivor.body.len() as u64 {
            return Ok(false);
        }
        if read_all(&file, meta.len())? != survivor.body {
            return Ok(false);
        }
        let mut carried = vec![0; survivor.meta.len() + 1];
        let len = rustix::fs::fgetxattr(&file, META_ATTR, &mut carried[..]).unwrap_or(usize::MAX);
        Ok(carried.get(..len) == Some(&survivor.meta[..]))
    }

    /// Gives the file at `path` (under ROOT) its row back if it carries larder's metadata and
    /// has no row matching it. Returns whether it did.
    fn recover_row(&self, path: &Path) -> io::Result<bool> {
        let Some(key) = path.strip_prefix(&self.root).ok().and_then(|r| r.to_str()) else {
            return Ok(false);
        };
        let key = format!("/{key}");
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let fp = fingerprint(&meta);
        if !meta.is_file() || self.db().object(&key, fp)?.is_some() {
            return Ok(false);
        }
        let Some(carried) = carried_meta(path) else { return Ok(false) };
        let put = self.db().put_object(&key, fp, &carried, None, None)?;
        put.map_err(|_| io::Error::other("a recovered row went over no quota"))?;
        Ok(true)
    }

    /// Under `dir`, without following symlinks: removes temporary files; with `recover`,
    /// gives a row to every file carrying larder's metadata that has none matching it (a
    /// row a crash of the machine took; one naming an older version is replaced, as
    /// [`Inner::reconcile`] would). Returns how many rows it gave back.
    fn tidy(&self, dir: &Path, recover: bool) -> io::Result<usize> {
        let mut recovered = 0;
        for item in fs::read_dir(dir)? {
            let item = item?;
            let kind = item.file_type()?;
            let path = item.path();
            if self.is_reserved(&path) {
                continue;
            }
            let name = item.file_name();
            if name.to_string_lossy().starts_with(TEMP_PREFIX) {
                if kind.is_dir() {
                    fs::remove_dir_all(&path)?
                } else {
                    fs::remove_file(&path)?
                }
                continue;
            }
            let servable = name.to_str().is_some_and(is_servable_name);
            if kind.is_dir() {
                recovered += self.tidy(&path, recover && servable)?;
            } else if recover && servable && self.recover_row(&path)? {
                recovered += 1;
            }
        }
        Ok(recovered)
    }

    /// Makes the metadata agree with the folder (see [`crate::state::Sqlite::reconcile_objects`]).
    fn reconcile(&self) -> io::Result<()> {
        let on_disk = |key: &str| {
            let file = self.root.join(key.trim_start_matches('/'));
            fs::symlink_metadata(file).ok().filter(|m| m.is_file()).map(|m| fingerprint(&m))
        };
        let describe = |key: &str, fp| {
            let file = self.root.join(key.trim_start_matches('/'));
            // Changed or lost behind larder's back (a power cut): the ETag of its bytes.
            match carried_meta(&file) {
                Some(meta) => Described::Stored(meta),
                None => Described::Changed(etag_of_bytes(&file).unwrap_or(derived_etag(fp))),
            }
        };
        let changed = self.db().reconcile_objects(on_disk, describe)?;
        if changed > 0 {
            tracing::info!("reconciled {changed} metadata rows with the folder");
        }
        // Folders recorded but not there: a crash before their making, or a removal outside.
        let is_folder = |key: &str| {
            let segments: Vec<String> =
                key.trim_matches('/').split('/').map(str::to_owned).collect();
            self.tree.dir(&segments).is_ok()
        };
        let gone = self.db().reconcile_folders(is_folder)?;
        if gone > 0 {
            tracing::info!("forgot {gone} recorded folders that are not there");
        }
        Ok(())
    }
}

/// How a small version was written: recorded in the journal, or synced in place of that.
enum Written {
    Journaled(Recorded),
    Synced(Put),
}

/// Forgets what the cache holds about a path (`None`: everything) when dropped, so that a
/// write that fails or panics half-way cannot leave the cache serving what was there before
/// (found by the fault campaign: a failed folder sync after the rename, or a panic in a
/// delete, left the old bytes cached for up to the cache's TTL).
struct Forget<'a> {
    cache: &'a Cache,
    key: Option<String>,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        match &self.key {
            Some(key) => self.cache.invalidate(key),
            None => self.cache.clear(),
        }
    }
}

/// A new version's file until it is published: unnamed (`O_TMPFILE`: it vanishes by itself
/// if larder stops first) or, where the file system cannot do that, under a temporary name
/// that is removed unless published (and swept when the store opens after a crash).
struct Temp {
    /// The name, if it has one; in `dir`, which is held open so that the name means the
    /// same file until it goes.
    path: Option<(PathBuf, Dir)>,
}

impl Temp {
    fn unnamed() -> Temp {
        Temp { path: None }
    }

    fn named(dir: &Dir, path: PathBuf) -> Temp {
        Temp { path: Some((path, dir.clone())) }
    }
}

/// A new version checked and ready to become visible ([`Inner::prepare`]).
struct Ready {
    path: ResourcePath,
    /// Its metadata row.
    row: Row,
    /// The folder it goes in, held open.
    parent: Dir,
    temp: Temp,
    file: File,
    /// Whether it replaces a version.
    replace: bool,
    /// For a version in the journal: held until it is visible (dropped with it).
    _shared: Option<Shared>,
}

impl Ready {
    /// Makes the version visible (its folder is not synced).
    fn publish(&mut self) -> io::Result<()> {
        publish(&self.file, &mut self.temp, &self.parent, self.path.name(), self.replace)
    }

    /// After the journal settled the version with `outcome`: made visible, or why not.
    fn settle(mut self, outcome: Outcome) -> Result<Put, Unsettled> {
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(over)) => return Err(Unsettled::Refused(over)),
            Err(e) => return Err(Unsettled::Failed(e)),
        }
        self.publish().map_err(Unsettled::Failed)?;
        Ok(self.put())
    }

    /// What the write answers, once the version is visible.
    fn put(self) -> Put {
        let Row { fp, meta: ObjectMeta { etag, content_type, owner }, .. } = self.row;
        let entry = Entry {
            kind: Kind::Resource,
            size: fp.size,
            modified: std::time::UNIX_EPOCH
                + std::time::Duration::from_nanos(fp.mtime_ns.max(0) as u64),
            etag: Some(etag),
            content_type: Some(content_type.unwrap_or_else(|| guess_type(self.path.name()))),
            owner,
            path: self.path,
        };
        Put { entry, created: !self.replace }
    }
}

/// Why a version recorded in the journal did not become visible.
enum Unsettled {
    /// Its row was refused (the quota), and its record cancelled in its flush.
    Refused(OverQuota),
    /// Its row may be committed and its record not cancelled ([`Inner::undo`]).
    Failed(io::Error),
}

/// A whole new body in a temporary file `temp` in `parent`, with its ETag and the upload's
/// metadata: what may become a path's new version once checked.
struct Staged {
    parent: Dir,
    temp: Temp,
    file: File,
    etag: String,
    upload: Upload,
}

impl Staged {
    fn of((parent, temp, file): (Dir, Temp, File), etag: String, upload: Upload) -> Staged {
        Staged { parent, temp, file, etag, upload }
    }
}

/// What [`Inner::prepare`] is told of a version going to the journal.
struct Journaled {
    /// The journal's gate, held until the version is visible.
    shared: Shared,
    /// The body's length.
    size: u64,
    /// Whether the caller found no version at the path, under its lock: none is looked for.
    absent: bool,
}

/// A version recorded in the journal: its ticket and its row.
struct Recorded {
    ticket: u64,
    row: Row,
}

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some((path, _dir)) = &self.path {
            let _ = fs::remove_file(path);
        }
    }
}

/// The journal's rows go to the embedded database.
struct StateRows(Arc<State>);

impl Rows for StateRows {
    fn commit(&self, rows: &[&Row]) -> Vec<Outcome> {
        sqlite(&self.0).put_objects(rows)
    }

    fn behind(&self, rows: Vec<Row>) {
        sqlite(&self.0).put_behind(rows);
    }

    fn caught_up(&self) -> bool {
        sqlite(&self.0).caught_up()
    }
}

/// The store's state database.
fn sqlite(state: &State) -> &Sqlite {
    state.sqlite().expect("FileStore::open checked that the state is SQLite")
}

/// Whether `linkat` may name an unnamed file by its descriptor (`AT_EMPTY_PATH`): Linux
/// allows it from 6.10 to whoever opened the file, before that only with
/// `CAP_DAC_READ_SEARCH`. Cleared at the first refusal.
static EMPTY_PATH_LINKS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Gives the unnamed `file` the name `to`: by its descriptor where the kernel allows it,
/// else through `/proc/self/fd` (a lookup in procfs, about a third of the link's cost).
fn link_unnamed(file: &File, to: &Path) -> rustix::io::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    if EMPTY_PATH_LINKS.load(Relaxed) {
        match rustix::fs::linkat(file, "", CWD, to, AtFlags::EMPTY_PATH) {
            Err(Errno::NOENT | Errno::PERM | Errno::INVAL) => {}
            done => return done,
        }
    }
    let unnamed = format!("/proc/self/fd/{}", file.as_raw_fd());
    let linked = rustix::fs::linkat(CWD, &unnamed, CWD, to, AtFlags::SYMLINK_FOLLOW);
    if linked.is_ok() {
        // The descriptor was refused, its name was not: so it is the kernel's rule.
        EMPTY_PATH_LINKS.store(false, Relaxed);
    }
    linked
}

/// A temporary name in `dir`.
fn temp_name(dir: &Path) -> PathBuf {
    dir.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()))
}

/// Makes `file`, the new version's file that `temp` tracks, visible as `name` in `dir`:
/// linked there if nothing was (`replace` false), else linked under a temporary name in the
/// folder and renamed over what is there.
fn publish(file: &File, temp: &mut Temp, dir: &Dir, name: &str, replace: bool) -> io::Result<()> {
    let target = dir.join(name);
    if temp.path.is_none() {
        let link = |to: &Path| link_unnamed(file, to);
        if !replace {
            match link(&target) {
                Ok(()) => return Ok(()),
                Err(Errno::EXIST) => {} // put there by hand meanwhile: renamed over, below
                Err(e) => return Err(e.into()),
            }
        }
        let named = temp_name(dir);
        link(&named)?;
        *temp = Temp::named(dir, named);
    }
    if let Some((named, _)) = &temp.path {
        fs::rename(named, &target)?;
        temp.path = None;
    }
    Ok(())
}

/// `len` bytes of `handle` from `start`. A large file's chunks are sent as they are: sent
/// from the file instead (offered, as cached content is), they went 23-37% slower
/// (docs/performance.md, 2026-12-07).
fn content(handle: &Handle, start: u64, len: u64) -> Result<ByteStream, Error> {
    fail::fail_point!("store-read", |arg| Err(Error::Io(super::injected(arg))));
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
