//! Integration tests: the real server on 127.0.0.1:0, spoken to over TCP.

// A failed unwrap in a test is a test failure with a backtrace, which is what we want.
#![allow(clippy::unwrap_used)]

mod access;
mod auth;
mod conditional;
mod content;
mod dav;
mod downloads;
#[path = "../corpus/framing.rs"]
mod framing;
mod harness;
#[path = "../shared/process.rs"]
mod larder_process;
mod methods;
mod operations;
mod paths;
mod payment;
mod process;
mod tenants;
mod tls;
mod tokens;
mod ui;
mod wire;
