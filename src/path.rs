//! Resource paths: the request target, percent-decoded once and validated, as every other
//! module sees it. A [`ResourcePath`] can only name something inside the served tree.

use std::fmt;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// The longest segment accepted, in bytes (Linux's NAME_MAX).
pub const MAX_SEGMENT: usize = 255;
/// The longest decoded path accepted, in bytes (Linux's PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// Names starting with this are larder's temporary files: never served, listed or writable.
pub const TEMP_PREFIX: &str = ".larder-tmp.";

/// One segment percent-encoded for a URL, as [`ResourcePath::to_url`] encodes each.
pub fn encode_segment(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

/// Why a request target is not a valid resource path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// The path does not start with `/`.
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// `%2F` inside a segment: a `/` that is not a separator.
    EncodedSlash,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
    /// NUL or another control character.
    ControlCharacter,
    /// A `.` or `..` segment (raw or encoded).
    DotSegment,
    /// `//`: an empty segment.
    EmptySegment,
    /// A segment or the whole path is longer than the file system allows.
    TooLong,
    /// A name reserved for larder's own files.
    Reserved,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invalid::NotAbsolute => "the path must start with /",
            Invalid::BadEscape => "the path has a % not followed by two hex digits",
            Invalid::EncodedSlash => "the path has an encoded / (%2F) inside a segment",
            Invalid::NotUtf8 => "the path does not decode to UTF-8",
            Invalid::ControlCharacter => "the path has NUL or another control character",
            Invalid::DotSegment => "the path has a . or .. segment",
            Invalid::EmptySegment => "the path has an empty segment (//)",
            Invalid::TooLong => "a name in the path, or the path, is too long",
            Invalid::Reserved => "the path uses a name reserved for larder's own files",
        })
    }
}

/// A decoded, validated path: `/` or `/seg/seg[/]`. A trailing `/` names a collection.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ResourcePath {
    /// Decoded segments, none empty, none `.`/`..`, none containing `/` or control characters.
    segments: Vec<String>,
    collection: bool,
}

impl ResourcePath {
    /// The root collection, `/`.
    pub fn root() -> Self {
        ResourcePath { segments: Vec::new(), collection: true }
    }

    /// Decodes and validates the path part of a request target (no query).
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let rest = raw.strip_prefix('/').ok_or(Invalid::NotAbsolute)?;
        if rest.is_empty() {
            return Ok(Self::root());
        }
        let (body, collection) = match rest.strip_suffix('/') {
            Some(body) => (body, true),
            None => (rest, false),
        };
        let mut segments = Vec::new();
        let mut total = 0;
        for raw_segment in body.split('/') {
            let segment = decode_segment(raw_segment)?;
            total += segment.len() + 1;
            segments.push(segment);
        }
        if total > MAX_PATH {
            return Err(Invalid::TooLong);
        }
        Ok(ResourcePath { segments, collection })
    }

    /// Builds a child of this collection from an already-decoded name (an upload's file name).
    pub fn child(&self, name: &str, collection: bool) -> Result<Self, Invalid> {
        validate_segment(name)?;
        let mut segments = self.segments.clone();
        segments.push(name.to_owned());
        Ok(ResourcePath { segments, collection })
    }

    /// The decoded segments.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// True for `/` and every path written with a trailing slash.
    pub fn is_collection(&self) -> bool {
        self.collection
    }

    /// True for `/`.
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// The last segment, or `""` for the root.
    pub fn name(&self) -> &str {
        self.segments.last().map(String::as_str).unwrap_or("")
    }

    /// The collection holding this path (the root is its own parent).
    pub fn parent(&self) -> ResourcePath {
        let mut segments = self.segments.clone();
        segments.pop();
        ResourcePath { segments, collection: true }
    }

    /// The same path in the other form: `/docs` ↔ `/docs/`.
    pub fn with_collection(&self, collection: bool) -> ResourcePath {
        ResourcePath { segments: self.segments.clone(), collection: collection || self.is_root() }
    }

    /// True if `self` is `other` or lies beneath it, segment-aligned.
    pub fn starts_with(&self, other: &ResourcePath) -> bool {
        self.segments.starts_with(&other.segments)
    }

    /// The decoded path as text, `/a/b` or `/a/b/`: the key for metadata and rules.
    pub fn as_key(&self) -> String {
        let mut key = String::with_capacity(self.segments.iter().map(|s| s.len() + 1).sum());
        for segment in &self.segments {
            key.push('/');
            key.push_str(segment);
        }
        if self.collection || self.segments.is_empty() {
            key.push('/');
        }
        key
    }

    /// The path percent-encoded for a URL (`Location`, links in listings).
    pub fn to_url(&self) -> String {
        let mut url = String::new();
        for segment in &self.segments {
            url.push('/');
            url.extend(utf8_percent_encode(segment, SEGMENT));
        }
        if self.collection || self.segments.is_empty() {
            url.push('/');
        }
        url
    }
}

impl fmt::Debug for ResourcePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_key())
    }
}

impl fmt::Display for ResourcePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_key())
    }
}

/// What must be escaped in a path segment of a URL (RFC 3986 pchar, conservatively).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

fn decode_segment(raw: &str) -> Result<String, Invalid> {
    if raw.is_empty() {
        return Err(Invalid::EmptySegment);
    }
    // Check the escapes ourselves: the decoder passes a malformed `%zz` through unchanged.
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(Invalid::BadEscape)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(Invalid::BadEscape);
            }
            if hex.eq_ignore_ascii_case(b"2f") {
                return Err(Invalid::EncodedSlash);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    let decoded = percent_decode_str(raw).decode_utf8().map_err(|_| Invalid::NotUtf8)?;
    validate_segment(&decoded)?;
    Ok(decoded.into_owned())
}

fn validate_segment(segment: &str) -> Result<(), Invalid> {
    if segment.is_empty() {
        return Err(Invalid::EmptySegment);
    }
    if segment == "." || segment == ".." {
        return Err(Invalid::DotSegment);
    }
    if segment.contains('/') {
        return Err(Invalid::EncodedSlash);
    }
    if segment.chars().any(char::is_control) {
        return Err(Invalid::ControlCharacter);
    }
    if segment.len() > MAX_SEGMENT {
        return Err(Invalid::TooLong);
    }
    if segment.starts_with(TEMP_PREFIX) {
        return Err(Invalid::Reserved);
    }
    Ok(())
}

/// True if a name found on disk can be named by a [`ResourcePath`] (listings skip the rest).
pub fn is_servable_name(name: &str) -> bool {
    validate_segment(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_decodes() {
        let cases = [
            ("/", "/", true),
            ("/a.txt", "/a.txt", false),
            ("/docs/", "/docs/", true),
            ("/a%20b/c%C3%A9", "/a b/cé", false),
            ("/%2e%2e.txt", "/...txt", false),
            ("/a%252F", "/a%2F", false),
        ];
        for (raw, key, collection) in cases {
            let path = ResourcePath::parse(raw).unwrap();
            assert_eq!(path.as_key(), key, "{raw}");
            assert_eq!(path.is_collection(), collection, "{raw}");
        }
    }

    #[test]
    fn rejects() {
        let long = format!("/{}", "a".repeat(256));
        let cases: [(&str, Invalid); 14] = [
            ("a", Invalid::NotAbsolute),
            ("/..", Invalid::DotSegment),
            ("/a/../b", Invalid::DotSegment),
            ("/%2e%2e/b", Invalid::DotSegment),
            ("/%2E%2e", Invalid::DotSegment),
            ("/./a", Invalid::DotSegment),
            ("/a%2fb", Invalid::EncodedSlash),
            ("/a%2Fb", Invalid::EncodedSlash),
            ("/a%00", Invalid::ControlCharacter),
            ("/a%0a", Invalid::ControlCharacter),
            ("/a%ff", Invalid::NotUtf8),
            ("/a%zz", Invalid::BadEscape),
            ("/a//b", Invalid::EmptySegment),
            (long.as_str(), Invalid::TooLong),
        ];
        for (raw, want) in cases {
            assert_eq!(ResourcePath::parse(raw), Err(want), "{raw}");
        }
        assert_eq!(ResourcePath::parse("/.larder-tmp.x"), Err(Invalid::Reserved));
        assert_eq!(ResourcePath::parse("/a%4"), Err(Invalid::BadEscape));
    }

    #[test]
    fn url_round_trip() {
        for raw in ["/a%20b/%3Cscript%3E", "/docs/", "/%E2%82%AC%23%3F"] {
            let path = ResourcePath::parse(raw).unwrap();
            assert_eq!(ResourcePath::parse(&path.to_url()).unwrap(), path);
        }
    }

    #[test]
    fn family() {
        let path = ResourcePath::parse("/a/b/c.txt").unwrap();
        assert_eq!(path.parent().as_key(), "/a/b/");
        assert_eq!(path.name(), "c.txt");
        assert!(path.starts_with(&ResourcePath::parse("/a").unwrap()));
        assert!(!path.starts_with(&ResourcePath::parse("/a/bb").unwrap()));
        assert_eq!(ResourcePath::root().parent(), ResourcePath::root());
    }
}
