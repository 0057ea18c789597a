//! MOVE on one file system: a rename, made durable, the journal told first.

use super::*;

impl Inner {
    /// [`Store::rename`] under both paths' locks.
    pub(super) fn move_now<R>(
        &self,
        from: &ResourcePath,
        to: &ResourcePath,
        check: impl FnOnce(&Entry, Option<&Entry>) -> Result<(), R>,
    ) -> Result<Result<Put, R>, Error> {
        let Some(entry) = self.current(from)? else { return Err(Error::NotFound) };
        let is_dir = entry.is_collection();
        let to = to.with_collection(is_dir);
        let current = self.current(&to)?;
        if let Err(refusal) = check(&entry, current.as_ref()) {
            return Ok(Err(refusal));
        }
        if current.as_ref().is_some_and(|there| there.is_collection() || is_dir) {
            return Err(Error::Conflict(format!("{to} is in the way")));
        }
        let source_parent = self.folder_of(&entry.path.parent())?;
        let Some(target_parent) = self.parent_folder(&to)? else {
            return Err(Error::Conflict(format!("{} does not exist", to.parent())));
        };
        let source = source_parent.join(entry.path.name());
        let target = target_parent.join(to.name());
        let journal = self.journal.as_ref();
        // A folder's move touches paths under other locks: no small write between.
        let _exclusive = journal.filter(|_| is_dir).map(|j| j.exclusive());
        if let Some(journal) = journal {
            // What the journal holds of either path is made durable in its file, then
            // superseded: a replay after a crash never writes it back beside the move.
            durable(&source, is_dir)?;
            journal.supersede(&source_parent.key_of(entry.path.name()), is_dir)?;
            if current.is_some() {
                durable(&target, false)?;
                journal.supersede(&target_parent.key_of(to.name()), false)?;
            }
        }
        let flags = match current {
            Some(_) => RenameFlags::empty(),
            None => RenameFlags::NOREPLACE,
        };
        match rustix::fs::renameat_with(CWD, &source, CWD, &target, flags) {
            Ok(()) => {}
            Err(Errno::XDEV) => return Err(Error::Unsupported),
            Err(Errno::EXIST) => return Err(Error::Conflict(format!("{to} is in the way"))),
            Err(e) => return Err(Error::from_io(e.into())),
        }
        sync_dir(&target_parent)?;
        if source_parent.key_of("") != target_parent.key_of("") {
            sync_dir(&source_parent)?;
        }
        // A crash before this leaves rows at the old path: the start gives the moved files
        // theirs back from what they carry.
        self.db().move_objects(&entry.path.as_key(), &to.as_key(), is_dir)?;
        let entry = self.current(&to)?.ok_or(Error::NotFound)?;
        Ok(Ok(Put { entry, created: current.is_none() }))
    }
}

/// Makes what is at `path` durable: a file's bytes, or for a folder, its whole file system's.
fn durable(path: &Path, is_dir: bool) -> Result<(), Error> {
    let file = File::open(path)?;
    match is_dir {
        true => rustix::fs::syncfs(&file).map_err(io::Error::from)?,
        false => file.sync_all()?,
    }
    Ok(())
}
