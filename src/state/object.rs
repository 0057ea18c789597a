//! Resource metadata and storage usage.
//!
//! A row describes one version of a file, identified by its [`Fingerprint`]. At most one row
//! per path is `live`: the version that counts against its owner's quota. A write marks the
//! old row not live and inserts the new one live in one transaction, after checking the
//! owner's quota in that same transaction; the rename follows. If a crash comes between, the
//! live row names a file that never appeared, and [`Sqlite::reconcile_objects`] (run at start)
//! makes the row that matches the file on disk live again.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use rusqlite::{OptionalExtension, params};

use super::pg::{self, Postgres};
use super::{Sqlite, to_io};

/// The identity of one version of a file: a write makes a new inode by renaming a new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// Inode number.
    pub ino: u64,
    /// Length in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
}

/// What larder recorded about one version of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The strong ETag's opaque value (without quotes).
    pub etag: String,
    /// The Content-Type given when it was stored.
    pub content_type: Option<String>,
    /// The account that created the resource.
    pub owner: Option<String>,
}

/// What a file on disk says of itself when its row does not match it.
pub enum Described {
    /// Written by larder, which kept its metadata in the file: the row it should have.
    Stored(ObjectMeta),
    /// Changed behind larder's back: its derived ETag.
    Changed(String),
}

/// A write refused because it would take the owner past its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverQuota {
    /// Bytes the owner's resources occupy now.
    pub used: u64,
    /// Bytes the write would add (its size less the version it replaces, if the owner's).
    pub needed: u64,
    /// When the number of resources refused it rather than their bytes: how many the owner
    /// has.
    pub resources: Option<u64>,
}

impl std::fmt::Display for OverQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.resources {
            Some(count) => write!(f, "the owner has {count} resources, as many as its quota"),
            None => write!(f, "{} bytes more would exceed the quota", self.needed),
        }
    }
}

impl std::error::Error for OverQuota {}

/// What a plan holds an owner to: bytes, and resources (a resource replaced is not a new
/// one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Bytes its resources may occupy.
    pub bytes: u64,
    /// Resources it may own.
    pub files: u64,
}

impl Quota {
    /// A quota of `bytes`, with no limit on how many resources.
    pub fn bytes(bytes: u64) -> Quota {
        Quota { bytes, files: u64::MAX }
    }
}

/// What committing a [`Row`] came to: done, refused (the quota), or failed.
pub type Outcome = io::Result<Result<(), OverQuota>>;
type Slot = Arc<Mutex<Option<Outcome>>>;

/// A new version's row, as [`Sqlite::put_object`] describes it.
#[derive(Debug, Clone)]
pub struct Row {
    /// The resource's key.
    pub path: String,
    /// The new version.
    pub fp: Fingerprint,
    /// Its metadata.
    pub meta: ObjectMeta,
    /// The version on disk now, if any.
    pub current: Option<Fingerprint>,
    /// The owner's quota, if one applies.
    pub quota: Option<Quota>,
}

/// A row waiting for the group commit.
pub(super) struct PutJob {
    row: Row,
    slot: Slot,
}

/// The rows waiting for a group commit, and whether one is running.
#[derive(Default)]
pub(super) struct Queue {
    jobs: Vec<PutJob>,
    committing: bool,
}

/// Rows behind: committed once this many wait, or [`BEHIND_WAIT`] after the first came.
const BEHIND_BATCH: usize = 256;
const BEHIND_WAIT: Duration = Duration::from_millis(20);

/// The rows of versions that the journal of small writes made durable, waiting for a commit
/// (see [`Sqlite::put_behind`]).
#[derive(Default)]
pub(super) struct Behind {
    queue: Mutex<BehindQueue>,
    /// Signalled when the first rows come, when a batch is full, and at the end.
    due: Condvar,
}

#[derive(Default)]
struct BehindQueue {
    rows: Vec<Row>,
    /// The database is closing: the committing thread stops.
    closed: bool,
    /// A committing thread runs.
    started: bool,
}

impl Behind {
    fn queue(&self) -> MutexGuard<'_, BehindQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn close(&self) {
        self.queue().closed = true;
        self.due.notify_all();
    }

    /// Waits for rows, then for a batch of them or [`BEHIND_WAIT`]; false once closed.
    fn wait_due(&self) -> bool {
        let mut queue = self.queue();
        while queue.rows.is_empty() && !queue.closed {
            queue = self.due.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
        let deadline = Instant::now() + BEHIND_WAIT;
        while !queue.closed && queue.rows.len() < BEHIND_BATCH {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            queue = self.due.wait_timeout(queue, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        !queue.closed
    }
}

fn take(slot: &Slot) -> Option<Outcome> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Runs one statement without results, from the statement cache: a group commit runs its
/// transaction's own statements too for every batch, and parsing them again costs more
/// than running them.
fn exec(db: &rusqlite::Connection, sql: &str) -> io::Result<()> {
    db.prepare_cached(sql).and_then(|mut statement| statement.execute([])).map(drop).map_err(to_io)
}

/// Rolls back a transaction that a panic left open, as rusqlite's `Transaction` would.
struct Open<'a>(&'a rusqlite::Connection);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.0.is_autocommit() {
            let _ = self.0.execute_batch("ROLLBACK");
        }
    }
}

/// Writes `rows` in one transaction, each under its own savepoint; one outcome per row.
fn commit_puts(db: &rusqlite::Connection, rows: &[&Row]) -> Vec<Outcome> {
    if let Err(e) = exec(db, "BEGIN") {
        return rows.iter().map(|_| Err(io::Error::other(e.to_string()))).collect();
    }
    let _open = Open(db);
    let mut outcomes = Vec::with_capacity(rows.len());
    for row in rows {
        let outcome = exec(db, "SAVEPOINT put").and_then(|()| put_in(db, row));
        let undo = !matches!(outcome, Ok(Ok(())));
        let ended = match undo {
            true => exec(db, "ROLLBACK TO put").and_then(|()| exec(db, "RELEASE put")),
            false => exec(db, "RELEASE put"),
        };
        outcomes.push(ended.and(outcome));
    }
    match exec(db, "COMMIT") {
        Ok(()) => outcomes,
        Err(e) => {
            if let Err(rollback) = exec(db, "ROLLBACK") {
                tracing::error!("cannot roll back a failed group commit: {rollback}");
            }
            outcomes
                .into_iter()
                .map(|o| match o {
                    Ok(Ok(())) => Err(io::Error::other(format!("commit failed: {e}"))),
                    other => other,
                })
                .collect()
        }
    }
}

/// One row of a group commit: the quota check, then the version flip.
fn put_in(tx: &rusqlite::Connection, row: &Row) -> Outcome {
    let Row { path, fp, meta, current, quota } = row;
    if let (Some(owner), Some(quota)) = (&meta.owner, quota) {
        // Bytes and resources, of the owner's other live resources and of this path's.
        let sum = |query: &str| -> io::Result<(u64, u64)> {
            tx.prepare_cached(query)
                .and_then(|mut statement| {
                    statement.query_row(params![owner, path], |row| {
                        Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
                    })
                })
                .map(|(bytes, count)| (bytes as u64, count as u64))
                .map_err(to_io)
        };
        // Folders count as resources too (never `path`: a folder's key ends with '/').
        let (others, other_files) = sum("SELECT COALESCE(SUM(size), 0),
                 COUNT(*) + (SELECT COUNT(*) FROM folder WHERE owner = ?1)
             FROM object WHERE owner = ?1 AND live = 1 AND path != ?2")?;
        let (replaced, replacing) = sum("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM object
             WHERE owner = ?1 AND live = 1 AND path = ?2")?;
        if others + fp.size > quota.bytes {
            return Ok(Err(OverQuota {
                used: others + replaced,
                needed: fp.size.saturating_sub(replaced),
                resources: None,
            }));
        }
        if replacing == 0 && other_files >= quota.files {
            return Ok(Err(OverQuota { used: others, needed: 0, resources: Some(other_files) }));
        }
    }
    // Cached statements: a group commit runs these for every row.
    let run = |sql: &str, params: &[&dyn rusqlite::ToSql]| {
        tx.prepare_cached(sql).and_then(|mut statement| statement.execute(params)).map_err(to_io)
    };
    let (ino, size, mtime) = current.map(fp_params).unwrap_or((-1, -1, -1));
    run(
        "DELETE FROM object WHERE path = ?1 AND NOT (ino = ?2 AND size = ?3 AND mtime_ns = ?4)",
        params![path, ino, size, mtime],
    )?;
    run("UPDATE object SET live = 0 WHERE path = ?1", params![path])?;
    let (ino, size, mtime) = fp_params(*fp);
    run(
        "INSERT OR REPLACE INTO object (path, ino, size, mtime_ns, etag, content_type, owner, live)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)",
        params![path, ino, size, mtime, meta.etag, meta.content_type, meta.owner],
    )?;
    Ok(Ok(()))
}

/// Bytes of `owner`'s live resources, and how many they are, its folders included, as `db`
/// (a transaction's connection, maybe) sees them.
pub(super) fn holdings_in(db: &rusqlite::Connection, owner: &str) -> io::Result<(u64, u64)> {
    db.prepare_cached(
        "SELECT COALESCE(SUM(size), 0),
                COUNT(*) + (SELECT COUNT(*) FROM folder WHERE owner = ?1)
         FROM object WHERE owner = ?1 AND live = 1",
    )
    .and_then(|mut statement| {
        statement.query_row(params![owner], |row| {
            Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64))
        })
    })
    .map_err(to_io)
}

/// Sets the connection's `synchronous` mode. A failure is a panic: the connection must not
/// run another transaction in a mode it was not meant to.
fn set_synchronous(db: &rusqlite::Connection, mode: &str) {
    let set = format!("PRAGMA synchronous = {mode}");
    if let Err(e) = db.prepare_cached(&set).and_then(|mut statement| statement.execute([])) {
        panic!("cannot set the state database's synchronous mode to {mode}: {e}");
    }
}

/// Deletes what is recorded of `path`, and with `beneath` of all under the collection `path`.
fn forget(tx: &rusqlite::Transaction<'_>, path: &str, beneath: bool) -> io::Result<()> {
    for table in ["object", "folder", "property"] {
        let sql = match beneath {
            // `path` ends with '/', so this is a segment-aligned prefix match, and takes the
            // folder's own row with those of the folders inside.
            true => format!("DELETE FROM {table} WHERE substr(path, 1, length(?1)) = ?1"),
            false => format!("DELETE FROM {table} WHERE path = ?1"),
        };
        tx.execute(&sql, params![path]).map_err(to_io)?;
    }
    Ok(())
}

fn fp_params(fp: Fingerprint) -> (i64, i64, i64) {
    (fp.ino as i64, fp.size as i64, fp.mtime_ns)
}

impl Sqlite {
    /// The metadata of this version of the file at `path`, if larder stored it.
    pub fn object(&self, path: &str, fp: Fingerprint) -> io::Result<Option<ObjectMeta>> {
        let db = self.db();
        let mut statement = db
            .prepare_cached(
                "SELECT etag, content_type, owner FROM object
                 WHERE path = ?1 AND ino = ?2 AND size = ?3 AND mtime_ns = ?4",
            )
            .map_err(to_io)?;
        let (ino, size, mtime) = fp_params(fp);
        statement
            .query_row(params![path, ino, size, mtime], |row| {
                Ok(ObjectMeta { etag: row.get(0)?, content_type: row.get(1)?, owner: row.get(2)? })
            })
            .optional()
            .map_err(to_io)
    }

    /// Records a new version of `path` as live. `current` is the version on disk now: its row
    /// is kept (not live) until the next write, since until the rename it is what readers
    /// get. With `quota`, refuses (changing nothing) if the owner's live bytes, this path's
    /// replaced version excluded, plus the new size would exceed it.
    ///
    /// Group commit: concurrent calls queue their rows, and whoever holds the connection
    /// writes every queued row in one transaction (a savepoint each, so one failure undoes
    /// only its own row) and commits once, with one fsync, before any of them returns.
    pub fn put_object(
        &self,
        path: &str,
        fp: Fingerprint,
        meta: &ObjectMeta,
        current: Option<Fingerprint>,
        quota: Option<Quota>,
    ) -> io::Result<Result<(), OverQuota>> {
        self.put_row(Row { path: path.to_owned(), fp, meta: meta.clone(), current, quota })
    }

    /// [`Sqlite::put_object`] for a row already made.
    pub fn put_row(&self, row: Row) -> Outcome {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        let slot: Slot = Arc::new(Mutex::new(None));
        let mut queue = self.queued_puts();
        queue.jobs.push(PutJob { row, slot: slot.clone() });
        loop {
            if let Some(done) = take(&slot) {
                return done;
            }
            if queue.committing {
                // Woken all at once when it ends, not one by one through the connection's lock.
                queue = self.committed.wait(queue).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            queue.committing = true;
            let jobs = std::mem::take(&mut queue.jobs);
            drop(queue);
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.commit_batch(&jobs.iter().map(|job| &job.row).collect::<Vec<_>>())
            }));
            queue = self.queued_puts();
            queue.committing = false;
            let (outcomes, panic) = match run {
                Ok(outcomes) => (outcomes, None),
                Err(panic) => (Vec::new(), Some(panic)),
            };
            let mut outcomes = outcomes.into_iter();
            for job in &jobs {
                let outcome = outcomes
                    .next()
                    .unwrap_or_else(|| Err(io::Error::other("group commit panicked")));
                *job.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
            }
            self.committed.notify_all();
            if let Some(panic) = panic {
                drop(queue);
                std::panic::resume_unwind(panic);
            }
        }
    }

    /// Commits `rows` as [`Sqlite::put_object`] would, in one transaction, at once (the
    /// caller batches them itself): one outcome per row, in order.
    pub fn put_objects(&self, rows: &[&Row]) -> Vec<Outcome> {
        fail::fail_point!("state-write", |_| {
            rows.iter().map(|_| Err(io::Error::other("fail point state-write"))).collect()
        });
        self.commit_batch(rows)
    }

    /// One transaction for `rows`, `synchronous = NORMAL` where commits are relaxed.
    fn commit_batch(&self, rows: &[&Row]) -> Vec<Outcome> {
        self.commit_on(&self.db(), rows)
    }

    fn commit_on(&self, db: &rusqlite::Connection, rows: &[&Row]) -> Vec<Outcome> {
        let relaxed = self.relaxed.load(std::sync::atomic::Ordering::Relaxed);
        if relaxed {
            set_synchronous(db, "NORMAL");
        }
        let outcomes = commit_puts(db, rows);
        if relaxed {
            set_synchronous(db, "FULL");
        }
        outcomes
    }

    /// Takes the rows of versions that the journal of small writes has made durable, none
    /// with a quota to check, and commits them behind it: in batches, on a thread of their
    /// own ([`Sqlite::commit_behind`]), and at once whenever anything else uses the
    /// database, so that every reader and every quota check sees them. A crash of larder
    /// loses none: the journal keeps the versions until their rows are committed
    /// ([`Sqlite::caught_up`]), and the next start gives back the rows of the versions it
    /// finds there.
    pub fn put_behind(&self, rows: Vec<Row>) {
        let mut queue = self.behind.queue();
        let before = queue.rows.len();
        queue.rows.extend(rows);
        if before == 0 || (before < BEHIND_BATCH && queue.rows.len() >= BEHIND_BATCH) {
            self.behind.due.notify_one();
        }
    }

    /// Commits the rows behind, on `db`, its lock held. Rows that fail stay for the next try;
    /// returns whether none did.
    pub(super) fn catch_up(&self, db: &rusqlite::Connection) -> bool {
        let rows = std::mem::take(&mut self.behind.queue().rows);
        if rows.is_empty() {
            return true;
        }
        /// Whether a fail point holds the rows back (they stay behind).
        fn held_back() -> bool {
            fail::fail_point!("state-behind", |_| true);
            false
        }
        let held = held_back();
        let mut failed: Vec<Row> = match held {
            true => rows,
            false => {
                let outcomes = self.commit_on(db, &rows.iter().collect::<Vec<_>>());
                let done = |outcome: &Outcome| matches!(outcome, Ok(Ok(())));
                rows.into_iter().zip(outcomes).filter(|(_, o)| !done(o)).map(|(r, _)| r).collect()
            }
        };
        if !failed.is_empty() {
            if !held {
                tracing::error!("cannot commit {} metadata rows, retried later", failed.len());
            }
            let mut queue = self.behind.queue();
            failed.append(&mut queue.rows);
            queue.rows = failed;
            return false;
        }
        true
    }

    /// Commits the rows behind; returns whether every row taken before the call is committed
    /// (rows taken meanwhile may wait).
    pub fn caught_up(&self) -> bool {
        self.catch_up(&self.connection())
    }

    /// Starts the thread that commits the rows behind ([`Sqlite::put_behind`]) in batches.
    /// It holds the database only while it commits, and ends when the database closes.
    pub fn commit_behind(state: &Arc<super::State>) -> io::Result<()> {
        let Some(db) = state.sqlite() else { return Ok(()) };
        let behind = db.behind.clone();
        if std::mem::replace(&mut behind.queue().started, true) {
            return Ok(());
        }
        let state: Weak<super::State> = Arc::downgrade(state);
        std::thread::Builder::new().name("larder-rows".into()).spawn(move || {
            while behind.wait_due() {
                match state.upgrade() {
                    Some(state) => drop(state.sqlite().map(|db| db.db())),
                    None => return,
                }
            }
        })?;
        Ok(())
    }

    /// From now on, [`Sqlite::put_object`] commits with `synchronous = NORMAL`: in the
    /// operating system's hands at once (a crash of larder loses nothing), on the disk with
    /// the next durable commit or checkpoint. For a store whose files carry their own
    /// metadata, so that what a crash of the machine takes from here can be rebuilt from them
    /// (see `FileStore::open`). Every other transaction stays `synchronous = FULL`.
    pub fn relax_object_commits(&self) {
        self.relaxed.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Undoes [`Sqlite::put_object`] when the rename that should follow it failed.
    pub fn revert_object(
        &self,
        path: &str,
        fp: Fingerprint,
        current: Option<Fingerprint>,
    ) -> io::Result<()> {
        let mut db = self.db();
        let tx = db.transaction().map_err(to_io)?;
        let (ino, size, mtime) = fp_params(fp);
        tx.execute(
            "DELETE FROM object WHERE path = ?1 AND ino = ?2 AND size = ?3 AND mtime_ns = ?4",
            params![path, ino, size, mtime],
        )
        .map_err(to_io)?;
        if let Some(current) = current {
            let (ino, size, mtime) = fp_params(current);
            tx.execute(
                "UPDATE object SET live = 1 WHERE path = ?1 AND ino = ?2 AND size = ?3 AND mtime_ns = ?4",
                params![path, ino, size, mtime],
            )
            .map_err(to_io)?;
        }
        tx.commit().map_err(to_io)
    }

    /// Forgets `path` (its rows and dead properties), and with `beneath` everything under the
    /// collection `path` (ending `/`).
    pub fn delete_objects(&self, path: &str, beneath: bool) -> io::Result<()> {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        let mut db = self.db();
        let tx = db.transaction().map_err(to_io)?;
        forget(&tx, path, beneath)?;
        tx.commit().map_err(to_io)
    }

    /// Carries what is recorded of `from` (rows, folders, dead properties; with `beneath`, of
    /// everything under the collection `from`) to `to`, forgetting what `to` had: a rename.
    pub fn move_objects(&self, from: &str, to: &str, beneath: bool) -> io::Result<()> {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        let mut db = self.db();
        let tx = db.transaction().map_err(to_io)?;
        forget(&tx, to, beneath)?;
        if !to.ends_with('/') {
            forget(&tx, &format!("{to}/"), true)?;
        }
        for table in ["object", "folder", "property"] {
            let sql = match beneath {
                // `from` ends with '/': a segment-aligned prefix, the folder's own row too.
                true => format!(
                    "UPDATE {table} SET path = ?2 || substr(path, length(?1) + 1)
                     WHERE substr(path, 1, length(?1)) = ?1"
                ),
                false => format!("UPDATE {table} SET path = ?2 WHERE path = ?1"),
            };
            tx.execute(&sql, params![from, to]).map_err(to_io)?;
        }
        tx.commit().map_err(to_io)
    }

    /// Records the tree a COPY made under a temporary name, about to be renamed to `root` (a
    /// collection's key): a folder row for each of `folders` and a live row for each of
    /// `files`, all `owner`'s, replacing whatever was recorded beneath `root`; refused with
    /// nothing recorded if that takes the owner past `quota`. One transaction.
    pub fn adopt_tree(
        &self,
        root: &str,
        owner: Option<&str>,
        quota: Option<Quota>,
        folders: &[String],
        files: &[(String, Fingerprint, ObjectMeta)],
    ) -> io::Result<Result<(), OverQuota>> {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        let mut db = self.db();
        let tx = db.transaction().map_err(to_io)?;
        let before = match (owner, quota) {
            (Some(owner), Some(_)) => Some(holdings_in(&tx, owner)?),
            _ => None,
        };
        forget(&tx, root, true)?;
        if let Some(owner) = owner {
            let mut insert = tx
                .prepare_cached("INSERT INTO folder (path, owner) VALUES (?1, ?2)")
                .map_err(to_io)?;
            for key in folders {
                insert.execute(params![key, owner]).map_err(to_io)?;
            }
        }
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO object (path, ino, size, mtime_ns, etag, content_type, owner, live)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)",
                )
                .map_err(to_io)?;
            for (path, fp, meta) in files {
                let (ino, size, mtime) = fp_params(*fp);
                let row = params![path, ino, size, mtime, meta.etag, meta.content_type, meta.owner];
                insert.execute(row).map_err(to_io)?;
            }
        }
        if let (Some(owner), Some(quota), Some((used, count))) = (owner, quota, before) {
            let (bytes, resources) = holdings_in(&tx, owner)?;
            if bytes > quota.bytes || resources > quota.files {
                let over_count = resources > quota.files;
                let needed = bytes.saturating_sub(used);
                return Ok(Err(OverQuota { used, needed, resources: over_count.then_some(count) }));
            }
        }
        tx.commit().map_err(to_io)?;
        Ok(Ok(()))
    }

    /// Every recorded version of the direct members of the collection `dir` (ending in `/`),
    /// by member path: one query for a whole listing.
    pub fn objects_in(
        &self,
        dir: &str,
    ) -> io::Result<HashMap<String, Vec<(Fingerprint, ObjectMeta)>>> {
        let db = self.db();
        let mut statement = db
            .prepare_cached(
                "SELECT path, ino, size, mtime_ns, etag, content_type, owner FROM object
                 WHERE path > ?1 AND path < ?1 || x'ff' AND instr(substr(path, length(?1) + 1), '/') = 0",
            )
            .map_err(to_io)?;
        let rows = statement
            .query_map(params![dir], |row| {
                let fp = Fingerprint {
                    ino: row.get::<_, i64>(1)? as u64,
                    size: row.get::<_, i64>(2)? as u64,
                    mtime_ns: row.get(3)?,
                };
                let meta =
                    ObjectMeta { etag: row.get(4)?, content_type: row.get(5)?, owner: row.get(6)? };
                Ok((row.get::<_, String>(0)?, fp, meta))
            })
            .map_err(to_io)?;
        let mut found: HashMap<String, Vec<(Fingerprint, ObjectMeta)>> = HashMap::new();
        for row in rows {
            let (path, fp, meta) = row.map_err(to_io)?;
            found.entry(path).or_default().push((fp, meta));
        }
        Ok(found)
    }

    /// One round trip to the database, for readiness.
    pub fn ping(&self) -> io::Result<()> {
        self.db().query_row("SELECT 1", [], |_| Ok(())).map_err(to_io)
    }

    /// Bytes that owned resources take, all owners together.
    pub fn total_usage(&self) -> io::Result<u64> {
        self.db()
            .query_row(
                "SELECT COALESCE(SUM(size), 0) FROM object WHERE owner IS NOT NULL AND live = 1",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n.unsigned_abs())
            .map_err(to_io)
    }

    /// Bytes of `owner`'s live resources, and how many they are, its folders included.
    pub fn holdings(&self, owner: &str) -> io::Result<(u64, u64)> {
        holdings_in(&self.db(), owner)
    }

    /// Bytes of `owner`'s live resources.
    pub fn usage(&self, owner: &str) -> io::Result<u64> {
        Ok(self.holdings(owner)?.0)
    }

    /// Makes the rows agree with the files: `on_disk(path)` gives the fingerprint of the file
    /// at `path` now (`None` if there is none). Per path, the row matching the file becomes
    /// live; if none matches, the live row is moved to the file's fingerprint with what
    /// `describe(path, fingerprint)` says of that version: larder's own metadata (a version
    /// whose row a crash of the machine took), or an ETag alone (the file was changed behind
    /// larder's back: the owner and type stay). Rows of vanished files go. Returns how many
    /// rows changed.
    pub fn reconcile_objects(
        &self,
        on_disk: impl Fn(&str) -> Option<Fingerprint>,
        describe: impl Fn(&str, Fingerprint) -> Described,
    ) -> io::Result<usize> {
        let mut db = self.db();
        let tx = db.transaction().map_err(to_io)?;
        let mut by_path: BTreeMap<String, Vec<(Fingerprint, bool)>> = BTreeMap::new();
        {
            let mut statement =
                tx.prepare("SELECT path, ino, size, mtime_ns, live FROM object").map_err(to_io)?;
            let rows = statement
                .query_map([], |row| {
                    let fp = Fingerprint {
                        ino: row.get::<_, i64>(1)? as u64,
                        size: row.get::<_, i64>(2)? as u64,
                        mtime_ns: row.get(3)?,
                    };
                    Ok((row.get::<_, String>(0)?, fp, row.get::<_, bool>(4)?))
                })
                .map_err(to_io)?;
            for row in rows {
                let (path, fp, live) = row.map_err(to_io)?;
                by_path.entry(path).or_default().push((fp, live));
            }
        }
        let mut changed = 0;
        for (path, rows) in by_path {
            let disk = on_disk(&path);
            let keep = disk.filter(|d| rows.iter().any(|(fp, _)| fp == d));
            for (fp, live) in &rows {
                let (ino, size, mtime) = fp_params(*fp);
                let key = params![path, ino, size, mtime];
                if Some(*fp) == keep {
                    if !live {
                        tx.execute(
                            "UPDATE object SET live = 1 WHERE path = ?1 AND ino = ?2 AND size = ?3 AND mtime_ns = ?4",
                            key,
                        )
                        .map_err(to_io)?;
                        changed += 1;
                    }
                } else if let (Some(disk), None, true) = (disk, keep, *live) {
                    let (dino, dsize, dmtime) = fp_params(disk);
                    match describe(&path, disk) {
                        Described::Stored(meta) => tx.execute(
                            "UPDATE object SET ino = ?5, size = ?6, mtime_ns = ?7, etag = ?8,
                             content_type = ?9, owner = ?10, live = 1
                             WHERE path = ?1 AND ino = ?2 AND size = ?3 AND mtime_ns = ?4",
                            params![
                                path, ino, size, mtime, dino, dsize, dmtime, meta.etag,
                                meta.content_type, meta.owner
                            ],
                        ),
                        Described::Changed(etag) => tx.execute(
                            "UPDATE object SET ino = ?5, size = ?6, mtime_ns = ?7, etag = ?8, live = 1
                             WHERE path = ?1 AND ino = ?2 AND size = ?3 AND mtime_ns = ?4",
                            params![path, ino, size, mtime, dino, dsize, dmtime, etag],
                        ),
                    }
                    .map_err(to_io)?;
                    changed += 1;
                } else {
                    tx.execute(
                        "DELETE FROM object WHERE path = ?1 AND ino = ?2 AND size = ?3 AND mtime_ns = ?4",
                        key,
                    )
                    .map_err(to_io)?;
                    changed += 1;
                }
            }
        }
        tx.commit().map_err(to_io)?;
        Ok(changed)
    }
}

// --- PostgreSQL: usage, from the bucket store's namespace -------------------------------

impl Postgres {
    /// Bytes that owned resources take, all owners together.
    pub fn total_usage(&self) -> io::Result<u64> {
        let row = self
            .client()?
            .query_one(
                "SELECT COALESCE(SUM(size), 0)::BIGINT FROM entry
                 WHERE owner IS NOT NULL AND NOT collection",
                &[],
            )
            .map_err(pg::to_io)?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    /// Bytes of `owner`'s resources.
    pub fn usage(&self, owner: &str) -> io::Result<u64> {
        Ok(self.holdings(owner)?.0)
    }

    /// Bytes of `owner`'s resources, and how many they are, its collections included.
    pub fn holdings(&self, owner: &str) -> io::Result<(u64, u64)> {
        let row = self
            .client()?
            .query_one(
                "SELECT COALESCE(SUM(size), 0)::BIGINT, COUNT(*) FROM entry WHERE owner = $1",
                &[&owner],
            )
            .map_err(pg::to_io)?;
        Ok((row.get::<_, i64>(0).max(0) as u64, row.get::<_, i64>(1).max(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(etag: &str, owner: &str) -> ObjectMeta {
        ObjectMeta { etag: etag.into(), content_type: None, owner: Some(owner.into()) }
    }

    const V1: Fingerprint = Fingerprint { ino: 1, size: 30, mtime_ns: 10 };
    const V2: Fingerprint = Fingerprint { ino: 2, size: 40, mtime_ns: 20 };

    #[test]
    fn rows_follow_versions_and_usage_counts_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let state = Sqlite::open(dir.path()).unwrap();
        state.put_object("/a", V1, &meta("one", "alice"), None, None).unwrap().unwrap();
        state.put_object("/a", V2, &meta("two", "alice"), Some(V1), None).unwrap().unwrap();
        // Until the rename both versions are described; only the new one counts.
        assert_eq!(state.object("/a", V1).unwrap().unwrap().etag, "one");
        assert_eq!(state.object("/a", V2).unwrap().unwrap().etag, "two");
        assert_eq!(state.usage("alice").unwrap(), 40);
        state.put_object("/d/x", V1, &meta("x", "alice"), None, None).unwrap().unwrap();
        assert_eq!(state.usage("alice").unwrap(), 70);
        let listed = state.objects_in("/d/").unwrap();
        assert_eq!(listed.keys().collect::<Vec<_>>(), ["/d/x"]);
        assert_eq!(state.objects_in("/").unwrap().len(), 1, "direct members only");
        state.delete_objects("/d/", true).unwrap();
        assert_eq!(state.usage("alice").unwrap(), 40);
        state.revert_object("/a", V2, Some(V1)).unwrap();
        assert_eq!(state.usage("alice").unwrap(), 30);
    }

    #[test]
    fn rows_behind_are_seen_by_every_reader_and_every_quota() {
        let dir = tempfile::tempdir().unwrap();
        let state = Sqlite::open(dir.path()).unwrap();
        let row = |path: &str, fp, etag, current| Row {
            path: path.into(),
            fp,
            meta: meta(etag, "alice"),
            current,
            quota: None,
        };
        state.put_behind(vec![row("/a", V1, "one", None), row("/d/x", V2, "x", None)]);
        // No thread commits them here: whoever uses the database first does.
        assert_eq!(state.object("/a", V1).unwrap().unwrap().etag, "one");
        assert_eq!(state.objects_in("/d/").unwrap()["/d/x"][0].1.etag, "x");
        state.put_behind(vec![row("/a", V2, "two", Some(V1))]);
        assert_eq!(state.usage("alice").unwrap(), 80, "the new /a replaced the old");
        // A quota is checked against every row behind.
        state.put_behind(vec![row("/b", Fingerprint { ino: 3, size: 20, mtime_ns: 1 }, "b", None)]);
        let over =
            state.put_object("/c", V1, &meta("c", "alice"), None, Some(Quota::bytes(120))).unwrap();
        assert_eq!(over, Err(OverQuota { used: 100, needed: 30, resources: None }));
        assert!(state.caught_up());
        // Closing commits what is left.
        state.put_behind(vec![row("/e", V1, "e", None)]);
        drop(state);
        let state = Sqlite::open(dir.path()).unwrap();
        assert_eq!(state.object("/e", V1).unwrap().unwrap().etag, "e");
    }

    #[test]
    fn quota_is_checked_in_the_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let state = Sqlite::open(dir.path()).unwrap();
        state
            .put_object("/a", V1, &meta("a", "alice"), None, Some(Quota::bytes(100)))
            .unwrap()
            .unwrap();
        let big = Fingerprint { ino: 3, size: 71, mtime_ns: 1 };
        let refused = state
            .put_object("/b", big, &meta("b", "alice"), None, Some(Quota::bytes(100)))
            .unwrap();
        assert_eq!(refused, Err(OverQuota { used: 30, needed: 71, resources: None }));
        assert!(state.object("/b", big).unwrap().is_none(), "nothing changed");
        // Replacing counts the difference: 30 → 100 fits exactly.
        let grown = Fingerprint { ino: 4, size: 100, mtime_ns: 1 };
        assert!(
            state
                .put_object("/a", grown, &meta("a2", "alice"), Some(V1), Some(Quota::bytes(100)))
                .unwrap()
                .is_ok()
        );
        assert_eq!(state.usage("alice").unwrap(), 100);
    }

    #[test]
    fn group_commits_keep_every_row_and_every_quota() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(Sqlite::open(dir.path()).unwrap());
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let state = state.clone();
                std::thread::spawn(move || {
                    for i in 0..25u64 {
                        let fp = Fingerprint { ino: t * 100 + i + 1, size: 10, mtime_ns: 1 };
                        state
                            .put_object(&format!("/t{t}/{i}"), fp, &meta("e", "alice"), None, None)
                            .unwrap()
                            .unwrap();
                    }
                    // Then all race for the last 600 bytes of bob's quota.
                    let fp = Fingerprint { ino: 9000 + t, size: 600, mtime_ns: 1 };
                    state
                        .put_object(
                            &format!("/race/{t}"),
                            fp,
                            &meta("r", "bob"),
                            None,
                            Some(Quota::bytes(1000)),
                        )
                        .unwrap()
                })
            })
            .collect();
        let won = threads.into_iter().map(|t| t.join().unwrap()).filter(Result::is_ok).count();
        assert_eq!(won, 1, "one upload fits the quota");
        assert_eq!(state.usage("alice").unwrap(), 8 * 25 * 10, "every row landed");
        assert_eq!(state.usage("bob").unwrap(), 600);
    }

    #[test]
    fn reconcile_picks_the_file_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let state = Sqlite::open(dir.path()).unwrap();
        state.put_object("/a", V1, &meta("one", "alice"), None, None).unwrap().unwrap();
        // A crash after recording V2 but before its rename: V1 is still on disk.
        state.put_object("/a", V2, &meta("two", "alice"), Some(V1), None).unwrap().unwrap();
        state.put_object("/gone", V1, &meta("g", "alice"), None, None).unwrap().unwrap();
        let edited = Fingerprint { ino: 9, size: 5, mtime_ns: 99 };
        state.put_object("/edited", V2, &meta("e", "bob"), None, None).unwrap().unwrap();
        let disk = |path: &str| match path {
            "/a" => Some(V1),
            "/edited" => Some(edited),
            _ => None,
        };
        state.reconcile_objects(disk, |_, _| Described::Changed("derived".into())).unwrap();
        assert_eq!(state.usage("alice").unwrap(), 30);
        assert!(state.object("/a", V2).unwrap().is_none());
        assert_eq!(state.object("/edited", edited).unwrap().unwrap().owner.as_deref(), Some("bob"));
        assert_eq!(state.usage("bob").unwrap(), 5);
    }
}
