//! WebDAV write locks (RFC 4918 §6, §9.10, §9.11) and the `If` header (§10.4).
//!
//! A lock is kept by the node that granted it, in memory, until it expires or is released:
//! a restart releases every lock, as clients are told they may be (§6.6). Each lock belongs
//! to the principal that took it: a write under it needs its token *and* that principal.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Longest lock granted; `Timeout: Infinite` gets this.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// A lock's life when the client asks for none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Locks one node keeps at most: past it a LOCK is refused (503), never an old lock dropped.
const MAX_LOCKS: usize = 100_000;

/// One granted lock.
#[derive(Debug, Clone)]
pub struct Lock {
    /// `urn:uuid:…`.
    pub token: String,
    /// The locked path's key (`/a.txt`, `/docs/`).
    pub root: String,
    /// `Depth: infinity` on a collection.
    pub infinite: bool,
    /// Exclusive, else shared.
    pub exclusive: bool,
    /// The client's `owner` element, as XML.
    pub owner: Option<String>,
    /// The account that took it (`None`: anonymous).
    pub holder: Option<Arc<str>>,
    /// Seconds granted.
    pub timeout: Duration,
    /// When it lapses.
    pub expires: Instant,
}

impl Lock {
    /// Whether this lock covers the path `key`.
    pub fn covers(&self, key: &str) -> bool {
        self.root == key
            || (self.infinite && self.root.ends_with('/') && key.starts_with(&self.root))
    }
}

/// Why a lock was not granted.
#[derive(Debug)]
pub enum Refused {
    /// Another lock conflicts: its root.
    Conflict(String),
    /// The table is full.
    Full,
}

/// The locks of this node.
#[derive(Default)]
pub struct Locks {
    table: Mutex<Vec<Lock>>,
}

impl Locks {
    fn live(&self) -> MutexGuard<'_, Vec<Lock>> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        table.retain(|l| l.expires > now);
        table
    }

    /// True if any lock is in force.
    pub fn any(&self) -> bool {
        !self.live().is_empty()
    }

    /// The locks that cover `key`, or that lie beneath it when `beneath` (a collection that
    /// a DELETE or MOVE takes whole).
    pub fn affecting(&self, key: &str, beneath: bool) -> Vec<Lock> {
        self.live()
            .iter()
            .filter(|l| l.covers(key) || (beneath && key.ends_with('/') && l.root.starts_with(key)))
            .cloned()
            .collect()
    }

    /// Grants `lock` unless one in force conflicts with it (an exclusive one either way).
    pub fn take(&self, lock: Lock) -> Result<Lock, Refused> {
        let mut table = self.live();
        let clash = table.iter().find(|l| {
            let overlaps = l.covers(&lock.root) || lock.covers(&l.root);
            overlaps && (l.exclusive || lock.exclusive)
        });
        if let Some(clash) = clash {
            return Err(Refused::Conflict(clash.root.clone()));
        }
        if table.len() >= MAX_LOCKS {
            return Err(Refused::Full);
        }
        table.push(lock.clone());
        Ok(lock)
    }

    /// Gives the lock `token`, covering `key` and held by `holder`, a new timeout.
    pub fn refresh(
        &self,
        token: &str,
        key: &str,
        holder: Option<&str>,
        timeout: Duration,
    ) -> Option<Lock> {
        let mut table = self.live();
        let lock = table
            .iter_mut()
            .find(|l| l.token == token && l.covers(key) && l.holder.as_deref() == holder)?;
        lock.timeout = timeout;
        lock.expires = Instant::now() + timeout;
        Some(lock.clone())
    }

    /// Releases the lock `token` covering `key`, if `holder` holds it.
    pub fn release(&self, token: &str, key: &str, holder: Option<&str>) -> bool {
        let mut table = self.live();
        let before = table.len();
        table.retain(|l| !(l.token == token && l.covers(key) && l.holder.as_deref() == holder));
        table.len() != before
    }

    /// Forgets every lock at or beneath `key` (it was deleted or moved away).
    pub fn forget(&self, key: &str) {
        let mut table = self.live();
        match key.ends_with('/') {
            true => table.retain(|l| !l.root.starts_with(key)),
            false => table.retain(|l| l.root != key),
        }
    }
}

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

    #[test]
    fn locks_conflict_and_cover() {
        let locks = Locks::default();
        let lock = |root: &str, exclusive, infinite| Lock {
            token: new_token(),
            root: root.into(),
            infinite,
            exclusive,
            owner: None,
            holder: None,
            timeout: DEFAULT_TIMEOUT,
            expires: Instant::now() + DEFAULT_TIMEOUT,
        };
        locks.take(lock("/d/", false, true)).unwrap();
        locks.take(lock("/d/", false, true)).unwrap();
        assert!(locks.take(lock("/d/a", true, false)).is_err(), "under a shared infinite lock");
        locks.take(lock("/e", true, false)).unwrap();
        assert!(locks.take(lock("/e", false, false)).is_err());
        assert_eq!(locks.affecting("/d/x/y", false).len(), 2);
        assert_eq!(locks.affecting("/", true).len(), 3);
        locks.forget("/d/");
        assert_eq!(locks.affecting("/", true).len(), 1);
        assert!(new_token().starts_with("urn:uuid:"));
        assert_eq!(new_token().len(), 45);
    }
}
