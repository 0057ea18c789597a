//! criterion benchmarks of the pure functions on every request's path: rule evaluation over
//! 10,000 rules, path normalisation, precondition evaluation. `cargo bench --bench hot`.

// criterion_group! generates a public function without documentation.
#![allow(missing_docs)]
// Fixed inputs: a failed unwrap is a broken benchmark, and should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use larder::access::{Action, Principal, Rule, Rules, Who};
use larder::http::conditional::{Preconditions, Validators};
use larder::path::ResourcePath;

fn rules(count: usize) -> Rules {
    let mut rules: Vec<Rule> = (0..count)
        .map(|i| Rule {
            path: Rule::parse_path(&format!("/team{i}/shared")).unwrap(),
            read: vec![Who::Authenticated],
            list: vec![Who::Authenticated],
            create: vec![Who::Account(format!("user{i}"))],
            ..Rule::default()
        })
        .collect();
    rules.push(Rule {
        path: vec![],
        read: vec![Who::Anyone],
        list: vec![Who::Anyone],
        ..Rule::default()
    });
    rules.push(Rule {
        path: Rule::parse_path("/home/{account}").unwrap(),
        read: vec![Who::PathAccount],
        hidden: true,
        ..Rule::default()
    });
    Rules::new(rules)
}

fn decide(c: &mut Criterion) {
    let rules = rules(10_000);
    let principal = Principal::account("user4242", false);
    let deep = ResourcePath::parse("/team4242/shared/reports/2026/q3.pdf").unwrap();
    let home = ResourcePath::parse("/home/user17/notes.txt").unwrap();
    c.bench_function("decide, 10,000 rules, deep path", |b| {
        b.iter(|| rules.decide(black_box(&principal), black_box(deep.segments()), Action::Create))
    });
    c.bench_function("decide, 10,000 rules, {account} home", |b| {
        b.iter(|| rules.decide(black_box(&principal), black_box(home.segments()), Action::Read))
    });
}

fn paths(c: &mut Criterion) {
    c.bench_function("path: plain", |b| {
        b.iter(|| ResourcePath::parse(black_box("/docs/reports/2026/q3-summary.pdf")))
    });
    c.bench_function("path: percent-encoded", |b| {
        b.iter(|| ResourcePath::parse(black_box("/d%C3%A9p%C3%B4t/r%C3%A9sum%C3%A9%20final.pdf")))
    });
    c.bench_function("path: refused (..)", |b| {
        b.iter(|| ResourcePath::parse(black_box("/a/%2e%2e/b")))
    });
}

fn preconditions(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert("if-none-match", "\"a\", \"b\", W/\"0123456789abcdef\"".parse().unwrap());
    headers.insert("if-modified-since", "Wed, 25 Nov 2026 02:00:00 GMT".parse().unwrap());
    let current = Validators {
        etag: Some("0123456789abcdef"),
        modified: Some(UNIX_EPOCH + Duration::from_secs(1_795_000_000)),
    };
    c.bench_function("preconditions: parse + evaluate", |b| {
        b.iter(|| Preconditions::parse(black_box(&headers)).evaluate(true, Some(current)))
    });
}

criterion_group!(hot, decide, paths, preconditions);
criterion_main!(hot);
