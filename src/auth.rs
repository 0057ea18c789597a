//! Credentials → [`Identity`]. Basic credentials are verified with argon2id in constant time;
//! an unknown account pays for a verification against a dummy hash, so both cost the same.
//! Verified Basic credentials are remembered for a while, keyed by a keyed hash of the
//! header, so repeated requests do not pay the argon2 cost again. Bearer tokens are looked up
//! by their SHA-256 in the state database. Repeated failures are throttled ([`Throttle`]).
//!
//! Looked-up tokens are kept in memory; a revocation through this process drops them at once
//! ([`Authenticator::forget_token`]). Expiry is checked on every request.
//!
//! Invariant: a failed or malformed credential never yields a principal; it is a [`Failure`].

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::access::{Limit, Principal};
use crate::config::Settings;
use crate::password::verify;
use crate::path::ResourcePath;
use crate::state::{State, TokenRecord};

mod throttle;

pub use throttle::Throttle;

/// How long a verified credential is trusted without verifying it again.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// How long a looked-up token is trusted: revocations made by another process (or node)
/// take at most this long; those made through this process take effect at once.
const TOKEN_TTL: Duration = Duration::from_secs(5);
/// The most credentials remembered at once; the cache is emptied when full.
const CACHE_MAX: usize = 10_000;
/// Every token starts with this, so a leaked one is easy to recognise (and to scan for).
pub const TOKEN_PREFIX: &str = "lt_";
/// The cookie in which the web interface keeps its token, for reads (links, previews).
pub const TOKEN_COOKIE: &str = "larder-token";

/// True if these `Cookie` fields carry [`TOKEN_COOKIE`]: the request may be signed in by it.
pub fn has_token_cookie<'a>(mut fields: impl Iterator<Item = &'a http::HeaderValue>) -> bool {
    fields.any(|field| {
        field.to_str().is_ok_and(|text| {
            cookie::Cookie::split_parse(text).flatten().any(|c| c.name() == TOKEN_COOKIE)
        })
    })
}

/// Why credentials did not yield a principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Basic credentials that are malformed, name no account or have the wrong password,
    /// or a scheme larder does not know.
    BadCredentials,
    /// A bearer token that is unknown, expired, revoked or malformed.
    InvalidToken,
    /// Too many failures lately from this address or for this account: retry after this.
    Throttled(Duration),
    /// The credentials could not be checked: the database is unavailable. Not a failure of
    /// the client's: never a 401, never counted against the address or the account.
    Unavailable,
}

/// Who signed in, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The principal the rules see.
    pub principal: Principal,
    /// The token used, for bearer sign-ins.
    pub token: Option<Arc<TokenRecord>>,
}

impl Identity {
    /// Nobody.
    pub fn anonymous() -> Self {
        Identity { principal: Principal::anonymous(), token: None }
    }
}

pub use crate::password::hash_password;

/// Seconds since the epoch.
pub fn now_seconds() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// What a new token may do.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// The path prefix it is limited to (`None`: everywhere).
    pub scope: Option<ResourcePath>,
    /// Reads only.
    pub read_only: bool,
    /// Lifetime (`None`: no expiry).
    pub expires_in: Option<Duration>,
}

/// Makes a token for `account`: returns the record to store and the secret, shown once.
/// The longest a token may live: a hundred years. Longer is refused (400), so that an
/// expiry is always a date that can be written down.
pub const MAX_LIFETIME: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);

/// A new token for `account` (its lifetime at most [`MAX_LIFETIME`]), and its secret.
pub fn new_token(account: &str, request: &TokenRequest) -> (TokenRecord, String) {
    let secret = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()));
    let created = now_seconds();
    let scope = request.scope.as_ref().map(|s| s.with_collection(false).as_key());
    let record = TokenRecord {
        id: format!("{:016x}", rand::random::<u64>()),
        account: account.to_owned(),
        hash: Sha256::digest(secret.as_bytes()).to_vec(),
        scope: scope.filter(|s| !s.is_empty()).unwrap_or_else(|| "/".to_owned()),
        read_only: request.read_only,
        created,
        expires: request.expires_in.map(|d| {
            created.saturating_add(i64::try_from(d.min(MAX_LIFETIME).as_secs()).unwrap_or(0))
        }),
    };
    (record, secret)
}

/// The limit a token record puts on its account.
pub fn limit_of(token: &TokenRecord) -> Limit {
    let scope = token.scope.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    Limit { scope, read_only: token.read_only }
}

struct Known {
    password: String,
    admin: bool,
    /// Credits its plan grants at the first sign-in.
    credits: u64,
}

/// A token's record, shared by every request that signs in with it, the principal it signs
/// in as (but for `admin`, looked up on each request), and when it was read.
struct LookedUp {
    record: Arc<TokenRecord>,
    principal: Principal,
    at: Instant,
}

/// Hashes a SHA-256 digest by its first 8 bytes: it is random already, and nobody can aim
/// at a bucket: the token cache stores only the digests of tokens this server issued, the
/// credential caches digests keyed with a per-process secret (SipHash cost as much as the
/// rest of a cached lookup).
#[derive(Default)]
struct Digested(u64);

impl Hasher for Digested {
    fn finish(&self) -> u64 {
        self.0
    }

    /// The digest's length, written before it: always 32.
    fn write_usize(&mut self, _: usize) {}

    fn write(&mut self, bytes: &[u8]) {
        if let Some(first) = bytes.first_chunk::<8>() {
            self.0 = u64::from_ne_bytes(*first);
        }
    }
}

/// A map keyed by SHA-256 digests.
type ByDigest<V> = HashMap<[u8; 32], V, BuildHasherDefault<Digested>>;

/// Verifies credentials against the configured accounts and the stored tokens.
pub struct Authenticator {
    /// Swapped whole by [`Authenticator::reload`].
    accounts: ArcSwap<HashMap<String, Known>>,
    /// Bumped by every reload: a verification begun before one is not remembered.
    generation: AtomicU64,
    /// Verified against when the account is unknown, so that costs what a known one costs.
    dummy: String,
    /// Key for hashing Authorization values into cache keys; random per process.
    key: [u8; 32],
    cache: Mutex<ByDigest<(Principal, Instant)>>,
    /// Verifications in progress, by cache key.
    pending: Mutex<ByDigest<Arc<tokio::sync::OnceCell<bool>>>>,
    /// Bounds concurrent argon2 verifications (memory: 19 MiB each).
    verifying: tokio::sync::Semaphore,
    /// Tokens looked up, by SHA-256; revocation through [`Authenticator::forget_token`].
    tokens: Mutex<ByDigest<LookedUp>>,
    /// How long a looked-up token is trusted: [`TOKEN_TTL`], or zero when the state is
    /// shared, since another node may revoke it (each Bearer request then asks PostgreSQL).
    token_ttl: Duration,
    state: Arc<State>,
    throttle: Throttle,
    /// Accounts whose first-sign-in grant is known to be recorded.
    granted: Mutex<HashSet<String>>,
}

impl Authenticator {
    /// Builds the verifier for the settings' accounts and the tokens in `state`.
    pub fn new(settings: &Settings, state: Arc<State>) -> Self {
        let dummy = hash_password("larder dummy password").unwrap_or_default();
        Authenticator {
            accounts: ArcSwap::from_pointee(known_accounts(settings)),
            generation: AtomicU64::new(0),
            dummy,
            key: rand::random(),
            cache: Mutex::new(HashMap::default()),
            pending: Mutex::new(HashMap::default()),
            verifying: tokio::sync::Semaphore::new(
                2 * std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            ),
            tokens: Mutex::new(HashMap::default()),
            token_ttl: if state.postgres().is_some() { Duration::ZERO } else { TOKEN_TTL },
            state,
            throttle: Throttle::new(settings.sign_in_limit),
            granted: Mutex::new(HashSet::new()),
        }
    }

    /// Puts the settings' accounts in force: credentials verified before are verified again,
    /// so a removed account or a changed password takes effect at the next request.
    pub fn reload(&self, settings: &Settings) {
        self.accounts.store(Arc::new(known_accounts(settings)));
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.tokens.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Grants the account's plan credits if this is its first sign-in ever (recorded in the
    /// state database, so once across restarts).
    async fn first_sign_in(&self, account: &str) {
        if self.granted.lock().unwrap_or_else(|e| e.into_inner()).contains(account) {
            return;
        }
        let credits = self.accounts.load().get(account).map_or(0, |k| k.credits);
        let (state, name) = (self.state.clone(), account.to_owned());
        match tokio::task::spawn_blocking(move || state.grant_once(&name, credits)).await {
            Ok(Ok(granted)) => {
                if granted {
                    tracing::info!(account, credits, "first sign-in: plan credits granted");
                }
                self.granted.lock().unwrap_or_else(|e| e.into_inner()).insert(account.to_owned());
            }
            Ok(Err(e)) => tracing::error!(account, "cannot record the first sign-in: {e}"),
            Err(e) => tracing::error!(account, "cannot record the first sign-in: {e}"),
        }
    }

    /// The identity the web interface's cookie ([`TOKEN_COOKIE`]) gives a request without
    /// `Authorization`: its token's, or anonymous when there is none or its token is no longer
    /// valid (a stale cookie must not lock anyone out of public pages; the page forgets it). The
    /// caller takes cookies for safe methods only, so a cookie never authorizes a change.
    pub async fn from_cookies<'a>(
        &self,
        fields: impl Iterator<Item = &'a http::HeaderValue>,
    ) -> Identity {
        let token = fields
            .filter_map(|field| field.to_str().ok())
            .flat_map(cookie::Cookie::split_parse)
            .filter_map(Result::ok)
            .find(|cookie| cookie.name() == TOKEN_COOKIE)
            .map(|cookie| cookie.value().to_owned());
        match token {
            Some(token) => {
                self.bearer(token.as_bytes()).await.unwrap_or_else(|_| Identity::anonymous())
            }
            None => Identity::anonymous(),
        }
    }

    /// The identity for a request's `Authorization` value (`None`: anonymous) from `peer`.
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        peer: IpAddr,
    ) -> Result<Identity, Failure> {
        let Some(value) = authorization else { return Ok(Identity::anonymous()) };
        let (scheme, rest) = split_scheme(value);
        if scheme.eq_ignore_ascii_case(b"bearer") {
            // A valid token is never refused for others' failures: tokens are 256 random
            // bits, so answering a throttled address's right one is no oracle worth having.
            let found = self.bearer(rest).await;
            if found.as_ref().is_err_and(|f| *f != Failure::Unavailable) {
                self.throttle.check(peer, None).map_err(Failure::Throttled)?;
                self.throttle.failed(peer, None);
            }
            return found;
        }
        if !scheme.eq_ignore_ascii_case(b"basic") {
            self.throttle.failed(peer, None);
            return Err(Failure::BadCredentials);
        }
        // A remembered credential: still subject to the throttle, so a guesser who is blocked
        // cannot tell a right guess from a wrong one.
        let cache_key = self.cache_key(value);
        if let Some(principal) = self.cached(&cache_key) {
            let name = principal.account.as_deref().unwrap_or_default();
            self.throttle.check(peer, Some(name)).map_err(Failure::Throttled)?;
            self.throttle.succeeded(peer, name);
            return Ok(Identity { principal, token: None });
        }
        let Some((name, password)) = parse_basic(rest) else {
            self.throttle.failed(peer, None);
            return Err(Failure::BadCredentials);
        };
        self.throttle.check(peer, Some(&name)).map_err(Failure::Throttled)?;
        let generation = self.generation.load(Ordering::SeqCst);
        let accounts = self.accounts.load_full();
        // One verification per credential at a time: the others wait for its result.
        let flight = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.entry(cache_key).or_default().clone()
        };
        let verified = flight
            .get_or_init(|| async {
                let (stored, known) = match accounts.get(&name) {
                    Some(k) => (k.password.clone(), true),
                    None => (self.dummy.clone(), false),
                };
                // argon2id takes 19 MiB a verification: bound how many run at once.
                let Ok(_slot) = self.verifying.acquire().await else { return false };
                let matches = tokio::task::spawn_blocking(move || verify(&stored, &password))
                    .await
                    .unwrap_or(false);
                matches && known
            })
            .await;
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&cache_key);
        let verified = *verified;
        if !verified {
            self.throttle.failed(peer, Some(&name));
            return Err(Failure::BadCredentials);
        }
        self.throttle.succeeded(peer, &name);
        self.first_sign_in(&name).await;
        let admin = accounts.get(&name).is_some_and(|k| k.admin);
        let principal = Principal::account(&name, admin);
        self.remember(cache_key, principal.clone(), generation);
        Ok(Identity { principal, token: None })
    }

    /// Forgets a revoked token at once.
    pub fn forget_token(&self, id: &str) {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, found| found.record.id != id);
    }

    async fn bearer(&self, token: &[u8]) -> Result<Identity, Failure> {
        let valid_chars = |b: &u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(b);
        if !token.starts_with(TOKEN_PREFIX.as_bytes()) || !token.iter().all(valid_chars) {
            return Err(Failure::InvalidToken);
        }
        let hash: [u8; 32] = Sha256::digest(token).into();
        let cached = {
            let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
            tokens
                .get(&hash)
                .filter(|found| found.at.elapsed() < self.token_ttl)
                .map(|found| (found.record.clone(), found.principal.clone()))
        };
        let (record, principal) = match cached {
            Some(found) => found,
            None => {
                let (state, key) = (self.state.clone(), hash.to_vec());
                // A lookup that fails judges nothing: the token may well be valid.
                let lookup = tokio::task::spawn_blocking(move || state.token_by_hash(&key));
                let record = tokio::time::timeout(crate::state::dependency_timeout(), lookup)
                    .await
                    .map_err(|_| Failure::Unavailable)?
                    .map_err(|_| Failure::Unavailable)?
                    .map_err(|e| {
                        tracing::error!("token lookup failed: {e}");
                        Failure::Unavailable
                    })?
                    .ok_or(Failure::InvalidToken)?;
                let record = Arc::new(record);
                let principal =
                    Principal::account(&record.account, false).with_limit(limit_of(&record));
                let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
                if tokens.len() >= CACHE_MAX {
                    tokens.clear();
                }
                let found = LookedUp {
                    record: record.clone(),
                    principal: principal.clone(),
                    at: Instant::now(),
                };
                tokens.insert(hash, found);
                (record, principal)
            }
        };
        if record.expires.is_some_and(|at| at <= now_seconds()) {
            return Err(Failure::InvalidToken);
        }
        // A token outlives nothing: an account removed from the configuration takes its
        // tokens with it.
        let admin = self.accounts.load().get(&record.account).ok_or(Failure::InvalidToken)?.admin;
        Ok(Identity { principal: Principal { admin, ..principal }, token: Some(record) })
    }

    fn cache_key(&self, value: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.key);
        hasher.update(value);
        hasher.finalize().into()
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Principal> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(key).filter(|(_, at)| at.elapsed() < CACHE_TTL).map(|(p, _)| p.clone())
    }

    fn remember(&self, key: [u8; 32], principal: Principal, generation: u64) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::SeqCst) != generation {
            return; // verified against accounts a reload has replaced
        }
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (principal, Instant::now()));
    }
}

/// The settings' accounts as the verifier needs them.
fn known_accounts(settings: &Settings) -> HashMap<String, Known> {
    settings
        .accounts
        .values()
        .map(|a| {
            let credits =
                a.plan.as_ref().and_then(|p| settings.plans.get(p)).map_or(0, |p| p.credits);
            (a.name.clone(), Known { password: a.password.clone(), admin: a.admin, credits })
        })
        .collect()
}

/// Splits an `Authorization` value into its scheme and the rest (trimmed).
pub fn split_scheme(value: &[u8]) -> (&[u8], &[u8]) {
    match value.iter().position(|&b| b == b' ') {
        Some(i) => (&value[..i], value[i + 1..].trim_ascii()),
        None => (value, &[]),
    }
}

/// Decodes `base64(name ":" password)` (RFC 7617); `None` for anything malformed.
pub fn parse_basic(encoded: &[u8]) -> Option<(String, String)> {
    let decoded = STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    if name.is_empty() || text.chars().any(|c| c.is_control()) {
        return None;
    }
    Some((name.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn basic_parsing() {
        let enc = |s: &str| STANDARD.encode(s);
        assert_eq!(parse_basic(enc("a:b:c").as_bytes()), Some(("a".into(), "b:c".into())));
        assert_eq!(parse_basic(enc("nocolon").as_bytes()), None);
        assert_eq!(parse_basic(enc(":pw").as_bytes()), None);
        assert_eq!(parse_basic(enc("a:b\u{1}").as_bytes()), None);
        assert_eq!(parse_basic(b"!!!not base64"), None);
    }

    fn authenticator(dir: &std::path::Path) -> (Authenticator, Arc<State>) {
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
        let state = Arc::new(State::open(dir).unwrap());
        (Authenticator::new(&settings, state.clone()), state)
    }

    #[tokio::test]
    async fn verifies_and_caches() {
        let dir = tempfile::tempdir().unwrap();
        let (auth, _) = authenticator(dir.path());
        let header = |s: &str| format!("Basic {}", STANDARD.encode(s));
        let alice = Principal::account("alice", false);
        for _ in 0..2 {
            let ok = auth.authenticate(Some(header("alice:secret").as_bytes()), PEER).await;
            assert_eq!(ok.map(|i| i.principal), Ok(alice.clone()));
        }
        for bad in ["alice:wrong", "nobody:secret"] {
            let got = auth.authenticate(Some(header(bad).as_bytes()), PEER).await;
            assert_eq!(got, Err(Failure::BadCredentials), "{bad}");
        }
        let bearer = auth.authenticate(Some(b"Bearer lt_unknown"), PEER).await;
        assert_eq!(bearer, Err(Failure::InvalidToken));
        let digest = auth.authenticate(Some(b"Digest x"), PEER).await;
        assert_eq!(digest, Err(Failure::BadCredentials));
        assert_eq!(auth.authenticate(None, PEER).await, Ok(Identity::anonymous()));
    }

    #[tokio::test]
    async fn tokens_sign_in_until_revoked_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let (auth, state) = authenticator(dir.path());
        let request = TokenRequest {
            scope: Some(ResourcePath::parse("/docs/").unwrap()),
            read_only: true,
            expires_in: None,
        };
        let (record, secret) = new_token("alice", &request);
        assert!(secret.starts_with(TOKEN_PREFIX));
        assert_ne!(record.hash, secret.as_bytes(), "only the hash is kept");
        state.insert_token(&record).unwrap();
        let header = format!("Bearer {secret}");
        let limit = Limit { scope: vec!["docs".into()], read_only: true };
        // Looked up, then from the cache.
        for _ in 0..2 {
            let identity = auth.authenticate(Some(header.as_bytes()), PEER).await.unwrap();
            let expected = Principal::account("alice", false).with_limit(limit.clone());
            assert_eq!(identity.principal, expected);
        }
        state.delete_token("alice", &record.id).unwrap();
        auth.forget_token(&record.id); // what DELETE /.larder/tokens/ID does
        let revoked = auth.authenticate(Some(header.as_bytes()), PEER).await;
        assert_eq!(revoked, Err(Failure::InvalidToken));

        let (mut old, secret) = new_token("alice", &TokenRequest::default());
        old.expires = Some(now_seconds() - 1);
        state.insert_token(&old).unwrap();
        let expired = auth.authenticate(Some(format!("Bearer {secret}").as_bytes()), PEER).await;
        assert_eq!(expired, Err(Failure::InvalidToken));
    }
}
