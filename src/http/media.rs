//! Media types: what an upload may declare, and what a stored file is served as. A browser
//! decides from `Content-Type` whether a file can run script in larder's origin, so a type is
//! parsed (the `mime` crate), never matched by its text: a list (`text/plain,text/html`) or
//! anything else that does not parse is refused at upload (415), and stored types are
//! normalised. When served, only the types a browser shows safely inline go as they are; every
//! other one carries `Content-Security-Policy: sandbox` (an origin of its own: no cookie, no
//! token, no same-origin fetch) and `nosniff`.

use http::HeaderMap;
use http::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use mime::Mime;

use super::problem::{Problem, Slug};

/// What is served for a stored type that no longer parses.
const UNKNOWN: &str = "application/octet-stream";

/// The declared type of an upload, normalised; `None` when none is declared. A list or a type
/// that does not parse is 415.
pub fn declared(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let Some(value) = values.next() else { return Ok(None) };
    let refused = || {
        Problem::new(
            Slug::UnsupportedMediaType,
            "Content-Type: send one media type, such as text/plain; charset=utf-8.",
        )
    };
    if values.next().is_some() {
        return Err(refused());
    }
    let text = value.to_str().map_err(|_| refused())?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<Mime>().map(|m| Some(normal(&m))).map_err(|_| refused())
}

/// `m` as larder stores and serves it: type and subtype in lower case, then its parameters
/// (names in lower case, values quoted where they must be).
pub fn normal(m: &Mime) -> String {
    let mut text = m.essence_str().to_ascii_lowercase();
    for (name, value) in m.params() {
        let value = value.as_str();
        let token = !value.is_empty()
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        match token {
            true => text.push_str(&format!("; {}={value}", name.as_str())),
            false => {
                let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
                text.push_str(&format!("; {}=\"{escaped}\"", name.as_str()));
            }
        }
    }
    text
}

/// The `Content-Type` a stored type is served with: normalised, or `application/octet-stream`
/// if it does not parse (a type stored before types were checked).
pub fn served(stored: Option<&str>) -> Option<HeaderValue> {
    let stored = stored?;
    let text = match stored.parse::<Mime>() {
        Ok(m) => normal(&m),
        Err(_) => UNKNOWN.to_owned(),
    };
    HeaderValue::from_str(&text).ok().or(Some(HeaderValue::from_static(UNKNOWN)))
}

/// True for the types a browser shows inline without running anything in the page's origin:
/// images but SVG, audio, video, PDF, plain text, JSON.
pub fn safe_inline(m: &Mime) -> bool {
    let essence = m.essence_str();
    match m.type_().as_str() {
        "image" => essence != "image/svg+xml",
        "audio" | "video" => true,
        _ => matches!(essence, "application/pdf" | "text/plain" | "application/json"),
    }
}

/// Adds to a stored resource's answer what keeps it from acting as a page of larder's: no
/// MIME sniffing, and `Content-Security-Policy: sandbox` unless its type is one a browser
/// shows safely inline (an untyped or unparseable one is not).
pub fn confine(headers: &mut HeaderMap, stored: Option<&str>) {
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    let safe = stored.and_then(|t| t.parse::<Mime>().ok()).is_some_and(|m| safe_inline(&m));
    if !safe {
        headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    }
}

/// RFC 8187's `attr-char`: what a `filename*` value keeps as it is.
const ATTR_CHAR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `Content-Disposition` (RFC 6266) for a file named `name`: `inline`, or `attachment` to
/// make browsers save it; the name as RFC 8187 `filename*` (UTF-8), and an ASCII
/// `filename` for clients that know only that one.
pub fn disposition(name: &str, attachment: bool) -> HeaderValue {
    let kind = if attachment { "attachment" } else { "inline" };
    let fallback: String = name
        .chars()
        .map(|c| match c {
            ' ' => ' ',
            '"' | '\\' | '%' => '_',
            c if c.is_ascii_graphic() => c,
            _ => '_',
        })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(name, ATTR_CHAR);
    let value = format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}");
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("inline"))
}

/// Whether a query asks for a download (`?download`, `?download=1`).
pub fn wants_download(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|p| p == "download" || p.starts_with("download=")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_name_the_file_twice() {
        let plain = disposition("a.txt", false);
        assert_eq!(plain, "inline; filename=\"a.txt\"; filename*=UTF-8''a.txt");
        let saved = disposition("Übersicht März \"1\".pdf", true);
        assert_eq!(
            saved,
            "attachment; filename=\"_bersicht M_rz _1_.pdf\"; \
             filename*=UTF-8''%C3%9Cbersicht%20M%C3%A4rz%20%221%22.pdf"
        );
        assert!(wants_download(Some("download")) && wants_download(Some("a=1&download=1")));
        assert!(!wants_download(Some("downloads")) && !wants_download(None));
    }

    fn declare(value: &str) -> Result<Option<String>, u16> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        declared(&headers).map_err(|p| p.slug().status().as_u16())
    }

    #[test]
    fn uploads_declare_one_type() {
        assert_eq!(declare("text/plain,text/html"), Err(415));
        assert_eq!(declare("application/octet-stream,text/html"), Err(415));
        assert_eq!(declare("text/plain; a=b, text/html"), Err(415));
        assert_eq!(declare("html"), Err(415));
        assert_eq!(declare(""), Ok(None));
        assert_eq!(
            declare("TEXT/HTML; Charset=UTF-8").unwrap().unwrap(),
            "text/html; charset=utf-8"
        );
        assert_eq!(declare("text/plain;x=\"a b\"").unwrap().unwrap(), "text/plain; x=\"a b\"");
        assert_eq!(declare("image/svg+xml").unwrap().unwrap(), "image/svg+xml");
        let mut two = HeaderMap::new();
        two.append(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        two.append(CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert_eq!(declared(&two).map_err(|p| p.slug().status().as_u16()), Err(415));
    }

    #[test]
    fn only_safe_types_go_unconfined() {
        let sandboxed = |stored: Option<&str>| {
            let mut headers = HeaderMap::new();
            confine(&mut headers, stored);
            assert_eq!(headers["x-content-type-options"], "nosniff");
            headers.get("content-security-policy").is_some()
        };
        for safe in [
            "image/png",
            "audio/ogg",
            "video/mp4",
            "application/pdf",
            "text/plain; charset=utf-8",
            "application/json",
        ] {
            assert!(!sandboxed(Some(safe)), "{safe}");
        }
        for unsafe_ in [
            "text/html",
            "image/svg+xml",
            "text/xsl",
            "application/xhtml+xml",
            "text/xml",
            "application/octet-stream",
            "text/plain,text/html",
            "text/javascript",
        ] {
            assert!(sandboxed(Some(unsafe_)), "{unsafe_}");
        }
        assert!(sandboxed(None));
        assert_eq!(served(Some("text/plain,text/html")).unwrap(), "application/octet-stream");
        assert_eq!(served(Some("Text/Plain")).unwrap(), "text/plain");
    }
}
