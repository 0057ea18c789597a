//! What a start recovers: journaled versions replayed or checked against their files, rows
//! recovered from the metadata files carry, temporary files swept, rows reconciled with
//! what is on disk. And the journal's rows, committed to the embedded database.

use super::*;

impl Inner {
    /// Rewrites a version the journal kept (from an earlier boot, or one the disk does not
    /// hold), with the usual syncs. Its row comes back from what it carries
    /// ([`Inner::recover_row`]).
    pub(super) fn replay(&self, survivor: &Survivor) -> io::Result<()> {
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        let mut path = ResourcePath::root();
        let segments: Vec<&str> = survivor.key.trim_start_matches('/').split('/').collect();
        for (i, segment) in segments.iter().enumerate() {
            path = path
                .child(segment, i + 1 < segments.len())
                .map_err(|e| invalid(format!("a recorded path is invalid: {e}")))?;
        }
        let fail = |e: Error| match e {
            Error::Io(e) | Error::Body(e) => e,
            other => invalid(other.to_string()),
        };
        let parent = self.prepare_parent(&path, &Upload::default()).map_err(fail)?;
        let (mut temp, mut file) = self.open_new(&parent).map_err(fail)?;
        file.write_all(&survivor.body)?;
        carry_value(&file, &survivor.meta)?;
        file.sync_all()?;
        let replace = fs::symlink_metadata(parent.join(path.name())).is_ok();
        publish(&file, &mut temp, &parent, path.name(), replace)?;
        parent.sync()
    }

    /// Whether the file at `survivor`'s key is that version: its bytes and its metadata. A
    /// symlink there, or anything but a file, is not.
    pub(super) fn holds_survivor(&self, survivor: &Survivor) -> io::Result<bool> {
        let segments: Vec<String> =
            survivor.key.trim_start_matches('/').split('/').map(str::to_owned).collect();
        let file = match self.tree.file(&segments) {
            Ok(file) => file,
            Err(e)
                if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) =>
            {
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() != survivor.body.len() as u64 {
            return Ok(false);
        }
        if read_all(&file, meta.len())? != survivor.body {
            return Ok(false);
        }
        let mut carried = vec![0; survivor.meta.len() + 1];
        let len = rustix::fs::fgetxattr(&file, META_ATTR, &mut carried[..]).unwrap_or(usize::MAX);
        Ok(carried.get(..len) == Some(&survivor.meta[..]))
    }

    /// Gives the file at `path` (under ROOT) its row back if it carries larder's metadata and
    /// has no row matching it. Returns whether it did.
    pub(super) fn recover_row(&self, path: &Path) -> io::Result<bool> {
        let Some(key) = path.strip_prefix(&self.root).ok().and_then(|r| r.to_str()) else {
            return Ok(false);
        };
        let key = format!("/{key}");
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let fp = fingerprint(&meta);
        if !meta.is_file() || self.db().object(&key, fp)?.is_some() {
            return Ok(false);
        }
        let Some(carried) = carried_meta(path) else { return Ok(false) };
        let put = self.db().put_object(&key, fp, &carried, None, None)?;
        put.map_err(|_| io::Error::other("a recovered row went over no quota"))?;
        Ok(true)
    }

    /// Under `dir`, without following symlinks: removes temporary files; with `recover`,
    /// gives a row to every file carrying larder's metadata that has none matching it (a
    /// row a crash of the machine took; one naming an older version is replaced, as
    /// [`Inner::reconcile`] would). Returns how many rows it gave back.
    pub(super) fn tidy(&self, dir: &Path, recover: bool) -> io::Result<usize> {
        let mut recovered = 0;
        for item in fs::read_dir(dir)? {
            let item = item?;
            let kind = item.file_type()?;
            let path = item.path();
            if self.is_reserved(&path) {
                continue;
            }
            let name = item.file_name();
            if name.to_string_lossy().starts_with(TEMP_PREFIX) {
                if kind.is_dir() {
                    fs::remove_dir_all(&path)?
                } else {
                    fs::remove_file(&path)?
                }
                continue;
            }
            let servable = name.to_str().is_some_and(is_servable_name);
            if kind.is_dir() {
                recovered += self.tidy(&path, recover && servable)?;
            } else if recover && servable && self.recover_row(&path)? {
                recovered += 1;
            }
        }
        Ok(recovered)
    }

    /// Makes the metadata agree with the folder (see [`crate::state::Sqlite::reconcile_objects`]).
    pub(super) fn reconcile(&self) -> io::Result<()> {
        let on_disk = |key: &str| {
            let file = self.root.join(key.trim_start_matches('/'));
            fs::symlink_metadata(file).ok().filter(|m| m.is_file()).map(|m| fingerprint(&m))
        };
        let describe = |key: &str, fp| {
            let file = self.root.join(key.trim_start_matches('/'));
            // Changed or lost behind larder's back (a power cut): the ETag of its bytes.
            match carried_meta(&file) {
                Some(meta) => Described::Stored(meta),
                None => Described::Changed(etag_of_bytes(&file).unwrap_or(derived_etag(fp))),
            }
        };
        let changed = self.db().reconcile_objects(on_disk, describe)?;
        if changed > 0 {
            tracing::info!("reconciled {changed} metadata rows with the folder");
        }
        // Folders recorded but not there: a crash before their making, or a removal outside.
        let is_folder = |key: &str| {
            let segments: Vec<String> =
                key.trim_matches('/').split('/').map(str::to_owned).collect();
            self.tree.dir(&segments).is_ok()
        };
        let gone = self.db().reconcile_folders(is_folder)?;
        if gone > 0 {
            tracing::info!("forgot {gone} recorded folders that are not there");
        }
        Ok(())
    }
}

/// The journal's rows go to the embedded database.
pub(super) struct StateRows(pub(super) Arc<State>);

impl Rows for StateRows {
    fn commit(&self, rows: &[&Row]) -> Vec<Outcome> {
        sqlite(&self.0).put_objects(rows)
    }

    fn behind(&self, rows: Vec<Row>) {
        sqlite(&self.0).put_behind(rows);
    }

    fn caught_up(&self) -> bool {
        sqlite(&self.0).caught_up()
    }
}

/// The store's state database.
pub(super) fn sqlite(state: &State) -> &Sqlite {
    state.sqlite().expect("FileStore::open checked that the state is SQLite")
}
