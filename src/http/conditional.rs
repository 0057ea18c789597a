//! Conditional requests (RFC 9110 §13): the precondition fields parsed once, and evaluated in
//! the order of §13.2.2 against the current validators. Pure: the caller supplies the state,
//! so the same evaluation runs before reading a body and again under the write lock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::{IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE};

/// An entity tag as sent by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tag {
    weak: bool,
    opaque: String,
}

/// The value of If-Match or If-None-Match.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tags {
    Any,
    /// The listed tags; empty when the field could not be parsed.
    List(Vec<Tag>),
}

/// The validators of the current representation.
#[derive(Debug, Clone, Copy)]
pub struct Validators<'a> {
    /// The strong entity tag's opaque value.
    pub etag: Option<&'a str>,
    /// The last modification.
    pub modified: Option<SystemTime>,
}

/// What the preconditions say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Perform the method.
    Proceed,
    /// Answer 304 (GET and HEAD only).
    NotModified,
    /// Answer 412.
    Failed,
}

/// The precondition fields of one request.
#[derive(Debug, Clone, Default)]
pub struct Preconditions {
    if_match: Option<Tags>,
    if_none_match: Option<Tags>,
    if_modified_since: Option<SystemTime>,
    if_unmodified_since: Option<SystemTime>,
    if_range: Option<IfRange>,
}

#[derive(Debug, Clone)]
enum IfRange {
    Tag(Tag),
    Date(SystemTime),
    Invalid,
}

fn joined(headers: &HeaderMap, name: http::HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let parts: Vec<&str> = values.map(|v| v.to_str().unwrap_or("\u{0}")).collect();
    Some(parts.join(","))
}

fn date(headers: &HeaderMap, name: http::HeaderName) -> Option<SystemTime> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None; // more than one member: ignored
    }
    httpdate::parse_http_date(first.to_str().ok()?.trim()).ok()
}

fn parse_tags(text: &str) -> Tags {
    let text = text.trim();
    if text == "*" {
        return Tags::Any;
    }
    let mut tags = Vec::new();
    for item in text.split(',') {
        let item = item.trim_matches([' ', '\t']);
        if item.is_empty() {
            continue;
        }
        match parse_tag(item) {
            Some(tag) => tags.push(tag),
            None => return Tags::List(Vec::new()),
        }
    }
    Tags::List(tags)
}

fn parse_tag(text: &str) -> Option<Tag> {
    let (weak, quoted) = match text.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let opaque = quoted.strip_prefix('"')?.strip_suffix('"')?;
    let valid = |b: u8| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80;
    opaque.bytes().all(valid).then(|| Tag { weak, opaque: opaque.to_owned() })
}

/// HTTP dates have whole seconds: compare at that resolution.
fn seconds(time: SystemTime) -> SystemTime {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    UNIX_EPOCH + Duration::from_secs(since.as_secs())
}

impl Preconditions {
    /// Reads the precondition fields.
    pub fn parse(headers: &HeaderMap) -> Self {
        let if_range = headers.get(IF_RANGE).map(|value| {
            let text = value.to_str().unwrap_or("").trim();
            if text.get(..3).is_some_and(|start| start.contains('"')) {
                parse_tag(text).map(IfRange::Tag).unwrap_or(IfRange::Invalid)
            } else {
                httpdate::parse_http_date(text).map(IfRange::Date).unwrap_or(IfRange::Invalid)
            }
        });
        Preconditions {
            if_match: joined(headers, IF_MATCH).map(|t| parse_tags(&t)),
            if_none_match: joined(headers, IF_NONE_MATCH).map(|t| parse_tags(&t)),
            if_modified_since: date(headers, IF_MODIFIED_SINCE),
            if_unmodified_since: date(headers, IF_UNMODIFIED_SINCE),
            if_range,
        }
    }

    /// Evaluates §13.2.2 steps 1–4. `read` is true for GET and HEAD; `current` is `None`
    /// when no representation exists.
    pub fn evaluate(&self, read: bool, current: Option<Validators<'_>>) -> Outcome {
        // Step 1, else step 2.
        if let Some(tags) = &self.if_match {
            let pass = match (tags, current) {
                (_, None) => false,
                (Tags::Any, Some(_)) => true,
                (Tags::List(list), Some(v)) => {
                    list.iter().any(|t| !t.weak && Some(t.opaque.as_str()) == v.etag)
                }
            };
            if !pass {
                return Outcome::Failed;
            }
        } else if let (Some(date), Some(Validators { modified: Some(m), .. })) =
            (self.if_unmodified_since, current)
            && seconds(m) > date
        {
            return Outcome::Failed;
        }
        // Step 3, else step 4.
        let refused = if read { Outcome::NotModified } else { Outcome::Failed };
        if let Some(tags) = &self.if_none_match {
            let matched = match (tags, current) {
                (_, None) => false,
                (Tags::Any, Some(_)) => true,
                (Tags::List(list), Some(v)) => {
                    list.iter().any(|t| Some(t.opaque.as_str()) == v.etag)
                }
            };
            if matched {
                return refused;
            }
        } else if read
            && let (Some(date), Some(Validators { modified: Some(m), .. })) =
                (self.if_modified_since, current)
            && seconds(m) <= date
        {
            return Outcome::NotModified;
        }
        Outcome::Proceed
    }

    /// §13.2.2 step 5: true unless an If-Range field does not match (then Range is ignored).
    pub fn range_applies(&self, current: Validators<'_>) -> bool {
        match &self.if_range {
            None => true,
            Some(IfRange::Tag(tag)) => !tag.weak && Some(tag.opaque.as_str()) == current.etag,
            Some(IfRange::Date(date)) => current.modified.is_some_and(|m| seconds(m) == *date),
            Some(IfRange::Invalid) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;

    fn pre(fields: &[(&str, &str)]) -> Preconditions {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        Preconditions::parse(&headers)
    }

    #[test]
    fn section_13_2_2() {
        let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let current = Some(Validators { etag: Some("abc"), modified: Some(t) });
        let before = httpdate::fmt_http_date(t - Duration::from_secs(10));
        let at = httpdate::fmt_http_date(t);
        type Case<'a> = (&'a [(&'a str, &'a str)], bool, Option<Validators<'a>>, Outcome);
        let table: &[Case] = &[
            (&[], true, current, Proceed),
            (&[("if-match", "\"abc\"")], false, current, Proceed),
            (&[("if-match", "\"x\", \"abc\"")], false, current, Proceed),
            (&[("if-match", "W/\"abc\"")], false, current, Failed),
            (&[("if-match", "\"x\"")], false, current, Failed),
            (&[("if-match", "*")], false, current, Proceed),
            (&[("if-match", "*")], false, None, Failed),
            (&[("if-match", "garbage")], false, current, Failed),
            (&[("if-unmodified-since", &before)], false, current, Failed),
            (&[("if-unmodified-since", &at)], false, current, Proceed),
            // If-Match wins over If-Unmodified-Since.
            (&[("if-match", "\"abc\""), ("if-unmodified-since", &before)], false, current, Proceed),
            (&[("if-none-match", "*")], false, None, Proceed),
            (&[("if-none-match", "*")], false, current, Failed),
            (&[("if-none-match", "W/\"abc\"")], true, current, NotModified),
            (&[("if-none-match", "\"abc\"")], false, current, Failed),
            (&[("if-none-match", "\"x\"")], true, current, Proceed),
            (&[("if-modified-since", &at)], true, current, NotModified),
            (&[("if-modified-since", &before)], true, current, Proceed),
            (&[("if-modified-since", &at)], false, current, Proceed),
            // If-None-Match wins over If-Modified-Since.
            (&[("if-none-match", "\"x\""), ("if-modified-since", &at)], true, current, Proceed),
            (&[("if-modified-since", "yesterday")], true, current, Proceed),
        ];
        for (fields, read, current, want) in table {
            assert_eq!(pre(fields).evaluate(*read, *current), *want, "{fields:?} read={read}");
        }
    }

    #[test]
    fn if_range() {
        let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let v = Validators { etag: Some("abc"), modified: Some(t) };
        assert!(pre(&[]).range_applies(v));
        assert!(pre(&[("if-range", "\"abc\"")]).range_applies(v));
        assert!(!pre(&[("if-range", "W/\"abc\"")]).range_applies(v));
        assert!(!pre(&[("if-range", "\"x\"")]).range_applies(v));
        assert!(pre(&[("if-range", &httpdate::fmt_http_date(t))]).range_applies(v));
        assert!(!pre(&[("if-range", "nonsense")]).range_applies(v));
    }
}
