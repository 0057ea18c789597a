//! The wire, as bytes on a socket: one case per framing rule of RFC 9112 (status and
//! connection state out), pipelining, slow clients and the connection cap.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::framing::{AUTH, refused};
use crate::harness::*;

/// Writes `bytes` and reads until the server closes; `None` if it has not closed within 5 s.
async fn until_closed(stream: &mut TcpStream, bytes: &[u8]) -> Option<String> {
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await {
        Ok(Ok(_)) => Some(String::from_utf8_lossy(&out).into_owned()),
        Ok(Err(e)) => Some(format!("<error {e}> {}", String::from_utf8_lossy(&out))),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_faults_are_refused_and_close_the_connection() {
    let server = TestServer::with_config(&team_config("")).await;
    for (name, bytes, status) in refused() {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let reply = until_closed(&mut stream, &bytes).await;
        let reply = reply.unwrap_or_else(|| panic!("{name}: the connection stayed open"));
        assert!(reply.starts_with(&format!("HTTP/1.1 {status}")), "{name}: {reply}");
        assert!(!server.file("x").exists(), "{name}: something was stored");
    }
    // And the server goes on serving.
    assert_eq!(server.get("/.larder/health", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_level_faults_answer_with_problem_documents() {
    let server = TestServer::open().await;
    let long =
        format!("GET /{} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "a/".repeat(3000));
    let reply = server.raw(long.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 414"), "{}", &reply[..reply.len().min(200)]);
    assert!(reply.contains("uri-too-long"));
    let expect = server
        .raw(b"GET / HTTP/1.1\r\nHost: a\r\nExpect: fireworks\r\nConnection: close\r\n\r\n")
        .await;
    assert!(expect.starts_with("HTTP/1.1 417"), "{expect}");
    assert!(expect.contains("expectation-failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_formed_edges_are_served() {
    let server = TestServer::open().await;
    server.place("a.txt", b"A");
    let cases: [(&str, &[u8], &str); 4] = [
        ("empty line before the request", b"\r\nGET /a.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "200"),
        ("absolute form ignores Host", b"GET http://elsewhere/a.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "200"),
        ("HTTP/1.0 without Host", b"GET /a.txt HTTP/1.0\r\n\r\n", "200"),
        ("chunk extensions ignored", b"GET /a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1;ext=\"v\"\r\nz\r\n0\r\n\r\n", "200"),
    ];
    for (name, bytes, status) in cases {
        let reply = server.raw(bytes).await;
        assert_eq!(reply.get(9..12), Some(status), "{name}: {reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::with_config(&team_config("")).await;
    server.place("one.txt", b"first");
    server.place("two.txt", b"second");
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let bytes = format!(
        "GET /one.txt HTTP/1.1\r\nHost: a\r\n\r\n\
         PUT /three.txt HTTP/1.1\r\nHost: a\r\n{AUTH}Content-Length: 5\r\n\r\nthird\
         GET /two.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz\
         GET /three.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    );
    let reply = until_closed(&mut stream, bytes.as_bytes()).await.unwrap();
    let statuses: Vec<&str> =
        reply.match_indices("HTTP/1.1 ").map(|(i, _)| &reply[i + 9..i + 12]).collect();
    assert_eq!(statuses, ["200", "201", "200", "200"], "{reply}");
    let first = reply.find("first").unwrap();
    let second = reply.find("second").unwrap();
    let third = reply.rfind("third").unwrap();
    assert!(first < second && second < third, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_dropped_without_holding_up_others() {
    let server = TestServer::with_config("header_timeout = \"1s\"").await;
    server.place("a.txt", b"A");
    let started = Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /a.txt HTTP/1.1\r\nHost:").await.unwrap();
    // Others are served meanwhile.
    for _ in 0..5 {
        assert_eq!(server.get("/a.txt", &[]).await.status, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(1), "served while the slow ones wait");
    for (name, stream) in [("silent", &mut silent), ("slow loris", &mut slow)] {
        let reply = until_closed(stream, b"").await;
        assert!(reply.is_some(), "{name} connection was never dropped");
    }
    assert!(started.elapsed() >= Duration::from_secs(1), "not before the timeout");
    // An idle keep-alive connection is dropped too.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let reply = until_closed(&mut idle, b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_get_503() {
    let server = TestServer::with_config("max_connections = 2").await;
    server.place("a.txt", b"A");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 12];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(stream);
    }
    let reply = server.raw(b"GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("retry-after: 1"), "{reply}");
    drop(held);
    // Once they are gone, new connections are served again (the count drops as each closes).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if server
            .raw(b"GET /a.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the cap never freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
