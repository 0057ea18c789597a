//! WebDAV lock tokens, timeouts and the `If` header (RFC 4918 §10.4). The locks themselves
//! are kept by the state ([`crate::state::davlock`]): each belongs to the principal that took
//! it, and a write under it needs its token *and* that principal.

use std::time::Duration;

/// Longest lock granted; `Timeout: Infinite` gets this.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// A lock's life when the client asks for none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// A new lock token.
pub fn new_token() -> String {
    let b: [u8; 16] = rand::random();
    let hex = crate::store::hex(&b);
    // A version 4 UUID's layout; the bits are random, which is all a token needs.
    format!(
        "urn:uuid:{}-{}-4{}-a{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..]
    )
}

/// The timeout a `Timeout` field asks for, within [`MAX_TIMEOUT`].
pub fn timeout(field: Option<&str>) -> Duration {
    let Some(field) = field else { return DEFAULT_TIMEOUT };
    for choice in field.split(',').map(str::trim) {
        if choice.eq_ignore_ascii_case("infinite") {
            return MAX_TIMEOUT;
        }
        if let Some(secs) = choice.strip_prefix("Second-").and_then(|s| s.parse::<u64>().ok()) {
            return Duration::from_secs(secs.max(1)).min(MAX_TIMEOUT);
        }
    }
    DEFAULT_TIMEOUT
}

/// One condition of an `If` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// `Not`.
    pub not: bool,
    /// What it tests.
    pub test: Test,
}

/// A state token or an entity tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    /// `<urn:uuid:…>` and the like.
    Token(String),
    /// `["etag"]`, as written (quotes included).
    Etag(String),
}

/// A list of conditions, for the resource its tag names (`None`: the request's target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List {
    /// The Resource-Tag, as written.
    pub tag: Option<String>,
    /// The conditions, all of which must hold.
    pub conditions: Vec<Condition>,
}

/// Reads an `If` field (RFC 4918 §10.4). A field that does not parse is `Err`: 400.
pub fn parse_if(field: &str) -> Result<Vec<List>, String> {
    let bad = || format!("the If header does not parse: {field}");
    let mut lists = Vec::new();
    let mut rest = field.trim();
    let mut tag: Option<String> = None;
    let mut tagged = None;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('<') {
            let end = after.find('>').ok_or_else(bad)?;
            if tagged == Some(false) {
                return Err(bad());
            }
            tagged = Some(true);
            tag = Some(after[..end].to_owned());
            rest = after[end + 1..].trim_start();
            if !rest.starts_with('(') {
                return Err(bad());
            }
            continue;
        }
        let after = rest.strip_prefix('(').ok_or_else(bad)?;
        if tagged.is_none() {
            tagged = Some(false);
        }
        let end = after.find(')').ok_or_else(bad)?;
        let mut inner = after[..end].trim();
        let mut conditions = Vec::new();
        while !inner.is_empty() {
            let mut not = false;
            if inner.len() >= 3 && inner[..3].eq_ignore_ascii_case("not") {
                not = true;
                inner = inner[3..].trim_start();
            }
            let test = if let Some(t) = inner.strip_prefix('<') {
                let close = t.find('>').ok_or_else(bad)?;
                inner = t[close + 1..].trim_start();
                Test::Token(t[..close].to_owned())
            } else if let Some(t) = inner.strip_prefix('[') {
                let close = t.find(']').ok_or_else(bad)?;
                inner = t[close + 1..].trim_start();
                Test::Etag(t[..close].trim().to_owned())
            } else {
                return Err(bad());
            };
            conditions.push(Condition { not, test });
        }
        if conditions.is_empty() {
            return Err(bad());
        }
        lists.push(List { tag: tag.clone(), conditions });
        rest = after[end + 1..].trim_start();
    }
    if lists.is_empty() {
        return Err(bad());
    }
    Ok(lists)
}

/// The state tokens an `If` field submits (RFC 4918 §10.4.1: "lock tokens submitted").
pub fn submitted(lists: &[List]) -> Vec<&str> {
    lists
        .iter()
        .flat_map(|l| &l.conditions)
        .filter_map(|c| match (&c.test, c.not) {
            (Test::Token(t), false) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_fields() {
        let lists = parse_if("(<urn:uuid:1> [\"e1\"]) (Not <DAV:no-lock>)").unwrap();
        assert_eq!(lists.len(), 2);
        assert_eq!(lists[0].conditions[1].test, Test::Etag("\"e1\"".into()));
        assert!(lists[1].conditions[0].not);
        assert_eq!(submitted(&lists), vec!["urn:uuid:1"]);
        let tagged = parse_if("<http://h/a> (<urn:uuid:2>) <http://h/b> ([W/\"x\"])").unwrap();
        assert_eq!(tagged[1].tag.as_deref(), Some("http://h/b"));
        for bad in ["", "(", "()", "<http://h/a>", "(<urn:x>) <http://h/a> (<urn:y>)", "urn:x"] {
            assert!(parse_if(bad).is_err(), "{bad}");
        }
    }
}
