//! Credentials → [`Principal`]. Basic credentials are verified with argon2id in constant time;
//! an unknown account pays for a verification against a dummy hash, so both cost the same.
//! Verified credentials are remembered for a while, keyed by a keyed hash of the header, so
//! repeated requests do not pay the argon2 cost again.
//!
//! Invariant: a failed or malformed credential never yields a principal; it is a [`Failure`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::access::Principal;
use crate::config::Settings;

/// How long a verified credential is trusted without verifying it again.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// The most credentials remembered at once; the cache is emptied when full.
const CACHE_MAX: usize = 10_000;

/// Why credentials did not yield a principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Basic credentials that are malformed, name no account or have the wrong password,
    /// or a scheme larder does not know.
    BadCredentials,
    /// A bearer token that is unknown, expired, revoked or malformed.
    InvalidToken,
}

/// Hashes a password into an argon2id PHC string with the default parameters.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

struct Known {
    password: String,
    admin: bool,
}

/// Verifies credentials against the configured accounts.
pub struct Authenticator {
    accounts: HashMap<String, Known>,
    /// Verified against when the account is unknown, so that costs what a known one costs.
    dummy: String,
    /// Key for hashing Authorization values into cache keys; random per process.
    key: [u8; 32],
    cache: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
}

impl Authenticator {
    /// Builds the verifier for the settings' accounts.
    pub fn new(settings: &Settings) -> Self {
        let accounts = settings
            .accounts
            .values()
            .map(|a| {
                (
                    a.name.clone(),
                    Known {
                        password: a.password.clone(),
                        admin: a.admin,
                    },
                )
            })
            .collect();
        let dummy = hash_password("larder dummy password").unwrap_or_default();
        Authenticator {
            accounts,
            dummy,
            key: rand::random(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The principal for a request's `Authorization` value (`None`: anonymous).
    pub async fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, Failure> {
        let Some(value) = authorization else {
            return Ok(Principal::anonymous());
        };
        let (scheme, rest) = split_scheme(value);
        if scheme.eq_ignore_ascii_case(b"bearer") {
            return Err(Failure::InvalidToken);
        }
        if !scheme.eq_ignore_ascii_case(b"basic") {
            return Err(Failure::BadCredentials);
        }
        let cache_key = self.cache_key(value);
        if let Some(principal) = self.cached(&cache_key) {
            return Ok(principal);
        }
        let (name, password) = parse_basic(rest).ok_or(Failure::BadCredentials)?;
        let (stored, admin, known) = match self.accounts.get(&name) {
            Some(k) => (k.password.clone(), k.admin, true),
            None => (self.dummy.clone(), false, false),
        };
        let verified = tokio::task::spawn_blocking(move || verify(&stored, &password))
            .await
            .unwrap_or(false);
        if !(verified && known) {
            return Err(Failure::BadCredentials);
        }
        let principal = Principal::account(&name, admin);
        self.remember(cache_key, principal.clone());
        Ok(principal)
    }

    fn cache_key(&self, value: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.key);
        hasher.update(value);
        hasher.finalize().into()
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Principal> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(p, _)| p.clone())
    }

    fn remember(&self, key: [u8; 32], principal: Principal) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (principal, Instant::now()));
    }
}

fn split_scheme(value: &[u8]) -> (&[u8], &[u8]) {
    match value.iter().position(|&b| b == b' ') {
        Some(i) => (&value[..i], trim_spaces(&value[i + 1..])),
        None => (value, &[]),
    }
}

fn trim_spaces(mut bytes: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' '] = bytes {
        bytes = rest;
    }
    bytes
}

/// Decodes `base64(name ":" password)` (RFC 7617); `None` for anything malformed.
fn parse_basic(encoded: &[u8]) -> Option<(String, String)> {
    let decoded = STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    if name.is_empty() || text.chars().any(|c| c.is_control()) {
        return None;
    }
    Some((name.to_owned(), password.to_owned()))
}

fn verify(stored: &str, password: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_parsing() {
        let enc = |s: &str| STANDARD.encode(s);
        assert_eq!(
            parse_basic(enc("a:b:c").as_bytes()),
            Some(("a".into(), "b:c".into()))
        );
        assert_eq!(parse_basic(enc("nocolon").as_bytes()), None);
        assert_eq!(parse_basic(enc(":pw").as_bytes()), None);
        assert_eq!(parse_basic(enc("a:b\u{1}").as_bytes()), None);
        assert_eq!(parse_basic(b"!!!not base64"), None);
    }

    #[tokio::test]
    async fn verifies_and_caches() {
        let hash = hash_password("secret").unwrap();
        let settings = crate::config::Settings::load(
            crate::config::Overrides {
                root: Some("/tmp".into()),
                auth: vec![format!("alice:{hash}@/:rw")],
                ..Default::default()
            },
            &crate::config::env_none,
        )
        .unwrap();
        let auth = Authenticator::new(&settings);
        let header = |s: &str| format!("Basic {}", STANDARD.encode(s));
        let ok = auth
            .authenticate(Some(header("alice:secret").as_bytes()))
            .await;
        assert_eq!(ok, Ok(Principal::account("alice", false)));
        let again = auth
            .authenticate(Some(header("alice:secret").as_bytes()))
            .await;
        assert_eq!(again, Ok(Principal::account("alice", false)));
        for bad in ["alice:wrong", "nobody:secret"] {
            let got = auth.authenticate(Some(header(bad).as_bytes())).await;
            assert_eq!(got, Err(Failure::BadCredentials), "{bad}");
        }
        assert_eq!(
            auth.authenticate(Some(b"Bearer x")).await,
            Err(Failure::InvalidToken)
        );
        assert_eq!(
            auth.authenticate(Some(b"Digest x")).await,
            Err(Failure::BadCredentials)
        );
        assert_eq!(auth.authenticate(None).await, Ok(Principal::anonymous()));
    }
}
