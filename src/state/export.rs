//! Moving the accounts, ledger, purchases and tokens of an embedded database into a shared
//! one (`larder migrate`). Importing is idempotent: rows keep their ids, so running it again
//! adds only what is new, removes the tokens and purchases the source no longer has (revoked,
//! refunded), and sets each balance to the source's, in one transaction.
//!
//! A database that nodes have served from is not written into: their writes (balances,
//! files) would be overwritten. [`Postgres::serving`] says why a database counts as such.

use std::collections::{HashMap, HashSet};
use std::io;

use super::credit::now;
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
    /// Why this database may not be migrated into from `source`, if it may not: a node has
    /// served from it (its heartbeat is there), it was migrated into from another source, or
    /// it holds accounts or files that no migration put there.
    pub fn serving(&self, source: &str) -> io::Result<Option<String>> {
        self.in_transaction(|tx| {
            let nodes = tx.query("SELECT name, started, seen FROM node ORDER BY seen DESC", &[])?;
            if let Some(node) = nodes.first() {
                let (name, seen): (String, i64) = (node.get(0), node.get(2));
                let ago = (now() - seen).max(0);
                return Ok(Some(format!(
                    "{} node(s) have served from it ({name} last said it was alive {ago} s \
                     ago); what they wrote would be overwritten",
                    nodes.len()
                )));
            }
            let sources = tx.query("SELECT source FROM migration", &[])?;
            if let Some(other) = sources.iter().map(|r| r.get::<_, String>(0)).find(|s| s != source)
            {
                return Ok(Some(format!("it was migrated into from {other}, not from {source}")));
            }
            if sources.is_empty() {
                let held = tx.query_one(
                    "SELECT (SELECT COUNT(*) FROM account), (SELECT COUNT(*) FROM entry) - 1",
                    &[],
                )?;
                let (accounts, entries): (i64, i64) = (held.get(0), held.get(1));
                if accounts + entries > 0 {
                    return Ok(Some(format!(
                        "it holds {accounts} accounts and {entries} files and folders that no \
                         migration put there"
                    )));
                }
            }
            Ok(None)
        })
    }

    /// Writes `export` from `source` in one transaction: new ledger entries, purchases and
    /// tokens are added (known ids are skipped), those the source no longer has removed, and
    /// balances set to the source's. Returns how many tokens and purchases were removed.
    pub fn import(&self, export: &Export, source: &str) -> io::Result<(u64, u64)> {
        self.in_transaction(|tx| {
            tx.execute(
                "INSERT INTO migration (source, at) VALUES ($1, $2)
                 ON CONFLICT (source) DO UPDATE SET at = $2",
                &[&source, &now()],
            )?;
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
            let tokens: Vec<&str> = export.tokens.iter().map(|t| t.id.as_str()).collect();
            let revoked = tx.execute("DELETE FROM token WHERE NOT (id = ANY($1))", &[&tokens])?;
            let purchases: Vec<&str> = export.purchases.iter().map(|p| p.id.as_str()).collect();
            let refunded =
                tx.execute("DELETE FROM purchase WHERE NOT (id = ANY($1))", &[&purchases])?;
            Ok((revoked, refunded))
        })
    }

    /// How this database differs from `export`: tokens and purchases on one side only, and
    /// balances. Returns how many accounts' balances matched, and the differences.
    pub fn compare(&self, export: &Export) -> io::Result<(u64, Vec<String>)> {
        let (tokens, purchases, balances) = self.in_transaction(|tx| {
            let column = |rows: Vec<postgres::Row>| -> HashSet<String> {
                rows.iter().map(|r| r.get(0)).collect()
            };
            let tokens = column(tx.query("SELECT id FROM token", &[])?);
            let purchases = column(tx.query("SELECT id FROM purchase", &[])?);
            let balances: HashMap<String, i64> = tx
                .query("SELECT name, balance FROM account", &[])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            Ok((tokens, purchases, balances))
        })?;
        let mut differences = Vec::new();
        let mut one_sided = |what: &str, there: &HashSet<String>, here: HashSet<&String>| {
            for id in here.iter().filter(|id| !there.contains(**id)) {
                differences.push(format!("{what} {id}: missing in the target"));
            }
            for id in there.iter().filter(|id| !here.contains(id)) {
                differences.push(format!("{what} {id}: in the target only"));
            }
        };
        one_sided("token", &tokens, export.tokens.iter().map(|t| &t.id).collect());
        one_sided("purchase", &purchases, export.purchases.iter().map(|p| &p.id).collect());
        let mut matched = 0;
        for (name, balance, _) in &export.accounts {
            let there = balances.get(name).copied().unwrap_or(0);
            if there == *balance {
                matched += 1;
            } else {
                differences.push(format!("account {name}: balance {balance} here, {there} there"));
            }
        }
        Ok((matched, differences))
    }
}
