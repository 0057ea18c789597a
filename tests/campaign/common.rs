//! What every campaign needs: the real binary as a child process, a small HTTP client with a
//! deadline on every exchange, seeded randomness, and a walk of ROOT for stray temporary files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

pub use rand::rngs::StdRng;
pub use rand::{Rng, SeedableRng};

/// Runs one campaign or scenario (`kind` names which) and prints `KIND NAME: passed in S s`,
/// then its lines, indented: the lines `scripts/test` counts.
pub fn report(kind: &str, name: &str, run: &dyn Fn() -> Vec<String>) {
    let started = std::time::Instant::now();
    let lines = run();
    println!("{kind} {name}: passed in {:.1} s", started.elapsed().as_secs_f64());
    for line in lines {
        println!("  {line}");
    }
}

/// How a run was asked for: `--long`, `--seed N`, `--only NAME`.
#[derive(Debug, Clone)]
pub struct Options {
    pub long: bool,
    pub seed: u64,
    pub only: Option<String>,
}

impl Options {
    pub fn from_args() -> Options {
        let mut options = Options {
            long: std::env::var("LARDER_CAMPAIGN").is_ok_and(|v| v == "long"),
            seed: std::env::var("LARDER_CAMPAIGN_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(7),
            only: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--long" => options.long = true,
                "--seed" => {
                    options.seed = args.next().and_then(|s| s.parse().ok()).expect("--seed N")
                }
                "--only" => options.only = args.next(),
                _ => {} // what cargo's test runner passes along
            }
        }
        options
    }

    pub fn wants(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|only| name.contains(only))
    }

    /// A generator for one part of a campaign, reproducible from the seed.
    pub fn rng(&self, part: u64) -> StdRng {
        StdRng::seed_from_u64(self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ part)
    }
}

/// The password of every campaign account.
pub const PASSWORD: &str = "campaign-pw";

/// The argon2id hash of [`PASSWORD`], computed once.
pub fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| larder::auth::hash_password(PASSWORD).unwrap())
}

/// The `Authorization` value of `account`.
pub fn basic(account: &str) -> String {
    use base64::Engine;
    let text = format!("{account}:{PASSWORD}");
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(text))
}

/// `[[account]]` tables for `names`, each on `plan` (or none).
pub fn accounts(names: &[&str], plan: Option<&str>) -> String {
    let hash = password_hash();
    names
        .iter()
        .map(|name| {
            let plan = plan.map(|p| format!("plan = \"{p}\"\n")).unwrap_or_default();
            format!("[[account]]\nname = \"{name}\"\npassword = \"{hash}\"\n{plan}")
        })
        .collect()
}

pub use crate::larder_process::Process;

/// Starts larder on `root` with `config` and the `FAILPOINTS` value, if any.
pub fn start(root: &Path, config: &Path, failpoints: Option<&str>) -> Process {
    let config = ["--config", config.to_str().unwrap()];
    let env: Vec<(&str, &str)> = failpoints.map(|f| ("FAILPOINTS", f)).into_iter().collect();
    Process::start(root, &config, &env)
}

/// Resident memory in KiB and open file descriptors of `server`, from /proc.
pub fn footprint(server: &Process) -> (u64, usize) {
    let pid = server.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    (rss, fds)
}

/// One answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON; a body that is not JSON fails with what it was.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The header's value, or "" when absent.
    #[allow(dead_code)] // tests/cluster shares this file and reads headers; no campaign does
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
    }
}

/// Any failure to get a whole answer: refused, cut off, or past the deadline.
pub type Failed = Box<dyn std::error::Error + Send + Sync>;

/// One request on a new connection, with a deadline of 30 s for the whole exchange (a hang
/// is a failure, never a stuck campaign).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Reply, Failed> {
    let body = body.into();
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let mut builder = Request::builder().method(method).uri(target).header("host", "campaign");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = sender.send_request(builder.body(Full::new(body))?).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, Failed>(Reply { status: parts.status.as_u16(), headers: parts.headers, body })
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| "no answer in 30 s")?
}

/// Runs `make(0)` … `make(n - 1)` at once, each as its own task; their outputs in order.
pub async fn at_once<F, Fut>(n: usize, make: F) -> Vec<Fut::Output>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(make(i))).collect();
    let mut outputs = Vec::with_capacity(n);
    for task in tasks {
        outputs.push(task.await.unwrap());
    }
    outputs
}

/// Every temporary file (`.larder-tmp…`) under `root`.
pub fn temp_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with(".larder-tmp") {
                found.push(path.clone());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    found
}

/// The total size of the regular files under `dir` (0 if it does not exist).
pub fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => disk_usage(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// `len` bytes that say who wrote them: `tag` repeated. Distinct tags give distinct bytes.
pub fn content(tag: &str, len: usize) -> Bytes {
    let tag = format!("{tag};");
    Bytes::from(
        tag.as_bytes().iter().copied().cycle().take(len.max(tag.len())).collect::<Vec<u8>>(),
    )
}

/// The storage `account` is charged for, from `/.larder/account`. Retries past answers other
/// than 200 (a fault campaign may fail the account's first sign-in, which writes state).
pub async fn storage_used(addr: SocketAddr, account: &str) -> u64 {
    let auth = basic(account);
    for _ in 0..50 {
        let reply = request(addr, "GET", "/.larder/account", &[("authorization", &auth)], "")
            .await
            .unwrap();
        if reply.status == 200 {
            return reply.json()["storage"]["used"].as_u64().unwrap();
        }
    }
    panic!("/.larder/account kept failing for {account}");
}
