//! The campaigns of issue 7, each trying hard to break one promise and printing what it did:
//! crash (SIGKILL under traffic), power cuts (LazyFS), concurrency, faults, generated inputs, hostile input, a
//! hostile tenant and a soak. A plain program (`harness = false`): `cargo test --features failpoints --test
//! campaign` runs the short seeded run that CI runs; `-- --long` the long one (or
//! `LARDER_CAMPAIGN=long`), `-- --seed N` another seed, `-- --only NAME` one campaign.
//! A broken promise panics with what broke, and the run fails.

// A failed unwrap here is a found defect, reported with a backtrace.
#![allow(clippy::unwrap_used)]

mod common;
mod concurrency;
mod crash;
#[cfg(feature = "failpoints")]
mod faults;
#[path = "../corpus/framing.rs"]
mod framing;
mod hostile;
#[path = "../shared/process.rs"]
mod larder_process;
mod powercut;
mod props;
mod soak;
mod tenants;

fn main() {
    let options = common::Options::from_args();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mode = if options.long { "long" } else { "short" };
    println!(
        "campaigns: {mode} run, seed {} (rerun with -- --seed {})",
        options.seed, options.seed
    );
    // Runs one campaign if it was asked for, timed, and prints its lines.
    let campaign = |name: &str, run: &dyn Fn() -> Vec<String>| {
        if !options.wants(name) {
            return;
        }
        common::report("campaign", name, run);
    };
    campaign("props", &|| props::run(&options));
    campaign("hostile", &|| runtime.block_on(hostile::run(&options)));
    campaign("tenants", &|| runtime.block_on(tenants::run(&options)));
    campaign("concurrency", &|| runtime.block_on(concurrency::run(&options)));
    #[cfg(feature = "failpoints")]
    campaign("faults", &|| runtime.block_on(faults::run(&options)));
    #[cfg(not(feature = "failpoints"))]
    if options.wants("faults") {
        println!("campaign faults: skipped (build with --features failpoints)");
    }
    campaign("crash", &|| runtime.block_on(crash::run(&options)));
    campaign("powercut", &|| runtime.block_on(powercut::run(&options)));
    campaign("soak", &|| runtime.block_on(soak::run(&options)));
}
