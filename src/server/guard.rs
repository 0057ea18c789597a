//! A check on the bytes in front of hyper for what its parser accepts but SPEC refuses, and
//! RFC 9112 lets a server refuse:
//!
//! - a bare LF or bare CR ending a line of a request head or trailer section (httparse accepts
//!   bare LF, and a message that one parser reads with LF and another with CRLF is how
//!   requests get smuggled);
//! - a head whose framing is ambiguous: Content-Length repeated, or with Transfer-Encoding
//!   (hyper silently keeps one, where SPEC wants 400 and a closed connection);
//! - a `#` in the request target (hyper's URI drops the fragment, so `DELETE /a/#b` would
//!   act on `/a/`).
//!
//! [`Guard`] follows the HTTP/1.1 message boundaries on a connection. It holds each request
//! head back until the head is complete, checks it, asks httparse (the parser hyper itself
//! uses) for its framing fields, then hands the head on and lets the body through
//! (`Content-Length` bytes, or chunks sized by `httparse::parse_chunk_size`). A faulty head is
//! handed on with its first byte replaced by NUL, which hyper refuses with 400 and a closed
//! connection. It never adds, removes or reorders bytes. A head that takes longer than the
//! header timeout to arrive (a silent new connection, a slow-loris head) ends the connection. HTTP/2 (the `PRI` preface) and
//! anything it cannot follow pass through untouched: hyper has the last word on those.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// The largest head the guard holds; hyper refuses larger ones (431) anyway.
const MAX_HEAD: usize = 128 * 1024;

/// The most held bytes handed to hyper by one read.
const HAND_ON: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing seen yet: HTTP/1 or the HTTP/2 preface?
    Start,
    /// In a request head (or the empty lines before one): held back.
    Head,
    /// In a body of this many more bytes.
    Fixed(u64),
    /// In a chunk-size line.
    ChunkSize,
    /// In chunk data, this many more bytes.
    ChunkData(u64),
    /// In the trailer section after the last chunk: held back like a head.
    Trailers,
    /// Not following: pass everything.
    Passthrough,
}

/// The byte scanner, apart from I/O so it can be tested on any split of the input.
#[derive(Debug)]
pub struct Scanner {
    mode: Mode,
    /// The bytes of the current head or trailer section, held back.
    held: Vec<u8>,
    /// The current chunk-size line (passed on, kept to be parsed).
    line: Vec<u8>,
    prev: u8,
    /// The held bytes break a rule: poison them when handing them on.
    faulty: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner { mode: Mode::Start, held: Vec::new(), line: Vec::new(), prev: 0, faulty: false }
    }
}

impl Scanner {
    /// Scans `input` (just read, in order) and appends to `out` what may go on to hyper.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while i < input.len() {
            match self.mode {
                Mode::Passthrough => {
                    out.extend_from_slice(&input[i..]);
                    return;
                }
                Mode::Start => {
                    self.held.push(input[i]);
                    i += 1;
                    if self.held.len() >= 3 {
                        let seen = std::mem::take(&mut self.held);
                        if seen.starts_with(b"PRI") {
                            self.mode = Mode::Passthrough;
                            out.extend_from_slice(&seen);
                        } else {
                            self.mode = Mode::Head;
                            for b in seen {
                                self.head_byte(b, out);
                            }
                        }
                    }
                }
                Mode::Fixed(_) | Mode::ChunkData(_) => {
                    let take = self.skip(&input[i..]);
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                }
                Mode::ChunkSize => {
                    let b = input[i];
                    i += 1;
                    out.push(b);
                    self.line.push(b);
                    if b == b'\n' {
                        self.size_line();
                    } else if self.line.len() > MAX_HEAD {
                        self.mode = Mode::Passthrough;
                    }
                }
                Mode::Head | Mode::Trailers => {
                    // Copy a run of ordinary bytes at once; CR and LF go one by one.
                    let rest = &input[i..];
                    let run = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                    if run > 0 && self.prev != b'\r' && self.held.len() + run <= MAX_HEAD {
                        self.held.extend_from_slice(&rest[..run]);
                        self.prev = rest[run - 1];
                        i += run;
                    } else {
                        self.head_byte(input[i], out);
                        i += 1;
                    }
                }
            }
        }
    }

    /// True while a head is on its way: nothing seen yet on the connection, or part of a
    /// head or trailer section held. (Between requests it is hyper's to time out.)
    pub fn in_head(&self) -> bool {
        self.mode == Mode::Start
            || (matches!(self.mode, Mode::Head | Mode::Trailers) && !self.held.is_empty())
    }

    /// How many of `input`'s first bytes are body or pass-through bytes, which need no
    /// scanning or holding; the mode moves past them. 0 when a head, size line or trailer
    /// section is next.
    pub fn skip(&mut self, input: &[u8]) -> usize {
        match self.mode {
            Mode::Passthrough => input.len(),
            Mode::Fixed(left) | Mode::ChunkData(left) => {
                let take = left.min(input.len() as u64);
                let left = left - take;
                self.mode = match (self.mode, left) {
                    (Mode::Fixed(_), 0) => Mode::Head,
                    (Mode::Fixed(_), n) => Mode::Fixed(n),
                    (_, 0) => Mode::ChunkSize,
                    (_, n) => Mode::ChunkData(n),
                };
                self.prev = 0;
                take as usize
            }
            _ => 0,
        }
    }

    /// True in a body (or passing everything through): the next bytes need no holding.
    pub fn in_body(&self) -> bool {
        matches!(self.mode, Mode::Fixed(_) | Mode::ChunkData(_) | Mode::Passthrough)
    }

    /// The connection ended: whatever is held goes on as it is (hyper sees a cut-off head).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.release(out);
        self.mode = Mode::Passthrough;
    }

    fn release(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.faulty)
            && let Some(first) = self.held.first_mut()
        {
            *first = 0;
        }
        out.extend_from_slice(&self.held);
        self.held.clear(); // keeps its capacity for the next head
    }

    /// One byte of a head or trailer section.
    fn head_byte(&mut self, b: u8, out: &mut Vec<u8>) {
        let bare_lf = b == b'\n' && self.prev != b'\r';
        let bare_cr = self.prev == b'\r' && b != b'\n';
        if bare_lf || bare_cr {
            self.faulty = true;
        }
        self.prev = b;
        self.held.push(b);
        if self.faulty || self.held.len() > MAX_HEAD {
            // Hand it on now (poisoned if faulty) and stop following: hyper closes.
            self.release(out);
            self.mode = Mode::Passthrough;
            return;
        }
        if b != b'\n' {
            return;
        }
        match self.mode {
            // Empty lines before a request are allowed.
            Mode::Head if self.held == b"\r\n" => self.release(out),
            Mode::Head if self.held.ends_with(b"\r\n\r\n") => {
                let next = body_of(&self.held);
                self.faulty = next.is_none();
                self.release(out);
                self.mode = next.unwrap_or(Mode::Passthrough);
                self.prev = 0;
            }
            Mode::Trailers if self.held.ends_with(b"\r\n\r\n") || self.held == b"\r\n" => {
                self.release(out);
                self.mode = Mode::Head;
                self.prev = 0;
            }
            _ => {}
        }
    }

    /// A complete chunk-size line (or the CRLF ending the previous chunk's data).
    fn size_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        if line == b"\r\n" {
            return;
        }
        self.mode = match httparse::parse_chunk_size(&line) {
            Ok(httparse::Status::Complete((_, 0))) => Mode::Trailers,
            Ok(httparse::Status::Complete((_, size))) => Mode::ChunkData(size),
            // Left to hyper, which refuses bad sizes and bare line ends here itself.
            _ => Mode::Passthrough,
        };
        self.prev = 0;
    }
}

/// The body framing a complete head announces; `None` when it is ambiguous (Content-Length
/// repeated, or with Transfer-Encoding), which hyper would resolve silently, or when the
/// target has a `#`.
fn body_of(head: &[u8]) -> Option<Mode> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(head, &mut fields) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Some(Mode::Passthrough),
    }
    // A fragment is never sent (RFC 9112 §3.2); hyper's URI would drop it silently, and
    // `DELETE /a/#b` would remove `/a/`.
    if request.path.is_some_and(|path| path.contains('#')) {
        return None;
    }
    let headers = request.headers.iter();
    let mut lengths = headers.clone().filter(|h| h.name.eq_ignore_ascii_case("content-length"));
    let (length, repeated) = (lengths.next().map(|h| h.value), lengths.next().is_some());
    let chunked = headers.clone().any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    if repeated || (chunked && length.is_some()) {
        return None;
    }
    if chunked {
        return Some(Mode::ChunkSize);
    }
    Some(match length {
        None => Mode::Head,
        Some(value) => {
            match std::str::from_utf8(value).ok().and_then(|v| v.trim().parse::<u64>().ok()) {
                Some(0) => Mode::Head,
                Some(n) => Mode::Fixed(n),
                None => Mode::Passthrough,
            }
        }
    })
}

/// An I/O stream whose incoming bytes pass through a [`Scanner`], and which fails with
/// `TimedOut` when a head takes longer than `timeout` to arrive (hyper never sees a head
/// still held here, so its own header timeout cannot start).
pub struct Guard<T> {
    inner: T,
    scanner: Scanner,
    /// Bytes scanned and ready for hyper.
    ready: Vec<u8>,
    /// How much of `ready` hyper has taken.
    taken: usize,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<T> Guard<T> {
    /// Guards `inner`; a head must arrive within `timeout`.
    pub fn new(inner: T, timeout: Duration) -> Self {
        Guard {
            inner,
            scanner: Scanner::default(),
            ready: Vec::new(),
            taken: 0,
            timeout,
            deadline: None,
        }
    }

    /// Arms the deadline while a head is on its way, disarms it otherwise.
    fn track_deadline(&mut self) {
        match (self.scanner.in_head(), self.deadline.is_some()) {
            (true, false) => self.deadline = Some(Box::pin(tokio::time::sleep(self.timeout))),
            (false, true) => self.deadline = None,
            _ => {}
        }
    }
}

impl<T: AsyncRead + Unpin> Guard<T> {
    /// Reads the first bytes of the connection, enough to tell HTTP/2 with prior knowledge
    /// (the `PRI` preface) from HTTP/1: true for HTTP/2. The bytes stay in the guard for
    /// hyper. An end of stream or a failed read counts as HTTP/1; hyper then sees it too.
    pub async fn sniff_h2(&mut self) -> bool {
        std::future::poll_fn(|cx| {
            while self.scanner.mode == Mode::Start {
                self.track_deadline();
                let mut chunk = [0u8; 64];
                let mut read = ReadBuf::new(&mut chunk);
                match Pin::new(&mut self.inner).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                        self.scanner.feed(read.filled(), &mut self.ready);
                    }
                    Poll::Ready(_) => return Poll::Ready(false),
                    Poll::Pending => {
                        if let Some(deadline) = self.deadline.as_mut()
                            && deadline.as_mut().poll(cx).is_ready()
                        {
                            return Poll::Ready(false);
                        }
                        return Poll::Pending;
                    }
                }
            }
            Poll::Ready(self.scanner.mode == Mode::Passthrough && self.ready.starts_with(b"PRI"))
        })
        .await
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // In a body, read straight into hyper's buffer: no copy. Bytes past the body's end
        // (a pipelined head) are taken back and go through the scanner.
        if this.taken == this.ready.len() && this.scanner.in_body() && buf.remaining() > 0 {
            this.track_deadline();
            let before = buf.filled().len();
            return match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {
                    let read = buf.filled().len() - before;
                    let body = this.scanner.skip(&buf.filled()[before..]);
                    if body < read {
                        let rest = buf.filled()[before + body..].to_vec();
                        buf.set_filled(before + body);
                        this.scanner.feed(&rest, &mut this.ready);
                        this.taken = 0;
                        if body == 0 {
                            return Pin::new(this).poll_read(cx, buf);
                        }
                    }
                    Poll::Ready(Ok(()))
                }
                other => other,
            };
        }
        loop {
            if this.taken < this.ready.len() {
                // At most 8 KiB at a time, so that hyper sees a long head grow past its
                // limit and answers 431 whatever its buffer's spare capacity.
                let n = buf.remaining().min(this.ready.len() - this.taken).min(HAND_ON);
                buf.put_slice(&this.ready[this.taken..this.taken + n]);
                this.taken += n;
                if this.taken == this.ready.len() {
                    this.ready.clear();
                    this.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            this.track_deadline();
            // Not zeroed: a callgrind profile showed zeroing 16 KiB on every poll costing half
            // of all the instructions of a small GET.
            let mut chunk = [const { MaybeUninit::<u8>::uninit() }; 16 * 1024];
            let mut read = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    this.scanner.finish(&mut this.ready);
                    if this.ready.is_empty() {
                        return Poll::Ready(Ok(())); // end of stream
                    }
                }
                Poll::Ready(Ok(())) => this.scanner.feed(read.filled(), &mut this.ready),
                Poll::Pending => {
                    if let Some(deadline) = this.deadline.as_mut()
                        && deadline.as_mut().poll(cx).is_ready()
                    {
                        let error =
                            io::Error::new(io::ErrorKind::TimedOut, "request head too slow");
                        return Poll::Ready(Err(error));
                    }
                    return Poll::Pending;
                }
                other => return other,
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at every position; returns the output of each split.
    fn scan_all_splits(input: &[u8]) -> Vec<Vec<u8>> {
        (0..=input.len())
            .map(|split| {
                let mut scanner = Scanner::default();
                let mut out = Vec::new();
                let (a, b) = input.split_at(split);
                scanner.feed(a, &mut out);
                scanner.feed(b, &mut out);
                scanner.finish(&mut out);
                out
            })
            .collect()
    }

    #[test]
    fn well_formed_traffic_passes_unchanged() {
        let input: &[u8] = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n\
            PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\na\nb\rc\
            PUT /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
            3;ext=1\r\na\nb\r\n0\r\nX-T: 1\r\n\r\n\
            PUT /z HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
            GET /z HTTP/1.1\r\nHost: a\r\n\r\n";
        for output in scan_all_splits(input) {
            assert_eq!(output, input);
        }
    }

    #[test]
    fn faulty_heads_are_poisoned() {
        let cases: [&[u8]; 8] = [
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
            b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\n\n",
            b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
            b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nzGET / HTTP/1.1\nHost: a\r\n\r\n",
            b"PUT /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\r\n",
        ];
        for input in cases {
            for (split, output) in scan_all_splits(input).into_iter().enumerate() {
                assert_eq!(output.len(), input.len(), "never adds or removes bytes");
                assert!(
                    output.contains(&0),
                    "{:?} split at {split}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn skipping_bodies_gives_the_same_bytes() {
        let input: &[u8] = b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\na\nb\rc\
            GET /z HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n";
        for split in 0..=input.len() {
            // Feed heads, skip bodies, as Guard::poll_read does.
            let mut scanner = Scanner::default();
            let mut out = Vec::new();
            for part in [&input[..split], &input[split..]] {
                let mut rest = part;
                while !rest.is_empty() {
                    let body = if scanner.in_body() { scanner.skip(rest) } else { 0 };
                    out.extend_from_slice(&rest[..body]);
                    rest = &rest[body..];
                    if !rest.is_empty() && !scanner.in_body() {
                        let head_end = rest.len();
                        scanner.feed(&rest[..head_end], &mut out);
                        rest = &rest[head_end..];
                    }
                }
            }
            scanner.finish(&mut out);
            assert_eq!(out.len(), input.len(), "split at {split}");
            assert!(
                out.contains(&0),
                "the bare LF of the second head is still caught, split {split}"
            );
            assert_eq!(&out[..50], &input[..50], "split {split}");
        }
    }

    #[test]
    fn http2_passes_through() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\n\x04";
        for output in scan_all_splits(preface) {
            assert_eq!(&output[..], &preface[..]);
        }
    }
}
