//! The `/.larder/` namespace: larder's own endpoints. Nothing can be stored here: a path
//! that names no endpoint is 404 for every method, and an endpoint's other methods are 405.

use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use serde_json::json;

use crate::http::problem::{Problem, Slug};
use crate::http::{Body, Verb, full, json_response, method_not_allowed, no_content_with};

const READ_ONLY: [Verb; 3] = [Verb::Get, Verb::Head, Verb::Options];

/// Answers a request for `/.larder/` + `rest` (the segments after `.larder`).
pub fn respond(verb: Verb, rest: &[String]) -> Result<Response<Body>, Problem> {
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let page = match rest.as_slice() {
        ["health"] => Page::Health,
        ["problems", slug] => Page::Problem(Slug::from_name(slug).ok_or_else(Problem::not_found)?),
        _ => return Err(Problem::not_found()),
    };
    match verb {
        Verb::Get | Verb::Head => Ok(page.render()),
        Verb::Options => Ok(no_content_with(
            ALLOW,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        )),
        other => Err(method_not_allowed(other, &READ_ONLY)),
    }
}

enum Page {
    Health,
    Problem(Slug),
}

impl Page {
    fn render(self) -> Response<Body> {
        match self {
            Page::Health => json_response(StatusCode::OK, &json!({ "status": "ok" })),
            Page::Problem(slug) => {
                let text = format!(
                    "{} ({} {})\n\n{}\n",
                    slug.title(),
                    slug.status().as_u16(),
                    slug.status().canonical_reason().unwrap_or(""),
                    slug.explanation()
                );
                let len = text.len();
                let mut response = Response::new(full(text));
                let headers = response.headers_mut();
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
                response
            }
        }
    }
}
