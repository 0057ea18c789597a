//! The fault campaign: every fail point, with `panic` and with `return` (and ENOSPC for
//! writes), firing on a seeded share of calls while writers and readers keep the server busy.
//! Only the requests that hit a fault fail, with 500 (507 for ENOSPC); every other answer is
//! right; the server goes on serving; a failed write leaves its path whole (the old bytes or,
//! when only the folder sync failed, the new ones); storage use stays equal to the recount;
//! no temporary file stays behind; and a restart without faults finds the same.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::common::*;

const WRITERS: usize = 3;
const READERS: usize = 2;
const FILES: usize = 4;

/// Per path: the contents it may hold (the last acknowledged one, then every failed attempt
/// since, any of which may have taken effect).
type Candidates = HashMap<String, Vec<Option<Bytes>>>;

pub async fn run(options: &Options) -> Vec<String> {
    let per_writer = if options.long { 400 } else { 60 };
    let scenarios = [
        ("store-read", "25%return"),
        ("store-read", "25%panic"),
        ("store-write", "25%return"),
        ("store-write", "25%return(enospc)"),
        ("store-write", "25%panic"),
        ("store-sync", "25%return"),
        ("store-sync", "25%return(enospc)"),
        ("store-sync", "25%panic"),
        ("state-write", "25%return"),
        ("state-write", "25%panic"),
    ];
    let mut totals: HashMap<u16, usize> = HashMap::new();
    for (index, (point, action)) in scenarios.into_iter().enumerate() {
        let counts = scenario(options, index as u64, point, action, per_writer).await;
        for (status, n) in counts {
            *totals.entry(status).or_default() += n;
        }
    }
    let mut statuses: Vec<_> = totals.into_iter().collect();
    statuses.sort();
    vec![
        format!(
            "{} scenarios (4 fail points × panic / return / ENOSPC, each firing on 25% of calls), {} writes and {} reads each",
            scenarios.len(),
            WRITERS * per_writer,
            READERS * per_writer
        ),
        format!("answers: {}", statuses.iter().map(|(s, n)| format!("{n} × {s}")).collect::<Vec<_>>().join(", ")),
        "every 200 carried the right bytes, every failure was a 500/507 problem, the server served on; after each scenario and after a restart without faults every path was whole and storage use = recount".into(),
    ]
}

async fn scenario(
    options: &Options,
    index: u64,
    point: &str,
    action: &str,
    per_writer: usize,
) -> HashMap<u16, usize> {
    let name = format!("{point}={action}");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("static")).unwrap();
    let statics: Vec<Bytes> =
        (0..4).map(|i| content(&format!("static {i}"), 100_000 + i * 7)).collect();
    for (i, bytes) in statics.iter().enumerate() {
        std::fs::write(root.join(format!("static/s{i}.bin")), bytes).unwrap();
    }
    let config = dir.path().join("larder.toml");
    let writers: Vec<String> = (0..WRITERS).map(|w| format!("w{w}")).collect();
    let names: Vec<&str> = writers.iter().map(String::as_str).collect();
    std::fs::write(
        &config,
        format!(
            "{}[plan.writer]\nstorage = \"1 GiB\"\ncredits = 0\n[[rule]]\npath = \"/\"\nread = [\"*\"]\nwrite = [\"@authenticated\"]\n",
            accounts(&names, Some("writer"))
        ),
    )
    .unwrap();
    let enospc = action.contains("enospc");
    let server = start(&root, &config, Some(&name));
    let addr = server.addr;
    let candidates: Arc<Mutex<Candidates>> = Arc::new(Mutex::new(HashMap::new()));
    let counts: Arc<Mutex<HashMap<u16, usize>>> = Arc::new(Mutex::new(HashMap::new()));
    let failure_ok = move |status: u16, body: &[u8]| {
        let expected = if enospc { [500, 507] } else { [500, 500] };
        assert!(expected.contains(&status), "{status}");
        let doc: serde_json::Value = serde_json::from_slice(body).expect("a problem document");
        assert!(doc["type"].as_str().is_some_and(|t| t.starts_with("/.larder/problems/")));
    };
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (candidates, counts) = (candidates.clone(), counts.clone());
        let mut rng = options.rng(100 + index * 10 + w as u64);
        let auth = basic(&format!("w{w}"));
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..per_writer {
                let path = format!("/w{w}/f{}.bin", rng.random_range(0..FILES));
                let delete = rng.random_range(0..6) == 0;
                let new = (!delete)
                    .then(|| content(&format!("{path} {n}"), rng.random_range(1..200_000)));
                let (method, body) = match &new {
                    Some(bytes) => ("PUT", bytes.clone()),
                    None => ("DELETE", Bytes::new()),
                };
                let reply = request(addr, method, &path, &[("authorization", &auth)], body)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {method} {path}: no answer: {e}"));
                *counts.lock().unwrap().entry(reply.status).or_default() += 1;
                let mut candidates = candidates.lock().unwrap();
                let entry = candidates.entry(path.clone()).or_insert_with(|| vec![None]);
                match reply.status {
                    200 | 201 | 204 | 404 => *entry = vec![new],
                    status => {
                        failure_ok(status, &reply.body);
                        entry.push(new);
                    }
                }
            }
        }));
    }
    for r in 0..READERS {
        let (counts, statics) = (counts.clone(), statics.clone());
        let mut rng = options.rng(200 + index * 10 + r as u64);
        let name = name.clone();
        let reads_may_break = point == "store-read";
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_writer {
                let i = rng.random_range(0..statics.len());
                match request(addr, "GET", &format!("/static/s{i}.bin"), &[], "").await {
                    Ok(reply) => {
                        *counts.lock().unwrap().entry(reply.status).or_default() += 1;
                        if reply.status == 200 {
                            assert!(reply.body == statics[i], "{name}: a 200 with the wrong bytes");
                        } else {
                            failure_ok(reply.status, &reply.body);
                        }
                    }
                    // A read that fails after the head went out can only be cut off.
                    Err(e) => assert!(reads_may_break, "{name}: a read failed: {e}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let health = request(addr, "GET", "/.larder/health", &[], "").await.unwrap();
    assert_eq!(health.status, 200, "{name}: the server stopped serving");
    check(addr, &root, &candidates, &format!("{name}, live"), point != "store-read").await;
    drop(server);
    let restarted = start(&root, &config, None);
    check(restarted.addr, &root, &candidates, &format!("{name}, restarted"), true).await;
    Arc::try_unwrap(counts).unwrap().into_inner().unwrap()
}

/// Every path holds one of its candidates; no temporary file; storage use = recount.
async fn check(
    addr: std::net::SocketAddr,
    root: &Path,
    candidates: &Mutex<Candidates>,
    when: &str,
    reads_work: bool,
) {
    let strays = temp_files(root);
    assert!(strays.is_empty(), "{when}: temporary files: {strays:?}");
    let candidates = candidates.lock().unwrap().clone();
    for (path, allowed) in candidates {
        let on_disk = std::fs::read(root.join(&path[1..])).ok().map(Bytes::from);
        assert!(
            allowed.contains(&on_disk),
            "{when}: {path} holds {}, none of its candidate versions",
            describe(&on_disk)
        );
        if reads_work {
            let reply = request(addr, "GET", &path, &[], "").await.unwrap();
            let served = (reply.status == 200).then_some(reply.body);
            assert!(
                reply.status == 200 || reply.status == 404,
                "{when}: GET {path}: {}",
                reply.status
            );
            assert!(
                served == on_disk,
                "{when}: {path} is served as {} but is {} on disk",
                describe(&served),
                describe(&on_disk)
            );
        }
    }
    if reads_work {
        for w in 0..WRITERS {
            let account = format!("w{w}");
            assert_eq!(
                storage_used(addr, &account).await,
                disk_usage(&root.join(&account)),
                "{when}: {account}'s storage use is not the recount"
            );
        }
    }
}

/// The first bytes of a version (they name it) and its length.
fn describe(content: &Option<Bytes>) -> String {
    match content {
        None => "nothing".into(),
        Some(bytes) => format!(
            "{:?}… ({} bytes)",
            String::from_utf8_lossy(&bytes[..bytes.len().min(16)]),
            bytes.len()
        ),
    }
}
