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

/// A request target as the access log shows it: its path and query only (an absolute-form
/// target's userinfo never reaches the log), with control characters escaped and every
/// token redacted, in whatever percent-encoding it came: where decoding reveals a token, the
/// decoded text is logged, redacted.
pub fn loggable_target(uri: &http::Uri) -> String {
    let raw = uri.path_and_query().map_or_else(|| uri.path(), |p| p.as_str());
    let raw = redact_tokens(raw);
    let mut text = raw.clone();
    // Decoded until nothing changes (a few times at most): `%256C` hides `%6C`, which hides `l`.
    for _ in 0..4 {
        if !text.contains('%') {
            break;
        }
        let decoded = percent_encoding::percent_decode_str(&text).decode_utf8_lossy().into_owned();
        if decoded == text {
            break;
        }
        text = decoded.into();
    }
    match reveals_token(&text) {
        true => escape(&redact_tokens(&text)),
        false => escape(&raw),
    }
}

/// True if `text` holds a token's prefix followed by some of its secret.
fn reveals_token(text: &str) -> bool {
    let prefix = crate::auth::TOKEN_PREFIX;
    text.match_indices(prefix).any(|(at, _)| {
        text[at + prefix.len()..]
            .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// Escapes control characters so a path cannot forge log lines.
pub fn escape(text: &str) -> String {
    text.chars().flat_map(char::escape_debug).collect()
}
