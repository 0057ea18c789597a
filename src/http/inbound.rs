//! The request body as the handlers see it: hyper's, and for HTTP/2, read to its end after
//! the handler let it go unread.
//!
//! A handler that refuses a request (401, 403, 404, 402, 413…) does so without reading its
//! body. Over HTTP/1 the connection then closes; over HTTP/2 hyper ends the stream with
//! RST_STREAM(NO_ERROR) while the client is still sending, which RFC 9113 §8.1 allows but
//! curl (7.88, Debian 12's) takes as a failed transfer and never shows the answer. nginx reads
//! such a body and drops it; so does this type, from its `Drop`, in a task of its own bounded
//! by [`DRAIN_TIME`], so the answer goes out at once and the stream ends cleanly.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// The longest an unread HTTP/2 request body is read for, to be dropped.
pub const DRAIN_TIME: Duration = Duration::from_secs(30);

/// A request body.
pub struct Inbound {
    inner: Option<Incoming>,
    /// Read the rest when dropped unread (HTTP/2).
    drain: bool,
}

impl Inbound {
    /// `body`, read to its end if dropped unread when `drain` (an HTTP/2 request's).
    pub fn new(body: Incoming, drain: bool) -> Self {
        Inbound { inner: Some(body), drain }
    }
}

impl Body for Inbound {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(Body::size_hint).unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

impl Drop for Inbound {
    fn drop(&mut self) {
        let Some(mut body) = self.inner.take() else { return };
        if !self.drain || body.is_end_stream() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let rest = async { while let Some(Ok(_)) = body.frame().await {} };
            let _ = tokio::time::timeout(DRAIN_TIME, rest).await;
        });
    }
}
