//! Request bodies on their way into the store: framed data only, with `max_upload` enforced
//! while streaming, and errors that tell a body too large from a client that went away.
//!
//! A body refused while it streams (too large, or past the owner's quota) is read to its end
//! and dropped before the refusal is answered, up to [`DRAIN_MAX`] bytes and [`DRAIN_TIME`]:
//! a client that is still sending when its connection closes gets a reset and never reads
//! the 402 or 413 (nginx's lingering close does the same work).

use std::fmt;
use std::io;

use std::time::Duration;

use super::inbound::Inbound;
use futures_util::StreamExt;
use http_body_util::BodyDataStream;

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

/// The most of a refused body read (and dropped) so that its refusal can be read.
pub const DRAIN_MAX: u64 = 16 << 20;
/// The longest a refused body is read for.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// The request body as a stream of data that fails once more than `limit` bytes arrive, or
/// more than `room` (what the owner's quota leaves), after reading the rest (see the module).
pub fn limited(
    body: Inbound,
    limit: u64,
    room: Option<u64>,
    counters: UploadCounters,
) -> ByteStream {
    let start = (BodyDataStream::new(body), 0u64, false);
    let stream = futures_util::stream::unfold(start, move |(mut data, seen, done)| {
        let counters = counters.clone();
        async move {
            if done {
                return None;
            }
            let chunk = match data.next().await? {
                Ok(chunk) => chunk,
                Err(e) => {
                    counters.aborted.inc();
                    return Some((
                        Err(io::Error::other(BodyError::Aborted(e))),
                        (data, seen, true),
                    ));
                }
            };
            counters.received.inc_by(chunk.len() as u64);
            let seen = seen.saturating_add(chunk.len() as u64);
            let refusal = match room {
                _ if seen > limit => BodyError::TooLarge(limit),
                Some(room) if seen > room => BodyError::OverQuota(room),
                _ => return Some((Ok(chunk), (data, seen, false))),
            };
            drain(&mut data, &counters).await;
            Some((Err(io::Error::other(refusal)), (data, seen, true)))
        }
    });
    Box::pin(stream)
}

/// Reads and drops what is left of a refused body, within [`DRAIN_MAX`] and [`DRAIN_TIME`].
async fn drain(data: &mut BodyDataStream<Inbound>, counters: &UploadCounters) {
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    let mut drained: u64 = 0;
    while drained <= DRAIN_MAX {
        match tokio::time::timeout_at(deadline, data.next()).await {
            Ok(Some(Ok(chunk))) => {
                counters.received.inc_by(chunk.len() as u64);
                drained += chunk.len() as u64;
            }
            _ => return,
        }
    }
}
