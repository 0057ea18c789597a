//! Requests that RFC 9112 (and SPEC) say must be refused: each must get the given status and
//! a closed connection. Shared by the wire tests and the hostile-input campaign.

/// `Authorization` for alice with the password "correct horse".
pub const AUTH: &str = "Authorization: Basic YWxpY2U6Y29ycmVjdCBob3JzZQ==\r\n";

/// Each case: bytes that must get a 400 (or the given status) and a closed connection.
pub fn refused() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let put = |extra: &str, body: &str| {
        format!("PUT /x HTTP/1.1\r\nHost: a\r\n{AUTH}{extra}\r\n{body}").into_bytes()
    };
    vec![
        (
            "Content-Length with Transfer-Encoding",
            put("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
            "400",
        ),
        (
            "Content-Length repeated",
            put("Content-Length: 4\r\nContent-Length: 4\r\n", "abcd"),
            "400",
        ),
        ("Content-Length 4, 4", put("Content-Length: 4, 4\r\n", "abcd"), "400"),
        ("Content-Length 42, 43", put("Content-Length: 42, 43\r\n", ""), "400"),
        ("Content-Length +4", put("Content-Length: +4\r\n", "abcd"), "400"),
        ("Content-Length -1", put("Content-Length: -1\r\n", ""), "400"),
        ("Content-Length hex", put("Content-Length: 0x10\r\n", ""), "400"),
        ("Content-Length with space", put("Content-Length: 1 2\r\n", ""), "400"),
        (
            "Content-Length 30 digits",
            put("Content-Length: 123456789012345678901234567890\r\n", ""),
            "400",
        ),
        ("chunked not last", put("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"), "400"),
        (
            "chunked twice",
            put("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
            "400",
        ),
        ("unknown coding", put("Transfer-Encoding: gzip\r\n", ""), "400"),
        ("chunk size not hex", put("Transfer-Encoding: chunked\r\n", "Z\r\n\r\n"), "400"),
        (
            "chunk size 0x",
            put("Transfer-Encoding: chunked\r\n", "0x5\r\nabcde\r\n0\r\n\r\n"),
            "400",
        ),
        (
            "chunk size overflow",
            put("Transfer-Encoding: chunked\r\n", "FFFFFFFFFFFFFFFFFFFF\r\nx\r\n"),
            "400",
        ),
        ("chunk line bare LF", put("Transfer-Encoding: chunked\r\n", "3\nabc\r\n0\r\n\r\n"), "400"),
        (
            "HTTP/1.0 with Transfer-Encoding",
            b"PUT /x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            "400",
        ),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n".to_vec(), "400"),
        (
            "space before colon",
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 0\r\n\r\n".to_vec(),
            "400",
        ),
        ("whitespace before first field", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n".to_vec(), "400"),
        ("bare LF line ends", b"GET / HTTP/1.1\nHost: a\n\n".to_vec(), "400"),
        ("bare LF in one field", b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n".to_vec(), "400"),
        ("bare CR", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n".to_vec(), "400"),
        ("NUL in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n".to_vec(), "400"),
        (
            "control character in a value",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n".to_vec(),
            "400",
        ),
        ("DEL in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n".to_vec(), "400"),
        ("non-token field name", b"GET / HTTP/1.1\r\nHost: a\r\nX\xff: b\r\n\r\n".to_vec(), "400"),
        ("missing Host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), "400"),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), "400"),
        ("invalid Host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n".to_vec(), "400"),
        ("method not a token", b"G(E)T / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), "400"),
        ("double space in request line", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), "400"),
        ("space in target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), "400"),
        (
            "# in the target",
            format!("DELETE /x/#fragment HTTP/1.1\r\nHost: a\r\n{AUTH}Depth: infinity\r\n\r\n")
                .into_bytes(),
            "400",
        ),
        (
            "userinfo in an absolute-form target",
            b"GET http://alice:correct%20horse@a/x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            "400",
        ),
        ("bad version", b"GET / HTTP/1.1x\r\nHost: a\r\n\r\n".to_vec(), "400"),
        ("two-digit version", b"GET / HTTP/1.32\r\nHost: a\r\n\r\n".to_vec(), "400"),
        (
            "header section too large",
            format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "v".repeat(70_000)).into_bytes(),
            "431",
        ),
        (
            "too many fields",
            format!(
                "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
                (0..120).map(|i| format!("X-{i}: v\r\n")).collect::<String>()
            )
            .into_bytes(),
            "431",
        ),
    ]
}
