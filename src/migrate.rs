//! `larder migrate`: moves a single-machine installation (a folder and its embedded database)
//! to a bucket and a PostgreSQL database, then verifies it.
//!
//! - Refused when nodes have served from the target database (or it holds what no migration
//!   from this source put there), unless forced: their writes would be overwritten.
//! - State first, in one transaction: accounts with their balances, the ledger (ids kept),
//!   purchases and tokens; again on every run, adding what is new and removing the tokens and
//!   purchases the source no longer has.
//! - Then what the target holds and the source no longer does is deleted, and every
//!   collection and resource copied, read through the folder store as it would be served
//!   (ETag, type, owner and time kept, so clients' validators stay valid). A resource already
//!   in the target with the same ETag and size is skipped: an interrupted run resumes where it
//!   stopped, and a second run after stopping the old server copies only what changed.
//! - Verification reads every resource back from both sides through the stores and compares
//!   BLAKE3 hashes of the bytes, sizes and metadata; it names what the target has and the
//!   source has not, and compares tokens, purchases and each account's balance.
//!
//! Run it with the old server stopped (opening the folder store sweeps temporary files).

use std::collections::HashSet;
use std::io;
use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;

use crate::config::BucketAt;
use crate::path::ResourcePath;
use crate::state::State;
use crate::store::{BucketStore, ByteStream, Entry, FileStore, Store};

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Collections made (or found).
    pub collections: u64,
    /// Resources copied.
    pub copied: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Resources already there, skipped.
    pub skipped: u64,
    /// Resources and collections deleted from the target: the source no longer has them.
    pub deleted: u64,
    /// Tokens and purchases removed from the target: the source no longer has them.
    pub revoked: (u64, u64),
    /// Resources verified equal on both sides.
    pub verified: u64,
    /// Accounts whose balance matched.
    pub balances: u64,
    /// What differs; empty when the target matches the source.
    pub mismatches: Vec<String>,
}

/// Both sides of a migration.
pub struct Sides {
    /// Names the source in the target (its ROOT, made absolute).
    pub name: String,
    source: FileStore,
    source_state: Arc<State>,
    target: BucketStore,
    target_state: Arc<State>,
}

/// Opens both sides.
pub async fn open(
    root: &Path,
    state_dir: &Path,
    to: &BucketAt,
    database: &str,
) -> io::Result<Sides> {
    let source_state = Arc::new(State::open(state_dir)?);
    let source = FileStore::open(root, source_state.clone(), state_dir)?;
    let name = format!("file:{}", source.root().display());
    let target_state = Arc::new(State::connect_from_async(database).await?);
    let bucket = crate::store::bucket::connect(to)?;
    let target = BucketStore::open(bucket, &to.prefix, target_state.clone())?;
    Ok(Sides { name, source, source_state, target, target_state })
}

/// Every entry under the root, collections before their members, sorted.
async fn walk<S: Store>(source: &S) -> Result<Vec<Entry>, crate::store::Error> {
    let mut found = Vec::new();
    let mut stack = vec![ResourcePath::root()];
    while let Some(dir) = stack.pop() {
        let members = source.list(&dir).await?;
        for entry in members.iter().rev() {
            if entry.is_collection() {
                stack.push(entry.path.clone());
            }
        }
        found.extend(members.iter().cloned());
    }
    Ok(found)
}

async fn whole<S: Store>(
    store: &S,
    path: &ResourcePath,
) -> Result<Option<(Entry, ByteStream)>, crate::store::Error> {
    let Some((entry, Some(handle))) = store.open(path).await? else { return Ok(None) };
    let body = store.read(&handle, 0, entry.size).await?;
    Ok(Some((entry, body)))
}

async fn hash(mut body: ByteStream) -> io::Result<(u64, blake3::Hash)> {
    let mut hasher = blake3::Hasher::new();
    let mut size = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((size, hasher.finalize()))
}

fn failed(e: crate::store::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// Runs `work` on the blocking pool with the source's export and the target database.
async fn with_export<T: Send + 'static>(
    sides: &Sides,
    work: impl FnOnce(&crate::state::export::Export, &crate::state::pg::Postgres) -> io::Result<T>
    + Send
    + 'static,
) -> io::Result<T> {
    let (from, to) = (sides.source_state.clone(), sides.target_state.clone());
    tokio::task::spawn_blocking(move || {
        let export =
            from.sqlite().ok_or_else(|| io::Error::other("source is not SQLite"))?.export()?;
        let db = to.postgres().ok_or_else(|| io::Error::other("target is not PostgreSQL"))?;
        work(&export, db)
    })
    .await
    .map_err(io::Error::other)?
}

/// Why the target may not be written into, unless forced (see [`Postgres::serving`]).
///
/// [`Postgres::serving`]: crate::state::pg::Postgres::serving
pub async fn refusal(sides: &Sides) -> io::Result<Option<String>> {
    let (to, name) = (sides.target_state.clone(), sides.name.clone());
    tokio::task::spawn_blocking(move || match to.postgres() {
        Some(db) => db.serving(&name),
        None => Err(io::Error::other("target is not PostgreSQL")),
    })
    .await
    .map_err(io::Error::other)?
}

/// Copies the state and every resource that is not in the target yet, and deletes from the
/// target what the source no longer has; `progress` hears a line now and then.
pub async fn copy(sides: &Sides, progress: &dyn Fn(&str)) -> io::Result<Report> {
    let mut report = Report::default();
    let name = sides.name.clone();
    let (counts, revoked) = with_export(sides, move |export, db| {
        let revoked = db.import(export, &name)?;
        let counts = (
            export.accounts.len(),
            export.ledger.len(),
            export.purchases.len(),
            export.tokens.len(),
        );
        Ok((counts, revoked))
    })
    .await?;
    report.revoked = revoked;
    progress(&format!(
        "state: {} accounts, {} ledger entries, {} purchases, {} tokens",
        counts.0, counts.1, counts.2, counts.3
    ));
    let (source, target) = (&sides.source, &sides.target);
    let entries = walk(source).await.map_err(failed)?;
    let kept: HashSet<&ResourcePath> = entries.iter().map(|e| &e.path).collect();
    let mut gone: Vec<ResourcePath> = Vec::new();
    for there in walk(target).await.map_err(failed)? {
        if kept.contains(&there.path) {
            continue;
        }
        report.deleted += 1;
        if gone.iter().any(|g| there.path.starts_with(g)) {
            continue; // deleted with its collection
        }
        let deleted = target.delete(&there.path, true, |_| Ok::<(), ()>(())).await;
        deleted.map_err(failed)?.map_err(|()| io::Error::other("refused"))?;
        gone.push(there.path);
    }
    for entry in entries {
        if entry.is_collection() {
            target.import(&entry, None).await.map_err(failed)?;
            report.collections += 1;
            continue;
        }
        if let Some((there, _)) = target.open(&entry.path).await.map_err(failed)?
            && there.etag == entry.etag
            && there.size == entry.size
        {
            report.skipped += 1;
            continue;
        }
        // Opened again: the version read is the one described, even if it changed since.
        let Some((entry, body)) = whole(source, &entry.path).await.map_err(failed)? else {
            continue; // gone meanwhile
        };
        target.import(&entry, Some(body)).await.map_err(failed)?;
        report.copied += 1;
        report.bytes += entry.size;
        if report.copied % 500 == 0 {
            progress(&format!("{} resources copied, {} bytes", report.copied, report.bytes));
        }
    }
    Ok(report)
}

/// Compares every resource, token, purchase and balance of the source with the target's.
pub async fn verify(sides: &Sides, report: &mut Report) -> io::Result<()> {
    let (source, target) = (&sides.source, &sides.target);
    let entries = walk(source).await.map_err(failed)?;
    let kept: HashSet<&ResourcePath> = entries.iter().map(|e| &e.path).collect();
    for there in walk(target).await.map_err(failed)? {
        if !kept.contains(&there.path) {
            report.mismatches.push(format!("{}: in the target only", there.path));
        }
    }
    for entry in &entries {
        let path = &entry.path;
        if entry.is_collection() {
            match target.open(path).await.map_err(failed)? {
                Some((there, _)) if there.is_collection() && there.owner == entry.owner => {}
                Some((there, _)) if there.is_collection() => {
                    report.mismatches.push(format!("{path}: owner differs"));
                }
                _ => report.mismatches.push(format!("{path}: collection missing")),
            }
            continue;
        }
        let (Some((mine, from)), Some((there, to))) = (
            whole(source, path).await.map_err(failed)?,
            whole(target, path).await.map_err(failed)?,
        ) else {
            report.mismatches.push(format!("{path}: missing in the target"));
            continue;
        };
        let (a, b) = (hash(from).await?, hash(to).await?);
        let same_meta = (&mine.etag, &mine.content_type, &mine.owner)
            == (&there.etag, &there.content_type, &there.owner);
        if a != b || !same_meta {
            report.mismatches.push(format!("{path}: differs"));
        } else {
            report.verified += 1;
        }
    }
    let (balances, differences) = with_export(sides, |export, db| db.compare(export)).await?;
    report.balances = balances;
    report.mismatches.extend(differences);
    Ok(())
}
