//! The campaigns of issue 7, each trying hard to break one promise and printing what it did:
//! crash (SIGKILL under traffic), concurrency, faults, generated inputs, hostile input and a
//! soak. A plain program (`harness = false`): `cargo test --features failpoints --test
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
mod props;
mod soak;

use std::time::Instant;

fn main() {
    let options = common::Options::from_args();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mode = if options.long { "long" } else { "short" };
    println!(
        "campaigns: {mode} run, seed {} (rerun with -- --seed {})",
        options.seed, options.seed
    );
    let report = |name: &str, started: Instant, lines: Vec<String>| {
        println!("campaign {name}: passed in {:.1} s", started.elapsed().as_secs_f64());
        for line in lines {
            println!("  {line}");
        }
    };
    if options.wants("props") {
        let started = Instant::now();
        report("props", started, props::run(&options));
    }
    if options.wants("hostile") {
        let started = Instant::now();
        report("hostile", started, runtime.block_on(hostile::run(&options)));
    }
    if options.wants("concurrency") {
        let started = Instant::now();
        report("concurrency", started, runtime.block_on(concurrency::run(&options)));
    }
    #[cfg(feature = "failpoints")]
    if options.wants("faults") {
        let started = Instant::now();
        report("faults", started, runtime.block_on(faults::run(&options)));
    }
    #[cfg(not(feature = "failpoints"))]
    if options.wants("faults") {
        println!("campaign faults: skipped (build with --features failpoints)");
    }
    if options.wants("crash") {
        let started = Instant::now();
        report("crash", started, runtime.block_on(crash::run(&options)));
    }
    if options.wants("soak") {
        let started = Instant::now();
        report("soak", started, runtime.block_on(soak::run(&options)));
    }
}
