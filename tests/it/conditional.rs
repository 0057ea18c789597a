//! Conditional requests (RFC 9110 §13) and ranges (§14) over TCP, the If-Match race, and
//! `Expect: 100-continue` answered at once by every check that can decide from the headers.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

fn date(offset: i64) -> String {
    let now = SystemTime::now();
    let at = if offset >= 0 {
        now + Duration::from_secs(offset as u64)
    } else {
        now - Duration::from_secs((-offset) as u64)
    };
    httpdate::fmt_http_date(at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_of_13_2_2() {
    let server = TestServer::with_config(&team_config("")).await;
    let put = server.put_as("alice", "/doc.txt", "version one").await;
    let etag = put.header("etag").to_owned();
    let alice = basic("alice");
    let (past, future) = (date(-3600), date(3600));
    let get = |fields: Vec<(&'static str, String)>| {
        let server = &server;
        async move {
            let headers: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
            server.get("/doc.txt", &headers).await.status
        }
    };
    // 1. If-Match: strong comparison; false → 412.
    assert_eq!(get(vec![("if-match", etag.clone())]).await, 200);
    assert_eq!(get(vec![("if-match", "\"nope\"".into())]).await, 412);
    assert_eq!(
        get(vec![("if-match", format!("W/{etag}"))]).await,
        412,
        "weak never matches strongly"
    );
    // 2. If-Unmodified-Since, only without If-Match.
    assert_eq!(get(vec![("if-unmodified-since", past.clone())]).await, 412);
    assert_eq!(get(vec![("if-unmodified-since", future.clone())]).await, 200);
    assert_eq!(
        get(vec![("if-match", etag.clone()), ("if-unmodified-since", past.clone())]).await,
        200
    );
    // 3. If-None-Match: weak comparison; false → 304 for GET/HEAD.
    assert_eq!(get(vec![("if-none-match", etag.clone())]).await, 304);
    assert_eq!(get(vec![("if-none-match", format!("W/{etag}"))]).await, 304);
    assert_eq!(get(vec![("if-none-match", "*".into())]).await, 304);
    // 4. If-Modified-Since, only without If-None-Match, only GET/HEAD.
    assert_eq!(get(vec![("if-modified-since", future.clone())]).await, 304);
    assert_eq!(get(vec![("if-modified-since", past.clone())]).await, 200);
    assert_eq!(
        get(vec![("if-none-match", "\"other\"".into()), ("if-modified-since", future.clone())])
            .await,
        200
    );
    assert_eq!(get(vec![("if-modified-since", "not a date".into())]).await, 200);
    // 5. If-Range: a strong match sends the range, anything else the whole.
    let ranged = |if_range: String| vec![("range", "bytes=0-6".to_owned()), ("if-range", if_range)];
    assert_eq!(get(ranged(etag.clone())).await, 206);
    assert_eq!(get(ranged("\"old\"".into())).await, 200);
    // Other methods: 412, never 304.
    let head = server.send("HEAD", "/doc.txt", &[("if-none-match", &etag)], "").await;
    assert_eq!((head.status, head.body.len()), (304, 0));
    let w =
        |name: &'static str, value: String| vec![("authorization", alice.clone()), (name, value)];
    for (method, fields) in [
        ("PUT", w("if-none-match", etag.clone())),
        ("PUT", w("if-unmodified-since", past.clone())),
        ("DELETE", w("if-match", "\"nope\"".into())),
        ("DELETE", w("if-none-match", "*".into())),
    ] {
        let headers: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = server.send(method, "/doc.txt", &headers, "version two").await;
        reply.assert_problem(412, "precondition-failed");
    }
    assert_eq!(std::fs::read(server.file("doc.txt")).unwrap(), b"version one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_modified_carries_exactly_the_right_fields() {
    let server = TestServer::with_config(&team_config("")).await;
    let etag = server.put_as("alice", "/doc.txt", "body").await.header("etag").to_owned();
    let alice = basic("alice");
    let full = server.get("/doc.txt", &[("authorization", &alice)]).await;
    let cached =
        server.get("/doc.txt", &[("authorization", &alice), ("if-none-match", &etag)]).await;
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
    // §15.4.5: ETag, Date and Cache-Control as a 200 would have them; no representation fields.
    assert_eq!(cached.header("etag"), etag);
    assert_eq!(cached.header("cache-control"), full.header("cache-control"));
    assert!(!cached.header("date").is_empty());
    for absent in ["content-type", "content-range", "accept-ranges"] {
        assert!(cached.headers.get(absent).is_none(), "{absent} in a 304");
    }
    assert!(
        matches!(cached.header("content-length"), "" | "4"),
        "Content-Length only if equal to the 200's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preconditions_yield_to_other_answers_and_skip_options_and_trace() {
    let server = TestServer::with_config(&team_config("")).await;
    server.put_as("alice", "/private/p.txt", "p").await;
    server.put_as("alice", "/a.txt", "a").await;
    let never = [("if-match", "\"never\"")];
    server.get("/missing.txt", &never).await.assert_problem(404, "not-found");
    server.get("/private/p.txt", &never).await.assert_problem(401, "unauthenticated");
    let bob = basic("bob");
    let bob_never = [("authorization", bob.as_str()), ("if-match", "\"never\"")];
    server.get("/private/p.txt", &bob_never).await.assert_problem(403, "forbidden");
    server.send("POST", "/a.txt", &bob_never, "x").await.assert_problem(405, "method-not-allowed");
    assert_eq!(server.send("OPTIONS", "/a.txt", &never, "").await.status, 204);
    assert_eq!(server.send("TRACE", "/a.txt", &never, "").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_races_have_one_winner() {
    let server = Arc::new(TestServer::with_config(&team_config("")).await);
    let mut etag = server.put_as("alice", "/race.txt", "start").await.header("etag").to_owned();
    for round in 0..20 {
        let mut tasks = Vec::new();
        for racer in 0..4 {
            let (server, etag) = (server.clone(), etag.clone());
            tasks.push(tokio::spawn(async move {
                let auth = basic("alice");
                let body = format!("round {round} racer {racer}");
                let reply = server
                    .send(
                        "PUT",
                        "/race.txt",
                        &[("authorization", &auth), ("if-match", &etag)],
                        body,
                    )
                    .await;
                (reply.status, reply.header("etag").to_owned())
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (status, new_etag) = task.await.unwrap();
            match status {
                200 => winners.push(new_etag),
                412 => {}
                other => panic!("round {round}: {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {} winners", winners.len());
        etag = winners.pop().unwrap();
        assert_eq!(server.get("/race.txt", &[]).await.header("etag"), etag);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_range_case() {
    let server = TestServer::open().await;
    let body: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    server.place("r.bin", &body);
    let get = |range: &'static str| {
        let server = &server;
        async move { server.get("/r.bin", &[("range", range)]).await }
    };
    for (range, first, last) in [
        ("bytes=0-99", 0, 99),
        ("bytes=900-", 900, 999),
        ("bytes=-100", 900, 999),
        ("bytes=990-5000", 990, 999),
        ("bytes=-5000", 0, 999),
        ("BYTES = 5-5", 5, 5),
    ] {
        let reply = get(range).await;
        assert_eq!(reply.status, 206, "{range}");
        assert_eq!(reply.header("content-range"), format!("bytes {first}-{last}/1000"), "{range}");
        assert_eq!(&reply.body[..], &body[first..=last], "{range}");
        assert_eq!(reply.header("content-length"), (last - first + 1).to_string());
    }
    for invalid in ["bytes=5-1", "bytes=a-b", "pages=1-2", "bytes=1-2-3", "bytes="] {
        let reply = get(invalid).await;
        assert_eq!((reply.status, reply.body.len()), (200, 1000), "{invalid} is ignored");
    }
    for unsatisfiable in ["bytes=1000-", "bytes=2000-3000", "bytes=-0"] {
        let reply = get(unsatisfiable).await;
        reply.assert_problem(416, "range-not-satisfiable");
        assert_eq!(reply.header("content-range"), "bytes */1000");
    }
    // Adjacent and overlapping ranges are coalesced: 40 adjacent bytes are one part.
    let adjacent =
        format!("bytes={}", (0..40).map(|i| format!("{i}-{i}")).collect::<Vec<_>>().join(","));
    let adjacent: &'static str = Box::leak(adjacent.into_boxed_str());
    let reply = get(adjacent).await;
    assert_eq!((reply.status, reply.header("content-range")), (206, "bytes 0-39/1000"));
    assert_eq!(&reply.body[..], &body[..40]);
    // More than 16 parts, or more bytes than the whole: the whole, once (RFC 9110 §14.2).
    let spread = format!(
        "bytes={}",
        (0..17).map(|i| format!("{0}-{0}", i * 10)).collect::<Vec<_>>().join(",")
    );
    let spread: &'static str = Box::leak(spread.into_boxed_str());
    for abusive in [spread, "bytes=0-,0-", "bytes=0-600,400-999"] {
        let reply = get(abusive).await;
        assert_eq!((reply.status, reply.body.len()), (200, 1000), "{abusive}");
    }
    assert_eq!(
        server.send("HEAD", "/r.bin", &[("range", "bytes=0-9")], "").await.status,
        200,
        "HEAD ignores Range"
    );

    // Several ranges: multipart/byteranges, parsed back and compared byte for byte.
    let reply = get("bytes=0-9,500-509,-10").await;
    assert_eq!(reply.status, 206);
    assert!(reply.headers.get("content-range").is_none(), "no top-level Content-Range");
    let boundary = reply
        .header("content-type")
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap()
        .to_owned();
    let parts = parse_multipart(&reply.body, &boundary);
    let want = [(0, 9), (500, 509), (990, 999)];
    assert_eq!(parts.len(), want.len());
    for ((headers, data), (first, last)) in parts.iter().zip(want) {
        assert!(
            headers.contains(&format!("Content-Range: bytes {first}-{last}/1000")),
            "{headers}"
        );
        assert!(headers.contains("Content-Type: application/octet-stream"), "{headers}");
        assert_eq!(&data[..], &body[first..=last]);
    }
    assert_eq!(reply.header("content-length"), reply.body.len().to_string());
}

/// Splits a multipart body into (part headers, part data).
fn parse_multipart(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let delimiter = format!("\r\n--{boundary}");
    let text = body;
    let mut positions = Vec::new();
    let mut at = 0;
    while let Some(found) =
        text[at..].windows(delimiter.len()).position(|w| w == delimiter.as_bytes())
    {
        positions.push(at + found);
        at += found + delimiter.len();
    }
    let mut parts = Vec::new();
    for pair in positions.windows(2) {
        let part = &text[pair[0] + delimiter.len() + 2..pair[1]];
        let split = part.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        parts.push((
            String::from_utf8_lossy(&part[..split]).into_owned(),
            part[split + 4..].to_vec(),
        ));
    }
    assert!(
        text[*positions.last().unwrap()..].starts_with(format!("{delimiter}--\r\n").as_bytes())
    );
    parts
}

/// Sends a PUT head with `Expect: 100-continue` and returns the first status line received
/// (before any body byte is sent).
async fn expect_continue(server: &TestServer, target: &str, extra: &str, length: usize) -> String {
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "PUT {target} HTTP/1.1\r\nHost: a\r\n{extra}Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n =
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_at_once_by_every_check() {
    let config = format!(
        "{}\n[[rule]]\npath = \"/vault\"\nread = [\"alice\"]\nwrite = [\"alice\"]\nhidden = true\n",
        team_config("max_upload = \"1 KiB\"")
    );
    let server = TestServer::with_config(&config).await;
    let etag = server.put_as("alice", "/doc.txt", "v1").await.header("etag").to_owned();
    let (alice, bob) = (
        format!("Authorization: {}\r\n", basic("alice")),
        format!("Authorization: {}\r\n", basic("bob")),
    );
    let cases = [
        ("/doc.txt", String::new(), 10, "401"),
        ("/private/p.txt", bob.clone(), 10, "403"),
        ("/vault/v.txt", bob.clone(), 10, "404"),
        ("/doc.txt", alice.clone(), 5000, "413"),
        ("/doc.txt", format!("{alice}If-Match: \"stale\"\r\n"), 10, "412"),
        ("/doc.txt", format!("{alice}If-None-Match: *\r\n"), 10, "412"),
    ];
    for (target, extra, length, status) in cases {
        let line = expect_continue(&server, target, &extra, length).await;
        assert!(line.starts_with(&format!("HTTP/1.1 {status}")), "{target} {status}: got {line}");
    }
    // And when everything passes, 100 comes first.
    let line =
        expect_continue(&server, "/doc.txt", &format!("{alice}If-Match: {etag}\r\n"), 10).await;
    assert_eq!(line, "HTTP/1.1 100 Continue");
    // 405 needs a method the resource refuses: POST to a file.
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /doc.txt HTTP/1.1\r\nHost: a\r\n{alice}Content-Length: 10\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 12];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 405");
    assert_eq!(std::fs::read(server.file("doc.txt")).unwrap(), b"v1");
}
