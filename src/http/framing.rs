//! What hyper lets through but RFC 9112 (or SPEC) refuses, checked before anything else:
//! a missing, repeated or invalid Host; Content-Length repeated or together with
//! Transfer-Encoding; `chunked` not the one and final coding; an over-long target (414); an
//! expectation other than `100-continue` (417); a TRACE with a body; userinfo in the target;
//! a repeated Authorization. (A `#` in the target is refused on the bytes, by the guard: the
//! parsed URI has lost it.) Framing faults close the
//! connection after the 400, so nothing after them can be misread as a new request.
//! Bare LF line ends are refused even earlier, on the bytes: see [`crate::server::guard`].

use super::inbound::Inbound;
use http::header::{
    AUTHORIZATION, CONNECTION, CONTENT_LENGTH, EXPECT, HOST, HeaderValue, TRANSFER_ENCODING,
};
use http::uri::Authority;
use http::{Method, Request, Version};

use super::body_is_empty;
use super::problem::{Problem, Slug};

/// The longest request target accepted (bytes as sent); longer is 414.
pub const MAX_TARGET: usize = crate::path::MAX_PATH;
/// The most segments a path may have; deeper is 414. Folders nest no deeper than this.
pub const MAX_DEPTH: usize = 256;

/// A 400 that closes the connection.
fn framing(detail: &str) -> Problem {
    Problem::new(Slug::BadRequest, detail).header(CONNECTION, HeaderValue::from_static("close"))
}

/// Checks the request line and framing fields.
pub fn check(request: &Request<Inbound>) -> Result<(), Problem> {
    let headers = request.headers();
    let mut hosts = headers.get_all(HOST).iter();
    let (host, repeated) = (hosts.next(), hosts.next().is_some());
    if request.version() == Version::HTTP_11 && (host.is_none() || repeated) {
        return Err(framing("An HTTP/1.1 request needs exactly one Host field."));
    }
    if let Some(host) = host {
        let valid = host
            .to_str()
            .ok()
            .and_then(|h| h.parse::<Authority>().ok())
            .is_some_and(|a| !a.as_str().contains('@'));
        if repeated || !valid {
            return Err(framing("The Host field is repeated or not a valid host[:port]."));
        }
    }
    // Userinfo in an absolute-form target is deprecated (RFC 9110 §4.2.4) and carries a
    // password in the clear: refused, never acted on.
    if request.uri().authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(framing("The request target carries userinfo (a name or password)."));
    }
    // Two Authorization fields: which one is meant cannot be known.
    if headers.get_all(AUTHORIZATION).iter().nth(1).is_some() {
        return Err(Problem::new(Slug::BadRequest, "Authorization is repeated."));
    }
    let lengths = headers.get_all(CONTENT_LENGTH).iter().count();
    if lengths > 1 {
        return Err(framing("Content-Length is repeated."));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        if lengths > 0 {
            return Err(framing("Content-Length and Transfer-Encoding together are refused."));
        }
        let codings: Vec<String> = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        if codings != ["chunked"] {
            return Err(framing("Transfer-Encoding must be chunked, once."));
        }
    }
    let target = request.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_TARGET {
        return Err(Problem::new(
            Slug::UriTooLong,
            format!("The request target is {target} bytes; at most {MAX_TARGET} are accepted."),
        ));
    }
    let depth = memchr::memchr_iter(b'/', request.uri().path().as_bytes()).count();
    if depth > MAX_DEPTH {
        return Err(Problem::new(
            Slug::UriTooLong,
            format!("The path is {depth} segments deep; at most {MAX_DEPTH} are accepted."),
        ));
    }
    if let Some(expect) = headers.get(EXPECT)
        && !expect.as_bytes().eq_ignore_ascii_case(b"100-continue")
    {
        return Err(Problem::new(
            Slug::ExpectationFailed,
            "Only Expect: 100-continue is understood.",
        ));
    }
    if request.method() == Method::TRACE
        && (headers.contains_key(TRANSFER_ENCODING) || !body_is_empty(request))
    {
        return Err(Problem::new(Slug::BadRequest, "A TRACE request must not have a body."));
    }
    Ok(())
}
