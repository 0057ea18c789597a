//! The scenarios: each starts its own cluster and asserts what a client of either node sees.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::Cluster;
use crate::common::{Reply, accounts, at_once, basic, content, password_hash, request};

async fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
    request(addr, "GET", path, &headers, "").await.unwrap()
}

async fn put(addr: SocketAddr, path: &str, account: &str, body: impl Into<Bytes>) -> Reply {
    let auth = basic(account);
    request(addr, "PUT", path, &[("authorization", &auth)], body).await.unwrap()
}

async fn post_json(addr: SocketAddr, path: &str, account: &str, body: Value) -> Reply {
    let auth = basic(account);
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    request(addr, "POST", path, &headers, body.to_string()).await.unwrap()
}

async fn balance(addr: SocketAddr, account: &str) -> u64 {
    let reply = get(addr, "/.larder/account", Some(&basic(account))).await;
    assert_eq!(reply.status, 200);
    reply.json()["balance"].as_u64().unwrap()
}

fn admin(name: &str) -> String {
    format!("[[account]]\nname = \"{name}\"\npassword = \"{}\"\nadmin = true\n", password_hash())
}

/// SPEC sections 3, 4 and 5, each step on the other node from the one before.
pub async fn spec() -> Vec<String> {
    let config = format!(
        r#"{}{}{}
[plan.small]
storage = "4 KiB"
credits = 10
[[rule]]
path = "/"
read = ["*"]
list = ["*"]
write = ["@authenticated"]
[[rule]]
path = "/private"
read = ["alice"]
write = ["alice"]
[[rule]]
path = "/secret"
read = ["alice"]
write = ["alice"]
hidden = true
[[rule]]
path = "/shop"
read = ["@authenticated"]
write = ["seller"]
price = 5
"#,
        accounts(&["alice", "bob"], Some("small")),
        accounts(&["seller"], None),
        admin("root"),
    );
    let cluster = Cluster::start("spec", &config, 2);
    let (a, b) = (cluster.addr(0), cluster.addr(1));
    // What passed, in order: the scenario's report.
    let mut steps: Vec<String> = Vec::new();
    let mut step = |done: &str| steps.push(done.to_owned());

    // Section 3: a write on one node is what the next request to the other sees.
    let created = put(a, "/docs/a.txt", "alice", "one").await;
    assert_eq!(created.status, 201);
    assert_eq!(created.header("location"), "/docs/a.txt");
    let e1 = created.header("etag").to_owned();
    assert_eq!(created.json()["owner"], "alice");
    step("PUT new on A: 201");
    let read = get(b, "/docs/a.txt", None).await;
    assert_eq!((read.status, &read.body[..]), (200, &b"one"[..]));
    assert_eq!(read.header("etag"), e1);
    assert_eq!(read.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(read.header("accept-ranges"), "bytes");
    assert!(!read.header("last-modified").is_empty());
    step("GET on B: the bytes and the same ETag");
    let head = request(b, "HEAD", "/docs/a.txt", &[], "").await.unwrap();
    assert_eq!((head.status, head.header("content-length"), head.body.len()), (200, "3", 0));
    let fresh = request(b, "GET", "/docs/a.txt", &[("if-none-match", &e1)], "").await.unwrap();
    assert_eq!(fresh.status, 304);
    step("HEAD and If-None-Match on B");
    let auth = basic("alice");
    let replaced =
        request(b, "PUT", "/docs/a.txt", &[("authorization", &auth), ("if-match", &e1)], "two")
            .await
            .unwrap();
    assert_eq!(replaced.status, 200);
    let e2 = replaced.header("etag").to_owned();
    assert_ne!(e1, e2);
    let stale =
        request(a, "PUT", "/docs/a.txt", &[("authorization", &auth), ("if-match", &e1)], "x")
            .await
            .unwrap();
    assert_eq!(stale.status, 412, "A must see B's write: If-Match on the old ETag fails");
    let exists =
        request(a, "PUT", "/docs/a.txt", &[("authorization", &auth), ("if-none-match", "*")], "x")
            .await
            .unwrap();
    assert_eq!(exists.status, 412);
    assert_eq!(&get(a, "/docs/a.txt", None).await.body[..], b"two");
    step("If-Match on B, then stale If-Match and If-None-Match: * on A: 412");

    let ranged = request(b, "GET", "/docs/a.txt", &[("range", "bytes=1-1")], "").await.unwrap();
    assert_eq!((ranged.status, &ranged.body[..]), (206, &b"w"[..]));
    assert_eq!(ranged.header("content-range"), "bytes 1-1/3");
    step("Range on B: 206");

    assert_eq!(put(a, "/docs/sub/", "alice", "").await.status, 201);
    let listing = request(b, "GET", "/docs/", &[("accept", "application/json")], "").await.unwrap();
    assert_eq!(listing.status, 200);
    let names: Vec<String> = listing.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["a.txt", "sub"], "{names:?}");
    let moved = get(a, "/docs", None).await;
    assert_eq!((moved.status, moved.header("location")), (301, "/docs/"));
    step("collection made on A, listed on B; /docs is 301");

    assert_eq!(put(b, "/docs/a.txt/x", "alice", "x").await.status, 409);
    assert_eq!(put(b, "/docs", "alice", "x").await.status, 409);
    assert_eq!(put(a, "/docs/deep/er/c.txt", "alice", "c").await.status, 201);
    let deep =
        request(b, "GET", "/docs/deep/er/", &[("accept", "application/json")], "").await.unwrap();
    assert_eq!(deep.json()["entries"][0]["name"], "c.txt");
    step("409 for a resource in the way or a folder replaced; parents made");

    let shallow = [("authorization", auth.as_str()), ("depth", "0")];
    let refused = request(b, "DELETE", "/docs/", &shallow, "").await.unwrap();
    assert_eq!(refused.status, 409);
    let deleted =
        request(a, "DELETE", "/docs/", &[("authorization", &auth), ("depth", "infinity")], "")
            .await
            .unwrap();
    assert_eq!(deleted.status, 204);
    assert_eq!(get(b, "/docs/a.txt", None).await.status, 404);
    assert_eq!(get(b, "/docs/deep/er/c.txt", None).await.status, 404);
    let again = request(b, "DELETE", "/docs/a.txt", &[("authorization", &auth)], "").await.unwrap();
    assert_eq!(again.status, 404);
    step("DELETE: Depth: 0 409 when not empty, 204 with Depth: infinity on A, gone on B");

    // Section 4: 401, 403, 404 the same on both nodes.
    assert_eq!(put(a, "/private/p.txt", "alice", "mine").await.status, 201);
    assert_eq!(put(a, "/secret/s.txt", "alice", "hush").await.status, 201);
    let anonymous = get(b, "/private/p.txt", None).await;
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.header("www-authenticate").starts_with("Basic"));
    assert_eq!(get(b, "/private/p.txt", Some(&basic("bob"))).await.status, 403);
    let hidden = get(b, "/secret/s.txt", Some(&basic("bob"))).await;
    let missing = get(a, "/secret/none.txt", Some(&basic("bob"))).await;
    assert_eq!((hidden.status, missing.status), (404, 404));
    assert_eq!(hidden.body.len(), missing.body.len());
    let top = request(
        b,
        "GET",
        "/",
        &[("accept", "application/json"), ("authorization", &basic("bob"))],
        "",
    )
    .await
    .unwrap();
    assert!(!String::from_utf8_lossy(&top.body).contains("secret"), "hidden stays hidden");
    assert_eq!(&get(a, "/secret/s.txt", Some(&auth)).await.body[..], b"hush");
    step("401, 403 and hidden 404 on either node");

    // Tokens made on one node work on the other; revoked on one, refused at once on the other.
    let made = post_json(a, "/.larder/tokens", "alice", json!({})).await;
    assert_eq!(made.status, 201);
    let token = made.json()["token"].as_str().unwrap().to_owned();
    let id = made.json()["id"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    assert_eq!(get(b, "/private/p.txt", Some(&bearer)).await.status, 200);
    assert_eq!(get(a, "/private/p.txt", Some(&bearer)).await.status, 200);
    let revoked =
        request(b, "DELETE", &format!("/.larder/tokens/{id}"), &[("authorization", &auth)], "")
            .await
            .unwrap();
    assert_eq!(revoked.status, 204);
    assert_eq!(get(a, "/private/p.txt", Some(&bearer)).await.status, 401);
    step("token made on A works on B; revoked on B, refused on A at once");

    // Section 5: quotas, prices and purchases across nodes.
    assert_eq!(put(a, "/q/one", "bob", content("q", 3000)).await.status, 201);
    let over = put(b, "/q/two", "bob", content("q", 2000)).await;
    assert_eq!(over.status, 402);
    assert_eq!(over.json()["used"], 3000);
    assert_eq!(get(a, "/q/two", None).await.status, 404);
    step("quota counted across nodes: 402, nothing stored");
    assert_eq!(put(a, "/shop/book.pdf", "seller", "the goods").await.status, 201);
    let unpaid = get(b, "/shop/book.pdf", Some(&basic("bob"))).await;
    assert_eq!((unpaid.status, unpaid.header("larder-price")), (402, "5"));
    let bought = post_json(a, "/.larder/purchases", "bob", json!({"path": "/shop/book.pdf"})).await;
    assert_eq!(bought.status, 201);
    assert_eq!(&get(b, "/shop/book.pdf", Some(&basic("bob"))).await.body[..], b"the goods");
    let twice = post_json(b, "/.larder/purchases", "bob", json!({"path": "/shop/book.pdf"})).await;
    assert_eq!(twice.status, 200);
    assert_eq!((balance(a, "bob").await, balance(b, "bob").await), (5, 5));
    step("402, bought on A, read on B, bought again on B: charged once");
    let topped = post_json(b, "/.larder/accounts/bob/credits", "root", json!({"amount": 50})).await;
    assert_eq!(topped.status, 200);
    assert_eq!(balance(a, "bob").await, 55);
    step("credits added on B seen on A");
    steps
}

/// WebDAV over the bucket and PostgreSQL: what one node does, the other lists (SPEC §8).
pub async fn dav() -> Vec<String> {
    let config = format!(
        "{}[[rule]]\npath = \"/\"\nread = [\"*\"]\nwrite = [\"alice\"]\n[[rule]]\npath = \"/secret\"\nread = [\"alice\"]\nwrite = [\"alice\"]\nhidden = true\n",
        accounts(&["alice", "bob"], None)
    );
    let cluster = Cluster::start("dav", &config, 2);
    let (a, b) = (cluster.addr(0), cluster.addr(1));
    let mut steps = Vec::new();
    let mut step = |s: &str| steps.push(s.to_owned());
    let alice = basic("alice");
    let bob = basic("bob");
    let auth = |extra: (&'static str, &'static str)| [("authorization", alice.as_str()), extra];
    assert_eq!(
        request(a, "MKCOL", "/docs/", &auth(("x-none", "1")), "").await.unwrap().status,
        201
    );
    assert_eq!(put(a, "/docs/a.txt", "alice", "aaa").await.status, 201);
    assert_eq!(put(a, "/secret/s.txt", "alice", "hush").await.status, 201);
    let listed = request(b, "PROPFIND", "/docs/", &[("depth", "1")], "").await.unwrap();
    assert_eq!(listed.status, 207);
    assert!(String::from_utf8_lossy(&listed.body).contains("<D:href>/docs/a.txt</D:href>"));
    let top = request(b, "PROPFIND", "/", &[("depth", "1")], "").await.unwrap();
    assert!(!String::from_utf8_lossy(&top.body).contains("secret"));
    step("MKCOL and PUT on A, PROPFIND on B; the hidden folder never listed");
    let patch = r#"<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><z:tag xmlns:z="urn:z">blue</z:tag></D:prop></D:set></D:propertyupdate>"#;
    assert_eq!(
        request(a, "PROPPATCH", "/docs/a.txt", &auth(("x-none", "1")), patch).await.unwrap().status,
        207
    );
    let moved = request(b, "MOVE", "/docs/", &auth(("destination", "/kept/")), "").await.unwrap();
    assert_eq!(moved.status, 201);
    assert_eq!(get(a, "/docs/a.txt", None).await.status, 404);
    let there = get(a, "/kept/a.txt", None).await;
    assert_eq!((there.status, &there.body[..]), (200, &b"aaa"[..]));
    let find =
        r#"<D:propfind xmlns:D="DAV:"><D:prop><z:tag xmlns:z="urn:z"/></D:prop></D:propfind>"#;
    let prop = request(a, "PROPFIND", "/kept/a.txt", &[("depth", "0")], find).await.unwrap();
    assert!(String::from_utf8_lossy(&prop.body).contains(">blue</tag>"));
    step("PROPPATCH on A, MOVE of the folder on B: bytes and dead property at the new path on A");
    // One source, two destinations, a node each, at once: one MOVE wins, whole.
    assert_eq!(put(a, "/race/src.txt", "alice", "only once").await.status, 201);
    let (to_one, to_two) =
        (auth(("destination", "/race/one.txt")), auth(("destination", "/race/two.txt")));
    let (one, two) = tokio::join!(
        request(a, "MOVE", "/race/src.txt", &to_one, ""),
        request(b, "MOVE", "/race/src.txt", &to_two, ""),
    );
    let mut statuses = [one.unwrap().status, two.unwrap().status];
    statuses.sort();
    assert_eq!(statuses, [201, 404]);
    let landed: Vec<u16> = [
        get(b, "/race/one.txt", None).await.status,
        get(a, "/race/two.txt", None).await.status,
        get(a, "/race/src.txt", None).await.status,
    ]
    .into();
    assert!(landed == [200, 404, 404] || landed == [404, 200, 404], "{landed:?}");
    step("two nodes MOVE one file at once: one 201, one 404, the file at one place");
    // A lock taken on one node holds on the other.
    let lockinfo = r#"<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>"#;
    let taken = request(a, "LOCK", "/kept/a.txt", &auth(("timeout", "Second-600")), lockinfo)
        .await
        .unwrap();
    assert_eq!(taken.status, 200);
    let token = taken.header("lock-token").trim_matches(|c| c == '<' || c == '>').to_owned();
    assert_eq!(put(b, "/kept/a.txt", "alice", "no token").await.status, 423);
    let again = request(b, "LOCK", "/kept/a.txt", &auth(("x-none", "1")), lockinfo).await.unwrap();
    assert_eq!(again.status, 423);
    let with = format!("(<{token}>)");
    let coded = format!("<{token}>");
    let alice_if = [("authorization", alice.as_str()), ("if", with.as_str())];
    let written = request(b, "PUT", "/kept/a.txt", &alice_if, "locked write").await.unwrap();
    assert_eq!(written.status, 200);
    let bob_token = [("authorization", bob.as_str()), ("lock-token", coded.as_str())];
    let bobs = request(b, "UNLOCK", "/kept/a.txt", &bob_token, "").await.unwrap();
    assert_eq!(bobs.status, 409);
    let alice_token = [("authorization", alice.as_str()), ("lock-token", coded.as_str())];
    let alices = request(b, "UNLOCK", "/kept/a.txt", &alice_token, "").await.unwrap();
    assert_eq!(alices.status, 204);
    assert_eq!(put(a, "/kept/a.txt", "alice", "free again").await.status, 200);
    step(
        "LOCK on A: B refuses a PUT and a second LOCK without its token (423), takes one with it; bob cannot UNLOCK it, alice can, on B",
    );
    let copied =
        request(a, "COPY", "/kept/a.txt", &auth(("destination", "/kept/b.txt")), "").await.unwrap();
    assert_eq!(copied.status, 201);
    assert_eq!(get(b, "/kept/b.txt", None).await.body, "free again");
    let whole = request(a, "COPY", "/kept/", &auth(("destination", "/copied/")), "").await.unwrap();
    assert_eq!(whole.status, 201);
    let inside = get(b, "/copied/b.txt", None).await;
    assert_eq!((inside.status, &inside.body[..]), (200, &b"free again"[..]));
    let over = request(b, "COPY", "/kept/", &auth(("destination", "/copied/")), "").await.unwrap();
    assert_eq!(over.status, 204, "Overwrite: T replaces the copy");
    let stolen = [("authorization", bob.as_str()), ("destination", "/mine.txt")];
    let hidden = request(b, "COPY", "/secret/s.txt", &stolen, "").await.unwrap();
    let missing = request(b, "COPY", "/secret/none.txt", &stolen, "").await.unwrap();
    assert_eq!((hidden.status, missing.status), (404, 404));
    assert_eq!(hidden.body.len(), missing.body.len());
    step(
        "COPY of a file and of a folder on A read on B; bob's COPY of a hidden file answers as of a missing one",
    );
    steps
}

/// Many clients on both nodes race one `If-Match` (and one `If-None-Match: *`): one winner.
pub async fn if_match_race() -> Vec<String> {
    let config = format!(
        "{}[[rule]]\npath = \"/\"\nread = [\"*\"]\nwrite = [\"alice\"]\n",
        accounts(&["alice"], None)
    );
    let cluster = Cluster::start("ifmatch", &config, 2);
    let addrs = [cluster.addr(0), cluster.addr(1)];
    let rounds = 10;
    let racers = 16;
    for round in 0..rounds {
        let path = format!("/race/{round}.txt");
        let first = put(addrs[round % 2], &path, "alice", "base").await;
        assert_eq!(first.status, 201);
        let etag = first.header("etag").to_owned();
        let replies = at_once(racers, |i| {
            let (addr, path, etag) = (addrs[i % 2], path.clone(), etag.clone());
            async move {
                let auth = basic("alice");
                let body = format!("racer {i}");
                let headers = [("authorization", auth.as_str()), ("if-match", etag.as_str())];
                request(addr, "PUT", &path, &headers, body).await.unwrap().status
            }
        })
        .await;
        let winners: Vec<usize> = (0..racers).filter(|&i| replies[i] == 200).collect();
        assert_eq!(winners.len(), 1, "round {round}: {replies:?}");
        assert!(replies.iter().all(|&s| s == 200 || s == 412), "{replies:?}");
        let expected = format!("racer {}", winners[0]);
        for addr in addrs {
            assert_eq!(&get(addr, &path, None).await.body[..], expected.as_bytes());
        }
        // Create-only: one 201 among racers on both nodes.
        let fresh = format!("/race/new-{round}.txt");
        let replies = at_once(racers, |i| {
            let (addr, path) = (addrs[i % 2], fresh.clone());
            async move {
                let auth = basic("alice");
                let headers = [("authorization", auth.as_str()), ("if-none-match", "*")];
                request(addr, "PUT", &path, &headers, format!("creator {i}")).await.unwrap().status
            }
        })
        .await;
        assert_eq!(replies.iter().filter(|&&s| s == 201).count(), 1, "{replies:?}");
        assert!(replies.iter().all(|&s| s == 201 || s == 412), "{replies:?}");
    }
    let doomed = cluster.count("SELECT COUNT(*) FROM blob_doomed").await;
    let pending = cluster.count("SELECT COUNT(*) FROM blob_pending").await;
    assert_eq!(pending, 0, "every refused upload was cleaned up");
    vec![format!(
        "{rounds} rounds of {racers} If-Match PUTs and {racers} If-None-Match: * PUTs over 2 \
         nodes: one winner each time, both nodes serve its bytes; {doomed} replaced blobs \
         wait for their grace, none pending"
    )]
}

/// Purchases racing on both nodes: a balance of 10 buys exactly three 3-credit files.
pub async fn purchase_race() -> Vec<String> {
    let config = format!(
        "{}{}[plan.ten]\nstorage = \"1 MiB\"\ncredits = 10\n\
         [[rule]]\npath = \"/\"\nread = [\"*\"]\nwrite = [\"seller\"]\n\
         [[rule]]\npath = \"/shop\"\nread = [\"@authenticated\"]\nwrite = [\"seller\"]\nprice = 3\n",
        accounts(&["carol"], Some("ten")),
        accounts(&["seller"], None),
    );
    let cluster = Cluster::start("purchase", &config, 2);
    let addrs = [cluster.addr(0), cluster.addr(1)];
    let files = 8;
    for f in 0..files {
        assert_eq!(
            put(addrs[f % 2], &format!("/shop/{f}.pdf"), "seller", "goods").await.status,
            201
        );
    }
    assert_eq!(balance(addrs[0], "carol").await, 10); // the first sign-in grants the plan
    // Two attempts per file, one on each node, all at once.
    let replies = at_once(files * 2, |i| {
        let addr = addrs[i % 2];
        let path = format!("/shop/{}.pdf", i / 2);
        async move {
            let reply =
                post_json(addr, "/.larder/purchases", "carol", json!({ "path": path })).await;
            (i / 2, reply.status)
        }
    })
    .await;
    let new = replies.iter().filter(|(_, s)| *s == 201).count();
    assert_eq!(new, 3, "{replies:?}");
    for (file, status) in &replies {
        assert!([200, 201, 402].contains(status), "{replies:?}");
        if *status == 200 {
            assert!(replies.iter().any(|(f, s)| f == file && *s == 201), "{replies:?}");
        }
    }
    for addr in addrs {
        assert_eq!(balance(addr, "carol").await, 1);
    }
    let ledger =
        cluster.count("SELECT SUM(amount)::BIGINT FROM ledger WHERE account = 'carol'").await;
    assert_eq!(ledger, 1, "the ledger sums to the balance");
    let bought = cluster.count("SELECT COUNT(*) FROM purchase WHERE account = 'carol'").await;
    assert_eq!(bought, 3);
    vec![format!(
        "{} purchase requests over 2 nodes at once with 10 credits at 3 each: 3 bought, \
         balance 1 on both nodes, ledger sums to 1",
        files * 2
    )]
}

/// Uploads racing on both nodes against one quota: exactly what fits is stored.
pub async fn quota_race() -> Vec<String> {
    let config = format!(
        "{}{}[plan.tiny]\nstorage = \"10 KiB\"\n[plan.few]\nstorage = \"1 MiB\"\nfiles = 5\n\
         [[rule]]\npath = \"/\"\nread = [\"*\"]\nwrite = [\"dave\", \"erin\"]\n",
        accounts(&["dave"], Some("tiny")),
        accounts(&["erin"], Some("few")),
    );
    let cluster = Cluster::start("quota", &config, 2);
    let addrs = [cluster.addr(0), cluster.addr(1)];
    let replies = at_once(24, |i| {
        let addr = addrs[i % 2];
        async move { put(addr, &format!("/q/{i}"), "dave", content("d", 1024)).await.status }
    })
    .await;
    let stored = replies.iter().filter(|&&s| s == 201).count();
    assert_eq!(stored, 10, "{replies:?}");
    assert!(replies.iter().all(|&s| s == 201 || s == 402), "{replies:?}");
    for addr in addrs {
        let reply = get(addr, "/.larder/account", Some(&basic("dave"))).await;
        assert_eq!(reply.json()["storage"]["used"], 10 * 1024);
    }
    // The number of resources, held the same way: 20 empty files at once against 5, in a
    // folder they make, which is one of the 5.
    let replies = at_once(20, |i| {
        let addr = addrs[i % 2];
        async move { put(addr, &format!("/few/{i}"), "erin", bytes::Bytes::new()).await.status }
    })
    .await;
    let stored = replies.iter().filter(|&&s| s == 201).count();
    assert_eq!(stored, 4, "{replies:?}");
    assert!(replies.iter().all(|&s| s == 201 || s == 402), "{replies:?}");
    let owned = cluster.count("SELECT COUNT(*) FROM entry WHERE owner = 'erin'").await;
    assert_eq!(owned, 5, "the folder and 4 files are erin's");
    vec![
        "24 uploads of 1 KiB over 2 nodes at once against 10 KiB: 10 stored, 14 refused \
          with 402, usage 10 KiB on both nodes"
            .into(),
        "20 empty files into a new folder over 2 nodes at once against a plan of 5 resources: \
          the folder and 4 stored, 16 × 402"
            .into(),
    ]
}

/// Writers on both nodes; one node is killed with SIGKILL mid-traffic (and mid-upload of a
/// large file); the other keeps serving, and every acknowledged write is there, exact.
pub async fn kill_under_load() -> Vec<String> {
    let config = format!(
        "{}[[rule]]\npath = \"/\"\nread = [\"*\"]\nwrite = [\"erin\"]\n",
        accounts(&["erin"], None)
    );
    let mut cluster = Cluster::start("kill", &config, 2);
    let addrs = [cluster.addr(0), cluster.addr(1)];
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let third = Arc::new(tokio::sync::Notify::new());
    let killed = Arc::new(AtomicBool::new(false));
    let writers = 8;
    let per_writer = 120;

    // A large upload to node 0, half sent when the node dies.
    let big_len: usize = 48 << 20;
    let mut big = tokio::net::TcpStream::connect(addrs[0]).await.unwrap();
    let head = format!(
        "PUT /big.bin HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\nContent-Length: {big_len}\r\n\r\n",
        basic("erin")
    );
    big.write_all(head.as_bytes()).await.unwrap();
    big.write_all(&content("big", big_len / 2)).await.unwrap();

    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (acknowledged, killed, third) =
                (acknowledged.clone(), killed.clone(), third.clone());
            tokio::spawn(async move {
                // (path, bytes, acknowledged)
                let mut log: Vec<(String, Bytes, bool)> = Vec::new();
                let mut survivor_failures = 0;
                for i in 0..per_writer {
                    let node = (w + i) % 2;
                    let path = format!("/load/{w}/{i}.bin");
                    let body = content(&format!("w{w}i{i}"), 4096 + 997 * (i % 50));
                    let auth = basic("erin");
                    let reply = request(
                        addrs[node],
                        "PUT",
                        &path,
                        &[("authorization", &auth)],
                        body.clone(),
                    )
                    .await;
                    let ok = matches!(&reply, Ok(r) if r.status == 201);
                    if ok {
                        if acknowledged.fetch_add(1, Ordering::SeqCst) + 1
                            == writers * per_writer / 3
                        {
                            third.notify_one();
                        }
                    } else if node == 1 {
                        survivor_failures += 1;
                    } else {
                        assert!(
                            killed.load(Ordering::SeqCst) || reply.is_err(),
                            "a live node refused: {reply:?}"
                        );
                    }
                    log.push((path, body, ok));
                }
                (log, survivor_failures)
            })
        })
        .collect();

    // Kill node 0 once a third of the writes are acknowledged.
    third.notified().await;
    killed.store(true, Ordering::SeqCst);
    cluster.nodes[0].kill();
    let at_kill = acknowledged.load(Ordering::SeqCst);

    let mut log = Vec::new();
    let mut survivor_failures = 0;
    for task in tasks {
        let (entries, failures) = task.await.unwrap();
        log.extend(entries);
        survivor_failures += failures;
    }
    assert_eq!(survivor_failures, 0, "the surviving node failed writes");
    drop(big);

    // Everything acknowledged is there on the survivor, exact; nothing else is half there.
    let survivor = addrs[1];
    let (mut kept, mut absent, mut unknown_stored) = (0, 0, 0);
    for (path, body, ok) in &log {
        let reply = get(survivor, path, None).await;
        if *ok {
            assert_eq!(reply.status, 200, "{path} was acknowledged");
            assert!(reply.body == *body, "{path}: not the acknowledged bytes");
            kept += 1;
        } else if reply.status == 404 {
            absent += 1;
        } else {
            assert_eq!(reply.status, 200);
            assert!(reply.body == *body, "{path}: an unacknowledged write is half there");
            unknown_stored += 1;
        }
    }
    assert_eq!(get(survivor, "/big.bin", None).await.status, 404, "a cut upload is not visible");
    let pending = cluster.count("SELECT COUNT(*) FROM blob_pending").await;
    assert!(pending >= 1, "the killed node's uploads stay pending, for the sweep");

    // A node started again sees the same.
    let again = cluster.add_node();
    let restarted = cluster.addr(again);
    for (path, body, _) in log.iter().filter(|(_, _, ok)| *ok).step_by(7) {
        assert_eq!(&get(restarted, path, None).await.body, body);
    }
    vec![format!(
        "{} writes from {writers} writers over 2 nodes, node 0 killed after {at_kill} \
         acknowledged (and mid-way through a 48 MiB upload): {kept} acknowledged all exact on \
         the survivor and on a restarted node, the survivor failed none; of the rest {absent} \
         absent and {unknown_stored} whole; the cut upload invisible, {pending} uploads left \
         pending for the sweep",
        log.len()
    )]
}

/// A single-machine installation moved with `larder migrate`, resumed, then served by two
/// nodes: same bytes, same ETags, same owners, balances, purchases and tokens.
pub async fn migrate() -> Vec<String> {
    let rules = format!(
        "{}{}[plan.small]\nstorage = \"1 MiB\"\ncredits = 20\n\
         [[rule]]\npath = \"/\"\nread = [\"*\"]\nwrite = [\"@authenticated\"]\n\
         [[rule]]\npath = \"/shop\"\nread = [\"@authenticated\"]\nwrite = [\"seller\"]\nprice = 5\n",
        accounts(&["alice", "bob"], Some("small")),
        accounts(&["seller"], None),
    );
    // The old installation: a folder and its embedded database.
    let old = tempfile::tempdir().unwrap();
    let root = old.path().join("files");
    let config = old.path().join("larder.toml");
    std::fs::write(&config, &rules).unwrap();
    let mut single = crate::common::start(&root, &config, None);
    let s = single.addr;
    let mut etags = Vec::new();
    for (i, path) in ["/a.txt", "/docs/b.json", "/docs/deep/c.bin"].iter().enumerate() {
        let reply = put(s, path, "alice", content(path, 1000 + 70_000 * i)).await;
        assert_eq!(reply.status, 201);
        etags.push((path.to_string(), reply.header("etag").to_owned()));
    }
    assert_eq!(put(s, "/shop/book.pdf", "seller", "the goods").await.status, 201);
    let bought = post_json(s, "/.larder/purchases", "bob", json!({"path": "/shop/book.pdf"})).await;
    assert_eq!(bought.status, 201);
    let made = post_json(s, "/.larder/tokens", "alice", json!({})).await;
    let token = format!("Bearer {}", made.json()["token"].as_str().unwrap());
    let made = post_json(s, "/.larder/tokens", "alice", json!({})).await;
    let (revoked_id, revoked) = (
        made.json()["id"].as_str().unwrap().to_owned(),
        format!("Bearer {}", made.json()["token"].as_str().unwrap()),
    );
    std::fs::write(root.join("dropped-in.txt"), "put there by hand").unwrap();
    let listed = get(s, "/dropped-in.txt", None).await;
    let dropped_etag = listed.header("etag").to_owned();
    single.kill();

    let mut cluster = Cluster::start("migrate", &rules, 0);
    // (whether it succeeded, what it printed on stdout, and on stderr)
    let (store, database) = (cluster.store.clone(), cluster.database.clone());
    let migrate = |extra: &[&str]| {
        let from = format!("file:{}", root.display());
        let mut args = vec!["migrate", "--from", &from, "--to", &store];
        args.extend_from_slice(extra);
        let output = crate::larder_process::larder(&args)
            .env("LARDER_TO_STATE", &database)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.success(), text, String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let succeeds = |extra: &[&str]| {
        let (success, out, err) = migrate(extra);
        assert!(success, "{out}{err}");
        out
    };
    let first = succeeds(&[]);
    assert!(first.contains("copied 5 resources"), "{first}");
    assert!(first.contains("verified 5 resources") && first.contains("and 3 balances"), "{first}");
    // Changed after the first run, with the old server running again: a file changed by hand,
    // a folder deleted, a token revoked.
    let mut single = crate::common::start(&root, &config, None);
    let s = single.addr;
    std::fs::write(root.join("dropped-in.txt"), "changed by hand").unwrap();
    let alice = basic("alice");
    let deleted = request(
        s,
        "DELETE",
        "/docs/deep/",
        &[("authorization", &alice), ("depth", "infinity")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(deleted.status, 204);
    let revoke = format!("/.larder/tokens/{revoked_id}");
    let gone = request(s, "DELETE", &revoke, &[("authorization", &alice)], "").await.unwrap();
    assert_eq!(gone.status, 204);
    single.kill();
    // --verify-only sees each difference, and copies nothing.
    let (success, differs, _) = migrate(&["--verify-only"]);
    assert!(!success, "{differs}");
    for expected in [
        "MISMATCH /docs/deep/: in the target only",
        "MISMATCH /docs/deep/c.bin: in the target only",
        &format!("MISMATCH token {revoked_id}: in the target only"),
        "MISMATCH /dropped-in.txt: differs",
    ] {
        assert!(differs.contains(expected), "{expected} in:\n{differs}");
    }
    // The catch-up run copies the change and carries the deletions.
    let second = succeeds(&[]);
    assert!(second.contains("copied 1 resources") && second.contains("skipped 3"), "{second}");
    assert!(second.contains("deleted 2 resources and collections, 1 tokens"), "{second}");
    let checked = succeeds(&["--verify-only"]);
    assert!(checked.contains("verified 4 resources") && !checked.contains("MISMATCH"));

    cluster.add_node();
    cluster.add_node();
    let (a, b) = (cluster.addr(0), cluster.addr(1));
    // (the third, /docs/deep/c.bin, was deleted)
    for (i, (path, etag)) in etags.iter().enumerate().take(2) {
        let reply = get([a, b][i % 2], path, None).await;
        assert_eq!(reply.status, 200, "{path}");
        assert!(reply.body == content(path, 1000 + 70_000 * i), "{path}");
        assert_eq!(reply.header("etag"), etag, "{path}: the ETag is kept");
    }
    let dropped = get(b, "/dropped-in.txt", None).await;
    assert_eq!(&dropped.body[..], b"changed by hand");
    assert_ne!(dropped.header("etag"), dropped_etag);
    assert_eq!(&get(a, "/shop/book.pdf", Some(&basic("bob"))).await.body[..], b"the goods");
    assert_eq!(balance(b, "bob").await, 15);
    assert_eq!(get(b, "/a.txt", Some(&token)).await.status, 200);
    assert_eq!(get(a, "/a.txt", Some(&revoked)).await.status, 401, "revoked stays revoked");
    assert_eq!(get(a, "/docs/deep/c.bin", None).await.status, 404);
    let account = get(a, "/.larder/account", Some(&basic("alice"))).await;
    assert_eq!(account.json()["storage"]["used"], 1000 + 71_000);
    // The folders she made are still hers: 2 files and 1 folder count against her plan.
    let owned = cluster.count("SELECT COUNT(*) FROM entry WHERE owner = 'alice'").await;
    assert_eq!(owned, 3);

    // Once the nodes serve, a migration would overwrite what they write: refused.
    assert_eq!(put(a, "/docs/new.txt", "alice", "written on the cluster").await.status, 201);
    let bought = post_json(b, "/.larder/purchases", "alice", json!({"path": "/shop/book.pdf"}));
    assert_eq!(bought.await.status, 201);
    let (success, out, refused) = migrate(&[]);
    assert!(!success, "{out}");
    assert!(refused.contains("refusing to write into") && refused.contains("node(s) have served"));
    assert!(refused.contains("--force") && refused.contains("postgres://"), "{refused}");
    assert_eq!(&get(b, "/docs/new.txt", None).await.body[..], b"written on the cluster");
    assert_eq!(balance(a, "alice").await, 15, "her purchase stands");
    // --force does what it says: the target becomes the source again.
    let forced = succeeds(&["--force"]);
    assert!(forced.contains("writing anyway (--force): 2 node(s) have served"), "{forced}");
    assert_eq!(get(b, "/docs/new.txt", None).await.status, 404);
    assert_eq!(balance(a, "alice").await, 20);
    vec![
        "5 resources, 3 balances, a purchase and 2 tokens moved; then a file changed, a folder \
         deleted and a token revoked at the source: --verify-only names all three, the \
         catch-up run copies one file and carries the deletions; two nodes then serve the \
         same bytes and ETags, the purchase, the balance, the token (not the revoked one), \
         the usage and the folders' owners; a migration once they have served is refused and \
         changes nothing, and with --force overwrites what they wrote"
            .into(),
    ]
}

/// `larder migrate` refuses a database it did not fill from this source: one with accounts
/// that no migration put there (an installation that served before nodes kept a heartbeat),
/// and one another source was migrated into. Neither is changed.
pub async fn migrate_refusals() -> Vec<String> {
    let rules = format!("{}[[rule]]\npath = \"/\"\nread = [\"*\"]\n", accounts(&["ann"], None));
    let cluster = Cluster::start("refusals", &rules, 0);
    let sources = tempfile::tempdir().unwrap();
    let (first, second) = (sources.path().join("first"), sources.path().join("second"));
    for root in [&first, &second] {
        std::fs::create_dir_all(root).unwrap();
        std::fs::write(root.join("a.txt"), "from a folder").unwrap();
    }
    let migrate = |root: &std::path::Path| {
        let from = format!("file:{}", root.display());
        let output =
            crate::larder_process::larder(&["migrate", "--from", &from, "--to", &cluster.store])
                .env("LARDER_TO_STATE", &cluster.database)
                .output()
                .unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    // larder's tables, as a node of an older version made them (and no heartbeat).
    drop(larder::state::State::connect_from_async(&cluster.database).await.unwrap());
    let planted = "WITH made AS (INSERT INTO account (name, balance) VALUES ('zed', 3) RETURNING 1)
                   SELECT COUNT(*) FROM made";
    assert_eq!(cluster.count(planted).await, 1);
    let (success, said) = migrate(&first);
    assert!(!success && said.contains("holds 1 accounts and 0 files and folders"), "{said}");
    assert_eq!(cluster.count("SELECT COUNT(*) FROM entry WHERE path = '/a.txt'").await, 0);
    assert_eq!(cluster.count("SELECT balance FROM account WHERE name = 'zed'").await, 3);
    cluster.count("WITH gone AS (DELETE FROM account RETURNING 1) SELECT COUNT(*) FROM gone").await;
    let (success, said) = migrate(&first);
    assert!(success, "{said}");
    let (success, said) = migrate(&second);
    assert!(!success && said.contains("it was migrated into from file:"), "{said}");
    assert!(said.contains(&first.display().to_string()), "{said}");
    vec![
        "refused, changing nothing: a database holding an account no migration put there, \
         and one another folder was migrated into"
            .into(),
    ]
}

/// The sweep: replaced and deleted blobs go once their grace is over (made over here by
/// moving their time back in the database), abandoned uploads go, and a pending blob that a
/// row names (a commit whose answer was lost) stays.
pub async fn sweep() -> Vec<String> {
    use object_store::ObjectStore;
    use object_store::path::Path as BlobPath;

    let config = format!(
        "{}[[rule]]\npath = \"/\"\nread = [\"*\"]\nwrite = [\"erin\"]\n",
        accounts(&["erin"], None)
    );
    let cluster = Cluster::start("sweep", &config, 1);
    let a = cluster.addr(0);
    assert_eq!(put(a, "/kept.txt", "erin", "version one").await.status, 201);
    assert_eq!(put(a, "/kept.txt", "erin", "version two").await.status, 200);
    assert_eq!(put(a, "/gone.txt", "erin", "deleted").await.status, 201);
    let auth = basic("erin");
    let deleted = request(a, "DELETE", "/gone.txt", &[("authorization", &auth)], "").await.unwrap();
    assert_eq!(deleted.status, 204);

    // The node's own view of the bucket and the database, as `larder` opens them.
    let at = larder::config::BucketAt::parse(&cluster.store).unwrap().unwrap();
    let bucket = larder::store::bucket::connect(&at).unwrap();
    let state = larder::state::State::connect_from_async(&cluster.database).await.unwrap();
    let state = Arc::new(state);
    let store =
        larder::store::BucketStore::open(bucket.clone(), &at.prefix, state.clone()).unwrap();

    let blobs = |sql: &'static str| {
        let url = cluster.database.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                client.query(sql, &[]).unwrap().iter().map(|r| r.get(0)).collect::<Vec<String>>()
            })
            .await
            .unwrap()
        }
    };
    let doomed = blobs("SELECT blob FROM blob_doomed ORDER BY blob").await;
    assert_eq!(doomed.len(), 2, "the replaced and the deleted version");
    assert_eq!(store.sweep().await.unwrap(), 0, "within their grace, blobs stay");

    // An abandoned upload (nothing names it) and a lost commit's blob (a row names it).
    let live = blobs("SELECT blob FROM entry WHERE path = '/kept.txt'").await.remove(0);
    let orphan = format!("{}/blobs/orphan", at.prefix);
    bucket.put(&BlobPath::from(orphan.as_str()), "abandoned".into()).await.unwrap();
    let sql = format!(
        "UPDATE blob_doomed SET after = 0; INSERT INTO blob_pending (blob, since) VALUES \
         ('{orphan}', 0), ('{live}', 0)"
    );
    let url = cluster.database.clone();
    tokio::task::spawn_blocking(move || {
        postgres::Client::connect(&url, postgres::NoTls).unwrap().batch_execute(&sql).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(store.sweep().await.unwrap(), 3);
    for blob in doomed.iter().chain([&orphan]) {
        let gone = bucket.get(&BlobPath::from(blob.as_str())).await;
        assert!(matches!(gone, Err(object_store::Error::NotFound { .. })), "{blob}: {gone:?}");
    }
    assert_eq!(&get(a, "/kept.txt", None).await.body[..], b"version two");
    assert!(blobs("SELECT blob FROM blob_doomed").await.is_empty());
    vec![
        "a replaced and a deleted blob kept through their grace, then deleted with an \
          abandoned upload's; a pending blob that a row names kept and still served"
            .into(),
    ]
}

/// A large upload streams: 96 MiB in through one node, out through the other, while the
/// writing node's peak memory stays far below the file's size.
pub async fn large() -> Vec<String> {
    let config = format!(
        "max_upload = \"1 GiB\"\n{}[[rule]]\npath = \"/\"\nread = [\"*\"]\nwrite = [\"erin\"]\n",
        accounts(&["erin"], None)
    );
    let cluster = Cluster::start("large", &config, 2);
    let (a, b) = (cluster.addr(0), cluster.addr(1));
    let len = 96 << 20;
    let body = content("large", len);
    let reply = put(a, "/large.bin", "erin", body.clone()).await;
    assert_eq!(reply.status, 201);
    let peak = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap().to_owned();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
    };
    let written_peak = peak(cluster.nodes[0].child.id());
    assert!(written_peak < 64, "the writing node peaked at {written_peak} MiB for a 96 MiB upload");
    let read = get(b, "/large.bin", None).await;
    assert_eq!(read.status, 200);
    assert!(read.body == body, "the bytes read through the other node differ");
    let tail = request(b, "GET", "/large.bin", &[("range", "bytes=-10")], "").await.unwrap();
    assert_eq!((tail.status, &tail.body[..]), (206, &body[len - 10..]));
    let parts = cluster.count("SELECT COUNT(*) FROM entry WHERE path = '/large.bin'").await;
    assert_eq!(parts, 1);
    vec![format!(
        "96 MiB PUT through node 0 (multipart, 8 MiB parts) peaked at {written_peak} MiB \
         resident; read back whole and by range through node 1"
    )]
}

/// Runs `scripts/services COMMAND` (PostgreSQL stopped, started, frozen or thawed).
fn services(command: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services");
    let status = std::process::Command::new(script).arg(command).status().unwrap();
    assert!(status.success(), "scripts/services {command} failed");
}

/// A configuration for the outage scenarios: erin writes, `read` reads, and a dependency
/// that does not answer costs a request 2 s.
fn erin_writes(read: &str) -> String {
    format!(
        "dependency_timeout = \"2s\"\n{}[[rule]]\npath = \"/\"\nread = [\"{read}\"]\n\
         write = [\"erin\"]\n",
        accounts(&["erin"], None),
    )
}

/// Checks that every reply (status, `Retry-After`, how long it took) is a 503 with
/// `Retry-After: 5` that came well within the scenarios' 2 s limit plus slack; returns the
/// slowest time.
fn unavailable_in_time(replies: &[(u16, String, std::time::Duration)]) -> std::time::Duration {
    for (status, retry, took) in replies {
        assert_eq!((*status, retry.as_str()), (503, "5"), "{replies:?}");
        assert!(*took < std::time::Duration::from_secs(6), "took {took:?}");
    }
    replies.iter().map(|(_, _, took)| *took).max().unwrap()
}

/// Runs `scripts/services COMMAND` when dropped (starts or thaws what a scenario stopped or
/// froze), whatever the scenario came to.
struct Undo(&'static str);

impl Drop for Undo {
    fn drop(&mut self) {
        services(self.0);
    }
}

/// PostgreSQL stopped under traffic from two nodes, then started again: every request that
/// needs it is 503 `service-unavailable` with `Retry-After`, never a 500; a valid token is
/// never 401 and correct passwords are never throttled (no 429) because of it; the metrics
/// answer and count the 503s; once it is back, every request succeeds at once (no
/// connection left dead in the pool), and what was acknowledged before is there.
pub async fn database_outage() -> Vec<String> {
    let config = format!(
        "{}{}[[rule]]\npath = \"/\"\nread = [\"@authenticated\"]\nwrite = [\"erin\"]\n",
        accounts(&["erin"], None),
        admin("root"),
    );
    let cluster = Cluster::start("outage", &config, 2);
    let addrs = [cluster.addr(0), cluster.addr(1)];
    assert_eq!(put(addrs[0], "/o/a.txt", "erin", "before").await.status, 201);
    let made = post_json(addrs[1], "/.larder/tokens", "erin", json!({})).await;
    let bearer = format!("Bearer {}", made.json()["token"].as_str().unwrap());
    let basic_erin = basic("erin");
    assert_eq!(get(addrs[0], "/.larder/ready", None).await.status, 200);
    let restart = Undo("pg-start");
    services("pg-stop");
    // A load balancer asking for readiness hears which dependency is down; liveness holds.
    let ready = get(addrs[1], "/.larder/ready", None).await;
    assert_eq!((ready.status, ready.json()["down"].clone()), (503, json!(["database"])));
    assert_eq!(get(addrs[1], "/.larder/health", None).await.status, 200);
    let mut answers = std::collections::BTreeMap::<u16, usize>::new();
    // Sign-ins past the throttle's limit of 20 per address, with good credentials, all to
    // node 0: node 1's pooled connections sit idle through the outage, dead.
    for _ in 0..30 {
        for auth in [bearer.as_str(), basic_erin.as_str()] {
            let reply = get(addrs[0], "/o/a.txt", Some(auth)).await;
            *answers.entry(reply.status).or_default() += 1;
            assert_eq!(reply.status, 503, "{}", String::from_utf8_lossy(&reply.body));
            assert_eq!(reply.header("retry-after"), "5");
            assert_eq!(reply.json()["type"], "/.larder/problems/service-unavailable");
            assert_eq!(reply.json()["dependency"], "database");
        }
    }
    let metrics = get(addrs[0], "/.larder/metrics", Some(&basic("root"))).await;
    assert_eq!(metrics.status, 200, "the metrics come from memory");
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let counted = text
        .lines()
        .find(|l| l.starts_with("larder_dependency_unavailable_total{dependency=\"database\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(counted >= 60, "{text}");
    drop(restart);
    // Back: ready again, and every request on both nodes succeeds, the first ones included
    // (node 1's first).
    assert_eq!(get(addrs[0], "/.larder/ready", None).await.status, 200);
    for i in 0..20 {
        for auth in [bearer.as_str(), basic_erin.as_str()] {
            let reply = get(addrs[1 - i % 2], "/o/a.txt", Some(auth)).await;
            assert_eq!((reply.status, &reply.body[..]), (200, &b"before"[..]), "request {i} after");
        }
    }
    assert_eq!(put(addrs[1], "/o/b.txt", "erin", "after").await.status, 201);
    vec![format!(
        "PostgreSQL stopped: {answers:?} for 60 GETs with a valid token or password (never \
         401, 429 or 500), Retry-After 5, metrics answering ({counted} counted), readiness 503 \
         naming the database and 200 after; restarted: the next 40 GETs on both nodes (the \
         idle one's pool first) and a PUT all succeeded"
    )]
}

/// PostgreSQL frozen (SIGSTOP, as under a stalled disk): requests that need it are answered
/// 503 once `dependency_timeout` (2 s here) has passed, not left hanging; thawed, everything
/// succeeds again.
pub async fn database_frozen() -> Vec<String> {
    let config = erin_writes("@authenticated");
    let cluster = Cluster::start("frozen", &config, 2);
    let addrs = [cluster.addr(0), cluster.addr(1)];
    assert_eq!(put(addrs[0], "/f/a.txt", "erin", "before").await.status, 201);
    let made = post_json(addrs[1], "/.larder/tokens", "erin", json!({})).await;
    let bearer = format!("Bearer {}", made.json()["token"].as_str().unwrap());
    let thaw = Undo("pg-thaw");
    services("pg-freeze");
    let started = std::time::Instant::now();
    let replies = at_once(8, |i| {
        let (addr, auth) = (addrs[i % 2], [bearer.clone(), basic("erin")][i / 2 % 2].clone());
        async move {
            let sent = std::time::Instant::now();
            let reply = get(addr, "/f/a.txt", Some(&auth)).await;
            (reply.status, reply.header("retry-after").to_owned(), sent.elapsed())
        }
    })
    .await;
    let slowest = unavailable_in_time(&replies);
    drop(thaw);
    let frozen_for = started.elapsed();
    for i in 0..10 {
        let reply = get(addrs[i % 2], "/f/a.txt", Some(&bearer)).await;
        assert_eq!((reply.status, &reply.body[..]), (200, &b"before"[..]), "after, {i}");
    }
    vec![format!(
        "PostgreSQL frozen for {:.1} s: 8 GETs at once on 2 nodes all 503 with Retry-After, \
         the slowest in {:.1} s (dependency_timeout 2 s); thawed, 10 GETs all 200",
        frozen_for.as_secs_f64(),
        slowest.as_secs_f64()
    )]
}

/// Garage stopped under two nodes: readiness names the bucket, an uncached GET and a PUT
/// are 503 `service-unavailable` within seconds, never 500; started again, both work.
pub async fn bucket_outage() -> Vec<String> {
    let config = format!(
        "{}[[rule]]\npath = \"/\"\nread = [\"*\"]\nwrite = [\"erin\"]\n",
        accounts(&["erin"], None),
    );
    let cluster = Cluster::start("bucket", &config, 2);
    let addrs = [cluster.addr(0), cluster.addr(1)];
    let big = content("uncached", 2 << 20); // past the 1 MiB blob cache
    assert_eq!(put(addrs[0], "/b/big.bin", "erin", big.clone()).await.status, 201);
    let restart = Undo("garage-start");
    services("garage-stop");
    let ready = get(addrs[1], "/.larder/ready", None).await;
    assert_eq!((ready.status, ready.json()["down"].clone()), (503, json!(["bucket"])));
    let mut slowest = std::time::Duration::ZERO;
    for (i, addr) in addrs.iter().enumerate() {
        let sent = std::time::Instant::now();
        let got = get(*addr, "/b/big.bin", None).await;
        let stored = put(*addr, &format!("/b/new-{i}.txt"), "erin", "new").await;
        slowest = slowest.max(sent.elapsed());
        for reply in [&got, &stored] {
            assert_eq!(reply.status, 503, "{}", String::from_utf8_lossy(&reply.body));
            assert_eq!(reply.json()["dependency"], "bucket");
            assert_eq!(reply.header("retry-after"), "5");
        }
    }
    drop(restart);
    assert_eq!(get(addrs[0], "/.larder/ready", None).await.status, 200);
    let got = get(addrs[1], "/b/big.bin", None).await;
    assert!(got.status == 200 && got.body == big, "{}", got.status);
    assert_eq!(put(addrs[0], "/b/after.txt", "erin", "after").await.status, 201);
    vec![format!(
        "Garage stopped: readiness 503 naming the bucket; an uncached 2 MiB GET and a PUT on \
         each node all 503 with Retry-After (the slowest pair in {:.1} s); started again: \
         ready, the GET and a PUT work",
        slowest.as_secs_f64()
    )]
}

/// A row lock held by another session (a long transaction, a stuck migration): requests
/// that wait for it are answered 503 within `dependency_timeout` (2 s here), and PostgreSQL
/// itself cancels their statements then (`statement_timeout`), so no connection of the pool
/// is left waiting; released, the path is written at once.
pub async fn lock_held() -> Vec<String> {
    let config = erin_writes("*");
    let cluster = Cluster::start("lock", &config, 2);
    let addrs = [cluster.addr(0), cluster.addr(1)];
    assert_eq!(put(addrs[0], "/l/a.txt", "erin", "before").await.status, 201);
    assert_eq!(cluster.count("SELECT COUNT(*) FROM entry WHERE path = '/l/a.txt'").await, 1);
    // Another session takes the row and keeps it until told to let go.
    let (held_tx, held) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let url = cluster.database.clone();
    let holder = std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut tx = client.transaction().unwrap();
        tx.query("SELECT 1 FROM entry WHERE path = '/l/a.txt' FOR UPDATE", &[]).unwrap();
        held_tx.send(()).unwrap();
        let _ = released.recv();
        tx.commit().unwrap();
    });
    held.recv().unwrap();
    let replies = at_once(4, |i| async move {
        let sent = std::time::Instant::now();
        let reply = put(addrs[i % 2], "/l/a.txt", "erin", format!("during {i}")).await;
        (reply.status, reply.header("retry-after").to_owned(), sent.elapsed())
    })
    .await;
    let slowest = unavailable_in_time(&replies);
    // With the lock still held, none of larder's sessions waits for it any more: PostgreSQL
    // cancelled them at statement_timeout (checked until a deadline: the cancel lands a
    // moment after the 503).
    // (The query sees larder's sessions at all: else it would count none whatever happened.)
    let sessions = "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'larder'";
    assert!(cluster.count(sessions).await > 0, "larder's sessions are named larder");
    let waiting = "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'larder' \
                   AND wait_event_type = 'Lock'";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut still = cluster.count(waiting).await;
    while still > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        still = cluster.count(waiting).await;
    }
    assert_eq!(still, 0, "sessions left waiting for the lock");
    release.send(()).unwrap();
    holder.join().unwrap();
    for i in 0..6 {
        let reply = put(addrs[i % 2], "/l/a.txt", "erin", format!("after {i}")).await;
        assert_eq!(reply.status, 200, "after, {i}");
    }
    assert_eq!(&get(addrs[1], "/l/a.txt", None).await.body[..], b"after 5");
    vec![format!(
        "a row lock held by another session: 4 PUTs on 2 nodes all 503 with Retry-After, the \
         slowest in {:.1} s (dependency_timeout 2 s); no larder session left waiting for the \
         lock; released, 6 PUTs all 200",
        slowest.as_secs_f64()
    )]
}

/// Garage frozen (SIGSTOP: it accepts connections and never answers): readiness, uncached
/// GETs and PUTs are 503 within `dependency_timeout` (2 s here), a small file the node has
/// cached is still served; thawed, everything works and what was acknowledged is there.
pub async fn bucket_frozen() -> Vec<String> {
    let config = erin_writes("*");
    let cluster = Cluster::start("bucketfrozen", &config, 2);
    let addrs = [cluster.addr(0), cluster.addr(1)];
    let big = content("uncached", 2 << 20); // past the 1 MiB blob cache
    assert_eq!(put(addrs[0], "/f/big.bin", "erin", big.clone()).await.status, 201);
    assert_eq!(put(addrs[0], "/f/small.txt", "erin", "small").await.status, 201);
    assert_eq!(&get(addrs[1], "/f/small.txt", None).await.body[..], b"small", "now cached");
    let thaw = Undo("garage-thaw");
    services("garage-freeze");
    let started = std::time::Instant::now();
    let ready = get(addrs[0], "/.larder/ready", None).await;
    assert_eq!((ready.status, ready.json()["down"].clone()), (503, json!(["bucket"])));
    let replies = at_once(4, |i| {
        let big = big.clone();
        async move {
            let sent = std::time::Instant::now();
            let reply = match i {
                0 | 1 => get(addrs[i], "/f/big.bin", None).await,
                _ => put(addrs[i % 2], &format!("/f/new-{i}.bin"), "erin", big).await,
            };
            assert_eq!(reply.json()["dependency"], "bucket", "{i}");
            (reply.status, reply.header("retry-after").to_owned(), sent.elapsed())
        }
    })
    .await;
    let slowest = unavailable_in_time(&replies);
    let cached = get(addrs[1], "/f/small.txt", None).await;
    assert_eq!((cached.status, &cached.body[..]), (200, &b"small"[..]), "served from memory");
    drop(thaw);
    let frozen_for = started.elapsed();
    assert_eq!(get(addrs[1], "/.larder/ready", None).await.status, 200);
    for addr in addrs {
        let got = get(addr, "/f/big.bin", None).await;
        assert!(got.status == 200 && got.body == big, "{}", got.status);
    }
    assert_eq!(put(addrs[1], "/f/after.bin", "erin", big.clone()).await.status, 201);
    assert!(get(addrs[0], "/f/after.bin", None).await.body == big);
    vec![format!(
        "Garage frozen for {:.1} s: readiness 503 naming the bucket; 2 uncached 2 MiB GETs and \
         2 PUTs on 2 nodes all 503 with Retry-After, the slowest in {:.1} s (dependency_timeout \
         2 s); a cached small file still served; thawed: ready, the GETs and a PUT work",
        frozen_for.as_secs_f64(),
        slowest.as_secs_f64()
    )]
}

/// What a start-up case is: what is wrong, the state, the store, environment changes (a
/// variable set, or removed when `None`), and what the message must say.
type Misconfigured =
    (&'static str, String, String, &'static [(&'static str, Option<&'static str>)], &'static str);

/// Each misconfiguration of the database or the bucket stops the start, and fails
/// `larder check`, with a message that names the cause.
pub async fn startup() -> Vec<String> {
    let database = std::env::var("LARDER_TEST_DATABASE").unwrap();
    let (head, _) = database.rsplit_once('/').unwrap();
    let bucket = std::env::var("LARDER_TEST_BUCKET").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases: [Misconfigured; 5] = [
        (
            "a database that does not exist",
            format!("{head}/no_such_database"),
            format!("s3://{bucket}/startup"),
            &[],
            "database \"no_such_database\" does not exist",
        ),
        (
            "a bucket endpoint that refuses",
            database.clone(),
            format!("s3://{bucket}/startup"),
            &[("AWS_ENDPOINT_URL", Some("http://127.0.0.1:1"))],
            "at http://127.0.0.1:1",
        ),
        (
            "no AWS_* settings",
            database.clone(),
            format!("s3://{bucket}/startup"),
            &[
                ("AWS_ACCESS_KEY_ID", None),
                ("AWS_SECRET_ACCESS_KEY", None),
                ("AWS_REGION", None),
                ("AWS_ENDPOINT_URL", None),
            ],
            "unset: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION",
        ),
        (
            "a wrong secret",
            database.clone(),
            format!("s3://{bucket}/startup"),
            &[("AWS_SECRET_ACCESS_KEY", Some("wrong"))],
            "the bucket s3://",
        ),
        (
            "a bucket that does not exist",
            database.clone(),
            "s3://no-such-bucket-larder/startup".to_owned(),
            &[],
            "the bucket s3://no-such-bucket-larder/startup",
        ),
    ];
    let mut lines = Vec::new();
    for (what, state, store, env, expected) in cases {
        let config = dir.path().join("larder.toml");
        let text =
            format!("state = \"{state}\"\nstore = \"{store}\"\ndependency_timeout = \"3s\"\n");
        std::fs::write(&config, text).unwrap();
        for command in ["serve", "check"] {
            let mut run = crate::larder_process::larder(&[
                command,
                "--config",
                config.to_str().unwrap(),
                "--port",
                "0",
            ]);
            for (name, value) in env {
                match value {
                    Some(value) => run.env(name, value),
                    None => run.env_remove(name),
                };
            }
            // A start that wrongly succeeds would serve on: it gets 20 s, then fails the test.
            run.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
            let out = tokio::task::spawn_blocking(move || {
                let mut child = run.spawn().unwrap();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                while child.try_wait().unwrap().is_none() {
                    if std::time::Instant::now() > deadline {
                        let _ = child.kill();
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                child.wait_with_output().unwrap()
            })
            .await
            .unwrap();
            let said = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(out.status.code(), Some(1), "{what}, {command}: {said}");
            assert!(said.contains(expected), "{what}, {command}: {said}");
            if command == "serve" {
                lines.push(format!("{what}: {}", said.trim()));
            }
        }
    }
    lines
}
