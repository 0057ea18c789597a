//! Integration tests: the real server on 127.0.0.1:0, spoken to over TCP.

mod auth;
mod harness;
mod methods;
mod paths;
mod process;
