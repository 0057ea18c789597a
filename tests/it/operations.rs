//! Running it in production: `/.larder/metrics` moved by exactly the traffic sent, the
//! access log (text and JSON, no secrets), graceful shutdown with uploads in flight, and
//! configuration reload with SIGHUP.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;
use crate::larder_process::{Process, larder};

/// Scrapes `/.larder/metrics` over a keep-alive connection. HTTP/1.1 answers one request at a
/// time, and larder counts a request when its answer is done, so what a request moved is
/// counted before the next one on the same connection is read.
async fn scrape(c: &mut Connection) -> (Reply, HashMap<String, f64>) {
    let reply = c.send("GET", "/.larder/metrics", &as_(&basic("root")), "").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    let samples = reply
        .text()
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect();
    (reply, samples)
}

fn moved(before: &HashMap<String, f64>, after: &HashMap<String, f64>, name: &str) -> f64 {
    let value = |m: &HashMap<String, f64>| m.get(name).copied().unwrap_or(0.0);
    assert!(after.contains_key(name), "no sample {name} in {after:?}");
    value(after) - value(before)
}

/// The header list for signing in with `authorization` ("" for none).
fn as_(authorization: &str) -> Vec<(&'static str, &str)> {
    if authorization.is_empty() { vec![] } else { vec![("authorization", authorization)] }
}

#[tokio::test]
async fn metrics_move_by_exactly_the_traffic_sent() {
    let server = TestServer::with_config(&crate::payment::shop_config()).await;
    server.place("a.txt", &[b'a'; 100]);
    server.place("shop/book.pdf", b"%PDF-1.7 a book");
    let mut c = Connection::open(server.addr).await.unwrap();

    // Who may read them: admins; others are told to sign in, or refused.
    let anonymous = server.get("/.larder/metrics", &[]).await;
    anonymous.assert_problem(401, "unauthenticated");
    let (first, before) = scrape(&mut c).await;
    let mut sent = first.body.len();
    for _ in 0..3 {
        let reply = c.send("GET", "/a.txt", &[], "").await;
        assert_eq!(reply.status, 200);
        sent += reply.body.len();
    }
    let missing = c.send("GET", "/missing.txt", &[], "").await;
    assert_eq!(missing.status, 404);
    let put = c.send("PUT", "/up.bin", &as_(&basic("alice")), vec![7u8; 1000]).await;
    assert_eq!(put.status, 201, "{}", put.text());
    let order = br#"{"path": "/shop/book.pdf"}"#;
    let alice = basic("alice");
    let json = [("authorization", alice.as_str()), ("content-type", "application/json")];
    let bought = c.send("POST", "/.larder/purchases", &json, &order[..]).await;
    assert_eq!(bought.status, 201, "{}", bought.text());
    let wrong = c.send("GET", "/a.txt", &as_(&basic_raw("alice:wrong")), "").await;
    assert_eq!(wrong.status, 401);
    let bogus = c.send("GET", "/a.txt", &as_("Bearer lt_bogus"), "").await;
    assert_eq!(bogus.status, 401);
    sent += [&missing, &put, &bought, &wrong, &bogus].iter().map(|r| r.body.len()).sum::<usize>();
    let (_, after) = scrape(&mut c).await;

    let m = |name: &str| moved(&before, &after, name);
    assert_eq!(m(r#"larder_requests_total{class="2xx",method="GET"}"#), 4.0, "3 reads + a scrape");
    assert_eq!(m(r#"larder_requests_total{class="4xx",method="GET"}"#), 3.0);
    assert_eq!(m(r#"larder_requests_total{class="2xx",method="PUT"}"#), 1.0);
    assert_eq!(m(r#"larder_requests_total{class="2xx",method="POST"}"#), 1.0);
    assert_eq!(m("larder_request_duration_seconds_count"), 9.0);
    assert_eq!(m("larder_sent_bytes_total"), sent as f64);
    assert_eq!(m("larder_received_bytes_total"), (1000 + order.len()) as f64);
    assert_eq!(m(r#"larder_credits_total{kind="granted"}"#), 10.0, "alice's first sign-in");
    assert_eq!(m(r#"larder_credits_total{kind="spent"}"#), 5.0);
    assert_eq!(m("larder_storage_used_bytes"), 1000.0);
    assert_eq!(m(r#"larder_sign_in_failures_total{reason="bad_credentials"}"#), 1.0);
    assert_eq!(m(r#"larder_sign_in_failures_total{reason="invalid_token"}"#), 1.0);
    assert!(after["larder_open_connections"] >= 1.0, "this connection is open");

    let alice = server.get("/.larder/metrics", &[("authorization", &basic("alice"))]).await;
    alice.assert_problem(403, "forbidden");

    // A client that cuts its upload off: counted once the server has read the cut.
    let mut cut = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "PUT /cut.bin HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\ncontent-length: 1000\r\n\r\n0123456789",
        basic("bob") // alice's 1 KiB quota is used up: hers would be a 402
    );
    cut.write_all(head.as_bytes()).await.unwrap();
    drop(cut);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, now) = scrape(&mut c).await;
        if moved(&after, &now, "larder_upload_aborts_total") == 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the cut-off upload was never counted");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn metrics_can_be_public() {
    let server = TestServer::with_config(&team_config("metrics_public = true")).await;
    let reply = server.get("/.larder/metrics", &[]).await;
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("# TYPE larder_requests_total counter"), "{}", reply.text());
}

/// The server's standard error, line by line, as it comes.
struct Log(mpsc::Receiver<String>);

impl Log {
    fn of(server: &mut Process) -> Log {
        let stderr = server.child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Log(rx)
    }

    /// The first line from now on that contains `needle` (failing after 20 s).
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line with {needle:?}: {e}"),
            }
        }
    }
}

fn start_logged(config: &str, extra: &[&str]) -> (tempfile::TempDir, Process, Log) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("larder.toml");
    std::fs::write(&file, config).unwrap();
    let root = dir.path().join("root");
    let mut args = vec!["--config", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut server = Process::start_logging(&root, &args, &[], Stdio::piped());
    let log = Log::of(&mut server);
    (dir, server, log)
}

fn signal(server: &Process, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn send(server: &Process, method: &str, target: &str, auth: &str) -> Reply {
    let mut c = Connection::open(server.addr).await.unwrap();
    c.send(method, target, &as_(auth), "").await
}

#[tokio::test]
async fn access_log_has_one_line_per_request_and_no_secrets() {
    for format in ["text", "json"] {
        let (_dir, server, log) = start_logged(&team_config(""), &["--log-format", format]);
        let alice = basic("alice");
        assert_eq!(send(&server, "GET", "/nothing.txt", &alice).await.status, 404);
        let secret = "lt_c2VjcmV0LXRva2VuLXZhbHVlLW5vdC10by1iZS1sb2dnZWQ";
        send(&server, "GET", &format!("/a%0Ab?access_token={secret}"), "").await;
        // The same token percent-encoded (once, twice), and a password in userinfo.
        send(&server, "GET", &format!("/encoded?t=%6C%74%5F{}", &secret[3..]), "").await;
        send(&server, "GET", &format!("/twice/lt%255F{}", &secret[3..]), "").await;
        let mut raw = TcpStream::connect(server.addr).await.unwrap();
        let userinfo =
            "GET http://alice:hunter2-in-userinfo@a/userinfo HTTP/1.1\r\nHost: a\r\n\r\n";
        raw.write_all(userinfo.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        raw.read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&answer));
        let line = log.wait_for("nothing.txt");
        let cut = log.wait_for("a%0Ab");
        let encoded = log.wait_for("/encoded");
        let twice = log.wait_for("/twice");
        let refused = log.wait_for("/userinfo");
        for text in [&line, &cut, &encoded, &twice, &refused] {
            assert!(!text.contains(PASSWORD) && !text.contains(&alice[6..]), "{text}");
            assert!(!text.contains(&secret[3..]), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
        assert!(cut.contains("access_token=lt_<redacted>") && !cut.contains('\n'), "{cut}");
        if format == "json" {
            let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(doc["target"], "access", "{doc}");
            assert_eq!(doc["method"], "GET");
            assert_eq!(doc["path"], "/nothing.txt");
            assert_eq!(doc["status"], 404);
            assert_eq!(doc["account"], "alice");
            assert!(doc["bytes"].as_u64().unwrap() > 0, "a problem document was sent");
            assert!(doc["ms"].as_f64().is_some() && doc["request_id"].as_str().is_some());
        } else {
            for field in ["method=GET", "path=/nothing.txt", "status=404", "account=alice"] {
                assert!(line.contains(field), "{field} in {line}");
            }
            assert!(
                line.contains("request_id=") && line.contains("bytes=") && line.contains("ms=")
            );
        }
    }
}

/// A log nobody reads (a pipe left full) never holds up a request: the lines past the queue
/// (`LARDER_LOG_QUEUE`, 64 here) are dropped and counted in the metrics.
#[tokio::test]
async fn a_stalled_log_drops_lines_and_never_blocks_requests() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("larder.toml");
    std::fs::write(&file, team_config("")).unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("a.txt"), "a").unwrap();
    let args = ["--config", file.to_str().unwrap()];
    let env = [("LARDER_LOG_QUEUE", "64"), ("RUST_LOG", "info")];
    // stderr is a pipe this test never reads: once it and the writer's buffer are full, the
    // writer thread waits for ever.
    let server = Process::start_logging(&root, &args, &env, Stdio::piped());
    let mut c = Connection::open(server.addr).await.unwrap();
    // 3,000 access lines of about 130 bytes: several times what the pipe (64 KiB), the
    // writer's buffer (64 KiB) and the queue hold.
    for i in 0..3000 {
        let reply = c.send("GET", "/a.txt", &[], "").await;
        assert_eq!((reply.status, &reply.body[..]), (200, &b"a"[..]), "request {i}");
    }
    let (_, samples) = scrape(&mut c).await;
    let dropped = samples["larder_log_lines_dropped_total"];
    assert!(dropped >= 1000.0, "dropped {dropped} of 3,000 lines");
}

#[tokio::test]
async fn sigterm_lets_uploads_in_flight_finish_then_exits_0() {
    let (dir, mut server, log) = start_logged(&team_config("shutdown_grace = \"20s\""), &[]);
    let body = vec![b'u'; 64 * 1024];
    // Three uploads, each past its head (the server asked for the body) and half sent.
    let mut uploads = Vec::new();
    for i in 0..3 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let head = format!(
            "PUT /up{i}.bin HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
            basic("alice"),
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut interim = [0u8; 25];
        stream.read_exact(&mut interim).await.unwrap();
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        stream.write_all(&body[..body.len() / 2]).await.unwrap();
        uploads.push(stream);
    }
    signal(&server, "TERM");
    log.wait_for("stopped accepting");
    // No new connections once shutdown began.
    assert!(TcpStream::connect(server.addr).await.is_err(), "still accepting");
    for (i, stream) in uploads.iter_mut().enumerate() {
        stream.write_all(&body[body.len() / 2..]).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap(); // the server closes after answering
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 201 Created\r\n"), "upload {i}: {text}");
        assert!(text.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{text}");
        let (head, json) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned)
            })
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(json.len(), length, "the answer arrived whole");
        let stored = std::fs::read(dir.path().join(format!("root/up{i}.bin"))).unwrap();
        assert!(stored == body, "upload {i} stored whole");
    }
    let status = tokio::task::spawn_blocking(move || server.child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn sighup_reloads_a_good_file_and_keeps_the_old_one_over_a_broken_one() {
    let (dir, server, log) = start_logged(&team_config(""), &[]);
    let file = dir.path().join("larder.toml");
    std::fs::create_dir_all(dir.path().join("root/private")).unwrap();
    std::fs::write(dir.path().join("root/private/plan.txt"), "secret plan").unwrap();
    let carol = basic("carol");
    assert_eq!(send(&server, "GET", "/private/plan.txt", "").await.status, 401);
    assert_eq!(send(&server, "GET", "/.larder/account", &carol).await.status, 401);

    // Add carol, drop the /private rule: `/` (anyone reads) now covers /private.
    let hash = password_hash();
    let without_private = team_config("")
        .replace("[[rule]]\npath = \"/private\"\nread = [\"alice\"]\nwrite = [\"alice\"]\n", "");
    let added = format!("{without_private}[[account]]\nname = \"carol\"\npassword = \"{hash}\"\n");
    assert!(!added.contains("/private"));
    std::fs::write(&file, &added).unwrap();
    signal(&server, "HUP");
    log.wait_for("configuration reloaded");
    assert_eq!(send(&server, "GET", "/.larder/account", &carol).await.status, 200);
    let private = send(&server, "GET", "/private/plan.txt", "").await;
    assert_eq!((private.status, private.text().as_str()), (200, "secret plan"));

    // A broken file: logged with its file and key; nothing changes.
    std::fs::write(&file, added.replace(hash, "plain-text")).unwrap();
    signal(&server, "HUP");
    let line = log.wait_for("not reloaded");
    assert!(line.contains("larder.toml") && line.contains("password"), "{line}");
    assert_eq!(send(&server, "GET", "/.larder/account", &carol).await.status, 200);
    assert_eq!(send(&server, "GET", "/private/plan.txt", "").await.status, 200);
}

#[test]
fn explain_names_the_deciding_rule_for_every_method() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("larder.toml");
    std::fs::write(&file, team_config("")).unwrap();
    let out =
        larder(&["explain", "/private/x.txt", "--as", "bob", "--config", file.to_str().unwrap()])
            .output()
            .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("decided by rule[1] /private"), "{text}");
    for method in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "POST", "DELETE"] {
        assert!(text.lines().any(|l| l.trim_start().starts_with(method)), "{method}: {text}");
    }
    assert!(text.contains("GET      403: not allowed (read)"), "{text}");
    let out = larder(&["explain", "/x", "--as", "nobody", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "an unknown account is a usage error");
}
