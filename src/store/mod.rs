//! Resources: bytes and their metadata, behind the [`Store`] trait. [`FileStore`] keeps them
//! in a folder (with metadata in the embedded [`crate::state`] database); [`BucketStore`] in
//! an S3-compatible bucket, named in PostgreSQL, shared by any number of nodes.
//!
//! Contract every backend keeps:
//! - `open` returns one version: its metadata and a handle whose bytes are exactly that
//!   version's, however many writes happen meanwhile.
//! - `put` answers only once the bytes and metadata are durable; readers see the old version
//!   or the new one, never a mix; a failed or cut-off upload leaves the old version as it was.
//! - The `check` given to a write runs under the path's lock with the current entry, just
//!   before the write is made visible, so a check-then-write is atomic.

pub mod bucket;
mod cache;
mod chunks;
mod dirsync;
mod file;
mod journal;
mod lock;
pub mod offer;
mod resolve;
mod spool;
pub mod text;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;

use crate::path::ResourcePath;

pub use bucket::BucketStore;
pub use file::FileStore;

/// A stream of bytes: a resource's content, or a request body on its way in.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// A resource or a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A file.
    Resource,
    /// A folder.
    Collection,
}

/// What a store knows about one version of a resource or collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path, in the form its kind asks for (`/docs/` for a collection).
    pub path: ResourcePath,
    /// Resource or collection.
    pub kind: Kind,
    /// Length in bytes (0 for collections).
    pub size: u64,
    /// Last modification.
    pub modified: SystemTime,
    /// The strong entity tag's opaque value, without quotes (resources only).
    pub etag: Option<String>,
    /// The media type: as stored by PUT, else guessed from the name (resources only).
    pub content_type: Option<String>,
    /// The account that created it, if larder knows.
    pub owner: Option<String>,
}

impl Entry {
    /// The collection at `path` (named in collection form), last changed at `modified`.
    pub fn collection(path: &ResourcePath, modified: SystemTime) -> Entry {
        Entry {
            path: path.with_collection(true),
            kind: Kind::Collection,
            size: 0,
            modified,
            etag: None,
            content_type: None,
            owner: None,
        }
    }

    /// True for collections.
    pub fn is_collection(&self) -> bool {
        self.kind == Kind::Collection
    }
}

/// Quotas by account: the bytes each account's own resources may occupy, and how many.
pub type Quotas = std::sync::Arc<std::collections::BTreeMap<String, crate::state::Quota>>;

/// What a write records besides the bytes.
#[derive(Debug, Clone, Default)]
pub struct Upload {
    /// The Content-Type the client sent.
    pub content_type: Option<String>,
    /// The account writing; it becomes the owner of a new resource, and of the collections
    /// made for it.
    pub owner: Option<String>,
    /// The quotas to hold the resource's owner to (checked atomically with the write).
    pub quotas: Quotas,
    /// For a text type without a charset: whether the bytes turn out to be UTF-8.
    pub text: Option<std::sync::Arc<text::Utf8Check>>,
}

impl Upload {
    /// The type to record once the body is in: as given, or the checked text type with
    /// `charset=utf-8` when its bytes are UTF-8.
    pub fn stored_type(&self) -> Option<String> {
        match &self.text {
            Some(check) if check.is_utf8() => Some(format!("{}; charset=utf-8", check.media)),
            _ => self.content_type.clone(),
        }
    }
}

/// The result of a write.
#[derive(Debug, Clone)]
pub struct Put {
    /// The entry as now stored.
    pub entry: Entry,
    /// True if nothing was at the path before.
    pub created: bool,
}

/// Why a store operation failed. Domain terms only: the HTTP layer picks the status.
#[derive(Debug)]
pub enum Error {
    /// Nothing there (or nothing inside the served tree).
    NotFound,
    /// A resource where a collection is needed, or the reverse.
    Conflict(String),
    /// A collection that still has members.
    NotEmpty,
    /// The disk is full.
    NoSpace,
    /// The write would take its owner past the quota.
    OverQuota(crate::state::OverQuota),
    /// A name the file system refuses.
    Invalid(String),
    /// The database or the bucket cannot be reached, or did not answer in time.
    Unavailable(&'static str),
    /// This store cannot do this in one step (a rename across file systems): the caller does
    /// it another way.
    Unsupported,
    /// The request body failed while being read (client gone, or too large).
    Body(io::Error),
    /// Anything else: the server failed.
    Io(io::Error),
}

impl Error {
    /// Classifies an I/O error from the file system.
    pub fn from_io(error: io::Error) -> Error {
        use io::ErrorKind::*;
        if let Some(over) =
            error.get_ref().and_then(|e| e.downcast_ref::<crate::state::OverQuota>())
        {
            return Error::OverQuota(*over);
        }
        if let Some(down) = crate::state::Unavailable::of(&error) {
            tracing::warn!("{down}");
            return Error::Unavailable(down.dependency);
        }
        match error.kind() {
            NotFound => Error::NotFound,
            NotADirectory => {
                Error::Conflict("a resource stands where a collection is needed".into())
            }
            IsADirectory => {
                Error::Conflict("a collection stands where a resource is needed".into())
            }
            DirectoryNotEmpty => Error::NotEmpty,
            StorageFull | QuotaExceeded => Error::NoSpace,
            InvalidFilename => Error::Invalid("the file system refuses this name".into()),
            _ => Error::Io(error),
        }
    }
}

impl From<io::Error> for Error {
    fn from(error: io::Error) -> Self {
        Error::from_io(error)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotFound => f.write_str("not found"),
            Error::Conflict(why) | Error::Invalid(why) => f.write_str(why),
            Error::NotEmpty => f.write_str("the collection is not empty"),
            Error::NoSpace => f.write_str("no space left on the device"),
            Error::Unavailable(what) => write!(f, "the {what} is unavailable"),
            Error::Unsupported => f.write_str("not possible in one step here"),
            Error::OverQuota(over) => write!(f, "{over}"),
            Error::Body(e) => write!(f, "request body: {e}"),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Whether the fail point `name` is set (in a build with `failpoints`; never otherwise), to
/// simulate what the tests cannot count on finding: a file system without user extended
/// attributes (`fs-no-xattrs`), `O_TMPFILE` (`fs-no-tmpfile`), `O_DIRECT` (`fs-no-direct`) or
/// `/proc/self/fd` (`fs-no-proc`), so each fallback is tested on purpose; a journal that
/// checkpoints every MiB (`journal-small-segments`).
pub(crate) fn simulated(name: &str) -> bool {
    #[cfg(feature = "failpoints")]
    return fail::eval(name, |_| ()).is_some();
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        false
    }
}

/// An error a fail point injects: `return(enospc)` simulates a full disk.
pub fn injected(arg: Option<String>) -> io::Error {
    match arg.as_deref() {
        Some("enospc") => io::Error::new(io::ErrorKind::StorageFull, "fail point: no space"),
        _ => io::Error::other("fail point: injected I/O error"),
    }
}

/// The first bytes of an upload, gathered in memory up to just past a limit.
pub(crate) struct Head {
    /// The chunks, in order.
    pub chunks: Vec<Bytes>,
    /// Their total length.
    pub len: usize,
    /// True if the body goes on past them.
    pub more: bool,
    /// BLAKE3 of the bytes so far (the ETag, once the body is done). BLAKE3, not SHA-256: 3×
    /// faster here (SHA-256 took 58 ms of a 100 MiB upload); an ETag only has to change
    /// when the bytes do.
    pub hasher: blake3::Hasher,
}

/// Reads `body` until it ends or more than `limit` bytes have come.
pub(crate) async fn gather(body: &mut ByteStream, limit: usize) -> Result<Head, Error> {
    use futures_util::StreamExt;
    let mut head = Head { chunks: Vec::new(), len: 0, more: false, hasher: blake3::Hasher::new() };
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(Error::Body)?;
        fail::fail_point!("store-write", |arg| Err(Error::from_io(injected(arg))));
        head.hasher.update(&chunk);
        head.len += chunk.len();
        head.chunks.push(chunk);
        if head.len > limit {
            head.more = true;
            break;
        }
    }
    Ok(head)
}

/// The ETag's opaque value for hashed bytes: the first 16 bytes of the BLAKE3 hash, in hex.
pub(crate) fn etag_of(hasher: &blake3::Hasher) -> String {
    hex(&hasher.finalize().as_bytes()[..16])
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The media type a name suggests, `application/octet-stream` if none.
pub fn guess_type(name: &str) -> String {
    mime_guess::from_path(name).first_raw().unwrap_or("application/octet-stream").to_owned()
}

/// What [`Store::open`] finds: the entry and, for a resource, a handle to its bytes.
pub type Opened<H> = Option<(Entry, Option<H>)>;

/// A storage backend.
pub trait Store: Send + Sync + 'static {
    /// An opened version of a resource.
    type Handle: Send + Sync + 'static;

    /// The entry at `path` (whatever its kind, whatever the form of `path`), with a handle
    /// to its bytes for resources; `None` if nothing is there.
    fn open(
        &self,
        path: &ResourcePath,
    ) -> impl Future<Output = Result<Opened<Self::Handle>, Error>> + Send;

    /// Where `path` leads once the symlinks on its way are followed, when that is elsewhere
    /// beneath the store's root (`None`: nowhere else, or a store without symlinks). Only
    /// the part of `path` that exists is followed; the rest is appended. A symlink that
    /// leaves the root (or is absolute) leads nowhere: `NotFound`. Every other operation
    /// follows no symlink, so what this returns is what they act on.
    fn canonical(
        &self,
        _path: &ResourcePath,
    ) -> impl Future<Output = Result<Option<ResourcePath>, Error>> + Send {
        async { Ok(None) }
    }

    /// The whole opened version, when the store holds it in memory (small hot files): served
    /// as it is, without a stream.
    fn in_memory(&self, _handle: &Self::Handle) -> Option<Bytes> {
        None
    }

    /// `len` bytes of the opened version from `start`.
    fn read(
        &self,
        handle: &Self::Handle,
        start: u64,
        len: u64,
    ) -> impl Future<Output = Result<ByteStream, Error>> + Send;

    /// The members of the collection at `path`, sorted by name.
    fn list(
        &self,
        path: &ResourcePath,
    ) -> impl Future<Output = Result<std::sync::Arc<Vec<Entry>>, Error>> + Send;

    /// Stores `body` at `path`, creating missing parent collections. `check` sees the current
    /// entry under the path's lock; if it refuses, nothing changes and its refusal is returned.
    fn put<R: Send + 'static>(
        &self,
        path: &ResourcePath,
        upload: Upload,
        body: ByteStream,
        check: impl FnOnce(Option<&Entry>) -> Result<(), R> + Send + 'static,
    ) -> impl Future<Output = Result<Result<Put, R>, Error>> + Send;

    /// Makes the collection at `path` (and missing parents); an existing one is kept. Those
    /// made belong to `upload.owner`, and count among its resources (refused past its quota).
    fn create_collection<R: Send + 'static>(
        &self,
        path: &ResourcePath,
        upload: Upload,
        check: impl FnOnce(Option<&Entry>) -> Result<(), R> + Send + 'static,
    ) -> impl Future<Output = Result<Result<Put, R>, Error>> + Send;

    /// Whether the store can serve: `Unavailable` when what it stores in (the bucket)
    /// cannot be reached. A folder is always there.
    fn ready(&self) -> impl Future<Output = Result<(), Error>> + Send {
        async { Ok(()) }
    }

    /// Leaves nothing for the next start to recover (the server has stopped): what is
    /// acknowledged is made durable where it belongs. A stop without this (a crash) loses
    /// nothing either; the next start takes longer.
    fn close(&self) -> impl Future<Output = io::Result<()>> + Send {
        async { Ok(()) }
    }

    /// Moves the resource or collection at `from` to `to` (named in `from`'s form), with its
    /// owners, types and dead properties; `to`'s parent must exist (else `Conflict`). A
    /// resource at `to` is replaced atomically; any other thing there is a `Conflict` (the
    /// caller removes it first). `check` sees both entries under both paths' locks. Durable
    /// before it returns: after a crash the tree is at `from` or at `to`, whole.
    /// `Unsupported` where it cannot be one step (the caller copies, then deletes).
    fn rename<R: Send + 'static>(
        &self,
        _from: &ResourcePath,
        _to: &ResourcePath,
        _check: impl FnOnce(&Entry, Option<&Entry>) -> Result<(), R> + Send + 'static,
    ) -> impl Future<Output = Result<Result<Put, R>, Error>> + Send {
        async { Err(Error::Unsupported) }
    }

    /// Makes at `to` (a collection that must not exist, in an existing parent) a copy of the
    /// tree `plan` lists: each source entry with where it goes, the root first and every
    /// collection before its members. The copies belong to `upload.owner`, within its quota,
    /// and keep their sources' types. All or nothing: made beside `to` under a temporary
    /// name, synced, recorded, then renamed into place, so a failure or a crash leaves none
    /// of it. `Unsupported` where the store cannot (the caller copies one by one).
    fn copy_tree(
        &self,
        _plan: Vec<(Entry, ResourcePath)>,
        _upload: Upload,
    ) -> impl Future<Output = Result<Put, Error>> + Send {
        async { Err(Error::Unsupported) }
    }

    /// Removes the resource or collection at `path`; a collection with members only when
    /// `recursive`.
    fn delete<R: Send + 'static>(
        &self,
        path: &ResourcePath,
        recursive: bool,
        check: impl FnOnce(Option<&Entry>) -> Result<(), R> + Send + 'static,
    ) -> impl Future<Output = Result<Result<(), R>, Error>> + Send;
}
