//! The web interface's server side over TCP: the HTML page (escaping, breadcrumbs, order,
//! what the caller may do and must pay), its embedded assets, the token cookie (reads only),
//! and the confinement of stored markup. The page's script is tested in a real browser by
//! `e2e/`.

use crate::harness::*;
use crate::payment::shop_config;
use crate::tokens::new_token;

const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

async fn token(server: &TestServer, account: &str) -> String {
    let made = new_token(server, &basic(account), r#"{"expires_in": "1h"}"#).await;
    assert_eq!(made.status, 201, "{}", made.text());
    made.json()["token"].as_str().unwrap().to_owned()
}

/// The `<tr …>` line of the member called `name` (its data attributes come first).
fn row<'a>(page: &'a str, name: &str) -> &'a str {
    let marker = format!("data-name=\"{name}\"");
    page.lines().find(|line| line.contains(&marker)).unwrap_or_else(|| panic!("{name}: {page}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_escapes_orders_and_locks_itself_down() {
    let server = TestServer::open().await;
    server.place("docs/big.bin", &[0u8; 5000]);
    server.place("docs/small.txt", b"hi");
    server.place("docs/\"><img src=x onerror=alert(1)>.txt", b"x");
    server.place("docs/sub/b.txt", b"b");
    let reply = server.get("/docs/", &[("accept", BROWSER)]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "text/html; charset=utf-8");
    let csp = reply.header("content-security-policy");
    assert!(csp.starts_with("default-src 'none'; script-src 'self'; style-src 'self';"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(reply.header("x-content-type-options"), "nosniff");
    assert_eq!(reply.header("vary"), "Accept, Accept-Encoding, Cookie");
    let page = reply.text();
    assert!(!page.contains("<img src=x"), "{page}");
    assert!(page.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;.txt</a>"), "{page}");
    assert!(page.contains("<script src=\"/.larder/ui/app.js\" defer></script>"));
    assert!(!page.contains("style="), "no inline style: the CSP would refuse it");
    // Breadcrumbs, the last one the current page.
    assert!(
        page.contains(
            "<li><a href=\"/\">Home</a></li><li><a href=\"/docs/\" aria-current=\"page\">docs</a></li>"
        ),
        "{page}"
    );
    // Folders first, then by name; then by size, largest first, as the query asks.
    let order = |page: &str| -> Vec<String> {
        page.lines()
            .filter_map(|l| l.split("data-name=\"").nth(1))
            .map(|rest| rest.split('"').next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        order(&page),
        ["sub", "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;.txt", "big.bin", "small.txt"]
    );
    let by_size = server.get("/docs/?sort=size&order=desc", &[("accept", BROWSER)]).await.text();
    assert_eq!(
        order(&by_size)[1..],
        ["big.bin", "small.txt", "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;.txt"]
    );
    assert!(by_size.contains("data-sort=\"size\" aria-sort=\"descending\""), "{by_size}");
    assert!(row(&page, "big.bin").contains("data-size=\"5000\""));
    assert!(page.contains("<span title=\"5000 bytes\">4.9 KiB</span>"), "{page}");
    // Anonymous callers get no write controls' promise.
    assert!(page.contains("data-can-write=\"false\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_are_embedded_and_revalidated() {
    let server = TestServer::open().await;
    for (name, kind, needle) in [
        ("app.js", "text/javascript; charset=utf-8", "'use strict';"),
        ("app.css", "text/css; charset=utf-8", ":root"),
    ] {
        let path = format!("/.larder/ui/{name}");
        let reply = server.get(&path, &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), kind);
        assert_eq!(reply.header("cache-control"), "no-cache");
        assert_eq!(reply.header("x-content-type-options"), "nosniff");
        assert!(reply.text().contains(needle));
        let etag = reply.header("etag").to_owned();
        assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");
        let again = server.get(&path, &[("if-none-match", &etag)]).await;
        assert_eq!(again.status, 304);
        assert_eq!(again.header("etag"), etag);
        assert!(again.body.is_empty());
        let head = server.send("HEAD", &path, &[], "").await;
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
        server.send("PUT", &path, &[], "x").await.assert_problem(405, "method-not-allowed");
    }
    server.get("/.larder/ui/other.js", &[]).await.assert_problem(404, "not-found");
    server.get("/.larder/ui/", &[]).await.assert_problem(404, "not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_cookie_reads_but_never_writes() {
    let server = TestServer::with_config(&team_config("")).await;
    server.place("private/secret.txt", b"for alice");
    let secret = token(&server, "alice").await;
    let cookie = format!("theme=dark; larder-token={secret}");

    let read = server.get("/private/secret.txt", &[("cookie", &cookie)]).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.text(), "for alice");
    assert_eq!(read.header("cache-control"), "private");
    let page = server.get("/private/", &[("cookie", &cookie), ("accept", BROWSER)]).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("data-account=\"alice\""));
    assert!(page.text().contains("Signed in as <strong>alice</strong>"));
    assert!(page.text().contains("data-can-write=\"true\""));
    assert!(row(&page.text(), "secret.txt").contains("data-deletable"));

    // A write with only the cookie is anonymous: 401, and nothing changes.
    let put = server.send("PUT", "/private/secret.txt", &[("cookie", &cookie)], "changed").await;
    put.assert_problem(401, "unauthenticated");
    let delete = server.send("DELETE", "/private/secret.txt", &[("cookie", &cookie)], "").await;
    delete.assert_problem(401, "unauthenticated");
    let tokens = server.send("POST", "/.larder/tokens", &[("cookie", &cookie)], "{}").await;
    tokens.assert_problem(401, "unauthenticated");
    assert_eq!(std::fs::read(server.file("private/secret.txt")).unwrap(), b"for alice");

    // A stale cookie is no identity: public pages still open, private ones ask for one.
    let stale = "larder-token=lt_not-a-token";
    assert_eq!(server.get("/", &[("cookie", stale), ("accept", BROWSER)]).await.status, 200);
    server
        .get("/private/secret.txt", &[("cookie", stale)])
        .await
        .assert_problem(401, "unauthenticated");
    // Authorization, when present, decides alone.
    let bob = basic("bob");
    let as_bob =
        server.get("/private/secret.txt", &[("cookie", &cookie), ("authorization", &bob)]).await;
    as_bob.assert_problem(403, "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_markup_is_sandboxed() {
    let server = TestServer::with_config(&team_config("")).await;
    let alice = basic("alice");
    for (name, kind, sandboxed) in [
        ("page.html", "text/html", true),
        ("drawing.svg", "image/svg+xml", true),
        ("feed.xml", "application/xml", true),
        ("notes.txt", "text/plain", false),
        ("photo.png", "image/png", false),
    ] {
        let path = format!("/{name}");
        let put = server
            .send("PUT", &path, &[("authorization", &alice), ("content-type", kind)], "<b>x</b>")
            .await;
        assert_eq!(put.status, 201);
        let get = server.get(&path, &[]).await;
        assert_eq!(get.status, 200);
        assert_eq!(get.header("x-content-type-options"), "nosniff", "{name}");
        let csp = if sandboxed { "sandbox" } else { "" };
        assert_eq!(get.header("content-security-policy"), csp, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_tells_each_caller_its_price() {
    let server = TestServer::with_config(&shop_config()).await;
    let seller = basic("seller");
    let put = server.send("PUT", "/shop/book.pdf", &[("authorization", &seller)], "book").await;
    assert_eq!(put.status, 201);
    server.place("shop/map.pdf", b"map");
    let page_for = |auth: String| {
        let server = &server;
        async move {
            let headers = [("accept", BROWSER), ("authorization", auth.as_str())];
            let reply = server.get("/shop/", &headers).await;
            assert_eq!(reply.status, 200);
            reply.text()
        }
    };
    let alice = page_for(basic("alice")).await;
    assert!(alice.contains("<th scope=\"col\" class=\"price\">Price</th>"));
    let book = row(&alice, "book.pdf");
    assert!(book.contains("data-price=\"5\" data-due"), "{book}");
    assert!(book.contains("<td class=\"price\">5 credits</td>"), "{book}");
    assert!(!book.contains("data-deletable"), "{book}");

    let bought = server
        .send(
            "POST",
            "/.larder/purchases",
            &[("authorization", &basic("alice")), ("content-type", "application/json")],
            r#"{"path": "/shop/book.pdf"}"#,
        )
        .await;
    assert_eq!(bought.status, 201);
    let alice = page_for(basic("alice")).await;
    let book = row(&alice, "book.pdf");
    assert!(book.contains("data-bought") && !book.contains("data-due"), "{book}");
    assert!(book.contains("<td class=\"price\">Bought</td>"), "{book}");
    assert!(row(&alice, "map.pdf").contains("data-due"));

    // The seller writes here: reads free, may delete.
    let seller = page_for(basic("seller")).await;
    let book = row(&seller, "book.pdf");
    assert!(!book.contains("data-due") && book.contains("data-deletable"), "{book}");
    assert!(book.contains("5 credits, free for you"), "{book}");
}
