//! Bad input answers 400/404/409 with a problem document, never 500; nothing resolves
//! outside ROOT.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_are_400() {
    let server = TestServer::with_config(&team_config("")).await;
    let long = format!("/{}", "n".repeat(300));
    let targets = [
        "/%2e%2e/etc/passwd",
        "/%2E%2e/x",
        "/a/%2e%2e/%2e%2e/x",
        "/a%2fb",
        "/a%2Fb",
        "/a%00b",
        "/a%0d%0ab",
        "/%ff%fe",
        "/a%zz",
        "/a%4",
        "/a//b",
        long.as_str(),
    ];
    for target in targets {
        for method in ["GET", "PUT", "DELETE"] {
            let reply =
                server.send(method, target, &[("authorization", &basic("alice"))], "x").await;
            reply.assert_problem(400, "invalid-path");
        }
    }
    // Dot segments must be sent raw: clients normalise them away.
    for raw in ["GET /../etc/passwd HTTP/1.1", "GET /a/./b HTTP/1.1", "GET /a/.. HTTP/1.1"] {
        let reply =
            server.raw(format!("{raw}\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{raw}: {reply}");
        assert!(reply.contains("invalid-path"), "{raw}: {reply}");
    }
    // Invalid UTF-8 sent as raw bytes, not percent-encoded.
    let reply = server.raw(b"GET /caf\xe9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn very_long_targets_are_refused_not_failed() {
    let server = TestServer::open().await;
    let path: String = (0..500).map(|_| "/abcdefghij").collect();
    let reply = server.get(&path, &[]).await;
    assert!(matches!(reply.status, 400 | 414), "{}", reply.status);
    let huge = format!("/{}", "x".repeat(100_000));
    let raw = server
        .raw(format!("GET {huge} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await;
    assert!(raw.starts_with("HTTP/1.1 4"), "{}", &raw[..raw.len().min(80)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_and_odd_names_round_trip() {
    let server = TestServer::with_config(&team_config("")).await;
    for (target, disk) in [
        ("/caf%C3%A9.txt", "café.txt"),
        ("/with%20space.txt", "with space.txt"),
        ("/%3Cb%3E.html", "<b>.html"),
        ("/q%3Fmark", "q?mark"),
    ] {
        assert_eq!(server.put_as("alice", target, "x").await.status, 201, "{target}");
        assert!(server.file(disk).is_file(), "{disk}");
        assert_eq!(server.get(target, &[]).await.status, 200, "{target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_never_leave_root() {
    let server = TestServer::with_config(&team_config("")).await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), b"outside").unwrap();
    std::fs::create_dir_all(&server.root).unwrap();
    std::os::unix::fs::symlink(outside.path(), server.file("escape")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), server.file("leak.txt")).unwrap();
    server.place("inside.txt", b"inside");
    std::os::unix::fs::symlink(server.file("inside.txt"), server.file("alias.txt")).unwrap();

    server.get("/escape/secret.txt", &[]).await.assert_problem(404, "not-found");
    server.get("/leak.txt", &[]).await.assert_problem(404, "not-found");
    server.get("/escape/", &[]).await.assert_problem(404, "not-found");
    server.put_as("alice", "/escape/planted.txt", "x").await.assert_problem(404, "not-found");
    assert!(!outside.path().join("planted.txt").exists());
    assert_eq!(server.get("/", &[]).await.entry_names(), ["alias.txt", "inside.txt"]);
    // A link that stays inside ROOT is followed.
    assert_eq!(&server.get("/alias.txt", &[]).await.body[..], b"inside");
    // Deleting a link removes the link, not its target.
    let auth = basic("alice");
    assert_eq!(
        server.send("DELETE", "/alias.txt", &[("authorization", &auth)], "").await.status,
        204
    );
    assert!(server.file("inside.txt").is_file());
    // A link to a folder inside ROOT, in the middle of a path, is followed both ways.
    server.place("shelf/jar.txt", b"jam");
    std::os::unix::fs::symlink(server.file("shelf"), server.file("pantry")).unwrap();
    assert_eq!(&server.get("/pantry/jar.txt", &[]).await.body[..], b"jam");
    assert_eq!(server.put_as("alice", "/pantry/pot.txt", "honey").await.status, 201);
    assert_eq!(std::fs::read(server.file("shelf/pot.txt")).unwrap(), b"honey");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_repeated_host_is_400() {
    let server = TestServer::open().await;
    let none = server.raw(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(none.starts_with("HTTP/1.1 400"), "{none}");
    let two =
        server.raw(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n").await;
    assert!(two.starts_with("HTTP/1.1 400"), "{two}");
    let ok = server.raw(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}
