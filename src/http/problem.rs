//! The one place where errors become status codes: every failure is a [`Problem`], rendered
//! as an RFC 9457 `application/problem+json` document whose `type` is
//! `/.larder/problems/<slug>` and whose `instance` is the request id.

use http::header::{
    CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER,
};
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

use super::body::{Body, full};
use crate::store;

/// Every problem type larder answers with. The slug, status and title live here and only here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slug {
    /// 400: the request makes no sense.
    BadRequest,
    /// 400: the path is not a valid resource path.
    InvalidPath,
    /// 401: credentials missing or wrong.
    Unauthenticated,
    /// 402: the owner's storage quota would be exceeded.
    QuotaExceeded,
    /// 402: the resource must be bought.
    PaymentRequired,
    /// 402: not enough credits to buy.
    InsufficientCredits,
    /// 403: known and not allowed.
    Forbidden,
    /// 404: nothing here, or nothing this client may know of.
    NotFound,
    /// 405: the method is known but not allowed here.
    MethodNotAllowed,
    /// 409: the request conflicts with what is stored.
    Conflict,
    /// 412: a precondition was false.
    PreconditionFailed,
    /// 413: the body is larger than `max_upload`.
    ContentTooLarge,
    /// 414: the request target is too long.
    UriTooLong,
    /// 415: the body's media type is not accepted here.
    UnsupportedMediaType,
    /// 416: no requested range overlaps the resource.
    RangeNotSatisfiable,
    /// 417: an expectation other than `100-continue`.
    ExpectationFailed,
    /// 429: too many attempts.
    TooManyRequests,
    /// 500: the server failed.
    Internal,
    /// 501: the method is not implemented.
    NotImplemented,
    /// 503: too many connections.
    Unavailable,
    /// 503: the database or the bucket cannot be reached.
    ServiceUnavailable,
    /// 507: the disk is full.
    InsufficientStorage,
    /// 423: a WebDAV lock is held by another, or its token was not sent.
    Locked,
    /// 403: PROPFIND with `Depth: infinity` (RFC 4918 `propfind-finite-depth`).
    PropfindFiniteDepth,
    /// 502: a COPY or MOVE destination on another server.
    BadGateway,
}

/// Every slug, for the problem pages.
pub const ALL: [Slug; 25] = [
    Slug::BadRequest,
    Slug::InvalidPath,
    Slug::Unauthenticated,
    Slug::QuotaExceeded,
    Slug::PaymentRequired,
    Slug::InsufficientCredits,
    Slug::Forbidden,
    Slug::NotFound,
    Slug::MethodNotAllowed,
    Slug::Conflict,
    Slug::PreconditionFailed,
    Slug::ContentTooLarge,
    Slug::UriTooLong,
    Slug::UnsupportedMediaType,
    Slug::RangeNotSatisfiable,
    Slug::ExpectationFailed,
    Slug::TooManyRequests,
    Slug::Internal,
    Slug::NotImplemented,
    Slug::Unavailable,
    Slug::ServiceUnavailable,
    Slug::InsufficientStorage,
    Slug::Locked,
    Slug::PropfindFiniteDepth,
    Slug::BadGateway,
];

impl Slug {
    /// (slug, status, title, explanation)
    fn row(self) -> (&'static str, StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            Slug::BadRequest => (
                "bad-request",
                S::BAD_REQUEST,
                "Bad Request",
                "The request is malformed or makes no sense for this resource.",
            ),
            Slug::InvalidPath => (
                "invalid-path",
                S::BAD_REQUEST,
                "Invalid Path",
                "The path has a .. or . segment, an encoded /, NUL or another control character, invalid percent-encoding or UTF-8, an empty segment, a name that is too long, or a name reserved for larder.",
            ),
            Slug::Unauthenticated => (
                "unauthenticated",
                S::UNAUTHORIZED,
                "Unauthorized",
                "Credentials are needed here, or the ones given are wrong, expired or malformed. Sign in with Basic or Bearer as the WWW-Authenticate challenges say.",
            ),
            Slug::QuotaExceeded => (
                "quota-exceeded",
                S::PAYMENT_REQUIRED,
                "Storage Quota Exceeded",
                "Storing this would take the owner past its plan's storage quota. Nothing was changed.",
            ),
            Slug::PaymentRequired => (
                "payment-required",
                S::PAYMENT_REQUIRED,
                "Payment Required",
                "This resource has a price in credits. Buy it with POST /.larder/purchases, or send Larder-Max-Price.",
            ),
            Slug::InsufficientCredits => (
                "insufficient-credits",
                S::PAYMENT_REQUIRED,
                "Insufficient Credits",
                "The account's balance does not cover the price. Nothing was charged.",
            ),
            Slug::Forbidden => (
                "forbidden",
                S::FORBIDDEN,
                "Forbidden",
                "The account is known and not allowed to do this here.",
            ),
            Slug::NotFound => (
                "not-found",
                S::NOT_FOUND,
                "Not Found",
                "There is nothing at this path, or nothing this client may know of.",
            ),
            Slug::MethodNotAllowed => (
                "method-not-allowed",
                S::METHOD_NOT_ALLOWED,
                "Method Not Allowed",
                "This resource does not support the method; the Allow header lists the ones it does.",
            ),
            Slug::Conflict => (
                "conflict",
                S::CONFLICT,
                "Conflict",
                "The request conflicts with what is stored: a resource where a collection is needed or the reverse, or a collection that is not empty.",
            ),
            Slug::PreconditionFailed => (
                "precondition-failed",
                S::PRECONDITION_FAILED,
                "Precondition Failed",
                "A condition of the request (If-Match, If-None-Match, If-Unmodified-Since) is false. Nothing was changed.",
            ),
            Slug::ContentTooLarge => (
                "content-too-large",
                S::PAYLOAD_TOO_LARGE,
                "Content Too Large",
                "The request body is larger than the server accepts (max_upload).",
            ),
            Slug::UriTooLong => (
                "uri-too-long",
                S::URI_TOO_LONG,
                "URI Too Long",
                "The request target is longer than the server accepts.",
            ),
            Slug::UnsupportedMediaType => (
                "unsupported-media-type",
                S::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported Media Type",
                "The body's media type is not accepted here.",
            ),
            Slug::RangeNotSatisfiable => (
                "range-not-satisfiable",
                S::RANGE_NOT_SATISFIABLE,
                "Range Not Satisfiable",
                "No requested range overlaps the resource; Content-Range gives its length.",
            ),
            Slug::ExpectationFailed => (
                "expectation-failed",
                S::EXPECTATION_FAILED,
                "Expectation Failed",
                "The only expectation larder meets is Expect: 100-continue.",
            ),
            Slug::TooManyRequests => (
                "too-many-requests",
                S::TOO_MANY_REQUESTS,
                "Too Many Requests",
                "Too many attempts; wait as long as Retry-After says.",
            ),
            Slug::Locked => (
                "locked",
                S::LOCKED,
                "Locked",
                "A WebDAV lock covers this path: send its token in the If header, as the principal that took it, or wait until it is released or expires.",
            ),
            Slug::PropfindFiniteDepth => (
                "propfind-finite-depth",
                S::FORBIDDEN,
                "PROPFIND Depth Infinity Refused",
                "PROPFIND answers Depth: 0 or Depth: 1 only; walk a tree one level at a time.",
            ),
            Slug::BadGateway => (
                "bad-gateway",
                S::BAD_GATEWAY,
                "Destination on Another Server",
                "The Destination of a COPY or MOVE names another server; larder copies and moves only within itself.",
            ),
            Slug::Internal => (
                "internal",
                S::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                "The server failed. Nothing was stored half-way; the log has the cause under this request id.",
            ),
            Slug::NotImplemented => (
                "not-implemented",
                S::NOT_IMPLEMENTED,
                "Not Implemented",
                "larder does not implement this method.",
            ),
            Slug::Unavailable => (
                "unavailable",
                S::SERVICE_UNAVAILABLE,
                "Service Unavailable",
                "The server has as many connections as it serves at once; retry after Retry-After.",
            ),
            Slug::ServiceUnavailable => (
                "service-unavailable",
                S::SERVICE_UNAVAILABLE,
                "Service Unavailable",
                "Something the server depends on (its database or its bucket, named in `dependency`) cannot be reached or did not answer in time (`dependency_timeout`). Credentials were not judged. Retry after Retry-After; a write that timed out may yet take effect, so retry writes with If-Match or If-None-Match.",
            ),
            Slug::InsufficientStorage => (
                "insufficient-storage",
                S::INSUFFICIENT_STORAGE,
                "Insufficient Storage",
                "The server's disk is full. Nothing was stored.",
            ),
        }
    }

    /// The slug in URLs.
    pub fn name(self) -> &'static str {
        self.row().0
    }

    /// The status code answered with this problem.
    pub fn status(self) -> StatusCode {
        self.row().1
    }

    /// The fixed title.
    pub fn title(self) -> &'static str {
        self.row().2
    }

    /// A paragraph for the problem page.
    pub fn explanation(self) -> &'static str {
        self.row().3
    }

    /// The slug with this name.
    pub fn from_name(name: &str) -> Option<Slug> {
        ALL.into_iter().find(|s| s.name() == name)
    }
}

/// An error on its way to becoming a response (boxed: it travels in every `Result`).
#[derive(Debug)]
pub struct Problem(Box<Details>);

/// On a 503 `service-unavailable` answer: which dependency was down (for the metrics).
#[derive(Debug, Clone, Copy)]
pub struct DependencyDown(pub &'static str);

/// What a [`Problem`] carries.
#[derive(Debug)]
pub struct Details {
    /// The problem type.
    pub slug: Slug,
    /// What happened, for the client.
    pub detail: String,
    /// Extra header fields (Allow, WWW-Authenticate, Content-Range…).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Extension members of the document.
    pub members: Map<String, Value>,
    /// The dependency that could not be reached, for a 503 `service-unavailable`.
    pub down: Option<&'static str>,
}

impl Problem {
    /// A problem of type `slug`.
    pub fn new(slug: Slug, detail: impl Into<String>) -> Self {
        let details = Details {
            slug,
            detail: detail.into(),
            headers: Vec::new(),
            members: Map::new(),
            down: None,
        };
        Problem(Box::new(details))
    }

    /// 503 `service-unavailable`: `dependency` (`database`, `bucket`) cannot be reached.
    pub fn dependency_down(dependency: &'static str) -> Self {
        let mut problem = Problem::new(
            Slug::ServiceUnavailable,
            format!("The {dependency} cannot be reached just now; retry after Retry-After."),
        )
        .header(RETRY_AFTER, HeaderValue::from_static("5"))
        .header(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        problem.member("dependency", json!(dependency));
        problem.0.down = Some(dependency);
        problem
    }

    /// The 404 of a missing path; a hidden one answers exactly this too.
    pub fn not_found() -> Self {
        Problem::new(Slug::NotFound, "There is no resource at this path.")
    }

    /// A 500 that says nothing about internals.
    pub fn internal() -> Self {
        Problem::new(Slug::Internal, "The server failed to handle this request.")
    }

    /// Adds a header field.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.push((name, value));
        self
    }

    /// Adds `more` to the detail.
    pub fn append_detail(&mut self, more: &str) {
        self.0.detail.push_str(more);
    }

    /// Adds an extension member to the document.
    pub fn member(&mut self, name: &str, value: Value) {
        self.0.members.insert(name.to_owned(), value);
    }

    /// The problem type.
    pub fn slug(&self) -> Slug {
        self.0.slug
    }

    /// Renders the problem; `id` is the request id.
    pub fn into_response(self, id: &str) -> Response<Body> {
        let Details { slug, detail, headers: extra, members, down } = *self.0;
        let status = slug.status();
        let mut document = json!({
            "type": format!("/.larder/problems/{}", slug.name()),
            "title": slug.title(),
            "status": status.as_u16(),
            "detail": detail,
            "instance": id,
        });
        if let Value::Object(map) = &mut document {
            map.extend(members);
        }
        let bytes = serde_json::to_vec(&document).unwrap_or_default();
        let mut response = Response::new(full(bytes.clone()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        if matches!(status.as_u16(), 401..=403) {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        for (name, value) in extra {
            headers.append(name, value);
        }
        if let Some(dependency) = down {
            response.extensions_mut().insert(DependencyDown(dependency));
        }
        response
    }
}

impl From<store::Error> for Problem {
    fn from(error: store::Error) -> Self {
        match error {
            store::Error::NotFound => Problem::not_found(),
            store::Error::Conflict(why) => Problem::new(Slug::Conflict, why),
            store::Error::NotEmpty => Problem::new(
                Slug::Conflict,
                "The collection is not empty; without Depth: 0, DELETE takes it with its members.",
            ),
            store::Error::Invalid(why) => Problem::new(Slug::InvalidPath, why),
            store::Error::OverQuota(over) => Problem::new(
                Slug::QuotaExceeded,
                format!("This needs {} more bytes than the owner's quota leaves.", over.needed),
            ),
            store::Error::NoSpace => {
                tracing::error!("no space left on the device");
                Problem::new(
                    Slug::InsufficientStorage,
                    "The server's disk is full; nothing was stored.",
                )
            }
            store::Error::Body(e) => match super::upload::body_error(&e) {
                Some(super::upload::BodyError::TooLarge(limit)) => Problem::new(
                    Slug::ContentTooLarge,
                    format!("The body is larger than {limit} bytes; nothing was stored."),
                ),
                _ => {
                    tracing::info!("client went away mid-upload: {e}");
                    Problem::new(
                        Slug::BadRequest,
                        "The request body was cut off; nothing was stored.",
                    )
                }
            },
            store::Error::Unavailable(dependency) => Problem::dependency_down(dependency),
            store::Error::Unsupported => {
                Problem::new(Slug::NotImplemented, "The store cannot do this in one step.")
            }
            store::Error::Io(e) => {
                tracing::error!("storage failure: {e}");
                Problem::internal()
            }
        }
    }
}

impl From<crate::path::Invalid> for Problem {
    fn from(invalid: crate::path::Invalid) -> Self {
        Problem::new(Slug::InvalidPath, invalid.to_string())
    }
}
