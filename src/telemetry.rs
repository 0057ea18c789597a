//! Logging set-up and request ids. Logs go to standard error through `tracing`; the level is
//! set with `RUST_LOG` (default `info`). Credentials are never logged: the access log names
//! the account, never the Authorization value.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::EnvFilter;

/// Installs the log subscriber once; later calls (tests) are ignored.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Makes request ids: a random per-process prefix and a counter, 16 hex digits in all.
pub struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl RequestIds {
    /// A new generator.
    pub fn new() -> Self {
        RequestIds { prefix: rand::random::<u64>() << 32, next: AtomicU64::new(0) }
    }

    /// The next id.
    pub fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff;
        format!("{:016x}", self.prefix | n)
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// Escapes control characters so a path cannot forge log lines.
pub fn escape(text: &str) -> String {
    text.chars().flat_map(char::escape_debug).collect()
}
