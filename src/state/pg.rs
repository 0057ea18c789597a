//! The shared state in PostgreSQL, for any number of nodes: its connection pool, schema and
//! time limits, and nodes' heartbeats. The statements of each topic sit beside SQLite's in
//! that topic's file (`token.rs`, `credit.rs`, `object.rs`); the bucket store's namespace,
//! which SQLite has no form of, is in `namespace.rs`.
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
//!   from the bucket after [`super::namespace::BLOB_GRACE`], so a read that opened it before can still finish.
//!   A node killed mid-upload leaves a pending blob, doomed after [`super::namespace::PENDING_GRACE`] unless a
//!   row names it (a commit whose answer was lost).

use std::collections::HashMap;
use std::io;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postgres::{Client, NoTls, Statement, Transaction};

use super::credit::now;

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
CREATE TABLE IF NOT EXISTS dav_lock (
    token TEXT PRIMARY KEY,
    root TEXT COLLATE "C" NOT NULL,
    infinite BOOLEAN NOT NULL,
    exclusive BOOLEAN NOT NULL,
    owner TEXT,
    holder TEXT,
    timeout_s BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS property (
    path TEXT COLLATE "C" NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (path, name)
);
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

pub(super) fn to_io(e: postgres::Error) -> io::Error {
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

pub(super) fn now_ns() -> i64 {
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
pub(super) struct Pooled<'a> {
    pool: &'a Postgres,
    conn: Option<Conn>,
}

impl Pooled<'_> {
    /// `sql` prepared on this connection, once.
    pub(super) fn prepared(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
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
    pub(super) fn client(&self) -> io::Result<Pooled<'_>> {
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

    // --- Nodes --------------------------------------------------------------------------

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
}
