//! Finding what is at a path: the folder it lies in (by descriptor), its entry, and the
//! current version with its fingerprint; making the folders a write needs.

use super::*;

impl Inner {
    /// What is at `path` (not following a symlink: one answers as missing).
    pub(super) fn meta_of(&self, path: &ResourcePath) -> Result<fs::Metadata, Error> {
        let found = self
            .tree
            .open_at(path.segments(), OFlags::PATH)
            .and_then(|fd| File::from(fd).metadata());
        found.map_err(|e| match Error::from_io(e) {
            Error::Conflict(_) => Error::NotFound,
            other => other,
        })
    }

    /// The folder `path` names, held open.
    pub(super) fn folder_of(&self, path: &ResourcePath) -> Result<Dir, Error> {
        self.tree.dir(path.segments()).map_err(|e| match Error::from_io(e) {
            Error::Conflict(_) => Error::NotFound,
            other => other,
        })
    }

    /// The entry for the file-system object described by `meta`, which `path` names.
    pub(super) fn entry(&self, path: &ResourcePath, meta: &fs::Metadata) -> Result<Entry, Error> {
        if meta.is_dir() {
            let mut entry = entry_of(path, meta, None)?;
            entry.owner = self.db().folder_owner(&entry.path.as_key())?;
            return Ok(entry);
        }
        let recorded =
            self.db().object(&path.with_collection(false).as_key(), fingerprint(meta))?;
        entry_of(path, meta, recorded)
    }

    /// The current entry at `path` and its fingerprint, if it exists (for writers, under the
    /// path's lock).
    pub(super) fn current_with_fingerprint(
        &self,
        path: &ResourcePath,
    ) -> Result<Option<(Entry, Fingerprint)>, Error> {
        let meta = match self.meta_of(path) {
            Ok(meta) => meta,
            Err(Error::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some((self.entry(path, &meta)?, fingerprint(&meta))))
    }

    /// [`Inner::current_with_fingerprint`] for `path` in `parent`, its held folder: looked
    /// up there, not again from ROOT. A symlink there answers as missing.
    pub(super) fn current_in(
        &self,
        path: &ResourcePath,
        parent: &Dir,
    ) -> Result<Option<(Entry, Fingerprint)>, Error> {
        let meta = match fs::symlink_metadata(parent.join(path.name())) {
            Ok(meta) if meta.file_type().is_symlink() => return Ok(None),
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::from_io(e)),
        };
        Ok(Some((self.entry(path, &meta)?, fingerprint(&meta))))
    }

    /// The current entry at `path`, if any (for writers, under the path's lock).
    pub(super) fn current(&self, path: &ResourcePath) -> Result<Option<Entry>, Error> {
        Ok(self.current_with_fingerprint(path)?.map(|(entry, _)| entry))
    }

    /// Makes sure the parent collection of `path` exists (creating and syncing missing
    /// levels, made by `upload`'s writer) and returns it, held open.
    pub(super) fn prepare_parent(
        &self,
        path: &ResourcePath,
        upload: &Upload,
    ) -> Result<Dir, Error> {
        let segments = path.segments();
        let parents = &segments[..segments.len().saturating_sub(1)];
        // A missing parent means a new file in it: one resource more.
        let made = self.folder_made(parents, Some((upload, 1)))?;
        Ok(made.expect("every level is created"))
    }

    /// The parent collection of `path`, held open, if every level of it exists. A level
    /// that is a resource is a conflict; one that is a symlink, missing.
    pub(super) fn parent_folder(&self, path: &ResourcePath) -> Result<Option<Dir>, Error> {
        let segments = path.segments();
        self.folder_made(&segments[..segments.len().saturating_sub(1)], None)
    }

    /// The folder `segments` names, held open. With `make`, its missing levels are made and
    /// synced, recorded first as the writer's, within its quota's resources with `then`
    /// more to come; else a missing level makes it `None`.
    pub(super) fn folder_made(
        &self,
        segments: &[String],
        make: Option<(&Upload, u64)>,
    ) -> Result<Option<Dir>, Error> {
        let claim = |keys: &[String]| -> io::Result<()> {
            let Some((upload, then)) = make else { return Ok(()) };
            let Some(owner) = upload.owner.as_deref() else { return Ok(()) };
            let quota = upload.quotas.get(owner).copied();
            self.db().claim_folders(owner, keys, then, quota)?.map_err(io::Error::other)
        };
        let create = make.map(|_| &claim as Announce<'_>);
        self.tree.folder(segments, create, sync_dir).map_err(|e| match Error::from_io(e) {
            Error::Conflict(_) => Error::Conflict(format!(
                "a resource stands where a collection of /{} is needed",
                segments.join("/")
            )),
            other => other,
        })
    }
}
