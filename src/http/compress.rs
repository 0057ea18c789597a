//! Content codings (RFC 9110 §8.4): zstd, br or gzip for compressible answers when the
//! client accepts one, compressed as they stream (nothing is buffered whole), each coding with
//! its own entity tag. Range requests are answered from the identity coding.

use async_compression::Level;
use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder};
use http::HeaderValue;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::store::ByteStream;

/// Answers smaller than this are sent as they are: the coding's framing would eat the gain.
pub const MIN_SIZE: u64 = 256;

/// A content coding larder sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// Zstandard (RFC 8878).
    Zstd,
    /// Brotli (RFC 7932).
    Br,
    /// gzip.
    Gzip,
}

impl Coding {
    /// Its name in `Content-Encoding`.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }

    /// The entity tag of this coding of a representation whose tag is `opaque`.
    pub fn tag(self, opaque: &str) -> String {
        format!("{opaque}-{}", self.name())
    }
}

/// The coding to send for an `Accept-Encoding` field: the highest q-value, zstd before br
/// before gzip at equal ones; none without the field, or when only identity is acceptable.
pub fn choose(accept: Option<&HeaderValue>) -> Option<Coding> {
    let accept = accept?.to_str().ok()?;
    let mut best: Option<(f32, Coding)> = None;
    let mut star = None;
    let mut named = Vec::new();
    for (name, q) in super::listing::weighted(accept) {
        let coding = match name.as_str() {
            "zstd" => Coding::Zstd,
            "br" => Coding::Br,
            "gzip" | "x-gzip" => Coding::Gzip,
            "*" => {
                star = Some(q);
                continue;
            }
            _ => continue,
        };
        named.push(coding);
        consider(&mut best, q, coding);
    }
    if let Some(q) = star {
        for coding in [Coding::Zstd, Coding::Br, Coding::Gzip] {
            if !named.contains(&coding) {
                consider(&mut best, q, coding);
            }
        }
    }
    best.map(|(_, coding)| coding)
}

fn consider(best: &mut Option<(f32, Coding)>, q: f32, coding: Coding) {
    let rank = |c: Coding| match c {
        Coding::Zstd => 0,
        Coding::Br => 1,
        Coding::Gzip => 2,
    };
    if q <= 0.0 {
        return;
    }
    match best {
        Some((bq, bc)) if *bq > q || (*bq == q && rank(*bc) <= rank(coding)) => {}
        _ => *best = Some((q, coding)),
    }
}

/// Whether a type is worth compressing: text, JSON, JavaScript, XML, SVG.
pub fn compressible(content_type: Option<&str>) -> bool {
    let Some(essence) = content_type.and_then(|t| t.split(';').next()) else { return false };
    let essence = essence.trim().to_ascii_lowercase();
    crate::store::text::is_textual(&essence)
        || matches!(
            essence.as_str(),
            "application/javascript" | "image/svg+xml" | "application/wasm"
        )
}

/// `bytes` in `coding`, compressed as they stream. Levels are the ones servers use for
/// answers made on the fly (zstd 3, brotli 5, gzip 6): brotli's default (11) is for files
/// compressed once.
pub fn encode(bytes: ByteStream, coding: Coding) -> ByteStream {
    let reader = StreamReader::new(bytes);
    match coding {
        Coding::Zstd => {
            Box::pin(ReaderStream::new(ZstdEncoder::with_quality(reader, Level::Precise(3))))
        }
        Coding::Br => {
            Box::pin(ReaderStream::new(BrotliEncoder::with_quality(reader, Level::Precise(5))))
        }
        Coding::Gzip => {
            Box::pin(ReaderStream::new(GzipEncoder::with_quality(reader, Level::Precise(6))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(field: &str) -> Option<Coding> {
        choose(Some(&HeaderValue::from_str(field).unwrap()))
    }

    #[test]
    fn negotiation() {
        assert_eq!(choose(None), None);
        assert_eq!(pick("gzip, deflate, br, zstd"), Some(Coding::Zstd));
        assert_eq!(pick("gzip, deflate, br"), Some(Coding::Br));
        assert_eq!(pick("gzip"), Some(Coding::Gzip));
        assert_eq!(pick("br;q=0.5, gzip"), Some(Coding::Gzip));
        assert_eq!(pick("identity"), None);
        assert_eq!(pick("*"), Some(Coding::Zstd));
        assert_eq!(pick("*, zstd;q=0"), Some(Coding::Br));
        assert_eq!(pick("gzip;q=0"), None);
        assert!(
            compressible(Some("text/plain; charset=utf-8")) && compressible(Some("image/svg+xml"))
        );
        assert!(!compressible(Some("image/png")) && !compressible(None));
    }
}
