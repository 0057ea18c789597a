//! Making a new version visible: a temporary file, checked against the current version
//! under the path's lock, then linked or renamed into place, synced or journaled.

use super::*;

impl Inner {
    /// A new file holding `head` in the folder of `path` (created if missing): the folder,
    /// the file's guard and the file.
    pub(super) fn create_temp(
        &self,
        path: &ResourcePath,
        upload: &Upload,
        head: &[Bytes],
    ) -> Result<(Dir, Temp, File), Error> {
        let parent = self.prepare_parent(path, upload)?;
        let (temp, mut file) = self.open_new(&parent)?;
        head.iter().try_for_each(|chunk| file.write_all(chunk))?;
        Ok((parent, temp, file))
    }

    /// [`Inner::create_temp`] on the caller's thread, where nothing makes it wait for the
    /// disk or a lock: a new file (`None` if `path` has a current version, whose metadata
    /// may have to be read from SQLite) in a folder that exists (`None` if one must be
    /// created and synced). A small new file is so written on the connection's own loop,
    /// as nginx writes its files: some 30 µs of system calls, less than the two hops to the
    /// blocking pool and back cost (12% of the durable small-PUT rate, measured).
    pub(super) fn create_here(
        &self,
        path: &ResourcePath,
        head: &[Bytes],
    ) -> Result<Option<(Dir, Temp, File)>, Error> {
        let Some(parent) = self.parent_folder(path)? else {
            return Ok(None);
        };
        if !self.tree.holds(&parent)? {
            return Ok(None);
        }
        match fs::symlink_metadata(parent.join(path.name())) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            _ => return Ok(None),
        }
        let (temp, mut file) = self.open_new(&parent)?;
        head.iter().try_for_each(|chunk| file.write_all(chunk))?;
        Ok(Some((parent, temp, file)))
    }

    /// An unnamed new file in `parent`, or a named temporary one where unsupported.
    pub(super) fn open_new(&self, parent: &Dir) -> Result<(Temp, File), Error> {
        // Unnamed files may need `/proc/self/fd` to get a name ([`link_unnamed`]).
        if *PROC_FD && !crate::store::simulated("fs-no-tmpfile") {
            let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
            match rustix::fs::open(&**parent, flags, Mode::from_raw_mode(0o666)) {
                Ok(fd) => return Ok((Temp::unnamed(), File::from(fd))),
                // Not on this file system: a named one, below.
                Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOSYS) => {}
                Err(e) => return Err(io::Error::from(e).into()),
            }
        }
        let temp_path = temp_name(parent);
        let file = fs::OpenOptions::new().write(true).create_new(true).open(&temp_path)?;
        Ok((Temp::named(parent, temp_path), file))
    }

    /// Checks that `file`, the temporary file `temp` in `parent` holding a whole new body
    /// whose ETag is `etag`, may become the new version of `path`: the current version and
    /// `check`; then puts the metadata into the file itself (when the folder keeps extended
    /// attributes) and, unless the version goes to the journal (`journaled` given), the file to
    /// the disk. The caller holds the path's lock.
    pub(super) fn prepare<R>(
        &self,
        path: &ResourcePath,
        Staged { parent, temp, file, etag, upload }: Staged,
        journaled: Option<Journaled>,
        check: impl FnOnce(Option<&Entry>) -> Result<(), R>,
    ) -> Result<Result<Ready, R>, Error> {
        let current = match &journaled {
            Some(Journaled { absent: true, .. }) => None,
            _ => self.current_in(path, &parent)?,
        };
        if current.as_ref().is_some_and(|(entry, _)| entry.is_collection()) {
            return Err(Error::Conflict(format!("{} is a collection", path.with_collection(true))));
        }
        if let Err(refusal) = check(current.as_ref().map(|(entry, _)| entry)) {
            return Ok(Err(refusal));
        }
        let current_fp = current.as_ref().map(|(_, fp)| *fp);
        let content_type = upload.stored_type();
        let owner = current.as_ref().and_then(|(entry, _)| entry.owner.clone()).or(upload.owner);
        let meta = ObjectMeta { etag, content_type, owner };
        if self.carries_meta {
            carry_meta(&file, &meta)?;
        }
        let fp = match &journaled {
            Some(journaled) if self.exact_times => stamp_new_file(&file, journaled.size)?,
            Some(_) => fingerprint(&file.metadata()?),
            None => sync_new_file(&file)?,
        };
        let quota = meta.owner.as_ref().and_then(|owner| upload.quotas.get(owner).copied());
        let row = Row { path: path.as_key(), fp, meta, current: current_fp, quota };
        let replace = current.is_some();
        let _shared = journaled.map(|journaled| journaled.shared);
        Ok(Ok(Ready { path: path.clone(), row, parent, temp, file, replace, _shared }))
    }

    /// Makes `file` (see [`Inner::prepare`]) the new version of `path`, if `check` allows
    /// it, without the journal. In order: the file and its metadata to the disk; the row
    /// committed, quota included; the rename, which makes the version visible; the folder to
    /// the disk; a record that the journal's versions of the path are superseded. A failure
    /// before the rename leaves the old version as it was.
    pub(super) fn finish<R>(
        &self,
        path: &ResourcePath,
        staged: Staged,
        check: impl FnOnce(Option<&Entry>) -> Result<(), R>,
    ) -> Result<Result<Put, R>, Error> {
        let mut ready = match self.prepare(path, staged, None, check)? {
            Ok(ready) => ready,
            Err(refusal) => return Ok(Err(refusal)),
        };
        // A fail point may panic in the commit. The row must not outlive a version that did
        // not become visible.
        let committed = std::panic::AssertUnwindSafe(|| self.db().put_row(ready.row.clone()));
        match std::panic::catch_unwind(committed) {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(over))) => return Err(Error::OverQuota(over)),
            Ok(Err(e)) => {
                self.revert(&ready.row);
                return Err(e.into());
            }
            Err(panic) => {
                self.revert(&ready.row);
                std::panic::resume_unwind(panic);
            }
        }
        if let Err(e) = ready.publish() {
            self.revert(&ready.row);
            return Err(e.into());
        }
        // Visible now: the row stays, matching the folder, even if the folder's sync fails
        // (the request then fails, and its outcome is unknown, as after a crash).
        sync_dir(&ready.parent)?;
        if let Some(journal) = &self.journal {
            journal.supersede(&ready.parent.key_of(ready.path.name()), false)?;
        }
        Ok(Ok(ready.put()))
    }

    /// Records `file` (see [`Inner::prepare`]), holding the small `body`, in the journal as
    /// the new version of `path`, if `check` allows it: neither the file nor the folder is
    /// synced. The journal's writer thread commits the row (with the rows of every version
    /// in the same flush: before it if a quota is to be checked, else behind it), flushes the
    /// record, makes the version visible and sends what came of it to `answer`. A failure
    /// sent there is for [`Inner::undo`].
    pub(super) fn record<R>(
        &self,
        (journal, shared, absent): (&Arc<Journal>, Shared, bool),
        path: &ResourcePath,
        (staged, body): (Staged, &[Bytes]),
        check: impl FnOnce(Option<&Entry>) -> Result<(), R>,
        answer: tokio::sync::oneshot::Sender<Result<Put, Unsettled>>,
    ) -> Result<Result<Recorded, R>, Error> {
        let size = body.iter().map(|chunk| chunk.len() as u64).sum();
        let journaled = Some(Journaled { shared, size, absent });
        let ready = match self.prepare(path, staged, journaled, check)? {
            Ok(ready) => ready,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let at = ready.parent.key_of(ready.path.name());
        let meta = meta_value(&ready.row.meta);
        let row = ready.row.clone();
        let then = Box::new(move |outcome| drop(answer.send(ready.settle(outcome))));
        let ticket = journal.record(&at, meta.as_bytes(), body, row.clone(), then)?;
        Ok(Ok(Recorded { ticket, row }))
    }

    /// After a recorded version failed to become visible: its row reverted, its record
    /// cancelled.
    pub(super) fn undo(&self, journal: &Arc<Journal>, Recorded { ticket, row }: Recorded) {
        self.revert(&row);
        if let Err(e) = journal.cancel(ticket) {
            tracing::error!("cannot cancel the journal's record of {}: {e}", row.path);
        }
    }

    /// Takes back the committed `row` of a version that did not become visible.
    pub(super) fn revert(&self, row: &Row) {
        if let Err(revert) = self.db().revert_object(&row.path, row.fp, row.current) {
            tracing::error!("cannot revert the metadata of {}: {revert}", row.path);
        }
    }
}

/// How a small version was written: recorded in the journal, or synced in place of that.
pub(super) enum Written {
    Journaled(Recorded),
    Synced(Put),
}

/// Forgets what the cache holds about a path (`None`: everything) when dropped, so that a
/// write that fails or panics half-way cannot leave the cache serving what was there before
/// (found by the fault campaign: a failed folder sync after the rename, or a panic in a
/// delete, left the old bytes cached for up to the cache's TTL).
pub(super) struct Forget<'a> {
    pub(super) cache: &'a Cache,
    pub(super) key: Option<String>,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        match &self.key {
            Some(key) => self.cache.invalidate(key),
            None => self.cache.clear(),
        }
    }
}

/// A new version's file until it is published: unnamed (`O_TMPFILE`: it vanishes by itself
/// if larder stops first) or, where the file system cannot do that, under a temporary name
/// that is removed unless published (and swept when the store opens after a crash).
pub(super) struct Temp {
    /// The name, if it has one; in `dir`, which is held open so that the name means the
    /// same file until it goes.
    path: Option<(PathBuf, Dir)>,
}

impl Temp {
    pub(super) fn unnamed() -> Temp {
        Temp { path: None }
    }

    pub(super) fn named(dir: &Dir, path: PathBuf) -> Temp {
        Temp { path: Some((path, dir.clone())) }
    }
}

/// A new version checked and ready to become visible ([`Inner::prepare`]).
pub(super) struct Ready {
    path: ResourcePath,
    /// Its metadata row.
    row: Row,
    /// The folder it goes in, held open.
    parent: Dir,
    temp: Temp,
    file: File,
    /// Whether it replaces a version.
    replace: bool,
    /// For a version in the journal: held until it is visible (dropped with it).
    _shared: Option<Shared>,
}

impl Ready {
    /// Makes the version visible (its folder is not synced).
    pub(super) fn publish(&mut self) -> io::Result<()> {
        publish(&self.file, &mut self.temp, &self.parent, self.path.name(), self.replace)
    }

    /// After the journal settled the version with `outcome`: made visible, or why not.
    pub(super) fn settle(mut self, outcome: Outcome) -> Result<Put, Unsettled> {
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(over)) => return Err(Unsettled::Refused(over)),
            Err(e) => return Err(Unsettled::Failed(e)),
        }
        self.publish().map_err(Unsettled::Failed)?;
        Ok(self.put())
    }

    /// What the write answers, once the version is visible.
    pub(super) fn put(self) -> Put {
        let Row { fp, meta: ObjectMeta { etag, content_type, owner }, .. } = self.row;
        let entry = Entry {
            kind: Kind::Resource,
            size: fp.size,
            modified: std::time::UNIX_EPOCH
                + std::time::Duration::from_nanos(fp.mtime_ns.max(0) as u64),
            etag: Some(etag),
            content_type: Some(content_type.unwrap_or_else(|| guess_type(self.path.name()))),
            owner,
            path: self.path,
        };
        Put { entry, created: !self.replace }
    }
}

/// Why a version recorded in the journal did not become visible.
pub(super) enum Unsettled {
    /// Its row was refused (the quota), and its record cancelled in its flush.
    Refused(OverQuota),
    /// Its row may be committed and its record not cancelled ([`Inner::undo`]).
    Failed(io::Error),
}

/// A whole new body in a temporary file `temp` in `parent`, with its ETag and the upload's
/// metadata: what may become a path's new version once checked.
pub(super) struct Staged {
    parent: Dir,
    temp: Temp,
    file: File,
    etag: String,
    upload: Upload,
}

impl Staged {
    pub(super) fn of(
        (parent, temp, file): (Dir, Temp, File),
        etag: String,
        upload: Upload,
    ) -> Staged {
        Staged { parent, temp, file, etag, upload }
    }
}

/// What [`Inner::prepare`] is told of a version going to the journal.
pub(super) struct Journaled {
    /// The journal's gate, held until the version is visible.
    shared: Shared,
    /// The body's length.
    size: u64,
    /// Whether the caller found no version at the path, under its lock: none is looked for.
    absent: bool,
}

/// A version recorded in the journal: its ticket and its row.
pub(super) struct Recorded {
    ticket: u64,
    row: Row,
}

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some((path, _dir)) = &self.path {
            let _ = fs::remove_file(path);
        }
    }
}

/// Whether `linkat` may name an unnamed file by its descriptor (`AT_EMPTY_PATH`): Linux
/// allows it from 6.10 to whoever opened the file, before that only with
/// `CAP_DAC_READ_SEARCH`. Cleared at the first refusal.
pub(super) static EMPTY_PATH_LINKS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(true);

/// Gives the unnamed `file` the name `to`: by its descriptor where the kernel allows it,
/// else through `/proc/self/fd` (a lookup in procfs, about a third of the link's cost).
pub(super) fn link_unnamed(file: &File, to: &Path) -> rustix::io::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    if EMPTY_PATH_LINKS.load(Relaxed) {
        match rustix::fs::linkat(file, "", CWD, to, AtFlags::EMPTY_PATH) {
            Err(Errno::NOENT | Errno::PERM | Errno::INVAL) => {}
            done => return done,
        }
    }
    let unnamed = format!("/proc/self/fd/{}", file.as_raw_fd());
    let linked = rustix::fs::linkat(CWD, &unnamed, CWD, to, AtFlags::SYMLINK_FOLLOW);
    if linked.is_ok() {
        // The descriptor was refused, its name was not: so it is the kernel's rule.
        EMPTY_PATH_LINKS.store(false, Relaxed);
    }
    linked
}

/// A temporary name in `dir`.
pub(super) fn temp_name(dir: &Path) -> PathBuf {
    dir.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()))
}

/// Makes `file`, the new version's file that `temp` tracks, visible as `name` in `dir`:
/// linked there if nothing was (`replace` false), else linked under a temporary name in the
/// folder and renamed over what is there.
pub(super) fn publish(
    file: &File,
    temp: &mut Temp,
    dir: &Dir,
    name: &str,
    replace: bool,
) -> io::Result<()> {
    let target = dir.join(name);
    if temp.path.is_none() {
        let link = |to: &Path| link_unnamed(file, to);
        if !replace {
            match link(&target) {
                Ok(()) => return Ok(()),
                Err(Errno::EXIST) => {} // put there by hand meanwhile: renamed over, below
                Err(e) => return Err(e.into()),
            }
        }
        let named = temp_name(dir);
        link(&named)?;
        *temp = Temp::named(dir, named);
    }
    if let Some((named, _)) = &temp.path {
        fs::rename(named, &target)?;
        temp.path = None;
    }
    Ok(())
}
