//! The power-cut campaign (issue 30): the crash campaign's traffic and checks
//! ([`crate::crash::cycles`]) with ROOT and the state on LazyFS, a FUSE file system that keeps
//! written data in a cache of its own until it is synced and drops what was not synced on
//! command, as a power cut drops the kernel's page cache (`../shared/tools/lazyfs-README.md`).
//!
//! A cut: larder killed, every instance's unsynced data dropped, the instances unmounted and
//! mounted afresh (no cache, the kernel's included), larder started again with a new boot id
//! (or, one start in four, the same one: a disk or controller reset that a boot id does not
//! see), in a mount namespace of its own where `/proc/sys/kernel/random/boot_id` is a file of
//! the campaign's. Cuts come while the traffic runs, after it stopped, and during the start
//! that recovers (a second cut). `syncfs(2)` never reaches a FUSE file system, so larder runs
//! under strace, which holds each `syncfs` on its way in while the campaign checkpoints the
//! instance holding its descriptor: what a real `syncfs` would make durable is.
//!
//! A control writer that does not sync writes files on the same instances before each cut;
//! it must lose some, or the cuts did not bite and the campaign fails.
//!
//! Layouts: ROOT and the state on one instance; the state on an instance of its own; a
//! folder inside ROOT (a writer's) on another instance mounted there.
//!
//! Runs when `LARDER_LAZYFS` names the LazyFS binary (`scripts/test` builds it with
//! `../shared/tools/lazyfs-build`), as root; it then fails if FUSE is missing. Without
//! `LARDER_LAZYFS` it says it was skipped.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::crash::{self, Machine, When};

/// The fault commands and the log of one LazyFS instance.
#[derive(Clone)]
struct Faults {
    fifo: PathBuf,
    log: PathBuf,
}

impl Faults {
    /// How many lines of the log say `text`.
    fn count(&self, text: &str) -> usize {
        std::fs::read_to_string(&self.log).map_or(0, |log| log.matches(text).count())
    }

    /// Waits up to `seconds` until the log says `text` more than `before` times.
    fn said(&self, text: &str, before: usize, seconds: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while self.count(text) <= before {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// Waits until the log says `text` more than `before` times.
    fn await_line(&self, text: &str, before: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.count(text) <= before {
            if Instant::now() > deadline {
                let stderr = self.log.with_file_name("stderr.log");
                let said = std::fs::read_to_string(stderr).unwrap_or_default();
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("LazyFS never said {text:?}; its log:\n{log}\nits stderr:\n{said}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Sends `lazyfs::COMMAND` and waits until the log says `done`.
    fn command(&self, command: &str, done: &str) {
        let before = self.count(done);
        let mut fifo = std::fs::OpenOptions::new().write(true).open(&self.fifo).unwrap();
        fifo.write_all(format!("lazyfs::{command}\n").as_bytes()).unwrap();
        drop(fifo);
        self.await_line(done, before);
    }

    /// Drops every byte not synced: the power cut.
    fn clear_cache(&self) {
        self.command("clear-cache", "cache is cleared");
    }

    /// Writes every cached byte to the backing folder: what a `syncfs` would do.
    fn checkpoint(&self) {
        self.command("cache-checkpoint", "checkpoint is done");
    }
}

/// One LazyFS instance: its backing folder `DIR/data`, mounted at `mnt`.
struct Lazy {
    binary: PathBuf,
    dir: PathBuf,
    mnt: PathBuf,
    faults: Faults,
    process: Option<Child>,
}

impl Lazy {
    fn new(binary: &Path, dir: PathBuf, mnt: PathBuf) -> Lazy {
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let faults = Faults { fifo: dir.join("faults.fifo"), log: dir.join("lazyfs.log") };
        let config = format!(
            "[faults]\nfifo_path=\"{}\"\n[cache]\napply_eviction=false\n[cache.simple]\n\
             custom_size=\"1gb\"\nblocks_per_page=1\n[filesystem]\nlog_all_operations=false\n\
             logfile=\"{}\"\n",
            faults.fifo.display(),
            faults.log.display()
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let mut lazy = Lazy { binary: binary.to_owned(), dir, mnt, faults, process: None };
        lazy.mount();
        lazy
    }

    /// Mounts the instance: a second try, then a third, if it does not say it is ready.
    fn mount(&mut self) {
        for _ in 0..2 {
            if self.try_mount() {
                return;
            }
            self.unmount_now();
        }
        self.try_mount();
        self.faults.await_line("waiting for fault commands", 0);
        assert!(is_mounted(&self.mnt), "LazyFS is not mounted at {}", self.mnt.display());
    }

    fn try_mount(&mut self) -> bool {
        std::fs::create_dir_all(&self.mnt).unwrap();
        // A new instance writes its log afresh.
        let _ = std::fs::remove_file(&self.faults.log);
        let ready = "waiting for fault commands";
        let data = format!("subdir={}", self.dir.join("data").display());
        // The config path is given relative to the instance's folder: LazyFS takes a path with
        // "-o" anywhere in it (case-blind; a temporary folder's random name can hold one) for
        // its options and falls back to a config/default.toml that does not exist.
        let child = Command::new(&self.binary)
            .current_dir(&self.dir)
            .arg(&self.mnt)
            .arg("--config-path")
            .arg("config.toml")
            .args(["-o", "allow_other", "-o", "modules=subdir", "-o", &data, "-f"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("stderr.log")).unwrap())
            .spawn()
            .expect("LazyFS starts");
        self.process = Some(child);
        self.faults.said(ready, 0, 20) && is_mounted(&self.mnt)
    }

    /// Unmounts lazily and ends the process, whatever state it is in.
    fn unmount_now(&mut self) {
        let _ =
            Command::new("fusermount3").arg("-uz").arg(&self.mnt).stderr(Stdio::null()).status();
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn unmount(&mut self) {
        let mut tries = 0;
        while !Command::new("fusermount3").arg("-u").arg(&self.mnt).status().unwrap().success() {
            tries += 1;
            assert!(tries < 200, "{} stays busy", self.mnt.display());
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether a FUSE file system is mounted at `mnt`.
fn is_mounted(mnt: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mnt = mnt.to_string_lossy();
    mounts.lines().any(|line| line.split_whitespace().nth(1) == Some(&*mnt))
}

impl Drop for Lazy {
    fn drop(&mut self) {
        if self.process.is_some() {
            self.unmount_now();
        }
    }
}

/// Where things go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// ROOT and the state on one instance.
    One,
    /// The state on an instance of its own.
    StateApart,
    /// ROOT on one instance, ROOT/w1 on another mounted there.
    Nested,
}

/// What the cuts came to.
#[derive(Default)]
struct Counts {
    cuts: usize,
    during_recovery: usize,
    same_boot: usize,
    syncfs_held: Arc<AtomicUsize>,
    control_written: usize,
    control_lost: usize,
}

/// larder on LazyFS instances (outer first), cut by dropping what was not synced.
struct PowerMachine {
    instances: Vec<Lazy>,
    root: PathBuf,
    state: PathBuf,
    rng: StdRng,
    boots: usize,
    /// The boot id file of the running larder.
    boot: PathBuf,
    counts: Counts,
    /// Held by a cut: no checkpoint meanwhile.
    quiet: Arc<Mutex<()>>,
    watcher: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

impl PowerMachine {
    fn new(binary: &Path, dir: &Path, layout: Layout, rng: StdRng) -> PowerMachine {
        let outer = Lazy::new(binary, dir.join("lazy-0"), dir.join("mnt-0"));
        let root = outer.mnt.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let mut instances = vec![outer];
        let state = match layout {
            Layout::StateApart => {
                let apart = Lazy::new(binary, dir.join("lazy-1"), dir.join("mnt-1"));
                let state = apart.mnt.join("state");
                instances.push(apart);
                state
            }
            Layout::One | Layout::Nested => root.join(".larder"),
        };
        if layout == Layout::Nested {
            instances.push(Lazy::new(binary, dir.join("lazy-1"), root.join("w1")));
        }
        let mounts = instances.iter().map(|l| (l.mnt.clone(), l.faults.clone())).collect();
        let (stop, quiet, counts) =
            (Arc::new(AtomicBool::new(false)), Arc::default(), Counts::default());
        let (stopped, quieted, held) =
            (stop.clone(), Arc::clone(&quiet), counts.syncfs_held.clone());
        let watcher = std::thread::spawn(move || watch_syncs(mounts, stopped, quieted, held));
        PowerMachine {
            instances,
            root,
            state,
            rng,
            boots: 0,
            boot: dir.join("boot-id"),
            counts,
            quiet,
            watcher: Some((stop, watcher)),
        }
    }

    /// The script that starts larder in a namespace of its own, with our boot id, under
    /// strace holding each `syncfs` and `sync` for 0.5 s; its journal retires a segment (a
    /// checkpoint, with a `syncfs`) every MiB instead of every 64 (where built with fail
    /// points).
    fn script(&self, config: &Path) -> String {
        format!(
            "FAILPOINTS=journal-small-segments=return exec unshare -m sh -c 'mount --bind {boot} /proc/sys/kernel/random/boot_id && \
             exec strace -f --seccomp-bpf -qq -o /dev/null -e trace=syncfs,sync \
             -e inject=syncfs,sync:delay_enter=500000 \"$0\" \"$@\" --config {config} \
             --state {state}' \"$0\" \"$@\"",
            boot = self.boot.display(),
            config = config.display(),
            state = self.state.display(),
        )
    }

    /// A new boot id, or (one start in four) the same one again.
    fn next_boot(&mut self) {
        if self.boots > 0 && self.rng.random_range(0..4) == 0 {
            self.counts.same_boot += 1;
        } else {
            self.boots += 1;
        }
        std::fs::write(&self.boot, format!("powercut-boot-{}\n", self.boots)).unwrap();
    }

    /// Writes the control files, never synced, on each instance but a nested one.
    fn write_control(&mut self, round: usize) -> Vec<(PathBuf, Vec<u8>)> {
        let mut written = Vec::new();
        for (i, lazy) in self.instances.iter().enumerate() {
            if lazy.mnt.starts_with(&self.root) {
                continue; // a folder of ROOT's: the control files would be the writers'
            }
            let folder = lazy.mnt.join("control");
            std::fs::create_dir_all(&folder).unwrap();
            for k in 0..8 {
                let path = folder.join(format!("c{round}-{k}"));
                let bytes = content(&format!("control {i} {round} {k}"), 64 * 1024).to_vec();
                std::fs::write(&path, &bytes).unwrap();
                written.push((path, bytes));
            }
        }
        written
    }

    /// The power cut itself: whatever runs is killed, every instance drops what was not
    /// synced, and all are mounted afresh.
    fn drop_unsynced(&mut self, shell: &mut Child) {
        let quiet = self.quiet.clone();
        let _quiet = quiet.lock().unwrap();
        if let Some(larder) = traced(shell.id()) {
            let _ = rustix::process::kill_process(larder, rustix::process::Signal::KILL);
        }
        let _ = shell.kill();
        let _ = shell.wait();
        for lazy in &self.instances {
            lazy.faults.clear_cache();
        }
        for lazy in self.instances.iter_mut().rev() {
            lazy.unmount();
        }
        for lazy in &mut self.instances {
            lazy.mount();
        }
        self.counts.cuts += 1;
    }
}

/// The process strace traces (larder), if it has started.
fn traced(strace: u32) -> Option<rustix::process::Pid> {
    let children =
        std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children")).ok()?;
    let pid = children.split_whitespace().next()?.parse().ok()?;
    rustix::process::Pid::from_raw(pid)
}

/// The running larder (under strace), found by name: the campaigns run one at a time.
fn larder_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
        let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
        let traced = status.lines().any(|l| l.starts_with("TracerPid:") && !l.ends_with("\t0"));
        (comm.trim() == "larder" && traced).then_some(pid)
    })
}

/// Until `stop`: every `syncfs` larder makes (held by strace) is turned into a checkpoint of
/// the instance holding its descriptor, every `sync` into one of all; under `quiet`, which a
/// cut holds.
fn watch_syncs(
    mounts: Vec<(PathBuf, Faults)>,
    stop: Arc<AtomicBool>,
    quiet: Arc<Mutex<()>>,
    held: Arc<AtomicUsize>,
) {
    let mut handled: HashSet<(u32, String)> = HashSet::new();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(2));
        let Some(pid) = larder_pid() else { continue };
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            let key = (pid, task.file_name().to_string_lossy().into_owned());
            let call = std::fs::read_to_string(task.path().join("syscall")).unwrap_or_default();
            let mut fields = call.split_whitespace();
            let targets: Vec<&Faults> = match fields.next() {
                // x86_64: syncfs is 306, sync 162.
                Some("306") => {
                    let fd = fields.next().map(|a| a.trim_start_matches("0x"));
                    let fd = fd.and_then(|fd| i64::from_str_radix(fd, 16).ok());
                    let link =
                        fd.and_then(|fd| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok());
                    let Some(link) = link else { continue };
                    // The instance whose mount point is the longest prefix of the path.
                    mounts
                        .iter()
                        .filter(|(mnt, _)| link.starts_with(mnt))
                        .max_by_key(|(mnt, _)| mnt.as_os_str().len())
                        .map(|(_, faults)| faults)
                        .into_iter()
                        .collect()
                }
                Some("162") => mounts.iter().map(|(_, faults)| faults).collect(),
                _ => {
                    handled.remove(&key);
                    continue;
                }
            };
            if handled.insert(key) {
                let _quiet = quiet.lock().unwrap();
                for faults in targets {
                    faults.checkpoint();
                }
                held.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

impl Drop for PowerMachine {
    fn drop(&mut self) {
        if let Some((stop, watcher)) = self.watcher.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = watcher.join();
        }
        // Nested mounts first.
        while let Some(lazy) = self.instances.pop() {
            drop(lazy);
        }
    }
}

impl Machine for PowerMachine {
    fn root(&self) -> PathBuf {
        self.root.clone()
    }

    fn state(&self) -> PathBuf {
        self.state.clone()
    }

    fn start(&mut self, config: &Path) -> Process {
        self.next_boot();
        let script = self.script(config);
        // One start in three after a cut is cut too, a seeded moment into its recovery.
        if self.counts.cuts > 0 && self.rng.random_range(0..3) == 0 {
            let mut shell = Process::launch_through_shell(&script, &self.root);
            std::thread::sleep(Duration::from_millis(self.rng.random_range(5..120)));
            self.drop_unsynced(&mut shell);
            self.counts.during_recovery += 1;
            self.next_boot();
        }
        Process::start_through_shell(&script, &self.root)
    }

    fn cut(&mut self, mut server: Process) {
        let round = self.counts.cuts;
        let control = self.write_control(round);
        self.drop_unsynced(&mut server.child);
        self.counts.control_written += control.len();
        for (path, bytes) in control {
            if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
                self.counts.control_lost += 1;
            }
        }
    }
}

pub async fn run(options: &Options) -> Vec<String> {
    let Some(binary) = std::env::var_os("LARDER_LAZYFS").map(PathBuf::from) else {
        return vec![
            "skipped: LARDER_LAZYFS is not set (scripts/test builds LazyFS and sets it)".into(),
        ];
    };
    assert!(Path::new("/dev/fuse").exists(), "no FUSE here (/dev/fuse): cannot cut the power");
    assert!(rustix::process::geteuid().is_root(), "the power-cut campaign runs as root");
    let per_layout = if options.long { 40 } else { 8 };
    let mut lines = Vec::new();
    for (i, (layout, name)) in [
        (Layout::One, "ROOT and state on one file system"),
        (Layout::StateApart, "state on a file system of its own"),
        (Layout::Nested, "a folder inside ROOT on another file system"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir =
            tempfile::Builder::new().prefix("larder-powercut-").tempdir_in("/var/tmp").unwrap();
        let mut machine =
            PowerMachine::new(&binary, dir.path(), layout, options.rng(300 + i as u64));
        let config = crash::config(dir.path());
        let mut during = 0;
        let mut after = 0;
        let (traffic, checked) =
            crash::cycles(options, &mut machine, &config, per_layout, true, &mut |_, when| {
                match when {
                    When::DuringLoad => during += 1,
                    When::AfterLoad => after += 1,
                }
            })
            .await;
        let counts = &machine.counts;
        assert!(
            counts.control_lost > 0,
            "{name}: the control writer lost none of {} unsynced writes: the cuts did not bite",
            counts.control_written
        );
        lines.push(format!(
            "{name}: {} cuts ({during} under load, {after} after it, {} during recovery, one at \
             the end; {} starts with the same boot id); {}; {checked} path states checked after \
             restarts, every acknowledged one whole with its ETag, 0 lost, listings, storage use and \
             balances exact; {} syncfs held for a checkpoint; the control writer lost {} of {} unsynced files",
            counts.cuts,
            counts.during_recovery,
            counts.same_boot,
            traffic[1],
            counts.syncfs_held.load(Ordering::SeqCst),
            counts.control_lost,
            counts.control_written,
        ));
        drop(machine);
    }
    lines
}
