//! A hostile tenant, over TCP: bob, signed in, tries every path a request can touch to reach
//! what the rules keep from him (other homes, hidden folders, names he may not create), and
//! to learn what exists there. Each test asserts what a user would notice: alice's bytes
//! survive, and bob's answers do not depend on what is hidden from him.

use crate::harness::*;
use crate::tokens::new_token;

/// SPEC §2's rules: homes hidden from everyone but their account, `/secret` hidden from all
/// but alice, `/pub` read-only with an open drop folder beneath it.
pub fn config(extra: &str) -> String {
    format!(
        r#"{}{HOMES}
[[rule]]
path = "/secret"
read = ["alice"]
write = ["alice"]
hidden = true
[[rule]]
path = "/pub"
read = ["*"]
[[rule]]
path = "/pub/drop"
read = ["*"]
create = ["@authenticated"]
"#,
        team_config(extra)
    )
}

/// A multipart form with one file part named `name`.
fn form(name: &str, bytes: &str) -> (String, String) {
    let boundary = "XyZ-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: text/plain\r\n\r\n{bytes}\r\n--{boundary}--\r\n"
    );
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recursive_delete_never_takes_or_tells_of_hidden_homes() {
    let server = TestServer::with_config(&config("")).await;
    let (alice, bob) = (basic("alice"), basic("bob"));
    assert_eq!(server.put_as("bob", "/home/bob/mine.txt", "bob's").await.status, 201);
    // What bob gets before alice has a home...
    let before = [
        server.send("DELETE", "/home/", &[("authorization", &bob)], "").await,
        server
            .send("DELETE", "/home/", &[("authorization", &bob), ("depth", "infinity")], "")
            .await,
    ];
    assert_eq!(server.put_as("alice", "/home/alice/diary.txt", "dear diary").await.status, 201);
    // ...and after: the same, refused from the rules alone.
    let after = [
        server.send("DELETE", "/home/", &[("authorization", &bob)], "").await,
        server
            .send("DELETE", "/home/", &[("authorization", &bob), ("depth", "infinity")], "")
            .await,
    ];
    for (b, a) in before.iter().zip(&after) {
        b.assert_problem(403, "forbidden");
        assert_eq!(seen(b), seen(a));
    }
    // Anonymous: 401, the same way.
    let anonymous = server.send("DELETE", "/home/", &[("depth", "infinity")], "").await;
    anonymous.assert_problem(401, "unauthenticated");
    // Alice's diary and bob's own file are still there, and alice reads hers.
    let diary = server.get("/home/alice/diary.txt", &[("authorization", &alice)]).await;
    assert_eq!((diary.status, &diary.body[..]), (200, &b"dear diary"[..]));
    assert!(server.file("home/bob/mine.txt").is_file());
    // Bob still removes his own home, whole; an admin removes /home.
    let own = server
        .send("DELETE", "/home/bob/", &[("authorization", &bob), ("depth", "infinity")], "")
        .await;
    assert_eq!(own.status, 204, "{}", own.text());
    assert!(!server.file("home/bob").exists());
    let root = basic("root");
    let all = server
        .send("DELETE", "/home/", &[("authorization", &root), ("depth", "infinity")], "")
        .await;
    assert_eq!(all.status, 204);
    assert!(!server.file("home").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_follow_the_rules_of_all_that_may_be_beneath() {
    let server = TestServer::with_config(&config("")).await;
    let bob = basic("bob");
    server.place("box/keep.txt", b"k");
    // / may hold /secret, /pub and homes: refused by the rules (before its 405).
    let everything = server.send("DELETE", "/", &[("authorization", &bob)], "").await;
    everything.assert_problem(403, "forbidden");
    // With Depth: 0, a folder of things bob may know of says it is not empty.
    let deep = server.send("DELETE", "/box/", &[("authorization", &bob), ("depth", "0")], "").await;
    deep.assert_problem(409, "conflict");
    // A folder whose rules bob's rights cover goes, with Depth.
    let gone =
        server.send("DELETE", "/box/", &[("authorization", &bob), ("depth", "infinity")], "").await;
    assert_eq!(gone.status, 204);
    // /pub is read-only with a drop folder beneath: refused, nothing removed.
    server.place("pub/drop/x.txt", b"x");
    let refused =
        server.send("DELETE", "/pub/", &[("authorization", &bob), ("depth", "infinity")], "").await;
    refused.assert_problem(403, "forbidden");
    assert!(server.file("pub/drop/x.txt").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_parts_pass_the_rules_as_puts_would() {
    let server = TestServer::with_config(&config("")).await;
    let bob = basic("bob");
    assert_eq!(server.put_as("bob", "/home/bob/x.txt", "x").await.status, 201);
    // A part named after another account's home, posted to /home/: refused as a PUT of
    // /home/dave is, whether or not dave is an account; nothing is created.
    for name in ["dave", "alice"] {
        let (ct, body) = form(name, "planted");
        let posted = server
            .send("POST", "/home/", &[("authorization", &bob), ("content-type", &ct)], body)
            .await;
        let put = server.put_as("bob", &format!("/home/{name}"), "planted").await;
        assert_eq!(seen(&posted).0, 404, "{}", posted.text());
        assert_eq!(seen(&posted), seen(&put));
        assert!(!server.file(&format!("home/{name}")).exists());
    }
    // A part named like a hidden path: refused alike whether it exists or not, and never
    // renamed around it (a `secret-1` would tell bob that /secret exists).
    let (ct, body) = form("secret", "guess");
    let headers = [("authorization", bob.as_str()), ("content-type", ct.as_str())];
    let missing = server.send("POST", "/", &headers, body.clone()).await;
    assert_eq!(server.put_as("alice", "/secret", "alice's").await.status, 201);
    let existing = server.send("POST", "/", &headers, body).await;
    assert_eq!(missing.status, 404);
    assert_eq!(seen(&missing), seen(&existing));
    assert!(!server.file("secret-1").exists());
    assert_eq!(std::fs::read(server.file("secret")).unwrap(), b"alice's");
    // Where bob may create, a clash with what he can see is still renamed.
    let (ct, body) = form("a.txt", "first");
    let headers = [("authorization", bob.as_str()), ("content-type", ct.as_str())];
    assert_eq!(server.send("POST", "/home/bob/", &headers, body.clone()).await.status, 201);
    let second = server.send("POST", "/home/bob/", &headers, body).await;
    assert_eq!(second.json()["created"][0]["path"], "/home/bob/a-1.txt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_creates_only_parents_the_caller_may_create() {
    let server = TestServer::with_config(&config("")).await;
    let bob = basic("bob");
    // /pub is missing and bob may not create it: the drop folder beneath cannot make it.
    let refused = server.send("PUT", "/pub/drop/x.txt", &[("authorization", &bob)], "x").await;
    refused.assert_problem(403, "forbidden");
    assert!(!server.file("pub").exists());
    // Once an admin made /pub, bob may make the drop folder (its own rule lets him) and files.
    server.place("pub/readme.txt", b"r");
    let made = server.send("PUT", "/pub/drop/x.txt", &[("authorization", &bob)], "x").await;
    assert_eq!(made.status, 201, "{}", made.text());
    // The same through the path that needs no lookup (no quota, no precondition) and with one.
    let again = server
        .send("PUT", "/pub/drop/y.txt", &[("authorization", &bob), ("if-none-match", "*")], "y")
        .await;
    assert_eq!(again.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_names_are_not_told_by_homes() {
    let server = TestServer::with_config(&config("")).await;
    assert_eq!(server.put_as("alice", "/home/alice/a.txt", "a").await.status, 201);
    let bob = basic("bob");
    for method in ["PUT", "GET", "DELETE", "POST", "OPTIONS"] {
        for headers in [vec![], vec![("authorization", bob.as_str())]] {
            let real = server.send(method, "/home/alice/x", &headers, "x").await;
            let made_up = server.send(method, "/home/nobody/x", &headers, "x").await;
            assert_eq!(real.status, 404, "{method}");
            assert_eq!(seen(&real), seen(&made_up), "{method} {headers:?}");
        }
    }
    assert!(!server.file("home/nobody").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_past_their_limits() {
    let config = format!(
        "{}\n[plan.basic]\nstorage = \"1 MiB\"\ncredits = 20\n[[rule]]\npath = \"/shop\"\n\
         read = [\"@authenticated\"]\nwrite = [\"root\"]\nprice = 5\n",
        team_config("")
    )
    .replace("name = \"bob\"\n", "name = \"bob\"\nplan = \"basic\"\n");
    let server = TestServer::with_config(&config).await;
    assert_eq!(server.put_as("root", "/shop/book.txt", "a book").await.status, 201);
    let bob = basic("bob");
    let made = new_token(&server, &bob, r#"{"read_only": true}"#).await.json();
    let reader = format!("Bearer {}", made["token"].as_str().unwrap());
    let balance = async || {
        server.get("/.larder/account", &[("authorization", &bob)]).await.json()["balance"].clone()
    };
    assert_eq!(balance().await, 20);
    // A read-only token spends nothing: not by buying, not in one step.
    let bought = server
        .send(
            "POST",
            "/.larder/purchases",
            &[("authorization", &reader), ("content-type", "application/json")],
            r#"{"path": "/shop/book.txt"}"#,
        )
        .await;
    bought.assert_problem(403, "forbidden");
    let one_step = server
        .get("/shop/book.txt", &[("authorization", &reader), ("larder-max-price", "5")])
        .await;
    one_step.assert_problem(403, "forbidden");
    assert_eq!(balance().await, 20);
    // It still reads what is free to it, and the 402 tells it the price.
    let unpaid = server.get("/shop/book.txt", &[("authorization", &reader)]).await;
    unpaid.assert_problem(402, "payment-required");

    // An admin token scoped to a folder is no admin for /.larder: no top-up, no metrics.
    let root = basic("root");
    let scoped = new_token(&server, &root, r#"{"scope": "/docs"}"#).await.json();
    let scoped = format!("Bearer {}", scoped["token"].as_str().unwrap());
    let top_up = server
        .send(
            "POST",
            "/.larder/accounts/bob/credits",
            &[("authorization", &scoped), ("content-type", "application/json")],
            r#"{"amount": 1000}"#,
        )
        .await;
    top_up.assert_problem(403, "forbidden");
    assert_eq!(balance().await, 20);
    let metrics = server.get("/.larder/metrics", &[("authorization", &scoped)]).await;
    metrics.assert_problem(403, "forbidden");
    // An unscoped admin token may.
    let full = new_token(&server, &root, "").await.json();
    let full = format!("Bearer {}", full["token"].as_str().unwrap());
    assert_eq!(server.get("/.larder/metrics", &[("authorization", &full)]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_one_client_locks_out_only_itself() {
    let server = TestServer::with_config(&team_config(
        "sign_in_limit = 3\ntrusted_proxies = [\"127.0.0.1/32\"]",
    ))
    .await;
    let alice = basic("alice");
    let made = new_token(&server, &alice, "").await.json();
    let token = format!("Bearer {}", made["token"].as_str().unwrap());
    let from = |address: &'static str| ("x-forwarded-for", address);
    // Through the proxy (127.0.0.1), an attacker guesses past the limits, for many names.
    for n in 0..10 {
        let wrong = basic_raw(&format!("user{n}:guess"));
        let reply = server.get("/", &[("authorization", &wrong), from("203.0.113.66")]).await;
        assert!(matches!(reply.status, 401 | 429), "{}", reply.status);
    }
    let blocked = server.get("/", &[("authorization", &basic("root")), from("203.0.113.66")]).await;
    blocked.assert_problem(429, "too-many-requests");
    // Everyone else behind the same proxy still signs in, with a password or a token.
    let other = server.get("/", &[("authorization", &alice), from("198.51.100.7")]).await;
    assert_eq!(other.status, 200, "{}", other.text());
    let root = server.get("/", &[("authorization", &basic("root")), from("198.51.100.8")]).await;
    assert_eq!(root.status, 200);
    // A valid token is never refused, even from the guesser's own address.
    let with_token = server.get("/", &[("authorization", &token), from("203.0.113.66")]).await;
    assert_eq!(with_token.status, 200);

    // Without trusted_proxies, the header is the client's word and is ignored: guesses with
    // forged addresses all count against the peer.
    let plain = TestServer::with_config(&team_config("sign_in_limit = 3")).await;
    for n in 0..6 {
        let wrong = basic_raw(&format!("user{n}:guess"));
        let forged = format!("198.51.100.{n}");
        let reply = plain
            .send_from(
                [127, 0, 0, 5],
                "GET",
                "/",
                &[("authorization", &wrong), ("x-forwarded-for", &forged)],
                "",
            )
            .await;
        assert_eq!(reply.status, 401);
    }
    let reply = plain
        .send_from(
            [127, 0, 0, 5],
            "GET",
            "/",
            &[("authorization", &basic("root")), from("198.51.100.99")],
            "",
        )
        .await;
    reply.assert_problem(429, "too-many-requests");
}

/// Another local user swaps a served folder with a symlink to a place outside ROOT, over and
/// over (`renameat2(RENAME_EXCHANGE)`), while clients read, list, write and delete beneath it
/// for 10 s. Not one byte from outside may be served, and nothing outside may change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_swapped_for_a_symlink_never_leads_outside() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    let server = TestServer::with_config(&team_config("")).await;
    let outside = tempfile::tempdir().unwrap();
    for name in ["data.txt", "victim-0.txt", "victim-1.txt", "only-outside.txt"] {
        std::fs::write(outside.path().join(name), b"OUTSIDE").unwrap();
    }
    server.place("pub/data.txt", b"inside");
    server.place("pub/victim-0.txt", b"inside");
    server.place("pub/victim-1.txt", b"inside");
    std::os::unix::fs::symlink(outside.path(), server.file("swap")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicUsize::new(0));
    let swapper = {
        let (stop, swaps) = (stop.clone(), swaps.clone());
        let (a, b) = (server.file("pub"), server.file("swap"));
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                let flags = rustix::fs::RenameFlags::EXCHANGE;
                rustix::fs::renameat_with(rustix::fs::CWD, &a, rustix::fs::CWD, &b, flags).unwrap();
                swaps.fetch_add(1, Relaxed);
            }
        })
    };
    let alice = basic("alice");
    let (leaked, served) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut clients = Vec::new();
    for client in 0..4 {
        let (server_addr, alice) = (server.addr, alice.clone());
        let (leaked, served) = (leaked.clone(), served.clone());
        clients.push(tokio::spawn(async move {
            let mut connection = Connection::open(server_addr).await.unwrap();
            let mut n = 0u64;
            while tokio::time::Instant::now() < deadline {
                n += 1;
                let auth = [("authorization", alice.as_str())];
                let reply = match (client, n % 4) {
                    (0, _) | (_, 0) => connection.send("GET", "/pub/data.txt", &[], "").await,
                    (1, _) | (_, 1) => {
                        connection.send("GET", "/pub/", &[("accept", "application/json")], "").await
                    }
                    (2, _) | (_, 2) => {
                        let target = format!("/pub/new-{client}-{n}.txt");
                        connection.send("PUT", &target, &auth, "planted").await
                    }
                    _ => {
                        let target = format!("/pub/victim-{}.txt", n % 2);
                        connection.send("DELETE", &target, &auth, "").await
                    }
                };
                assert!(reply.status < 500, "{} {}", reply.status, reply.text());
                if reply.body.windows(7).any(|w| w == b"OUTSIDE")
                    || reply.text().contains("only-outside")
                {
                    leaked.fetch_add(1, Relaxed);
                }
                if reply.status < 300 {
                    served.fetch_add(1, Relaxed);
                }
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    stop.store(true, Relaxed);
    swapper.join().unwrap();
    let mut outside_now: Vec<_> = std::fs::read_dir(outside.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    outside_now.sort();
    let created = outside_now.len().saturating_sub(4);
    println!(
        "swaps {}, answers 2xx {}, answers with outside bytes {}, files created outside {created}",
        swaps.load(Relaxed),
        served.load(Relaxed),
        leaked.load(Relaxed)
    );
    assert_eq!(leaked.load(Relaxed), 0, "bytes read from outside ROOT");
    assert_eq!(outside_now, ["data.txt", "only-outside.txt", "victim-0.txt", "victim-1.txt"]);
    for name in ["data.txt", "victim-0.txt", "victim-1.txt", "only-outside.txt"] {
        assert_eq!(std::fs::read(outside.path().join(name)).unwrap(), b"OUTSIDE");
    }
    assert!(served.load(Relaxed) > 0 && swaps.load(Relaxed) > 0, "the test did something");
}
