//! Moving the accounts, ledger, purchases and tokens of an embedded database into a shared
//! one (`larder migrate`). Importing is idempotent: rows keep their ids, so running it again
//! adds only what is new, and each balance is set to the source's, in one transaction.

use std::io;

use super::credit::purchase_row;
use super::pg::Postgres;
use super::{LedgerEntry, Purchase, Sqlite, TokenRecord, to_io};

/// Everything but the resources' metadata.
#[derive(Debug, Default)]
pub struct Export {
    /// (name, balance, plan credits granted).
    pub accounts: Vec<(String, i64, bool)>,
    /// (id, account, entry), in id order.
    pub ledger: Vec<(i64, String, LedgerEntry)>,
    /// Every purchase.
    pub purchases: Vec<Purchase>,
    /// Every token.
    pub tokens: Vec<TokenRecord>,
}

impl Sqlite {
    /// Reads everything but the resources' metadata, in one transaction.
    pub fn export(&self) -> io::Result<Export> {
        let mut db = self.db();
        let tx = db.transaction().map_err(to_io)?;
        let accounts = tx
            .prepare("SELECT name, balance, granted FROM account")
            .and_then(|mut rows| {
                rows.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                    .collect::<Result<_, _>>()
            })
            .map_err(to_io)?;
        let ledger = tx
            .prepare("SELECT id, account, kind, amount, path, at FROM ledger ORDER BY id")
            .and_then(|mut rows| {
                rows.query_map([], |row| {
                    let entry = LedgerEntry {
                        kind: row.get(2)?,
                        amount: row.get(3)?,
                        path: row.get(4)?,
                        at: row.get(5)?,
                    };
                    Ok((row.get(0)?, row.get(1)?, entry))
                })?
                .collect::<Result<_, _>>()
            })
            .map_err(to_io)?;
        let purchases = tx
            .prepare("SELECT id, account, path, price, at FROM purchase ORDER BY at, id")
            .and_then(|mut rows| rows.query_map([], purchase_row)?.collect::<Result<_, _>>())
            .map_err(to_io)?;
        let tokens = tx
            .prepare(
                "SELECT id, account, hash, scope, read_only, created, expires FROM token
                 ORDER BY created, id",
            )
            .and_then(|mut rows| {
                rows.query_map([], TokenRecord::from_row)?.collect::<Result<_, _>>()
            })
            .map_err(to_io)?;
        Ok(Export { accounts, ledger, purchases, tokens })
    }
}

impl Postgres {
    /// Writes `export` in one transaction: new ledger entries, purchases and tokens are
    /// added (known ids are skipped), and balances set to the source's.
    pub fn import(&self, export: &Export) -> io::Result<()> {
        self.in_transaction(|tx| {
            for (name, balance, granted) in &export.accounts {
                tx.execute(
                    "INSERT INTO account (name, balance, granted) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET balance = $2, granted = $3",
                    &[name, balance, granted],
                )?;
            }
            for (id, account, entry) in &export.ledger {
                tx.execute(
                    "INSERT INTO ledger (id, account, kind, amount, path, at)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                    &[id, account, &entry.kind, &entry.amount, &entry.path, &entry.at],
                )?;
            }
            tx.execute(
                "SELECT setval(pg_get_serial_sequence('ledger', 'id'),
                               GREATEST((SELECT COALESCE(MAX(id), 0) FROM ledger), 1))",
                &[],
            )?;
            for p in &export.purchases {
                tx.execute(
                    "INSERT INTO purchase (id, account, path, price, at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    &[&p.id, &p.account, &p.path, &(p.price as i64), &p.at],
                )?;
            }
            for t in &export.tokens {
                tx.execute(
                    "INSERT INTO token (id, account, hash, scope, read_only, created, expires)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                    &[&t.id, &t.account, &t.hash, &t.scope, &t.read_only, &t.created, &t.expires],
                )?;
            }
            Ok(())
        })
    }
}
