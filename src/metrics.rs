//! What `/.larder/metrics` shows, in the Prometheus text format (version 0.0.4), through the
//! `prometheus` crate. Per-request counters are atomics resolved once at start, so counting
//! a request takes no lock and no allocation. Credits and storage come from the state
//! database at scrape time: they are the ledger's and the metadata's own sums, so they are
//! the same on every node and survive restarts.

use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::auth::Failure;
use crate::state::CreditTotals;

/// The `method` label values; any other method counts as `other`.
const METHODS: [&str; 8] = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "TRACE", "other"];
/// The `class` label values, by the first digit of the status.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Latency buckets, in seconds: from a cached small file to a large upload.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The server's counters.
pub struct Metrics {
    registry: Registry,
    /// By method, then status class.
    requests: Vec<IntCounter>,
    duration: Histogram,
    received: IntCounter,
    sent: IntCounter,
    connections: IntGauge,
    aborted: IntCounter,
    /// By [`reason`].
    sign_in_failures: [IntCounter; 3],
    /// Set from the state database when scraped.
    credits: [IntCounter; 3],
    storage: IntGauge,
    /// 503 `service-unavailable` answers, by dependency: database, bucket.
    unavailable: [IntCounter; 2],
    /// Log lines dropped because the log writer fell behind; set when scraped.
    log_dropped: IntCounter,
    /// Scrapes take turns: each sets the database-backed values, then renders.
    scrape: Mutex<()>,
}

/// The counter of `failure`; none for credentials that could not be checked (an outage).
fn reason(failure: Failure) -> Option<usize> {
    match failure {
        Failure::BadCredentials => Some(0),
        Failure::InvalidToken => Some(1),
        Failure::Throttled(_) => Some(2),
        Failure::Unavailable => None,
    }
}

impl Metrics {
    /// Every counter at zero.
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("larder".into()), None).expect("valid prefix");
        let register = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("metric names are distinct and valid");
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            register(Box::new(c.clone()));
            c
        };
        let vec = |name: &str, help: &str, label: &str| {
            let v = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            register(Box::new(v.clone()));
            v
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            register(Box::new(g.clone()));
            g
        };
        let by_request = IntCounterVec::new(
            Opts::new("requests_total", "Requests answered, by method and status class."),
            &["method", "class"],
        )
        .expect("valid metric");
        register(Box::new(by_request.clone()));
        let requests = METHODS
            .iter()
            .flat_map(|m| CLASSES.iter().map(|c| by_request.with_label_values(&[*m, *c])))
            .collect();
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "request_duration_seconds",
                "From the request head to the last byte of the answer handed to the socket.",
            )
            .buckets(BUCKETS.to_vec()),
        )
        .expect("valid metric");
        register(Box::new(duration.clone()));
        let failures =
            vec("sign_in_failures_total", "Credentials that failed, by reason.", "reason");
        let credits = vec("credits_total", "Credits ever moved, from the ledger, by kind.", "kind");
        let unavailable = vec(
            "dependency_unavailable_total",
            "Requests answered 503 because a dependency could not be reached.",
            "dependency",
        );
        Metrics {
            requests,
            duration,
            received: counter("received_bytes_total", "Request body bytes received."),
            sent: counter("sent_bytes_total", "Response body bytes sent."),
            connections: gauge("open_connections", "Client connections open now."),
            aborted: counter("upload_aborts_total", "Uploads cut off by their client."),
            sign_in_failures: ["bad_credentials", "invalid_token", "throttled"]
                .map(|r| failures.with_label_values(&[r])),
            credits: ["granted", "spent", "refunded"].map(|k| credits.with_label_values(&[k])),
            storage: gauge("storage_used_bytes", "Bytes that owned resources take."),
            unavailable: ["database", "bucket"].map(|d| unavailable.with_label_values(&[d])),
            log_dropped: counter(
                "log_lines_dropped_total",
                "Log lines dropped because the log writer could not keep up.",
            ),
            registry,
            scrape: Mutex::new(()),
        }
    }

    /// Counts one answered request.
    pub fn request(&self, method: &http::Method, status: u16, sent: u64, took: Duration) {
        let m = METHODS.iter().position(|m| *m == method.as_str()).unwrap_or(METHODS.len() - 1);
        let c = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[m * CLASSES.len() + c].inc();
        self.duration.observe(took.as_secs_f64());
        self.sent.inc_by(sent);
    }

    /// Counts request body bytes received.
    pub fn received(&self, bytes: u64) {
        self.received.inc_by(bytes);
    }

    /// What an upload's body stream counts as it is read.
    pub fn upload(&self) -> UploadCounters {
        UploadCounters { received: self.received.clone(), aborted: self.aborted.clone() }
    }

    /// Counts a 503 because `dependency` could not be reached.
    pub fn dependency_down(&self, dependency: &str) {
        self.unavailable[usize::from(dependency == "bucket")].inc();
    }

    /// Counts credentials that failed.
    pub fn sign_in_failed(&self, failure: Failure) {
        if let Some(reason) = reason(failure) {
            self.sign_in_failures[reason].inc();
        }
    }

    /// The open-connections gauge (the server counts connections in and out).
    pub fn connections(&self) -> &IntGauge {
        &self.connections
    }

    /// The text exposition, with the database-backed values set from `credits` and `storage`
    /// (`None` when the database cannot be reached: they stay as last read).
    pub fn render(&self, from_database: Option<(CreditTotals, u64)>, log_dropped: u64) -> String {
        let _turn = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.log_dropped.inc_by(log_dropped.saturating_sub(self.log_dropped.get()));
        if let Some((credits, storage)) = from_database {
            for (counter, total) in
                self.credits.iter().zip([credits.granted, credits.spent, credits.refunded])
            {
                counter.reset();
                counter.inc_by(total);
            }
            self.storage.set(i64::try_from(storage).unwrap_or(i64::MAX));
        }
        let mut text = Vec::new();
        // Encoding into a Vec cannot fail, and every name and label is ours and valid.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut text);
        String::from_utf8(text).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The counters an upload body moves: bytes received, and whether its client cut it off.
#[derive(Clone)]
pub struct UploadCounters {
    /// Body bytes received.
    pub received: IntCounter,
    /// Uploads cut off by their client.
    pub aborted: IntCounter,
}

/// The media type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
