//! Two larder nodes sharing one bucket (Garage) and one PostgreSQL database, with clients
//! alternating between them: SPEC sections 3, 4 and 5 across nodes, a cross-node `If-Match`
//! race, purchase and quota races with exact balances, and a node killed with SIGKILL under
//! load. A plain program (`harness = false`) that prints what each scenario did.
//!
//! It runs when `LARDER_TEST_SERVICES=1` (as `scripts/test` sets it), and then needs the
//! services `scripts/services start` starts (and `scripts/test` sources):
//! `LARDER_TEST_DATABASE` (a PostgreSQL URL whose role may create databases),
//! `LARDER_TEST_BUCKET`, and the `AWS_*` variables of the S3 endpoint. Each scenario gets
//! its own database and key prefix. `-- --only NAME` runs one scenario. Without
//! `LARDER_TEST_SERVICES=1` it says so and passes, so a plain `cargo test` needs no services.

// A failed unwrap here is a found defect, reported with a backtrace.
#![allow(clippy::unwrap_used)]

#[allow(dead_code, unused_imports)]
#[path = "../campaign/common.rs"]
mod common;
#[path = "../shared/process.rs"]
mod larder_process;
mod scenarios;

use std::path::PathBuf;

use common::Process;

/// Two (or more) nodes over one fresh database and one fresh prefix of the test bucket.
pub struct Cluster {
    /// The running nodes (a killed one stays, dead).
    pub nodes: Vec<Process>,
    /// The configuration file every node reads.
    pub config: PathBuf,
    /// The scenario's database.
    pub database: String,
    /// The scenario's place in the bucket: `s3://BUCKET/PREFIX`.
    pub store: String,
    _dir: tempfile::TempDir,
}

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `scripts/services start` and source .tools/services/env")
    })
}

impl Cluster {
    /// Starts `nodes` nodes named `name` with the configuration `config` (accounts, plans,
    /// rules; the store and state are added here).
    pub fn start(name: &str, config: &str, nodes: usize) -> Cluster {
        let base = required("LARDER_TEST_DATABASE");
        let bucket = required("LARDER_TEST_BUCKET");
        let unique = format!("{name}_{}_{:08x}", std::process::id(), rand::random::<u32>());
        let database = {
            let base = base.clone();
            let unique = unique.clone();
            // The postgres client keeps a runtime of its own: use it off ours.
            std::thread::spawn(move || {
                let mut admin = postgres::Client::connect(&base, postgres::NoTls).unwrap();
                admin.batch_execute(&format!("CREATE DATABASE {unique}")).unwrap();
                let (head, _) = base.rsplit_once('/').unwrap();
                format!("{head}/{unique}")
            })
            .join()
            .unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("larder.toml");
        let prefix = unique.replace('_', "-");
        let store = format!("s3://{bucket}/{prefix}");
        let text = format!("store = \"{store}\"\nstate = \"{database}\"\n{config}");
        std::fs::write(&path, text).unwrap();
        let mut cluster = Cluster { nodes: Vec::new(), config: path, database, store, _dir: dir };
        for _ in 0..nodes {
            cluster.add_node();
        }
        cluster
    }

    /// Starts one more node; returns its index.
    pub fn add_node(&mut self) -> usize {
        let root = self._dir.path().join(format!("node{}", self.nodes.len()));
        std::fs::create_dir_all(&root).unwrap();
        let config = ["--config", self.config.to_str().unwrap()];
        self.nodes.push(Process::start(&root, &config, &[]));
        self.nodes.len() - 1
    }

    /// The address of node `i`.
    pub fn addr(&self, i: usize) -> std::net::SocketAddr {
        self.nodes[i].addr
    }

    /// Runs `sql` on the scenario's database (off the async workers) and returns the first
    /// column of the first row as an integer.
    pub async fn count(&self, sql: &str) -> i64 {
        let (url, sql) = (self.database.clone(), sql.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            client.query_one(&sql, &[]).unwrap().get(0)
        })
        .await
        .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let (url, name) = (required("LARDER_TEST_DATABASE"), self.database.rsplit('/').next());
        let name = name.unwrap_or_default().to_owned();
        // Best effort: the services' data folder is the test's own.
        let _ = std::thread::spawn(move || {
            let mut admin = postgres::Client::connect(&url, postgres::NoTls).ok()?;
            admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).ok()
        })
        .join();
    }
}

fn main() {
    if std::env::var("LARDER_TEST_SERVICES").as_deref() != Ok("1") {
        println!(
            "cluster: skipped (set LARDER_TEST_SERVICES=1 with the services of \
             `scripts/services start` running; scripts/test does)"
        );
        return;
    }
    let only = {
        let mut args = std::env::args().skip(1);
        let mut only = None;
        while let Some(arg) = args.next() {
            if arg == "--only" {
                only = args.next();
            }
        }
        only
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let scenario = |name: &str, run: &dyn Fn() -> Vec<String>| {
        if only.as_deref().is_some_and(|o| o != name) {
            return;
        }
        common::report("cluster", name, run);
    };
    scenario("spec", &|| runtime.block_on(scenarios::spec()));
    scenario("dav", &|| runtime.block_on(scenarios::dav()));
    scenario("if_match_race", &|| runtime.block_on(scenarios::if_match_race()));
    scenario("purchase_race", &|| runtime.block_on(scenarios::purchase_race()));
    scenario("quota_race", &|| runtime.block_on(scenarios::quota_race()));
    scenario("kill", &|| runtime.block_on(scenarios::kill_under_load()));
    scenario("migrate", &|| runtime.block_on(scenarios::migrate()));
    scenario("migrate_refusals", &|| runtime.block_on(scenarios::migrate_refusals()));
    scenario("sweep", &|| runtime.block_on(scenarios::sweep()));
    scenario("large", &|| runtime.block_on(scenarios::large()));
    scenario("database_outage", &|| runtime.block_on(scenarios::database_outage()));
    scenario("database_frozen", &|| runtime.block_on(scenarios::database_frozen()));
    scenario("lock_held", &|| runtime.block_on(scenarios::lock_held()));
    scenario("bucket_outage", &|| runtime.block_on(scenarios::bucket_outage()));
    scenario("bucket_frozen", &|| runtime.block_on(scenarios::bucket_frozen()));
    scenario("startup", &|| runtime.block_on(scenarios::startup()));
}
