//! The embedded state database (SQLite in `--state DIR`): what HTTP needs beyond a file's
//! bytes (stored Content-Type, owner, strong ETag), and later tokens, balances and purchases.
//!
//! Calls block: async callers run them with `spawn_blocking`. Every write is one transaction
//! committed with `synchronous = FULL`, so an answered write survives a crash.
//!
//! Metadata rows are keyed by path *and* the file's [`Fingerprint`]: a row describes one
//! version of a file, so a crash between a row's insert and its file's rename (or a file
//! changed behind larder's back) can never attach metadata to the wrong bytes.

use std::io;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

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

/// The state database.
pub struct State {
    db: Mutex<Connection>,
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
    PRIMARY KEY (path, ino, size, mtime_ns)
) WITHOUT ROWID;
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
";

/// A bearer token as stored: never the token itself, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The public id (for listing and revoking).
    pub id: String,
    /// The account the token signs in as.
    pub account: String,
    /// SHA-256 of the token.
    pub hash: Vec<u8>,
    /// The path prefix it is limited to (`/` for everywhere).
    pub scope: String,
    /// Reads only.
    pub read_only: bool,
    /// Creation, seconds since the epoch.
    pub created: i64,
    /// Expiry, seconds since the epoch; `None` never expires.
    pub expires: Option<i64>,
}

impl TokenRecord {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
        Ok(TokenRecord {
            id: row.get(0)?,
            account: row.get(1)?,
            hash: row.get(2)?,
            scope: row.get(3)?,
            read_only: row.get(4)?,
            created: row.get(5)?,
            expires: row.get(6)?,
        })
    }
}

const TOKEN_COLUMNS: &str = "id, account, hash, scope, read_only, created, expires";

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
        Ok(State { db: Mutex::new(db) })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock (a fail point) leaves SQLite consistent: its own
        // transaction rolls back. So a poisoned lock is safe to use.
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The metadata of this version of the file at `path`, if larder stored it.
    pub fn object(&self, path: &str, fp: Fingerprint) -> io::Result<Option<ObjectMeta>> {
        let db = self.db();
        let mut statement = db
            .prepare_cached(
                "SELECT etag, content_type, owner FROM object
                 WHERE path = ?1 AND ino = ?2 AND size = ?3 AND mtime_ns = ?4",
            )
            .map_err(to_io)?;
        statement
            .query_row(params![path, fp.ino as i64, fp.size as i64, fp.mtime_ns], |row| {
                Ok(ObjectMeta { etag: row.get(0)?, content_type: row.get(1)?, owner: row.get(2)? })
            })
            .optional()
            .map_err(to_io)
    }

    /// Records a new version of `path`, keeping only the row of the version on disk now
    /// (`current`) besides it: until the rename, `current` is still what readers get.
    pub fn put_object(
        &self,
        path: &str,
        fp: Fingerprint,
        meta: &ObjectMeta,
        current: Option<Fingerprint>,
    ) -> io::Result<()> {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        let mut db = self.db();
        let tx = db.transaction().map_err(to_io)?;
        match current {
            Some(c) => tx.execute(
                "DELETE FROM object WHERE path = ?1 AND NOT (ino = ?2 AND size = ?3 AND mtime_ns = ?4)",
                params![path, c.ino as i64, c.size as i64, c.mtime_ns],
            ),
            None => tx.execute("DELETE FROM object WHERE path = ?1", params![path]),
        }
        .map_err(to_io)?;
        tx.execute(
            "INSERT OR REPLACE INTO object (path, ino, size, mtime_ns, etag, content_type, owner)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                path,
                fp.ino as i64,
                fp.size as i64,
                fp.mtime_ns,
                meta.etag,
                meta.content_type,
                meta.owner
            ],
        )
        .map_err(to_io)?;
        tx.commit().map_err(to_io)
    }

    /// Forgets `path`, and with `beneath` everything under the collection `path` (ending `/`).
    pub fn delete_objects(&self, path: &str, beneath: bool) -> io::Result<()> {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        let db = self.db();
        if beneath {
            // `path` ends with '/', so this is a segment-aligned prefix match.
            db.execute("DELETE FROM object WHERE substr(path, 1, length(?1)) = ?1", params![path])
        } else {
            db.execute("DELETE FROM object WHERE path = ?1", params![path])
        }
        .map(drop)
        .map_err(to_io)
    }

    /// Every recorded (path, fingerprint), for reconciling with the folder at start.
    pub fn all_objects(&self) -> io::Result<Vec<(String, Fingerprint)>> {
        let db = self.db();
        let mut statement =
            db.prepare("SELECT path, ino, size, mtime_ns FROM object").map_err(to_io)?;
        let rows = statement
            .query_map([], |row| {
                let fp = Fingerprint {
                    ino: row.get::<_, i64>(1)? as u64,
                    size: row.get::<_, i64>(2)? as u64,
                    mtime_ns: row.get(3)?,
                };
                Ok((row.get(0)?, fp))
            })
            .map_err(to_io)?;
        rows.collect::<Result<_, _>>().map_err(to_io)
    }

    /// Stores a new token.
    pub fn insert_token(&self, token: &TokenRecord) -> io::Result<()> {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        self.db()
            .execute(
                &format!("INSERT INTO token ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![
                    token.id,
                    token.account,
                    token.hash,
                    token.scope,
                    token.read_only,
                    token.created,
                    token.expires
                ],
            )
            .map(drop)
            .map_err(to_io)
    }

    /// The token whose SHA-256 is `hash`, if it exists (expired or not).
    pub fn token_by_hash(&self, hash: &[u8]) -> io::Result<Option<TokenRecord>> {
        let db = self.db();
        let mut statement = db
            .prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM token WHERE hash = ?1"))
            .map_err(to_io)?;
        statement.query_row(params![hash], TokenRecord::from_row).optional().map_err(to_io)
    }

    /// An account's tokens, oldest first.
    pub fn tokens_of(&self, account: &str) -> io::Result<Vec<TokenRecord>> {
        let db = self.db();
        let mut statement = db
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM token WHERE account = ?1 ORDER BY created, id"
            ))
            .map_err(to_io)?;
        let rows = statement.query_map(params![account], TokenRecord::from_row).map_err(to_io)?;
        rows.collect::<Result<_, _>>().map_err(to_io)
    }

    /// Revokes an account's token; false if it has none with this id.
    pub fn delete_token(&self, account: &str, id: &str) -> io::Result<bool> {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        self.db()
            .execute("DELETE FROM token WHERE account = ?1 AND id = ?2", params![account, id])
            .map(|n| n > 0)
            .map_err(to_io)
    }

    /// Removes one stale row.
    pub fn forget(&self, path: &str, fp: Fingerprint) -> io::Result<()> {
        self.db()
            .execute(
                "DELETE FROM object WHERE path = ?1 AND ino = ?2 AND size = ?3 AND mtime_ns = ?4",
                params![path, fp.ino as i64, fp.size as i64, fp.mtime_ns],
            )
            .map(drop)
            .map_err(to_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_follow_versions() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let v1 = Fingerprint { ino: 1, size: 3, mtime_ns: 10 };
        let v2 = Fingerprint { ino: 2, size: 4, mtime_ns: 20 };
        let meta = |etag: &str| ObjectMeta {
            etag: etag.into(),
            content_type: Some("text/plain".into()),
            owner: Some("alice".into()),
        };
        state.put_object("/a", v1, &meta("one"), None).unwrap();
        state.put_object("/a", v2, &meta("two"), Some(v1)).unwrap();
        // Before the rename both versions are known; each keeps its own metadata.
        assert_eq!(state.object("/a", v1).unwrap().unwrap().etag, "one");
        assert_eq!(state.object("/a", v2).unwrap().unwrap().etag, "two");
        state.put_object("/a", v1, &meta("three"), Some(v2)).unwrap();
        assert_eq!(state.all_objects().unwrap().len(), 2);
        state.put_object("/d/x", v1, &meta("x"), None).unwrap();
        state.delete_objects("/d/", true).unwrap();
        assert!(state.object("/d/x", v1).unwrap().is_none());
        assert!(state.object("/a", v1).unwrap().is_some());
    }

    #[test]
    fn tokens() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let token = |id: &str, account: &str, hash: u8| TokenRecord {
            id: id.into(),
            account: account.into(),
            hash: vec![hash; 32],
            scope: "/".into(),
            read_only: false,
            created: 1,
            expires: None,
        };
        state.insert_token(&token("t1", "alice", 1)).unwrap();
        state.insert_token(&token("t2", "bob", 2)).unwrap();
        assert_eq!(state.token_by_hash(&[1; 32]).unwrap().unwrap().id, "t1");
        assert_eq!(state.tokens_of("alice").unwrap().len(), 1);
        assert!(!state.delete_token("bob", "t1").unwrap(), "only the owner revokes");
        assert!(state.delete_token("alice", "t1").unwrap());
        assert!(state.token_by_hash(&[1; 32]).unwrap().is_none());
    }
}
