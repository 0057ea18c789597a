//! Sign-in throttling. Failures are counted per client address and per account in fixed
//! one-minute windows:
//!
//! - an address with `2 × limit` failures in its window gets 429 until the window ends;
//! - an account with `limit` failures in its window gets 429 until the window ends, but only
//!   from addresses that have not signed in to it successfully in the last day;
//! - bearer tokens are checked first and refused only when wrong (see
//!   `Authenticator::authenticate`): 256 random bits are not guessed.
//!
//! So a guesser is slowed to a few attempts a minute, even from an address the account signs
//! in from (the address limit still holds there: a password guessed at argon2's speed would
//! be a real risk, and every guess costs 19 MiB of memory), and cannot lock the real user out
//! of its account from that address; a user at a new address waits at most a minute. Behind
//! a reverse proxy the address is the client's (`trusted_proxies`), not the proxy's.
//! Memory is bounded: expired windows are dropped when the tables grow.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The length of a counting window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long a successful sign-in makes an address trusted for its account.
const TRUST: Duration = Duration::from_secs(24 * 3600);
/// Table size past which expired entries are dropped.
const PRUNE_AT: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

impl Window {
    fn live(&self, now: Instant) -> bool {
        now.duration_since(self.start) < WINDOW
    }

    fn retry_after(&self, now: Instant) -> Duration {
        let left = WINDOW.saturating_sub(now.duration_since(self.start));
        // Retry-After has whole seconds; never say 0.
        Duration::from_secs(left.as_secs().max(1) + u64::from(left.subsec_nanos() > 0))
    }
}

#[derive(Default)]
struct Tables {
    addresses: HashMap<IpAddr, Window>,
    accounts: HashMap<String, Window>,
    /// Addresses that signed in to an account, by account.
    trusted: HashMap<String, HashMap<IpAddr, Instant>>,
}

/// Counts failed sign-ins and says when to refuse.
pub struct Throttle {
    /// Failures per account per window; 0 turns throttling off.
    limit: u32,
    tables: Mutex<Tables>,
}

fn bump<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Window>, key: K, now: Instant) {
    let window = map.entry(key).or_insert(Window { start: now, failures: 0 });
    if !window.live(now) {
        *window = Window { start: now, failures: 0 };
    }
    window.failures = window.failures.saturating_add(1);
}

impl Throttle {
    /// A throttle allowing `limit` failures per account per minute (0: no throttling).
    pub fn new(limit: u32) -> Self {
        Throttle { limit, tables: Mutex::new(Tables::default()) }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(retry_after)` if a sign-in from `peer` (as `account`) must wait.
    pub fn check(&self, peer: IpAddr, account: Option<&str>) -> Result<(), Duration> {
        if self.limit == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let tables = self.tables();
        if let Some(window) = tables.addresses.get(&peer)
            && window.live(now)
            && window.failures >= self.limit.saturating_mul(2)
        {
            return Err(window.retry_after(now));
        }
        if let Some(account) = account
            && let Some(window) = tables.accounts.get(account)
            && window.live(now)
            && window.failures >= self.limit
        {
            let trusted = tables
                .trusted
                .get(account)
                .and_then(|addresses| addresses.get(&peer))
                .is_some_and(|at| now.duration_since(*at) < TRUST);
            if !trusted {
                return Err(window.retry_after(now));
            }
        }
        Ok(())
    }

    /// Records a failed sign-in.
    pub fn failed(&self, peer: IpAddr, account: Option<&str>) {
        if self.limit == 0 {
            return;
        }
        let now = Instant::now();
        let mut tables = self.tables();
        if tables.addresses.len() + tables.accounts.len() > PRUNE_AT {
            tables.addresses.retain(|_, w| w.live(now));
            tables.accounts.retain(|_, w| w.live(now));
        }
        bump(&mut tables.addresses, peer, now);
        if let Some(account) = account {
            bump(&mut tables.accounts, account.to_owned(), now);
        }
    }

    /// Records a successful sign-in: `peer` becomes trusted for `account`.
    pub fn succeeded(&self, peer: IpAddr, account: &str) {
        if self.limit == 0 {
            return;
        }
        let now = Instant::now();
        let mut tables = self.tables();
        // Most sign-ins are repeats: refresh at most once a minute, without allocating.
        if let Some(at) = tables.trusted.get_mut(account).and_then(|a| a.get_mut(&peer)) {
            if now.duration_since(*at) > WINDOW {
                *at = now;
            }
            return;
        }
        if tables.trusted.len() > PRUNE_AT {
            tables.trusted.retain(|_, addresses| {
                addresses.retain(|_, at| now.duration_since(*at) < TRUST);
                !addresses.is_empty()
            });
        }
        tables.trusted.entry(account.to_owned()).or_default().insert(peer, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[tokio::test(start_paused = true)]
    async fn accounts_and_addresses() {
        let throttle = Throttle::new(3);
        throttle.succeeded(ip(1), "alice"); // alice's usual address
        for _ in 0..3 {
            assert!(throttle.check(ip(9), Some("alice")).is_ok());
            throttle.failed(ip(9), Some("alice"));
        }
        // The guesser and any new address wait; alice's own address does not.
        let wait = throttle.check(ip(9), Some("alice")).unwrap_err();
        assert_eq!(wait, Duration::from_secs(60));
        assert!(throttle.check(ip(8), Some("alice")).is_err());
        assert!(throttle.check(ip(1), Some("alice")).is_ok());
        assert!(throttle.check(ip(9), Some("bob")).is_ok());
        // Address limit: 2 × 3 failures from one address, whatever the accounts.
        for name in ["b1", "b2", "b3"] {
            throttle.failed(ip(9), Some(name));
        }
        assert!(throttle.check(ip(9), Some("carol")).is_err());
        assert!(throttle.check(ip(7), Some("carol")).is_ok());
        // ... even for an account that signed in from there before: guesses from its own
        // address stay slow.
        throttle.succeeded(ip(9), "dave");
        assert!(throttle.check(ip(9), Some("dave")).is_err());
        // Windows end.
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(throttle.check(ip(9), None).unwrap_err(), Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(throttle.check(ip(9), Some("alice")).is_ok());
    }

    #[test]
    fn zero_turns_it_off() {
        let throttle = Throttle::new(0);
        for _ in 0..100 {
            throttle.failed(ip(9), Some("alice"));
        }
        assert!(throttle.check(ip(9), Some("alice")).is_ok());
    }
}
