//! The embedded state database (SQLite in `--state DIR`): what HTTP needs beyond a file's
//! bytes (stored Content-Type, owner, strong ETag), bearer tokens, and the credit ledger
//! with balances and purchases.
//!
//! Calls block: async callers run them with `spawn_blocking`. Every write is one transaction
//! committed with `synchronous = FULL`, so an answered write survives a crash. All calls of
//! one process go through one connection behind a mutex, so transactions never interleave;
//! another process (`larder token create`) waits on SQLite's own lock.
//!
//! - [`object`]: metadata rows keyed by path *and* the file's [`Fingerprint`], so a crash
//!   between a row's insert and its file's rename can never attach metadata to the wrong
//!   bytes; storage usage per owner, checked against quotas inside the same transaction.
//! - [`token`]: token hashes.
//! - [`credit`]: accounts' balances kept in step with the ledger, and purchases.

pub mod credit;
pub mod object;
pub mod token;

use std::io;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

pub use credit::{Bought, CreditTotals, Entry as LedgerEntry, Purchase};
pub use object::{Fingerprint, ObjectMeta, OverQuota};
pub use token::TokenRecord;

/// The state database.
pub struct State {
    db: Mutex<Connection>,
    /// Metadata rows waiting for the next group commit (see [`State::put_object`]).
    puts: Mutex<Vec<object::PutJob>>,
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
";

fn to_io(e: rusqlite::Error) -> io::Error {
    io::Error::other(e)
}

impl State {
    /// Opens (creating if needed) `DIR/larder.db`.
    pub fn open(dir: &Path) -> io::Result<State> {
        std::fs::create_dir_all(dir)?;
        let db = Connection::open(dir.join("larder.db")).map_err(to_io)?;
        db.busy_timeout(std::time::Duration::from_secs(10)).map_err(to_io)?;
        db.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;").map_err(to_io)?;
        db.execute_batch(SCHEMA).map_err(to_io)?;
        Ok(State { db: Mutex::new(db), puts: Mutex::new(Vec::new()) })
    }

    fn queued_puts(&self) -> MutexGuard<'_, Vec<object::PutJob>> {
        self.puts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock (a fail point) leaves SQLite consistent: its own
        // transaction rolls back. So a poisoned lock is safe to use.
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }
}
