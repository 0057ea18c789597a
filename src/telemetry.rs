//! Logging set-up and request ids. Logs go to standard error through `tracing`, readable
//! lines or one JSON object per line ([`LogFormat`]); the level is set with `RUST_LOG`
//! (default `info`). Credentials are never logged: the access log names the account, never
//! the Authorization value, and a token in a request target is redacted.
//!
//! Lines are written off the request path, as nginx's buffered `access_log` is: a request
//! formats its line and queues it (`tracing-appender`); the thread `larder-log` writes what
//! is queued, one `write` per batch. A full queue (a log reader that stalls) drops lines
//! rather than hold up requests, counted in [`dropped_lines`] (the metric
//! `larder_log_lines_dropped_total`). [`flush`] writes out what is queued at exit; a SIGKILL
//! loses it, as it loses nginx's buffer. (A hand-written buffer flushed every 100 ms, with no
//! wake-up per line, measured the same: docs/performance.md.)

use std::io::{BufWriter, IsTerminal};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines queued at most before new ones are dropped, unless `LARDER_LOG_QUEUE` says.
const QUEUED_LINES: usize = 64 * 1024;

/// The writer thread's handle: dropping it writes out what is queued and ends the thread.
static WRITER: Mutex<Option<WorkerGuard>> = Mutex::new(None);
/// Counts the lines dropped because the queue was full.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `TIME LEVEL target: message key=value…`, for people.
    #[default]
    Text,
    /// One JSON object per line, the fields at the top level, for log collectors.
    Json,
}

/// Installs the log subscriber and starts its writer thread, once; later calls (tests) are
/// ignored.
pub fn init(format: LogFormat) {
    let mut writer_slot = WRITER.lock().unwrap_or_else(|e| e.into_inner());
    if writer_slot.is_some() {
        return;
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(queued_lines(std::env::var("LARDER_LOG_QUEUE").ok()))
        .thread_name("larder-log")
        .finish(BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let dropped = writer.error_counter();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let installed = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
    if installed.is_ok() {
        *writer_slot = Some(guard);
        let _ = DROPPED.set(dropped);
    }
}

/// How many lines may wait for the writer: `LARDER_LOG_QUEUE` if it is a positive number.
fn queued_lines(setting: Option<String>) -> usize {
    setting.and_then(|n| n.parse().ok()).filter(|&n| n > 0).unwrap_or(QUEUED_LINES)
}

/// Writes out every queued line and ends the writer thread (at exit; lines logged after
/// this are dropped).
pub fn flush() {
    let writer = WRITER.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(writer);
}

/// Lines dropped so far because the writer thread could not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |counter| counter.dropped_lines() as u64)
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
