//! The crash campaign: concurrent PUT, POST, DELETE and purchase traffic against the real
//! binary, SIGKILL at a seeded moment (after a seeded number of acknowledged requests),
//! restart, and check every promise against a model of what was acknowledged. The power-cut
//! campaign ([`crate::powercut`]) runs the same traffic and checks on a [`Machine`] whose
//! cuts drop what the disk was not made to keep:
//!
//! - every acknowledged write reads back byte for byte, with the ETag of its bytes (an
//!   acknowledged DELETE, `Depth: infinity` included, stays gone);
//! - a request cut off by the kill left its path whole: the old bytes or the new ones;
//! - no temporary file survives the restart, and listings name what the folders hold;
//! - each account's storage use equals a recount of its folder on disk;
//! - the balance equals the ledger's sum and the plan's credits minus the purchases, and
//!   every acknowledged purchase is recorded.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use larder::state::State;
use tokio::sync::Notify;

use crate::common::*;

const WRITERS: usize = 3;
const FILES: usize = 5;
/// Files in each writer's folder `d/`, which a `Depth: infinity` DELETE takes whole.
const NESTED: usize = 2;
const ITEMS: usize = 400;
const PRICE: u64 = 5;
const CREDITS: u64 = 1000;

/// What a path may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Content {
    Absent,
    Bytes(Bytes),
}

#[derive(Default)]
struct Model {
    /// Per path: the acknowledged content, and what a request cut off by the kill would
    /// have made it.
    files: HashMap<String, (Content, Option<Content>)>,
    /// POSTed resources: acknowledged (by Location) and cut off (bytes only).
    posts: HashMap<String, Bytes>,
    posts_pending: Vec<Bytes>,
    purchases: HashSet<String>,
    purchases_pending: HashSet<String>,
}

#[derive(Default)]
struct Tally {
    requests: AtomicUsize,
    acked: AtomicUsize,
}

pub fn config(dir: &Path) -> std::path::PathBuf {
    let writers: Vec<String> = (0..WRITERS).map(|w| format!("w{w}")).collect();
    let names: Vec<&str> = writers.iter().map(String::as_str).collect();
    let text = format!(
        "{}{}[plan.writer]\nstorage = \"1 GiB\"\ncredits = 0\n[plan.buyer]\nstorage = \"1 MiB\"\ncredits = {CREDITS}\n\
         [[rule]]\npath = \"/\"\nread = [\"*\"]\nwrite = [\"@authenticated\"]\n\
         [[rule]]\npath = \"/shop\"\nread = [\"@authenticated\"]\nwrite = [\"w0\"]\nprice = {PRICE}\n",
        accounts(&names, Some("writer")),
        accounts(&["buyer"], Some("buyer")),
    );
    let path = dir.join("larder.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Where larder runs, and how it is ended at once.
pub trait Machine {
    /// ROOT, as the campaign sees it.
    fn root(&self) -> PathBuf;
    /// The state folder, as the campaign sees it.
    fn state(&self) -> PathBuf;
    /// Starts larder with `config` (after a cut: as after one).
    fn start(&mut self, config: &Path) -> Process;
    /// Ends `server` at once.
    fn cut(&mut self, server: Process);
}

/// A machine whose cut is a SIGKILL: the kernel keeps everything written.
struct Killed {
    root: PathBuf,
}

impl Machine for Killed {
    fn root(&self) -> PathBuf {
        self.root.clone()
    }

    fn state(&self) -> PathBuf {
        self.root.join(".larder")
    }

    fn start(&mut self, config: &Path) -> Process {
        start(&self.root, config, None)
    }

    fn cut(&mut self, mut server: Process) {
        server.kill();
    }
}

pub async fn run(options: &Options) -> Vec<String> {
    let kills = if options.long { 120 } else { 24 };
    let dir = tempfile::tempdir().unwrap();
    let mut machine = Killed { root: dir.path().join("root") };
    let config = config(dir.path());
    let (lines, _) = cycles(options, &mut machine, &config, kills, false, &mut |_, _| {}).await;
    let mut lines = lines;
    lines[0] = format!("{kills} SIGKILLs, each after a seeded 2-59 acknowledged requests");
    lines
}

/// Fills ROOT with what the traffic needs (the shop's items, the writers' folders).
pub fn furnish(root: &Path) {
    std::fs::create_dir_all(root.join("shop")).unwrap();
    for i in 0..ITEMS {
        std::fs::write(root.join(format!("shop/item{i}.txt")), format!("item {i}")).unwrap();
    }
    for w in 0..WRITERS {
        std::fs::create_dir_all(root.join(format!("w{w}/posts"))).unwrap();
    }
}

/// What a cycle's cut came after: the traffic running, or stopped a while before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    DuringLoad,
    AfterLoad,
}

/// `count` cycles on `machine`: traffic, a cut (during the load, or after it in a seeded
/// share of cycles when `after_load`), a restart, the checks; the restarted server carries
/// the next cycle's traffic. `between` runs after each cut, before the restart, with the
/// cycle and when the cut came. Returns the report's lines and the paths checked.
pub async fn cycles(
    options: &Options,
    machine: &mut dyn Machine,
    config: &Path,
    count: usize,
    after_load: bool,
    between: &mut dyn FnMut(usize, When),
) -> (Vec<String>, usize) {
    let root = machine.root();
    furnish(&root);
    let model = Arc::new(Mutex::new(Model::default()));
    {
        let mut model = model.lock().unwrap();
        for w in 0..WRITERS {
            for k in 0..FILES {
                model.files.insert(format!("/w{w}/f{k}.bin"), (Content::Absent, None));
            }
            for k in 0..NESTED {
                model.files.insert(format!("/w{w}/d/f{k}.bin"), (Content::Absent, None));
            }
        }
    }
    let tally = Arc::new(Tally::default());
    let mut schedule = options.rng(1);
    let mut verified = 0usize;
    let mut next_item = 0usize;
    let stop = Arc::new(AtomicBool::new(false));
    let mut server = machine.start(config);
    for cycle in 0..count {
        if cycle == 0 {
            // The first sign-in grants the buyer's credits.
            let reply = request(
                server.addr,
                "GET",
                "/.larder/account",
                &[("authorization", &basic("buyer"))],
                "",
            )
            .await
            .unwrap();
            assert_eq!(reply.status, 200);
        }
        let target = schedule.random_range(2..60usize);
        let acked_before = tally.acked.load(Ordering::SeqCst);
        let notify = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let seed = schedule.random::<u64>();
            let (model, tally, notify, stop) =
                (model.clone(), tally.clone(), notify.clone(), stop.clone());
            tasks.push(tokio::spawn(writer(server.addr, w, seed, model, tally, notify, stop)));
        }
        let first = next_item;
        next_item += 40;
        let (model_, tally_, notify_, stop_) =
            (model.clone(), tally.clone(), notify.clone(), stop.clone());
        tasks.push(tokio::spawn(buyer(server.addr, first, model_, tally_, notify_, stop_)));
        // Kill once `target` more requests have been acknowledged (or all traffic ended).
        let waited = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let notified = notify.notified();
                if tally.acked.load(Ordering::SeqCst) >= acked_before + target {
                    break;
                }
                notified.await;
            }
        })
        .await;
        assert!(waited.is_ok(), "cycle {cycle}: {target} acknowledgements never came");
        let when = match after_load && schedule.random_range(0..3) == 0 {
            true => When::AfterLoad,
            false => When::DuringLoad,
        };
        if when == When::AfterLoad {
            stop.store(true, Ordering::SeqCst);
            for task in tasks.drain(..) {
                task.await.unwrap();
            }
            // One more small write: a journal segment the traffic filled is retired at the
            // next write, and checkpointed in the background. Then idle a while: that, and
            // what the kernel would write back by itself, has time to go.
            let path = "/w0/f0.bin".to_owned();
            let body = content(&format!("nudge {cycle}"), 100);
            model.lock().unwrap().files.get_mut(&path).unwrap().1 =
                Some(Content::Bytes(body.clone()));
            let auth = basic("w0");
            let headers = [("authorization", auth.as_str())];
            let reply = request(server.addr, "PUT", &path, &headers, body.clone()).await.unwrap();
            assert!([200, 201].contains(&reply.status), "nudge: {}", reply.status);
            *model.lock().unwrap().files.get_mut(&path).unwrap() = (Content::Bytes(body), None);
            tokio::time::sleep(Duration::from_millis(schedule.random_range(50..1500))).await;
        }
        machine.cut(server);
        for task in tasks {
            task.await.unwrap();
        }
        stop.store(false, Ordering::SeqCst);
        between(cycle, when);
        server = machine.start(config);
        verified += verify(&server, &machine.state(), &root, &model, cycle).await;
    }
    machine.cut(server);
    let model = model.lock().unwrap();
    let lines = vec![
        String::new(),
        format!(
            "{} requests sent, {} acknowledged",
            tally.requests.load(Ordering::SeqCst),
            tally.acked.load(Ordering::SeqCst)
        ),
        format!(
            "{verified} path states verified byte for byte after restarts; {} POSTed resources and {} purchases standing",
            model.posts.len(),
            model.purchases.len()
        ),
        "no temporary file left, ETags of the bytes, listings = folders, storage use = recount, balance = ledger = credits - purchases, after every restart".into(),
    ];
    (lines, verified)
}

/// Writer `w`: PUT (small, and now and then past the journal's bodies), DELETE (of a file,
/// or of its folder `d/` with `Depth: infinity`) and POST on its own folder, until the
/// server goes away or `stop` is set.
async fn writer(
    addr: std::net::SocketAddr,
    w: usize,
    seed: u64,
    model: Arc<Mutex<Model>>,
    tally: Arc<Tally>,
    notify: Arc<Notify>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let auth = basic(&format!("w{w}"));
    let headers = [("authorization", auth.as_str())];
    let nested: Vec<String> = (0..NESTED).map(|k| format!("/w{w}/d/f{k}.bin")).collect();
    while !stop.load(Ordering::SeqCst) {
        let op = rng.random_range(0..20);
        tally.requests.fetch_add(1, Ordering::SeqCst);
        if op < 4 {
            let body =
                content(&format!("post w{w} {}", rng.random::<u64>()), rng.random_range(1..8192));
            model.lock().unwrap().posts_pending.push(body.clone());
            match request(addr, "POST", &format!("/w{w}/posts/"), &headers, body.clone()).await {
                Ok(reply) if reply.status == 201 => {
                    let location = reply.headers["location"].to_str().unwrap().to_owned();
                    let mut model = model.lock().unwrap();
                    model.posts_pending.retain(|b| b != &body);
                    model.posts.insert(location, body);
                }
                Ok(reply) => panic!("POST answered {}: {:?}", reply.status, reply.body),
                Err(_) => return,
            }
        } else if op == 4 {
            // The folder d/ whole, if it is there.
            for path in &nested {
                model.lock().unwrap().files.get_mut(path).unwrap().1 = Some(Content::Absent);
            }
            let depth = [("authorization", auth.as_str()), ("depth", "infinity")];
            match request(addr, "DELETE", &format!("/w{w}/d/"), &depth, "").await {
                Ok(reply) => {
                    assert!([204, 404].contains(&reply.status), "DELETE d/: {}", reply.status);
                    let mut model = model.lock().unwrap();
                    for path in &nested {
                        *model.files.get_mut(path).unwrap() = (Content::Absent, None);
                    }
                }
                Err(_) => return,
            }
        } else {
            let path = match op < 8 {
                true => nested[rng.random_range(0..NESTED)].clone(),
                false => format!("/w{w}/f{}.bin", rng.random_range(0..FILES)),
            };
            let (method, new) = if op < 10 {
                ("DELETE", Content::Absent)
            } else {
                let tag = format!("{path} {}", rng.random::<u64>());
                let len = match rng.random_range(0..8) {
                    0 => rng.random_range(256 * 1024..3 << 20), // written the synced way
                    _ => rng.random_range(1..256 * 1024),
                };
                ("PUT", Content::Bytes(content(&tag, len)))
            };
            model.lock().unwrap().files.get_mut(&path).unwrap().1 = Some(new.clone());
            let body = match &new {
                Content::Bytes(bytes) => bytes.clone(),
                Content::Absent => Bytes::new(),
            };
            match request(addr, method, &path, &headers, body).await {
                Ok(reply) => {
                    let fine = match method {
                        "PUT" => reply.status == 200 || reply.status == 201,
                        _ => reply.status == 204 || reply.status == 404,
                    };
                    assert!(fine, "{method} {path} answered {}: {:?}", reply.status, reply.body);
                    *model.lock().unwrap().files.get_mut(&path).unwrap() = (new, None);
                }
                Err(_) => return,
            }
        }
        tally.acked.fetch_add(1, Ordering::SeqCst);
        notify.notify_one();
    }
}

/// The buyer: purchases items from `first` on until the server goes away.
async fn buyer(
    addr: std::net::SocketAddr,
    first: usize,
    model: Arc<Mutex<Model>>,
    tally: Arc<Tally>,
    notify: Arc<Notify>,
    stop: Arc<AtomicBool>,
) {
    let auth = basic("buyer");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    for i in first..(first + 40).min(ITEMS) {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let path = format!("/shop/item{i}.txt");
        tally.requests.fetch_add(1, Ordering::SeqCst);
        model.lock().unwrap().purchases_pending.insert(path.clone());
        let body = format!("{{\"path\": \"{path}\"}}");
        match request(addr, "POST", "/.larder/purchases", &headers, body).await {
            Ok(reply) => {
                let mut model = model.lock().unwrap();
                model.purchases_pending.remove(&path);
                match reply.status {
                    201 => {
                        model.purchases.insert(path);
                    }
                    402 => {} // out of credits: the ledger check below covers it
                    status => panic!("purchase answered {status}: {:?}", reply.body),
                }
            }
            Err(_) => return,
        }
        tally.acked.fetch_add(1, Ordering::SeqCst);
        notify.notify_one();
    }
}

/// Checks the restarted server against the model, then settles the model to what is there
/// (a cut-off request's outcome is now known). Returns the number of paths checked.
async fn verify(
    server: &Process,
    state: &Path,
    root: &Path,
    model: &Mutex<Model>,
    cycle: usize,
) -> usize {
    let strays = temp_files(root);
    assert!(strays.is_empty(), "cycle {cycle}: temporary files after restart: {strays:?}");
    let files: Vec<(String, (Content, Option<Content>))> =
        model.lock().unwrap().files.iter().map(|(p, c)| (p.clone(), c.clone())).collect();
    let mut checked = 0;
    for (path, (acked, pending)) in files {
        let reply = request(server.addr, "GET", &path, &[], "").await.unwrap();
        let found = match reply.status {
            200 => {
                let etag = format!("\"{}\"", hex(&blake3::hash(&reply.body).as_bytes()[..16]));
                assert_eq!(
                    reply.header("etag"),
                    etag,
                    "cycle {cycle}: {path}: not its bytes' ETag"
                );
                Content::Bytes(reply.body)
            }
            404 => Content::Absent,
            status => panic!("cycle {cycle}: GET {path} answered {status}"),
        };
        assert!(
            found == acked || Some(&found) == pending.as_ref(),
            "cycle {cycle}: {path} holds neither its acknowledged nor its cut-off version"
        );
        model.lock().unwrap().files.insert(path, (found, None));
        checked += 1;
    }
    // POSTed resources: the acknowledged ones are there; anything else is a whole cut-off one.
    let (posts, pending): (HashMap<String, Bytes>, Vec<Bytes>) = {
        let mut model = model.lock().unwrap();
        (model.posts.clone(), std::mem::take(&mut model.posts_pending))
    };
    for (location, bytes) in &posts {
        let reply = request(server.addr, "GET", location, &[], "").await.unwrap();
        assert_eq!(reply.status, 200, "cycle {cycle}: acknowledged POST {location} lost");
        assert!(reply.body == bytes, "cycle {cycle}: {location} changed");
        checked += 1;
    }
    for w in 0..WRITERS {
        let folder = root.join(format!("w{w}/posts"));
        let Ok(entries) = std::fs::read_dir(&folder) else { continue };
        for entry in entries.flatten() {
            let location = format!("/w{w}/posts/{}", entry.file_name().to_string_lossy());
            if posts.contains_key(&location) {
                continue;
            }
            let bytes = Bytes::from(std::fs::read(entry.path()).unwrap());
            assert!(pending.contains(&bytes), "cycle {cycle}: {location} is not a whole POST body");
            model.lock().unwrap().posts.insert(location, bytes);
        }
    }
    // Each writer's listings name exactly what its folders hold (every page: `next`).
    for w in 0..WRITERS {
        for folder in [format!("w{w}"), format!("w{w}/posts"), format!("w{w}/d")] {
            let Ok(entries) = std::fs::read_dir(root.join(&folder)) else { continue };
            let on_disk: HashSet<String> =
                entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            let mut listed = HashSet::new();
            let mut page = format!("/{folder}/?limit=20");
            loop {
                let json = [("accept", "application/json")];
                let reply = request(server.addr, "GET", &page, &json, "").await.unwrap();
                assert_eq!(reply.status, 200, "cycle {cycle}: listing {page}");
                let doc = reply.json();
                for entry in doc["entries"].as_array().into_iter().flatten() {
                    listed.insert(entry["name"].as_str().unwrap().to_owned());
                }
                match doc["next"].as_str() {
                    Some(next) => page = next.to_owned(),
                    None => break,
                }
            }
            assert_eq!(listed, on_disk, "cycle {cycle}: the listing of /{folder}/");
        }
    }
    // Storage use equals a recount of each writer's folder.
    for w in 0..WRITERS {
        let account = format!("w{w}");
        let used = storage_used(server.addr, &account).await;
        let recount = disk_usage(&root.join(&account));
        if used != recount {
            let mut owners = Vec::new();
            for folder in [format!("/{account}/"), format!("/{account}/posts/")] {
                let listing =
                    request(server.addr, "GET", &folder, &[("accept", "application/json")], "")
                        .await
                        .unwrap();
                let doc = listing.json();
                for entry in doc["entries"].as_array().into_iter().flatten() {
                    owners.push(format!("{} {} {}", entry["path"], entry["size"], entry["owner"]));
                }
            }
            panic!(
                "cycle {cycle}: {account}'s storage use {used} is not the recount {recount}: {owners:#?}"
            );
        }
    }
    // The books: balance = ledger = credits - purchases; acknowledged purchases recorded.
    let state = State::open(state).unwrap();
    let recorded: HashSet<String> =
        state.purchases_of("buyer").unwrap().into_iter().map(|p| p.path).collect();
    let balance = state.balance("buyer").unwrap();
    let ledger: i64 = state.ledger("buyer").unwrap().iter().map(|e| e.amount).sum();
    assert_eq!(ledger, balance as i64, "cycle {cycle}: the ledger does not sum to the balance");
    assert_eq!(balance, CREDITS - PRICE * recorded.len() as u64, "cycle {cycle}: balance");
    let mut model = model.lock().unwrap();
    for path in &model.purchases {
        assert!(recorded.contains(path), "cycle {cycle}: acknowledged purchase of {path} lost");
    }
    for path in &recorded {
        assert!(
            model.purchases.contains(path) || model.purchases_pending.contains(path),
            "cycle {cycle}: {path} was bought without being asked for"
        );
    }
    model.purchases = recorded;
    model.purchases_pending.clear();
    checked
}

/// Lowercase hex, as ETags are written.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
