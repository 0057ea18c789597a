//! The response body type and its constructors.

use std::io;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};

use crate::store::ByteStream;

/// Every response body: bytes in memory, nothing, or a stream from the store.
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// A body of these bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// No body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body streamed from the store.
pub fn stream(bytes: ByteStream) -> Body {
    StreamBody::new(bytes.map_ok(Frame::data)).boxed_unsync()
}
