//! Listings of collections, in JSON (the default) or HTML (when the client prefers it), and
//! the JSON description of one stored resource. Every name in HTML is escaped.

use serde_json::{Value, json};

use crate::store::Entry;

/// The media types a listing comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`.
    Json,
    /// `text/html`.
    Html,
}

/// Picks the format from an Accept field: HTML only when `text/html` has a higher q-value
/// than `application/json` (a browser's Accept), JSON otherwise.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Json;
    };
    let quality = |kind: &str, subtype: &str| -> f32 {
        let mut best: Option<(u8, f32)> = None; // (specificity, q)
        for item in accept.split(',') {
            let mut params = item.split(';');
            let range = params.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = params
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
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
        best.map(|(_, q)| q).unwrap_or(0.0)
    };
    if quality("text", "html") > quality("application", "json") {
        Format::Html
    } else {
        Format::Json
    }
}

/// The JSON description of a stored resource or collection.
pub fn describe(entry: &Entry) -> Value {
    json!({
        "name": entry.path.name(),
        "path": entry.path.to_url(),
        "type": if entry.is_collection() { "collection" } else { "resource" },
        "size": entry.size,
        "etag": entry.etag.as_ref().map(|e| format!("\"{e}\"")),
        "content_type": entry.content_type,
        "modified": humantime::format_rfc3339_seconds(entry.modified).to_string(),
        "owner": entry.owner,
    })
}

/// The listing of `collection` with `members` as JSON; priced members carry `price`.
pub fn json(
    collection: &Entry,
    members: &[&Entry],
    price: impl Fn(&Entry) -> Option<u64>,
) -> Vec<u8> {
    let entries: Vec<Value> = members
        .iter()
        .map(|member| {
            let mut entry = describe(member);
            if let Some(price) = price(member) {
                entry["price"] = json!(price);
            }
            entry
        })
        .collect();
    let document = json!({ "path": collection.path.to_url(), "entries": entries });
    serde_json::to_vec(&document).unwrap_or_default()
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The listing of `collection` with `members` as an HTML page.
pub fn html(
    collection: &Entry,
    members: &[&Entry],
    price: impl Fn(&Entry) -> Option<u64>,
) -> Vec<u8> {
    let title = escape(&collection.path.as_key());
    let mut page = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Index of {title}</title>\n</head>\n<body>\n<h1>Index of {title}</h1>\n\
         <table>\n<thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Size</th>\
         <th scope=\"col\">Modified</th><th scope=\"col\">Price</th></tr></thead>\n<tbody>\n"
    );
    if !collection.path.is_root() {
        let parent = escape(&collection.path.parent().to_url());
        page.push_str(&format!(
            "<tr><td><a href=\"{parent}\">../</a></td><td></td><td></td><td></td></tr>\n"
        ));
    }
    for member in members {
        let mut name = escape(member.path.name());
        if member.is_collection() {
            name.push('/');
        }
        let size = if member.is_collection() { String::new() } else { member.size.to_string() };
        let price = price(member).map(|p| format!("{p} credits")).unwrap_or_default();
        page.push_str(&format!(
            "<tr><td><a href=\"{}\">{name}</a></td><td>{size}</td><td>{}</td><td>{price}</td></tr>\n",
            escape(&member.path.to_url()),
            humantime::format_rfc3339_seconds(member.modified),
        ));
    }
    page.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    page.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert_eq!(negotiate(Some(browser)), Format::Html);
        assert_eq!(negotiate(None), Format::Json);
        assert_eq!(negotiate(Some("*/*")), Format::Json);
        assert_eq!(negotiate(Some("application/json")), Format::Json);
        assert_eq!(negotiate(Some("text/html;q=0.5, application/json")), Format::Json);
        assert_eq!(negotiate(Some("text/*")), Format::Html);
    }

    #[test]
    fn escapes() {
        assert_eq!(escape("<script>\"'&"), "&lt;script&gt;&quot;&#39;&amp;");
    }
}
