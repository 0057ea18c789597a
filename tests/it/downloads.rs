//! What a download carries (SPEC §3, issue 33): the name for saving it, the charset of text
//! checked when it was stored, and compression the client accepts, without breaking ranges
//! or validators.

use tokio::io::AsyncReadExt;

use crate::harness::*;

/// `body` decoded from `coding`.
async fn decoded(coding: &str, body: &[u8]) -> Vec<u8> {
    use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
    let mut out = Vec::new();
    match coding {
        "zstd" => ZstdDecoder::new(body).read_to_end(&mut out).await.unwrap(),
        "br" => BrotliDecoder::new(body).read_to_end(&mut out).await.unwrap(),
        "gzip" => GzipDecoder::new(body).read_to_end(&mut out).await.unwrap(),
        other => panic!("{other}"),
    };
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_says_utf8_only_when_its_bytes_are() {
    let server = TestServer::with_config(&team_config("")).await;
    let auth = basic("alice");
    let put = |target: &'static str, ct: Option<&'static str>, body: Vec<u8>| {
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend(ct.map(|ct| ("content-type", ct)));
        let server = &server;
        async move { server.send("PUT", target, &headers, body).await }
    };
    let type_of =
        async |target: &str| server.get(target, &[]).await.header("content-type").to_owned();
    assert_eq!(put("/a.txt", None, "Grüße".into()).await.status, 201);
    assert_eq!(type_of("/a.txt").await, "text/plain; charset=utf-8");
    put("/latin.txt", Some("text/plain"), b"Gr\xfc\xdfe".to_vec()).await;
    assert_eq!(type_of("/latin.txt").await, "text/plain");
    put("/declared.txt", Some("text/plain; charset=iso-8859-1"), b"Gr\xfc\xdfe".to_vec()).await;
    assert_eq!(type_of("/declared.txt").await, "text/plain; charset=iso-8859-1");
    put("/data.bin", None, "Grüße".into()).await;
    assert_eq!(type_of("/data.bin").await, "application/octet-stream");
    // Streamed past the in-memory size, characters split across chunks.
    let big = "日本語のテキスト".repeat(50_000).into_bytes();
    assert!(big.len() > 1 << 20);
    put("/big.txt", None, big).await;
    assert_eq!(type_of("/big.txt").await, "text/plain; charset=utf-8");
    let mut broken = "ü".repeat(200_000).into_bytes();
    broken.pop();
    put("/broken.txt", None, broken).await;
    assert_eq!(type_of("/broken.txt").await, "text/plain");
    // A file put there by another program was never checked.
    server.place("placed.txt", "Grüße".as_bytes());
    assert_eq!(type_of("/placed.txt").await, "text/plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_are_named_and_forced_on_request() {
    let server = TestServer::open().await;
    server.place("docs/Übersicht März.pdf", b"%PDF");
    let shown = server.get("/docs/%C3%9Cbersicht%20M%C3%A4rz.pdf", &[]).await;
    assert_eq!(
        shown.header("content-disposition"),
        "inline; filename=\"_bersicht M_rz.pdf\"; filename*=UTF-8''%C3%9Cbersicht%20M%C3%A4rz.pdf"
    );
    let saved = server.get("/docs/%C3%9Cbersicht%20M%C3%A4rz.pdf?download", &[]).await;
    assert!(saved.header("content-disposition").starts_with("attachment; "));
    assert_eq!(&saved.body[..], b"%PDF");
    let head = server.send("HEAD", "/docs/%C3%9Cbersicht%20M%C3%A4rz.pdf", &[], "").await;
    assert_eq!(head.header("content-disposition"), shown.header("content-disposition"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressible_answers_come_compressed_each_with_its_own_tag() {
    let server = TestServer::open().await;
    let text: Vec<u8> =
        (0..4000).flat_map(|i| format!("line {i} of a log\n").into_bytes()).collect();
    server.place("log.txt", &text);
    server.place("photo.png", &text);
    let plain = server.get("/log.txt", &[]).await;
    assert_eq!((plain.header("content-encoding"), plain.header("vary")), ("", "Accept-Encoding"));
    let identity_tag = plain.header("etag").to_owned();
    let mut tags = vec![identity_tag.clone()];
    for coding in ["zstd", "br", "gzip"] {
        let reply = server.get("/log.txt", &[("accept-encoding", coding)]).await;
        assert_eq!(reply.header("content-encoding"), coding);
        assert!(reply.body.len() < text.len() / 4, "{coding}: {}", reply.body.len());
        assert_eq!(decoded(coding, &reply.body).await, text, "{coding}");
        let tag = reply.header("etag").to_owned();
        assert!(!tags.contains(&tag), "{coding}: {tag}");
        tags.push(tag.clone());
        // Its own tag revalidates it; the identity tag does not.
        let again = [("accept-encoding", coding), ("if-none-match", tag.as_str())];
        let not_modified = server.get("/log.txt", &again).await;
        assert_eq!((not_modified.status, not_modified.header("etag")), (304, tag.as_str()));
        let other = [("accept-encoding", coding), ("if-none-match", identity_tag.as_str())];
        assert_eq!(server.get("/log.txt", &other).await.status, 200);
    }
    // A browser's field picks zstd; HEAD says what GET would.
    let browser = [("accept-encoding", "gzip, deflate, br, zstd")];
    let head = server.send("HEAD", "/log.txt", &browser, "").await;
    assert_eq!((head.header("content-encoding"), head.body.len()), ("zstd", 0));
    // A range is of the identity coding.
    let ranged = server.get("/log.txt", &[browser[0], ("range", "bytes=0-9")]).await;
    assert_eq!((ranged.status, ranged.header("content-encoding")), (206, ""));
    assert_eq!(&ranged.body[..], &text[..10]);
    // Not compressible: as it is, whatever the client accepts.
    let png = server.get("/photo.png", &browser).await;
    assert_eq!(png.header("content-encoding"), "");
    assert!(!png.header("vary").contains("Accept-Encoding"));
    // Listings too.
    for i in 0..50 {
        server.place(&format!("many/file-{i:03}.txt"), b"x");
    }
    let listing = server.get("/many/?format=json", &[("accept-encoding", "gzip")]).await;
    assert_eq!(listing.header("content-encoding"), "gzip");
    let doc: serde_json::Value =
        serde_json::from_slice(&decoded("gzip", &listing.body).await).unwrap();
    assert_eq!(doc["entries"].as_array().unwrap().len(), 50);
    let tag = listing.header("etag").to_owned();
    let again = [("accept-encoding", "gzip"), ("if-none-match", tag.as_str())];
    assert_eq!(server.get("/many/?format=json", &again).await.status, 304);
}
