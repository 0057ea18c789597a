//! [`BucketStore`]: resources as immutable blobs in an S3-compatible bucket, named by a
//! namespace in PostgreSQL ([`crate::state::pg`]), so any number of nodes can share both.
//!
//! A write uploads its bytes to a new blob (`PREFIX/blobs/<random>`; a multipart upload past
//! [`PART`]), registered as pending first; then one PostgreSQL transaction takes the path's
//! turn, runs the caller's check on the current row, holds the owner to the quota and points
//! the path at the new blob. Only that commit makes the version visible, on every node at
//! once; a refused or failed write deletes its blob, and a node killed mid-upload leaves a
//! pending blob that a later sweep deletes. The replaced blob stays readable for
//! [`crate::state::namespace::BLOB_GRACE`], so a read that opened it can finish.
//!
//! Caches: none for names or metadata (every request asks the database, so a write on any
//! node is seen by the next request anywhere). Bytes of blobs up to [`CACHED_BLOB`] are kept
//! by blob name: a blob never changes once written, so a cached one cannot be stale.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as BlobPath;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload, WriteMultipart};

use super::{
    ByteStream, Entry, Error, Head, Kind, Opened, Put, Store, Upload, etag_of, gather, guess_type,
};
use crate::config::BucketAt;
use crate::path::ResourcePath;
use crate::state::namespace::{Failed, NewVersion, Refused, Row};
use crate::state::{Postgres, State};

/// Bodies up to this size go up in one request; larger ones as a multipart upload of parts of
/// this size, at most [`PARTS_IN_FLIGHT`] at once (so an upload holds at most 16 MiB).
pub const PART: usize = 8 * 1024 * 1024;
const PARTS_IN_FLIGHT: usize = 2;
/// Blobs up to this size are cached whole, by name.
pub const CACHED_BLOB: u64 = 1024 * 1024;
/// The cache's budget.
const CACHE_BUDGET: usize = 128 * 1024 * 1024;
/// How often each node looks for blobs due for deletion.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Connects to the bucket with the usual `AWS_*` variables (`AWS_ENDPOINT_URL`,
/// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...). An `http://` endpoint
/// is allowed as given.
pub fn connect(at: &BucketAt) -> io::Result<Arc<dyn ObjectStore>> {
    let plain_http = std::env::var("AWS_ENDPOINT_URL")
        .or_else(|_| std::env::var("AWS_ENDPOINT"))
        .is_ok_and(|e| e.starts_with("http://"));
    // A bucket that does not answer costs a request at most a few seconds: three tries
    // within 3 s (object_store's default is ten within 3 minutes), each connect within 5 s.
    let retry = object_store::RetryConfig {
        max_retries: 2,
        retry_timeout: std::time::Duration::from_secs(3),
        ..Default::default()
    };
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(&at.bucket).with_retry(retry);
    if plain_http {
        builder = builder.with_allow_http(true);
    }
    let bucket = builder.build().map_err(io::Error::other)?;
    Ok(Arc::new(bucket))
}

/// Tries the bucket once, at start and for `larder check`: a small write, then its removal
/// (a read alone would take a missing bucket's "not found" for an answer, and would not try
/// the right to write). The error names the bucket, its endpoint, what went wrong and the
/// `AWS_*` variables that are unset.
pub async fn check(bucket: &dyn ObjectStore, at: &BucketAt) -> io::Result<()> {
    let probe = BlobPath::from(format!("{}/start-probe", at.prefix));
    let limit = crate::state::dependency_timeout();
    let tried = async {
        bucket.put(&probe, Bytes::from_static(b"larder").into()).await?;
        bucket.delete(&probe).await
    };
    let cause = match tokio::time::timeout(limit, tried).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => crate::state::described(&e),
        Err(_) => format!("no answer within {limit:?} (dependency_timeout)"),
    };
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let endpoint = var("AWS_ENDPOINT_URL")
        .or_else(|| var("AWS_ENDPOINT"))
        .unwrap_or_else(|| "AWS S3 itself (AWS_ENDPOINT_URL is unset)".into());
    let unset: Vec<&str> = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"]
        .into_iter()
        .filter(|name| var(name).is_none())
        .collect();
    let unset = match unset.is_empty() {
        true => String::new(),
        false => format!(" (unset: {})", unset.join(", ")),
    };
    Err(io::Error::other(format!("the bucket {at} at {endpoint}{unset}: {cause}")))
}

/// Resources in a bucket, named in PostgreSQL.
pub struct BucketStore {
    inner: Arc<Inner>,
}

struct Inner {
    bucket: Arc<dyn ObjectStore>,
    prefix: String,
    state: Arc<State>,
    cache: BlobCache,
}

/// An opened version: its blob.
pub struct Handle {
    blob: String,
    size: u64,
}

/// Blob bytes by blob name, oldest out first.
#[derive(Default)]
struct BlobCache {
    held: Mutex<(HashMap<String, Bytes>, VecDeque<String>, usize)>,
}

impl BlobCache {
    fn get(&self, blob: &str) -> Option<Bytes> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).0.get(blob).cloned()
    }

    fn put(&self, blob: &str, bytes: Bytes) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order, size) = &mut *held;
        if map.insert(blob.to_owned(), bytes.clone()).is_none() {
            order.push_back(blob.to_owned());
            *size += bytes.len();
        }
        while *size > CACHE_BUDGET {
            let Some(old) = order.pop_front() else { break };
            if let Some(gone) = map.remove(&old) {
                *size -= gone.len();
            }
        }
    }
}

/// The namespace key of `path`: no trailing slash (`/` for the root).
fn key_of(path: &ResourcePath) -> String {
    path.with_collection(false).as_key()
}

/// The entry a namespace row describes, named as `path` (any form).
fn entry_of(path: &ResourcePath, row: &Row) -> Entry {
    let modified = UNIX_EPOCH + Duration::from_nanos(row.modified_ns.max(0) as u64);
    if row.collection {
        return Entry { owner: row.owner.clone(), ..Entry::collection(path, modified) };
    }
    Entry {
        path: path.with_collection(false),
        kind: Kind::Resource,
        size: row.size,
        modified,
        etag: row.etag.clone(),
        content_type: Some(row.content_type.clone().unwrap_or_else(|| guess_type(path.name()))),
        owner: row.owner.clone(),
    }
}

fn bucket_error(e: object_store::Error) -> Error {
    if unreachable(&e) {
        tracing::warn!("the bucket is unavailable: {e}");
        return Error::Unavailable("bucket");
    }
    Error::Io(io::Error::other(e))
}

/// `call` to the bucket, given up as unavailable past the dependency timeout (a frozen
/// bucket accepts connections and never answers); its own answer, whatever it is, otherwise.
async fn within<T>(
    call: impl Future<Output = Result<T, object_store::Error>>,
) -> Result<Result<T, object_store::Error>, Error> {
    tokio::time::timeout(crate::state::dependency_timeout(), call).await.map_err(|_| {
        tracing::warn!("the bucket is unavailable: no answer in time");
        Error::Unavailable("bucket")
    })
}

/// [`within`], its errors in the store's terms.
async fn in_time<T>(
    call: impl Future<Output = Result<T, object_store::Error>>,
) -> Result<T, Error> {
    within(call).await?.map_err(bucket_error)
}

/// `body` with each chunk bounded by the dependency timeout: a bucket that stops sending
/// ends the body with an error (the client sees the response cut short, never a hang).
///
/// Read on demand, not ahead: a task reading ahead of the client into a queue cost 0.7 ms
/// of CPU per 4 MiB GET and 13% of the throughput (docs/performance.md): reading whenever
/// a little has arrived takes the bytes in smaller pieces than reading when the client has
/// room, by which time the socket holds more.
fn bounded(
    body: futures_util::stream::BoxStream<'static, object_store::Result<Bytes>>,
) -> ByteStream {
    Box::pin(futures_util::stream::unfold(Some(body), |body| async move {
        let mut body = body?;
        let next = tokio::time::timeout(crate::state::dependency_timeout(), body.next());
        match next.await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
            Ok(Some(Err(e))) => Some((Err(io::Error::other(e)), None)),
            Ok(None) => None,
            Err(_) => {
                let stalled = crate::state::Unavailable::error("bucket", "the body stalled");
                Some((Err(stalled), None))
            }
        }
    }))
}

/// Whether `e` says the bucket could not be reached or did not answer (in time): a failed
/// connection, request or timeout (after the client's retries), or a 5xx answer.
fn unreachable(e: &object_store::Error) -> bool {
    use io::ErrorKind as Io;
    use object_store::client::{HttpError, HttpErrorKind as Kind};
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = source {
        if let Some(http) = error.downcast_ref::<HttpError>() {
            return matches!(
                http.kind(),
                Kind::Connect | Kind::Request | Kind::Timeout | Kind::Interrupted
            );
        }
        // What the HTTP client met on the wire (object_store's error type between, which
        // says Connect or Timeout, is not public).
        if let Some(io) = error.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                Io::ConnectionRefused
                    | Io::ConnectionReset
                    | Io::ConnectionAborted
                    | Io::NotConnected
                    | Io::BrokenPipe
                    | Io::TimedOut
                    | Io::UnexpectedEof
                    | Io::HostUnreachable
                    | Io::NetworkUnreachable
                    | Io::AddrNotAvailable
            );
        }
        let text = error.to_string();
        if text.starts_with("Server returned non-2xx status code: 5") || text.contains("timed out")
        {
            return true;
        }
        source = error.source();
    }
    false
}

/// Runs blocking database work off the async workers; a panic in it stays a panic. Work
/// that PostgreSQL does not finish within [`crate::state::dependency_timeout`] (a frozen
/// server) is given up as unavailable; its thread ends when the server answers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    let task = tokio::task::spawn_blocking(work);
    match tokio::time::timeout(crate::state::dependency_timeout(), task).await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(Err(e)) => panic!("blocking task cancelled: {e}"),
        Err(_) => Err(crate::state::Unavailable::error("database", "no answer in time")),
    }
}

/// What a refused namespace change gives the caller: the check's refusal, or an error.
fn refusal<R>(failed: Failed<R>) -> Result<R, Error> {
    match failed {
        Failed::Check(refusal) => Ok(refusal),
        Failed::Refused(Refused::NotFound) => Err(Error::NotFound),
        Failed::Refused(Refused::Conflict(why)) => Err(Error::Conflict(why)),
        Failed::Refused(Refused::NotEmpty) => Err(Error::NotEmpty),
        Failed::Refused(Refused::OverQuota(over)) => Err(Error::OverQuota(over)),
        Failed::Io(e) => Err(Error::from_io(e)),
    }
}

/// A namespace change's outcome as the [`Store`] trait gives it.
fn outcome<T, R>(result: Result<T, Failed<R>>) -> Result<Result<T, R>, Error> {
    match result {
        Ok(done) => Ok(Ok(done)),
        Err(failed) => refusal(failed).map(Err),
    }
}

/// An uploaded blob not yet committed. A refused or failed write discards it before
/// answering; if the request is dropped instead, dropping this discards it in the background.
struct Pending {
    inner: Arc<Inner>,
    blob: String,
    armed: bool,
}

impl Pending {
    /// Deletes the blob and forgets the upload (or dooms the blob, if it cannot be deleted).
    async fn discard(mut self) {
        self.armed = false;
        discard(self.inner.clone(), self.blob.clone()).await;
    }
}

async fn discard(inner: Arc<Inner>, blob: String) {
    let deleted = in_time(inner.bucket.delete(&BlobPath::from(blob.as_str()))).await.is_ok();
    let forgotten =
        blocking(move || inner.db().abandon_upload(&blob, deleted)).await.and_then(|r| r);
    if let Err(e) = forgotten {
        tracing::warn!("an abandoned upload stays pending until the sweep: {e}");
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.armed
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(discard(self.inner.clone(), self.blob.clone()));
        }
    }
}

impl Inner {
    /// The shared database, which [`BucketStore::open`] made sure the state is.
    fn db(&self) -> &Postgres {
        self.state.postgres().expect("BucketStore::open checked that the state is PostgreSQL")
    }

    fn new_blob(&self) -> String {
        let name = format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
        match self.prefix.is_empty() {
            true => format!("blobs/{name}"),
            false => format!("{}/blobs/{name}", self.prefix),
        }
    }

    /// Deletes the blobs that are due, in batches; returns how many went.
    async fn sweep(self: &Arc<Self>) -> io::Result<usize> {
        let mut total = 0;
        loop {
            let inner = self.clone();
            let due = blocking(move || inner.db().claim_blobs(256)).await??;
            if due.is_empty() {
                return Ok(total);
            }
            let mut gone = Vec::with_capacity(due.len());
            for blob in due {
                match self.bucket.delete(&BlobPath::from(blob.as_str())).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => gone.push(blob),
                    Err(e) => tracing::warn!("cannot delete blob {blob}; retried later: {e}"),
                }
            }
            total += gone.len();
            let inner = self.clone();
            let stuck = gone.is_empty();
            blocking(move || inner.db().forget_blobs(&gone)).await??;
            if stuck {
                return Ok(total);
            }
        }
    }

    /// Uploads `body` to `blob`: one request if it fits in a part, else a multipart upload.
    /// Returns its size and BLAKE3 ETag.
    async fn upload(&self, blob: &str, mut body: ByteStream) -> Result<(u64, String), Error> {
        let location = BlobPath::from(blob);
        let Head { chunks: head, len: gathered, more, mut hasher } =
            gather(&mut body, PART).await?;
        if !more {
            let payload: PutPayload = head.into_iter().collect();
            in_time(self.bucket.put(&location, payload)).await?;
            return Ok((gathered as u64, etag_of(&hasher)));
        }
        let upload = in_time(self.bucket.put_multipart(&location)).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let streamed = async {
            for chunk in head {
                writer.write(&chunk);
            }
            let mut size = gathered as u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(Error::Body)?;
                fail::fail_point!("store-write", |arg| Err(Error::from_io(super::injected(arg))));
                hasher.update(&chunk);
                size += chunk.len() as u64;
                in_time(writer.wait_for_capacity(PARTS_IN_FLIGHT)).await?;
                writer.write(&chunk);
            }
            Ok(size)
        }
        .await;
        match streamed {
            Ok(size) => {
                in_time(writer.finish()).await?;
                Ok((size, etag_of(&hasher)))
            }
            Err(e) => {
                if let Err(abort) = in_time(writer.abort()).await {
                    tracing::warn!("cannot abort the multipart upload of {blob}: {abort}");
                }
                Err(e)
            }
        }
    }
}

impl BucketStore {
    /// Opens the store on `bucket` under `prefix`, named in `state` (which must be
    /// PostgreSQL), and starts the node's sweep of doomed blobs.
    pub fn open(
        bucket: Arc<dyn ObjectStore>,
        prefix: &str,
        state: Arc<State>,
    ) -> io::Result<BucketStore> {
        if state.postgres().is_none() {
            let problem = "the bucket store keeps its namespace in PostgreSQL";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, problem));
        }
        let inner = Arc::new(Inner {
            bucket,
            prefix: prefix.trim_matches('/').to_owned(),
            state,
            cache: BlobCache::default(),
        });
        let weak = Arc::downgrade(&inner);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut every = tokio::time::interval(SWEEP_EVERY);
                loop {
                    every.tick().await;
                    let Some(inner) = weak.upgrade() else { return };
                    match inner.sweep().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!("deleted {n} blobs no longer named"),
                        Err(e) => tracing::warn!("blob sweep: {e}"),
                    }
                }
            });
        }
        Ok(BucketStore { inner })
    }

    /// Deletes now every blob that is due (what each node does every minute).
    pub async fn sweep(&self) -> io::Result<usize> {
        self.inner.sweep().await
    }

    /// Stores `body` as the resource `entry` describes, keeping its ETag, type, owner and
    /// time (`larder migrate`); a collection `entry` is made with no body.
    pub async fn import(&self, entry: &Entry, body: Option<ByteStream>) -> Result<(), Error> {
        let modified_ns = entry
            .modified
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64);
        let mut row = Row {
            path: key_of(&entry.path),
            collection: entry.is_collection(),
            size: entry.size,
            modified_ns,
            etag: entry.etag.clone(),
            content_type: entry.content_type.clone(),
            owner: entry.owner.clone(),
            blob: None,
        };
        if let Some(body) = body {
            let blob = self.inner.new_blob();
            let (inner, registered) = (self.inner.clone(), blob.clone());
            blocking(move || inner.db().begin_upload(&registered)).await??;
            let mut pending =
                Pending { inner: self.inner.clone(), blob: blob.clone(), armed: true };
            let (size, _) = self.inner.upload(&blob, body).await?;
            if size != entry.size {
                let problem = format!("{}: read {size} bytes, expected {}", entry.path, entry.size);
                return Err(Error::Io(io::Error::other(problem)));
            }
            // From here the import may commit: a failure leaves the blob pending (see `put`).
            pending.armed = false;
            row.blob = Some(blob);
        }
        let inner = self.inner.clone();
        blocking(move || inner.db().import_entry(&row)).await??;
        Ok(())
    }
}

impl Store for BucketStore {
    type Handle = Handle;

    async fn open(&self, path: &ResourcePath) -> Result<Opened<Handle>, Error> {
        fail::fail_point!("store-read", |arg| Err(Error::Io(super::injected(arg))));
        let (inner, key) = (self.inner.clone(), key_of(path));
        let Some(row) = blocking(move || inner.db().entry(&key)).await?? else {
            return Ok(None);
        };
        let entry = entry_of(path, &row);
        let handle = match (row.collection, row.blob) {
            (false, Some(blob)) => Some(Handle { blob, size: row.size }),
            _ => None,
        };
        Ok(Some((entry, handle)))
    }

    async fn read(&self, handle: &Handle, start: u64, len: u64) -> Result<ByteStream, Error> {
        fail::fail_point!("store-read", |arg| Err(Error::Io(super::injected(arg))));
        let end = start.saturating_add(len).min(handle.size);
        if start >= end {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        let location = BlobPath::from(handle.blob.as_str());
        if handle.size <= CACHED_BLOB {
            let bytes = match self.inner.cache.get(&handle.blob) {
                Some(bytes) => bytes,
                None => {
                    let got = in_time(self.inner.bucket.get(&location)).await?;
                    let bytes = in_time(got.bytes()).await?;
                    if bytes.len() as u64 != handle.size {
                        let problem = format!("blob {} is not its recorded size", handle.blob);
                        return Err(Error::Io(io::Error::other(problem)));
                    }
                    self.inner.cache.put(&handle.blob, bytes.clone());
                    bytes
                }
            };
            let slice = bytes.slice(start as usize..end as usize);
            return Ok(Box::pin(futures_util::stream::once(async move { Ok(slice) })));
        }
        let options =
            GetOptions { range: Some(GetRange::Bounded(start..end)), ..GetOptions::default() };
        let got = in_time(self.inner.bucket.get_opts(&location, options)).await?;
        Ok(bounded(got.into_stream()))
    }

    async fn list(&self, path: &ResourcePath) -> Result<Arc<Vec<Entry>>, Error> {
        let (inner, key) = (self.inner.clone(), key_of(path));
        let dir = path.with_collection(true);
        let dir_key = dir.as_key();
        let (row, members) = blocking(move || {
            let row = inner.db().entry(&key)?;
            let members = inner.db().members(&dir_key)?;
            Ok::<_, io::Error>((row, members))
        })
        .await??;
        match row {
            None => return Err(Error::NotFound),
            Some(row) if !row.collection => {
                return Err(Error::Conflict(
                    "a resource stands where a collection is needed".into(),
                ));
            }
            Some(_) => {}
        }
        let mut entries = Vec::with_capacity(members.len());
        for member in &members {
            let name = member.path.rsplit('/').next().unwrap_or_default();
            let Ok(child) = dir.child(name, member.collection) else { continue };
            entries.push(entry_of(&child, member));
        }
        Ok(Arc::new(entries))
    }

    async fn put<R: Send + 'static>(
        &self,
        path: &ResourcePath,
        upload: Upload,
        body: ByteStream,
        check: impl FnOnce(Option<&Entry>) -> Result<(), R> + Send + 'static,
    ) -> Result<Result<Put, R>, Error> {
        let target = path.with_collection(false);
        let blob = self.inner.new_blob();
        let inner = self.inner.clone();
        let registered = blob.clone();
        blocking(move || inner.db().begin_upload(&registered)).await??;
        let mut pending = Pending { inner: self.inner.clone(), blob: blob.clone(), armed: true };
        let (size, etag) = match self.inner.upload(&blob, body).await {
            Ok(uploaded) => uploaded,
            Err(e) => {
                // Discarded in the background: the bucket may be what failed, and the
                // answer is not to wait for it a second time.
                drop(pending);
                return Err(e);
            }
        };
        let new = NewVersion {
            size,
            etag,
            content_type: upload.stored_type(),
            owner: upload.owner,
            blob,
        };
        let (inner, key, named) = (self.inner.clone(), key_of(&target), target.clone());
        let quotas = upload.quotas;
        // From here the commit may happen even if this request is dropped: only a certain
        // refusal discards the blob. After a database failure (was the commit made?) it stays
        // pending, and the sweep deletes it only if no row names it.
        pending.armed = false;
        let committed = blocking(move || {
            inner.db().put_entry(
                &key,
                new,
                |owner| quotas.get(owner).copied(),
                |row| check(row.map(|row| entry_of(&named, row)).as_ref()),
            )
        })
        .await?;
        let (created, row) = match committed {
            Ok(done) => done,
            Err(Failed::Io(e)) => return Err(Error::from_io(e)),
            Err(refused) => {
                pending.discard().await;
                return refusal(refused).map(Err);
            }
        };
        Ok(Ok(Put { entry: entry_of(&target, &row), created }))
    }

    async fn ready(&self) -> Result<(), Error> {
        // A name no blob has: "not found" is an answer, and the bucket is there.
        let probe = BlobPath::from(format!("{}/ready-probe", self.inner.prefix));
        match within(self.inner.bucket.head(&probe)).await? {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(bucket_error(e)),
        }
    }

    async fn create_collection<R: Send + 'static>(
        &self,
        path: &ResourcePath,
        upload: Upload,
        check: impl FnOnce(Option<&Entry>) -> Result<(), R> + Send + 'static,
    ) -> Result<Result<Put, R>, Error> {
        let dir = path.with_collection(true);
        let (inner, key, named) = (self.inner.clone(), key_of(&dir), dir.clone());
        let made = blocking(move || {
            let owner = upload.owner.as_deref();
            let quota = owner.and_then(|owner| upload.quotas.get(owner).copied());
            let check = |row: Option<&Row>| check(row.map(|row| entry_of(&named, row)).as_ref());
            inner.db().create_collection(&key, owner, quota, check)
        })
        .await?;
        Ok(outcome(made)?.map(|(created, row)| Put { entry: entry_of(&dir, &row), created }))
    }

    async fn copy_tree(
        &self,
        plan: Vec<(Entry, ResourcePath)>,
        upload: Upload,
    ) -> Result<Put, Error> {
        let Some((_, to)) = plan.first() else { return Err(Error::NotFound) };
        let to = to.with_collection(true);
        // Each file's blob copied in the bucket to a new name, registered pending first so
        // that one not committed is swept; then one transaction names them all.
        let mut rows = Vec::with_capacity(plan.len());
        let mut copies = Vec::new();
        let made = async {
            for (source, target) in &plan {
                let mut row = Row {
                    path: key_of(target),
                    collection: source.is_collection(),
                    size: 0,
                    modified_ns: 0,
                    etag: None,
                    content_type: None,
                    owner: None,
                    blob: None,
                };
                if !source.is_collection() {
                    let Some((now, Some(handle))) = self.open(&source.path).await? else {
                        return Err(Error::NotFound);
                    };
                    let blob = self.inner.new_blob();
                    let (inner, registered) = (self.inner.clone(), blob.clone());
                    blocking(move || inner.db().begin_upload(&registered)).await??;
                    copies.push(Pending {
                        inner: self.inner.clone(),
                        blob: blob.clone(),
                        armed: true,
                    });
                    let (from, into) =
                        (BlobPath::from(handle.blob.as_str()), BlobPath::from(blob.as_str()));
                    in_time(self.inner.bucket.copy(&from, &into)).await?;
                    row.size = now.size;
                    row.etag = now.etag.clone();
                    row.content_type = now.content_type.clone();
                    row.blob = Some(blob);
                }
                rows.push(row);
            }
            Ok(())
        };
        if let Err(e) = made.await {
            for copy in copies {
                copy.discard().await;
            }
            return Err(e);
        }
        let (inner, root) = (self.inner.clone(), key_of(&to));
        let owner = upload.owner.clone();
        let quota = owner.as_deref().and_then(|o| upload.quotas.get(o).copied());
        // From here a copy may be committed even if this request is dropped; after a
        // database failure the blobs stay pending, and the sweep deletes the unnamed ones.
        for copy in &mut copies {
            copy.armed = false;
        }
        let adopted =
            blocking(move || inner.db().adopt_tree(&root, &rows, owner.as_deref(), quota)).await?;
        match adopted {
            Ok(row) => Ok(Put { entry: entry_of(&to, &row), created: true }),
            Err(Failed::Io(e)) => Err(Error::from_io(e)),
            Err(refused) => {
                for copy in copies {
                    copy.discard().await;
                }
                Err(refusal(refused)
                    .err()
                    .unwrap_or(Error::Conflict(format!("{to} is in the way"))))
            }
        }
    }

    async fn rename<R: Send + 'static>(
        &self,
        from: &ResourcePath,
        to: &ResourcePath,
        check: impl FnOnce(&Entry, Option<&Entry>) -> Result<(), R> + Send + 'static,
    ) -> Result<Result<Put, R>, Error> {
        let (inner, from_key, to_key) = (self.inner.clone(), key_of(from), key_of(to));
        let (source, target) = (from.clone(), to.clone());
        let moved = blocking(move || {
            let mut created = false;
            let moved = inner.db().rename_entry(&from_key, &to_key, |row, there| {
                created = there.is_none();
                let there = there.map(|t| entry_of(&target, t));
                check(&entry_of(&source, row), there.as_ref())
            });
            moved.map(|row| (row, created))
        })
        .await?;
        let put = |(row, created): (Row, bool)| Put { entry: entry_of(to, &row), created };
        Ok(outcome(moved)?.map(put))
    }

    async fn delete<R: Send + 'static>(
        &self,
        path: &ResourcePath,
        recursive: bool,
        check: impl FnOnce(Option<&Entry>) -> Result<(), R> + Send + 'static,
    ) -> Result<Result<(), R>, Error> {
        let (inner, key, named) = (self.inner.clone(), key_of(path), path.clone());
        let deleted = blocking(move || {
            inner.db().delete_entry(&key, recursive, |row| check(Some(&entry_of(&named, row))))
        })
        .await?;
        outcome(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_entries_named_as_asked() {
        let row = Row {
            path: "/docs/a.txt".into(),
            collection: false,
            size: 3,
            modified_ns: 1_500_000_000,
            etag: Some("abc".into()),
            content_type: None,
            owner: Some("alice".into()),
            blob: Some("blobs/x".into()),
        };
        let path = ResourcePath::parse("/docs/a.txt").unwrap();
        let entry = entry_of(&path, &row);
        assert_eq!(entry.content_type.as_deref(), Some("text/plain"));
        assert_eq!(entry.modified, UNIX_EPOCH + Duration::from_millis(1500));
        let dir = Row { collection: true, ..row };
        assert!(entry_of(&ResourcePath::parse("/docs/a.txt").unwrap(), &dir).is_collection());
    }
}
