//! The soak: mixed traffic (GETs of small and large files, listings, ranges, conditional
//! GETs, PUTs and DELETEs, bad sign-ins) at 64 connections for a fixed time, with the
//! server's resident memory and open file descriptors sampled every second. Both must be
//! flat at the end: the last quarter's memory peak no higher than the second quarter's plus a
//! small allowance, and open descriptors back to the idle count once traffic stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;

const CONNECTIONS: usize = 64;

pub async fn run(options: &Options) -> Vec<String> {
    let default = if options.long { 300 } else { 24 };
    let seconds = std::env::var("LARDER_SOAK_SECONDS").ok().and_then(|s| s.parse().ok());
    let duration = Duration::from_secs(seconds.unwrap_or(default));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("list")).unwrap();
    std::fs::write(root.join("small.txt"), content("small", 1024)).unwrap();
    std::fs::write(root.join("large.bin"), content("large", 4 << 20)).unwrap();
    for i in 0..200 {
        std::fs::write(root.join(format!("list/f{i}.txt")), format!("{i}")).unwrap();
    }
    let config = dir.path().join("larder.toml");
    std::fs::write(
        &config,
        format!(
            "{}[[rule]]\npath = \"/\"\nread = [\"*\"]\nwrite = [\"@authenticated\"]\n",
            accounts(&["soak"], None)
        ),
    )
    .unwrap();
    let server = start(&root, &config, None);
    let addr = server.addr;
    let (_, idle_fds) = footprint(&server);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..CONNECTIONS {
        let (stop, done) = (stop.clone(), done.clone());
        let mut rng = options.rng(300 + c as u64);
        clients.push(tokio::spawn(async move {
            let auth = basic("soak");
            let wrong = "Basic c29hazp3cm9uZw=="; // soak:wrong
            while !stop.load(Ordering::SeqCst) {
                let reply = match rng.random_range(0..10) {
                    0..=2 => request(addr, "GET", "/small.txt", &[], "").await,
                    3 => {
                        request(addr, "GET", "/large.bin", &[("range", "bytes=1000-200000")], "")
                            .await
                    }
                    4 => {
                        request(addr, "GET", "/list/", &[("accept", "application/json")], "").await
                    }
                    5 => {
                        request(addr, "GET", "/small.txt", &[("if-none-match", "\"nope\"")], "")
                            .await
                    }
                    6 | 7 => {
                        let path = format!("/up/c{c}-{}.bin", rng.random_range(0..20));
                        request(
                            addr,
                            "PUT",
                            &path,
                            &[("authorization", &auth)],
                            content(&path, rng.random_range(1..64 * 1024)),
                        )
                        .await
                    }
                    8 => {
                        let path = format!("/up/c{c}-{}.bin", rng.random_range(0..20));
                        request(addr, "DELETE", &path, &[("authorization", &auth)], "").await
                    }
                    _ => {
                        request(addr, "GET", "/.larder/account", &[("authorization", wrong)], "")
                            .await
                    }
                };
                let status = reply.expect("the soak got no answer").status;
                assert!(status < 500, "the soak got a {status}");
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < duration {
        ticker.tick().await;
        samples.push(footprint(&server));
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let quarter = samples.len() / 4;
    let peak = |range: &[(u64, usize)]| {
        (range.iter().map(|s| s.0).max().unwrap_or(0), range.iter().map(|s| s.1).max().unwrap_or(0))
    };
    let (early_rss, early_fds) = peak(&samples[quarter..2 * quarter]);
    let (late_rss, late_fds) = peak(&samples[3 * quarter..]);
    // 16 MiB or a tenth, whichever is more: allocator noise, not a leak of 64 connections.
    let allowance = (early_rss / 10).max(16 * 1024);
    assert!(late_rss <= early_rss + allowance, "memory grew: {early_rss} KiB → {late_rss} KiB");
    // Descriptors follow the connections in flight (their peaks swing with the load); a
    // leak shows once traffic stops: they must come back to what the idle server had
    // (polled: closing takes a moment).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    let (end_rss, end_fds) = loop {
        poll.tick().await;
        let (rss, fds) = footprint(&server);
        if fds <= idle_fds + 2 || Instant::now() > deadline {
            break (rss, fds);
        }
    };
    assert!(
        end_fds <= idle_fds + 2,
        "file descriptors leaked: {idle_fds} idle before, {end_fds} after"
    );
    vec![
        format!(
            "{} s of mixed traffic at {CONNECTIONS} connections: {} requests, none answered 5xx",
            duration.as_secs(),
            done.load(Ordering::SeqCst)
        ),
        format!(
            "peak resident memory {early_rss} KiB in the second quarter, {late_rss} KiB in the last (end {end_rss} KiB); open files {early_fds} → {late_fds} (idle before {idle_fds}, after {end_fds})"
        ),
    ]
}
