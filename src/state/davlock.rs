//! WebDAV write locks (RFC 4918 §6): with SQLite, in the memory of the one node (a restart
//! releases them, as §6.6 allows); with PostgreSQL, in a table every node sees, granted under
//! one advisory lock so two nodes never grant conflicting locks.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Sqlite;
use super::pg::{self, Postgres};

/// Locks kept at most: past it a LOCK is refused, never an old lock dropped.
pub const MAX_LOCKS: usize = 100_000;

/// One granted lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// `urn:uuid:…`.
    pub token: String,
    /// The locked path's key (`/a.txt`, `/docs/`).
    pub root: String,
    /// `Depth: infinity` on a collection.
    pub infinite: bool,
    /// Exclusive, else shared.
    pub exclusive: bool,
    /// The client's `owner` element, as XML.
    pub owner: Option<String>,
    /// The account that took it (`None`: anonymous).
    pub holder: Option<String>,
    /// How long it was granted for.
    pub timeout: Duration,
    /// When it lapses.
    pub expires: SystemTime,
}

impl Lock {
    /// Whether this lock covers the path `key`.
    pub fn covers(&self, key: &str) -> bool {
        self.root == key
            || (self.infinite && self.root.ends_with('/') && key.starts_with(&self.root))
    }

    fn affects(&self, key: &str, beneath: bool) -> bool {
        self.covers(key) || (beneath && key.ends_with('/') && self.root.starts_with(key))
    }

    fn conflicts(&self, other: &Lock) -> bool {
        (self.covers(&other.root) || other.covers(&self.root))
            && (self.exclusive || other.exclusive)
    }
}

/// Why a lock was not granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Another lock conflicts: its root.
    Conflict(String),
    /// The table is full.
    Full,
}

/// The locks of a SQLite node: memory only.
#[derive(Debug, Default)]
pub struct MemoryLocks(Mutex<Vec<Lock>>);

impl MemoryLocks {
    fn live(&self) -> std::sync::MutexGuard<'_, Vec<Lock>> {
        let mut table = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = SystemTime::now();
        table.retain(|l| l.expires > now);
        table
    }
}

fn ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Sqlite {
    /// True if any lock is in force.
    pub fn dav_locks_any(&self) -> io::Result<bool> {
        Ok(!self.locks.live().is_empty())
    }

    /// The locks that cover `key`, or with `beneath` lie beneath the collection `key`.
    pub fn dav_locks(&self, key: &str, beneath: bool) -> io::Result<Vec<Lock>> {
        Ok(self.locks.live().iter().filter(|l| l.affects(key, beneath)).cloned().collect())
    }

    /// Grants `lock` unless one in force conflicts with it.
    pub fn dav_lock_take(&self, lock: &Lock) -> io::Result<Result<(), Refused>> {
        let mut table = self.locks.live();
        if let Some(clash) = table.iter().find(|l| l.conflicts(lock)) {
            return Ok(Err(Refused::Conflict(clash.root.clone())));
        }
        if table.len() >= MAX_LOCKS {
            return Ok(Err(Refused::Full));
        }
        table.push(lock.clone());
        Ok(Ok(()))
    }

    /// Gives the lock `token` covering `key`, held by `holder`, a new timeout.
    pub fn dav_lock_refresh(
        &self,
        token: &str,
        key: &str,
        holder: Option<&str>,
        timeout: Duration,
    ) -> io::Result<Option<Lock>> {
        let mut table = self.locks.live();
        let found = table
            .iter_mut()
            .find(|l| l.token == token && l.covers(key) && l.holder.as_deref() == holder);
        Ok(found.map(|lock| {
            lock.timeout = timeout;
            lock.expires = SystemTime::now() + timeout;
            lock.clone()
        }))
    }

    /// Releases the lock `token` covering `key`, if `holder` holds it.
    pub fn dav_lock_release(
        &self,
        token: &str,
        key: &str,
        holder: Option<&str>,
    ) -> io::Result<bool> {
        let mut table = self.locks.live();
        let before = table.len();
        table.retain(|l| !(l.token == token && l.covers(key) && l.holder.as_deref() == holder));
        Ok(table.len() != before)
    }

    /// Forgets every lock at or beneath `key` (deleted or moved away).
    pub fn dav_lock_forget(&self, key: &str) -> io::Result<()> {
        let mut table = self.locks.live();
        match key.ends_with('/') {
            true => table.retain(|l| !l.root.starts_with(key)),
            false => table.retain(|l| l.root != key),
        }
        Ok(())
    }
}

/// The one advisory lock under which PostgreSQL grants WebDAV locks.
const GRANTING: i64 = 0x6461_766c_6f63;

const COLUMNS: &str = "token, root, infinite, exclusive, owner, holder, timeout_s, expires_ms";

fn lock_of(row: &postgres::Row) -> Lock {
    Lock {
        token: row.get(0),
        root: row.get(1),
        infinite: row.get(2),
        exclusive: row.get(3),
        owner: row.get(4),
        holder: row.get(5),
        timeout: Duration::from_secs(row.get::<_, i64>(6).max(0) as u64),
        expires: UNIX_EPOCH + Duration::from_millis(row.get::<_, i64>(7).max(0) as u64),
    }
}

impl Postgres {
    /// [`Sqlite::dav_locks_any`].
    pub fn dav_locks_any(&self) -> io::Result<bool> {
        let now = ms(SystemTime::now());
        let row = self
            .client()?
            .query_one("SELECT EXISTS (SELECT 1 FROM dav_lock WHERE expires_ms > $1)", &[&now])
            .map_err(pg::to_io)?;
        Ok(row.get(0))
    }

    /// [`Sqlite::dav_locks`].
    pub fn dav_locks(&self, key: &str, beneath: bool) -> io::Result<Vec<Lock>> {
        let now = ms(SystemTime::now());
        let sql = format!(
            "SELECT {COLUMNS} FROM dav_lock WHERE expires_ms > $1 AND (root = $2
               OR (infinite AND right(root, 1) = '/' AND starts_with($2, root))
               OR ($3 AND right($2, 1) = '/' AND starts_with(root, $2)))"
        );
        let rows = self.client()?.query(&sql, &[&now, &key, &beneath]).map_err(pg::to_io)?;
        Ok(rows.iter().map(lock_of).collect())
    }

    /// [`Sqlite::dav_lock_take`], one node at a time.
    pub fn dav_lock_take(&self, lock: &Lock) -> io::Result<Result<(), Refused>> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(pg::to_io)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&GRANTING]).map_err(pg::to_io)?;
        let now = ms(SystemTime::now());
        tx.execute("DELETE FROM dav_lock WHERE expires_ms <= $1", &[&now]).map_err(pg::to_io)?;
        let sql = format!("SELECT {COLUMNS} FROM dav_lock");
        let held: Vec<Lock> = tx.query(&sql, &[]).map_err(pg::to_io)?.iter().map(lock_of).collect();
        if let Some(clash) = held.iter().find(|l| l.conflicts(lock)) {
            return Ok(Err(Refused::Conflict(clash.root.clone())));
        }
        if held.len() >= MAX_LOCKS {
            return Ok(Err(Refused::Full));
        }
        let timeout = lock.timeout.as_secs() as i64;
        tx.execute(
            &format!("INSERT INTO dav_lock ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
            &[
                &lock.token,
                &lock.root,
                &lock.infinite,
                &lock.exclusive,
                &lock.owner,
                &lock.holder,
                &timeout,
                &ms(lock.expires),
            ],
        )
        .map_err(pg::to_io)?;
        tx.commit().map_err(pg::to_io)?;
        Ok(Ok(()))
    }

    /// [`Sqlite::dav_lock_refresh`].
    pub fn dav_lock_refresh(
        &self,
        token: &str,
        key: &str,
        holder: Option<&str>,
        timeout: Duration,
    ) -> io::Result<Option<Lock>> {
        let now = SystemTime::now();
        let sql = format!(
            "UPDATE dav_lock SET timeout_s = $4, expires_ms = $5
             WHERE token = $1 AND holder IS NOT DISTINCT FROM $3 AND expires_ms > $6
               AND (root = $2 OR (infinite AND right(root, 1) = '/' AND starts_with($2, root)))
             RETURNING {COLUMNS}"
        );
        let (secs, until) = (timeout.as_secs() as i64, ms(now + timeout));
        let row = self
            .client()?
            .query_opt(&sql, &[&token, &key, &holder, &secs, &until, &ms(now)])
            .map_err(pg::to_io)?;
        Ok(row.as_ref().map(lock_of))
    }

    /// [`Sqlite::dav_lock_release`].
    pub fn dav_lock_release(
        &self,
        token: &str,
        key: &str,
        holder: Option<&str>,
    ) -> io::Result<bool> {
        let gone = self
            .client()?
            .execute(
                "DELETE FROM dav_lock WHERE token = $1 AND holder IS NOT DISTINCT FROM $3
                   AND (root = $2 OR (infinite AND right(root, 1) = '/' AND starts_with($2, root)))",
                &[&token, &key, &holder],
            )
            .map_err(pg::to_io)?;
        Ok(gone > 0)
    }

    /// [`Sqlite::dav_lock_forget`].
    pub fn dav_lock_forget(&self, key: &str) -> io::Result<()> {
        let sql = match key.ends_with('/') {
            true => "DELETE FROM dav_lock WHERE starts_with(root, $1)",
            false => "DELETE FROM dav_lock WHERE root = $1",
        };
        self.client()?.execute(sql, &[&key]).map(drop).map_err(pg::to_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(root: &str, exclusive: bool, infinite: bool) -> Lock {
        Lock {
            token: format!("urn:uuid:{root}{exclusive}{infinite}{:?}", SystemTime::now()),
            root: root.into(),
            infinite,
            exclusive,
            owner: None,
            holder: None,
            timeout: Duration::from_secs(60),
            expires: SystemTime::now() + Duration::from_secs(60),
        }
    }

    #[test]
    fn locks_conflict_and_cover() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(dir.path()).unwrap();
        db.dav_lock_take(&lock("/d/", false, true)).unwrap().unwrap();
        db.dav_lock_take(&lock("/d/", false, true)).unwrap().unwrap();
        let under = db.dav_lock_take(&lock("/d/a", true, false)).unwrap();
        assert_eq!(under, Err(Refused::Conflict("/d/".into())), "under a shared infinite lock");
        db.dav_lock_take(&lock("/e", true, false)).unwrap().unwrap();
        assert!(db.dav_lock_take(&lock("/e", false, false)).unwrap().is_err());
        assert_eq!(db.dav_locks("/d/x/y", false).unwrap().len(), 2);
        assert_eq!(db.dav_locks("/", true).unwrap().len(), 3);
        db.dav_lock_forget("/d/").unwrap();
        assert_eq!(db.dav_locks("/", true).unwrap().len(), 1);
        let mut old = lock("/old", true, false);
        old.expires = SystemTime::now() - Duration::from_secs(1);
        db.dav_lock_take(&old).unwrap().unwrap();
        assert!(db.dav_locks("/old", false).unwrap().is_empty(), "an expired lock is gone");
    }
}
