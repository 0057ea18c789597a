//! Paths beneath ROOT, resolved by descriptor, never by name. Every lookup starts from ROOT's
//! own descriptor with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: the kernel refuses
//! any symlink on the way (the final name included) and any step above ROOT, atomically with
//! the lookup, so a folder swapped for a symlink while a request runs cannot lead it outside.
//! Symlinks inside ROOT answer as missing (SPEC §3). With `follow_symlinks`, the HTTP layer
//! first asks where a path leads ([`Root::followed`]: the kernel follows relative symlinks
//! that stay beneath ROOT) and acts on that path, which still follows no symlink.
//!
//! A folder found this way is held open as a [`Dir`]; the path code still uses is its
//! `/proc/self/fd/N`, which names that very folder for as long as the `Dir` lives, however
//! its ancestors are renamed or replaced meanwhile. So a write's folder, checked once, is the
//! folder its file is linked into. Where procfs is not mounted (some containers), the path is
//! the folder's name under ROOT: every lookup still refuses symlinks, but a folder swapped
//! between a write's check and its link is not defended against (a warning says so at start).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// How every path beneath ROOT is looked up.
const BENEATH: ResolveFlags =
    ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS).union(ResolveFlags::NO_MAGICLINKS);

/// Whether `/proc/self/fd` names this process's open descriptors (procfs is mounted).
pub(super) static PROC_FD: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
    Path::new("/proc/self/fd").is_dir() && !super::simulated("fs-no-proc")
});

/// ROOT, held open.
pub(super) struct Root {
    fd: OwnedFd,
    /// Its canonical path.
    path: PathBuf,
    /// The state folder's segments, when it lies inside ROOT: never served, listed or written.
    reserved: Option<Vec<String>>,
    /// The file system it is on (`st_dev`).
    device: u64,
}

/// A folder beneath ROOT, held open. Derefs to its `/proc/self/fd/N` path, valid while it
/// lives.
#[derive(Clone)]
pub(super) struct Dir {
    fd: Arc<OwnedFd>,
    path: PathBuf,
    /// Its place beneath ROOT (`/a/b`; `/` for ROOT).
    key: String,
}

impl std::ops::Deref for Dir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Dir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Dir {
    fn new(fd: OwnedFd, root: &Path, segments: &[String]) -> Dir {
        let path = match *PROC_FD {
            true => PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
            false => segments.iter().fold(root.to_owned(), |path, segment| path.join(segment)),
        };
        let key = format!("/{}", segments.join("/"));
        Dir { fd: Arc::new(fd), path, key }
    }

    /// The key (a path beneath ROOT, as the journal records it) of `name` in this folder.
    pub fn key_of(&self, name: &str) -> String {
        match self.key.as_str() {
            "/" => format!("/{name}"),
            key => format!("{key}/{name}"),
        }
    }

    /// Flushes the folder's names to the disk.
    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(&*self.fd).map_err(io::Error::from)
    }
}

/// What a symlink or an escape met on the way means, or a socket opened as a file (ENXIO):
/// nothing is there.
fn not_there(e: Errno) -> io::Error {
    match e {
        Errno::LOOP | Errno::XDEV | Errno::NXIO => io::Error::from(io::ErrorKind::NotFound),
        other => io::Error::from(other),
    }
}

/// Opens the folder `name` in `at`, not following a symlink: one is `NotFound` (the kernel
/// says ENOTDIR or ELOOP for it, as for a file, which stays `NotADirectory`).
fn step(at: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(at, name, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOTDIR) => {
            match rustix::fs::statat(at, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat)
                    if rustix::fs::FileType::from_raw_mode(stat.st_mode)
                        == rustix::fs::FileType::Symlink =>
                {
                    Err(io::ErrorKind::NotFound.into())
                }
                _ => Err(Errno::NOTDIR.into()),
            }
        }
        Err(e) => Err(not_there(e)),
    }
}

impl Root {
    /// Holds `root` (canonical) open; `reserved` is the state folder if inside it.
    pub fn open(root: &Path, reserved: Option<&Path>) -> io::Result<Root> {
        let fd = rustix::fs::open(
            root,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let reserved = reserved.and_then(|r| r.strip_prefix(root).ok()).map(|relative| {
            relative.iter().map(|s| s.to_string_lossy().into_owned()).collect::<Vec<_>>()
        });
        let device = rustix::fs::fstat(&fd)?.st_dev;
        Ok(Root { fd, path: root.to_owned(), reserved, device })
    }

    /// Whether `dir` is on ROOT's file system (not on one mounted beneath it): the one file
    /// system that syncing ROOT's makes durable.
    pub fn holds(&self, dir: &Dir) -> io::Result<bool> {
        Ok(rustix::fs::fstat(&*dir.fd)?.st_dev == self.device)
    }

    /// True for the state folder and what is inside it.
    pub fn is_reserved(&self, segments: &[String]) -> bool {
        self.reserved.as_ref().is_some_and(|r| segments.starts_with(r))
    }

    /// Opens what `segments` names with `flags`: `NotFound` for a symlink on the way, a path
    /// above ROOT or the state folder.
    pub fn open_at(&self, segments: &[String], flags: OFlags) -> io::Result<OwnedFd> {
        if self.is_reserved(segments) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let relative = match segments.is_empty() {
            true => ".".to_owned(),
            false => segments.join("/"),
        };
        let flags = flags | OFlags::CLOEXEC;
        // A rename anywhere in the namespace during the lookup makes the kernel give up
        // (EAGAIN) rather than risk a wrong answer: try again, then walk.
        for _ in 0..4 {
            match rustix::fs::openat2(&self.fd, &relative, flags, Mode::empty(), BENEATH) {
                Err(Errno::AGAIN) => continue,
                Err(Errno::NOSYS) => break,
                other => return other.map_err(not_there),
            }
        }
        self.walk(segments, flags)
    }

    /// [`Root::open_at`] a step at a time, for kernels without `openat2` (before 5.6): each
    /// step relative to the folder the previous one opened, none following a symlink.
    fn walk(&self, segments: &[String], flags: OFlags) -> io::Result<OwnedFd> {
        let mut at = rustix::io::dup(&self.fd)?;
        let Some((last, folders)) = segments.split_last() else {
            return rustix::fs::openat(&self.fd, ".", flags, Mode::empty()).map_err(not_there);
        };
        for segment in folders {
            at = step(&at, segment)?;
        }
        rustix::fs::openat(&at, last.as_str(), flags | OFlags::NOFOLLOW, Mode::empty())
            .map_err(not_there)
    }

    /// The segments of the longest existing start of `segments` with every symlink on the
    /// way followed (relative ones that stay beneath ROOT; others are `NotFound`), and how
    /// many of `segments` that start was. The kernel follows them (`RESOLVE_BENEATH`) and
    /// says where it arrived (`/proc/self/fd/N`), so the answer is one consistent lookup.
    pub fn followed(&self, segments: &[String]) -> io::Result<(Vec<String>, usize)> {
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        let flags = OFlags::PATH | OFlags::CLOEXEC;
        for len in (0..=segments.len()).rev() {
            let relative = match len {
                0 => ".".to_owned(),
                _ => segments[..len].join("/"),
            };
            let fd = match rustix::fs::openat2(&self.fd, &relative, flags, Mode::empty(), how) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR) if len > 0 => continue,
                Err(e) => return Err(not_there(e)),
            };
            // Without procfs, where the kernel arrived cannot be asked: nothing is followed.
            let at = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .map_err(|_| io::Error::from(io::ErrorKind::NotFound))?;
            let inside = at
                .strip_prefix(&self.path)
                .map_err(|_| io::Error::from(io::ErrorKind::NotFound))?;
            let real: Vec<String> =
                inside.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            if self.is_reserved(&real) {
                return Err(io::ErrorKind::NotFound.into());
            }
            return Ok((real, len));
        }
        Err(io::ErrorKind::NotFound.into())
    }

    /// The file or folder `segments` names, opened for reading. Non-blocking, so that a FIFO
    /// put in ROOT opens at once (and is then refused) instead of waiting for a writer.
    pub fn file(&self, segments: &[String]) -> io::Result<File> {
        Ok(File::from(self.open_at(segments, OFlags::RDONLY | OFlags::NONBLOCK)?))
    }

    /// The folder `segments` names, held open.
    pub fn dir(&self, segments: &[String]) -> io::Result<Dir> {
        let fd = self.open_at(segments, OFlags::DIRECTORY | OFlags::RDONLY)?;
        Ok(Dir::new(fd, &self.path, segments))
    }

    /// The folder `segments` names; when `create` is given, missing levels are made, each in
    /// its held parent, which is then synced with `sync`. `create` hears the keys of the
    /// levels to make (`/a/`, `/a/b/`), before any is made: an error from it makes none.
    /// `None` if a level is missing and not to be made. A level that is a file is
    /// `NotADirectory`; a symlink, `NotFound`. Linear in the depth: one lookup, or one step
    /// per level.
    pub fn folder(
        &self,
        segments: &[String],
        create: Option<Announce<'_>>,
        sync: impl Fn(&Dir) -> io::Result<()>,
    ) -> io::Result<Option<Dir>> {
        let create = match (self.dir(segments), create) {
            (Ok(dir), _) => return Ok(Some(dir)),
            (Err(e), Some(create)) if e.kind() == io::ErrorKind::NotFound => create,
            (Err(e), None) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            (Err(e), _) => return Err(e),
        };
        if self.is_reserved(segments) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let mut at = Dir::new(rustix::io::dup(&self.fd)?, &self.path, &[]);
        let mut announced = false;
        for (depth, segment) in segments.iter().enumerate() {
            let fd = match step(&at.fd, segment) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                    if !std::mem::replace(&mut announced, true) {
                        create(&keys(&segments[..depth], &segments[depth..]))?;
                    }
                    match rustix::fs::mkdirat(&*at.fd, segment.as_str(), Mode::from(0o777)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    sync(&at)?;
                    step(&at.fd, segment)?
                }
                Err(e) => return Err(e),
            };
            at = Dir::new(fd, &self.path, &segments[..=depth]);
        }
        Ok(Some(at))
    }
}

/// Hears the keys of the folders [`Root::folder`] is about to make; an error makes none.
pub type Announce<'a> = &'a dyn Fn(&[String]) -> io::Result<()>;

/// The collection keys of `missing`'s levels beneath `found`: `/a/b/`, `/a/b/c/` for `a`
/// and `b`, `c`.
fn keys(found: &[String], missing: &[String]) -> Vec<String> {
    let mut key: String = found.iter().flat_map(|s| ["/", s.as_str()]).collect();
    missing
        .iter()
        .map(|segment| {
            key.push('/');
            key.push_str(segment);
            format!("{key}/")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(path: &str) -> Vec<String> {
        path.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect()
    }

    #[test]
    fn nothing_through_a_symlink_or_above_root() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"s").unwrap();
        std::fs::write(root.join("a/b/f"), b"f").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("alias")).unwrap();
        std::os::unix::fs::symlink(root.join("a/b/f"), root.join("link")).unwrap();
        let tree = Root::open(&root, None).unwrap();
        assert!(tree.file(&segments("a/b/f")).is_ok());
        for path in ["out/secret", "alias/b/f", "link", "out", "missing"] {
            let found = tree.file(&segments(path));
            assert_eq!(found.unwrap_err().kind(), io::ErrorKind::NotFound, "{path}");
            let walked = tree.walk(&segments(path), OFlags::RDONLY);
            assert_eq!(walked.unwrap_err().kind(), io::ErrorKind::NotFound, "{path}");
        }
        // A held folder stays the folder it was, whatever its name becomes.
        let held = tree.dir(&segments("a/b")).unwrap();
        std::fs::rename(root.join("a"), root.join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a")).unwrap();
        assert_eq!(std::fs::read(held.join("f")).unwrap(), b"f");
        assert_eq!(held.key_of("f"), "/a/b/f");
        // Creating through a symlink is refused; missing levels are made and synced.
        let made = tree.folder(&segments("a/new"), Some(&|_| Ok(())), |_| Ok(()));
        assert_eq!(made.err().map(|e| e.kind()), Some(io::ErrorKind::NotFound));
        assert!(!outside.join("new").exists());
        // Told of the missing levels first; refusing makes none of them.
        let refuse = |_: &[String]| Err(io::Error::other("no"));
        let refused = tree.folder(&segments("moved/b/c/d"), Some(&refuse), |_| Ok(()));
        assert_eq!(refused.err().map(|e| e.to_string()).as_deref(), Some("no"));
        assert!(!root.join("moved/b/c").exists());
        let told = std::cell::RefCell::new(Vec::new());
        let tell = |keys: &[String]| {
            told.borrow_mut().extend_from_slice(keys);
            Ok(())
        };
        let synced = std::cell::Cell::new(0);
        let deep = tree.folder(&segments("x/y/z"), Some(&tell), |_| {
            synced.set(synced.get() + 1);
            Ok(())
        });
        assert!(deep.unwrap().is_some());
        assert!(root.join("x/y/z").is_dir());
        assert_eq!(*told.borrow(), ["/x/", "/x/y/", "/x/y/z/"]);
        tree.folder(&segments("x/y/z/w"), Some(&tell), |_| Ok(())).unwrap();
        assert_eq!(told.borrow().last().map(String::as_str), Some("/x/y/z/w/"));
        assert_eq!(told.borrow().len(), 4);
        assert!(tree.folder(&segments("x/v"), None, |_| Ok(())).unwrap().is_none());
        assert_eq!(synced.get(), 3);
    }

    #[test]
    fn the_state_folder_is_not_there() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        let tree = Root::open(dir.path(), Some(&dir.path().join("state"))).unwrap();
        let found = tree.dir(&segments("state")).err().map(|e| e.kind());
        assert_eq!(found, Some(io::ErrorKind::NotFound));
        assert!(tree.dir(&[]).is_ok());
    }
}
