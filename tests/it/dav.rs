//! WebDAV (SPEC §8) as the hostile tenant of `tenants.rs` would try it: every DAV method on
//! hidden paths, listings that must not name what is hidden or unlisted, COPY and MOVE at
//! both ends of the rules, prices, quotas, token scopes, and locks held by someone else.

use crate::harness::*;
use crate::tokens::new_token;

const PROPPATCH: &str = r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><z:colour xmlns:z="urn:z">red</z:colour></D:prop></D:set></D:propertyupdate>"#;
const LOCK: &str = r#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>me</D:owner></D:lockinfo>"#;
const ALLPROP: &str =
    r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"#;

/// tenants.rs's rules, with an unlisted folder anyone may read.
fn config() -> String {
    let quiet = "[[rule]]\npath = \"/pub/quiet\"\nread = [\"*\"]\nunlisted = true\n";
    format!("{}{quiet}", crate::tenants::config(""))
}

/// Every DAV method `who` may send to `path`, with what it needs to mean something.
async fn every_method<'a>(
    server: &TestServer,
    who: &[(&'a str, &'a str)],
    path: &'a str,
) -> Vec<Reply> {
    let with = |extra: &[(&'a str, &'a str)]| {
        let mut headers = who.to_vec();
        headers.extend_from_slice(extra);
        headers
    };
    vec![
        server.send("PROPFIND", path, &with(&[("depth", "0")]), "").await,
        server.send("PROPPATCH", path, &with(&[]), PROPPATCH).await,
        server.send("MKCOL", &format!("{path}/sub/"), &with(&[]), "").await,
        server.send("COPY", path, &with(&[("destination", "/pub/drop/copy")]), "").await,
        server.send("MOVE", path, &with(&[("destination", "/pub/drop/moved")]), "").await,
        server.send("LOCK", path, &with(&[]), LOCK).await,
        server.send("UNLOCK", path, &with(&[("lock-token", "<urn:uuid:x>")]), "").await,
        // And what a hidden path would be the destination of.
        server.send("COPY", "/pub/readme", &with(&[("destination", path)]), "").await,
        server.send("MOVE", "/home/bob/mine.txt", &with(&[("destination", path)]), "").await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dav_method_on_a_hidden_path_answers_as_on_a_missing_one() {
    let server = TestServer::with_config(&config()).await;
    server.place("secret/plans.txt", b"the plans");
    server.place("home/alice/diary.txt", b"dear diary");
    server.place("pub/readme", b"hello");
    server.place("pub/drop/bob.txt", b"bob's");
    server.place("home/bob/mine.txt", b"bob's");
    let bob = basic("bob");
    for who in [vec![("authorization", bob.as_str())], vec![]] {
        for (there, missing) in [
            ("/secret/plans.txt", "/secret/none.txt"),
            ("/home/alice/diary.txt", "/home/alice/none.txt"),
            ("/home/alice/diary.txt", "/home/nobody/diary.txt"),
        ] {
            let a = every_method(&server, &who, there).await;
            let b = every_method(&server, &who, missing).await;
            for (a, b) in a.iter().zip(&b) {
                assert_eq!(a.status, 404, "{there}: {}", a.text());
                assert_eq!(seen(a), seen(b), "{there} vs {missing}");
            }
        }
    }
    // Nothing was taken, copied or moved.
    assert_eq!(std::fs::read(server.file("secret/plans.txt")).unwrap(), b"the plans");
    assert_eq!(std::fs::read(server.file("home/alice/diary.txt")).unwrap(), b"dear diary");
    assert!(
        server.file("pub/drop/bob.txt").is_file() && server.file("home/bob/mine.txt").is_file()
    );
    for made in ["pub/drop/copy", "pub/drop/moved", "secret/plans.txt/sub", "home/nobody"] {
        assert!(!server.file(made).exists(), "{made}");
    }
}

/// The hrefs of a 207.
fn hrefs(reply: &Reply) -> Vec<String> {
    let text = reply.text();
    text.split("<D:href>")
        .skip(1)
        .filter_map(|s| s.split("</D:href>").next())
        .filter(|h| !h.starts_with("urn:"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propfind_lists_only_what_the_caller_may_list() {
    let server = TestServer::with_config(&config()).await;
    server.place("secret/plans.txt", b"the plans");
    server.place("home/alice/diary.txt", b"dear diary");
    server.place("home/bob/mine.txt", b"bob's");
    server.place("pub/quiet/x", b"x");
    server.place("pub/readme", b"hello");
    let bob = basic("bob");
    let depth1 = [("authorization", bob.as_str()), ("depth", "1")];
    let top = server.send("PROPFIND", "/", &depth1, ALLPROP).await;
    assert_eq!(top.status, 207, "{}", top.text());
    assert_eq!(top.header("content-type"), "application/xml; charset=utf-8");
    assert_eq!(hrefs(&top), ["/", "/home/", "/pub/"]);
    let homes = server.send("PROPFIND", "/home/", &depth1, "").await;
    assert_eq!(hrefs(&homes), ["/home/", "/home/bob/"]);
    let public = server.send("PROPFIND", "/pub/", &depth1, "").await;
    assert_eq!(hrefs(&public), ["/pub/", "/pub/readme"], "unlisted stays unlisted");
    // The unlisted folder answers to whoever knows its name; what its rule covers stays
    // unlisted inside it too, as in its GET listing.
    let quiet = server.send("PROPFIND", "/pub/quiet/", &depth1, "").await;
    assert_eq!(hrefs(&quiet), ["/pub/quiet/"]);
    // A file's properties, as GET would describe it.
    let readme = server.send("PROPFIND", "/pub/readme", &[("depth", "0")], ALLPROP).await;
    let text = readme.text();
    for needle in
        ["<D:getcontentlength>5<", "<D:resourcetype/>", "<D:getetag>\"", "<D:supportedlock>"]
    {
        assert!(text.contains(needle), "{needle} in {text}");
    }
    let etag = server.get("/pub/readme", &[]).await.header("etag").to_owned();
    assert!(text.contains(&format!("<D:getetag>{etag}</D:getetag>")), "{text}");
    // Depth: infinity (or none) is refused, as RFC 4918 allows.
    for headers in [vec![("depth", "infinity")], vec![]] {
        let all = server.send("PROPFIND", "/pub/", &headers, "").await;
        all.assert_problem(403, "propfind-finite-depth");
    }
    // A body that is not a propfind, or not XML, or with an entity, is 400.
    for body in
        ["<x/>", "not xml", "<!DOCTYPE a [<!ENTITY e \"e\">]><D:propfind xmlns:D=\"DAV:\"/>"]
    {
        let bad = server.send("PROPFIND", "/pub/", &[("depth", "0")], body).await;
        bad.assert_problem(400, "bad-request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_and_move_are_ruled_at_both_ends() {
    let server = TestServer::with_config(&config()).await;
    server.place("pub/readme", b"hello");
    server.place("pub/drop/.keep", b"");
    server.put_as("bob", "/home/bob/mine.txt", "bob's").await;
    let bob = basic("bob");
    let as_bob =
        |destination: &'static str| [("authorization", bob.as_str()), ("destination", destination)];
    // Not allowed to create in /pub, nor to delete in /pub/drop.
    server
        .send("COPY", "/pub/readme", &as_bob("/pub/copy"), "")
        .await
        .assert_problem(403, "forbidden");
    assert_eq!(
        server.send("COPY", "/pub/readme", &as_bob("/pub/drop/readme"), "").await.status,
        201
    );
    let moved = server.send("MOVE", "/pub/drop/readme", &as_bob("/pub/drop/again"), "").await;
    moved.assert_problem(403, "forbidden");
    assert!(server.file("pub/drop/readme").is_file() && !server.file("pub/drop/again").exists());
    // Another server, /.larder/, itself, inside itself.
    let away = server.send("COPY", "/pub/readme", &as_bob("http://elsewhere.test/x"), "").await;
    away.assert_problem(502, "bad-gateway");
    let admin = server.send("COPY", "/pub/readme", &as_bob("/.larder/x"), "").await;
    admin.assert_problem(403, "forbidden");
    let same = server.send("MOVE", "/home/bob/", &as_bob("/home/bob/"), "").await;
    same.assert_problem(403, "forbidden");
    let inside = server.send("MOVE", "/home/bob/", &as_bob("/home/bob/deeper/"), "").await;
    inside.assert_problem(409, "conflict");
    // A copy of /home/ takes only what bob may list, whether alice has a home or not.
    let before = server.send("COPY", "/home/", &as_bob("/pub/drop/homes/"), "").await;
    assert_eq!(before.status, 201, "{}", before.text());
    server.send("DELETE", "/pub/drop/homes/", &[("authorization", &basic("root"))], "").await;
    server.place("home/alice/diary.txt", b"dear diary");
    let after = server.send("COPY", "/home/", &as_bob("/pub/drop/homes/"), "").await;
    assert_eq!(seen(&before).0, seen(&after).0);
    assert!(server.file("pub/drop/homes/bob/mine.txt").is_file());
    assert!(!server.file("pub/drop/homes/alice").exists());
    // Bob moves his own home whole; MOVE keeps its bytes and its owner.
    let etag = server
        .get("/home/bob/mine.txt", &[("authorization", &bob)])
        .await
        .header("etag")
        .to_owned();
    let gone = server.send("MOVE", "/home/bob/", &as_bob("/pub/drop/bob/"), "").await;
    assert_eq!(gone.status, 201, "{}", gone.text());
    assert!(!server.file("home/bob").exists());
    let there = server.get("/pub/drop/bob/mine.txt", &[]).await;
    assert_eq!(
        (there.status, &there.body[..], there.header("etag")),
        (200, &b"bob's"[..], etag.as_str())
    );
    let listed = server.list("/pub/drop/bob/", &[("accept", "application/json")]).await.json();
    assert_eq!(listed["entries"][0]["owner"], "bob");
    // Replacing needs update, which bob lacks in /pub/drop: the rules answer first.
    let over = [("authorization", bob.as_str()), ("destination", "/pub/drop/readme")];
    server.send("COPY", "/pub/readme", &over, "").await.assert_problem(403, "forbidden");
    // Overwrite: F refuses an existing destination (412), T replaces it (204).
    let root = basic("root");
    let keep =
        [("authorization", root.as_str()), ("destination", "/pub/drop/readme"), ("overwrite", "F")];
    server.send("COPY", "/pub/readme", &keep, "").await.assert_problem(412, "precondition-failed");
    assert_eq!(server.put_as("root", "/pub/readme", "newer").await.status, 200);
    let replace = [keep[0], keep[1], ("overwrite", "T")];
    assert_eq!(server.send("COPY", "/pub/readme", &replace, "").await.status, 204);
    assert_eq!(std::fs::read(server.file("pub/drop/readme")).unwrap(), b"newer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priced_file_is_bought_before_it_is_copied() {
    let server = TestServer::with_config(&crate::payment::shop_config()).await;
    server.put_as("seller", "/shop/book.pdf", "the book").await;
    let bob = basic("bob");
    let copy = [("authorization", bob.as_str()), ("destination", "/mine.pdf")];
    server.send("COPY", "/shop/book.pdf", &copy, "").await.assert_problem(402, "payment-required");
    assert!(!server.file("mine.pdf").exists());
    // The seller copies freely; bob, once he has bought it.
    let seller = [("authorization", basic("seller")), ("destination", "/shop/copy.pdf".into())];
    let seller: Vec<(&str, &str)> = seller.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(server.send("COPY", "/shop/book.pdf", &seller, "").await.status, 201);
    let buy = [("authorization", bob.as_str()), ("larder-max-price", "5")];
    assert_eq!(server.get("/shop/book.pdf", &buy).await.status, 200);
    assert_eq!(server.send("COPY", "/shop/book.pdf", &copy, "").await.status, 201);
    assert_eq!(std::fs::read(server.file("mine.pdf")).unwrap(), b"the book");
    // A copy is its copier's, within its quota: alice has 1 KiB.
    let big = "x".repeat(700);
    server.put_as("bob", "/big.txt", big).await;
    let alice = basic("alice");
    let to = |d: &'static str| [("authorization", alice.as_str()), ("destination", d)];
    assert_eq!(server.send("COPY", "/big.txt", &to("/a1.txt"), "").await.status, 201);
    let over = server.send("COPY", "/big.txt", &to("/a2.txt"), "").await;
    over.assert_problem(402, "quota-exceeded");
    assert!(!server.file("a2.txt").exists());
    // A folder past the quota: refused whole, nothing of it left, not even its temporary
    // tree; one within it is made whole, and counted.
    server.put_as("bob", "/pair/one.txt", "x".repeat(200)).await;
    server.put_as("bob", "/pair/two.txt", "y".repeat(200)).await;
    let pair = server.send("COPY", "/pair/", &to("/mine/"), "").await;
    pair.assert_problem(402, "quota-exceeded");
    assert!(!server.file("mine").exists());
    assert!(temp_files(&server.file("")).is_empty(), "{:?}", temp_files(&server.file("")));
    server.send("DELETE", "/a1.txt", &[("authorization", &alice)], "").await;
    let made = server.send("COPY", "/pair/", &to("/mine/"), "").await;
    assert_eq!(made.status, 201, "{}", made.text());
    assert_eq!(std::fs::read(server.file("mine/two.txt")).unwrap(), "y".repeat(200).as_bytes());
    let listed = server.list("/mine/", &[]).await.json();
    assert_eq!(listed["entries"][0]["owner"], "alice");
    let account = server.get("/.larder/account", &[("authorization", &alice)]).await.json();
    assert_eq!(account["storage"]["used"], 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_keep_their_limits_through_dav() {
    let server = TestServer::with_config(&team_config("")).await;
    let alice = basic("alice");
    server.put_as("alice", "/docs/a.txt", "a").await;
    let read_only = new_token(&server, &alice, r#"{"read_only": true}"#).await.json();
    let scoped = new_token(&server, &alice, r#"{"scope": "/docs"}"#).await.json();
    let bearer = |doc: &serde_json::Value| format!("Bearer {}", doc["token"].as_str().unwrap());
    let (ro, sc) = (bearer(&read_only), bearer(&scoped));
    let ro_headers =
        |extra: (&'static str, &'static str)| vec![("authorization", ro.as_str()), extra];
    assert_eq!(
        server.send("PROPFIND", "/docs/", &ro_headers(("depth", "1")), "").await.status,
        207
    );
    for (method, target, extra, body) in [
        ("MKCOL", "/docs/new/", ("x-none", "1"), ""),
        ("PROPPATCH", "/docs/a.txt", ("x-none", "1"), PROPPATCH),
        ("COPY", "/docs/a.txt", ("destination", "/docs/b.txt"), ""),
        ("MOVE", "/docs/a.txt", ("destination", "/docs/b.txt"), ""),
        ("LOCK", "/docs/a.txt", ("x-none", "1"), LOCK),
    ] {
        let reply = server.send(method, target, &ro_headers(extra), body).await;
        reply.assert_problem(403, "forbidden");
    }
    // A token for /docs moves nothing out of it.
    let out = [("authorization", sc.as_str()), ("destination", "/elsewhere.txt")];
    server.send("COPY", "/docs/a.txt", &out, "").await.assert_problem(403, "forbidden");
    server.send("MOVE", "/docs/a.txt", &out, "").await.assert_problem(403, "forbidden");
    assert!(server.file("docs/a.txt").is_file() && !server.file("elsewhere.txt").exists());
}

/// The token of a LOCK's answer.
fn lock_token(reply: &Reply) -> String {
    reply.header("lock-token").trim_matches(|c| c == '<' || c == '>').to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_is_its_principals_alone() {
    let server = TestServer::with_config(&team_config("")).await;
    let (alice, bob) = (basic("alice"), basic("bob"));
    server.put_as("alice", "/docs/a.txt", "a").await;
    let taken = server.send("LOCK", "/docs/a.txt", &[("authorization", &alice)], LOCK).await;
    assert_eq!(taken.status, 200, "{}", taken.text());
    let token = lock_token(&taken);
    assert!(token.starts_with("urn:uuid:"));
    let with_token = format!("(<{token}>)");
    // Bob, with or without alice's token, changes nothing under it.
    for headers in [
        vec![("authorization", bob.as_str())],
        vec![("authorization", bob.as_str()), ("if", with_token.as_str())],
    ] {
        server.send("PUT", "/docs/a.txt", &headers, "bob").await.assert_problem(423, "locked");
        server.send("DELETE", "/docs/a.txt", &headers, "").await.assert_problem(423, "locked");
        let lock_token = [headers[0], ("lock-token", &format!("<{token}>"))];
        server.send("UNLOCK", "/docs/a.txt", &lock_token, "").await.assert_problem(409, "conflict");
    }
    // Nor does alice without it; with it, she writes.
    server
        .send("PUT", "/docs/a.txt", &[("authorization", &alice)], "x")
        .await
        .assert_problem(423, "locked");
    let ok = server
        .send("PUT", "/docs/a.txt", &[("authorization", &alice), ("if", &with_token)], "alice")
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(std::fs::read(server.file("docs/a.txt")).unwrap(), b"alice");
    // A new member of a locked collection needs the collection's token too.
    let coll =
        server.send("LOCK", "/docs/", &[("authorization", &alice), ("depth", "0")], LOCK).await;
    let coll_token = lock_token(&coll);
    server
        .send("PUT", "/docs/new.txt", &[("authorization", &alice)], "n")
        .await
        .assert_problem(423, "locked");
    // (Tagged with the collection, whose state the token is.)
    let both = format!("<http://larder.test/docs/> (<{coll_token}>)");
    assert_eq!(
        server
            .send("PUT", "/docs/new.txt", &[("authorization", &alice), ("if", &both)], "n")
            .await
            .status,
        201
    );
    // Released, anyone may write again.
    for t in [&token, &coll_token] {
        let target = if t == &token { "/docs/a.txt" } else { "/docs/" };
        let released = server
            .send(
                "UNLOCK",
                target,
                &[("authorization", &alice), ("lock-token", &format!("<{t}>"))],
                "",
            )
            .await;
        assert_eq!(released.status, 204);
    }
    assert_eq!(
        server.send("PUT", "/docs/a.txt", &[("authorization", &bob)], "bob").await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_properties_go_with_their_resource_and_no_further() {
    let server = TestServer::with_config(&team_config("")).await;
    let (alice, bob) = (basic("alice"), basic("bob"));
    server.put_as("alice", "/a.txt", "a").await;
    let set = server.send("PROPPATCH", "/a.txt", &[("authorization", &alice)], PROPPATCH).await;
    assert_eq!(set.status, 207);
    assert!(set.text().contains("HTTP/1.1 200 OK"), "{}", set.text());
    let colour =
        r#"<D:propfind xmlns:D="DAV:"><D:prop><z:colour xmlns:z="urn:z"/></D:prop></D:propfind>"#;
    let find = |path: &'static str| server.send("PROPFIND", path, &[("depth", "0")], colour);
    assert!(find("/a.txt").await.text().contains(">red</colour>"));
    // Moved, it goes along; the old name keeps nothing for the next one to use it.
    let to = [("authorization", alice.as_str()), ("destination", "/b.txt")];
    assert_eq!(server.send("MOVE", "/a.txt", &to, "").await.status, 201);
    assert!(find("/b.txt").await.text().contains(">red</colour>"));
    server.put_as("bob", "/a.txt", "bob's").await;
    let theirs = find("/a.txt").await.text();
    assert!(!theirs.contains("red") && theirs.contains("404 Not Found"), "{theirs}");
    // Deleted, it goes too.
    server.send("DELETE", "/b.txt", &[("authorization", &alice)], "").await;
    server.put_as("bob", "/b.txt", "bob's").await;
    assert!(!find("/b.txt").await.text().contains("red"));
    // Live properties are not written.
    let live = r#"<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><D:getetag>x</D:getetag><z:colour xmlns:z="urn:z">blue</z:colour></D:prop></D:set></D:propertyupdate>"#;
    let refused = server.send("PROPPATCH", "/b.txt", &[("authorization", &bob)], live).await;
    let text = refused.text();
    assert!(text.contains("403 Forbidden") && text.contains("424 Failed Dependency"), "{text}");
    assert!(!find("/b.txt").await.text().contains("blue"));
}
