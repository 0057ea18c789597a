//! Bearer tokens over TCP: issue, use, scope, read-only, revoke, expire; JSON body rules; and
//! sign-in throttling.

use larder::state::State;

use crate::harness::*;

pub async fn new_token(server: &TestServer, auth: &str, body: &str) -> Reply {
    server
        .send(
            "POST",
            "/.larder/tokens",
            &[("authorization", auth), ("content-type", "application/json")],
            body.to_owned(),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_lifecycle() {
    let server = TestServer::with_config(&team_config("")).await;
    let alice = basic("alice");
    let made = new_token(&server, &alice, r#"{"scope": "/docs", "expires_in": "1d"}"#).await;
    assert_eq!(made.status, 201, "{}", made.text());
    let doc = made.json();
    let (id, secret) = (doc["id"].as_str().unwrap(), doc["token"].as_str().unwrap().to_owned());
    assert!(secret.starts_with("lt_") && secret.len() > 40, "{secret}");
    assert_eq!(made.header("location"), format!("/.larder/tokens/{id}"));
    assert_eq!(doc["scope"], "/docs");
    assert_eq!(doc["read_only"], false);
    assert!(doc["expires_at"].as_str().is_some());

    let listed = server.get("/.larder/tokens", &[("authorization", &alice)]).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json()["tokens"][0]["id"], id);
    assert!(!listed.text().contains(&secret), "the secret is shown once");
    assert!(listed.json()["tokens"][0].get("token").is_none());
    let bob = basic("bob");
    let theirs = server.get("/.larder/tokens", &[("authorization", &bob)]).await;
    assert_eq!(theirs.json()["tokens"], serde_json::json!([]));

    let bearer = format!("Bearer {secret}");
    let with_token = [("authorization", bearer.as_str())];
    let put = server.send("PUT", "/docs/a.txt", &with_token, "via token").await;
    assert_eq!(put.status, 201);
    assert_eq!(put.json()["owner"], "alice");
    let account = server.get("/.larder/account", &with_token).await.json();
    assert_eq!(account["name"], "alice");
    assert_eq!(account["signed_in_with"], "token");
    assert_eq!(account["token"]["id"], id);

    let outside = server.send("PUT", "/elsewhere.txt", &with_token, "x").await;
    outside.assert_problem(403, "forbidden");
    assert_eq!(
        outside.header("www-authenticate"),
        "Bearer realm=\"larder\", error=\"insufficient_scope\""
    );
    assert!(!server.file("elsewhere.txt").exists());

    let revoked = server
        .send("DELETE", &format!("/.larder/tokens/{id}"), &[("authorization", &alice)], "")
        .await;
    assert_eq!(revoked.status, 204);
    let after = server.get("/docs/a.txt", &with_token).await;
    after.assert_problem(401, "unauthenticated");
    assert!(
        after
            .header_all("www-authenticate")
            .contains(&"Bearer realm=\"larder\", error=\"invalid_token\"".to_owned())
    );
    let again = server
        .send("DELETE", &format!("/.larder/tokens/{id}"), &[("authorization", &alice)], "")
        .await;
    again.assert_problem(404, "not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_tokens_read_and_only_make_narrower_tokens() {
    let server = TestServer::with_config(&team_config("")).await;
    server.put_as("alice", "/a.txt", "a").await;
    let alice = basic("alice");
    let made = new_token(&server, &alice, r#"{"read_only": true}"#).await.json();
    let bearer = format!("Bearer {}", made["token"].as_str().unwrap());
    let with_token = [("authorization", bearer.as_str())];
    assert_eq!(server.get("/a.txt", &with_token).await.status, 200);
    let write = server.send("PUT", "/a.txt", &with_token, "b").await;
    write.assert_problem(403, "forbidden");
    assert!(write.header("www-authenticate").contains("insufficient_scope"));
    server.send("DELETE", "/a.txt", &with_token, "").await.assert_problem(403, "forbidden");
    assert_eq!(std::fs::read(server.file("a.txt")).unwrap(), b"a");

    new_token(&server, &bearer, r#"{"read_only": false}"#).await.assert_problem(403, "forbidden");
    let child = new_token(&server, &bearer, "{}").await;
    assert_eq!(child.status, 201);
    assert_eq!(child.json()["read_only"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_unknown_tokens_are_401_invalid_token() {
    let server = TestServer::with_config(&team_config("")).await;
    let request = larder::auth::TokenRequest::default();
    let (mut record, secret) = larder::auth::new_token("alice", &request);
    record.expires = Some(larder::auth::now_seconds() - 60);
    State::open(&server.state_dir()).unwrap().insert_token(&record).unwrap();
    let forged = format!("Bearer lt_{}", "A".repeat(43));
    for token in [format!("Bearer {secret}"), forged, "Bearer lt_bad!chars".to_owned()] {
        let reply = server.get("/", &[("authorization", &token)]).await;
        reply.assert_problem(401, "unauthenticated");
        assert_eq!(
            reply.header_all("www-authenticate")[1],
            "Bearer realm=\"larder\", error=\"invalid_token\"",
            "{token}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_requests_must_be_signed_in_json() {
    let server = TestServer::with_config(&team_config("")).await;
    server.send("POST", "/.larder/tokens", &[], "{}").await.assert_problem(401, "unauthenticated");
    server.get("/.larder/account", &[]).await.assert_problem(401, "unauthenticated");
    let alice = basic("alice");
    let plain = [("authorization", alice.as_str()), ("content-type", "text/plain")];
    let reply = server.send("POST", "/.larder/tokens", &plain, "scope=/").await;
    reply.assert_problem(415, "unsupported-media-type");
    new_token(&server, &alice, "{not json").await.assert_problem(400, "bad-request");
    let unknown = new_token(&server, &alice, r#"{"scop": "/docs"}"#).await;
    unknown.assert_problem(400, "bad-request");
    assert!(unknown.json()["detail"].as_str().unwrap().contains("scop"), "{}", unknown.text());
    new_token(&server, &alice, r#"{"scope": "../etc"}"#).await.assert_problem(400, "bad-request");
    new_token(&server, &alice, r#"{"expires_in": "3 fortnights"}"#)
        .await
        .assert_problem(400, "bad-request");
    let put = server.send("PUT", "/.larder/tokens", &[("authorization", &alice)], "").await;
    put.assert_problem(405, "method-not-allowed");
    assert_eq!(put.header("allow"), "GET, HEAD, POST, OPTIONS");
    // No body at all: a token with every default.
    let bare = server.send("POST", "/.larder/tokens", &[("authorization", &alice)], "").await;
    assert_eq!(bare.status, 201);
    assert_eq!(bare.json()["scope"], "/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_are_throttled_without_locking_the_user_out() {
    let server = TestServer::with_config(&team_config("sign_in_limit = 5")).await;
    let alice = basic("alice");
    let wrong = basic_raw("alice:guess");
    let (home, attacker, stranger) = ([127, 0, 0, 2], [127, 0, 0, 9], [127, 0, 0, 3]);
    // Alice signs in from home: that address becomes trusted for her.
    assert_eq!(
        server.send_from(home, "GET", "/", &[("authorization", &alice)], "").await.status,
        200
    );
    for _ in 0..5 {
        let reply = server.send_from(attacker, "GET", "/", &[("authorization", &wrong)], "").await;
        reply.assert_problem(401, "unauthenticated");
    }
    // Now even the right password is refused to the guesser and to new addresses…
    for source in [attacker, stranger] {
        let reply = server.send_from(source, "GET", "/", &[("authorization", &alice)], "").await;
        reply.assert_problem(429, "too-many-requests");
        let wait: u64 = reply.header("retry-after").parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
    }
    // …but not to alice at home, nor to other accounts.
    assert_eq!(
        server.send_from(home, "GET", "/", &[("authorization", &alice)], "").await.status,
        200
    );
    let bob = basic("bob");
    assert_eq!(
        server.send_from(stranger, "GET", "/", &[("authorization", &bob)], "").await.status,
        200
    );
    // The guessing address is blocked for every account after twice the limit.
    for _ in 0..5 {
        let guess = basic_raw("bob:guess");
        server.send_from(attacker, "GET", "/", &[("authorization", &guess)], "").await;
    }
    let reply =
        server.send_from(attacker, "GET", "/", &[("authorization", &basic("root"))], "").await;
    reply.assert_problem(429, "too-many-requests");
    // Anonymous requests never count.
    assert_eq!(server.send_from(attacker, "GET", "/", &[], "").await.status, 200);
}
