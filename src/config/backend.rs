//! Where the bytes and the state live: `--store file:ROOT | s3://BUCKET/PREFIX` and
//! `--state DIR | postgres://...`.

/// A bucket and key prefix: `s3://BUCKET/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketAt {
    /// The bucket's name.
    pub bucket: String,
    /// The key prefix (no leading or trailing `/`; may be empty).
    pub prefix: String,
}

impl BucketAt {
    /// Parses `s3://BUCKET/PREFIX`; `None` if `text` is not an `s3://` address.
    pub fn parse(text: &str) -> Option<Result<BucketAt, String>> {
        let rest = text.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/').to_owned();
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
        if bucket.len() < 3 || !bucket.chars().all(valid) {
            return Some(Err(format!("`{bucket}` is not an S3 bucket name")));
        }
        if !prefix.is_empty() && prefix.split('/').any(str::is_empty) {
            return Some(Err(format!("the prefix `{prefix}` has an empty segment")));
        }
        Some(Ok(BucketAt { bucket: bucket.to_owned(), prefix }))
    }
}

impl std::fmt::Display for BucketAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// True for a PostgreSQL connection URL.
pub fn is_database_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

/// The URL with its password, if any, replaced: fit for logs and `larder check`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{scheme}://{name}:<redacted>@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_addresses() {
        let at = BucketAt::parse("s3://larder-data/site/a").unwrap().unwrap();
        assert_eq!((at.bucket.as_str(), at.prefix.as_str()), ("larder-data", "site/a"));
        assert_eq!(BucketAt::parse("s3://larder").unwrap().unwrap().prefix, "");
        assert!(BucketAt::parse("s3://A_B/x").unwrap().is_err());
        assert!(BucketAt::parse("s3://bucket/a//b").unwrap().is_err());
        assert!(BucketAt::parse("file:/srv").is_none());
    }

    #[test]
    fn passwords_never_shown() {
        let redacted = redact_url("postgres://larder:s3cret@db:5432/larder?sslmode=disable");
        assert_eq!(redacted, "postgres://larder:<redacted>@db:5432/larder?sslmode=disable");
        assert_eq!(redact_url("postgres://larder@db/x"), "postgres://larder@db/x");
        assert_eq!(redact_url("postgres://db/x"), "postgres://db/x");
    }
}
