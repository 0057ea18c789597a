//! Tests that run the real `larder` binary: the command line, exit codes, SIGKILL in the
//! middle of uploads, and (with the `failpoints` feature) every fail point.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use larder::state::State;
use tokio::sync::Mutex;

use crate::harness::*;
use crate::larder_process::{Process, larder};

async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<(u16, Bytes), BoxError> {
    let reply = Connection::open(addr).await?.try_send(method, target, headers, body).await?;
    Ok((reply.status, reply.body))
}

/// One request on a new connection, signed in as `w:pw` (the `--auth` account of the
/// tests below), with one `extra` header if given: the whole reply.
async fn send_as_w(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    extra: Option<(&str, &str)>,
    body: Bytes,
) -> Reply {
    let authorization = basic_raw("w:pw");
    let mut headers = vec![("authorization", authorization.as_str())];
    headers.extend(extra);
    Connection::open(addr).await.unwrap().try_send(method, target, &headers, body).await.unwrap()
}

#[test]
fn configuration_errors_exit_64_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[[account]]\nname = \"alice\"\npassword = \"hunter2\"\n").unwrap();
    for command in ["check", "serve"] {
        let out = larder(&[command, "--config", config.to_str().unwrap(), "--port", "0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("bad.toml") && stderr.contains("account[0].password"), "{stderr}");
        assert!(out.stdout.is_empty(), "{command} served or printed: {:?}", out.stdout);
    }
    let out = larder(&["serve", "--port", "not-a-port"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = larder(&["serve", "--auth", "alice@nowhere"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    let cert = dir.path().join("cert.pem");
    let out = larder(&[
        "serve",
        "--port",
        "0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        cert.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cert.pem"));
    let out =
        larder(&["serve", "--port", "0", "--tls-cert", cert.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "a certificate without a key");
}

#[test]
fn hash_password_and_check_print_what_they_should() {
    let mut child =
        larder(&["hash-password"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("larder.toml");
    std::fs::write(
        &config,
        format!("port = 9999\n[[account]]\nname = \"alice\"\npassword = \"{hash}\"\n[[rule]]\npath = \"/\"\nread = [\"*\"]\n"),
    )
    .unwrap();
    let out = larder(&["check", "--config", config.to_str().unwrap()])
        .env("LARDER_PORT", "7000")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("port = 7000"), "the environment overrides the file: {text}");
    assert!(text.contains("<redacted>") && !text.contains("$argon2"), "{text}");
    let out = larder(&["check", "--config", config.to_str().unwrap(), "--port", "7001"])
        .env("LARDER_PORT", "7000")
        .output()
        .unwrap();
    assert!(
        String::from_utf8(out.stdout).unwrap().contains("port = 7001"),
        "flags override the environment"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tokens_work_and_credentials_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("docs")).unwrap();
    let password = "pw-Alice-7f3a";
    let hash = larder::auth::hash_password(password).unwrap();
    let config = dir.path().join("larder.toml");
    std::fs::write(
        &config,
        format!(
            "[[account]]\nname = \"alice\"\npassword = \"{hash}\"\n\
             [[rule]]\npath = \"/\"\nread = [\"@authenticated\"]\nwrite = [\"alice\"]\n"
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let state = root.join(".larder");
    let made = larder(&["token", "create", "alice", "--config", config_arg, "--state"])
        .arg(&state)
        .args(["--scope", "/docs", "--read-only", "--expires", "1d"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let secret = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    assert!(secret.starts_with("lt_"), "{secret}");
    let nobody = larder(&["token", "create", "nobody", "--config", config_arg]).output().unwrap();
    assert_eq!(nobody.status.code(), Some(64));

    let log_path = dir.path().join("larder.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut server = Process::start_logging(
        &root,
        &["--config", config_arg],
        &[("RUST_LOG", "debug")],
        Stdio::from(log),
    );
    let bearer = format!("Bearer {secret}");
    let good_basic = basic_raw(&format!("alice:{password}"));
    let wrong_basic = basic_raw("alice:wrong-Secret-99");
    let junk = format!("Bearer lt_{}", "Zq9".repeat(14));
    let addr = server.addr;
    let send = |method: &'static str, target: &'static str, auth: String| async move {
        let headers = [("authorization", auth.as_str()), ("cookie", "session=Cookie-Secret-1")];
        request(addr, method, target, &headers, Bytes::from_static(b"x")).await.unwrap().0
    };
    assert_eq!(send("GET", "/docs/", bearer.clone()).await, 200);
    assert_eq!(send("PUT", "/docs/a.txt", bearer.clone()).await, 403, "read-only token");
    assert_eq!(send("GET", "/", bearer.clone()).await, 403, "outside the token's scope");
    assert_eq!(send("PUT", "/docs/b.txt", good_basic.clone()).await, 201);
    assert_eq!(send("GET", "/", wrong_basic.clone()).await, 401);
    assert_eq!(send("GET", "/", junk.clone()).await, 401);
    assert_eq!(send("TRACE", "/docs/b.txt", good_basic.clone()).await, 400, "TRACE with a body");
    // Stopped as an operator stops it: the lines still queued for the log are written out.
    server.stop();

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("status=201") && log.contains("account=alice"),
        "the log has access lines: {log}"
    );
    let secrets = [
        password,
        "wrong-Secret-99",
        "Cookie-Secret-1",
        &secret,
        &secret[3..],
        &good_basic[6..],
        &wrong_basic[6..],
        &junk[7..],
    ];
    for secret in secrets {
        assert!(!log.contains(secret), "{secret} reached the log");
    }
}

/// The bytes of version `version` of writer `writer`'s file: distinct, checkable, and large
/// enough that a kill often lands mid-upload.
fn version_bytes(writer: usize, version: usize) -> Bytes {
    let len = 64 * 1024 + (writer * 7919 + version * 104_729) % (512 * 1024);
    let seed = format!("writer {writer} version {version};");
    Bytes::from(seed.as_bytes().iter().copied().cycle().take(len).collect::<Vec<u8>>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_upload_loses_nothing_acknowledged() {
    const WRITERS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().join("root");
    let auth = ["--auth", "w:pw@/:rw"];
    let header = basic_raw("w:pw");
    // acked[w] = the last version of writer w's file that was answered 2xx.
    let acked: Arc<Mutex<Vec<Option<usize>>>> = Arc::new(Mutex::new(vec![None; WRITERS]));
    let mut next_version = [0usize; WRITERS];
    let mut total_acked = 0;
    for round in 0..3 {
        let mut server = Process::start(&root, &auth, &[]);
        let addr = server.addr;
        let mut tasks = Vec::new();
        for (w, next) in next_version.iter_mut().enumerate() {
            let acked = acked.clone();
            let header = header.clone();
            let start = *next;
            *next += 1000; // versions of a round never collide with the next round's
            tasks.push(tokio::spawn(async move {
                let mut done = 0;
                for version in start.. {
                    let body = version_bytes(w, version);
                    let target = format!("/w{w}/file.bin");
                    match request(addr, "PUT", &target, &[("authorization", &header)], body).await {
                        Ok((status, _)) if status == 200 || status == 201 => {
                            acked.lock().await[w] = Some(version);
                            done += 1;
                        }
                        Ok((status, body)) => panic!("PUT answered {status}: {body:?}"),
                        Err(_) => return done, // the server was killed: refused or cut off
                    }
                }
                done
            }));
        }
        // Let uploads run, then kill at a moment that depends on the round.
        tokio::time::sleep(Duration::from_millis(300 + 170 * round)).await;
        server.kill();
        for task in tasks {
            total_acked += task.await.unwrap();
        }
        let server = Process::start(&root, &auth, &[]);
        assert!(temp_files(&root).is_empty(), "temporary files survived the restart sweep");
        let acked = acked.lock().await.clone();
        let signed = [("authorization", header.as_str())];
        for (w, last) in acked.iter().enumerate() {
            let (status, body) =
                request(server.addr, "GET", &format!("/w{w}/file.bin"), &signed, Bytes::new())
                    .await
                    .unwrap();
            let Some(last) = *last else {
                // Never acknowledged: absent, or a whole first version.
                assert!(
                    status == 404 || body == version_bytes(w, next_version[w] - 1000),
                    "writer {w}"
                );
                continue;
            };
            assert_eq!(status, 200, "writer {w} lost its acknowledged file");
            // The last acknowledged version, or the one in flight at the kill, whole.
            let in_flight = version_bytes(w, last + 1);
            assert!(
                body == version_bytes(w, last) || body == in_flight,
                "writer {w}: {} bytes that are neither version {last} nor {}",
                body.len(),
                last + 1
            );
        }
        let (_, listing) =
            request(server.addr, "GET", "/w0/", &signed, Bytes::new()).await.unwrap();
        assert!(!String::from_utf8_lossy(&listing).contains(".larder-tmp"));
        // Storage usage matches a recount of the folder: every file there is w's.
        let on_disk: u64 = (0..WRITERS)
            .filter_map(|w| std::fs::metadata(root.join(format!("w{w}/file.bin"))).ok())
            .map(|m| m.len())
            .sum();
        let files = (0..WRITERS).filter(|w| root.join(format!("w{w}/file.bin")).exists()).count();
        let folders = (0..WRITERS).filter(|w| root.join(format!("w{w}")).is_dir()).count();
        let held = State::open(&root.join(".larder")).unwrap().holdings("w").unwrap();
        assert_eq!(held, (on_disk, (files + folders) as u64), "usage after the kill and restart");
    }
    assert!(
        total_acked >= WRITERS,
        "too few uploads were acknowledged ({total_acked}) to test anything"
    );
    eprintln!("sigkill: 3 kills, {total_acked} acknowledged uploads verified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_removed_while_larder_is_down_stop_counting() {
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().join("root");
    let auth = ["--auth", "w:pw@/:rw"];
    let mut server = Process::start(&root, &auth, &[]);
    let reply = send_as_w(server.addr, "PUT", "/x/y/f.txt", None, Bytes::from_static(b"f")).await;
    assert_eq!(reply.status, 201);
    let reply = send_as_w(server.addr, "PUT", "/x/z/", None, Bytes::new()).await;
    assert_eq!(reply.status, 201);
    // Stopped as an operator stops it, larder leaves no journal to write f.txt again from.
    server.stop();
    assert!(journal_segments(&root.join(".larder")).is_empty());
    let held = || State::open(&root.join(".larder")).unwrap().holdings("w").unwrap();
    assert_eq!(held(), (1, 4), "x, y, z and f.txt are w's");
    std::fs::remove_dir_all(root.join("x/y")).unwrap();
    let mut server = Process::start(&root, &auth, &[]);
    server.stop();
    assert_eq!(held(), (0, 2), "y and f.txt went while larder was down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchases_stay_exact_across_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for i in 0..50 {
        std::fs::create_dir_all(root.join("shop")).unwrap();
        std::fs::write(root.join(format!("shop/item{i}.txt")), format!("item {i}")).unwrap();
    }
    let config = dir.path().join("larder.toml");
    std::fs::write(&config, crate::payment::shop_config()).unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let bob = basic("bob");
    let state_dir = root.join(".larder");
    let mut acknowledged = std::collections::HashSet::new();
    let mut server = Process::start(&root, &args, &[]);
    // The first sign-in grants 100 credits: 20 items' worth.
    let (status, _) =
        request(server.addr, "GET", "/.larder/account", &[("authorization", &bob)], Bytes::new())
            .await
            .unwrap();
    assert_eq!(status, 200);
    let buy_all = |addr, bob: String| async move {
        let mut tasks = Vec::new();
        for i in 0..50 {
            let bob = bob.clone();
            tasks.push(tokio::spawn(async move {
                let body = Bytes::from(format!("{{\"path\": \"/shop/item{i}.txt\"}}"));
                let headers =
                    [("authorization", bob.as_str()), ("content-type", "application/json")];
                (
                    i,
                    request(addr, "POST", "/.larder/purchases", &headers, body)
                        .await
                        .ok()
                        .map(|r| r.0),
                )
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results
    };
    // Kill while the purchases are in flight.
    let racing = tokio::spawn(buy_all(server.addr, bob.clone()));
    tokio::time::sleep(Duration::from_millis(15)).await;
    server.kill();
    for (i, status) in racing.await.unwrap() {
        if status == Some(201) {
            acknowledged.insert(format!("/shop/item{i}.txt"));
        }
    }
    // After the restart the books balance, and every acknowledged purchase is there.
    let check = |state: &State| {
        let purchases = state.purchases_of("bob").unwrap();
        let balance = state.balance("bob").unwrap();
        let ledger: i64 = state.ledger("bob").unwrap().iter().map(|e| e.amount).sum();
        assert_eq!(ledger, balance as i64, "the ledger sums to the balance");
        assert_eq!(balance, 100 - 5 * purchases.len() as u64);
        purchases
    };
    let server = Process::start(&root, &args, &[]);
    let before = check(&State::open(&state_dir).unwrap());
    for path in &acknowledged {
        assert!(before.iter().any(|p| &p.path == path), "acknowledged purchase of {path} lost");
    }
    // Buying everything again ends at exactly 20 purchases and a zero balance.
    let results = buy_all(server.addr, bob.clone()).await;
    let after = check(&State::open(&state_dir).unwrap());
    assert_eq!(after.len(), 20);
    let refused = results.iter().filter(|(_, s)| *s == Some(402)).count();
    assert_eq!(refused, 30, "{results:?}");
    eprintln!(
        "purchases: {} acknowledged before the kill, {} recorded",
        acknowledged.len(),
        before.len()
    );
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fail_point_answers_500_and_keeps_the_old_bytes() {
    let cases = [
        ("store-read", "panic", 500),
        ("store-read", "return", 500),
        ("store-write", "panic", 500),
        ("store-write", "return", 500),
        ("store-write", "return(enospc)", 507),
        ("store-sync", "panic", 500),
        ("store-sync", "return", 500),
        ("state-write", "panic", 500),
        ("state-write", "return", 500),
    ];
    let header = basic_raw("w:pw");
    let auth = [("authorization", header.as_str())];
    for (point, action, status) in cases {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("a.txt"), b"old bytes").unwrap();
        let scenario = format!("{point}={action}");
        let server = Process::start(&root, &["--auth", "w:pw@/:rw"], &[("FAILPOINTS", &scenario)]);
        let (got, body) = if point == "store-read" {
            request(server.addr, "GET", "/a.txt", &auth, Bytes::new()).await.unwrap()
        } else {
            // A small body's row (no quota applies) is committed behind the journal, after
            // the answer: a large one's is committed before it.
            let body = match point {
                "state-write" => Bytes::from(vec![b'n'; 300 * 1024]),
                _ => Bytes::from_static(b"new bytes"),
            };
            request(server.addr, "PUT", "/a.txt", &auth, body).await.unwrap()
        };
        assert_eq!(got, status, "{scenario}: {body:?}");
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let slug = if status == 507 { "insufficient-storage" } else { "internal" };
        assert_eq!(doc["type"], format!("/.larder/problems/{slug}"), "{scenario}");
        assert!(!doc.to_string().contains("fail point"), "a 500 says nothing about internals");
        // The server goes on serving, and the old bytes are untouched.
        let (health, _) =
            request(server.addr, "GET", "/.larder/health", &[], Bytes::new()).await.unwrap();
        assert_eq!(health, 200, "{scenario}");
        if point != "store-read" {
            let (get, old) =
                request(server.addr, "GET", "/a.txt", &auth, Bytes::new()).await.unwrap();
            assert_eq!((get, &old[..]), (200, &b"old bytes"[..]), "{scenario}");
        }
        assert_eq!(std::fs::read(root.join("a.txt")).unwrap(), b"old bytes", "{scenario}");
        assert!(temp_files(&root).is_empty(), "{scenario} left a temporary file");
    }
}

/// Metadata commits do not wait for the disk: the files carry their type and owner instead,
/// and a start gives back the rows a crash of the machine took, whatever the boot id says.
/// Simulated here: some rows deleted, one left naming the version before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_a_machine_crash_took_comes_back_from_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().join("root");
    let auth = ["--auth", "w:pw@/:rw"];
    let send = |addr, method, target, content_type, body| {
        let body = Bytes::from_static(body);
        send_as_w(addr, method, target, Some(("content-type", content_type)), body)
    };
    let mut server = Process::start(&root, &auth, &[]);
    let first = send(server.addr, "PUT", "/notes/a.txt", "text/x-note", b"first").await;
    assert_eq!(first.status, 201);
    let second = send(server.addr, "PUT", "/notes/a.txt", "text/x-note", b"second!").await;
    assert_eq!(second.status, 200);
    let other = send(server.addr, "PUT", "/b.bin", "application/x-thing", b"0123456789").await;
    assert_eq!(other.status, 201);
    let before: Vec<_> = [("/notes/a.txt", &second), ("/b.bin", &other)]
        .iter()
        .map(|(path, put)| (*path, put.header("etag").to_owned()))
        .collect();
    server.kill();

    let state = root.join(".larder");
    let db = rusqlite::Connection::open(state.join("larder.db")).unwrap();
    // The overwrite's commit lost: the first version's row is the live one again.
    db.execute("DELETE FROM object WHERE path = '/notes/a.txt' AND size = 7", []).unwrap();
    db.execute("UPDATE object SET live = 1 WHERE path = '/notes/a.txt'", []).unwrap();
    db.execute("DELETE FROM object WHERE path = '/b.bin'", []).unwrap();
    drop(db);

    let server = Process::start(&root, &auth, &[]);
    for (path, etag) in before {
        let got = send(server.addr, "GET", path, "text/plain", b"").await;
        assert_eq!(got.status, 200, "{path}");
        assert_eq!(got.header("etag"), etag, "{path}: the ETag its PUT answered");
    }
    let a = send(server.addr, "GET", "/notes/a.txt", "text/plain", b"").await;
    let note = "text/x-note; charset=utf-8";
    assert_eq!((a.header("content-type"), &a.body[..]), (note, &b"second!"[..]));
    let b = send(server.addr, "GET", "/b.bin", "text/plain", b"").await;
    assert_eq!(b.header("content-type"), "application/x-thing");
    let account = send(server.addr, "GET", "/.larder/account", "text/plain", b"").await;
    assert_eq!(account.json()["storage"]["used"], 17, "both files count for their owner again");
}

/// A small PUT's metadata row (no quota applies) is committed behind the journal, after the
/// answer. If larder is killed first (here the `state-behind` fail point holds the row), the
/// next start gives the row back from the journal: the ETag the PUT answered, its content
/// type, its owner's storage use.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_behind_the_journal_when_larder_is_killed_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().join("root");
    let auth = ["--auth", "w:pw@/:rw"];
    let send = |addr, method, target, body| {
        let note = Some(("content-type", "text/x-note"));
        send_as_w(addr, method, target, note, Bytes::from_static(body))
    };
    let mut server = Process::start(&root, &auth, &[("FAILPOINTS", "state-behind=return")]);
    let put = send(server.addr, "PUT", "/n/a.txt", b"behind").await;
    assert_eq!(put.status, 201);
    let account = send(server.addr, "GET", "/.larder/account", b"").await;
    assert_eq!(account.json()["storage"]["used"], 0, "the row is held behind");
    server.kill();

    let server = Process::start(&root, &auth, &[]);
    let got = send(server.addr, "GET", "/n/a.txt", b"").await;
    assert_eq!((got.status, &got.body[..]), (200, &b"behind"[..]));
    assert_eq!(got.header("etag"), put.header("etag"), "the ETag its PUT answered");
    assert_eq!(got.header("content-type"), "text/x-note; charset=utf-8");
    let account = send(server.addr, "GET", "/.larder/account", b"").await;
    assert_eq!(account.json()["storage"]["used"], 6, "the file counts for its owner");
}

/// A COPY of a folder cut after its rows are recorded and before its tree is renamed into
/// place (a panic where a crash would be, then SIGKILL): after the restart nothing of the copy
/// is there, no temporary tree is left, and the copier's usage is as before.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_copy_cut_before_its_rename_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().join("root");
    let auth = ["--auth", "w:pw@/:rw"];
    let mut server = Process::start(&root, &auth, &[("FAILPOINTS", "copy-placing=panic")]);
    for name in ["a", "b"] {
        let target = format!("/src/{name}.txt");
        let put = send_as_w(server.addr, "PUT", &target, None, Bytes::from_static(b"bytes")).await;
        assert_eq!(put.status, 201);
    }
    let before = send_as_w(server.addr, "GET", "/.larder/account", None, Bytes::new()).await;
    assert_eq!(before.json()["storage"]["used"], 10);
    let to = Some(("destination", "/copy/"));
    let cut = send_as_w(server.addr, "COPY", "/src/", to, Bytes::new()).await;
    assert_eq!(cut.status, 500, "{}", cut.text());
    server.kill();

    let server = Process::start(&root, &auth, &[]);
    let copy = send_as_w(server.addr, "GET", "/copy/", None, Bytes::new()).await;
    assert_eq!(copy.status, 404);
    assert!(temp_files(&root).is_empty(), "{:?}", temp_files(&root));
    let after = send_as_w(server.addr, "GET", "/.larder/account", None, Bytes::new()).await;
    assert_eq!(after.json()["storage"], before.json()["storage"]);
    let made = send_as_w(server.addr, "COPY", "/src/", to, Bytes::new()).await;
    assert_eq!(made.status, 201);
    assert_eq!(std::fs::read(root.join("copy/b.txt")).unwrap(), b"bytes");
    let copied = send_as_w(server.addr, "GET", "/.larder/account", None, Bytes::new()).await;
    assert_eq!(copied.json()["storage"]["used"], 20);
}

/// File content goes out with sendfile from memory that holds the file's bytes, so whatever
/// hyper does with that memory, the bytes sent are the file's. Forced here to copy every
/// body into its own buffer (`writev(false)`, by a fail point), as a layer that re-chunks
/// bodies would: a large file, a cached one and one sent with `sendfile = false` all come
/// back exact. (Placeholders handed to hyper instead of bytes went out as they were.)
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copying_write_strategy_sends_the_files_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let bytes =
        |len: usize| Bytes::from((0..len).map(|i| (i % 251) as u8 + 1).collect::<Vec<u8>>());
    let (big, mid) = (bytes(4 << 20), bytes(200_000));
    std::fs::write(root.join("big.bin"), &big).unwrap(); // just written: in the page cache
    std::fs::write(root.join("mid.bin"), &mid).unwrap();
    let get = |addr, target| async move {
        let mut connection = Connection::open(addr).await.unwrap();
        connection.try_send("GET", target, &[], Bytes::new()).await.unwrap()
    };
    let config = dir.path().join("larder.toml");
    std::fs::write(&config, "sendfile = false\n").unwrap();
    let flatten = [("FAILPOINTS", "http1-flatten=return")];
    let copying = Process::start(&root, &[], &flatten);
    let reading = Process::start(&root, &["--config", config.to_str().unwrap()], &flatten);
    for server in [&copying, &reading] {
        for (target, bytes) in [("/big.bin", &big), ("/mid.bin", &mid), ("/big.bin", &big)] {
            let reply = get(server.addr, target).await;
            assert_eq!((reply.status, &reply.body), (200, bytes), "{target}");
        }
    }
}

/// Each fallback on purpose, whatever file system the test runs on: a fail point says the
/// file system lacks user xattrs (the synced way for every write), `O_TMPFILE` (named
/// temporary files), `O_DIRECT` (the page cache), `/proc/self/fd` (paths by name), or all
/// four. Small and large PUTs, a replacement and a folder's DELETE, then a SIGKILL and a
/// restart: every acknowledged version back exact, with its ETag and type, nothing
/// deleted back, no temporary file, storage use right.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fallback_keeps_every_promise() {
    let all = "fs-no-xattrs=return;fs-no-tmpfile=return;fs-no-direct=return;fs-no-proc=return";
    for failpoints in [
        "fs-no-xattrs=return",
        "fs-no-tmpfile=return",
        "fs-no-direct=return",
        "fs-no-proc=return",
        all,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let root: PathBuf = dir.path().join("root");
        let auth = ["--auth", "w:pw@/:rw"];
        let env = [("FAILPOINTS", failpoints)];
        let mut server = Process::start(&root, &auth, &env);
        let typed = Some(("content-type", "text/x-note"));
        let large = Bytes::from(vec![b'L'; 600 * 1024]);
        let mut answered = Vec::new();
        for (target, body) in [
            ("/f/small.txt", Bytes::from_static(b"first")),
            ("/f/small.txt", Bytes::from_static(b"second, kept")),
            ("/f/large.bin", large.clone()),
            ("/gone/x.txt", Bytes::from_static(b"deleted")),
        ] {
            let reply = send_as_w(server.addr, "PUT", target, typed, body.clone()).await;
            assert!([200, 201].contains(&reply.status), "{failpoints}: {target}: {}", reply.text());
            answered.push((target, body, reply.header("etag").to_owned()));
        }
        let depth = Some(("depth", "infinity"));
        let deleted = send_as_w(server.addr, "DELETE", "/gone/", depth, Bytes::new()).await;
        assert_eq!(deleted.status, 204, "{failpoints}");
        server.kill();
        if failpoints.contains("fs-no-xattrs") {
            let mut value = [0u8; 64];
            let carried = rustix::fs::getxattr(root.join("f/small.txt"), "user.larder", &mut value);
            assert!(carried.is_err(), "{failpoints}: metadata carried in an xattr");
        }
        let server = Process::start(&root, &auth, &env);
        for (target, body, etag) in &answered[1..3] {
            let got = send_as_w(server.addr, "GET", target, None, Bytes::new()).await;
            assert_eq!((got.status, &got.body), (200, body), "{failpoints}: {target}");
            assert_eq!(got.header("etag"), etag, "{failpoints}: {target}");
            let note = "text/x-note; charset=utf-8";
            assert_eq!(got.header("content-type"), note, "{failpoints}: {target}");
        }
        let gone = send_as_w(server.addr, "GET", "/gone/x.txt", None, Bytes::new()).await;
        assert_eq!(gone.status, 404, "{failpoints}: a deleted file came back");
        assert!(temp_files(&root).is_empty(), "{failpoints}: {:?}", temp_files(&root));
        let account = send_as_w(server.addr, "GET", "/.larder/account", None, Bytes::new()).await;
        let used = 12 + large.len();
        assert_eq!(account.json()["storage"]["used"], used, "{failpoints}");
    }
}

/// The segments of the journal of small writes in `state`.
fn journal_segments(state: &std::path::Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(state)
        .unwrap()
        .map(|item| item.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("journal-"))
        .collect();
    found.sort();
    found
}

/// Small PUTs are made durable by the journal, not by syncing their files: a crash of the
/// machine may take a file the kernel had not yet written back, and the first start after
/// the boot writes it again from the journal, while what was deleted or replaced by a large
/// PUT afterwards stays so. Simulated here: larder killed, a file removed from the disk as a
/// power cut could have, and the boot ids (the state's and the journal's) not this boot's.
/// A start in the same boot rewrites nothing: the kernel still had every file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_writes_a_machine_crash_took_come_back_from_the_journal() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().join("root");
    let state = root.join(".larder");
    let auth = ["--auth", "w:pw@/:rw"];
    let send = |addr, method, target, extra: &'static str, body| {
        send_as_w(addr, method, target, extra.split_once(": "), body)
    };
    let text = |s: &'static str| Bytes::from_static(s.as_bytes());

    // A same-boot restart: the file is kept as it is, and the journal is emptied.
    let mut server = Process::start(&root, &auth, &[]);
    let put = send(server.addr, "PUT", "/j/same.txt", "", text("same boot")).await;
    assert_eq!(put.status, 201);
    assert!(!journal_segments(&state).is_empty(), "the small PUT went through the journal");
    let inode = std::fs::metadata(root.join("j/same.txt")).unwrap().ino();
    server.kill();
    let mut server = Process::start(&root, &auth, &[]);
    assert!(journal_segments(&state).is_empty(), "a start empties the journal");
    assert_eq!(std::fs::metadata(root.join("j/same.txt")).unwrap().ino(), inode);

    let addr = server.addr;
    let put = |target, extra, body| send(addr, "PUT", target, extra, body);
    assert_eq!(put("/j/kept.txt", "content-type: text/x-note", text("one")).await.status, 201);
    let kept = put("/j/kept.txt", "content-type: text/x-note", text("two!")).await;
    assert_eq!(kept.status, 200);
    assert_eq!(put("/j/gone.txt", "", text("deleted")).await.status, 201);
    assert_eq!(send(addr, "DELETE", "/j/gone.txt", "", Bytes::new()).await.status, 204);
    assert_eq!(put("/d/x.txt", "", text("in a deleted folder")).await.status, 201);
    let delete = send(addr, "DELETE", "/d/", "depth: infinity", Bytes::new()).await;
    assert_eq!(delete.status, 204);
    assert_eq!(put("/big.bin", "", text("small first")).await.status, 201);
    let big = Bytes::from(vec![7u8; 300 * 1024]); // past the journal's bodies: synced as is
    assert_eq!(put("/big.bin", "", big.clone()).await.status, 200);
    server.kill();

    // The power cut: the kernel had not written kept.txt back; the boot changes.
    std::fs::remove_file(root.join("j/kept.txt")).unwrap();
    std::fs::write(state.join("boot-id"), "another boot\n").unwrap();
    let segments = journal_segments(&state);
    assert!(!segments.is_empty());
    for segment in &segments {
        let bytes = std::fs::read(segment).unwrap();
        let header_end = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
        let boot_end = header_end + bytes[header_end..].iter().position(|b| *b == b'\n').unwrap();
        let mut faked = bytes[..header_end].to_vec();
        faked.extend_from_slice(&b"0".repeat(boot_end - header_end));
        faked.extend_from_slice(&bytes[boot_end..]);
        std::fs::write(segment, faked).unwrap();
    }

    let server = Process::start(&root, &auth, &[]);
    assert!(journal_segments(&state).is_empty(), "a replayed journal is emptied");
    let got = send(server.addr, "GET", "/j/kept.txt", "", Bytes::new()).await;
    assert_eq!((got.status, &got.body[..]), (200, &b"two!"[..]), "the acknowledged version");
    assert_eq!(got.header("etag"), kept.header("etag"), "the ETag its PUT answered");
    assert_eq!(got.header("content-type"), "text/x-note; charset=utf-8");
    for deleted in ["/j/gone.txt", "/d/x.txt", "/d/"] {
        let got = send(server.addr, "GET", deleted, "", Bytes::new()).await;
        assert_eq!(got.status, 404, "{deleted} came back");
    }
    let got = send(server.addr, "GET", "/big.bin", "", Bytes::new()).await;
    assert_eq!((got.status, got.body.len()), (200, big.len()), "the large PUT stands");
    let account = send(server.addr, "GET", "/.larder/account", "", Bytes::new()).await;
    let used = 9 + 4 + big.len();
    assert_eq!(account.json()["storage"]["used"], used, "storage use counts what is on disk");
}

/// A disk that lost its cache without a new boot (a controller reset, a restored snapshot):
/// the journal's records are checked against the files, not trusted to be on the disk
/// because the boot id is the same, and a large file whose row was lost is described by its
/// bytes. Simulated here: larder killed, then a small file emptied and another's bytes
/// changed behind its back, and a large file's row deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_in_the_same_boot_checks_what_the_journal_names() {
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().join("root");
    let state = root.join(".larder");
    let auth = ["--auth", "w:pw@/:rw"];
    let mut server = Process::start(&root, &auth, &[]);
    let mut answered = Vec::new();
    let large = Bytes::from(vec![b'L'; 300 * 1024]);
    for (target, body) in [
        ("/j/emptied.txt", Bytes::from_static(b"acknowledged")),
        ("/j/changed.txt", Bytes::from_static(b"the bytes")),
        ("/large.bin", large.clone()),
    ] {
        let reply = send_as_w(server.addr, "PUT", target, None, body.clone()).await;
        assert_eq!(reply.status, 201, "{target}");
        answered.push((target, body, reply.header("etag").to_owned()));
    }
    assert!(!journal_segments(&state).is_empty(), "the small PUTs went through the journal");
    server.kill();
    std::fs::OpenOptions::new()
        .write(true)
        .open(root.join("j/emptied.txt"))
        .unwrap()
        .set_len(0)
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(root.join("j/changed.txt"))
        .unwrap()
        .write_all(b"THE BYTES")
        .unwrap();
    let db = rusqlite::Connection::open(state.join("larder.db")).unwrap();
    db.execute("DELETE FROM object WHERE path = '/large.bin'", []).unwrap();
    drop(db);

    let server = Process::start(&root, &auth, &[]);
    assert!(journal_segments(&state).is_empty(), "a start empties the journal");
    for (target, body, etag) in answered {
        let got = send_as_w(server.addr, "GET", target, None, Bytes::new()).await;
        assert_eq!((got.status, &got.body), (200, &body), "{target}: the acknowledged bytes");
        assert_eq!(got.header("etag"), etag, "{target}: the ETag its PUT answered");
    }
    let account = send_as_w(server.addr, "GET", "/.larder/account", None, Bytes::new()).await;
    assert_eq!(account.json()["storage"]["used"], 12 + 9 + 300 * 1024);
}

/// A file system mounted beneath ROOT is not synced by syncing ROOT's, which is all a
/// journal checkpoint does: small writes there take the synced way, not the journal. Here a
/// tmpfs mounted at ROOT/mnt in a mount namespace of larder's own (root only), and another
/// at ROOT/late once larder runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_writes_beneath_a_mount_point_in_root_are_not_journaled() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: mounting a file system inside ROOT needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().join("root");
    std::fs::create_dir_all(root.join("mnt")).unwrap();
    std::fs::create_dir_all(root.join("late")).unwrap();
    // In the namespace: $0 is larder, $2 is ROOT.
    let script = r#"exec unshare -m sh -c 'mount -t tmpfs none "$2/mnt" &&
        exec "$0" "$@" --auth w:pw@/:rw' "$0" "$@""#;
    let server = Process::start_through_shell(script, &root);
    // And one mounted while larder runs, in its namespace.
    let pid = server.child.id().to_string();
    let late = root.join("late");
    let mounted = std::process::Command::new("nsenter")
        .args(["--target", &pid, "--mount", "mount", "-t", "tmpfs", "none"])
        .arg(&late)
        .status()
        .unwrap();
    assert!(mounted.success());
    for target in ["/here.txt", "/mnt/there.txt", "/late/there.txt"] {
        let body = Bytes::from(format!("the bytes of {target}"));
        let reply = send_as_w(server.addr, "PUT", target, None, body.clone()).await;
        assert_eq!(reply.status, 201, "{target}: {}", reply.text());
        let got = send_as_w(server.addr, "GET", target, None, Bytes::new()).await;
        assert_eq!(got.body, body);
    }
    // tmpfs takes no O_DIRECT: a large upload there goes through the page cache.
    let large = Bytes::from(vec![b'T'; 600 * 1024]);
    let reply = send_as_w(server.addr, "PUT", "/mnt/large.bin", None, large.clone()).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let got = send_as_w(server.addr, "GET", "/mnt/large.bin", None, Bytes::new()).await;
    assert_eq!(got.body, large);
    assert!(!root.join("mnt/there.txt").exists(), "the tmpfs is larder's alone");
    let journal: Vec<u8> = journal_segments(&root.join(".larder"))
        .iter()
        .flat_map(|s| std::fs::read(s).unwrap())
        .collect();
    let holds = |key: &str| journal.windows(key.len()).any(|w| w == key.as_bytes());
    // (A record superseding /mnt/there.txt names it, but holds no bytes.)
    assert!(holds("the bytes of /here.txt"), "a small write on ROOT's file system is journaled");
    assert!(!holds("the bytes of /mnt/there.txt"), "one beneath a mount point is not");
    assert!(!holds("the bytes of /late/there.txt"), "nor one mounted while larder runs");
}

/// A PostgreSQL that cannot be reached stops the start, and `larder check`, with a message
/// that names its address (password redacted) and what the connection met.
#[test]
fn an_unreachable_database_is_named_at_start_and_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("larder.toml");
    let text = "state = \"postgres://larder:s3cret@127.0.0.1:1/site\"\n\
                store = \"s3://bucket/prefix\"\ndependency_timeout = \"2s\"\n";
    std::fs::write(&config, text).unwrap();
    for command in ["serve", "check"] {
        let out = larder(&[command, "--config", config.to_str().unwrap(), "--port", "0"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {said}");
        assert!(
            said.contains("PostgreSQL at postgres://larder:<redacted>@127.0.0.1:1/site"),
            "{said}"
        );
        assert!(said.contains("Connection refused"), "{command}: {said}");
        assert!(!said.contains("s3cret"), "{command}: {said}");
    }
}

/// Started with a soft limit of 64 open files (the hard one higher, as on most systems),
/// larder raises it and serves 300 connections open at once.
#[test]
fn a_low_open_file_limit_is_raised() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.txt"), b"hello").unwrap();
    let server = Process::start_through_shell(r#"ulimit -Sn 64 && exec "$0" "$@""#, dir.path());
    let mut connections: Vec<std::net::TcpStream> =
        (0..300).map(|_| std::net::TcpStream::connect(server.addr).unwrap()).collect();
    for connection in &mut connections {
        connection.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        connection.write_all(b"GET /f.txt HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    }
    for (i, connection) in connections.iter_mut().enumerate() {
        let mut answer = [0u8; 12];
        connection.read_exact(&mut answer).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(&answer, b"HTTP/1.1 200", "connection {i}");
    }
}
