//! The shared state in PostgreSQL, for any number of nodes: the same tokens, credits and
//! purchases as the embedded database, and the namespace of the bucket store (which path
//! names which immutable blob, with its metadata).
//!
//! How concurrent nodes stay exact:
//! - Balances: every credit change locks the account's row (`FOR UPDATE`) and writes the
//!   ledger entry in the same transaction; `CHECK (balance >= 0)` backs it; a purchase is
//!   `UNIQUE (account, path)`.
//! - Namespace: a write to a path takes a transaction-scoped advisory lock on it, exclusive,
//!   after shared ones on each ancestor collection, top down. So writers of one path (on any
//!   node) take turns, and the caller's precondition `check` sees the current row and decides
//!   inside that turn: one winner. Deleting a collection holds it exclusively, so it waits
//!   for writes beneath it and none starts until it is done (no orphan rows).
//! - Quotas: the owner's advisory lock is taken after the path's, so an owner's writes sum
//!   its usage one at a time.
//! - Blobs: a row names its blob; an upload registers its blob as pending first, and the
//!   commit that makes it visible clears that. A replaced or deleted blob is doomed: deleted
//!   from the bucket after [`BLOB_GRACE`], so a read that opened it before can still finish.
//!   A node killed mid-upload leaves a pending blob, doomed after [`PENDING_GRACE`] unless a
//!   row names it (a commit whose answer was lost).

use std::collections::HashMap;
use std::io;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postgres::{Client, NoTls, Statement, Transaction};

use super::credit::now;
use super::{Bought, CreditTotals, LedgerEntry, OverQuota, Purchase, TokenRecord};

/// How long a replaced or deleted blob stays readable for reads that opened it before.
pub const BLOB_GRACE: Duration = Duration::from_secs(15 * 60);
/// How long an upload may stay unfinished before its blob is taken for abandoned.
pub const PENDING_GRACE: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a node that claimed doomed blobs has to delete them before another may.
const CLAIM_LEASE: Duration = Duration::from_secs(10 * 60);
/// Connections a node opens at most; past that, callers wait for one to be free.
const CONNECTIONS: usize = 32;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS token (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    hash BYTEA NOT NULL UNIQUE,
    scope TEXT NOT NULL,
    read_only BOOLEAN NOT NULL,
    created BIGINT NOT NULL,
    expires BIGINT
);
CREATE INDEX IF NOT EXISTS token_account ON token (account);
CREATE TABLE IF NOT EXISTS account (
    name TEXT PRIMARY KEY,
    balance BIGINT NOT NULL CHECK (balance >= 0),
    granted BOOLEAN NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS ledger (
    id BIGSERIAL PRIMARY KEY,
    account TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount BIGINT NOT NULL,
    path TEXT,
    at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_account ON ledger (account);
CREATE TABLE IF NOT EXISTS purchase (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    path TEXT NOT NULL,
    price BIGINT NOT NULL,
    at BIGINT NOT NULL,
    UNIQUE (account, path)
);
CREATE TABLE IF NOT EXISTS entry (
    path TEXT COLLATE "C" PRIMARY KEY,
    parent TEXT COLLATE "C" NOT NULL,
    collection BOOLEAN NOT NULL,
    size BIGINT NOT NULL DEFAULT 0,
    modified_ns BIGINT NOT NULL,
    etag TEXT,
    content_type TEXT,
    owner TEXT,
    blob TEXT
);
CREATE INDEX IF NOT EXISTS entry_parent ON entry (parent, path);
CREATE INDEX IF NOT EXISTS entry_owner ON entry (owner) WHERE owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS blob_pending (blob TEXT PRIMARY KEY, since BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS blob_doomed (blob TEXT PRIMARY KEY, after BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS node (name TEXT PRIMARY KEY, started BIGINT NOT NULL,
                                 seen BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS migration (source TEXT PRIMARY KEY, at BIGINT NOT NULL);
INSERT INTO entry (path, parent, collection, modified_ns) VALUES ('/', '', true, 0)
    ON CONFLICT DO NOTHING;
"#;

/// `config` with every wait bounded by `limit` (the dependency timeout as a new connection
/// is made, so a reload reaches connections made after it): connecting; each statement,
/// waits for locks included (the server cancels it: SQLSTATE 57014, taken for unavailable);
/// and a transaction left open by a node that stalled (the server ends the session and its
/// locks go with it). Without the notices of creating tables that are there.
fn limited(config: &postgres::Config, limit: Duration) -> postgres::Config {
    let mut config = config.clone();
    let ms = limit.as_millis().max(1);
    config.connect_timeout(limit);
    config.options(&format!(
        "-c client_min_messages=warning -c statement_timeout={ms} \
         -c idle_in_transaction_session_timeout={ms}"
    ));
    config
}

/// Serialises schema creation between nodes starting together.
const SCHEMA_LOCK: i64 = 0x6c61_7264_6572;

fn to_io(e: postgres::Error) -> io::Error {
    match unreachable(&e) {
        true => super::Unavailable::error("database", super::described(&e)),
        false => io::Error::other(super::described(&e)),
    }
}

/// Whether `e` says PostgreSQL could not be reached or did not answer (in time), rather than
/// that the statement was wrong: a closed connection, a failed connect or I/O, a timeout,
/// or the server's own connection and shutdown errors (SQLSTATE classes 08 and 57P, 57014
/// `query_canceled` from `statement_timeout`, 53300 `too_many_connections`).
fn unreachable(e: &postgres::Error) -> bool {
    use std::error::Error as _;
    if e.is_closed() || e.source().is_some_and(|s| s.is::<io::Error>()) {
        return true;
    }
    match e.code() {
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || code.starts_with("57P") || ["57014", "53300"].contains(&code)
        }
        None => e.to_string().starts_with("timeout") || e.to_string().contains("connecting"),
    }
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// A PostgreSQL database shared by every node, with a pool of at most [`CONNECTIONS`].
pub struct Postgres {
    config: postgres::Config,
    slots: Mutex<Slots>,
    freed: Condvar,
}

#[derive(Default)]
struct Slots {
    idle: Vec<Conn>,
    open: usize,
}

/// A connection and the statements prepared on it (a prepared query is one round trip;
/// a query by text is two).
struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
    /// When it was last handed back.
    used: Instant,
}

/// A connection idle longer than this is tried before it is handed out.
const CHECK_AFTER_IDLE: Duration = Duration::from_millis(100);
/// How long that try may take.
const VALID_WITHIN: Duration = Duration::from_secs(2);

impl Drop for Postgres {
    fn drop(&mut self) {
        // Each client drives its connection on a small runtime of its own, which may not be
        // dropped on an async worker: let a plain thread drop them.
        let idle = std::mem::take(&mut self.slots().idle);
        if !idle.is_empty() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

/// A pooled connection, handed back when dropped (unless broken).
struct Pooled<'a> {
    pool: &'a Postgres,
    conn: Option<Conn>,
}

impl Pooled<'_> {
    /// `sql` prepared on this connection, once.
    fn prepared(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        let conn = self.conn.as_mut().expect("present until dropped");
        if let Some(statement) = conn.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = conn.client.prepare(sql)?;
        conn.statements.insert(sql, statement.clone());
        Ok(statement)
    }
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.conn.as_ref().expect("present until dropped").client
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.conn.as_mut().expect("present until dropped").client
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let mut slots = self.pool.slots();
        if conn.client.is_closed() {
            slots.open -= 1;
        } else {
            slots.idle.push(Conn { used: Instant::now(), ..conn });
        }
        drop(slots);
        self.pool.freed.notify_one();
    }
}

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

/// The start of every token query: the columns `Postgres::tokens` reads, in its order.
macro_rules! select_tokens {
    () => {
        "SELECT id, account, hash, scope, read_only, created, expires FROM token"
    };
}

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
    /// Connects to `url` and creates larder's tables if missing.
    pub fn connect(url: &str) -> io::Result<Postgres> {
        let mut config: postgres::Config =
            url.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        config.application_name("larder");
        let pool = Postgres { config, slots: Mutex::new(Slots::default()), freed: Condvar::new() };
        let mut client = pool.client()?;
        client.execute("SELECT pg_advisory_lock($1)", &[&SCHEMA_LOCK]).map_err(to_io)?;
        let made = client.batch_execute(SCHEMA).map_err(to_io);
        client.execute("SELECT pg_advisory_unlock($1)", &[&SCHEMA_LOCK]).map_err(to_io)?;
        made?;
        drop(client);
        Ok(pool)
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection: an idle one, a new one while fewer than [`CONNECTIONS`] are open, or
    /// the next one handed back.
    fn client(&self) -> io::Result<Pooled<'_>> {
        let mut slots = self.slots();
        loop {
            if let Some(mut conn) = slots.idle.pop() {
                // A connection in steady use is handed out as it is. One that sat idle may
                // have outlived its server (a restart takes longer than this): it is tried
                // first with a round trip, as r2d2 tries every one, and replaced if dead, so
                // no request fails on it.
                if conn.used.elapsed() < CHECK_AFTER_IDLE {
                    return Ok(Pooled { pool: self, conn: Some(conn) });
                }
                drop(slots);
                if conn.client.is_valid(VALID_WITHIN).is_ok() {
                    return Ok(Pooled { pool: self, conn: Some(conn) });
                }
                drop(conn);
                slots = self.slots();
                slots.open -= 1;
                continue;
            }
            if slots.open < CONNECTIONS {
                slots.open += 1;
                break;
            }
            let (next, waited) = self
                .freed
                .wait_timeout(slots, super::dependency_timeout())
                .unwrap_or_else(|e| e.into_inner());
            if waited.timed_out() {
                // Every connection is taken, by requests that wait for a frozen server.
                return Err(super::Unavailable::error("database", "no connection free in time"));
            }
            slots = next;
        }
        drop(slots);
        match limited(&self.config, super::dependency_timeout()).connect(NoTls) {
            Ok(client) => {
                let conn = Conn { client, statements: HashMap::new(), used: Instant::now() };
                Ok(Pooled { pool: self, conn: Some(conn) })
            }
            Err(e) => {
                self.slots().open -= 1;
                self.freed.notify_one();
                Err(to_io(e))
            }
        }
    }

    /// Runs `work` in one transaction, committed if it succeeds.
    pub(super) fn in_transaction<T>(
        &self,
        work: impl FnOnce(&mut Transaction<'_>) -> Result<T, postgres::Error>,
    ) -> io::Result<T> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(to_io)?;
        let done = work(&mut tx).map_err(to_io)?;
        tx.commit().map_err(to_io)?;
        Ok(done)
    }

    // --- Tokens -------------------------------------------------------------------------

    /// Stores a new token.
    pub fn insert_token(&self, token: &TokenRecord) -> io::Result<()> {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        self.client()?
            .execute(
                "INSERT INTO token (id, account, hash, scope, read_only, created, expires)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &token.id,
                    &token.account,
                    &token.hash,
                    &token.scope,
                    &token.read_only,
                    &token.created,
                    &token.expires,
                ],
            )
            .map(drop)
            .map_err(to_io)
    }

    fn tokens(
        &self,
        sql: &'static str,
        value: &(dyn postgres::types::ToSql + Sync),
    ) -> io::Result<Vec<TokenRecord>> {
        let mut client = self.client()?;
        let statement = client.prepared(sql).map_err(to_io)?;
        let rows = client.query(&statement, &[value]).map_err(to_io)?;
        Ok(rows
            .iter()
            .map(|row| TokenRecord {
                id: row.get(0),
                account: row.get(1),
                hash: row.get(2),
                scope: row.get(3),
                read_only: row.get(4),
                created: row.get(5),
                expires: row.get(6),
            })
            .collect())
    }

    /// The token whose SHA-256 is `hash`, if it exists (expired or not).
    pub fn token_by_hash(&self, hash: &[u8]) -> io::Result<Option<TokenRecord>> {
        Ok(self.tokens(concat!(select_tokens!(), " WHERE hash = $1"), &hash)?.pop())
    }

    /// An account's tokens, oldest first.
    pub fn tokens_of(&self, account: &str) -> io::Result<Vec<TokenRecord>> {
        self.tokens(concat!(select_tokens!(), " WHERE account = $1 ORDER BY created, id"), &account)
    }

    /// Revokes an account's token; false if it has none with this id.
    pub fn delete_token(&self, account: &str, id: &str) -> io::Result<bool> {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        self.client()?
            .execute("DELETE FROM token WHERE account = $1 AND id = $2", &[&account, &id])
            .map(|n| n > 0)
            .map_err(to_io)
    }

    // --- Credits ------------------------------------------------------------------------

    /// Runs `work` in one transaction on the account's row, locked (created if missing).
    fn on_account<T>(
        &self,
        account: &str,
        work: impl FnOnce(&mut Transaction<'_>, u64) -> Result<T, postgres::Error>,
    ) -> io::Result<T> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(to_io)?;
        tx.execute(
            "INSERT INTO account (name, balance) VALUES ($1, 0) ON CONFLICT DO NOTHING",
            &[&account],
        )
        .map_err(to_io)?;
        let balance: i64 = tx
            .query_one("SELECT balance FROM account WHERE name = $1 FOR UPDATE", &[&account])
            .map_err(to_io)?
            .get(0);
        let done = work(&mut tx, balance.max(0) as u64).map_err(to_io)?;
        tx.commit().map_err(to_io)?;
        Ok(done)
    }

    /// Credits ever granted, spent and refunded, from the ledger.
    pub fn credit_totals(&self) -> io::Result<CreditTotals> {
        let row = self
            .client()?
            .query_one(
                "SELECT
                   COALESCE(SUM(amount) FILTER (WHERE kind IN ('grant', 'top-up')), 0)::BIGINT,
                   COALESCE(SUM(amount) FILTER (WHERE kind = 'purchase'), 0)::BIGINT,
                   COALESCE(SUM(amount) FILTER (WHERE kind = 'refund'), 0)::BIGINT
                 FROM ledger",
                &[],
            )
            .map_err(to_io)?;
        Ok(CreditTotals {
            granted: row.get::<_, i64>(0).unsigned_abs(),
            spent: row.get::<_, i64>(1).unsigned_abs(),
            refunded: row.get::<_, i64>(2).unsigned_abs(),
        })
    }

    /// Grants a plan's credits the first time an account is seen; true if granted now.
    pub fn grant_once(&self, account: &str, credits: u64) -> io::Result<bool> {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        self.on_account(account, |tx, _| {
            let changed = tx.execute(
                "UPDATE account SET granted = true WHERE name = $1 AND NOT granted",
                &[&account],
            )?;
            if changed == 1 && credits > 0 {
                record(tx, account, "grant", credits as i64, None)?;
            }
            Ok(changed == 1)
        })
    }

    /// The account's balance (0 if it has none yet).
    pub fn balance(&self, account: &str) -> io::Result<u64> {
        let row = self
            .client()?
            .query_opt("SELECT balance FROM account WHERE name = $1", &[&account])
            .map_err(to_io)?;
        Ok(row.map(|row| row.get::<_, i64>(0).max(0) as u64).unwrap_or(0))
    }

    /// Adds `amount` credits (negative takes them); `Err(balance)` if that would go below 0.
    pub fn add_credits(&self, account: &str, amount: i64) -> io::Result<Result<u64, u64>> {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        self.on_account(account, |tx, balance| {
            if !super::credit::within_range(balance, amount) {
                return Ok(Err(balance));
            }
            let kind = if amount >= 0 { "top-up" } else { "adjustment" };
            record(tx, account, kind, amount, None)?;
            Ok(Ok(balance.saturating_add_signed(amount)))
        })
    }

    /// Buys `path` for `account` at `price`, at most once.
    pub fn buy(&self, account: &str, path: &str, price: u64) -> io::Result<Bought> {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        self.on_account(account, |tx, balance| {
            if let Some(existing) = purchase_in(tx, account, path)? {
                return Ok(Bought::Existing(existing, balance));
            }
            if balance < price {
                return Ok(Bought::Insufficient(balance));
            }
            let purchase = Purchase::new(account, path, price);
            tx.execute(
                "INSERT INTO purchase (id, account, path, price, at) VALUES ($1, $2, $3, $4, $5)",
                &[&purchase.id, &account, &path, &(price as i64), &purchase.at],
            )?;
            record(tx, account, "purchase", -(price as i64), Some(path))?;
            Ok(Bought::New(purchase, balance - price))
        })
    }

    /// Undoes a purchase whose resource could not be delivered.
    pub fn refund(&self, purchase: &Purchase) -> io::Result<()> {
        self.on_account(&purchase.account, |tx, _| {
            let removed = tx.execute("DELETE FROM purchase WHERE id = $1", &[&purchase.id])?;
            if removed == 1 {
                let amount = purchase.price as i64;
                record(tx, &purchase.account, "refund", amount, Some(&purchase.path))?;
            }
            Ok(())
        })
    }

    /// The account's purchase of `path`, if any.
    pub fn purchase(&self, account: &str, path: &str) -> io::Result<Option<Purchase>> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(to_io)?;
        purchase_in(&mut tx, account, path).map_err(to_io)
    }

    /// The account's purchases, oldest first.
    pub fn purchases_of(&self, account: &str) -> io::Result<Vec<Purchase>> {
        let rows = self
            .client()?
            .query(
                "SELECT id, account, path, price, at FROM purchase WHERE account = $1
                 ORDER BY at, id",
                &[&account],
            )
            .map_err(to_io)?;
        Ok(rows.iter().map(purchase_of).collect())
    }

    /// The account's ledger, oldest first.
    pub fn ledger(&self, account: &str) -> io::Result<Vec<LedgerEntry>> {
        let rows = self
            .client()?
            .query(
                "SELECT kind, amount, path, at FROM ledger WHERE account = $1 ORDER BY id",
                &[&account],
            )
            .map_err(to_io)?;
        Ok(rows
            .iter()
            .map(|row| LedgerEntry {
                kind: row.get(0),
                amount: row.get(1),
                path: row.get(2),
                at: row.get(3),
            })
            .collect())
    }

    // --- Usage --------------------------------------------------------------------------

    /// Says that the node `name`, serving since `started` (Unix seconds), is alive: what
    /// `larder migrate` looks for before it writes into a database.
    pub fn heartbeat(&self, name: &str, started: i64) -> io::Result<()> {
        self.client()?
            .execute(
                "INSERT INTO node (name, started, seen) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET started = $2, seen = $3",
                &[&name, &started, &now()],
            )
            .map(drop)
            .map_err(to_io)
    }

    /// One round trip to the database, for readiness.
    pub fn ping(&self) -> io::Result<()> {
        self.client()?.simple_query("SELECT 1").map(drop).map_err(to_io)
    }

    /// Bytes that owned resources take, all owners together.
    pub fn total_usage(&self) -> io::Result<u64> {
        let row = self
            .client()?
            .query_one(
                "SELECT COALESCE(SUM(size), 0)::BIGINT FROM entry
                 WHERE owner IS NOT NULL AND NOT collection",
                &[],
            )
            .map_err(to_io)?;
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
            .map_err(to_io)?;
        Ok((row.get::<_, i64>(0).max(0) as u64, row.get::<_, i64>(1).max(0) as u64))
    }

    // --- Namespace ----------------------------------------------------------------------

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

fn record(
    tx: &mut Transaction<'_>,
    account: &str,
    kind: &str,
    amount: i64,
    path: Option<&str>,
) -> Result<(), postgres::Error> {
    tx.execute("UPDATE account SET balance = balance + $2 WHERE name = $1", &[&account, &amount])?;
    tx.execute(
        "INSERT INTO ledger (account, kind, amount, path, at) VALUES ($1, $2, $3, $4, $5)",
        &[&account, &kind, &amount, &path, &now()],
    )
    .map(drop)
}

fn purchase_of(row: &postgres::Row) -> Purchase {
    Purchase {
        id: row.get(0),
        account: row.get(1),
        path: row.get(2),
        price: row.get::<_, i64>(3).max(0) as u64,
        at: row.get(4),
    }
}

fn purchase_in(
    tx: &mut Transaction<'_>,
    account: &str,
    path: &str,
) -> Result<Option<Purchase>, postgres::Error> {
    let row = tx.query_opt(
        "SELECT id, account, path, price, at FROM purchase WHERE account = $1 AND path = $2",
        &[&account, &path],
    )?;
    Ok(row.as_ref().map(purchase_of))
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
