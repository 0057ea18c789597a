//! Every row of SPEC section 3's method table, over TCP.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_delete_cycle() {
    let server = TestServer::with_config(&team_config("")).await;
    let created = server.put_as("alice", "/a.txt", "hello\n").await;
    assert_eq!(created.status, 201);
    assert_eq!(created.header("location"), "/a.txt");
    let etag = created.header("etag").to_owned();
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag}");
    let doc = created.json();
    assert_eq!(doc["path"], "/a.txt");
    assert_eq!(doc["size"], 6);
    assert_eq!(doc["etag"], etag.as_str());
    assert_eq!(doc["content_type"], "text/plain; charset=utf-8");
    assert_eq!(doc["owner"], "alice");
    assert!(doc["modified"].as_str().unwrap().ends_with('Z'));
    assert_eq!(std::fs::read(server.file("a.txt")).unwrap(), b"hello\n");

    let replaced = server.put_as("bob", "/a.txt", "hello again\n").await;
    assert_eq!(replaced.status, 200);
    assert_eq!(replaced.header("location"), "");
    assert_ne!(replaced.header("etag"), etag, "new bytes, new ETag");
    assert_eq!(replaced.json()["owner"], "alice", "the creator stays the owner");

    let got = server.get("/a.txt", &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], b"hello again\n");
    assert_eq!(got.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(got.header("content-length"), "12");
    assert_eq!(got.header("etag"), replaced.header("etag"));
    assert_eq!(got.header("accept-ranges"), "bytes");
    assert!(httpdate::parse_http_date(got.header("last-modified")).is_ok());

    let auth = basic("alice");
    let deleted = server.send("DELETE", "/a.txt", &[("authorization", &auth)], "").await;
    assert_eq!(deleted.status, 204);
    assert!(deleted.body.is_empty());
    assert!(!server.file("a.txt").exists());
    server.get("/a.txt", &[]).await.assert_problem(404, "not-found");
    let again = server.send("DELETE", "/a.txt", &[("authorization", &auth)], "").await;
    again.assert_problem(404, "not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_has_get_headers_and_no_body() {
    let server = TestServer::open().await;
    server.place("docs/report.pdf", &[7u8; 3000]);
    for target in ["/docs/report.pdf", "/docs/", "/missing", "/docs/report.pdf/"] {
        let get = server.get(target, &[]).await;
        let head = server.send("HEAD", target, &[], "").await;
        assert_eq!(head.status, get.status, "{target}");
        assert!(head.body.is_empty(), "{target}");
        assert_eq!(head.stable_headers(), get.stable_headers(), "{target}");
        assert_eq!(head.header("content-length"), get.body.len().to_string(), "{target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_keeps_content_type_and_guesses_otherwise() {
    let server = TestServer::with_config(&team_config("")).await;
    let auth = basic("alice");
    let put = server
        .send(
            "PUT",
            "/data.bin",
            &[("authorization", &auth), ("content-type", "application/x-larder-test")],
            "x",
        )
        .await;
    assert_eq!(put.status, 201);
    assert_eq!(
        server.get("/data.bin", &[]).await.header("content-type"),
        "application/x-larder-test"
    );
    server.place("page.html", b"<p>hi</p>");
    assert_eq!(server.get("/page.html", &[]).await.header("content-type"), "text/html");
    server.place("noext", b"?");
    assert_eq!(server.get("/noext", &[]).await.header("content-type"), "application/octet-stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_in_json_and_escaped_html() {
    let server = TestServer::open().await;
    server.place("docs/a.txt", b"aaa");
    server.place("docs/<script>alert(1)<\\script>", b"x");
    server.place("docs/sub/b.txt", b"b");
    // What wget, curl and rclone's http remote send get the page; JSON when preferred.
    for accept in [None, Some("*/*"), Some("text/html")] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let page = server.get("/docs/", &headers).await;
        assert_eq!(page.header("content-type"), "text/html; charset=utf-8", "{accept:?}");
    }
    let asked = server.get("/docs/?format=json", &[("accept", "text/html")]).await;
    assert_eq!(asked.header("content-type"), "application/json");
    let listing = server.list("/docs/", &[]).await;
    assert_eq!(listing.status, 200);
    assert_eq!(listing.header("content-type"), "application/json");
    assert_eq!(listing.header("vary"), "Accept, Accept-Encoding, Cookie");
    // Validators: the same listing is 304, a change makes a new tag.
    let etag = listing.header("etag").to_owned();
    assert!(etag.starts_with('"') && !listing.header("last-modified").is_empty());
    let again = server.list("/docs/", &[("if-none-match", &etag)]).await;
    assert_eq!((again.status, again.header("etag")), (304, etag.as_str()));
    let since = listing.header("last-modified").to_owned();
    assert_eq!(server.list("/docs/", &[("if-modified-since", &since)]).await.status, 304);
    let html_tag = server.get("/docs/", &[]).await.header("etag").to_owned();
    assert_ne!(html_tag, etag, "a tag per format");
    let doc = listing.json();
    assert_eq!(doc["path"], "/docs/");
    let entries = doc["entries"].as_array().unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["<script>alert(1)<\\script>", "a.txt", "sub"]);
    let a = &entries[1];
    assert_eq!(a["size"], 3);
    assert_eq!(a["type"], "resource");
    assert_eq!(a["path"], "/docs/a.txt");
    assert_eq!(entries[2]["type"], "collection");
    assert_eq!(entries[2]["path"], "/docs/sub/");

    let browser = "text/html,application/xhtml+xml,*/*;q=0.8";
    let html = server.get("/docs/", &[("accept", browser)]).await;
    assert_eq!(html.status, 200);
    assert!(html.header("content-type").starts_with("text/html"));
    assert!(html.header("content-security-policy").contains("default-src 'none'"));
    let page = html.text();
    assert!(!page.contains("<script>"), "{page}");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;\\script&gt;"), "{page}");
    assert!(page.contains("href=\"/docs/%3Cscript%3Ealert(1)%3C%5Cscript%3E\""), "{page}");
    assert!(page.contains("href=\"/docs/sub/\""), "{page}");
    // Sorting is a form, which crawlers and `wget -r` do not follow; a sorted view says so.
    assert!(page.contains("<button name=\"order\" value=\"asc\">Size</button>"), "{page}");
    assert!(!page.contains("href=\"?sort"), "{page}");
    assert!(!page.contains("name=\"robots\""), "{page}");
    let sorted = server.get("/docs/?sort=size&order=desc", &[("accept", browser)]).await.text();
    assert!(sorted.contains("<meta name=\"robots\" content=\"noindex, nofollow\">"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_without_slash_redirects() {
    let server = TestServer::open().await;
    server.place("docs/a.txt", b"a");
    let reply = server.get("/docs", &[]).await;
    assert_eq!(reply.status, 301);
    assert_eq!(reply.header("location"), "/docs/");
    // A file named with a trailing slash is not a collection.
    server.get("/docs/a.txt/", &[]).await.assert_problem(404, "not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_makes_collections_and_parents() {
    let server = TestServer::with_config(&team_config("")).await;
    let made = server.put_as("alice", "/docs/new/", "").await;
    assert_eq!(made.status, 201);
    assert_eq!(made.header("location"), "/docs/new/");
    assert_eq!(made.json()["type"], "collection");
    assert!(server.file("docs/new").is_dir());
    assert_eq!(server.put_as("alice", "/docs/new/", "").await.status, 200);
    server.put_as("alice", "/docs/other/", "body").await.assert_problem(400, "bad-request");

    let deep = server.put_as("alice", "/a/b/c.txt", "deep").await;
    assert_eq!(deep.status, 201);
    assert_eq!(std::fs::read(server.file("a/b/c.txt")).unwrap(), b"deep");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_raw_body_gets_a_server_chosen_name() {
    let server = TestServer::with_config(&team_config("")).await;
    server.put_as("alice", "/inbox/", "").await;
    let auth = basic("alice");
    let posted = server
        .send(
            "POST",
            "/inbox/",
            &[("authorization", &auth), ("content-type", "text/plain")],
            "note",
        )
        .await;
    assert_eq!(posted.status, 201);
    let location = posted.header("location").to_owned();
    assert!(location.starts_with("/inbox/") && location.len() > "/inbox/".len(), "{location}");
    assert_eq!(posted.json()["path"], location.as_str());
    let got = server.get(&location, &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], b"note");
    assert_eq!(got.header("content-type"), "text/plain; charset=utf-8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_multipart_stores_each_file_part() {
    let server = TestServer::with_config(&team_config("")).await;
    server.put_as("alice", "/up/", "").await;
    server.put_as("alice", "/up/one.txt", "already here").await;
    let body = "--XyZ\r\n\
        Content-Disposition: form-data; name=\"comment\"\r\n\r\nnot a file\r\n\
        --XyZ\r\n\
        Content-Disposition: form-data; name=\"f\"; filename=\"one.txt\"\r\n\
        Content-Type: text/plain\r\n\r\nfirst file\r\n\
        --XyZ\r\n\
        Content-Disposition: form-data; name=\"f\"; filename=\"C:\\\\Users\\\\me\\\\two.csv\"\r\n\
        Content-Type: text/csv\r\n\r\na,b\n1,2\r\n\
        --XyZ--\r\n";
    let auth = basic("alice");
    let posted = server
        .send(
            "POST",
            "/up/",
            &[("authorization", &auth), ("content-type", "multipart/form-data; boundary=XyZ")],
            body,
        )
        .await;
    assert_eq!(posted.status, 201, "{}", posted.text());
    let created = posted.json()["created"].as_array().unwrap().clone();
    let paths: Vec<&str> = created.iter().map(|c| c["path"].as_str().unwrap()).collect();
    // An existing name is never overwritten by POST: the part gets a fresh name.
    assert_eq!(paths, ["/up/one-1.txt", "/up/two.csv"]);
    assert_eq!(posted.header("location"), "/up/one-1.txt");
    assert_eq!(std::fs::read(server.file("up/one.txt")).unwrap(), b"already here");
    assert_eq!(std::fs::read(server.file("up/one-1.txt")).unwrap(), b"first file");
    assert_eq!(std::fs::read(server.file("up/two.csv")).unwrap(), b"a,b\n1,2");
    let csv = server.get("/up/two.csv", &[]).await;
    assert_eq!(csv.header("content-type"), "text/csv; charset=utf-8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_to_a_resource_is_405_with_allow() {
    let server = TestServer::with_config(&team_config("")).await;
    server.put_as("alice", "/a.txt", "a").await;
    let auth = basic("alice");
    let reply = server.send("POST", "/a.txt", &[("authorization", &auth)], "x").await;
    reply.assert_problem(405, "method-not-allowed");
    assert_eq!(
        reply.header("allow"),
        "GET, HEAD, PUT, DELETE, OPTIONS, TRACE, PROPFIND, PROPPATCH, COPY, MOVE, LOCK, UNLOCK"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_collections() {
    let server = TestServer::with_config(&team_config("")).await;
    let auth = basic("alice");
    let auth = [("authorization", auth.as_str())];
    server.put_as("alice", "/full/a/b.txt", "b").await;
    server.put_as("alice", "/empty/", "").await;
    // Depth: 0 removes a collection only if it is empty.
    let shallow = [auth[0], ("depth", "0")];
    server.send("DELETE", "/full/", &shallow, "").await.assert_problem(409, "conflict");
    assert!(server.file("full/a/b.txt").exists());
    assert_eq!(server.send("DELETE", "/empty/", &shallow, "").await.status, 204);
    let one = [auth[0], ("depth", "1")];
    server.send("DELETE", "/full/", &one, "").await.assert_problem(400, "bad-request");
    // Without Depth, as with Depth: infinity (RFC 4918 §9.6.1), it goes with its members.
    assert_eq!(server.send("DELETE", "/full/", &auth, "").await.status, 204);
    assert!(!server.file("full").exists());
    // The root cannot go.
    let root = server.send("DELETE", "/", &[("authorization", &basic("root"))], "").await;
    root.assert_problem(405, "method-not-allowed");
    assert!(!root.header("allow").contains("DELETE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_lists_methods() {
    let server = TestServer::open().await;
    server.place("a.txt", b"a");
    let file = server.send("OPTIONS", "/a.txt", &[], "").await;
    assert_eq!(file.status, 204);
    assert_eq!(
        file.header("allow"),
        "GET, HEAD, PUT, DELETE, OPTIONS, TRACE, PROPFIND, PROPPATCH, COPY, MOVE, LOCK, UNLOCK"
    );
    assert_eq!((file.header("dav"), file.header("ms-author-via")), ("1, 2", "DAV"));
    let dir = server.send("OPTIONS", "/", &[], "").await;
    assert_eq!(
        dir.header("allow"),
        "GET, HEAD, PUT, POST, OPTIONS, TRACE, PROPFIND, PROPPATCH, COPY, LOCK, UNLOCK"
    );
    server.send("OPTIONS", "/missing", &[], "").await.assert_problem(404, "not-found");
    let star = server.raw(b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(star.starts_with("HTTP/1.1 200"), "{star}");
    assert!(
        star.contains("allow: GET, HEAD, PUT, POST, DELETE, OPTIONS, TRACE, PROPFIND, PROPPATCH, MKCOL, COPY, MOVE, LOCK, UNLOCK"),
        "{star}"
    );
    assert!(star.contains("dav: 1, 2"), "{star}");
    let bad = server.raw(b"GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_echoes_without_credentials() {
    let server = TestServer::with_config(&team_config("")).await;
    server.put_as("alice", "/a.txt", "a").await;
    let auth = basic("alice");
    let reply = server
        .send(
            "TRACE",
            "/a.txt",
            &[
                ("authorization", &auth),
                ("cookie", "session=s3cr3t"),
                ("proxy-authorization", "Basic eHg6eXk="),
                ("x-custom", "kept"),
            ],
            "",
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "message/http");
    let echo = reply.text();
    assert!(echo.starts_with("TRACE /a.txt HTTP/1.1\r\n"), "{echo}");
    assert!(echo.contains("x-custom: kept\r\n"), "{echo}");
    for secret in ["authorization", "cookie", "s3cr3t", &auth[6..]] {
        assert!(
            !echo.to_ascii_lowercase().contains(&secret.to_ascii_lowercase()),
            "{secret} in {echo}"
        );
    }
    let with_body = server.send("TRACE", "/a.txt", &[], "body").await;
    with_body.assert_problem(400, "bad-request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_can_be_turned_off() {
    let server = TestServer::with_config("trace = false").await;
    server.place("a.txt", b"a");
    let reply = server.send("TRACE", "/a.txt", &[], "").await;
    reply.assert_problem(405, "method-not-allowed");
    assert!(!reply.header("allow").contains("TRACE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_are_501() {
    let server = TestServer::open().await;
    for method in ["FOO", "PATCH", "SEARCH", "CONNECT"] {
        let reply = if method == "CONNECT" {
            let raw = server
                .raw(b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\nConnection: close\r\n\r\n")
                .await;
            assert!(raw.starts_with("HTTP/1.1 501") || raw.starts_with("HTTP/1.1 400"), "{raw}");
            continue;
        } else {
            server.send(method, "/a.txt", &[], "").await
        };
        reply.assert_problem(501, "not-implemented");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_and_folder_clashes_are_409() {
    let server = TestServer::with_config(&team_config("")).await;
    server.put_as("alice", "/a.txt", "a").await;
    server.put_as("alice", "/docs/x", "x").await;
    server.put_as("alice", "/a.txt/b", "b").await.assert_problem(409, "conflict");
    server.put_as("alice", "/a.txt/b/c", "c").await.assert_problem(409, "conflict");
    server.put_as("alice", "/docs", "d").await.assert_problem(409, "conflict");
    server.put_as("alice", "/a.txt/", "").await.assert_problem(409, "conflict");
    assert_eq!(std::fs::read(server.file("a.txt")).unwrap(), b"a");
    assert!(server.file("docs/x").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn larder_namespace() {
    let server = TestServer::with_config(&team_config("")).await;
    let health = server.get("/.larder/health", &[]).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), serde_json::json!({"status": "ok"}));
    // Readiness: a folder and its embedded database are always there.
    let ready = server.get("/.larder/ready", &[]).await;
    assert_eq!((ready.status, ready.json()), (200, serde_json::json!({"status": "ready"})));
    assert_eq!(ready.header("cache-control"), "no-store");
    let page = server.get("/.larder/problems/quota-exceeded", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("402"));
    server.get("/.larder/problems/nonsense", &[]).await.assert_problem(404, "not-found");
    server.put_as("alice", "/.larder/health", "x").await.assert_problem(405, "method-not-allowed");
    server.put_as("alice", "/.larder/mine.txt", "x").await.assert_problem(404, "not-found");
    server.put_as("root", "/%2Elarder/x", "x").await.assert_problem(404, "not-found");
    // The state database lives in ROOT/.larder and is never listed or served.
    let listing = server.list("/", &[]).await.json();
    assert!(listing["entries"].as_array().unwrap().iter().all(|e| e["name"] != ".larder"));
    server.get("/.larder/larder.db", &[]).await.assert_problem(404, "not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_larger_than_max_upload_are_413_and_store_nothing() {
    let server = TestServer::with_config(&team_config("max_upload = \"1 KiB\"")).await;
    let big = vec![b'x'; 2048];
    server.put_as("alice", "/big.bin", big.clone()).await.assert_problem(413, "content-too-large");
    // Chunked: no Content-Length, so the limit is enforced while streaming.
    let reply = server.raw(&chunked_put("/big2.bin", &basic("alice"), 4)).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(!server.file("big.bin").exists() && !server.file("big2.bin").exists());
    assert!(temp_files(&server.root).is_empty());
    assert_eq!(server.put_as("alice", "/small.bin", vec![b'z'; 1024]).await.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_files_are_never_served_or_listed() {
    let server = TestServer::open().await;
    server.place("docs/.larder-tmp.0123", b"half an upload");
    server.place("docs/real.txt", b"real");
    assert_eq!(server.list("/docs/", &[]).await.entry_names(), ["real.txt"]);
    server.get("/docs/.larder-tmp.0123", &[]).await.assert_problem(400, "invalid-path");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_and_conditionals() {
    let server = TestServer::with_config(&team_config("")).await;
    let body: Vec<u8> = (0..100u8).collect();
    let put = server.put_as("alice", "/r.bin", body.clone()).await;
    let etag = put.header("etag").to_owned();

    let one = server.get("/r.bin", &[("range", "bytes=10-19")]).await;
    assert_eq!(one.status, 206);
    assert_eq!(one.header("content-range"), "bytes 10-19/100");
    assert_eq!(&one.body[..], &body[10..20]);

    let many = server.get("/r.bin", &[("range", "bytes=0-1,-2")]).await;
    assert_eq!(many.status, 206);
    let ct = many.header("content-type").to_owned();
    let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
    let text = many.body.clone();
    let parts: Vec<&[u8]> = split_multipart(&text, boundary.as_bytes());
    assert_eq!(parts.len(), 2);
    assert!(contains(parts[0], b"Content-Range: bytes 0-1/100\r\n\r\n\x00\x01"));
    assert!(contains(parts[1], b"Content-Range: bytes 98-99/100\r\n\r\n\x62\x63"));
    assert_eq!(many.header("content-length"), many.body.len().to_string());

    let unsatisfiable = server.get("/r.bin", &[("range", "bytes=100-")]).await;
    unsatisfiable.assert_problem(416, "range-not-satisfiable");
    assert_eq!(unsatisfiable.header("content-range"), "bytes */100");
    assert_eq!(server.get("/r.bin", &[("range", "bytes=5-1")]).await.status, 200);

    let stale = server.get("/r.bin", &[("range", "bytes=0-0"), ("if-range", "\"other\"")]).await;
    assert_eq!((stale.status, stale.body.len()), (200, 100));

    let cached = server.get("/r.bin", &[("if-none-match", &etag)]).await;
    assert_eq!(cached.status, 304);
    assert_eq!(cached.header("etag"), etag);
    assert!(cached.body.is_empty());

    let auth = basic("alice");
    let lost = server
        .send("PUT", "/r.bin", &[("authorization", &auth), ("if-match", "\"stale\"")], "lost")
        .await;
    lost.assert_problem(412, "precondition-failed");
    assert_eq!(std::fs::read(server.file("r.bin")).unwrap(), body);
    let guarded =
        server.send("PUT", "/r.bin", &[("authorization", &auth), ("if-match", &etag)], "new").await;
    assert_eq!(guarded.status, 200);
    let create_only = [("authorization", auth.as_str()), ("if-none-match", "*")];
    server
        .send("PUT", "/r.bin", &create_only, "again")
        .await
        .assert_problem(412, "precondition-failed");
    assert_eq!(server.send("PUT", "/fresh.bin", &create_only, "fresh").await.status, 201);
    let gone = [("authorization", auth.as_str()), ("if-match", etag.as_str())];
    server.send("DELETE", "/r.bin", &gone, "").await.assert_problem(412, "precondition-failed");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn split_multipart<'a>(body: &'a [u8], boundary: &[u8]) -> Vec<&'a [u8]> {
    let mut delimiter = b"\r\n--".to_vec();
    delimiter.extend_from_slice(boundary);
    let mut parts = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.windows(delimiter.len()).position(|w| w == delimiter.as_slice()) {
        if at > 0 {
            parts.push(&rest[..at]);
        }
        rest = &rest[at + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
    }
    parts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_upload_leaves_the_old_version() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::with_config(&team_config("")).await;
    server.put_as("alice", "/doc.txt", "the old version").await;
    let auth = basic("alice");
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "PUT /doc.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 100000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'n'; 5000]).await.unwrap();
    drop(stream); // the client goes away mid-body

    let got = server.get("/doc.txt", &[]).await;
    assert_eq!(&got.body[..], b"the old version");
    // The server notices the cut on its own time: poll (bounded) until its temp file is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !temp_files(&server.root).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the temporary file was never removed");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(std::fs::read(server.file("doc.txt")).unwrap(), b"the old version");
    let listing = server.list("/", &[]).await.json();
    assert_eq!(listing["entries"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_uploads_of_any_length_come_back_whole() {
    // Past 256 KiB a body streams to its file in 512 KiB aligned blocks, the last partial
    // one apart: lengths on and around every boundary, each a replacement of the one before.
    let server = TestServer::with_config(&team_config("")).await;
    let sizes = [(256 << 10) + 1, 512 << 10, (512 << 10) + 1, (1 << 20) + 4096, (3 << 20) - 1];
    for (i, size) in sizes.into_iter().enumerate() {
        let bytes: Vec<u8> = (0..size).map(|n: usize| (n * 31 + i) as u8).collect();
        let put = server.put_as("alice", "/big.bin", bytes.clone()).await;
        assert!(put.status == 201 || put.status == 200, "{size}: {}", put.status);
        let got = server.get("/big.bin", &[]).await;
        assert_eq!(got.status, 200);
        assert!(got.body[..] == bytes[..], "{size}: the bytes read back differ");
        assert_eq!(got.header("etag"), put.header("etag"), "{size}");
        assert!(std::fs::read(server.file("big.bin")).unwrap() == bytes, "{size}: on disk");
    }
    assert!(temp_files(&server.root).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_never_serves_what_a_write_replaced() {
    let server = TestServer::with_config(&team_config("")).await;
    let auth = basic("alice");
    server.put_as("alice", "/docs/a.txt", "one").await;
    // Fill the caches (entry, bytes, listing), then write through larder: seen at once.
    assert_eq!(&server.get("/docs/a.txt", &[]).await.body[..], b"one");
    assert_eq!(server.list("/docs/", &[]).await.entry_names(), ["a.txt"]);
    server.put_as("alice", "/docs/a.txt", "two").await;
    server.put_as("alice", "/docs/b.txt", "bee").await;
    assert_eq!(&server.get("/docs/a.txt", &[]).await.body[..], b"two");
    assert_eq!(server.list("/docs/", &[]).await.entry_names(), ["a.txt", "b.txt"]);
    assert_eq!(
        server.send("DELETE", "/docs/b.txt", &[("authorization", &auth)], "").await.status,
        204
    );
    server.get("/docs/b.txt", &[]).await.assert_problem(404, "not-found");
    assert_eq!(server.list("/docs/", &[]).await.entry_names(), ["a.txt"]);
    let depth = [("authorization", auth.as_str()), ("depth", "infinity")];
    assert_eq!(server.send("DELETE", "/docs/", &depth, "").await.status, 204);
    server.get("/docs/a.txt", &[]).await.assert_problem(404, "not-found");
    // A file changed behind larder's back is seen within the cache's second.
    server.place("outside.txt", b"before");
    assert_eq!(&server.get("/outside.txt", &[]).await.body[..], b"before");
    std::fs::write(server.file("outside.txt"), b"after!").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while &server.get("/outside.txt", &[]).await.body[..] != b"after!" {
        assert!(std::time::Instant::now() < deadline, "an outside change was never seen");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Each answer carries its own resource's Last-Modified and a request id of its own, however
/// many answers the server gave before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_answer_carries_its_own_date_and_request_id() {
    use std::time::{Duration, UNIX_EPOCH};
    let server = TestServer::open().await;
    let files =
        [("old.txt", 981_173_106), ("new.txt", 1_612_325_106), ("newer.txt", 1_612_325_107)];
    for (name, seconds) in files {
        server.place(name, name.as_bytes());
        let file = std::fs::File::options().write(true).open(server.file(name)).unwrap();
        file.set_modified(UNIX_EPOCH + Duration::from_secs(seconds)).unwrap();
    }
    let mut ids = std::collections::HashSet::new();
    for _ in 0..3 {
        for (name, seconds) in files {
            let got = server.get(&format!("/{name}"), &[]).await;
            assert_eq!(got.status, 200);
            let when = UNIX_EPOCH + Duration::from_secs(seconds);
            assert_eq!(got.header("last-modified"), httpdate::fmt_http_date(when), "{name}");
            let id = got.header("x-request-id");
            assert!(
                id.len() == 16
                    && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{id}"
            );
            assert!(ids.insert(id.to_owned()), "{id} answered twice");
        }
    }
}

/// A small file is answered whole from the bytes the store holds in memory (every GET of it,
/// the first included), without the stream other answers go through: it carries every field
/// the streamed path gives, which a HEAD (never answered from memory) shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_file_from_memory_answers_as_the_streamed_path() {
    let server = TestServer::open().await;
    server.place("notes/page.html", b"<p>hello</p>");
    let first = server.get("/notes/page.html", &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(&first.body[..], b"<p>hello</p>");
    assert_eq!(first.header("content-length"), "12");
    assert_eq!(first.header("content-security-policy"), "sandbox");
    let streamed = server.send("HEAD", "/notes/page.html", &[], "").await;
    assert_eq!(streamed.status, 200);
    assert_eq!(first.stable_headers(), streamed.stable_headers());
    for _ in 0..3 {
        let again = server.get("/notes/page.html", &[]).await;
        assert_eq!(again.status, 200);
        assert_eq!(again.body, first.body);
        assert_eq!(again.stable_headers(), first.stable_headers());
    }
}

/// Bytes that differ at every offset (so a piece sent from the wrong place shows), `seed`
/// telling versions apart.
fn patterned(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// On `connection`: `target` (whose bytes are `bytes`) asked for `one` range, then for
/// `many` (a Range field naming `pieces`, multipart/byteranges): each answer 206 with
/// exactly those bytes.
async fn ranges_come_back_exact(
    connection: &mut Connection,
    target: &str,
    bytes: &[u8],
    one: std::ops::Range<usize>,
    (many, pieces): (&str, &[std::ops::Range<usize>]),
) {
    let field = format!("bytes={}-{}", one.start, one.end - 1);
    let single = connection.send("GET", target, &[("range", &field)], "").await;
    assert_eq!(single.status, 206);
    assert!(single.body[..] == bytes[one]);
    let many = connection.send("GET", target, &[("range", many)], "").await;
    assert_eq!(many.status, 206);
    assert_eq!(many.header("content-length"), many.body.len().to_string());
    for piece in pieces {
        assert!(contains(&many.body, &bytes[piece.clone()]), "{target} {piece:?}");
    }
}

/// Cached files of 16 KiB and more go to plain TCP connections from the file (sendfile)
/// rather than from memory: on one kept-alive connection, among answers from memory, whole
/// and in ranges, again after a write replaced the file, and after the file was cut short
/// behind larder's back, every answer carries exactly the bytes its header describes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_files_sent_from_the_file_come_back_exact() {
    let server = TestServer::with_config(&team_config("")).await;
    let files = [("edge.bin", 16 * 1024), ("mid.bin", 200_000), ("max.bin", 1 << 20)];
    for (i, (name, len)) in files.iter().enumerate() {
        server.place(name, &patterned(*len, i as u32));
    }
    server.place("tiny.txt", b"tiny");
    let mut connection = Connection::open(server.addr).await.unwrap();
    for round in 0..2 {
        for (i, (name, len)) in files.iter().enumerate() {
            let got = connection.send("GET", &format!("/{name}"), &[], "").await;
            assert_eq!(got.status, 200);
            assert!(got.body[..] == patterned(*len, i as u32)[..], "{name}, round {round}");
            assert_eq!(got.header("content-length"), len.to_string());
            let tiny = connection.send("GET", "/tiny.txt", &[], "").await;
            assert_eq!(&tiny.body[..], b"tiny");
        }
    }
    let mid = patterned(200_000, 1);
    let many = ("bytes=0-20000,100000-", &[0..20_001, 100_000..200_000][..]);
    ranges_come_back_exact(&mut connection, "/mid.bin", &mid, 1000..151_000, many).await;
    let head = connection.send("HEAD", "/mid.bin", &[], "").await;
    assert_eq!((head.header("content-length"), head.body.len()), ("200000", 0));

    // A write replaces the file: the next answer has the new bytes.
    let new = patterned(200_000, 7);
    assert_eq!(server.put_as("alice", "/mid.bin", new.clone()).await.status, 200);
    let got = connection.send("GET", "/mid.bin", &[], "").await;
    assert!(got.body[..] == new[..]);
    assert!(connection.send("GET", "/mid.bin", &[], "").await.body[..] == new[..]);

    // Cut short behind larder's back: whatever the answer, its bytes match its length.
    let max = patterned(1 << 20, 2);
    let file = std::fs::File::options().write(true).open(server.file("max.bin")).unwrap();
    file.set_len(100_000).unwrap();
    for _ in 0..2 {
        let got = connection.send("GET", "/max.bin", &[], "").await;
        assert_eq!(got.status, 200);
        assert_eq!(got.header("content-length"), got.body.len().to_string());
        assert!(got.body[..] == max[..got.body.len()]);
    }
}

/// Files too large for the cache go to plain HTTP/1 connections from the file (chunks read,
/// then sent with sendfile): whole and in ranges, one answer after another on one
/// connection, the same bytes as over h2c (which sends the chunks' memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_sent_unread_come_back_exact() {
    let server = TestServer::with_config(&team_config("")).await;
    let len = 3 * (1 << 20) + 12_345;
    let bytes = patterned(len, 3);
    server.place("large.bin", &bytes);
    server.place("tiny.txt", b"tiny");
    let mut connection = Connection::open(server.addr).await.unwrap();
    for _ in 0..2 {
        let got = connection.send("GET", "/large.bin", &[], "").await;
        assert_eq!((got.status, got.header("content-length")), (200, len.to_string().as_str()));
        assert!(got.body[..] == bytes[..]);
        assert_eq!(&connection.send("GET", "/tiny.txt", &[], "").await.body[..], b"tiny");
    }
    let pieces = [10..21, 100_000..900_001, len - 600_000..len];
    let many = ("bytes=10-20,100000-900000,-600000", &pieces[..]);
    ranges_come_back_exact(&mut connection, "/large.bin", &bytes, 700_000..2_800_001, many).await;
    let head = connection.send("HEAD", "/large.bin", &[], "").await;
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert!(connection.send("GET", "/large.bin", &[], "").await.body[..] == bytes[..]);
    // Out of the page cache (read on a blocking thread, not by sendfile on the loop): the
    // same bytes.
    let file = std::fs::File::open(server.file("large.bin")).unwrap();
    file.sync_all().unwrap();
    rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    assert!(connection.send("GET", "/large.bin", &[], "").await.body[..] == bytes[..]);
}

/// Sends a GET for `target` on a new connection and reads its head and the first 64 KiB.
async fn start_download(server: &TestServer, target: &str) -> (tokio::net::TcpStream, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = vec![0; 64 * 1024];
    stream.read_exact(&mut got).await.unwrap();
    (stream, got)
}

/// Reads the rest of a download until the server closes; returns its head and body.
async fn finish_download(mut stream: tokio::net::TcpStream, mut got: Vec<u8>) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(30), stream.read_to_end(&mut got));
    read.await.expect("the connection was closed").unwrap();
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (String::from_utf8_lossy(&got[..head_end]).to_lowercase(), got.split_off(head_end))
}

/// A large file replaced or deleted through larder while it is being sent: the download
/// goes on to the end with the bytes of the version it began with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_outlives_a_replacement_and_a_delete() {
    let server = TestServer::with_config(&team_config("")).await;
    let len = 48 << 20;
    let (old, gone) = (patterned(len, 5), patterned(len, 6));
    server.place("replaced.bin", &old);
    server.place("deleted.bin", &gone);
    let (replaced, replaced_start) = start_download(&server, "/replaced.bin").await;
    let (deleted, deleted_start) = start_download(&server, "/deleted.bin").await;
    assert_eq!(server.put_as("alice", "/replaced.bin", patterned(len, 7)).await.status, 200);
    let auth = basic("alice");
    let delete = server.send("DELETE", "/deleted.bin", &[("authorization", &auth)], "").await;
    assert_eq!(delete.status, 204);
    for ((stream, start), bytes) in
        [((replaced, replaced_start), old), ((deleted, deleted_start), gone)]
    {
        let (head, body) = finish_download(stream, start).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(body == bytes, "the whole of the version the download began with");
    }
}

/// A large file cut short behind larder's back while it is being sent: the answer stops
/// short of its Content-Length and the connection closes. What arrived up to the cut is the
/// file's; past it, bytes already handed to the socket may read as zeros (the kernel sends
/// the page cache by reference, as under nginx's sendfile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_cut_short_while_sent_ends_the_answer_early() {
    let server = TestServer::open().await;
    let (len, cut) = (48 << 20, 1 << 20);
    let bytes = patterned(len, 4);
    server.place("cut.bin", &bytes);
    let (stream, start) = start_download(&server, "/cut.bin").await;
    let file = std::fs::File::options().write(true).open(server.file("cut.bin")).unwrap();
    file.set_len(cut as u64).unwrap();
    let (head, body) = finish_download(stream, start).await;
    assert!(head.starts_with("http/1.1 200") && head.contains(&format!("content-length: {len}")));
    assert!(body.len() < len, "the answer stops short");
    let upto = body.len().min(cut);
    assert!(body[..upto] == bytes[..upto], "what arrived up to the cut is the file's");
}
