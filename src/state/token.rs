//! Bearer tokens in the state database: only their SHA-256 is kept.

use std::io;

use rusqlite::{OptionalExtension, params};

use super::pg::{self, Postgres};
use super::{Sqlite, to_io};

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
    pub(super) fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
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

impl Sqlite {
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
}

// --- PostgreSQL: the same, shared by every node ----------------------------------------

/// The start of every token query: the columns `Postgres::tokens` reads, in its order.
macro_rules! select_tokens {
    () => {
        "SELECT id, account, hash, scope, read_only, created, expires FROM token"
    };
}

impl Postgres {
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
            .map_err(pg::to_io)
    }

    fn tokens(
        &self,
        sql: &'static str,
        value: &(dyn postgres::types::ToSql + Sync),
    ) -> io::Result<Vec<TokenRecord>> {
        let mut client = self.client()?;
        let statement = client.prepared(sql).map_err(pg::to_io)?;
        let rows = client.query(&statement, &[value]).map_err(pg::to_io)?;
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
            .map_err(pg::to_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let dir = tempfile::tempdir().unwrap();
        let state = Sqlite::open(dir.path()).unwrap();
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
