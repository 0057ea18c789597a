//! Credits: each account's balance, kept in step with its ledger inside one transaction, and
//! purchases of priced resources. `CHECK (balance >= 0)` backs the rule that a balance never
//! goes below zero; every change is a ledger entry, so a balance always equals the sum of
//! its account's entries.

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{OptionalExtension, Transaction, params};

use super::pg::{self, Postgres};
use super::{LedgerEntry, Sqlite, to_io};

/// One bought resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    /// The purchase's id.
    pub id: String,
    /// Who bought.
    pub account: String,
    /// The resource's path (`/shop/x.pdf`).
    pub path: String,
    /// Credits paid.
    pub price: u64,
    /// When, seconds since the epoch.
    pub at: i64,
}

impl Purchase {
    /// A new purchase of `path` by `account` at `price`, now, with a fresh id.
    pub fn new(account: &str, path: &str, price: u64) -> Purchase {
        Purchase {
            id: format!("{:016x}", rand::random::<u64>()),
            account: account.to_owned(),
            path: path.to_owned(),
            price,
            at: now(),
        }
    }
}

/// The outcome of a purchase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bought {
    /// Bought now; the balance left.
    New(Purchase, u64),
    /// Bought before; nothing was charged.
    Existing(Purchase, u64),
    /// The balance does not cover the price; nothing was charged.
    Insufficient(u64),
}

/// Sums over the whole ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreditTotals {
    /// Plan grants and top-ups.
    pub granted: u64,
    /// Purchases, refunds not subtracted.
    pub spent: u64,
    /// Refunds of purchases whose read failed.
    pub refunded: u64,
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `grant`, `top-up`, `adjustment`, `purchase` or `refund`.
    pub kind: String,
    /// Credits added (negative: taken).
    pub amount: i64,
    /// The resource, for purchases and refunds.
    pub path: Option<String>,
    /// When, seconds since the epoch.
    pub at: i64,
}

/// Seconds since the epoch.
/// The largest balance an account may have: 2^53 - 1, the largest whole number a JSON reader
/// (the web interface's JavaScript) holds exactly, and far from the ledger's i64 sums.
pub const MAX_BALANCE: u64 = (1 << 53) - 1;

/// True if adding `amount` to `balance` keeps it within 0 ..= [`MAX_BALANCE`].
pub(super) fn within_range(balance: u64, amount: i64) -> bool {
    balance.checked_add_signed(amount).is_some_and(|after| after <= MAX_BALANCE)
}

pub(super) fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn ensure_row(tx: &Transaction<'_>, account: &str) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO account (name, balance, granted) VALUES (?1, 0, 0)",
        params![account],
    )
    .map(drop)
}

fn record(
    tx: &Transaction<'_>,
    account: &str,
    kind: &str,
    amount: i64,
    path: Option<&str>,
) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE account SET balance = balance + ?2 WHERE name = ?1",
        params![account, amount],
    )?;
    tx.execute(
        "INSERT INTO ledger (account, kind, amount, path, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![account, kind, amount, path, now()],
    )
    .map(drop)
}

fn balance_in(tx: &Transaction<'_>, account: &str) -> rusqlite::Result<u64> {
    tx.query_row("SELECT balance FROM account WHERE name = ?1", params![account], |row| {
        row.get::<_, i64>(0)
    })
    .optional()
    .map(|b| b.unwrap_or(0).max(0) as u64)
}

fn purchase_in(
    tx: &Transaction<'_>,
    account: &str,
    path: &str,
) -> rusqlite::Result<Option<Purchase>> {
    tx.query_row(
        "SELECT id, account, path, price, at FROM purchase WHERE account = ?1 AND path = ?2",
        params![account, path],
        purchase_row,
    )
    .optional()
}

pub(super) fn purchase_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Purchase> {
    Ok(Purchase {
        id: row.get(0)?,
        account: row.get(1)?,
        path: row.get(2)?,
        price: row.get::<_, i64>(3)? as u64,
        at: row.get(4)?,
    })
}

impl Sqlite {
    /// Credits ever granted (plan grants and top-ups), spent on purchases, and refunded,
    /// from the ledger: every node's and every run's, so they survive restarts.
    pub fn credit_totals(&self) -> io::Result<CreditTotals> {
        let sum = |kinds: &str| {
            let sql =
                format!("SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE kind IN ({kinds})");
            self.db().query_row(&sql, [], |row| row.get::<_, i64>(0)).map_err(to_io)
        };
        Ok(CreditTotals {
            granted: sum("'grant', 'top-up'")?.unsigned_abs(),
            spent: sum("'purchase'")?.unsigned_abs(),
            refunded: sum("'refund'")?.unsigned_abs(),
        })
    }
    /// Grants a plan's credits the first time an account is seen; true if granted now.
    pub fn grant_once(&self, account: &str, credits: u64) -> io::Result<bool> {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        let mut db = self.db();
        let tx = db.transaction().map_err(to_io)?;
        ensure_row(&tx, account).map_err(to_io)?;
        let changed = tx
            .execute(
                "UPDATE account SET granted = 1 WHERE name = ?1 AND granted = 0",
                params![account],
            )
            .map_err(to_io)?;
        if changed == 1 && credits > 0 {
            record(&tx, account, "grant", credits as i64, None).map_err(to_io)?;
        }
        tx.commit().map_err(to_io)?;
        Ok(changed == 1)
    }

    /// The account's balance (0 if it has none yet).
    pub fn balance(&self, account: &str) -> io::Result<u64> {
        let mut db = self.db();
        let tx = db.transaction().map_err(to_io)?;
        balance_in(&tx, account).map_err(to_io)
    }

    /// Adds `amount` credits (negative takes them); `Err(balance)` if that would go below 0.
    pub fn add_credits(&self, account: &str, amount: i64) -> io::Result<Result<u64, u64>> {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        let mut db = self.db();
        let tx = db.transaction().map_err(to_io)?;
        ensure_row(&tx, account).map_err(to_io)?;
        let balance = balance_in(&tx, account).map_err(to_io)?;
        if !within_range(balance, amount) {
            return Ok(Err(balance));
        }
        let kind = if amount >= 0 { "top-up" } else { "adjustment" };
        record(&tx, account, kind, amount, None).map_err(to_io)?;
        let balance = balance_in(&tx, account).map_err(to_io)?;
        tx.commit().map_err(to_io)?;
        Ok(Ok(balance))
    }

    /// Buys `path` for `account` at `price`, at most once.
    pub fn buy(&self, account: &str, path: &str, price: u64) -> io::Result<Bought> {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        let mut db = self.db();
        let tx = db.transaction().map_err(to_io)?;
        ensure_row(&tx, account).map_err(to_io)?;
        let balance = balance_in(&tx, account).map_err(to_io)?;
        if let Some(existing) = purchase_in(&tx, account, path).map_err(to_io)? {
            return Ok(Bought::Existing(existing, balance));
        }
        if balance < price {
            return Ok(Bought::Insufficient(balance));
        }
        let purchase = Purchase::new(account, path, price);
        tx.execute(
            "INSERT INTO purchase (id, account, path, price, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![purchase.id, account, path, price as i64, purchase.at],
        )
        .map_err(to_io)?;
        record(&tx, account, "purchase", -(price as i64), Some(path)).map_err(to_io)?;
        let left = balance_in(&tx, account).map_err(to_io)?;
        tx.commit().map_err(to_io)?;
        Ok(Bought::New(purchase, left))
    }

    /// Undoes a purchase whose resource could not be delivered: the purchase goes and the
    /// price comes back, as a `refund` entry.
    pub fn refund(&self, purchase: &Purchase) -> io::Result<()> {
        let mut db = self.db();
        let tx = db.transaction().map_err(to_io)?;
        let removed = tx
            .execute("DELETE FROM purchase WHERE id = ?1", params![purchase.id])
            .map_err(to_io)?;
        if removed == 1 {
            record(&tx, &purchase.account, "refund", purchase.price as i64, Some(&purchase.path))
                .map_err(to_io)?;
        }
        tx.commit().map_err(to_io)
    }

    /// The account's purchase of `path`, if any.
    pub fn purchase(&self, account: &str, path: &str) -> io::Result<Option<Purchase>> {
        let mut db = self.db();
        let tx = db.transaction().map_err(to_io)?;
        purchase_in(&tx, account, path).map_err(to_io)
    }

    /// The account's purchases, oldest first.
    pub fn purchases_of(&self, account: &str) -> io::Result<Vec<Purchase>> {
        let db = self.db();
        let mut statement = db
            .prepare_cached(
                "SELECT id, account, path, price, at FROM purchase WHERE account = ?1 ORDER BY at, id",
            )
            .map_err(to_io)?;
        let rows = statement.query_map(params![account], purchase_row).map_err(to_io)?;
        rows.collect::<Result<_, _>>().map_err(to_io)
    }

    /// The account's ledger, oldest first.
    pub fn ledger(&self, account: &str) -> io::Result<Vec<Entry>> {
        let db = self.db();
        let mut statement = db
            .prepare_cached(
                "SELECT kind, amount, path, at FROM ledger WHERE account = ?1 ORDER BY id",
            )
            .map_err(to_io)?;
        let rows = statement
            .query_map(params![account], |row| {
                Ok(Entry {
                    kind: row.get(0)?,
                    amount: row.get(1)?,
                    path: row.get(2)?,
                    at: row.get(3)?,
                })
            })
            .map_err(to_io)?;
        rows.collect::<Result<_, _>>().map_err(to_io)
    }
}

// --- PostgreSQL: the same, shared by every node ----------------------------------------

impl Postgres {
    /// Runs `work` in one transaction on the account's row, locked (created if missing).
    fn on_account<T>(
        &self,
        account: &str,
        work: impl FnOnce(&mut postgres::Transaction<'_>, u64) -> Result<T, postgres::Error>,
    ) -> io::Result<T> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(pg::to_io)?;
        tx.execute(
            "INSERT INTO account (name, balance) VALUES ($1, 0) ON CONFLICT DO NOTHING",
            &[&account],
        )
        .map_err(pg::to_io)?;
        let balance: i64 = tx
            .query_one("SELECT balance FROM account WHERE name = $1 FOR UPDATE", &[&account])
            .map_err(pg::to_io)?
            .get(0);
        let done = work(&mut tx, balance.max(0) as u64).map_err(pg::to_io)?;
        tx.commit().map_err(pg::to_io)?;
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
            .map_err(pg::to_io)?;
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
                shared::record(tx, account, "grant", credits as i64, None)?;
            }
            Ok(changed == 1)
        })
    }

    /// The account's balance (0 if it has none yet).
    pub fn balance(&self, account: &str) -> io::Result<u64> {
        let row = self
            .client()?
            .query_opt("SELECT balance FROM account WHERE name = $1", &[&account])
            .map_err(pg::to_io)?;
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
            shared::record(tx, account, kind, amount, None)?;
            Ok(Ok(balance.saturating_add_signed(amount)))
        })
    }

    /// Buys `path` for `account` at `price`, at most once.
    pub fn buy(&self, account: &str, path: &str, price: u64) -> io::Result<Bought> {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        self.on_account(account, |tx, balance| {
            if let Some(existing) = shared::purchase_in(tx, account, path)? {
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
            shared::record(tx, account, "purchase", -(price as i64), Some(path))?;
            Ok(Bought::New(purchase, balance - price))
        })
    }

    /// Undoes a purchase whose resource could not be delivered.
    pub fn refund(&self, purchase: &Purchase) -> io::Result<()> {
        self.on_account(&purchase.account, |tx, _| {
            let removed = tx.execute("DELETE FROM purchase WHERE id = $1", &[&purchase.id])?;
            if removed == 1 {
                let amount = purchase.price as i64;
                shared::record(tx, &purchase.account, "refund", amount, Some(&purchase.path))?;
            }
            Ok(())
        })
    }

    /// The account's purchase of `path`, if any.
    pub fn purchase(&self, account: &str, path: &str) -> io::Result<Option<Purchase>> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(pg::to_io)?;
        shared::purchase_in(&mut tx, account, path).map_err(pg::to_io)
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
            .map_err(pg::to_io)?;
        Ok(rows.iter().map(shared::purchase_of).collect())
    }

    /// The account's ledger, oldest first.
    pub fn ledger(&self, account: &str) -> io::Result<Vec<LedgerEntry>> {
        let rows = self
            .client()?
            .query(
                "SELECT kind, amount, path, at FROM ledger WHERE account = $1 ORDER BY id",
                &[&account],
            )
            .map_err(pg::to_io)?;
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
}

/// PostgreSQL's forms of the helpers above.
mod shared {
    use postgres::Transaction;

    use super::{Purchase, now};

    pub(super) fn record(
        tx: &mut Transaction<'_>,
        account: &str,
        kind: &str,
        amount: i64,
        path: Option<&str>,
    ) -> Result<(), postgres::Error> {
        tx.execute(
            "UPDATE account SET balance = balance + $2 WHERE name = $1",
            &[&account, &amount],
        )?;
        tx.execute(
            "INSERT INTO ledger (account, kind, amount, path, at) VALUES ($1, $2, $3, $4, $5)",
            &[&account, &kind, &amount, &path, &now()],
        )
        .map(drop)
    }

    pub(super) fn purchase_of(row: &postgres::Row) -> Purchase {
        Purchase {
            id: row.get(0),
            account: row.get(1),
            path: row.get(2),
            price: row.get::<_, i64>(3).max(0) as u64,
            at: row.get(4),
        }
    }

    pub(super) fn purchase_in(
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_and_balance_move_together() {
        let dir = tempfile::tempdir().unwrap();
        let state = Sqlite::open(dir.path()).unwrap();
        assert!(state.grant_once("alice", 20).unwrap());
        assert!(!state.grant_once("alice", 20).unwrap(), "granted once");
        let Bought::New(bought, left) = state.buy("alice", "/shop/a", 15).unwrap() else {
            panic!()
        };
        assert_eq!(left, 5);
        assert!(matches!(state.buy("alice", "/shop/a", 15).unwrap(), Bought::Existing(_, 5)));
        assert_eq!(state.buy("alice", "/shop/b", 6).unwrap(), Bought::Insufficient(5));
        assert_eq!(state.add_credits("alice", -6).unwrap(), Err(5));
        assert_eq!(state.add_credits("alice", 10).unwrap(), Ok(15));
        state.refund(&bought).unwrap();
        state.refund(&bought).unwrap(); // twice is once
        assert_eq!(state.balance("alice").unwrap(), 30);
        assert!(state.purchase("alice", "/shop/a").unwrap().is_none());
        let ledger = state.ledger("alice").unwrap();
        let kinds: Vec<&str> = ledger.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["grant", "purchase", "top-up", "refund"]);
        assert_eq!(ledger.iter().map(|e| e.amount).sum::<i64>(), 30);
    }
}
