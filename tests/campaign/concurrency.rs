//! The concurrency campaign, against one running binary:
//!
//! - writers and readers on the same path: every 200 carries one whole version (its first 64
//!   bytes are the hex SHA-256 of the rest);
//! - `If-Match` and `If-None-Match: *` races: exactly one winner, everyone else 412;
//! - purchase races: as many purchases succeed as the credits pay for, never more, and one
//!   item bought by many requests at once is charged once;
//! - quota races: concurrent uploads never take an account past its quota, and the storage
//!   it is charged for equals what is on disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use larder::state::State;
use sha2::{Digest, Sha256};

use crate::common::*;

const PRICE: u64 = 5;
const CREDITS: u64 = 100; // 20 items
const QUOTA: u64 = 100 * 1024;

fn versioned(tag: &str, len: usize) -> Bytes {
    let payload = content(tag, len);
    let mut body = hex(&Sha256::digest(&payload)).into_bytes();
    body.extend_from_slice(&payload);
    Bytes::from(body)
}

fn whole(body: &[u8]) -> bool {
    body.len() >= 64 && hex(&Sha256::digest(&body[64..])).as_bytes() == &body[..64]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn run(options: &Options) -> Vec<String> {
    let scale = if options.long { 5 } else { 1 };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("shop")).unwrap();
    for i in 0..40 {
        std::fs::write(root.join(format!("shop/item{i}.txt")), format!("item {i}")).unwrap();
    }
    let config = dir.path().join("larder.toml");
    std::fs::write(
        &config,
        format!(
            "{}{}{}[plan.rich]\nstorage = \"1 GiB\"\ncredits = 0\n[plan.buyer]\nstorage = \"1 MiB\"\ncredits = {CREDITS}\n\
             [plan.small]\nstorage = \"{QUOTA} B\"\ncredits = 0\n\
             [[rule]]\npath = \"/\"\nread = [\"*\"]\nwrite = [\"@authenticated\"]\n\
             [[rule]]\npath = \"/shop\"\nread = [\"@authenticated\"]\nwrite = [\"writer\"]\nprice = {PRICE}\n",
            accounts(&["writer"], Some("rich")),
            accounts(&["buyer", "buyer2"], Some("buyer")),
            accounts(&["small"], Some("small")),
        ),
    )
    .unwrap();
    let server = start(&root, &config, None);
    let addr = server.addr;
    let writer = basic("writer");
    let mut lines = Vec::new();
    let mut rng = options.rng(2);

    // Same path, many writers and readers.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let first = versioned("v0", 1000);
    assert_eq!(
        request(addr, "PUT", "/hot/shared.bin", &[("authorization", &writer)], first)
            .await
            .unwrap()
            .status,
        201
    );
    let mut writers = Vec::new();
    for w in 0..4 {
        let (writer, seed) = (writer.clone(), rng.random::<u64>());
        writers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            for v in 0..60 * scale {
                let body = versioned(&format!("w{w} v{v}"), rng.random_range(1..300 * 1024));
                let reply =
                    request(addr, "PUT", "/hot/shared.bin", &[("authorization", &writer)], body)
                        .await
                        .unwrap();
                assert_eq!(reply.status, 200, "an overwrite");
            }
        }));
    }
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (stop, reads) = (stop.clone(), reads.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let reply = request(addr, "GET", "/hot/shared.bin", &[], "").await.unwrap();
                assert_eq!(reply.status, 200);
                assert!(
                    whole(&reply.body),
                    "a reader saw a torn version ({} bytes)",
                    reply.body.len()
                );
                reads.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for task in writers {
        task.await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    for task in readers {
        task.await.unwrap();
    }
    lines.push(format!(
        "same path: {} overwrites by 4 writers, {} reads by 4 readers, every read one whole version",
        240 * scale,
        reads.load(Ordering::SeqCst)
    ));

    // If-Match and If-None-Match: * races.
    let rounds = 30 * scale;
    for round in 0..rounds {
        let path = format!("/race/r{round}.txt");
        let created =
            request(addr, "PUT", &path, &[("authorization", &writer)], "base").await.unwrap();
        let etag = created.headers["etag"].to_str().unwrap().to_owned();
        let matching = at_once(8, |c| {
            let (writer, etag, path) = (writer.clone(), etag.clone(), path.clone());
            async move {
                let headers = [("authorization", writer.as_str()), ("if-match", etag.as_str())];
                request(addr, "PUT", &path, &headers, format!("client {c}")).await.unwrap().status
            }
        });
        let fresh = at_once(8, |c| {
            let (writer, path) = (writer.clone(), format!("/race/new{round}.txt"));
            async move {
                let headers = [("authorization", writer.as_str()), ("if-none-match", "*")];
                request(addr, "PUT", &path, &headers, format!("client {c}")).await.unwrap().status
            }
        });
        let (matching, fresh) = tokio::join!(matching, fresh);
        for (statuses, won) in [(matching, 200), (fresh, 201)] {
            assert_eq!(
                statuses.iter().filter(|s| **s == won).count(),
                1,
                "round {round}: {statuses:?}"
            );
            assert_eq!(
                statuses.iter().filter(|s| **s == 412).count(),
                7,
                "round {round}: {statuses:?}"
            );
        }
    }
    lines.push(format!("{rounds} If-Match races and {rounds} If-None-Match: * races of 8 clients: one winner each, 7 × 412"));

    // Purchase races.
    let buyer = basic("buyer");
    request(addr, "GET", "/.larder/account", &[("authorization", &buyer)], "").await.unwrap();
    let statuses = at_once(40, |i| {
        let buyer = buyer.clone();
        async move {
            let headers = [("authorization", buyer.as_str()), ("content-type", "application/json")];
            let body = format!("{{\"path\": \"/shop/item{i}.txt\"}}");
            request(addr, "POST", "/.larder/purchases", &headers, body).await.unwrap().status
        }
    })
    .await;
    let bought = statuses.iter().filter(|s| **s == 201).count();
    assert_eq!(bought, (CREDITS / PRICE) as usize, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 402).count(), 40 - bought, "{statuses:?}");
    let buyer2 = basic("buyer2");
    request(addr, "GET", "/.larder/account", &[("authorization", &buyer2)], "").await.unwrap();
    let one_step = at_once(16, |_| {
        let buyer2 = buyer2.clone();
        async move {
            let headers = [("authorization", buyer2.as_str()), ("larder-max-price", "5")];
            request(addr, "GET", "/shop/item0.txt", &headers, "").await.unwrap().status
        }
    })
    .await;
    for status in one_step {
        assert_eq!(status, 200, "a one-step purchase of one item by 16 requests at once");
    }
    let state = State::open(&root.join(".larder")).unwrap();
    for (account, spent) in [("buyer", CREDITS), ("buyer2", PRICE)] {
        let balance = state.balance(account).unwrap();
        let ledger: i64 = state.ledger(account).unwrap().iter().map(|e| e.amount).sum();
        assert_eq!(balance, CREDITS - spent, "{account}");
        assert_eq!(ledger, balance as i64, "{account}");
    }
    lines.push(format!(
        "purchase races: 40 purchases on {CREDITS} credits: {bought} bought, {} × 402, balance 0; 16 one-step buys of one item: charged once",
        40 - bought
    ));

    // Quota races.
    let small = basic("small");
    let statuses = at_once(30, |i| {
        let small = small.clone();
        async move {
            let body = Bytes::from(vec![b'q'; 10 * 1024]);
            request(addr, "PUT", &format!("/quota/f{i}.bin"), &[("authorization", &small)], body)
                .await
                .unwrap()
                .status
        }
    })
    .await;
    let stored = statuses.iter().filter(|s| **s == 201).count() as u64;
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 413 || *s == 507 || *s == 402),
        "{statuses:?}"
    );
    let on_disk = disk_usage(&root.join("quota"));
    assert_eq!(on_disk, stored * 10 * 1024, "what was acknowledged is what is on disk");
    assert!(on_disk <= QUOTA, "the quota was exceeded: {on_disk}");
    assert_eq!(stored, QUOTA / (10 * 1024), "the quota fills exactly: {statuses:?}");
    let doc: serde_json::Value = serde_json::from_slice(
        &request(addr, "GET", "/.larder/account", &[("authorization", &small)], "")
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(doc["storage"]["used"].as_u64(), Some(on_disk));
    lines.push(format!(
        "quota race: 30 concurrent 10 KiB uploads into a {} KiB quota: {stored} stored, the rest refused, use = disk = {on_disk} bytes",
        QUOTA / 1024
    ));
    lines
}
