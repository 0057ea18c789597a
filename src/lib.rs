//! larder: a self-hosted HTTP resource server that keeps the whole status-code contract.
//!
//! # Layout
//!
//! Dependencies point downward in this list: a module may use those below it, never above.
//! `scripts/layers` (run by `scripts/test`) checks it, with no exception.
//!
//! - [`cli`]: the command line (`serve`, `hash-password`, `check`, `explain`, `migrate`,
//!   `token create`); the thin `main.rs` calls it.
//! - [`migrate`]: the folder and SQLite copied into a bucket and PostgreSQL.
//! - [`explain`]: the rules and one path's decisions in words (`check`, `explain`).
//! - [`server`]: sockets, connections, the guard before hyper, graceful shutdown.
//! - [`zerocopy`]: file bytes sent with sendfile on plain HTTP/1 connections.
//! - [`http`]: routing, the order of checks, method semantics, conditional and range requests,
//!   listings, the `/.larder/` endpoints (`http/admin.rs`), and the one place where errors
//!   become status codes and problem documents.
//! - [`telemetry`]: logging set-up, request ids, what the access log shows of a target.
//! - [`metrics`]: the counters `/.larder/metrics` shows.
//! - [`auth`]: credentials in a request → a [`access::Principal`] (argon2id, cache, throttle).
//! - [`meter`]: plans, quotas and prices (pure).
//! - [`store`]: resources (bytes and metadata) behind the [`store::Store`] trait; the only
//!   module that touches the served folder and the bucket.
//! - [`config`]: the TOML file, environment and flags merged into [`config::Settings`].
//! - [`state`]: the state database, SQLite or PostgreSQL (metadata, tokens, the ledger).
//! - [`access`]: pure rule evaluation: allow / unauthenticated / forbidden / hidden.
//! - [`password`]: argon2id password hashes, made and checked.
//! - [`path`]: validated, percent-decoded resource paths.

// Paths by descriptor (`openat2`), `O_TMPFILE`, `syncfs`, `sendfile`, boot ids and
// `/proc/self/fd` are Linux's: say so, rather than fail on the first missing call.
#[cfg(not(target_os = "linux"))]
compile_error!("larder runs on Linux only (README, Requirements)");

pub mod access;
pub mod auth;
pub mod cli;
pub mod config;
pub mod explain;
pub mod http;
pub mod meter;
pub mod metrics;
pub mod migrate;
pub mod password;
pub mod path;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod zerocopy;
