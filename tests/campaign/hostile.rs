//! The hostile-input campaign: a corpus of malformed and malicious requests, raw bytes on a
//! socket, each answered with the right 4xx or a closed connection, never a 500, never a
//! hang, never a byte from outside ROOT, and the server still serving after each one.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;
use crate::framing::{AUTH, refused};

/// Sends `bytes`, then reads until the server closes or `wait` passes. `None`: still open.
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8], wait: Duration) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may close before reading everything (a refused head): that is an answer.
    let _ = stream.write_all(bytes).await;
    let mut out = Vec::new();
    match tokio::time::timeout(wait, stream.read_to_end(&mut out)).await {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").into_bytes()
}

fn get_html(target: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\n{AUTH}Connection: close\r\n\r\n"
    )
    .into_bytes()
}

fn put(target: &str, body: &str) -> Vec<u8> {
    format!(
        "PUT {target} HTTP/1.1\r\nHost: a\r\n{AUTH}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Requests for names outside ROOT, in every encoding of `..`, `/` and `\` we know of.
fn traversals() -> Vec<String> {
    let dots = [
        "..",
        "%2e%2e",
        "%2E%2E",
        ".%2e",
        "%2e.",
        "%252e%252e",
        "%c0%ae%c0%ae",
        "%e0%80%ae%e0%80%ae",
        "..%00",
        "..;",
    ];
    let slashes = ["/", "%2f", "%2F", "%5c", "\\", "%252f", "%c0%af"];
    let mut targets = Vec::new();
    for dot in dots {
        for slash in slashes {
            targets.push(format!("/{dot}{slash}{dot}{slash}{dot}{slash}etc{slash}passwd"));
            targets.push(format!("/public/{dot}{slash}{dot}{slash}secret.txt"));
        }
    }
    targets.extend(
        [
            "/escape/passwd",
            "/escape/",
            "/leak.txt",
            "http://a/../../etc/passwd",
            "/public/../../../etc/passwd",
            "//etc/passwd",
            "/%00/etc/passwd",
        ]
        .map(String::from),
    );
    targets
}

/// Targets with broken or dangerous encodings.
fn bad_encodings() -> Vec<String> {
    let mut targets: Vec<String> = [
        "/%",
        "/%z1",
        "/%1",
        "/a%2",
        "/%%32%65",
        "/%00",
        "/a%00b.txt",
        "/%ff%fe",
        "/%c3",
        "/%ed%a0%80",
        "/%0d%0aSet-Cookie:%20x=y",
        "/%0a",
        "/%7f",
        "/a/%2e/b",
        "/.",
        "/./public/",
        "/public/./x",
        "/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "/public/%22%3E%3Cimg%20src=x%20onerror=alert(1)%3E",
    ]
    .map(String::from)
    .to_vec();
    targets.push(format!("/{}", "%41".repeat(3000)));
    targets.push(format!("/{}", "a/".repeat(2100)));
    targets.push(format!("/{}", "a".repeat(300)));
    targets
}

pub async fn run(_options: &Options) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(root.join("public")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(root.join("public/a.txt"), "public").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "SECRET-OUTSIDE").unwrap();
    std::fs::write(outside.join("passwd"), "SECRET-OUTSIDE").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.join("passwd"), root.join("leak.txt")).unwrap();
    let alice = larder::auth::hash_password("correct horse").unwrap();
    let config = dir.path().join("larder.toml");
    std::fs::write(
        &config,
        format!(
            "header_timeout = \"2s\"\n[[account]]\nname = \"alice\"\npassword = \"{alice}\"\n\
             [[rule]]\npath = \"/\"\nread = [\"*\"]\nwrite = [\"alice\"]\n"
        ),
    )
    .unwrap();
    let server = start(&root, &config, None);
    let addr = server.addr;
    let mut tried = 0;
    let still_serving = |case: String| async move {
        let reply = request(addr, "GET", "/public/a.txt", &[], "").await;
        assert!(
            reply.is_ok_and(|r| r.status == 200 && r.body == "public"),
            "{case}: the server stopped serving"
        );
    };

    // RFC 9112 framing: the given status and a closed connection.
    for (name, bytes, status) in refused() {
        let reply = exchange(addr, &bytes, Duration::from_secs(10)).await;
        let reply = reply.unwrap_or_else(|| panic!("{name}: the connection stayed open"));
        assert!(reply.starts_with(&format!("HTTP/1.1 {status}")), "{name}: {reply}");
        still_serving(name.to_owned()).await;
        tried += 1;
    }
    let framing = tried;

    // Traversal and bad encodings: a 4xx (or a redirect into ROOT), never outside bytes.
    let (traversal, encoding) = (traversals(), bad_encodings());
    for target in traversal.iter().chain(&encoding) {
        for bytes in [get(target), put(target, "planted"), get_html(target)] {
            let reply = exchange(addr, &bytes, Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("{target}: no answer in 10 s"));
            let status: u16 = reply.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            assert!(
                (400..500).contains(&status)
                    || status == 301
                    || status == 201
                    || status == 200
                    || status == 204
                    || reply.is_empty(),
                "{target}: {reply}"
            );
            assert!(!reply.contains("SECRET-OUTSIDE"), "{target} leaked a file outside ROOT");
            assert!(
                !reply.to_ascii_lowercase().contains("\r\nset-cookie"),
                "{target}: header injection"
            );
            // Names are data in JSON (escaped by its own rules); in HTML they must be text.
            if reply.to_ascii_lowercase().contains("\r\ncontent-type: text/html") {
                assert!(
                    !reply.contains("<script>alert") && !reply.contains("<img src=x"),
                    "{target}: markup in HTML"
                );
            }
            tried += 1;
        }
        still_serving(target.clone()).await;
    }
    // Nothing was written outside ROOT, and nothing outside changed.
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1, "a file appeared outside ROOT");
    assert_eq!(std::fs::read_to_string(outside.join("passwd")).unwrap(), "SECRET-OUTSIDE");
    assert_eq!(std::fs::read_to_string(dir.path().join("secret.txt")).unwrap(), "SECRET-OUTSIDE");
    assert!(!dir.path().join("planted").exists() && !Path::new("/etc/planted").exists());

    // Names with markup and control characters: stored names are escaped in every listing.
    let names = [
        "%3Cb%3Ebold%3C%2Fb%3E.txt",
        "quote%22.txt",
        "amp%26lt%3B.txt",
        "tab%09name.txt",
        "bell%07.txt",
        "newline%0A.txt",
    ];
    for name in names {
        let reply = exchange(addr, &put(&format!("/names/{name}"), "x"), Duration::from_secs(10))
            .await
            .unwrap();
        let status: u16 = reply.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        assert!(status == 201 || status == 400, "{name}: {reply}");
        tried += 1;
    }
    for accept in ["text/html", "application/json"] {
        let reply = request(addr, "GET", "/names/", &[("accept", accept)], "").await.unwrap();
        assert_eq!(reply.status, 200);
        let text = String::from_utf8_lossy(&reply.body);
        assert!(!text.contains("<b>bold"), "{accept} listing carries raw markup: {text}");
        for raw in ["\u{7}", "tab\tname", "newline\n.txt"] {
            assert!(
                !text.contains(raw),
                "{accept} listing carries a raw control character: {raw:?}"
            );
        }
        tried += 1;
    }

    // Huge header counts and sizes.
    for (count, size) in [(200, 10), (2_000, 10), (20_000, 1), (1, 200_000)] {
        let fields: String =
            (0..count).map(|i| format!("X-{i}: {}\r\n", "v".repeat(size))).collect();
        let bytes = format!("GET /public/a.txt HTTP/1.1\r\nHost: a\r\n{fields}\r\n").into_bytes();
        let reply = exchange(addr, &bytes, Duration::from_secs(10)).await;
        let reply =
            reply.unwrap_or_else(|| panic!("{count} fields of {size}: the connection stayed open"));
        assert!(
            reply.is_empty()
                || reply.starts_with("HTTP/1.1 431")
                || reply.starts_with("HTTP/1.1 400"),
            "{count} fields: {}",
            &reply[..reply.len().min(100)]
        );
        still_serving(format!("{count} fields")).await;
        tried += 1;
    }

    // Slow loris: a byte every 300 ms is dropped at the 2 s header timeout, and meanwhile
    // others are served at once.
    let started = Instant::now();
    let mut loris = TcpStream::connect(addr).await.unwrap();
    let drip = tokio::spawn(async move {
        for byte in b"GET /public/a.txt HTTP/1.1\r\nHost: a\r\nX-Slow: ".iter().cycle().take(100) {
            if loris.write_all(&[*byte]).await.is_err() {
                return Some(started.elapsed());
            }
            let mut buf = [0u8; 256];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(300), loris.read(&mut buf)).await
            {
                return Some(started.elapsed());
            }
        }
        None
    });
    for _ in 0..10 {
        still_serving("during slow loris".into()).await;
    }
    let dropped = drip.await.unwrap().expect("the slow loris was never dropped");
    assert!(dropped < Duration::from_secs(6), "dropped after {dropped:?}");
    tried += 1;
    vec![
        format!(
            "{tried} hostile requests: {framing} framing faults, {} traversal targets and {} bad encodings (each as GET, PUT and a signed-in GET of HTML), names with markup and control characters, header floods, a slow loris",
            traversal.len(),
            encoding.len()
        ),
        format!(
            "no 500, no hang, nothing read or written outside ROOT; the slow loris was dropped after {:.1} s while others were served",
            dropped.as_secs_f64()
        ),
    ]
}
