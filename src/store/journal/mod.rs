//! The journal of small writes: how a small PUT is made durable with one shared append
//! instead of a sync of its file and of its folder.
//!
//! A small new version is appended here, with its metadata, and handed to the writer thread
//! (`larder-journal`, [`Journal::run`]): it writes every record appended since its last turn
//! and flushes them with one `fdatasync`, then makes each version visible and answers its
//! request; the version's file is left to the kernel to write back. Any other change that touches a
//! path the journal may know (a large PUT, a DELETE) is first made durable by the usual
//! syncs, then recorded here as superseding the path and everything beneath it, so a replay
//! never brings back what was replaced or deleted. A record whose version could not be made
//! visible is cancelled.
//!
//! The journal lives in segments, `journal-NNNNNNNNNNNNNNNN` in the state folder, each
//! headed with the kernel's boot id. A segment is zero-filled (and the zeros synced) ahead
//! of its records, [`ZERO_CHUNK`] at a time: a record then overwrites blocks the file already
//! has, so its flush writes that data alone and not the file's size and block map too
//! (about 130 instead of 215 µs per flush here), and what lies past the last record after a
//! crash is zeros, never stale blocks. When a segment grows past [`SEGMENT_LIMIT`] (or a
//! write to it fails) a new one is begun, and a checkpoint thread waits until every write recorded
//! in the old one is visible, syncs ROOT's file system (`syncfs`) and removes the old one.
//!
//! Only versions on ROOT's file system are recorded here (one on a file system mounted
//! beneath ROOT is written the synced way), so syncing ROOT's makes every recorded one durable.
//!
//! At start: segments from an earlier boot are replayed (every surviving version rewritten
//! with the usual syncs). Segments written in this same boot are not trusted to have lost
//! only their process (a disk or controller reset, or a restored snapshot, loses the disk's
//! cache within one boot): each surviving version's file is checked against its record,
//! bytes and metadata, and rewritten if it differs; then ROOT's file system is synced. Then
//! the segments are removed.
//! Replay stops reading a segment at its first torn or corrupt record: what follows was
//! never acknowledged.
//!
//! Here: the writer thread, checkpoints and start-up. `record.rs`: the record format, pure
//! (framing, reading back, what survives), with generated tests. `segment.rs`: the segment
//! files. `gate.rs`: the writer-preferring lock between small writes and removals.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use bytes::Bytes;

use crate::state::object::{Outcome, Row};

mod gate;
mod record;
mod segment;

use gate::Gate;
pub use gate::{Exclusive, Shared};
pub use record::Survivor;
use record::survivors;
use segment::{MAGIC, PREFIX, SEGMENT_LIMIT, Segment, read_segment, segment_number, segments};

/// What is done, on the journal's writer thread, once a version's record is settled, with
/// what came of it: make the version visible, and answer its writer.
pub type Then = Box<dyn FnOnce(Outcome) + Send>;

#[derive(Default)]
struct Tail {
    /// Encoded records not yet written.
    buf: Vec<u8>,
    /// The metadata rows of the versions recorded in `buf`, by ticket.
    rows: Vec<(u64, Row)>,
    /// What to do once each version recorded in `buf` is settled, by ticket.
    then: Vec<(u64, Then)>,
    /// What committing each row came to, until its writer picks it up.
    committed: HashMap<u64, Outcome>,
    /// Tickets handed out.
    taken: u64,
    /// Every ticket up to this one is settled: durable, or failed.
    settled: u64,
    /// Failed tickets: from `.0` to `.1`, with the error's kind and text.
    failed: Vec<(u64, u64, io::ErrorKind, String)>,
    /// Tickets handed out and not yet returned to their writers.
    waiting: usize,
    /// The writer thread is writing.
    running: bool,
    /// The segment being appended to; `None` before the first write and after a failure.
    active: Option<Segment>,
    next_number: u64,
    /// Segments waiting for a checkpoint to remove them.
    retired: Vec<PathBuf>,
    checkpointing: bool,
}

impl Tail {
    /// What came of the settled `ticket`, told to its writer.
    fn outcome(&mut self, ticket: u64) -> io::Result<()> {
        let failed = self.failed.iter().find(|(from, to, ..)| (*from..=*to).contains(&ticket));
        let outcome = match failed {
            Some((_, _, kind, why)) => Err(io::Error::new(*kind, why.clone())),
            None => Ok(()),
        };
        self.waiting -= 1;
        if self.waiting == 0 {
            self.failed.clear(); // nobody left to tell
        }
        outcome
    }

    /// What came of the settled version under `ticket`: its record's flush and its row's
    /// commit.
    fn settled(&mut self, ticket: u64) -> Outcome {
        let flushed = self.outcome(ticket);
        let committed = self.committed.remove(&ticket);
        flushed?;
        committed.unwrap_or(Ok(Ok(())))
    }
}

/// Work for the writer thread: records waiting, or the journal gone.
#[derive(Default)]
struct Wake {
    /// (records appended since the thread last looked, the journal dropped)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl Wake {
    fn lock(&self) -> MutexGuard<'_, (bool, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn signal(&self) {
        let mut state = self.lock();
        let was = std::mem::replace(&mut state.0, true);
        drop(state);
        // Woken after the lock is let go, the thread does not wake only to wait for it.
        if !was {
            self.changed.notify_one();
        }
    }

    fn close(&self) {
        self.lock().1 = true;
        self.changed.notify_one();
    }

    /// Waits for records to write: false once the journal is dropped.
    fn next(&self) -> bool {
        let mut state = self.lock();
        while !state.0 && !state.1 {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        std::mem::take(&mut state.0) || !state.1
    }
}

/// Where the journal commits the metadata rows of the versions it records.
pub trait Rows: Send + Sync {
    /// Commits `rows`, each with a quota to check, in one transaction: one outcome per row,
    /// in order.
    fn commit(&self, rows: &[&Row]) -> Vec<Outcome>;
    /// Takes the rows of versions just made durable, none with a quota, to commit behind
    /// the journal; a reader of the metadata must see them from here on.
    fn behind(&self, rows: Vec<Row>);
    /// Whether every row taken behind before the call is committed (committing them
    /// first): a checkpoint drops no record before.
    fn caught_up(&self) -> bool;
}

/// The journal of one folder store.
pub struct Journal {
    /// Commits the rows of the versions recorded: with each flush, before it, those with a
    /// quota to check; after it, behind the journal, the others.
    rows: Box<dyn Rows>,
    /// Wakes the writer thread (`larder-journal`), which writes and flushes every record
    /// appended so far, then settles them.
    wake: Arc<Wake>,
    /// The state folder, where the segments live.
    dir: PathBuf,
    /// ROOT, whose file system a checkpoint syncs.
    root: PathBuf,
    /// A segment is retired once it holds this many bytes: [`SEGMENT_LIMIT`], or 1 MiB where
    /// the `journal-small-segments` fail point says so (checkpoints often, for the
    /// power-cut campaign).
    segment_limit: u64,
    boot: String,
    tail: Mutex<Tail>,
    settled: Condvar,
    gate: Gate,
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.wake.close();
    }
}

/// The kernel's boot id, empty if unknown (then every start replays).
fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_owned()
}

/// Syncs the file system holding `path`.
fn sync_file_system(path: &Path) -> io::Result<()> {
    rustix::fs::syncfs(File::open(path)?)?;
    Ok(())
}

impl Journal {
    /// Opens the journal in `dir` for the store on `root`. The versions that segments left
    /// are passed to `restore` first, with whether an earlier boot wrote them: then it makes
    /// each durable at its key; else it checks the file there, rewriting it if it is not that
    /// version (ROOT's file system is synced afterwards). Then their rows may be missing.
    /// `rows` commits the metadata rows of the versions recorded.
    pub fn open(
        dir: &Path,
        root: &Path,
        rows: Box<dyn Rows>,
        mut restore: impl FnMut(&Survivor, bool) -> io::Result<()>,
    ) -> io::Result<Arc<Journal>> {
        let boot = boot_id();
        let found = segments(dir)?;
        if !found.is_empty() {
            let mut records = Vec::new();
            let mut same_boot = !boot.is_empty();
            for (_, path) in &found {
                let (written_in, mut more) = read_segment(path)?;
                same_boot &= written_in == boot || more.is_empty();
                records.append(&mut more);
            }
            let survivors = survivors(records);
            for survivor in &survivors {
                restore(survivor, !same_boot).map_err(|e| {
                    io::Error::new(e.kind(), format!("replaying {}: {e}", survivor.key))
                })?;
            }
            // What `restore` found whole may still be only in the kernel's cache.
            if same_boot {
                sync_file_system(root)?;
            }
            if !same_boot && !survivors.is_empty() {
                tracing::warn!("replayed {} writes from the journal", survivors.len());
            }
            for (_, path) in &found {
                fs::remove_file(path)?;
            }
            File::open(dir)?.sync_all()?;
        }
        let next_number = found.last().map_or(1, |(n, _)| n + 1);
        let journal = Arc::new(Journal {
            rows,
            wake: Arc::default(),
            dir: dir.to_owned(),
            root: root.to_owned(),
            segment_limit: match super::simulated("journal-small-segments") {
                true => 1 << 20,
                false => SEGMENT_LIMIT,
            },
            boot,
            tail: Mutex::new(Tail { next_number, ..Tail::default() }),
            settled: Condvar::new(),
            gate: Gate::default(),
        });
        let (weak, wake) = (Arc::downgrade(&journal), journal.wake.clone());
        std::thread::Builder::new()
            .name("larder-journal".into())
            .spawn(move || Journal::run(weak, wake))?;
        Ok(journal)
    }

    /// The writer thread: flushes whatever is appended, until the journal is dropped.
    fn run(journal: Weak<Journal>, wake: Arc<Wake>) {
        while wake.next() {
            match journal.upgrade() {
                Some(journal) => journal.flush(),
                None => return,
            }
        }
    }

    fn tail(&self) -> MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shared hold of the gate: for a small write, from before its append until its version
    /// is visible.
    pub fn shared(self: &Arc<Self>) -> Shared {
        self.gate.shared();
        Shared(self.clone())
    }

    /// [`Journal::shared`] if it is to be had without waiting.
    pub fn try_shared(self: &Arc<Self>) -> Option<Shared> {
        self.gate.try_shared().then(|| Shared(self.clone()))
    }

    /// Exclusive hold of the gate: for a change to many paths at once, from before it
    /// until it is recorded with [`Journal::supersede`].
    pub fn exclusive(&self) -> Exclusive<'_> {
        self.gate.exclusive()
    }

    /// Records a new version of `key`, with its metadata `row`, and returns the ticket that
    /// [`Journal::cancel`] takes. The row is committed, and the record written, by the next
    /// flush; then `then` is called, on the journal's writer thread, with what came of it:
    /// the row committed and the record durable (`Ok(Ok)`), the row refused and the record
    /// cancelled (`Ok(Err)`), or why not (`Err`: the row may be committed, and the caller
    /// reverts it). The caller holds [`Journal::shared`] until its version is visible.
    pub fn record(
        &self,
        key: &str,
        meta: &[u8],
        body: &[Bytes],
        row: Row,
        then: Then,
    ) -> io::Result<u64> {
        record::fits(key, meta)?;
        Ok(self.append(Some((row, then)), |ticket, buf| record::put(buf, ticket, key, meta, body)))
    }

    /// [`Journal::record`], waiting for what comes of it.
    #[cfg(test)]
    fn settle(&self, key: &str, row: Row) -> (u64, Outcome) {
        let (sender, receiver) = std::sync::mpsc::channel();
        let then = Box::new(move |outcome| sender.send(outcome).expect("the test waits"));
        let ticket = self.record(key, b"", &[Bytes::from_static(b"x")], row, then).unwrap();
        (ticket, receiver.recv().unwrap())
    }

    /// [`Journal::record`] of a version without a quota, waiting until it is durable.
    #[cfg(test)]
    fn put(&self, key: &str, meta: &[u8], body: &[Bytes]) -> io::Result<u64> {
        let (sender, receiver) = std::sync::mpsc::channel();
        let then = Box::new(move |outcome| sender.send(outcome).expect("the test waits"));
        let ticket = self.record(key, meta, body, tests::row(key, None), then)?;
        receiver.recv().unwrap()?.map_err(|over| io::Error::other(format!("{over:?}")))?;
        Ok(ticket)
    }

    /// Records that `key` and everything beneath it were made durable by other means, and
    /// returns once that is durable. If the journal cannot record it, a checkpoint makes
    /// every recorded version durable and drops the journal instead. `exclusive` says whether
    /// the caller holds [`Journal::exclusive`]; otherwise it must not hold the gate at all.
    pub fn supersede(self: &Arc<Self>, key: &str, exclusive: bool) -> io::Result<()> {
        let ticket = self.append(None, |_, buf| record::supersede(buf, key));
        self.wait(ticket).or_else(|e| {
            tracing::warn!("journal: cannot record a superseding write ({e}); checkpointing");
            self.checkpoint_now(!exclusive)
        })
    }

    /// Records that the version under `ticket` never became visible (or, failing that,
    /// checkpoints as [`Journal::supersede`] does). The caller must not hold the gate.
    pub fn cancel(self: &Arc<Self>, ticket: u64) -> io::Result<()> {
        let mine = self.append(None, |_, buf| record::cancel(buf, ticket));
        self.wait(mine).or_else(|_| self.checkpoint_now(true))
    }

    /// Encodes a record under a new ticket, for the writer thread.
    fn append(&self, version: Option<(Row, Then)>, encode: impl FnOnce(u64, &mut Vec<u8>)) -> u64 {
        let mut tail = self.tail();
        tail.taken += 1;
        tail.waiting += 1;
        let ticket = tail.taken;
        encode(ticket, &mut tail.buf);
        if let Some((row, then)) = version {
            tail.rows.push((ticket, row));
            tail.then.push((ticket, then));
        }
        drop(tail);
        self.wake.signal();
        ticket
    }

    /// Commits `rows` (one transaction for the batch), and adds to `buf` a cancellation for
    /// each one refused or failed, so that its version is never replayed.
    fn commit_rows(&self, rows: &[(u64, Row)], buf: &mut Vec<u8>) -> Vec<(u64, Outcome)> {
        if rows.is_empty() {
            return Vec::new();
        }
        let batch: Vec<&Row> = rows.iter().map(|(_, row)| row).collect();
        let run =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.rows.commit(&batch)));
        let mut outcomes = run.unwrap_or_default().into_iter();
        let outcomes = rows.iter().map(|(ticket, _)| {
            let outcome = outcomes
                .next()
                .unwrap_or_else(|| Err(io::Error::other("committing the metadata panicked")));
            if !matches!(outcome, Ok(Ok(()))) {
                record::cancel(buf, *ticket);
            }
            (*ticket, outcome)
        });
        outcomes.collect()
    }

    /// Returns once `ticket` is durable (or failed).
    fn wait(&self, ticket: u64) -> io::Result<()> {
        let tail = self.tail();
        let busy = |tail: &mut Tail| tail.settled < ticket;
        let mut tail = self.settled.wait_while(tail, busy).unwrap_or_else(|e| e.into_inner());
        tail.outcome(ticket)
    }

    /// Writes and flushes every record appended so far, then settles them: wakes whoever
    /// waits, and calls what each version's writer left to do.
    fn flush(self: &Arc<Self>) {
        let mut tail = self.tail();
        if tail.settled == tail.taken {
            return;
        }
        tail.running = true;
        let (from, covers) = (tail.settled + 1, tail.taken);
        let mut buf = std::mem::take(&mut tail.buf);
        let (checked, behind): (Vec<_>, Vec<_>) =
            std::mem::take(&mut tail.rows).into_iter().partition(|(_, r)| r.quota.is_some());
        let then = std::mem::take(&mut tail.then);
        let active = tail.active.take();
        let number = tail.next_number;
        drop(tail);
        let committed = self.commit_rows(&checked, &mut buf);
        let writing = active.as_ref().map(|segment| segment.path.clone());
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.write(active, number, &buf)
        }));
        let written = written.unwrap_or_else(|_| Written {
            active: Err(io::Error::other("writing the journal panicked")),
            opened: false,
            // Done with, as after a failed write (a segment it began is older than the next).
            retired: writing.into_iter().collect(),
        });
        if written.active.is_ok() {
            let rows = behind.into_iter().map(|(_, row)| row).collect();
            let taken = std::panic::AssertUnwindSafe(|| self.rows.behind(rows));
            if std::panic::catch_unwind(taken).is_err() {
                tracing::error!("handing metadata rows behind the journal panicked");
            }
        }
        let mut tail = self.tail();
        tail.committed.extend(committed);
        tail.running = false;
        tail.settled = covers;
        let Written { active, opened, retired } = written;
        if opened {
            tail.next_number += 1;
        }
        tail.retired.extend(retired);
        match active {
            Ok(segment) => tail.active = Some(segment),
            Err(e) => tail.failed.push((from, covers, e.kind(), e.to_string())),
        }
        if !tail.retired.is_empty() && !tail.checkpointing {
            tail.checkpointing = true;
            let journal = self.clone();
            std::thread::spawn(move || journal.checkpoint());
        }
        let then: Vec<_> =
            then.into_iter().map(|(ticket, then)| (then, tail.settled(ticket))).collect();
        drop(tail);
        self.settled.notify_all();
        for (then, outcome) in then {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| then(outcome))).is_err() {
                tracing::error!("making a journaled version visible panicked");
            }
        }
    }

    /// Writes `buf` to the active segment (a new one if there is none or it is full) and
    /// flushes it.
    fn write(&self, active: Option<Segment>, number: u64, buf: &[u8]) -> Written {
        let mut retired = Vec::new();
        let mut opened = false;
        let mut segment = match active {
            Some(segment) if segment.len < self.segment_limit => segment,
            full => {
                retired.extend(full.map(|s| s.path));
                opened = true;
                match self.begin(number) {
                    Ok(segment) => segment,
                    Err(e) => return Written { active: Err(e), opened, retired },
                }
            }
        };
        /// An error a fail point injects in place of the flush.
        fn flush_fault() -> io::Result<()> {
            fail::fail_point!("store-sync", |arg| Err(super::injected(arg)));
            Ok(())
        }
        let flushed = flush_fault().and_then(|()| segment.append(buf));
        match flushed {
            Ok(()) => Written { active: Ok(segment), opened, retired },
            Err(e) => {
                // What follows a failed write is unreadable: the segment is done.
                retired.push(segment.path);
                Written { active: Err(e), opened, retired }
            }
        }
    }

    /// Creates segment `number`, durable with its header before any record goes in it.
    fn begin(&self, number: u64) -> io::Result<Segment> {
        let path = self.dir.join(format!("{PREFIX}{number:016x}"));
        let created = OpenOptions::new().write(true).create_new(true).open(&path)?;
        // Records bypass the page cache where the file system allows it: a flush then costs
        // half the CPU time (no pages to dirty and write back), and as much on the disk.
        let direct = match super::simulated("fs-no-direct") {
            true => Err(io::ErrorKind::Unsupported.into()),
            false => OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(&path),
        };
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(self.boot.as_bytes());
        header.push(b'\n');
        let file = direct.unwrap_or(created);
        let mut segment = Segment { file, path, len: 0, zeroed: 0, partial: Vec::new() };
        segment.append(&header)?;
        File::open(&self.dir)?.sync_all()?;
        Ok(segment)
    }

    /// Removes retired segments once every write they record is visible and synced.
    fn checkpoint(self: Arc<Self>) {
        loop {
            let retired = {
                let mut tail = self.tail();
                if tail.retired.is_empty() {
                    tail.checkpointing = false;
                    return;
                }
                tail.retired.clone()
            };
            if let Err(e) = self.drop_segments(&retired, true) {
                tracing::error!("journal checkpoint failed, retried at the next one: {e}");
                self.tail().checkpointing = false;
                return;
            }
            self.tail().retired.retain(|p| !retired.contains(p));
        }
    }

    /// Waits until every write recorded in `segments` is visible (unless the caller holds
    /// the gate exclusively, which says as much) and has its row committed, syncs ROOT's
    /// file system and removes them.
    fn drop_segments(&self, segments: &[PathBuf], barrier: bool) -> io::Result<()> {
        if barrier {
            drop(self.exclusive());
        }
        if !self.rows.caught_up() {
            return Err(io::Error::other("metadata rows behind the journal are not committed"));
        }
        sync_file_system(&self.root)?;
        // Every older segment too: its records came before, and the barrier and the sync
        // cover them as well. One left behind (its writer lost it to a panic) would outlive
        // the records that replace its versions, and a start would write those back.
        let newest =
            segments.iter().filter_map(|p| p.file_name()?.to_str().and_then(segment_number));
        let Some(newest) = newest.max() else { return Ok(()) };
        for (_, path) in self::segments(&self.dir)?.into_iter().filter(|(n, _)| *n <= newest) {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        File::open(&self.dir)?.sync_all()
    }

    /// At a stop: makes every recorded version durable where it is and drops every segment.
    pub fn close(&self) -> io::Result<()> {
        self.checkpoint_now(true)
    }

    /// After a failure to record: retires the active segment and drops every segment at once.
    fn checkpoint_now(&self, barrier: bool) -> io::Result<()> {
        let segments = {
            let mut tail = self.tail();
            while tail.running {
                tail = self.settled.wait(tail).unwrap_or_else(|e| e.into_inner());
            }
            if let Some(segment) = tail.active.take() {
                tail.retired.push(segment.path);
            }
            tail.retired.clone()
        };
        self.drop_segments(&segments, barrier)?;
        self.tail().retired.retain(|p| !segments.contains(p));
        Ok(())
    }
}

/// What a flush's write left.
struct Written {
    /// The segment to append to next, or why the write failed.
    active: io::Result<Segment>,
    /// Whether a new segment was begun (its number is used).
    opened: bool,
    /// Segments done with.
    retired: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row for a new version of `path`.
    pub(super) fn row(path: &str, quota: Option<crate::state::Quota>) -> Row {
        Row {
            path: path.into(),
            fp: crate::state::Fingerprint { ino: 1, size: 1, mtime_ns: 1 },
            meta: crate::state::ObjectMeta { etag: "e".into(), content_type: None, owner: None },
            current: None,
            quota,
        }
    }

    /// Rows committed nowhere, the ones with a quota refused under `/full/`; the rows
    /// taken behind are kept in `behind`.
    #[derive(Default)]
    struct Kept {
        behind: Arc<Mutex<Vec<String>>>,
    }

    impl Rows for Kept {
        fn commit(&self, rows: &[&Row]) -> Vec<Outcome> {
            let over = crate::state::OverQuota { used: 1, needed: 2, resources: None };
            let refused = |row: &&Row| row.path.starts_with("/full/");
            rows.iter().map(|row| Ok(if refused(row) { Err(over) } else { Ok(()) })).collect()
        }

        fn behind(&self, rows: Vec<Row>) {
            self.behind.lock().unwrap().extend(rows.into_iter().map(|row| row.path));
        }

        fn caught_up(&self) -> bool {
            true
        }
    }

    fn no_rows() -> Box<dyn Rows> {
        Box::<Kept>::default()
    }

    #[test]
    fn an_earlier_boots_segments_are_replayed_then_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let journal =
            Journal::open(dir.path(), root.path(), no_rows(), |_, _| unreachable!()).unwrap();
        let shared = journal.shared();
        let ticket = journal.put("/a", b"t\no", &[Bytes::from_static(b"one")]).unwrap();
        journal.put("/b", b"t\no", &[Bytes::from_static(b"two")]).unwrap();
        drop(shared);
        journal.cancel(ticket).unwrap();
        drop(journal);
        let bytes = fs::read(&segments(dir.path()).unwrap()[0].1).unwrap();
        let path = from_another_boot(dir.path());
        assert_eq!(replayed(dir.path(), root.path()), vec![("/b".to_owned(), b"two".to_vec())]);
        assert!(segments(dir.path()).unwrap().is_empty(), "replayed segments are removed");
        // And a same-boot start rewrites nothing: only rows may be missing.
        fs::write(&path, &bytes).unwrap();
        let mut restored = Vec::new();
        Journal::open(dir.path(), root.path(), no_rows(), |s, earlier| {
            restored.push((s.key.clone(), earlier));
            Ok(())
        })
        .unwrap();
        assert_eq!(restored, vec![("/b".to_owned(), false)]);
        assert!(segments(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_checkpoint_drops_every_older_segment_with_the_retired_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let journal =
            Journal::open(dir.path(), root.path(), no_rows(), |_, _| unreachable!()).unwrap();
        let shared = journal.shared();
        journal.put("/a", b"t\no", &[Bytes::from_static(b"old")]).unwrap();
        drop(shared);
        // A segment its writer lost (a panic mid-write), older than the active one.
        let (_, active) = segments(dir.path()).unwrap().remove(0);
        fs::copy(&active, dir.path().join(format!("{PREFIX}{:016x}", 0))).unwrap();
        journal.checkpoint_now(true).unwrap();
        assert!(segments(dir.path()).unwrap().is_empty(), "no record outlives a checkpoint");
    }

    #[test]
    fn the_gate_is_not_had_without_waiting_while_a_removal_holds_or_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let journal =
            Journal::open(dir.path(), root.path(), no_rows(), |_, _| unreachable!()).unwrap();
        let exclusive = journal.exclusive();
        assert!(journal.try_shared().is_none(), "a removal holds the gate");
        drop(exclusive);
        let shared = journal.try_shared().expect("the gate is free");
        assert!(journal.try_shared().is_some(), "shared holds go together");
        // A removal waiting for the shared holds keeps new ones out.
        std::thread::scope(|scope| {
            let waiting = scope.spawn(|| drop(journal.exclusive()));
            while journal.gate.writers_waiting() == 0 {
                std::thread::yield_now();
            }
            assert!(journal.try_shared().is_none(), "a removal waits for the gate");
            drop(shared);
            waiting.join().unwrap();
        });
        assert!(journal.try_shared().is_some());
    }

    /// Rewrites `dir`'s one segment as if written in another boot; returns its path.
    fn from_another_boot(dir: &Path) -> PathBuf {
        let found = segments(dir).unwrap();
        assert_eq!(found.len(), 1);
        let bytes = fs::read(&found[0].1).unwrap();
        let text_end = MAGIC.len() + bytes[MAGIC.len()..].iter().position(|b| *b == b'\n').unwrap();
        let mut other = MAGIC.to_vec();
        other.extend_from_slice(b"another-boot");
        other.extend_from_slice(&bytes[text_end..]);
        fs::write(&found[0].1, &other).unwrap();
        found[0].1.clone()
    }

    /// The versions a start after another boot rewrites from `dir`.
    fn replayed(dir: &Path, root: &Path) -> Vec<(String, Vec<u8>)> {
        let mut rewritten = Vec::new();
        Journal::open(dir, root, no_rows(), |s, earlier| {
            assert!(earlier, "a same-boot start rewrites nothing");
            rewritten.push((s.key.clone(), s.body.clone()));
            Ok(())
        })
        .unwrap();
        rewritten
    }

    #[test]
    fn records_written_over_many_flushes_and_blocks_all_come_back() {
        // Each flush rewrites the block the last one ended in, and the segment is zero-filled
        // 4 MiB at a time: records of every size across both must read back whole.
        let dir = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let journal =
            Journal::open(dir.path(), root.path(), no_rows(), |_, _| unreachable!()).unwrap();
        let mut expected = Vec::new();
        for (i, size) in
            [1, 5000, 4096, 7, 1 << 20, 3 << 20, 100, 4095, 2 << 20, 1].iter().enumerate()
        {
            let key = format!("/f{i}");
            let body = vec![i as u8 + 1; *size];
            let _shared = journal.shared();
            journal.put(&key, b"t\no", &[Bytes::from(body.clone())]).unwrap();
            expected.push((key, body));
        }
        drop(journal);
        from_another_boot(dir.path());
        assert_eq!(replayed(dir.path(), root.path()), expected);
    }

    #[test]
    fn a_version_whose_row_is_refused_is_cancelled_with_its_flush() {
        use crate::state::OverQuota;
        let dir = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        // Rows for keys under /full are refused, as over a quota.
        let kept = Kept::default();
        let behind = kept.behind.clone();
        let journal =
            Journal::open(dir.path(), root.path(), Box::new(kept), |_, _| unreachable!()).unwrap();
        let shared = journal.shared();
        let (_, refused) =
            journal.settle("/full/a", row("/full/a", Some(crate::state::Quota::bytes(1))));
        assert_eq!(refused.unwrap(), Err(OverQuota { used: 1, needed: 2, resources: None }));
        assert!(behind.lock().unwrap().is_empty(), "a row with a quota is committed, not behind");
        let (_, checked) = journal.settle("/b", row("/b", Some(crate::state::Quota::bytes(1))));
        assert_eq!(checked.unwrap(), Ok(()));
        let (_, free) = journal.settle("/full/c", row("/full/c", None));
        assert_eq!(free.unwrap(), Ok(()));
        drop(shared);
        assert_eq!(*behind.lock().unwrap(), ["/full/c"], "a row without a quota goes behind");
        drop(journal);
        from_another_boot(dir.path());
        let replayed = replayed(dir.path(), root.path());
        let expected = [("/b".to_owned(), b"x".to_vec()), ("/full/c".to_owned(), b"x".to_vec())];
        assert_eq!(replayed, expected);
    }
}
