//! Group commit for folder fsyncs: concurrent writers that renamed files into one folder
//! share one fsync of it. A caller takes a ticket; whoever finds no fsync running does one
//! that covers every ticket taken so far; the others wait for an fsync that covers theirs.
//! A failed fsync fails every ticket it was to cover.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Default)]
struct Folder {
    /// Tickets handed out.
    taken: u64,
    /// Every ticket up to this one is synced.
    synced: u64,
    running: bool,
    /// Callers holding a ticket: the folder is forgotten only when none is left.
    users: usize,
    /// Failures while tickets are held: tickets from `.0` to `.1` failed with `.2`.
    failed: Vec<(u64, u64, String)>,
}

/// The folders being synced.
#[derive(Default)]
pub struct DirSyncs {
    folders: Mutex<HashMap<PathBuf, Folder>>,
    done: Condvar,
}

impl DirSyncs {
    fn folders(&self) -> MutexGuard<'_, HashMap<PathBuf, Folder>> {
        self.folders.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once an fsync of `dir` that began after this call has completed. Blocks.
    pub fn sync(&self, dir: &Path) -> io::Result<()> {
        let mut folders = self.folders();
        let ticket = {
            let folder = folders.entry(dir.to_owned()).or_default();
            folder.taken += 1;
            folder.users += 1;
            folder.taken
        };
        loop {
            let folder = folders.entry(dir.to_owned()).or_default();
            let failed = folder
                .failed
                .iter()
                .find(|(from, to, _)| (*from..=*to).contains(&ticket))
                .map(|(_, _, why)| why.clone());
            if failed.is_some() || folder.synced >= ticket {
                folder.users -= 1;
                if folder.users == 0 {
                    folders.remove(dir); // nobody holds a ticket: forget the folder
                }
                return match failed {
                    Some(why) => Err(io::Error::other(format!("folder sync failed: {why}"))),
                    None => Ok(()),
                };
            }
            if folder.running {
                folders = self.done.wait(folders).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Sync for every ticket taken so far, without holding the lock.
            folder.running = true;
            let (from, covers) = (folder.synced + 1, folder.taken);
            drop(folders);
            let result = File::open(dir).and_then(|f| f.sync_all());
            folders = self.folders();
            let folder = folders.entry(dir.to_owned()).or_default();
            folder.running = false;
            match &result {
                Ok(()) => folder.synced = folder.synced.max(covers),
                Err(e) => {
                    folder.failed.push((from, covers, e.to_string()));
                    folder.synced = folder.synced.max(covers);
                }
            }
            self.done.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn concurrent_syncs_all_return() {
        let dir = tempfile::tempdir().unwrap();
        let syncs = Arc::new(DirSyncs::default());
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (syncs, dir) = (syncs.clone(), dir.path().to_owned());
                std::thread::spawn(move || (0..20).try_for_each(|_| syncs.sync(&dir)))
            })
            .collect();
        for thread in threads {
            thread.join().unwrap().unwrap();
        }
        assert!(syncs.folders().is_empty(), "idle folders are forgotten");
        let missing = dir.path().join("gone");
        assert!(syncs.sync(&missing).is_err(), "a failed fsync is reported");
    }
}
