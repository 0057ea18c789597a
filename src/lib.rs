//! larder: a self-hosted HTTP resource server that keeps the whole status-code contract.
//!
//! # Layout
//!
//! Dependencies point downward in this list: a module may use those below it, never above.
//!
//! - [`cli`]: the command line (`serve`, `hash-password`, `check`); the thin `main.rs` calls it.
//! - [`server`]: sockets, connections, panics turned into 500s, graceful shutdown.
//! - [`http`]: routing, method semantics, conditional and range requests, listings, and the one
//!   place where errors become status codes and problem documents.
//! - [`admin`]: the `/.larder/` namespace (health, problem pages).
//! - [`auth`]: credentials in a request → a [`access::Principal`] (argon2id, cache).
//! - [`access`]: pure rule evaluation: allow / unauthenticated / forbidden / hidden.
//! - [`explain`]: the rules and one path's decisions in words (`check`, `explain`).
//! - [`meter`]: plans, quotas and prices (pure).
//! - [`config`]: the TOML file, environment and flags merged into [`config::Settings`].
//! - [`store`]: resources (bytes and metadata) behind the [`store::Store`] trait; the only
//!   module that touches the served folder.
//! - [`state`]: the embedded SQLite database (metadata, later tokens and the ledger).
//! - [`path`]: validated, percent-decoded resource paths.
//! - [`metrics`]: the counters `/.larder/metrics` shows.
//! - [`telemetry`]: logging set-up and request ids.

pub mod access;
pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod explain;
pub mod http;
pub mod meter;
pub mod metrics;
pub mod migrate;
pub mod path;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod zerocopy;
