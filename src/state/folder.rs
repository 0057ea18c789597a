//! Folders an account made: they count among the resources its plan allows, as its files do.
//!
//! A folder's row is committed before the folder is made, so a crash between leaves a row
//! without its folder (one too many counted until [`Sqlite::reconcile_folders`] at the next
//! start), never a folder that its owner's count misses. Folders are keyed as collections
//! (`/docs/`), so a collection's removal takes the rows beneath it by prefix.

use std::collections::HashMap;
use std::io;

use rusqlite::{OptionalExtension, params};

use super::{OverQuota, Quota, Sqlite, to_io};

impl Sqlite {
    /// Records `owner` as the owner of the folders `keys` (each ending in `/`), about to be
    /// made. With `quota`, refuses (recording nothing) if the owner's resources, these
    /// folders and `then` more included (the file a PUT puts in them), would exceed it.
    pub fn claim_folders(
        &self,
        owner: &str,
        keys: &[String],
        then: u64,
        quota: Option<Quota>,
    ) -> io::Result<Result<(), OverQuota>> {
        fail::fail_point!("state-write", |_| Err(io::Error::other("fail point state-write")));
        let mut db = self.db();
        let tx = db.transaction().map_err(to_io)?;
        let mut added = 0;
        {
            // A row whose folder is gone (removed outside larder) goes to the new maker;
            // a row that is the owner's already changes nothing, and adds nothing.
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO folder (path, owner) VALUES (?1, ?2)
                     ON CONFLICT (path) DO UPDATE SET owner = excluded.owner
                     WHERE owner != excluded.owner",
                )
                .map_err(to_io)?;
            for key in keys {
                debug_assert!(key.ends_with('/'));
                added += insert.execute(params![key, owner]).map_err(to_io)? as u64;
            }
        }
        if let Some(quota) = quota {
            let (bytes, count) = super::object::holdings_in(&tx, owner)?;
            if count.saturating_add(then) > quota.files {
                let resources = Some(count.saturating_sub(added));
                return Ok(Err(OverQuota { used: bytes, needed: 0, resources }));
            }
        }
        tx.commit().map_err(to_io)?;
        Ok(Ok(()))
    }

    /// The account that made the folder `key` (ending in `/`), if larder knows.
    pub fn folder_owner(&self, key: &str) -> io::Result<Option<String>> {
        let db = self.db();
        let mut statement =
            db.prepare_cached("SELECT owner FROM folder WHERE path = ?1").map_err(to_io)?;
        statement.query_row(params![key], |row| row.get(0)).optional().map_err(to_io)
    }

    /// The owners of the folders directly in the collection `dir` (ending in `/`), by key.
    pub fn folders_in(&self, dir: &str) -> io::Result<HashMap<String, String>> {
        let db = self.db();
        let mut statement = db
            .prepare_cached(
                "SELECT path, owner FROM folder
                 WHERE path > ?1 AND path < ?1 || x'ff'
                   AND instr(substr(path, length(?1) + 1), '/') = length(path) - length(?1)",
            )
            .map_err(to_io)?;
        let rows = statement
            .query_map(params![dir], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(to_io)?;
        rows.collect::<Result<_, _>>().map_err(to_io)
    }

    /// Forgets the folders that `exists` says are gone (a crash between a row and its
    /// folder, or a removal outside larder). Returns how many.
    pub fn reconcile_folders(&self, exists: impl Fn(&str) -> bool) -> io::Result<usize> {
        let mut db = self.db();
        let tx = db.transaction().map_err(to_io)?;
        let keys: Vec<String> = {
            let mut statement = tx.prepare("SELECT path FROM folder").map_err(to_io)?;
            let rows = statement.query_map([], |row| row.get(0)).map_err(to_io)?;
            rows.collect::<Result<_, _>>().map_err(to_io)?
        };
        let mut gone = 0;
        for key in keys.iter().filter(|key| !exists(key)) {
            gone +=
                tx.execute("DELETE FROM folder WHERE path = ?1", params![key]).map_err(to_io)?;
        }
        tx.commit().map_err(to_io)?;
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&str]) -> Vec<String> {
        list.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn folders_count_and_a_refused_claim_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = Sqlite::open(dir.path()).unwrap();
        let quota = Some(Quota { bytes: u64::MAX, files: 3 });
        state.claim_folders("bob", &keys(&["/a/", "/a/b/"]), 1, quota).unwrap().unwrap();
        assert_eq!(state.holdings("bob").unwrap(), (0, 2));
        // Two more folders and a file would make five.
        let refused = state.claim_folders("bob", &keys(&["/c/", "/c/d/"]), 1, quota).unwrap();
        assert_eq!(refused, Err(OverQuota { used: 0, needed: 0, resources: Some(2) }));
        assert_eq!(state.holdings("bob").unwrap(), (0, 2));
        assert_eq!(state.folder_owner("/c/").unwrap(), None);
        // Claiming what is already bob's adds nothing.
        state.claim_folders("bob", &keys(&["/a/"]), 1, quota).unwrap().unwrap();
        assert_eq!(state.holdings("bob").unwrap(), (0, 2));
        let inside = state.folders_in("/a/").unwrap();
        assert_eq!(inside, HashMap::from([("/a/b/".to_owned(), "bob".to_owned())]));
        // Removing /a/ takes both rows; a folder gone from the disk is forgotten.
        state.claim_folders("bob", &keys(&["/e/"]), 0, quota).unwrap().unwrap();
        state.delete_objects("/a/", true).unwrap();
        assert_eq!(state.holdings("bob").unwrap(), (0, 1));
        assert_eq!(state.reconcile_folders(|key| key != "/e/").unwrap(), 1);
        assert_eq!(state.holdings("bob").unwrap(), (0, 0));
    }
}
