//! Listings of collections in JSON (HTML pages are `page`'s), the negotiation between the
//! two, and the JSON description of one stored resource.

use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::Serialize;

use super::problem::{Problem, Slug};
use crate::store::Entry;

/// The media types a listing comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`.
    Json,
    /// `text/html`.
    Html,
}

/// The items of a field like Accept or Accept-Encoding, lowercase, each with its q-value
/// (1 when it says none).
pub fn weighted(field: &str) -> impl Iterator<Item = (String, f32)> + '_ {
    field.split(',').map(|item| {
        let mut params = item.split(';');
        let name = params.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = params
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        (name, q)
    })
}

/// Picks the format: `?format=json` or `?format=html` if the query says; else JSON only when
/// the Accept field prefers `application/json` to `text/html` (a higher q-value, or the same
/// one named more exactly: `application/json, */*`), HTML otherwise, as for a client that
/// sends no Accept or `*/*` (wget, rclone's http remote, curl).
pub fn negotiate(accept: Option<&str>, query: Option<&str>) -> Format {
    for pair in query.unwrap_or("").split('&') {
        match pair {
            "format=json" => return Format::Json,
            "format=html" => return Format::Html,
            _ => {}
        }
    }
    let Some(accept) = accept else {
        return Format::Html;
    };
    let quality = |kind: &str, subtype: &str| -> (f32, u8) {
        let mut best: Option<(u8, f32)> = None; // (specificity, q)
        for (range, q) in weighted(accept) {
            let specificity = match range.split_once('/') {
                Some((k, s)) if k == kind && s == subtype => 2,
                Some((k, "*")) if k == kind => 1,
                Some(("*", "*")) => 0,
                _ => continue,
            };
            if best.is_none_or(|(spec, _)| specificity > spec) {
                best = Some((specificity, q));
            }
        }
        best.map(|(spec, q)| (q, spec)).unwrap_or((0.0, 0))
    };
    let (json, json_named) = quality("application", "json");
    let (html, html_named) = quality("text", "html");
    if json > html || (json == html && json > 0.0 && json_named > html_named) {
        Format::Json
    } else {
        Format::Html
    }
}

/// The JSON description of a stored resource or collection (a listing's entry, with `price`
/// when it has one).
#[derive(Serialize)]
pub struct Described<'a> {
    name: &'a str,
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    etag: Option<String>,
    content_type: Option<&'a str>,
    modified: String,
    owner: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<u64>,
}

/// Describes `entry`.
pub fn describe(entry: &Entry) -> Described<'_> {
    Described {
        name: entry.path.name(),
        path: entry.path.to_url(),
        kind: if entry.is_collection() { "collection" } else { "resource" },
        size: entry.size,
        etag: entry.etag.as_ref().map(|e| format!("\"{e}\"")),
        content_type: entry.content_type.as_deref(),
        modified: humantime::format_rfc3339_seconds(entry.modified).to_string(),
        owner: entry.owner.as_deref(),
        price: None,
    }
}

/// Entries in a JSON page when the client asks for no `limit`.
pub const DEFAULT_LIMIT: usize = 1000;
/// The most entries a JSON page may hold.
pub const MAX_LIMIT: usize = 10_000;

/// The value of `name` in a query string, percent-decoded; `None` when absent.
pub fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode_str(value).decode_utf8_lossy().into_owned())
    })
}

/// One page of the listing of `collection` as JSON, from `members` (sorted by name): at most
/// `?limit=N` entries (1..=[`MAX_LIMIT`], [`DEFAULT_LIMIT`] if not given) whose names come
/// after `?after=NAME`. Priced members carry `price`. Also the URL of the next page, when
/// there are more: in the document's `next`, and for the `Link` header.
pub fn json(
    collection: &Entry,
    members: &[&Entry],
    price: impl Fn(&Entry) -> Option<u64>,
    query: Option<&str>,
) -> Result<(Vec<u8>, Option<String>), Problem> {
    #[derive(Serialize)]
    struct Listing<'a> {
        path: String,
        entries: Vec<Described<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    }
    let limit = match query_value(query, "limit") {
        None => DEFAULT_LIMIT,
        Some(text) => {
            text.parse::<usize>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                Problem::new(
                    Slug::BadRequest,
                    format!("limit: a whole number from 1 to {MAX_LIMIT} is needed."),
                )
            })?
        }
    };
    let start = match query_value(query, "after") {
        None => 0,
        Some(after) => members.partition_point(|m| m.path.name() <= after.as_str()),
    };
    let page = &members[start..members.len().min(start.saturating_add(limit))];
    let next = match (page.last(), start + page.len() < members.len()) {
        (Some(last), true) => Some(format!(
            "{}?limit={limit}&after={}",
            collection.path.to_url(),
            utf8_percent_encode(last.path.name(), NON_ALPHANUMERIC)
        )),
        _ => None,
    };
    let entries =
        page.iter().map(|member| Described { price: price(member), ..describe(member) }).collect();
    let document = Listing { path: collection.path.to_url(), entries, next: next.clone() };
    Ok((serde_json::to_vec(&document).unwrap_or_default(), next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert_eq!(negotiate(Some(browser), None), Format::Html);
        assert_eq!(negotiate(None, None), Format::Html);
        assert_eq!(negotiate(Some("*/*"), None), Format::Html);
        assert_eq!(negotiate(Some("application/json"), None), Format::Json);
        assert_eq!(negotiate(Some("application/json, text/plain, */*"), None), Format::Json);
        assert_eq!(negotiate(Some("text/html;q=0.5, application/json"), None), Format::Json);
        assert_eq!(negotiate(Some("text/*"), None), Format::Html);
        assert_eq!(negotiate(Some("*/*"), Some("limit=2&format=json")), Format::Json);
        assert_eq!(negotiate(Some("application/json"), Some("format=html")), Format::Html);
    }
}
