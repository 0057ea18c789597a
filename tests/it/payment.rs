//! Plans, credits and 402 over TCP: quotas, priced resources, purchases, the order of
//! checks, 100-continue, and races for the last credits and the last bytes of a quota.

use std::time::Duration;

use larder::state::State;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// alice: 1 KiB of storage and 10 credits; bob: 100 credits; seller sells in /shop.
pub fn shop_config() -> String {
    let hash = password_hash();
    format!(
        r#"
[[account]]
name = "alice"
password = "{hash}"
plan = "small"
[[account]]
name = "bob"
password = "{hash}"
plan = "rich"
[[account]]
name = "seller"
password = "{hash}"
[[account]]
name = "root"
password = "{hash}"
admin = true
[plan.small]
storage = "1 KiB"
credits = 10
[plan.rich]
storage = "10 MiB"
credits = 100
[[rule]]
path = "/"
read = ["*"]
write = ["@authenticated"]
[[rule]]
path = "/shop"
read = ["@authenticated"]
write = ["seller"]
price = 5
[[rule]]
path = "/kiosk"
read = ["*"]
write = ["seller"]
price = 3
[[rule]]
path = "/luxury"
read = ["@authenticated"]
write = ["seller"]
price = 50
[[rule]]
path = "/club"
read = ["alice"]
write = ["seller"]
price = 5
[[rule]]
path = "/backroom"
read = ["alice"]
write = ["seller"]
price = 5
hidden = true
"#
    )
}

async fn shop() -> TestServer {
    let server = TestServer::with_config(&shop_config()).await;
    for path in [
        "/shop/book.pdf",
        "/kiosk/paper.txt",
        "/luxury/watch.txt",
        "/club/x.txt",
        "/backroom/y.txt",
    ] {
        let put = server.put_as("seller", path, "0123456789 the goods").await;
        assert_eq!(put.status, 201, "{path}");
    }
    server
}

async fn buy(server: &TestServer, account: &str, path: &str) -> Reply {
    let auth = basic(account);
    let body = json!({ "path": path }).to_string();
    server
        .send(
            "POST",
            "/.larder/purchases",
            &[("authorization", &auth), ("content-type", "application/json")],
            body,
        )
        .await
}

async fn balance(server: &TestServer, account: &str) -> u64 {
    let reply = server.get("/.larder/account", &[("authorization", &basic(account))]).await;
    reply.json()["balance"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_reads_are_402_payment_required() {
    let server = shop().await;
    let bob = basic("bob");
    for method in ["GET", "HEAD"] {
        let reply = server.send(method, "/shop/book.pdf", &[("authorization", &bob)], "").await;
        assert_eq!(reply.status, 402, "{method}");
        assert_eq!(reply.header("larder-price"), "5");
        assert_eq!(reply.header("cache-control"), "no-store");
        if method == "GET" {
            reply.assert_problem(402, "payment-required");
            let doc = reply.json();
            assert_eq!(doc["price"], 5);
            assert_eq!(doc["balance"], 100);
            assert_eq!(doc["currency"], "credits");
            assert_eq!(doc["purchase"], "/.larder/purchases");
        } else {
            assert!(reply.body.is_empty());
        }
    }
    // Listings are free and say the price.
    let listing = server.list("/shop/", &[("authorization", &bob)]).await.json();
    assert_eq!(listing["entries"][0]["price"], 5);
    // Owners, writers and admins read free.
    for free in ["seller", "root"] {
        let reply = server.get("/shop/book.pdf", &[("authorization", &basic(free))]).await;
        assert_eq!(reply.status, 200, "{free}");
    }
    assert_eq!(balance(&server, "bob").await, 100, "nothing was charged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_of_checks_401_then_403_404_then_402() {
    let server = shop().await;
    // Anonymous: 401 first, even where anyone may read.
    server.get("/kiosk/paper.txt", &[]).await.assert_problem(401, "unauthenticated");
    server.get("/shop/book.pdf", &[]).await.assert_problem(401, "unauthenticated");
    let bob = basic("bob");
    let as_bob = [("authorization", bob.as_str())];
    // Not allowed: 403, or 404 where hidden, never 402.
    server.get("/club/x.txt", &as_bob).await.assert_problem(403, "forbidden");
    server.get("/backroom/y.txt", &as_bob).await.assert_problem(404, "not-found");
    server.get("/shop/missing.pdf", &as_bob).await.assert_problem(404, "not-found");
    // Allowed and unpaid: 402, before preconditions.
    let etag = server.get("/shop/book.pdf", &[("authorization", &basic("seller"))]).await;
    let etag = etag.header("etag").to_owned();
    let conditional = [as_bob[0], ("if-none-match", etag.as_str())];
    server.get("/shop/book.pdf", &conditional).await.assert_problem(402, "payment-required");
    let alice = basic("alice");
    let club = server.get("/club/x.txt", &[("authorization", &alice)]).await;
    club.assert_problem(402, "payment-required");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buying_once_then_reading_freely() {
    let server = shop().await;
    let first = buy(&server, "bob", "/shop/book.pdf").await;
    assert_eq!(first.status, 201, "{}", first.text());
    let doc = first.json();
    assert_eq!(
        (doc["path"].as_str(), doc["price"].as_u64(), doc["balance"].as_u64()),
        (Some("/shop/book.pdf"), Some(5), Some(95))
    );
    assert_eq!(
        first.header("location"),
        format!("/.larder/purchases/{}", doc["id"].as_str().unwrap())
    );
    let again = buy(&server, "bob", "/shop/book.pdf").await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["id"], doc["id"]);
    assert_eq!(again.json()["balance"], 95, "no second charge");

    let bob = basic("bob");
    let got = server.get("/shop/book.pdf", &[("authorization", &bob)]).await;
    assert_eq!((got.status, &got.body[..]), (200, &b"0123456789 the goods"[..]));
    let part =
        server.get("/shop/book.pdf", &[("authorization", &bob), ("range", "bytes=0-3")]).await;
    assert_eq!((part.status, &part.body[..]), (206, &b"0123"[..]));
    let listed = server.get("/.larder/purchases", &[("authorization", &bob)]).await.json();
    assert_eq!(listed["purchases"][0]["path"], "/shop/book.pdf");
    assert_eq!(balance(&server, "bob").await, 95);

    buy(&server, "bob", "/free.txt").await.assert_problem(404, "not-found");
    server.put_as("bob", "/free.txt", "free").await;
    buy(&server, "bob", "/free.txt").await.assert_problem(409, "conflict");
    buy(&server, "bob", "/club/x.txt").await.assert_problem(403, "forbidden");
    let anonymous = server
        .send(
            "POST",
            "/.larder/purchases",
            &[("content-type", "application/json")],
            r#"{"path":"/shop/book.pdf"}"#,
        )
        .await;
    anonymous.assert_problem(401, "unauthenticated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_credits_and_one_step_purchases() {
    let server = shop().await;
    let refused = buy(&server, "alice", "/luxury/watch.txt").await;
    refused.assert_problem(402, "insufficient-credits");
    let doc = refused.json();
    assert_eq!(
        (doc["price"].as_u64(), doc["balance"].as_u64(), doc["currency"].as_str()),
        (Some(50), Some(10), Some("credits"))
    );

    let alice = basic("alice");
    let max = |n: &'static str| [("authorization", alice.as_str()), ("larder-max-price", n)];
    let one_step = server.get("/luxury/watch.txt", &max("100")).await;
    one_step.assert_problem(402, "insufficient-credits");
    server.get("/shop/book.pdf", &max("4")).await.assert_problem(402, "payment-required");
    server.get("/shop/book.pdf", &max("lots")).await.assert_problem(400, "bad-request");
    // A request that fails for any reason is never charged.
    let range = [max("5")[0], max("5")[1], ("range", "bytes=1000-")];
    server.get("/shop/book.pdf", &range).await.assert_problem(416, "range-not-satisfiable");
    assert_eq!(balance(&server, "alice").await, 10);
    let head = server.send("HEAD", "/shop/book.pdf", &max("5"), "").await;
    assert_eq!(head.status, 402, "HEAD never buys");

    let bought = server.get("/shop/book.pdf", &max("5")).await;
    assert_eq!((bought.status, &bought.body[..]), (200, &b"0123456789 the goods"[..]));
    assert_eq!(bought.header("larder-charged"), "5");
    let again = server.get("/shop/book.pdf", &max("5")).await;
    assert_eq!((again.status, again.header("larder-charged")), (200, ""));
    assert_eq!(balance(&server, "alice").await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_top_up_credits() {
    let server = shop().await;
    let top_up = |who: &str, account: &str, body: &str| {
        let auth = basic(who);
        let target = format!("/.larder/accounts/{account}/credits");
        let body = body.to_owned();
        let server = &server;
        async move {
            server
                .send(
                    "POST",
                    &target,
                    &[("authorization", &auth), ("content-type", "application/json")],
                    body,
                )
                .await
        }
    };
    balance(&server, "alice").await; // first sign-in: 10 credits
    let reply = top_up("root", "alice", r#"{"amount": 50}"#).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["balance"], 60);
    top_up("bob", "alice", r#"{"amount": 50}"#).await.assert_problem(403, "forbidden");
    top_up("root", "nobody", r#"{"amount": 5}"#).await.assert_problem(404, "not-found");
    top_up("root", "alice", r#"{"amount": -61}"#).await.assert_problem(409, "conflict");
    top_up("root", "alice", r#"{"amont": 1}"#).await.assert_problem(400, "bad-request");
    assert_eq!(top_up("root", "alice", r#"{"amount": -60}"#).await.json()["balance"], 0);
    let account =
        server.get("/.larder/account", &[("authorization", &basic("alice"))]).await.json();
    assert_eq!(account["plan"], "small");
    assert_eq!(account["storage"], json!({"used": 0, "quota": 1024}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_quota_is_402_before_anything_is_stored() {
    let server = shop().await;
    assert_eq!(server.put_as("alice", "/a.bin", vec![b'a'; 600]).await.status, 201);
    let over = server.put_as("alice", "/b.bin", vec![b'b'; 600]).await;
    over.assert_problem(402, "quota-exceeded");
    let doc = over.json();
    assert_eq!(
        (doc["used"].as_u64(), doc["quota"].as_u64(), doc["needed"].as_u64(), doc["plan"].as_str()),
        (Some(600), Some(1024), Some(600), Some("small"))
    );
    assert!(!server.file("b.bin").exists());
    // Replacing counts the difference: 600 → 1024 fits.
    assert_eq!(server.put_as("alice", "/a.bin", vec![b'A'; 1024]).await.status, 200);
    server.put_as("alice", "/a.bin", vec![b'A'; 1025]).await.assert_problem(402, "quota-exceeded");
    assert_eq!(std::fs::read(server.file("a.bin")).unwrap().len(), 1024);
    // Another writer replacing alice's file counts against alice.
    server.put_as("bob", "/a.bin", vec![b'B'; 2000]).await.assert_problem(402, "quota-exceeded");
    // POST counts too.
    let auth = basic("alice");
    let post = server.send("POST", "/", &[("authorization", &auth)], vec![b'p'; 10]).await;
    post.assert_problem(402, "quota-exceeded");

    // Chunked: no Content-Length, stopped while streaming, nothing left behind.
    assert_eq!(server.send("DELETE", "/a.bin", &[("authorization", &auth)], "").await.status, 204);
    let reply = server.raw(&chunked_put("/chunked.bin", &auth, 3)).await;
    assert!(reply.starts_with("HTTP/1.1 402"), "{reply}");
    assert!(reply.contains("quota-exceeded"), "{reply}");
    assert!(!server.file("chunked.bin").exists());
    assert!(temp_files(&server.root).is_empty());
    let account = server.get("/.larder/account", &[("authorization", &auth)]).await.json();
    assert_eq!(account["storage"]["used"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_402_without_sending_the_body() {
    let server = shop().await;
    let auth = basic("alice");
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "PUT /big.bin HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Read the answer without sending a byte of the body.
    let mut buf = vec![0u8; 8192];
    let n =
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 402"), "no 100 Continue first: {answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    assert!(answer.contains("quota-exceeded"), "{answer}");
    // The connection is then either still usable or closed cleanly (no reset).
    let next = stream
        .write_all(b"GET /.larder/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut rest = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await.unwrap();
    match (next, read) {
        (Ok(()), Ok(_)) => {
            let rest = String::from_utf8_lossy(&rest);
            assert!(rest.is_empty() || rest.starts_with("HTTP/1.1 200"), "{rest}");
        }
        (write, read) => panic!("connection reset: write {write:?}, read {read:?}"),
    }
    assert!(!server.file("big.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_buyers_twenty_credits_worth() {
    let server = TestServer::with_config(&shop_config()).await;
    for i in 0..50 {
        assert_eq!(
            server
                .put_as("seller", &format!("/shop/item{i}.txt"), format!("item {i}"))
                .await
                .status,
            201
        );
    }
    balance(&server, "bob").await; // first sign-in: 100 credits, 20 items' worth
    let server = std::sync::Arc::new(server);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let path = format!("/shop/item{i}.txt");
            if i % 2 == 0 {
                buy(&server, "bob", &path).await.status
            } else {
                let auth = basic("bob");
                server
                    .get(&path, &[("authorization", &auth), ("larder-max-price", "5")])
                    .await
                    .status
            }
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    let won = statuses.iter().filter(|s| matches!(s, 200 | 201)).count();
    let refused = statuses.iter().filter(|s| **s == 402).count();
    assert_eq!((won, refused), (20, 30), "{statuses:?}");
    assert_eq!(balance(&server, "bob").await, 0);
    let state = State::open(&server.state_dir()).unwrap();
    let ledger = state.ledger("bob").unwrap();
    assert_eq!(ledger.iter().map(|e| e.amount).sum::<i64>(), 0);
    assert_eq!(ledger.iter().filter(|e| e.kind == "purchase").count(), 20);
    assert_eq!(state.purchases_of("bob").unwrap().len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_uploads_never_overshoot_the_quota() {
    let server = std::sync::Arc::new(shop().await);
    let auth = basic("alice");
    for round in 0..10 {
        // 400 bytes used; two 600-byte uploads race for the last 624.
        assert_eq!(server.put_as("alice", "/base.bin", vec![b'x'; 400]).await.status, 201);
        let mut tasks = Vec::new();
        for racer in 0..2 {
            let server = server.clone();
            tasks.push(tokio::spawn(async move {
                server
                    .put_as("alice", &format!("/r{round}-{racer}.bin"), vec![b'r'; 600])
                    .await
                    .status
            }));
        }
        let mut statuses = Vec::new();
        for task in tasks {
            statuses.push(task.await.unwrap());
        }
        statuses.sort();
        assert_eq!(statuses, [201, 402], "round {round}");
        let used = server.get("/.larder/account", &[("authorization", &auth)]).await.json()["storage"]["used"]
            .as_u64()
            .unwrap();
        assert_eq!(used, 1000, "round {round}");
        let on_disk: u64 = std::fs::read_dir(&server.root)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert!(on_disk <= 1024, "round {round}: {on_disk} bytes on disk");
        for racer in 0..2 {
            server
                .send("DELETE", &format!("/r{round}-{racer}.bin"), &[("authorization", &auth)], "")
                .await;
        }
        server.send("DELETE", "/base.bin", &[("authorization", &auth)], "").await;
    }
}
