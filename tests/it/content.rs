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
    // Stored normalised; served with a sandbox unless a browser shows the type safely inline.
    let cases = [
        ("/a.xsl", "text/xsl", "text/xsl", true),
        ("/b.svg", "image/svg+xml", "image/svg+xml", true),
        ("/c.xhtml", "application/xhtml+xml", "application/xhtml+xml", true),
        ("/d.html", "TEXT/HTML; Charset=UTF-8", "text/html; charset=utf-8", true),
        ("/e.txt", "text/plain", "text/plain", false),
        ("/f.png", "image/png", "image/png", false),
        ("/g.json", "application/json", "application/json", false),
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
        ("text/plain", "nosniff")
    );
    server.place("placed.html", b"<script>steal()</script>");
    assert_eq!(server.get("/placed.html", &[]).await.header("content-security-policy"), "sandbox");
}
