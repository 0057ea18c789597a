//! Basic sign-in, the 401 challenges, and 403 for a known account a rule does not allow.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_writes_get_both_challenges() {
    let server = TestServer::with_config(&team_config("realm = \"team files\"")).await;
    let reply = server.put_as("", "/a.txt", "x").await;
    reply.assert_problem(401, "unauthenticated");
    assert_eq!(
        reply.header_all("www-authenticate"),
        ["Basic realm=\"team files\", charset=\"UTF-8\"", "Bearer realm=\"team files\""]
    );
    assert!(!server.file("a.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_401_even_where_anonymous_may_read() {
    let server = TestServer::with_config(&team_config("")).await;
    server.place("public.txt", b"public");
    assert_eq!(server.get("/public.txt", &[]).await.status, 200);
    let cases = [
        basic_raw("alice:wrong password"),
        basic_raw("nobody:correct horse"),
        basic_raw("no colon at all"),
        "Basic !!!not-base64!!!".to_owned(),
        "Basic".to_owned(),
        "Negotiate abc".to_owned(),
        "Bearer not-a-token".to_owned(),
    ];
    for value in &cases {
        let reply = server.get("/public.txt", &[("authorization", value)]).await;
        reply.assert_problem(401, "unauthenticated");
        let challenges = reply.header_all("www-authenticate");
        assert_eq!(challenges.len(), 2, "{value}");
        assert!(challenges[0].starts_with("Basic realm=\"larder\""), "{value}");
        let bearer = if value.starts_with("Bearer") {
            "Bearer realm=\"larder\", error=\"invalid_token\""
        } else {
            "Bearer realm=\"larder\""
        };
        assert_eq!(challenges[1], bearer, "{value}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_in_but_not_allowed_is_403() {
    let server = TestServer::with_config(&team_config("")).await;
    assert_eq!(server.put_as("alice", "/private/plan.txt", "mine").await.status, 201);
    server.put_as("bob", "/private/plan.txt", "theirs").await.assert_problem(403, "forbidden");
    let bob = basic("bob");
    server
        .get("/private/plan.txt", &[("authorization", &bob)])
        .await
        .assert_problem(403, "forbidden");
    server.get("/private/plan.txt", &[]).await.assert_problem(401, "unauthenticated");
    // Admins may do everything.
    let root = basic("root");
    assert_eq!(server.get("/private/plan.txt", &[("authorization", &root)]).await.status, 200);
    assert_eq!(std::fs::read(server.file("private/plan.txt")).unwrap(), b"mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_is_read_only_for_everyone() {
    let server = TestServer::open().await;
    server.place("a.txt", b"a");
    assert_eq!(server.get("/a.txt", &[]).await.status, 200);
    server.put_as("", "/a.txt", "b").await.assert_problem(401, "unauthenticated");
    server.send("DELETE", "/a.txt", &[], "").await.assert_problem(401, "unauthenticated");
    assert_eq!(std::fs::read(server.file("a.txt")).unwrap(), b"a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_show_only_what_the_caller_may_read() {
    let server = TestServer::with_config(&team_config("")).await;
    server.put_as("alice", "/private/p.txt", "p").await;
    server.put_as("alice", "/open.txt", "o").await;
    assert_eq!(server.list("/", &[]).await.entry_names(), ["open.txt"]);
    let alice = basic("alice");
    assert_eq!(
        server.list("/", &[("authorization", &alice)]).await.entry_names(),
        ["open.txt", "private"]
    );
}
