//! WebDAV dead properties (RFC 4918 §4): what a client set with PROPPATCH on a resource or
//! collection, kept by path as the XML it sent. A name is in Clark notation
//! (`{namespace}local`). The store moves and removes them with the path they belong to.

use std::io;

use rusqlite::params;

use super::pg::{self, Postgres};
use super::{Sqlite, to_io};

/// One change of a PROPPATCH: set a property to an XML value, or remove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyChange {
    /// The name, `{namespace}local`.
    pub name: String,
    /// The value as XML (the element's content), or `None` to remove it.
    pub value: Option<String>,
}

/// The longest value kept, and the most properties on one path: PROPPATCH is not storage.
pub const MAX_VALUE: usize = 64 * 1024;
/// See [`MAX_VALUE`].
pub const MAX_PER_PATH: u64 = 256;

/// Dead properties by path: `(path, (name, value))`.
pub type Within = Vec<(String, (String, String))>;

/// Whether `path` is `dir` itself or one of its direct members.
fn is_member(dir: &str, path: &str) -> bool {
    let Some(rest) = path.strip_prefix(dir) else { return false };
    match rest.find('/') {
        None => true,
        Some(i) => i + 1 == rest.len(),
    }
}

/// A PROPPATCH that would take a path past [`MAX_PER_PATH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooMany;

impl Sqlite {
    /// The dead properties of `path` (a key: `/a.txt`, `/docs/`), by name.
    pub fn properties(&self, path: &str) -> io::Result<Vec<(String, String)>> {
        let db = self.db();
        let mut statement = db
            .prepare_cached("SELECT name, value FROM property WHERE path = ?1 ORDER BY name")
            .map_err(to_io)?;
        let rows = statement
            .query_map(params![path], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(to_io)?;
        rows.collect::<Result<_, _>>().map_err(to_io)
    }

    /// The dead properties of `path` and, with `members`, of its direct members (`path` is
    /// then a collection's key): `(path, (name, value))`.
    pub fn properties_within(&self, path: &str, members: bool) -> io::Result<Within> {
        if !members {
            let own = self.properties(path)?;
            return Ok(own.into_iter().map(|p| (path.to_owned(), p)).collect());
        }
        let db = self.db();
        let mut statement = db
            .prepare_cached(
                "SELECT path, name, value FROM property
                 WHERE path >= ?1 AND path < ?1 || x'ff' ORDER BY path, name",
            )
            .map_err(to_io)?;
        let rows = statement
            .query_map(params![path], |row| Ok((row.get(0)?, (row.get(1)?, row.get(2)?))))
            .map_err(to_io)?;
        let all: Within = rows.collect::<Result<_, _>>().map_err(to_io)?;
        Ok(all.into_iter().filter(|(p, _)| is_member(path, p)).collect())
    }

    /// Gives each `(from, to)` path the dead properties of `from`, replacing what `to` had.
    pub fn copy_properties(&self, pairs: &[(String, String)]) -> io::Result<()> {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        let mut db = self.db();
        let tx = db.transaction().map_err(to_io)?;
        for (from, to) in pairs {
            tx.execute("DELETE FROM property WHERE path = ?1", params![to]).map_err(to_io)?;
            tx.execute(
                "INSERT INTO property (path, name, value)
                 SELECT ?2, name, value FROM property WHERE path = ?1",
                params![from, to],
            )
            .map_err(to_io)?;
        }
        tx.commit().map_err(to_io)
    }

    /// Applies `changes` to `path` in order, all or none.
    pub fn patch_properties(
        &self,
        path: &str,
        changes: &[PropertyChange],
    ) -> io::Result<Result<(), TooMany>> {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        let mut db = self.db();
        let tx = db.transaction().map_err(to_io)?;
        for change in changes {
            match &change.value {
                Some(value) => tx.execute(
                    "INSERT INTO property (path, name, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (path, name) DO UPDATE SET value = excluded.value",
                    params![path, change.name, value],
                ),
                None => tx.execute(
                    "DELETE FROM property WHERE path = ?1 AND name = ?2",
                    params![path, change.name],
                ),
            }
            .map_err(to_io)?;
        }
        let count: i64 = tx
            .query_row("SELECT count(*) FROM property WHERE path = ?1", params![path], |r| r.get(0))
            .map_err(to_io)?;
        if count as u64 > MAX_PER_PATH {
            return Ok(Err(TooMany));
        }
        tx.commit().map_err(to_io)?;
        Ok(Ok(()))
    }
}

impl Postgres {
    /// [`Sqlite::properties_within`].
    pub fn properties_within(&self, path: &str, members: bool) -> io::Result<Within> {
        let rows = match members {
            false => self
                .client()?
                .query("SELECT path, name, value FROM property WHERE path = $1", &[&path]),
            true => self.client()?.query(
                "SELECT path, name, value FROM property
                 WHERE path >= $1 AND path < $1 || chr(1114111) ORDER BY path, name",
                &[&path],
            ),
        }
        .map_err(pg::to_io)?;
        Ok(rows
            .iter()
            .map(|row| (row.get::<_, String>(0), (row.get(1), row.get(2))))
            .filter(|(p, _)| p == path || is_member(path, p))
            .collect())
    }

    /// [`Sqlite::copy_properties`].
    pub fn copy_properties(&self, pairs: &[(String, String)]) -> io::Result<()> {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(pg::to_io)?;
        for (from, to) in pairs {
            tx.execute("DELETE FROM property WHERE path = $1", &[to]).map_err(pg::to_io)?;
            tx.execute(
                "INSERT INTO property (path, name, value)
                 SELECT $2, name, value FROM property WHERE path = $1",
                &[from, to],
            )
            .map_err(pg::to_io)?;
        }
        tx.commit().map_err(pg::to_io)
    }

    /// [`Sqlite::properties`].
    pub fn properties(&self, path: &str) -> io::Result<Vec<(String, String)>> {
        let rows = self
            .client()?
            .query(
                "SELECT name, value FROM property WHERE path = $1 ORDER BY name COLLATE \"C\"",
                &[&path],
            )
            .map_err(pg::to_io)?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// [`Sqlite::patch_properties`].
    pub fn patch_properties(
        &self,
        path: &str,
        changes: &[PropertyChange],
    ) -> io::Result<Result<(), TooMany>> {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(pg::to_io)?;
        for change in changes {
            match &change.value {
                Some(value) => tx.execute(
                    "INSERT INTO property (path, name, value) VALUES ($1, $2, $3)
                     ON CONFLICT (path, name) DO UPDATE SET value = excluded.value",
                    &[&path, &change.name, value],
                ),
                None => tx.execute(
                    "DELETE FROM property WHERE path = $1 AND name = $2",
                    &[&path, &change.name],
                ),
            }
            .map_err(pg::to_io)?;
        }
        let count: i64 = tx
            .query_one("SELECT count(*) FROM property WHERE path = $1", &[&path])
            .map_err(pg::to_io)?
            .get(0);
        if count as u64 > MAX_PER_PATH {
            return Ok(Err(TooMany));
        }
        tx.commit().map_err(pg::to_io)?;
        Ok(Ok(()))
    }
}
