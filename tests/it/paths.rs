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
async fn symlinks_are_not_followed() {
    let server = TestServer::with_config(&team_config("")).await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), b"outside").unwrap();
    std::fs::create_dir_all(&server.root).unwrap();
    std::os::unix::fs::symlink(outside.path(), server.file("escape")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), server.file("leak.txt")).unwrap();
    server.place("inside.txt", b"inside");
    std::os::unix::fs::symlink(server.file("inside.txt"), server.file("alias.txt")).unwrap();
    server.place("shelf/jar.txt", b"jam");
    std::os::unix::fs::symlink(server.file("shelf"), server.file("pantry")).unwrap();
    let alice = basic("alice");

    // Links out of ROOT, and links inside it (SPEC §3: not followed unless configured),
    // answer as missing to every method, and are not listed.
    for target in ["/escape/secret.txt", "/leak.txt", "/escape/", "/alias.txt", "/pantry/jar.txt"] {
        server.get(target, &[]).await.assert_problem(404, "not-found");
        let deleted = server.send("DELETE", target, &[("authorization", &alice)], "").await;
        deleted.assert_problem(404, "not-found");
    }
    for target in ["/escape/planted.txt", "/pantry/pot.txt", "/escape/deep/er/planted.txt"] {
        server.put_as("alice", target, "x").await.assert_problem(404, "not-found");
    }
    assert!(!outside.path().join("planted.txt").exists());
    assert!(!outside.path().join("deep").exists());
    assert!(!server.file("shelf/pot.txt").exists());
    assert_eq!(server.list("/", &[]).await.entry_names(), ["inside.txt", "shelf"]);
    // Nothing a link points to was touched; the links are still there.
    assert_eq!(std::fs::read(server.file("inside.txt")).unwrap(), b"inside");
    assert_eq!(std::fs::read(outside.path().join("secret.txt")).unwrap(), b"outside");
    assert!(server.file("alias.txt").symlink_metadata().is_ok());
    // A PUT at a link's own name makes a file there: the link is replaced, not followed.
    assert_eq!(server.put_as("alice", "/leak.txt", "mine").await.status, 201);
    assert_eq!(std::fs::read(outside.path().join("secret.txt")).unwrap(), b"outside");
    assert_eq!(&server.get("/leak.txt", &[]).await.body[..], b"mine");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followed_symlinks_stay_inside_and_pass_the_rules_of_both_paths() {
    let config = format!("{}\n{HOMES}", team_config("follow_symlinks = true"));
    let server = TestServer::with_config(&config).await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), b"outside").unwrap();
    server.place("inside.txt", b"inside");
    server.place("shelf/jar.txt", b"jam");
    server.place("pub/readme.txt", b"r");
    assert_eq!(server.put_as("alice", "/home/alice/diary.txt", "dear diary").await.status, 201);
    let link = |target: &str, name: &str| std::os::unix::fs::symlink(target, server.file(name));
    link("inside.txt", "alias.txt").unwrap();
    link("shelf", "pantry").unwrap();
    link("../home/alice", "pub/alice").unwrap();
    link("..", "up").unwrap();
    link(outside.path().to_str().unwrap(), "escape").unwrap();
    link(server.file("inside.txt").to_str().unwrap(), "absolute.txt").unwrap();
    let alice = basic("alice");

    // Relative links that stay inside ROOT are followed, for reads and writes.
    assert_eq!(&server.get("/alias.txt", &[]).await.body[..], b"inside");
    assert_eq!(&server.get("/pantry/jar.txt", &[]).await.body[..], b"jam");
    assert_eq!(server.put_as("alice", "/pantry/pot.txt", "honey").await.status, 201);
    assert_eq!(std::fs::read(server.file("shelf/pot.txt")).unwrap(), b"honey");
    // Out of ROOT, or absolute: missing. Nothing outside is read or written.
    // `up` leads to ROOT's parent, where the test's configuration file lies.
    for target in ["/escape/secret.txt", "/up/larder.toml", "/absolute.txt"] {
        server.get(target, &[]).await.assert_problem(404, "not-found");
    }
    server.put_as("alice", "/escape/planted.txt", "x").await.assert_problem(404, "not-found");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
    // A link into alice's hidden home: the home's rule applies, as at its own path.
    let missing = server.get("/pub/alice/nothing.txt", &[]).await;
    let hidden = server.get("/pub/alice/diary.txt", &[]).await;
    assert_eq!(
        (hidden.status, hidden.stable_headers()),
        (missing.status, missing.stable_headers())
    );
    hidden.assert_problem(404, "not-found");
    let bob = basic("bob");
    server
        .get("/pub/alice/diary.txt", &[("authorization", &bob)])
        .await
        .assert_problem(404, "not-found");
    let own = server.get("/pub/alice/diary.txt", &[("authorization", &alice)]).await;
    assert_eq!((own.status, &own.body[..]), (200, &b"dear diary"[..]));
    // Links are followed by URL, not listed.
    assert_eq!(server.list("/", &[]).await.entry_names(), ["home", "inside.txt", "pub", "shelf"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifos_and_sockets_are_not_resources() {
    let server = TestServer::open().await;
    server.place("plain.txt", b"p");
    let fifo = server.file("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let _socket = std::os::unix::net::UnixListener::bind(server.file("socket")).unwrap();
    // Answered at once as missing (a FIFO opened for reading would wait for a writer), and
    // never listed.
    for target in ["/pipe", "/socket"] {
        let reply =
            tokio::time::timeout(std::time::Duration::from_secs(5), server.get(target, &[]))
                .await
                .expect("answered");
        reply.assert_problem(404, "not-found");
    }
    assert_eq!(server.list("/", &[]).await.entry_names(), ["plain.txt"]);
}
