//! Request bodies on their way into the store: framed data only, with `max_upload` enforced
//! while streaming, and errors that tell a body too large from a client that went away.

use std::fmt;
use std::io;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyDataStream;
use hyper::body::Incoming;

use crate::metrics::UploadCounters;
use crate::store::ByteStream;

/// Why reading a request body stopped.
#[derive(Debug)]
pub enum BodyError {
    /// More than this many bytes arrived (`max_upload`).
    TooLarge(u64),
    /// More bytes arrived than the owner's quota leaves room for (this many).
    OverQuota(u64),
    /// The connection failed or the client went away.
    Aborted(hyper::Error),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::TooLarge(limit) => write!(f, "body larger than {limit} bytes"),
            BodyError::OverQuota(room) => {
                write!(f, "body larger than the {room} bytes of quota left")
            }
            BodyError::Aborted(e) => write!(f, "body cut off: {e}"),
        }
    }
}

impl std::error::Error for BodyError {}

/// The [`BodyError`] inside an I/O error from [`limited`], if that is where it came from.
pub fn body_error(error: &io::Error) -> Option<&BodyError> {
    error.get_ref().and_then(|e| e.downcast_ref::<BodyError>())
}

/// The request body as a stream of data that fails once more than `limit` bytes arrive, or
/// more than `room` (what the owner's quota leaves).
pub fn limited(
    body: Incoming,
    limit: u64,
    room: Option<u64>,
    counters: UploadCounters,
) -> ByteStream {
    let mut seen: u64 = 0;
    let stream = BodyDataStream::new(body).map(move |chunk| -> io::Result<Bytes> {
        let chunk = chunk.map_err(|e| {
            counters.aborted.inc();
            io::Error::other(BodyError::Aborted(e))
        })?;
        counters.received.inc_by(chunk.len() as u64);
        seen = seen.saturating_add(chunk.len() as u64);
        if seen > limit {
            return Err(io::Error::other(BodyError::TooLarge(limit)));
        }
        if let Some(room) = room
            && seen > room
        {
            return Err(io::Error::other(BodyError::OverQuota(room)));
        }
        Ok(chunk)
    });
    Box::pin(stream)
}
