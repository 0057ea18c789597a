//! The bucket store's namespace in PostgreSQL: which path names which immutable blob, with
//! its metadata, and the blobs' lives (pending while uploaded, doomed once replaced). How
//! concurrent nodes stay exact is said in [`super::pg`].

use std::io;
use std::time::Duration;

use postgres::Transaction;

use super::OverQuota;
use super::credit::now;
use super::pg::{Postgres, now_ns, to_io};

/// How long a replaced or deleted blob stays readable for reads that opened it before.
pub const BLOB_GRACE: Duration = Duration::from_secs(15 * 60);
/// How long an upload may stay unfinished before its blob is taken for abandoned.
pub const PENDING_GRACE: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a node that claimed doomed blobs has to delete them before another may.
const CLAIM_LEASE: Duration = Duration::from_secs(10 * 60);

/// One row of the namespace: a collection, or a resource and the blob holding its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The path without a trailing slash (`/docs`, `/docs/a.txt`; the root is `/`).
    pub path: String,
    /// True for collections.
    pub collection: bool,
    /// Length in bytes (0 for collections).
    pub size: u64,
    /// Last change, nanoseconds since the epoch.
    pub modified_ns: i64,
    /// The strong ETag's opaque value (resources).
    pub etag: Option<String>,
    /// The Content-Type given when it was stored.
    pub content_type: Option<String>,
    /// The account that created it.
    pub owner: Option<String>,
    /// The key of the blob in the bucket (resources).
    pub blob: Option<String>,
}

/// The columns [`row_of`] reads, in its order.
macro_rules! row_columns {
    () => {
        "path, collection, size, modified_ns, etag, content_type, owner, blob"
    };
}
const ENTRY_BY_PATH: &str = concat!("SELECT ", row_columns!(), " FROM entry WHERE path = $1");
const MEMBERS: &str =
    concat!("SELECT ", row_columns!(), " FROM entry WHERE parent = $1 ORDER BY path");

fn row_of(row: &postgres::Row) -> Row {
    Row {
        path: row.get(0),
        collection: row.get(1),
        size: row.get::<_, i64>(2).max(0) as u64,
        modified_ns: row.get(3),
        etag: row.get(4),
        content_type: row.get(5),
        owner: row.get(6),
        blob: row.get(7),
    }
}

/// Why a namespace change was refused.
#[derive(Debug)]
pub enum Refused {
    /// Nothing at the path.
    NotFound,
    /// A resource where a collection is needed, or the reverse.
    Conflict(String),
    /// A collection that still has members.
    NotEmpty,
    /// Past the owner's quota.
    OverQuota(OverQuota),
}

/// How a namespace change ended, other than done.
#[derive(Debug)]
pub enum Failed<R> {
    /// The caller's check refused, with its reason; nothing changed.
    Check(R),
    /// The namespace refused; nothing changed.
    Refused(Refused),
    /// The database failed; nothing changed.
    Io(io::Error),
}

impl<R> From<postgres::Error> for Failed<R> {
    fn from(e: postgres::Error) -> Self {
        Failed::Io(to_io(e))
    }
}

/// A new version of a resource, as the bucket store hands it to [`Postgres::put_entry`].
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// Length in bytes.
    pub size: u64,
    /// The strong ETag's opaque value.
    pub etag: String,
    /// The Content-Type the client sent.
    pub content_type: Option<String>,
    /// The account writing (the owner, unless the resource has one already).
    pub owner: Option<String>,
    /// The blob holding the bytes.
    pub blob: String,
}

/// The parent collection's key of `path` (`/docs/` for `/docs/a.txt`, `/` at the top).
pub fn parent_of(path: &str) -> &str {
    match path.trim_end_matches('/').rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    }
}

/// The ancestor collections of `path` below the root, top down, without trailing slashes.
fn ancestors(path: &str) -> Vec<&str> {
    path.match_indices('/').skip(1).map(|(i, _)| &path[..i]).collect()
}

fn lock(tx: &mut Transaction<'_>, key: &str, shared: bool) -> Result<(), postgres::Error> {
    let sql = if shared {
        "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))"
    } else {
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
    };
    tx.execute(sql, &[&key]).map(drop)
}

/// Takes `path`'s lock exclusively after its ancestors' shared, and returns its current row.
fn lock_path(tx: &mut Transaction<'_>, path: &str) -> Result<Option<Row>, postgres::Error> {
    for ancestor in ancestors(path) {
        lock(tx, ancestor, true)?;
    }
    lock(tx, path, false)?;
    Ok(tx.query_opt(ENTRY_BY_PATH, &[&path])?.as_ref().map(row_of))
}

/// The ancestors of `path` that are not there yet, top down.
fn missing_ancestors(tx: &mut Transaction<'_>, path: &str) -> Result<Vec<String>, postgres::Error> {
    let ancestors = ancestors(path);
    let there = tx.query("SELECT path FROM entry WHERE path = ANY($1)", &[&ancestors])?;
    let there: Vec<String> = there.iter().map(|row| row.get(0)).collect();
    Ok(ancestors.into_iter().filter(|a| !there.iter().any(|t| t == a)).map(str::to_owned).collect())
}

/// Takes `owner`'s lock and holds it to `quota`'s resources: its own other than `path`, and
/// when `path` is `new`, it and its missing ancestors (made for it, as its). Returns the
/// bytes of the others, for a check of their size.
fn count_resources<R>(
    tx: &mut Transaction<'_>,
    owner: &str,
    path: &str,
    quota: super::Quota,
    new: bool,
) -> Result<u64, Failed<R>> {
    lock(tx, &format!("owner:{owner}"), false)?;
    // Under the lock: the ancestors another write of the owner's made are there.
    let adding = match new {
        true => 1 + missing_ancestors(tx, path)?.len() as u64,
        false => 0,
    };
    let counted = tx.query_one(
        "SELECT COALESCE(SUM(size), 0)::BIGINT, COUNT(*) FROM entry
         WHERE owner = $1 AND path <> $2",
        &[&owner, &path],
    )?;
    let (others, count): (i64, i64) = (counted.get(0), counted.get(1));
    let (others, count) = (others.max(0) as u64, count.max(0) as u64);
    if count.saturating_add(adding) > quota.files {
        return Err(Failed::Refused(Refused::OverQuota(OverQuota {
            used: others,
            needed: 0,
            resources: Some(count),
        })));
    }
    Ok(others)
}

/// Makes every ancestor of `path` a collection (creating missing ones, as `owner`'s);
/// refuses if one is a resource.
fn ensure_ancestors<R>(
    tx: &mut Transaction<'_>,
    path: &str,
    at: i64,
    owner: Option<&str>,
) -> Result<(), Failed<R>> {
    let ancestors = ancestors(path);
    for ancestor in &ancestors {
        tx.execute(
            "INSERT INTO entry (path, parent, collection, modified_ns, owner)
             VALUES ($1, $2, true, $3, $4)
             ON CONFLICT (path) DO NOTHING",
            &[ancestor, &parent_of(ancestor), &at, &owner],
        )?;
    }
    let blocking = tx.query_opt(
        "SELECT path FROM entry WHERE path = ANY($1) AND NOT collection ORDER BY path LIMIT 1",
        &[&ancestors],
    )?;
    if let Some(row) = blocking {
        let path: String = row.get(0);
        return Err(Failed::Refused(Refused::Conflict(format!(
            "{path} is a resource, not a collection"
        ))));
    }
    Ok(())
}

/// Marks the parent of `path` changed (a collection's Last-Modified moves with its members).
fn touch_parent(tx: &mut Transaction<'_>, path: &str, at: i64) -> Result<(), postgres::Error> {
    let parent = parent_of(path);
    let parent = if parent == "/" { "/" } else { parent.trim_end_matches('/') };
    tx.execute(
        "UPDATE entry SET modified_ns = GREATEST(modified_ns, $2) WHERE path = $1",
        &[&parent, &at],
    )
    .map(drop)
}

fn doom(tx: &mut Transaction<'_>, blob: &str, after: i64) -> Result<(), postgres::Error> {
    tx.execute(
        "INSERT INTO blob_doomed (blob, after) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&blob, &after],
    )
    .map(drop)
}

impl Postgres {
    /// The row at `path` (without a trailing slash; `/` for the root).
    pub fn entry(&self, path: &str) -> io::Result<Option<Row>> {
        let mut client = self.client()?;
        let statement = client.prepared(ENTRY_BY_PATH).map_err(to_io)?;
        Ok(client.query_opt(&statement, &[&path]).map_err(to_io)?.as_ref().map(row_of))
    }

    /// The members of the collection whose key is `dir` (ending in `/`), sorted by name.
    pub fn members(&self, dir: &str) -> io::Result<Vec<Row>> {
        let mut client = self.client()?;
        let statement = client.prepared(MEMBERS).map_err(to_io)?;
        Ok(client.query(&statement, &[&dir]).map_err(to_io)?.iter().map(row_of).collect())
    }

    /// Registers `blob` as an upload in progress, before its first byte is sent.
    pub fn begin_upload(&self, blob: &str) -> io::Result<()> {
        self.client()?
            .execute("INSERT INTO blob_pending (blob, since) VALUES ($1, $2)", &[&blob, &now()])
            .map(drop)
            .map_err(to_io)
    }

    /// Forgets an upload that will not be committed (its blob is deleted, or doomed).
    pub fn abandon_upload(&self, blob: &str, deleted: bool) -> io::Result<()> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(to_io)?;
        if !deleted {
            doom(&mut tx, blob, now()).map_err(to_io)?;
        }
        tx.execute("DELETE FROM blob_pending WHERE blob = $1", &[&blob]).map_err(to_io)?;
        tx.commit().map_err(to_io)
    }

    /// Makes `new` the current version of the resource at `path`, in one transaction:
    /// takes the path's turn, runs `check` on the current row, holds the owner to `quota`,
    /// makes the ancestors collections, dooms the replaced blob. Returns whether the path was
    /// new, and the row as stored.
    pub fn put_entry<R>(
        &self,
        path: &str,
        new: NewVersion,
        quota: impl Fn(&str) -> Option<super::Quota>,
        check: impl FnOnce(Option<&Row>) -> Result<(), R>,
    ) -> Result<(bool, Row), Failed<R>> {
        fail::fail_point!("state-write", |_| Err(Failed::Io(io::Error::other(
            "fail point state-write"
        ))));
        let mut client = self.client().map_err(Failed::Io)?;
        let mut tx = client.transaction()?;
        let current = lock_path(&mut tx, path)?;
        if current.as_ref().is_some_and(|row| row.collection) {
            return Err(Failed::Refused(Refused::Conflict(format!("{path}/ is a collection"))));
        }
        check(current.as_ref()).map_err(Failed::Check)?;
        let writer = new.owner.clone();
        let owner = current.as_ref().and_then(|row| row.owner.clone()).or(new.owner);
        if let Some(owner) = &owner
            && let Some(quota) = quota(owner)
        {
            let replaced = current.as_ref().filter(|row| row.owner.as_ref() == Some(owner));
            let replacing = replaced.is_some();
            let replaced = replaced.map(|row| row.size).unwrap_or(0);
            // A new resource is the writer's, as are the collections made for it.
            let others = count_resources(&mut tx, owner, path, quota, !replacing)?;
            if others + new.size > quota.bytes {
                return Err(Failed::Refused(Refused::OverQuota(OverQuota {
                    used: others + replaced,
                    needed: new.size.saturating_sub(replaced),
                    resources: None,
                })));
            }
        }
        let at = now_ns();
        ensure_ancestors(&mut tx, path, at, writer.as_deref())?;
        let stored = Row {
            path: path.to_owned(),
            collection: false,
            size: new.size,
            modified_ns: at,
            etag: Some(new.etag),
            content_type: new.content_type,
            owner,
            blob: Some(new.blob),
        };
        tx.execute(
            "INSERT INTO entry (path, parent, collection, size, modified_ns, etag, content_type,
                                owner, blob)
             VALUES ($1, $2, false, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (path) DO UPDATE SET collection = false, size = $3, modified_ns = $4,
                 etag = $5, content_type = $6, owner = $7, blob = $8",
            &[
                &stored.path,
                &parent_of(path),
                &(stored.size as i64),
                &at,
                &stored.etag,
                &stored.content_type,
                &stored.owner,
                &stored.blob,
            ],
        )?;
        if let Some(old) = current.as_ref().and_then(|row| row.blob.as_deref()) {
            doom(&mut tx, old, now() + BLOB_GRACE.as_secs() as i64)?;
        }
        tx.execute("DELETE FROM blob_pending WHERE blob = $1", &[&stored.blob])?;
        touch_parent(&mut tx, path, at)?;
        tx.commit()?;
        Ok((current.is_none(), stored))
    }

    /// Makes the collection at `path` (and missing ancestors), as `owner`'s, held to `quota`;
    /// an existing one is kept.
    pub fn create_collection<R>(
        &self,
        path: &str,
        owner: Option<&str>,
        quota: Option<super::Quota>,
        check: impl FnOnce(Option<&Row>) -> Result<(), R>,
    ) -> Result<(bool, Row), Failed<R>> {
        let mut client = self.client().map_err(Failed::Io)?;
        let mut tx = client.transaction()?;
        let current = lock_path(&mut tx, path)?;
        if let Some(row) = &current
            && !row.collection
        {
            return Err(Failed::Refused(Refused::Conflict(format!("{path} is a resource"))));
        }
        check(current.as_ref()).map_err(Failed::Check)?;
        if let Some(row) = current {
            return Ok((false, row));
        }
        if let (Some(owner), Some(quota)) = (owner, quota) {
            count_resources(&mut tx, owner, path, quota, true)?;
        }
        let at = now_ns();
        ensure_ancestors(&mut tx, path, at, owner)?;
        tx.execute(
            "INSERT INTO entry (path, parent, collection, modified_ns, owner)
             VALUES ($1, $2, true, $3, $4)",
            &[&path, &parent_of(path), &at, &owner],
        )?;
        touch_parent(&mut tx, path, at)?;
        tx.commit()?;
        let row = Row {
            path: path.to_owned(),
            collection: true,
            size: 0,
            modified_ns: at,
            etag: None,
            content_type: None,
            owner: owner.map(str::to_owned),
            blob: None,
        };
        Ok((true, row))
    }

    /// Removes the resource or collection at `path` (with its members when `recursive`),
    /// dooming their blobs.
    pub fn delete_entry<R>(
        &self,
        path: &str,
        recursive: bool,
        check: impl FnOnce(&Row) -> Result<(), R>,
    ) -> Result<(), Failed<R>> {
        fail::fail_point!("state-write", |_| Err(Failed::Io(io::Error::other(
            "fail point state-write"
        ))));
        let mut client = self.client().map_err(Failed::Io)?;
        let mut tx = client.transaction()?;
        let Some(current) = lock_path(&mut tx, path)? else {
            return Err(Failed::Refused(Refused::NotFound));
        };
        check(&current).map_err(Failed::Check)?;
        let beneath = format!("{path}/");
        if current.collection && !recursive {
            let member =
                tx.query_opt("SELECT 1 FROM entry WHERE parent = $1 LIMIT 1", &[&beneath])?;
            if member.is_some() {
                return Err(Failed::Refused(Refused::NotEmpty));
            }
        }
        let gone = tx.query(
            "DELETE FROM entry WHERE path = $1 OR starts_with(path, $2) RETURNING blob",
            &[&path, &beneath],
        )?;
        // Dead properties go with their path (keyed `/a.txt`, `/docs/`): none passes to
        // whatever is made there next.
        tx.execute(
            "DELETE FROM property WHERE path = $1 OR starts_with(path, $2)",
            &[&path, &beneath],
        )?;
        let after = now() + BLOB_GRACE.as_secs() as i64;
        for row in gone {
            if let Some(blob) = row.get::<_, Option<String>>(0) {
                doom(&mut tx, &blob, after)?;
            }
        }
        touch_parent(&mut tx, path, now_ns())?;
        tx.commit()?;
        Ok(())
    }

    /// Puts a whole copied tree at `root` (which must not exist, in an existing collection) in
    /// one transaction: `rows` are its collections and resources, top down, whose blobs were
    /// copied and are pending; all `owner`'s, refused (nothing made) past its `quota`.
    pub fn adopt_tree(
        &self,
        root: &str,
        rows: &[Row],
        owner: Option<&str>,
        quota: Option<super::Quota>,
    ) -> Result<Row, Failed<()>> {
        fail::fail_point!("state-write", |_| Err(Failed::Io(io::Error::other(
            "fail point state-write"
        ))));
        let mut client = self.client().map_err(Failed::Io)?;
        let mut tx = client.transaction()?;
        if lock_path(&mut tx, root)?.is_some() {
            return Err(Failed::Refused(Refused::Conflict(format!("{root} is in the way"))));
        }
        let holder = parent_of(root);
        let holder = if holder == "/" { "/" } else { holder.trim_end_matches('/') };
        let held = tx.query_opt("SELECT collection FROM entry WHERE path = $1", &[&holder])?;
        if !held.is_some_and(|row| row.get::<_, bool>(0)) {
            let why = format!("{holder} is not a collection");
            return Err(Failed::Refused(Refused::Conflict(why)));
        }
        if let (Some(owner), Some(quota)) = (owner, quota) {
            lock(&mut tx, &format!("owner:{owner}"), false)?;
            let counted = tx.query_one(
                "SELECT COALESCE(SUM(size), 0)::BIGINT, COUNT(*) FROM entry WHERE owner = $1",
                &[&owner],
            )?;
            let (used, count): (i64, i64) = (counted.get(0), counted.get(1));
            let (used, count) = (used.max(0) as u64, count.max(0) as u64);
            let adding: u64 = rows.iter().map(|r| r.size).sum();
            if count + rows.len() as u64 > quota.files {
                let over = OverQuota { used, needed: 0, resources: Some(count) };
                return Err(Failed::Refused(Refused::OverQuota(over)));
            }
            if used + adding > quota.bytes {
                let over = OverQuota { used, needed: adding, resources: None };
                return Err(Failed::Refused(Refused::OverQuota(over)));
            }
        }
        let at = now_ns();
        for row in rows {
            tx.execute(
                "INSERT INTO entry (path, parent, collection, size, modified_ns, etag,
                                    content_type, owner, blob)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &row.path,
                    &parent_of(&row.path),
                    &row.collection,
                    &(row.size as i64),
                    &at,
                    &row.etag,
                    &row.content_type,
                    &owner,
                    &row.blob,
                ],
            )?;
            if let Some(blob) = &row.blob {
                tx.execute("DELETE FROM blob_pending WHERE blob = $1", &[blob])?;
            }
        }
        touch_parent(&mut tx, root, at)?;
        let made = tx.query_one(ENTRY_BY_PATH, &[&root])?;
        tx.commit()?;
        Ok(row_of(&made))
    }

    /// Renames `from` (and all beneath it) to `to` in one transaction: names only, since
    /// blobs are immutable; dead properties go along. A resource at `to` is replaced (its
    /// blob doomed); any other thing there, or no collection to hold `to`, is a conflict.
    /// `check` sees both rows under both paths' locks (taken in one order whoever asks).
    pub fn rename_entry<R>(
        &self,
        from: &str,
        to: &str,
        check: impl FnOnce(&Row, Option<&Row>) -> Result<(), R>,
    ) -> Result<Row, Failed<R>> {
        fail::fail_point!("state-write", |_| Err(Failed::Io(io::Error::other(
            "fail point state-write"
        ))));
        let mut client = self.client().map_err(Failed::Io)?;
        let mut tx = client.transaction()?;
        let (current, there) = if from < to {
            let a = lock_path(&mut tx, from)?;
            (a, lock_path(&mut tx, to)?)
        } else {
            let b = lock_path(&mut tx, to)?;
            (lock_path(&mut tx, from)?, b)
        };
        let Some(current) = current else {
            return Err(Failed::Refused(Refused::NotFound));
        };
        check(&current, there.as_ref()).map_err(Failed::Check)?;
        let holder = parent_of(to);
        let holder = if holder == "/" { "/" } else { holder.trim_end_matches('/') };
        let held = tx.query_opt("SELECT collection FROM entry WHERE path = $1", &[&holder])?;
        if !held.is_some_and(|row| row.get::<_, bool>(0)) {
            let why = format!("{holder} is not a collection");
            return Err(Failed::Refused(Refused::Conflict(why)));
        }
        let (from_beneath, to_beneath) = (format!("{from}/"), format!("{to}/"));
        if let Some(there) = there {
            if there.collection || current.collection {
                return Err(Failed::Refused(Refused::Conflict(format!("{to} is in the way"))));
            }
            tx.execute("DELETE FROM entry WHERE path = $1", &[&to])?;
            if let Some(blob) = &there.blob {
                doom(&mut tx, blob, now() + BLOB_GRACE.as_secs() as i64)?;
            }
        }
        // Property keys name collections with their slash: `/docs/`, `/docs/a.txt`.
        match current.collection {
            true => {
                tx.execute("DELETE FROM property WHERE starts_with(path, $1)", &[&to_beneath])?;
                tx.execute(
                    "UPDATE entry SET path = $2 || substr(path, length($1) + 1),
                         parent = $2 || substr(parent, length($1) + 1)
                     WHERE starts_with(path, $1)",
                    &[&from_beneath, &to_beneath],
                )?;
                tx.execute(
                    "UPDATE property SET path = $2 || substr(path, length($1) + 1)
                     WHERE starts_with(path, $1)",
                    &[&from_beneath, &to_beneath],
                )?;
            }
            false => {
                tx.execute("DELETE FROM property WHERE path = $1", &[&to])?;
                tx.execute("UPDATE property SET path = $2 WHERE path = $1", &[&from, &to])?;
            }
        }
        tx.execute(
            "UPDATE entry SET path = $2, parent = $3 WHERE path = $1",
            &[&from, &to, &parent_of(to)],
        )?;
        let at = now_ns();
        touch_parent(&mut tx, from, at)?;
        touch_parent(&mut tx, to, at)?;
        let moved = tx.query_one(ENTRY_BY_PATH, &[&to])?;
        tx.commit()?;
        Ok(row_of(&moved))
    }

    /// Puts `row` at its path as it is, owner, ETag and time included (`larder migrate`):
    /// ancestors become collections, a replaced blob is doomed, `row.blob` is no longer
    /// pending. An existing collection is kept.
    pub fn import_entry(&self, row: &Row) -> io::Result<()> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(to_io)?;
        let current = lock_path(&mut tx, &row.path).map_err(to_io)?;
        if row.collection && current.as_ref().is_some_and(|c| c.collection) {
            return Ok(());
        }
        ensure_ancestors::<()>(&mut tx, &row.path, row.modified_ns, None).map_err(|failed| {
            match failed {
                Failed::Io(e) => e,
                Failed::Refused(Refused::Conflict(why)) => io::Error::other(why),
                other => io::Error::other(format!("{other:?}")),
            }
        })?;
        tx.execute(
            "INSERT INTO entry (path, parent, collection, size, modified_ns, etag, content_type,
                                owner, blob)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (path) DO UPDATE SET collection = $3, size = $4, modified_ns = $5,
                 etag = $6, content_type = $7, owner = $8, blob = $9",
            &[
                &row.path,
                &parent_of(&row.path),
                &row.collection,
                &(row.size as i64),
                &row.modified_ns,
                &row.etag,
                &row.content_type,
                &row.owner,
                &row.blob,
            ],
        )
        .map_err(to_io)?;
        if let Some(old) = current.and_then(|c| c.blob).filter(|old| Some(old) != row.blob.as_ref())
        {
            doom(&mut tx, &old, now() + BLOB_GRACE.as_secs() as i64).map_err(to_io)?;
        }
        if let Some(blob) = &row.blob {
            tx.execute("DELETE FROM blob_pending WHERE blob = $1", &[blob]).map_err(to_io)?;
        }
        tx.commit().map_err(to_io)
    }

    /// Claims up to `limit` blobs that are due for deletion (doomed ones past their grace,
    /// and uploads abandoned for longer than [`PENDING_GRACE`]). The claim lasts
    /// `CLAIM_LEASE`: a node that dies before [`Postgres::forget_blobs`] leaves them to
    /// another.
    pub fn claim_blobs(&self, limit: i64) -> io::Result<Vec<String>> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(to_io)?;
        let now = now();
        let abandoned = now - PENDING_GRACE.as_secs() as i64;
        tx.execute(
            "WITH old AS (DELETE FROM blob_pending WHERE since < $1 RETURNING blob)
             INSERT INTO blob_doomed (blob, after)
                 SELECT blob, $2 FROM old WHERE NOT EXISTS (
                     SELECT 1 FROM entry WHERE entry.blob = old.blob)
             ON CONFLICT DO NOTHING",
            &[&abandoned, &now],
        )
        .map_err(to_io)?;
        let rows = tx
            .query(
                "UPDATE blob_doomed SET after = $2 WHERE blob IN (
                     SELECT blob FROM blob_doomed WHERE after <= $1 ORDER BY after LIMIT $3
                     FOR UPDATE SKIP LOCKED)
                 RETURNING blob",
                &[&now, &(now + CLAIM_LEASE.as_secs() as i64), &limit],
            )
            .map_err(to_io)?;
        tx.commit().map_err(to_io)?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Forgets blobs once deleted from the bucket.
    pub fn forget_blobs(&self, blobs: &[String]) -> io::Result<()> {
        self.client()?
            .execute("DELETE FROM blob_doomed WHERE blob = ANY($1)", &[&blobs])
            .map(drop)
            .map_err(to_io)
    }

    /// Blobs still referenced or in flight: everything a sweep of the bucket must keep.
    pub fn known_blobs(&self) -> io::Result<std::collections::HashSet<String>> {
        let rows = self
            .client()?
            .query(
                "SELECT blob FROM entry WHERE blob IS NOT NULL
                 UNION SELECT blob FROM blob_pending UNION SELECT blob FROM blob_doomed",
                &[],
            )
            .map_err(to_io)?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_and_ancestors() {
        assert_eq!(parent_of("/a/b/c.txt"), "/a/b/");
        assert_eq!(parent_of("/a"), "/");
        assert_eq!(parent_of("/a/b/"), "/a/");
        assert_eq!(ancestors("/a/b/c.txt"), ["/a", "/a/b"]);
        assert!(ancestors("/a").is_empty());
    }
}
