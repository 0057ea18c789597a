//! The access log line and the request metrics, written when an answer is over: its body sent
//! whole, or dropped because the client went away (nginx's log phase). So the bytes are the
//! body bytes handed to the connection and the duration runs to the last of them.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::Method;
use http_body::{Frame, SizeHint};

use super::Body;
use crate::metrics::Metrics;
use crate::telemetry::loggable_target;

/// What the log line says about a request.
pub struct Record {
    /// The request id.
    pub id: String,
    /// The method.
    pub method: Method,
    /// The request target as received (formatted only if the line is written).
    pub target: http::Uri,
    /// The status answered.
    pub status: u16,
    /// The account signed in, if any.
    pub account: Option<std::sync::Arc<str>>,
    /// When the request head was read.
    pub started: Instant,
}

/// A response body that logs and counts its request when it is done or dropped.
pub struct Logged {
    inner: Body,
    record: Record,
    sent: u64,
    metrics: Arc<Metrics>,
}

impl Logged {
    /// Wraps `inner`, to be logged as `record` says.
    pub fn new(inner: Body, record: Record, metrics: Arc<Metrics>) -> Self {
        Logged { inner, record, sent: 0, metrics }
    }
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.sent += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let record = &self.record;
        let took = record.started.elapsed();
        self.metrics.request(&record.method, record.status, self.sent, took);
        if !crate::telemetry::access_enabled() {
            return;
        }
        crate::telemetry::access(&crate::telemetry::Access {
            request_id: &record.id,
            method: record.method.as_str(),
            path: &loggable_target(&record.target),
            status: record.status,
            bytes: self.sent,
            ms: took.as_micros() as f64 / 1000.0,
            account: record.account.as_deref().unwrap_or("-"),
        });
    }
}
