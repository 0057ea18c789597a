//! COPY of a collection on one file system: the whole copy is made under a temporary name
//! beside its destination, synced, recorded in one transaction, then renamed into place.

use super::*;

impl Inner {
    /// [`Store::copy_tree`] under the destination's lock.
    pub(super) fn copy_now(
        &self,
        plan: &[(Entry, ResourcePath)],
        upload: &Upload,
    ) -> Result<Put, Error> {
        let Some((_, to)) = plan.first() else { return Err(Error::NotFound) };
        let to = to.with_collection(true);
        if self.current(&to)?.is_some() {
            return Err(Error::Conflict(format!("{to} is in the way")));
        }
        let Some(parent) = self.parent_folder(&to)? else {
            return Err(Error::Conflict(format!("{} does not exist", to.parent())));
        };
        let temp = parent.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
        // Whatever fails from here, the temporary tree goes (a crash: the next start sweeps it).
        let made = self.make_copy(plan, &to, &temp, upload);
        let made = made.and_then(|(folders, files)| {
            let quota = upload.owner.as_deref().and_then(|o| upload.quotas.get(o).copied());
            let root = to.as_key();
            let owner = upload.owner.as_deref();
            match self.db().adopt_tree(&root, owner, quota, &folders, &files)? {
                Ok(()) => {}
                Err(over) => return Err(Error::OverQuota(over)),
            }
            // (A crash here, simulated by a panic, leaves rows without their files and a
            // temporary tree: the next start drops the one and sweeps the other.)
            fail::fail_point!("copy-placing", |_| Err(Error::Io(io::Error::other("fail point"))));
            Ok(root)
        });
        let placed = made.and_then(|root| {
            let target = parent.join(to.name());
            let renamed =
                rustix::fs::renameat_with(CWD, &temp, CWD, &target, RenameFlags::NOREPLACE);
            match renamed.map_err(io::Error::from).and_then(|()| sync_dir(&parent)) {
                Ok(()) => Ok(()),
                Err(e) => {
                    if let Err(forgot) = self.db().delete_objects(&root, true) {
                        tracing::error!(
                            "cannot forget the rows of a failed copy to {root}: {forgot}"
                        );
                    }
                    Err(Error::from_io(e))
                }
            }
        });
        if let Err(e) = placed {
            if temp.exists()
                && let Err(removed) = fs::remove_dir_all(&temp)
            {
                tracing::error!("cannot remove {}: {removed}", temp.display());
            }
            return Err(e);
        }
        let entry = self.current(&to)?.ok_or(Error::NotFound)?;
        Ok(Put { entry, created: true })
    }

    /// Writes the copy under `temp`, synced: the folders' keys and the files' rows, as they
    /// will be once `temp` is `to`.
    #[allow(clippy::type_complexity)]
    fn make_copy(
        &self,
        plan: &[(Entry, ResourcePath)],
        to: &ResourcePath,
        temp: &Path,
        upload: &Upload,
    ) -> Result<(Vec<String>, Vec<(String, Fingerprint, ObjectMeta)>), Error> {
        let depth = to.segments().len();
        let mut folders = Vec::new();
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        for (source, target) in plan {
            let inside: PathBuf =
                target.segments()[depth.min(target.segments().len())..].iter().collect();
            let place = temp.join(&inside);
            if source.is_collection() {
                fs::create_dir(&place)?;
                folders.push(target.with_collection(true).as_key());
                dirs.push(place);
                continue;
            }
            // The source's current version, by descriptor, never through a symlink.
            let mut from = self.tree.file(source.path.segments()).map_err(Error::from_io)?;
            let meta = from.metadata()?;
            if !meta.is_file() {
                return Err(Error::NotFound);
            }
            let now = self.entry(&source.path, &meta)?;
            let mut copy = File::create_new(&place)?;
            io::copy(&mut from, &mut copy)?;
            let meta = ObjectMeta {
                etag: now.etag.clone().unwrap_or_default(),
                content_type: now.content_type.clone(),
                owner: upload.owner.clone(),
            };
            if self.carries_meta {
                carry_meta(&copy, &meta)?;
            }
            copy.sync_all()?;
            let fp = fingerprint(&copy.metadata()?);
            files.push((target.with_collection(false).as_key(), fp, meta));
        }
        // Each folder's names, deepest first, then the temporary root's.
        for dir in dirs.iter().rev() {
            File::open(dir)?.sync_all()?;
        }
        Ok((folders, files))
    }
}
