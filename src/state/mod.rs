//! The state: what HTTP needs beyond a resource's bytes (stored Content-Type, owner, strong
//! ETag), bearer tokens, and the credit ledger with balances and purchases. [`State`] is
//! either the embedded [`Sqlite`] database (`--state DIR`, one machine) or a shared
//! [`Postgres`] database (`--state postgres://…`, any number of nodes); both keep the same
//! transactions.
//!
//! Calls block: async callers run them with `spawn_blocking`. Every write is one transaction,
//! committed durably (`synchronous = FULL`; PostgreSQL's own WAL), so an answered write
//! survives a crash; the one exception, object rows of a folder whose files carry their
//! own metadata, is [`Sqlite::relax_object_commits`]. SQLite: all calls of one process go
//! through one connection behind a mutex, so transactions never interleave; another process
//! (`larder token create`) waits on SQLite's own lock. PostgreSQL: row locks and advisory
//! locks order concurrent transactions of all nodes (see [`pg`]).
//!
//! By topic, each file holding both dialects of its rules side by side (`impl Sqlite`, then
//! `impl Postgres`):
//! - [`object`]: SQLite's metadata rows keyed by path *and* the file's [`Fingerprint`], so a
//!   crash between a row's insert and its file's rename can never attach metadata to the
//!   wrong bytes; storage usage per owner (both), checked against quotas inside the same
//!   transaction.
//! - [`token`]: token hashes.
//! - [`credit`]: accounts' balances kept in step with the ledger, and purchases.
//! - [`namespace`]: the bucket store's paths, blobs and their lives (PostgreSQL only).
//! - [`pg`]: PostgreSQL's pool, schema and time limits, and how nodes stay exact.
//! - [`export`]: SQLite's state carried into PostgreSQL (`larder migrate`).

pub mod credit;
pub mod davlock;
pub mod export;
mod folder;
pub mod namespace;
pub mod object;
pub mod pg;
pub mod property;
pub mod token;

use std::io;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

pub use credit::{Bought, CreditTotals, Entry as LedgerEntry, MAX_BALANCE, Purchase};
pub use object::{Described, Fingerprint, ObjectMeta, OverQuota, Quota, Row};
pub use token::TokenRecord;

pub use pg::Postgres;

/// The state database: embedded or shared.
pub enum State {
    /// SQLite in a folder: one machine, with the folder store.
    Sqlite(Sqlite),
    /// PostgreSQL: many nodes, with the bucket store.
    Postgres(Postgres),
}

/// Calls the same method on whichever database this is. Only what both keep the same way
/// goes through here: tokens, credits, usage.
macro_rules! shared {
    ($( $(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        impl State {
            $(
                $(#[$doc])*
                pub fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match self {
                        State::Sqlite(db) => db.$name($($arg),*),
                        State::Postgres(db) => db.$name($($arg),*),
                    }
                }
            )*
        }
    };
}

shared! {
    /// Stores a new token.
    fn insert_token(&self, token: &TokenRecord) -> io::Result<()>;
    /// The token whose SHA-256 is `hash`, if it exists (expired or not).
    fn token_by_hash(&self, hash: &[u8]) -> io::Result<Option<TokenRecord>>;
    /// An account's tokens, oldest first.
    fn tokens_of(&self, account: &str) -> io::Result<Vec<TokenRecord>>;
    /// Revokes an account's token; false if it has none with this id.
    fn delete_token(&self, account: &str, id: &str) -> io::Result<bool>;
    /// Credits ever granted, spent and refunded, from the ledger.
    fn credit_totals(&self) -> io::Result<CreditTotals>;
    /// Grants a plan's credits the first time an account is seen; true if granted now.
    fn grant_once(&self, account: &str, credits: u64) -> io::Result<bool>;
    /// The account's balance (0 if it has none yet).
    fn balance(&self, account: &str) -> io::Result<u64>;
    /// Adds `amount` credits (negative takes them); `Err(balance)` if that would go below 0.
    fn add_credits(&self, account: &str, amount: i64) -> io::Result<Result<u64, u64>>;
    /// Buys `path` for `account` at `price`, at most once.
    fn buy(&self, account: &str, path: &str, price: u64) -> io::Result<Bought>;
    /// Undoes a purchase whose resource could not be delivered.
    fn refund(&self, purchase: &Purchase) -> io::Result<()>;
    /// The account's purchase of `path`, if any.
    fn purchase(&self, account: &str, path: &str) -> io::Result<Option<Purchase>>;
    /// The account's purchases, oldest first.
    fn purchases_of(&self, account: &str) -> io::Result<Vec<Purchase>>;
    /// The account's ledger, oldest first.
    fn ledger(&self, account: &str) -> io::Result<Vec<LedgerEntry>>;
    /// Bytes that owned resources take, all owners together.
    fn total_usage(&self) -> io::Result<u64>;
    /// One round trip to the database, for readiness.
    fn ping(&self) -> io::Result<()>;
    /// Bytes of `owner`'s resources.
    fn usage(&self, owner: &str) -> io::Result<u64>;
    /// Bytes of `owner`'s resources, and how many they are, files and folders (one query).
    fn holdings(&self, owner: &str) -> io::Result<(u64, u64)>;
    /// The WebDAV dead properties of `path`, by name.
    fn properties(&self, path: &str) -> io::Result<Vec<(String, String)>>;
    /// The dead properties of `path` and, with `members`, of its direct members.
    fn properties_within(&self, path: &str, members: bool) -> io::Result<property::Within>;
    /// Gives each `(from, to)` the dead properties of `from` (COPY).
    fn copy_properties(&self, pairs: &[(String, String)]) -> io::Result<()>;
    /// True if any WebDAV lock is in force.
    fn dav_locks_any(&self) -> io::Result<bool>;
    /// The WebDAV locks covering `key` (with `beneath`, also those inside the collection).
    fn dav_locks(&self, key: &str, beneath: bool) -> io::Result<Vec<davlock::Lock>>;
    /// Grants a WebDAV lock unless one in force conflicts.
    fn dav_lock_take(&self, lock: &davlock::Lock) -> io::Result<Result<(), davlock::Refused>>;
    /// Refreshes the lock `token` covering `key`, held by `holder`.
    fn dav_lock_refresh(&self, token: &str, key: &str, holder: Option<&str>, timeout: std::time::Duration) -> io::Result<Option<davlock::Lock>>;
    /// Releases the lock `token` covering `key`, held by `holder`.
    fn dav_lock_release(&self, token: &str, key: &str, holder: Option<&str>) -> io::Result<bool>;
    /// Forgets the locks at or beneath `key`.
    fn dav_lock_forget(&self, key: &str) -> io::Result<()>;
    /// Applies PROPPATCH's changes to `path`, all or none.
    fn patch_properties(&self, path: &str, changes: &[property::PropertyChange]) -> io::Result<Result<(), property::TooMany>>;
}

impl State {
    /// Opens (creating if needed) the embedded database `DIR/larder.db`.
    pub fn open(dir: &Path) -> io::Result<State> {
        Sqlite::open(dir).map(State::Sqlite)
    }

    /// Connects to a shared PostgreSQL database (creating larder's tables if missing).
    pub fn connect(url: &str) -> io::Result<State> {
        Postgres::connect(url).map(State::Postgres)
    }

    /// [`State::connect`] from async code: the PostgreSQL client blocks (and owns a runtime
    /// of its own), so it connects on the blocking pool.
    pub async fn connect_from_async(url: &str) -> io::Result<State> {
        let url = url.to_owned();
        tokio::task::spawn_blocking(move || State::connect(&url)).await.map_err(io::Error::other)?
    }

    /// The embedded database, if this is it.
    pub fn sqlite(&self) -> Option<&Sqlite> {
        match self {
            State::Sqlite(db) => Some(db),
            State::Postgres(_) => None,
        }
    }

    /// The shared database, if this is it.
    pub fn postgres(&self) -> Option<&Postgres> {
        match self {
            State::Postgres(db) => Some(db),
            State::Sqlite(_) => None,
        }
    }
}

/// The embedded state database.
pub struct Sqlite {
    db: Mutex<Connection>,
    /// Metadata rows waiting for the next group commit (see [`Sqlite::put_object`]).
    puts: Mutex<object::Queue>,
    /// Signalled when a group commit ends.
    committed: std::sync::Condvar,
    /// Whether [`Sqlite::put_object`] may commit without waiting for the disk (see
    /// [`Sqlite::relax_object_commits`]).
    relaxed: std::sync::atomic::AtomicBool,
    /// Rows committed behind the journal of small writes (see [`Sqlite::put_behind`]).
    behind: std::sync::Arc<object::Behind>,
    /// WebDAV's locks, in memory (see [`davlock`]).
    locks: davlock::MemoryLocks,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS object (
    path TEXT NOT NULL,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    etag TEXT NOT NULL,
    content_type TEXT,
    owner TEXT,
    live INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (path, ino, size, mtime_ns)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS object_owner ON object (owner, live);
CREATE TABLE IF NOT EXISTS folder (
    path TEXT PRIMARY KEY,
    owner TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS folder_owner ON folder (owner);
CREATE TABLE IF NOT EXISTS token (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    hash BLOB NOT NULL UNIQUE,
    scope TEXT NOT NULL,
    read_only INTEGER NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER
);
CREATE INDEX IF NOT EXISTS token_account ON token (account);
CREATE TABLE IF NOT EXISTS account (
    name TEXT PRIMARY KEY,
    balance INTEGER NOT NULL CHECK (balance >= 0),
    granted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount INTEGER NOT NULL,
    path TEXT,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_account ON ledger (account);
CREATE TABLE IF NOT EXISTS purchase (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    path TEXT NOT NULL,
    price INTEGER NOT NULL,
    at INTEGER NOT NULL,
    UNIQUE (account, path)
);
CREATE TABLE IF NOT EXISTS property (
    path TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (path, name)
) WITHOUT ROWID;
";

/// How long a request waits for PostgreSQL (a statement, a pooled connection, a connect)
/// or the bucket before it is answered 503, in milliseconds: a frozen dependency costs no
/// more (`dependency_timeout`, set at start and on reload; one per process).
static DEPENDENCY_TIMEOUT_MS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(10_000);

/// See [`DEPENDENCY_TIMEOUT_MS`].
pub fn dependency_timeout() -> std::time::Duration {
    let ms = DEPENDENCY_TIMEOUT_MS.load(std::sync::atomic::Ordering::Relaxed);
    std::time::Duration::from_millis(ms)
}

/// Sets [`dependency_timeout`].
pub fn set_dependency_timeout(limit: std::time::Duration) {
    let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX).max(1);
    DEPENDENCY_TIMEOUT_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
}

/// A dependency that cannot be reached, or did not answer in time: PostgreSQL or the bucket.
/// It says nothing of the request, which may succeed later (HTTP 503, never a verdict on
/// credentials).
#[derive(Debug)]
pub struct Unavailable {
    /// What failed: `database` or `bucket`.
    pub dependency: &'static str,
    /// Why, for the log.
    pub cause: String,
}

impl Unavailable {
    /// `error` wrapped as `dependency` being unavailable.
    pub fn error(dependency: &'static str, cause: impl std::fmt::Display) -> io::Error {
        let cause = cause.to_string();
        io::Error::new(io::ErrorKind::TimedOut, Unavailable { dependency, cause })
    }

    /// The unavailable dependency behind `error`, if that is what it is.
    pub fn of(error: &io::Error) -> Option<&Unavailable> {
        error.get_ref()?.downcast_ref()
    }
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the {} is unavailable: {}", self.dependency, self.cause)
    }
}

impl std::error::Error for Unavailable {}

/// `error` and its causes, each once: many errors say only "db error" or "error sending
/// request" and keep what went wrong in their sources; some repeat their sources' words.
pub fn described(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

fn to_io(e: rusqlite::Error) -> io::Error {
    io::Error::other(e)
}

impl Sqlite {
    /// Opens (creating if needed) `DIR/larder.db`.
    pub fn open(dir: &Path) -> io::Result<Sqlite> {
        std::fs::create_dir_all(dir)?;
        let db = Connection::open(dir.join("larder.db")).map_err(to_io)?;
        db.busy_timeout(std::time::Duration::from_secs(10)).map_err(to_io)?;
        // Room for every statement run per request, so that none is parsed again.
        db.set_prepared_statement_cache_capacity(32);
        db.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;").map_err(to_io)?;
        db.execute_batch(SCHEMA).map_err(to_io)?;
        Ok(Sqlite {
            db: Mutex::new(db),
            puts: Mutex::default(),
            committed: std::sync::Condvar::new(),
            relaxed: Default::default(),
            behind: Default::default(),
            locks: Default::default(),
        })
    }

    fn queued_puts(&self) -> MutexGuard<'_, object::Queue> {
        self.puts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection, once the rows behind the journal are committed: whoever uses the
    /// database sees every acknowledged version's row.
    fn db(&self) -> MutexGuard<'_, Connection> {
        let db = self.connection();
        self.catch_up(&db);
        db
    }

    /// The connection as it is.
    fn connection(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock (a fail point) leaves SQLite consistent: its own
        // transaction rolls back. So a poisoned lock is safe to use.
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        self.behind.close();
        drop(self.db());
    }
}
