//! What identifies a version of a file and what it carries: its fingerprint (inode, size,
//! nanosecond times), the ETag derived from one, the metadata in the `user.larder` extended
//! attribute, and the file system's abilities (xattrs, exact times) probed at start.

use super::*;

pub(super) fn fingerprint(meta: &fs::Metadata) -> Fingerprint {
    Fingerprint {
        ino: meta.ino(),
        size: meta.len(),
        mtime_ns: meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec()),
    }
}

pub(super) fn derived_etag(fp: Fingerprint) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&fp.ino.to_le_bytes());
    hasher.update(&fp.size.to_le_bytes());
    hasher.update(&fp.mtime_ns.to_le_bytes());
    etag_of(&hasher)
}

/// The entry for `meta` at `path`, with what larder recorded about this version, if anything.
pub(super) fn entry_of(
    path: &ResourcePath,
    meta: &fs::Metadata,
    recorded: Option<ObjectMeta>,
) -> Result<Entry, Error> {
    let modified = meta.modified()?;
    if meta.is_dir() {
        return Ok(Entry::collection(path, modified));
    }
    let (etag, content_type, owner) = match recorded {
        Some(ObjectMeta { etag, content_type, owner }) => (etag, content_type, owner),
        None => (derived_etag(fingerprint(meta)), None, None),
    };
    Ok(Entry {
        path: path.with_collection(false),
        kind: Kind::Resource,
        size: meta.len(),
        modified,
        etag: Some(etag),
        content_type: Some(content_type.unwrap_or_else(|| guess_type(path.name()))),
        owner,
    })
}

/// The fingerprint of `file`, new and holding `size` bytes, without asking the file system
/// for its times: its modification time is set to now instead. Under Linux's multigrain
/// timestamps (6.13+), a file whose times were asked for takes a fine-grained timestamp at
/// its next change (here, its link into its folder), and every file changed after it until
/// the next clock tick takes one too: the journal's segment then has a new modification time
/// at each flush, and each flush writes its inode as well. Only where the file system keeps
/// times to the nanosecond ([`Inner::exact_times`]).
pub(super) fn stamp_new_file(file: &File, size: u64) -> io::Result<Fingerprint> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    stamp(file, size, now.map_err(io::Error::other)?)
}

/// Sets `file`'s modification time to `at` (since the epoch): its fingerprint, with `size`.
pub(super) fn stamp(file: &File, size: u64, at: std::time::Duration) -> io::Result<Fingerprint> {
    use rustix::fs::{Timespec, Timestamps, UTIME_OMIT};
    let (secs, nanos) = (at.as_secs() as i64, i64::from(at.subsec_nanos()));
    let times = Timestamps {
        last_access: Timespec { tv_sec: 0, tv_nsec: UTIME_OMIT },
        last_modification: Timespec { tv_sec: secs, tv_nsec: nanos },
    };
    rustix::fs::futimens(file, &times)?;
    let ino = rustix::fs::statx(file, c"", AtFlags::EMPTY_PATH, StatxFlags::INO)?.stx_ino;
    Ok(Fingerprint { ino, size, mtime_ns: secs * 1_000_000_000 + nanos })
}

/// Flushes a just-written temporary file to stable storage and returns its fingerprint.
pub(super) fn sync_new_file(file: &File) -> Result<Fingerprint, Error> {
    fail::fail_point!("store-sync", |arg| Err(Error::from_io(crate::store::injected(arg))));
    file.sync_all()?;
    Ok(fingerprint(&file.metadata()?))
}

/// The extended attribute in which a file written by larder carries its content type and
/// owner (`TYPE\nOWNER`, either empty when unknown), made durable by the file's own sync.
pub(super) const META_ATTR: &CStr = c"user.larder";

/// Whether files in `dir` keep extended attributes (tried on a temporary file).
pub(super) fn keeps_attributes(dir: &Path) -> bool {
    if crate::store::simulated("fs-no-xattrs") {
        return false;
    }
    let probe = temp_name(dir);
    let Ok(file) = File::create(&probe) else { return false };
    let meta = ObjectMeta { etag: String::new(), content_type: None, owner: None };
    let kept = carry_meta(&file, &meta).is_ok();
    let _ = fs::remove_file(&probe);
    kept
}

/// Whether files in `dir` keep modification times to the nanosecond (tried on a temporary
/// file), as [`stamp_new_file`] needs.
pub(super) fn keeps_exact_times(dir: &Path) -> bool {
    let probe = temp_name(dir);
    let Ok(file) = File::create(&probe) else { return false };
    let stamped = stamp(&file, 0, std::time::Duration::new(1_700_000_000, 123_456_789));
    let kept = stamped.ok().zip(file.metadata().ok()).is_some_and(|(fp, meta)| {
        let found = fingerprint(&meta);
        (found.ino, found.mtime_ns) == (fp.ino, fp.mtime_ns)
    });
    let _ = fs::remove_file(&probe);
    kept
}

/// What [`META_ATTR`] holds for `meta`.
pub(super) fn meta_value(meta: &ObjectMeta) -> String {
    format!(
        "{}\n{}",
        meta.content_type.as_deref().unwrap_or(""),
        meta.owner.as_deref().unwrap_or("")
    )
}

/// Writes `meta`'s content type and owner into `file`'s [`META_ATTR`].
pub(super) fn carry_meta(file: &File, meta: &ObjectMeta) -> io::Result<()> {
    carry_value(file, meta_value(meta).as_bytes())
}

/// Writes `value` into `file`'s [`META_ATTR`].
pub(super) fn carry_value(file: &File, value: &[u8]) -> io::Result<()> {
    rustix::fs::fsetxattr(file, META_ATTR, value, rustix::fs::XattrFlags::empty())?;
    Ok(())
}

/// The metadata the file at `path` carries, if larder wrote it: the content type and owner
/// from [`META_ATTR`], the ETag from hashing its bytes.
pub(super) fn carried_meta(path: &Path) -> Option<ObjectMeta> {
    let mut value = vec![0u8; rustix::fs::lgetxattr_query(path, META_ATTR).ok()?];
    let len = rustix::fs::lgetxattr(path, META_ATTR, &mut value[..]).ok()?;
    let (content_type, owner) = std::str::from_utf8(&value[..len]).ok()?.split_once('\n')?;
    let given = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    Some(ObjectMeta {
        etag: etag_of_bytes(path)?,
        content_type: given(content_type),
        owner: given(owner),
    })
}

/// The ETag of the bytes of the file at `path` (as a PUT of them would answer).
pub(super) fn etag_of_bytes(path: &Path) -> Option<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::open(path).ok()?).ok()?;
    Some(etag_of(&hasher))
}

/// The folder fsyncs of this process, shared by concurrent writers to one folder.
pub(super) static DIR_SYNCS: std::sync::LazyLock<DirSyncs> =
    std::sync::LazyLock::new(DirSyncs::default);

pub(super) fn sync_dir(dir: &Dir) -> io::Result<()> {
    fail::fail_point!("store-sync", |arg| Err(crate::store::injected(arg)));
    DIR_SYNCS.sync(dir)
}
