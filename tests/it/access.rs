//! Hidden resources, homes, unlisted paths and filtered listings, over TCP.

use crate::harness::*;

fn config() -> String {
    format!(
        r#"{}{HOMES}
[[rule]]
path = "/vault"
read = ["alice"]
write = ["alice"]
hidden = true
[[rule]]
path = "/drafts"
read = ["*"]
unlisted = true
"#,
        team_config("")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_is_indistinguishable_from_missing() {
    let server = TestServer::with_config(&config()).await;
    assert_eq!(server.put_as("alice", "/home/alice/diary.txt", "dear diary").await.status, 201);
    assert_eq!(server.put_as("alice", "/vault/plans.txt", "plans").await.status, 201);
    let bob = basic("bob");
    let as_bob = [("authorization", bob.as_str())];
    for method in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE", "POST"] {
        let write = matches!(method, "PUT" | "DELETE" | "POST");
        let body = if write { "x" } else { "" };
        for (who, headers) in [("bob", &as_bob[..]), ("anonymous", &[][..])] {
            let hidden = [
                server.send(method, "/home/alice/diary.txt", headers, body).await,
                server.send(method, "/vault/plans.txt", headers, body).await,
                server.send(method, "/home/alice/", headers, "").await,
            ];
            let mut missing = vec![
                server.send(method, "/home/alice/nothing.txt", headers, body).await,
                server.send(method, "/vault/nothing.txt", headers, body).await,
            ];
            // Where the open rule lets the caller try, a path that exists nowhere.
            if !write || (who == "bob" && method != "PUT") {
                missing.push(server.send(method, "/no/such/thing.txt", headers, "").await);
            }
            let want = seen(&missing[0]);
            assert_eq!(want.0, 404, "{method} as {who}");
            for reply in hidden.iter().chain(&missing) {
                assert_eq!(seen(reply), want, "{method} as {who}");
            }
        }
    }
    // Nothing changed, and the owner still reads it.
    let alice = basic("alice");
    let diary = server.get("/home/alice/diary.txt", &[("authorization", &alice)]).await;
    assert_eq!((diary.status, &diary.body[..]), (200, &b"dear diary"[..]));
    assert!(server.file("vault/plans.txt").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homes_belong_to_their_account() {
    let server = TestServer::with_config(&config()).await;
    assert_eq!(server.put_as("bob", "/home/bob/notes.txt", "bob's").await.status, 201);
    server.put_as("bob", "/home/alice/planted.txt", "x").await.assert_problem(404, "not-found");
    assert!(!server.file("home/alice/planted.txt").exists());
    let root = basic("root");
    let seen = server.get("/home/bob/notes.txt", &[("authorization", &root)]).await;
    assert_eq!(seen.status, 200, "admins may do everything");
    // {account} stands for any name, an account's or not: /home/carol is nobody's but the
    // admins', whether or not carol is an account.
    server.put_as("bob", "/home/carol/x.txt", "x").await.assert_problem(404, "not-found");
    assert!(!server.file("home/carol").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_hide_what_the_caller_may_not_read() {
    let server = TestServer::with_config(&config()).await;
    server.put_as("alice", "/home/alice/a.txt", "a").await;
    server.put_as("bob", "/home/bob/b.txt", "b").await;
    server.put_as("alice", "/vault/v.txt", "v").await;
    server.place("drafts/d.txt", b"draft");
    server.place("public.txt", b"p");
    let (alice, bob, root) = (basic("alice"), basic("bob"), basic("root"));
    let list = async |target: &str, auth: Option<&str>| {
        let headers: Vec<(&str, &str)> =
            auth.map(|a| vec![("authorization", a)]).unwrap_or_default();
        server.list(target, &headers).await.entry_names()
    };
    assert!(list("/home/", None).await.is_empty(), "outsiders see no homes");
    assert_eq!(list("/home/", Some(&bob)).await, ["bob"]);
    assert_eq!(list("/home/", Some(&alice)).await, ["alice"]);
    assert_eq!(list("/home/", Some(&root)).await, ["alice", "bob"]);
    assert_eq!(list("/home/alice/", Some(&alice)).await, ["a.txt"]);
    assert_eq!(list("/", None).await, ["home", "public.txt"]);
    assert_eq!(list("/", Some(&alice)).await, ["home", "public.txt", "vault"]);
    // Unlisted: never listed, still readable by URL.
    assert!(!list("/", Some(&root)).await.contains(&"drafts".to_owned()));
    assert_eq!(&server.get("/drafts/d.txt", &[]).await.body[..], b"draft");
}
