//! Hostile content, shared caches and inputs no well-behaved client sends, over TCP: what
//! bob uploads cannot run script in larder's origin, what depends on credentials is private,
//! and no input costs more than it should or answers 500.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_declare_one_media_type_and_unsafe_ones_are_sandboxed() {
    let server = TestServer::with_config(&team_config("")).await;
    let bob = basic("bob");
    let put = async |target: &str, content_type: &str, body: &str| {
        let headers = [("authorization", bob.as_str()), ("content-type", content_type)];
        server.send("PUT", target, &headers, body.to_owned()).await
    };
    // Lists, and what does not parse: 415, nothing stored.
    for declared in [
        "text/plain,text/html",
        "application/octet-stream,text/html",
        "text/plain; a=b, text/html",
        "html",
    ] {
        put("/trick.html", declared, "<script>steal()</script>")
            .await
            .assert_problem(415, "unsupported-media-type");
        assert!(!server.file("trick.html").exists(), "{declared}");
    }
    // Stored normalised (text that is UTF-8 says so); served with a sandbox unless a browser
    // shows the type safely inline.
    let cases = [
        ("/a.xsl", "text/xsl", "text/xsl; charset=utf-8", true),
        ("/b.svg", "image/svg+xml", "image/svg+xml; charset=utf-8", true),
        ("/c.xhtml", "application/xhtml+xml", "application/xhtml+xml; charset=utf-8", true),
        ("/d.html", "TEXT/HTML; Charset=UTF-8", "text/html; charset=utf-8", true),
        ("/e.txt", "text/plain", "text/plain; charset=utf-8", false),
        ("/f.png", "image/png", "image/png", false),
        ("/g.json", "application/json", "application/json; charset=utf-8", false),
        ("/h.bin", "application/octet-stream", "application/octet-stream", true),
    ];
    for (target, declared, stored, sandboxed) in cases {
        assert_eq!(put(target, declared, "<script>steal()</script>").await.status, 201, "{target}");
        for method in ["GET", "HEAD"] {
            let reply = server.send(method, target, &[], "").await;
            assert_eq!(reply.header("content-type"), stored, "{target}");
            assert_eq!(reply.header("x-content-type-options"), "nosniff", "{target}");
            let csp = reply.header("content-security-policy");
            assert_eq!(csp == "sandbox", sandboxed, "{target}: {csp:?}");
        }
    }
    // HTML under a name that says text, and a file placed without a type: by extension.
    assert_eq!(server.put_as("bob", "/page.txt", "<script>steal()</script>").await.status, 201);
    let text = server.get("/page.txt", &[]).await;
    assert_eq!(
        (text.header("content-type"), text.header("x-content-type-options")),
        ("text/plain; charset=utf-8", "nosniff")
    );
    server.place("placed.html", b"<script>steal()</script>");
    assert_eq!(server.get("/placed.html", &[]).await.header("content-security-policy"), "sandbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_depend_on_credentials_are_private_whatever_their_status() {
    let config = format!("{}\n{HOMES}", team_config(""));
    let server = TestServer::with_config(&config).await;
    let alice = basic("alice");
    assert_eq!(server.put_as("alice", "/home/alice/folder/a.txt", "a").await.status, 201);
    server.place("public.txt", b"p");
    let made = crate::tokens::new_token(&server, &alice, "").await.json();
    let cookie = format!("larder-token={}", made["token"].as_str().unwrap());
    let by_cookie = [("cookie", cookie.as_str())];
    let by_password = [("authorization", alice.as_str())];
    for (target, status) in [
        ("/home/alice/folder", 301),
        ("/home/alice/folder/", 200),
        ("/home/alice/folder/a.txt", 200),
        ("/home/alice/nothing.txt", 404),
        ("/public.txt", 200),
    ] {
        let reply = server.get(target, &by_cookie).await;
        assert_eq!(reply.status, status, "{target}");
        assert_eq!(reply.header("cache-control"), "private", "{target} by cookie");
        assert!(reply.header_all("vary").iter().any(|v| v.contains("Cookie")), "{target}");
        let reply = server.get(target, &by_password).await;
        assert_eq!(reply.header("cache-control"), "private", "{target} by password");
    }
    // The same URLs without credentials: cacheable, but keyed by the cookie.
    let anonymous = server.get("/public.txt", &[]).await;
    assert_eq!(anonymous.header("cache-control"), "");
    assert!(anonymous.header_all("vary").iter().any(|v| v.contains("Cookie")));
    let missing = server.get("/home/alice/folder", &[]).await;
    assert_eq!((missing.status, missing.header("cache-control")), (404, ""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_userinfo_and_two_authorizations_change_nothing() {
    let server = TestServer::with_config(&team_config("")).await;
    server.place("pub/frag/keep.txt", b"kept");
    let alice = basic("alice");
    // `#` in the target: hyper's URI would drop it, and the DELETE would take /pub/frag/.
    let deleted = server
        .raw(format!("DELETE /pub/frag/#ment HTTP/1.1\r\nHost: a\r\nAuthorization: {alice}\r\nDepth: infinity\r\nConnection: close\r\n\r\n").as_bytes())
        .await;
    assert!(deleted.starts_with("HTTP/1.1 400"), "{deleted}");
    assert_eq!(std::fs::read(server.file("pub/frag/keep.txt")).unwrap(), b"kept");
    // Userinfo in an absolute-form target: refused, not served.
    let userinfo = server
        .raw(b"GET http://alice:correct%20horse@a/pub/frag/keep.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await;
    assert!(userinfo.starts_with("HTTP/1.1 400") && !userinfo.contains("kept"), "{userinfo}");
    // Two Authorization fields: neither is chosen.
    let two = server
        .raw(format!("PUT /two.txt HTTP/1.1\r\nHost: a\r\nAuthorization: {alice}\r\nAuthorization: {}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx", basic("bob")).as_bytes())
        .await;
    assert!(two.starts_with("HTTP/1.1 400") && two.contains("Authorization is repeated"), "{two}");
    assert!(!server.file("two.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_out_of_range_are_400_naming_the_field_never_500() {
    let server = TestServer::with_config(&team_config("")).await;
    let (alice, root) = (basic("alice"), basic("root"));
    let json = |auth: &str| {
        [("authorization", auth.to_owned()), ("content-type", "application/json".to_owned())]
    };
    let post = async |target: &str, auth: &str, body: &str| {
        let headers = json(auth);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        server.send("POST", target, &headers, body.to_owned()).await
    };
    for body in [
        r#"{"expires_in": 99999999999999999}"#,
        r#"{"expires_in": 99999999999999999999999}"#,
        r#"{"expires_in": "99999999999d"}"#,
        r#"{"expires_in": -1}"#,
        r#"{"expires_in": 1.5}"#,
    ] {
        let reply = post("/.larder/tokens", &alice, body).await;
        reply.assert_problem(400, "bad-request");
        assert!(
            reply.json()["detail"].as_str().unwrap().contains("expires_in"),
            "{body}: {}",
            reply.text()
        );
    }
    // Nothing was stored, and the list still answers.
    let listed = server.get("/.larder/tokens", &[("authorization", &alice)]).await;
    assert_eq!((listed.status, listed.json()["tokens"].clone()), (200, serde_json::json!([])));
    // A century is the longest; it lists with a date.
    let long = post("/.larder/tokens", &alice, r#"{"expires_in": "36500d"}"#).await;
    assert_eq!(long.status, 201);
    assert!(server.get("/.larder/tokens", &[("authorization", &alice)]).await.status == 200);

    for amount in
        [i64::MAX.to_string(), i64::MIN.to_string(), "9007199254740992".into(), "1e30".into()]
    {
        let reply =
            post("/.larder/accounts/alice/credits", &root, &format!(r#"{{"amount": {amount}}}"#))
                .await;
        reply.assert_problem(400, "bad-request");
        assert!(reply.json()["detail"].as_str().unwrap().contains("amount"), "{amount}");
    }
    // The largest balance is reached, never passed.
    let top =
        post("/.larder/accounts/alice/credits", &root, r#"{"amount": 9007199254740991}"#).await;
    assert_eq!((top.status, top.json()["balance"].as_u64()), (200, Some(9007199254740991)));
    post("/.larder/accounts/alice/credits", &root, r#"{"amount": 1}"#)
        .await
        .assert_problem(409, "conflict");
    let account = server.get("/.larder/account", &[("authorization", &alice)]).await;
    assert_eq!(account.json()["balance"].as_u64(), Some(9007199254740991));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_never_send_more_than_the_whole() {
    let server = TestServer::open().await;
    let bytes: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    server.place("big.bin", &bytes);
    // 32 times the whole file, asked for in a 201-byte field.
    let field = format!("bytes={}", vec!["0-"; 32].join(","));
    let reply = server.get("/big.bin", &[("range", &field)]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), 4 << 20, "the whole, once");
    assert!(reply.body[..] == bytes[..]);
    // Overlapping ranges come back as one part.
    let reply = server.get("/big.bin", &[("range", "bytes=100-199,150-299,0-99")]).await;
    assert_eq!((reply.status, reply.header("content-range")), (206, "bytes 0-299/4194304"));
    assert!(reply.body[..] == bytes[..300]);
}

/// As curl sends a large file of unknown length: a head with `Expect: 100-continue`, then,
/// once told to go on, chunks as fast as the socket takes them, and only then a read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_past_the_quota_gets_a_402_it_can_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::with_config(&crate::payment::shop_config()).await;
    let alice = basic("alice"); // 1 KiB of storage
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "PUT /big.bin HTTP/1.1\r\nHost: a\r\nAuthorization: {alice}\r\n\
         Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    let chunk = [b"10000\r\n".as_slice(), &[b'x'; 0x10000], b"\r\n"].concat();
    for _ in 0..64 {
        stream.write_all(&chunk).await.unwrap(); // 4 MiB in all
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 402"), "{answer}");
    assert!(
        answer.contains("quota-exceeded")
            && answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(!server.file("big.bin").exists());
}

/// A form of `parts` file parts named `name`, each holding `bytes`.
fn form_of(parts: usize, name: &str, bytes: &str) -> (String, String) {
    let b = "form-boundary";
    let mut body = String::new();
    for _ in 0..parts {
        body.push_str(&format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"f\"; filename=\"{name}\"\r\n\
             Content-Type: text/plain\r\n\r\n{bytes}\r\n"
        ));
    }
    body.push_str(&format!("--{b}--\r\n"));
    (format!("multipart/form-data; boundary={b}"), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_is_all_or_nothing() {
    let server = TestServer::with_config(&crate::payment::shop_config()).await;
    let bob = basic("bob");
    assert_eq!(server.put_as("bob", "/drop/", "").await.status, 201);
    // 300 parts named alike: the 101st finds no free name. Nothing of the form stays.
    let (ct, body) = form_of(300, "same.txt", "x");
    let reply = server
        .send("POST", "/drop/", &[("authorization", &bob), ("content-type", &ct)], body)
        .await;
    reply.assert_problem(409, "conflict");
    assert_eq!(reply.json()["removed"].as_array().unwrap().len(), 100, "{}", reply.text());
    assert!(reply.json()["detail"].as_str().unwrap().contains("removed"));
    assert_eq!(std::fs::read_dir(server.file("drop")).unwrap().count(), 0);
    // A form that crosses the quota half-way (alice: 1 KiB): 402, nothing stored, nothing used.
    let alice = basic("alice");
    let (ct, body) = form_of(3, "part.txt", &"y".repeat(400));
    let reply = server
        .send("POST", "/drop/", &[("authorization", &alice), ("content-type", &ct)], body)
        .await;
    reply.assert_problem(402, "quota-exceeded");
    assert_eq!(reply.json()["removed"].as_array().unwrap().len(), 2, "{}", reply.text());
    assert_eq!(std::fs::read_dir(server.file("drop")).unwrap().count(), 0);
    let account = server.get("/.larder/account", &[("authorization", &alice)]).await.json();
    assert_eq!(account["storage"]["used"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_paths_have_a_limit_and_their_parents_are_made_in_one_walk() {
    let server = TestServer::with_config(&team_config("")).await;
    let deep = |depth: usize| format!("{}/f.txt", "/d".repeat(depth - 1));
    // 256 segments (255 folders and the file): made, each missing folder once.
    let made = server.put_as("alice", &deep(256), "deep").await;
    assert_eq!(made.status, 201, "{}", made.text());
    assert_eq!(&server.get(&deep(256), &[]).await.body[..], b"deep");
    // 257: 414, nothing made.
    server
        .put_as("alice", &deep(257).replace("/d/", "/e/"), "x")
        .await
        .assert_problem(414, "uri-too-long");
    assert!(!server.file("e").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_folders_are_listed_a_page_at_a_time() {
    let server = TestServer::open().await;
    for i in 0..2500 {
        // Sizes that do not follow names, so that sorting by size spans pages.
        server.place(&format!("big/f{i:04}.txt"), &vec![b'x'; (i * 7919) % 3001]);
    }
    // JSON: pages of `limit`, a cursor in `next` and in Link, each name exactly once.
    let mut names = Vec::new();
    let mut target = "/big/?limit=1000".to_owned();
    let mut pages = 0;
    loop {
        let reply = server.get(&target, &[("accept", "application/json")]).await;
        assert_eq!(reply.status, 200, "{target}: {}", reply.text());
        let doc = reply.json();
        let entries = doc["entries"].as_array().unwrap();
        assert!(entries.len() <= 1000);
        names.extend(entries.iter().map(|e| e["name"].as_str().unwrap().to_owned()));
        pages += 1;
        match doc["next"].as_str() {
            Some(next) => {
                assert_eq!(reply.header("link"), format!("<{next}>; rel=\"next\""));
                target = next.to_owned();
            }
            None => break,
        }
    }
    let want: Vec<String> = (0..2500).map(|i| format!("f{i:04}.txt")).collect();
    assert_eq!((pages, names), (3, want));
    // Without a limit, a page of 1,000; a limit out of range names the field.
    let first = server.list("/big/", &[("accept", "application/json")]).await.json();
    assert_eq!(first["entries"].as_array().unwrap().len(), 1000);
    for bad in ["0", "10001", "-1", "ten"] {
        let reply =
            server.get(&format!("/big/?limit={bad}"), &[("accept", "application/json")]).await;
        reply.assert_problem(400, "bad-request");
        assert!(reply.json()["detail"].as_str().unwrap().starts_with("limit:"), "{bad}");
    }
    // HTML: 1,000 rows a page, sorted across pages, with links between them.
    let html = async |query: &str| {
        let reply = server.get(&format!("/big/{query}"), &[("accept", "text/html")]).await;
        assert_eq!(reply.status, 200, "{query}");
        reply.text()
    };
    let rows = |page: &str| page.matches("<tr data-kind").count();
    let first = html("").await;
    assert_eq!(rows(&first), 1000);
    assert!(first.contains("Page 1 of 3") && first.contains("rel=\"next\" href=\"?page=2\""));
    assert!(first.contains("2500 files"), "the summary counts the whole folder");
    assert_eq!(rows(&html("?page=3").await), 500);
    let largest = (0..2500).max_by_key(|i| ((i * 7919) % 3001, std::cmp::Reverse(*i))).unwrap();
    let by_size = html("?sort=size&order=desc").await;
    let first_row = by_size.split("<tr data-kind").nth(1).unwrap();
    assert!(first_row.contains(&format!("data-name=\"f{largest:04}.txt\"")), "{first_row}");
    assert!(by_size.contains("href=\"?sort=size&amp;order=desc&amp;page=2\""));
    let reply = server.get("/big/?page=0", &[("accept", "text/html")]).await;
    assert_eq!(reply.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_limits_how_many_resources_an_account_owns() {
    let config = team_config("[plan.few]\nstorage = \"1 MiB\"\nfiles = 4\n")
        .replace("name = \"bob\"\n", "name = \"bob\"\nplan = \"few\"\n");
    let server = TestServer::with_config(&config).await;
    let bob = basic("bob");
    // The folder a PUT makes is a resource: /bob/ and two files are three.
    for name in ["a", "b"] {
        assert_eq!(server.put_as("bob", &format!("/bob/{name}.txt"), "x").await.status, 201);
    }
    // A file in a new folder would be five: refused whole, no folder left behind; so is an
    // empty new folder made by PUT, once there is no room for it.
    for body in [vec![b'x'], vec![b'x'; 300_000]] {
        let reply = server.put_as("bob", "/bob/deep/c.txt", body).await;
        reply.assert_problem(402, "quota-exceeded");
        assert_eq!(reply.json()["resources"].as_u64(), Some(3));
        assert!(!server.file("bob/deep").exists());
    }
    assert_eq!(server.put_as("bob", "/bob/c.txt", "x").await.status, 201);
    // A fifth, even empty, even a folder, is refused before its body; replacing one is not
    // a new one.
    for (target, body) in [("/bob/d.txt", "x"), ("/bob/empty.txt", ""), ("/bob/new/", "")] {
        let reply = server.put_as("bob", target, body).await;
        reply.assert_problem(402, "quota-exceeded");
        assert_eq!(
            (reply.json()["resources"].as_u64(), reply.json()["resources_quota"].as_u64()),
            (Some(4), Some(4)),
            "{target}"
        );
    }
    assert!(!server.file("bob/new").exists());
    assert_eq!(server.put_as("bob", "/bob/a.txt", "again").await.status, 200);
    let alices = "/alice/in/a/folder.txt";
    assert_eq!(server.put_as("alice", alices, "not bob's plan").await.status, 201);
    // One removed: one slot. Ten at once for it: one wins, the others are refused.
    assert_eq!(
        server.send("DELETE", "/bob/b.txt", &[("authorization", &bob)], "").await.status,
        204
    );
    let racers: Vec<_> = (0..10)
        .map(|i| {
            let (addr, bob) = (server.addr, bob.clone());
            tokio::spawn(async move {
                let mut connection = Connection::open(addr).await.unwrap();
                connection
                    .send("PUT", &format!("/bob/race-{i}.txt"), &[("authorization", &bob)], "r")
                    .await
                    .status
            })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        match racer.await.unwrap() {
            201 => won += 1,
            status => assert_eq!(status, 402),
        }
    }
    assert_eq!(won, 1, "exactly one new resource fits");
    let owned = std::fs::read_dir(server.file("bob")).unwrap().count();
    assert_eq!(owned, 3);
    // Removing the folder frees all four. A file put in folders that exist is one resource,
    // whoever made them; then three levels and a file fit, and no more.
    let whole = [("authorization", bob.as_str()), ("depth", "infinity")];
    assert_eq!(server.send("DELETE", "/bob/", &whole, "").await.status, 204);
    assert_eq!(server.put_as("bob", "/alice/in/a/bob.txt", "").await.status, 201);
    assert_eq!(server.put_as("bob", "/bob/x/f.txt", "x").await.status, 201);
    assert_eq!(server.put_as("bob", "/bob/x/z/", "").await.status, 402);
    assert!(!server.file("bob/x/z").exists());
    // A listing names who made each folder, as it does for files.
    let listing = server.get("/bob/", &[("accept", "application/json")]).await;
    let entries = listing.json()["entries"].clone();
    let x = entries.as_array().unwrap().iter().find(|e| e["name"] == "x");
    assert_eq!(x.map(|x| x["owner"].clone()), Some("bob".into()), "{}", listing.text());
}
