//! Logging set-up and request ids. Logs go to standard error through `tracing`, readable
//! lines or one JSON object per line ([`LogFormat`]); the level is set with `RUST_LOG`
//! (default `info`). Credentials are never logged: the access log names the account, never
//! the Authorization value, and a token in a request target is redacted.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `TIME LEVEL target: message key=value…`, for people.
    #[default]
    Text,
    /// One JSON object per line, the fields at the top level, for log collectors.
    Json,
}

/// Installs the log subscriber once; later calls (tests) are ignored.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
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
        crate::store::hex(&(self.prefix | n).to_be_bytes())
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// Replaces the secret part of anything in `text` that looks like a larder token.
pub fn redact_tokens(text: &str) -> std::borrow::Cow<'_, str> {
    let prefix = crate::auth::TOKEN_PREFIX;
    if !text.contains(prefix) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        out.push_str(&rest[..at + prefix.len()]);
        rest = &rest[at + prefix.len()..];
        let secret = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(rest.len());
        if secret > 0 {
            out.push_str("<redacted>");
        }
        rest = &rest[secret..];
    }
    out.push_str(rest);
    out.into()
}

/// Escapes control characters so a path cannot forge log lines.
pub fn escape(text: &str) -> String {
    text.chars().flat_map(char::escape_debug).collect()
}
