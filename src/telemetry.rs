//! Logging set-up and request ids. Logs go to standard error through `tracing`, readable
//! lines or one JSON object per line ([`LogFormat`]); the level is set with `RUST_LOG`
//! (default `info`). Credentials are never logged: the access log names the account, never
//! the Authorization value, and a token in a request target is redacted.
//!
//! Lines are written off the request path, as nginx's buffered `access_log` is: a request
//! formats its line and queues it (`tracing-appender`); the thread `larder-log` writes what
//! is queued, one `write` per batch. The access line is formatted here ([`access`]), not by
//! `tracing`, which cost a small GET twice as much. A full queue (a log reader that stalls) drops lines
//! rather than hold up requests, counted in [`dropped_lines`] (the metric
//! `larder_log_lines_dropped_total`). [`flush`] writes out what is queued at exit; a SIGKILL
//! loses it, as it loses nginx's buffer. (A hand-written buffer flushed every 100 ms, with no
//! wake-up per line, measured the same: docs/performance.md.)

use std::io::{BufWriter, IsTerminal};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines queued at most before new ones are dropped, unless `LARDER_LOG_QUEUE` says.
const QUEUED_LINES: usize = 64 * 1024;

/// The writer thread's handle: dropping it writes out what is queued and ends the thread.
static WRITER: Mutex<Option<WorkerGuard>> = Mutex::new(None);
/// Where access lines go when they are written directly (see [`access`]), and in which form.
static ACCESS: OnceLock<(NonBlocking, LogFormat)> = OnceLock::new();
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
    let direct = writer.clone();
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let installed = match format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
    if installed.is_ok() {
        *writer_slot = Some(guard);
        let _ = DROPPED.set(dropped);
        if tracing::enabled!(target: "access", tracing::Level::INFO) {
            let _ = ACCESS.set((direct, format));
        }
    }
}

/// One request's access line: the fields [`access`] writes.
pub struct Access<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// The method.
    pub method: &'a str,
    /// The target as [`loggable_target`] shows it.
    pub path: &'a str,
    /// The status answered.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// Milliseconds to the last byte.
    pub ms: f64,
    /// The account signed in, or `-`.
    pub account: &'a str,
}

/// Whether the log takes `access` lines (at `info`, as `RUST_LOG` says): if not, a request
/// need not make one.
pub fn access_enabled() -> bool {
    ACCESS.get().is_some()
}

/// Writes `line` to the log, if the log takes `access` lines at `info` (`RUST_LOG`), as
/// `tracing`'s formatter writes its lines (the same text, without colours, or JSON), but not
/// through it: formatted here, the second's timestamp made once, it costs a small GET about
/// half what a `tracing` event did (docs/performance.md).
pub fn access(line: &Access<'_>) {
    use std::io::Write;
    let Some((writer, format)) = ACCESS.get() else { return };
    thread_local! {
        /// The line being made, the timestamp up to its second with that second, and this
        /// thread's handle on the writer.
        static MADE: std::cell::RefCell<(Vec<u8>, u64, String, Option<NonBlocking>)> =
            const { std::cell::RefCell::new((Vec::new(), u64::MAX, String::new(), None)) };
    }
    let now = std::time::SystemTime::now();
    let since = now.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    MADE.with_borrow_mut(|(buf, second, prefix, mine)| {
        if *second != since.as_secs() {
            // "2026-12-07T04:34:05.242906Z" up to the dot.
            let stamp = humantime::format_rfc3339_micros(now).to_string();
            *prefix = stamp[..stamp.len() - 7].to_owned();
            *second = since.as_secs();
        }
        buf.clear();
        let micros = since.subsec_micros();
        let _ = match format {
            LogFormat::Text => writeln!(
                buf,
                "{prefix}{micros:06}Z  INFO access: request_id={} method={} path={} status={} \
                 bytes={} ms={} account={}",
                line.request_id,
                line.method,
                line.path,
                line.status,
                line.bytes,
                line.ms,
                line.account
            ),
            LogFormat::Json => {
                let doc = serde_json::json!({
                    "timestamp": format!("{prefix}{micros:06}Z"),
                    "level": "INFO",
                    "request_id": line.request_id,
                    "method": line.method,
                    "path": line.path,
                    "status": line.status,
                    "bytes": line.bytes,
                    "ms": line.ms,
                    "account": line.account,
                    "target": "access",
                });
                serde_json::to_writer(&mut *buf, &doc)
                    .map_err(std::io::Error::from)
                    .and_then(|()| buf.write_all(b"\n"))
            }
        };
        // One write of the whole line: queued for the writer thread, or dropped and counted.
        let _ = mine.get_or_insert_with(|| writer.clone()).write_all(buf);
    });
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
