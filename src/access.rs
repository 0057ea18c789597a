//! Access rules: who may do what where. Pure: no I/O, no clock, no HTTP types. Given a
//! principal, a path and an action, [`Rules::decide`] answers allow, unauthenticated,
//! forbidden or hidden; the HTTP layer turns that into 2xx, 401, 403 or 404.
//!
//! Invariants: the longest matching rule decides alone; a path no rule matches is open to
//! admins only; a hidden rule answers [`Decision::Hidden`] to anyone who may not read; an
//! `{account}` segment matches any segment, whether or not it names an account, so that the
//! answers for `/home/NAME` never tell which names are accounts.

use std::collections::HashMap;

/// What a request wants to do to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// GET, HEAD, OPTIONS, TRACE of a resource.
    Read,
    /// GET or HEAD of a collection's listing.
    List,
    /// Make a resource or collection that does not exist yet.
    Create,
    /// Replace an existing resource.
    Update,
    /// Remove a resource or collection.
    Delete,
}

/// The outcome of evaluating the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go on.
    Allow,
    /// Signing in could change the answer: 401.
    Unauthenticated,
    /// Known and not allowed: 403.
    Forbidden,
    /// Not allowed, and not even told the path exists: 404.
    Hidden,
    /// The account may, but the token it signed in with does not reach here (outside its
    /// scope, or a write with a read-only token): 403 with `insufficient_scope`.
    OutOfScope,
}

impl Action {
    /// True for create, update and delete.
    pub fn is_write(self) -> bool {
        matches!(self, Action::Create | Action::Update | Action::Delete)
    }
}

/// What a bearer token narrows its account's rights to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limit {
    /// Only paths at or beneath these segments (empty: everywhere).
    pub scope: Vec<String>,
    /// Only reads and listings.
    pub read_only: bool,
}

/// Who is asking: nobody, or a signed-in account, possibly through a limited token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principal {
    /// The account's name; `None` for anonymous clients. Shared: every request signed in
    /// with the same token or remembered credentials carries the same name.
    pub account: Option<std::sync::Arc<str>>,
    /// Admins may do everything, everywhere (within their token's limit).
    pub admin: bool,
    /// Set when the account signed in with a bearer token.
    pub limit: Option<Limit>,
}

impl Principal {
    /// An anonymous client.
    pub fn anonymous() -> Self {
        Principal::default()
    }

    /// A signed-in account.
    pub fn account(name: &str, admin: bool) -> Self {
        Principal { account: Some(name.into()), admin, limit: None }
    }

    /// The account's name as a string of its own, for what is stored under it (an owner, a
    /// purchase, an account's endpoints).
    pub fn account_owned(&self) -> Option<String> {
        self.account.as_deref().map(str::to_owned)
    }

    /// True when signed in with a read-only token: it changes nothing and spends nothing.
    pub fn read_only(&self) -> bool {
        self.limit.as_ref().is_some_and(|limit| limit.read_only)
    }

    /// True for an admin whose rights no token narrows to a path: only such a principal may
    /// use the admin endpoints, which reach every path (a read-only one only reads them).
    pub fn unscoped_admin(&self) -> bool {
        self.admin && self.limit.as_ref().is_none_or(|limit| limit.scope.is_empty())
    }

    /// The same account, signed in with a token limited to `limit`.
    pub fn with_limit(self, limit: Limit) -> Self {
        Principal { limit: Some(limit), ..self }
    }
}

/// A principal named in a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// `"*"`: anyone, anonymous clients included.
    Anyone,
    /// `"@authenticated"`: any signed-in account.
    Authenticated,
    /// `"{account}"`: the account named by the rule's `{account}` segment.
    PathAccount,
    /// An account name.
    Account(String),
}

impl Who {
    /// Parses a principal as written in the configuration.
    pub fn parse(text: &str) -> Result<Who, String> {
        match text {
            "*" => Ok(Who::Anyone),
            "@authenticated" => Ok(Who::Authenticated),
            "{account}" => Ok(Who::PathAccount),
            name if valid_account_name(name) => Ok(Who::Account(name.to_owned())),
            other => Err(format!(
                "`{other}` is not a principal: use \"*\", \"@authenticated\", \"{{account}}\" or an account name"
            )),
        }
    }

    fn admits(&self, principal: &Principal, bound: Option<&str>) -> bool {
        match (self, principal.account.as_deref()) {
            (Who::Anyone, _) => true,
            (_, None) => false,
            (Who::Authenticated, Some(_)) => true,
            (Who::PathAccount, Some(name)) => bound == Some(name),
            (Who::Account(want), Some(name)) => want == name,
        }
    }
}

/// True for names accounts may have: letters, digits, `-`, `_`, `.`, not starting with `.`.
pub fn valid_account_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// One segment of a rule's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Matches this exact segment.
    Literal(String),
    /// `{account}`: matches any one segment, and binds it as the path's account (a name
    /// that is no account's binds too: then no signed-in account is `"{account}"` there).
    Account,
}

/// One `[[rule]]`: the principals allowed each action beneath a path, and its flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// The path, segment by segment; empty for `/`.
    pub path: Vec<Pattern>,
    /// GET, HEAD, OPTIONS, TRACE of resources.
    pub read: Vec<Who>,
    /// Listings of collections.
    pub list: Vec<Who>,
    /// Making new resources and collections.
    pub create: Vec<Who>,
    /// Replacing resources.
    pub update: Vec<Who>,
    /// Removing resources and collections.
    pub delete: Vec<Who>,
    /// Anyone who may not read gets 404.
    pub hidden: bool,
    /// Left out of listings, still readable by URL.
    pub unlisted: bool,
    /// Credits to buy each resource beneath this path.
    pub price: Option<u64>,
}

impl std::fmt::Display for Who {
    /// As written in the configuration file.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Who::Anyone => f.write_str("*"),
            Who::Authenticated => f.write_str("@authenticated"),
            Who::PathAccount => f.write_str("{account}"),
            Who::Account(name) => f.write_str(name),
        }
    }
}

impl Rule {
    /// The rule's path as written in the configuration file (`/home/{account}`).
    pub fn display_path(&self) -> String {
        if self.path.is_empty() {
            return "/".into();
        }
        self.path
            .iter()
            .map(|p| match p {
                Pattern::Literal(s) => format!("/{s}"),
                Pattern::Account => "/{account}".into(),
            })
            .collect()
    }

    /// Parses a rule path (`/home/{account}`) into patterns.
    pub fn parse_path(path: &str) -> Result<Vec<Pattern>, String> {
        let rest = path.strip_prefix('/').ok_or("a rule path must start with /")?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Ok(Vec::new());
        }
        rest.split('/')
            .map(|segment| match segment {
                "{account}" => Ok(Pattern::Account),
                "" | "." | ".." => Err(format!("`{path}` has an empty, . or .. segment")),
                literal => Ok(Pattern::Literal(literal.to_owned())),
            })
            .collect()
    }

    /// The principals allowed `action`.
    pub fn who(&self, action: Action) -> &[Who] {
        match action {
            Action::Read => &self.read,
            Action::List => &self.list,
            Action::Create => &self.create,
            Action::Update => &self.update,
            Action::Delete => &self.delete,
        }
    }

    /// Matches the rule's path against the start of `segments`; on success returns the
    /// account name bound by an `{account}` segment, if any.
    fn bind<'a>(&self, segments: &'a [String]) -> Option<Option<&'a str>> {
        if self.path.len() > segments.len() {
            return None;
        }
        let mut bound = None;
        for (pattern, segment) in self.path.iter().zip(segments) {
            match pattern {
                Pattern::Literal(literal) if literal == segment => {}
                Pattern::Literal(_) => return None,
                Pattern::Account => bound = Some(segment.as_str()),
            }
        }
        Some(bound)
    }

    /// True if the rule covers some path strictly beneath `segments`: it is longer, and its
    /// first patterns match them.
    fn reaches_beneath(&self, segments: &[String]) -> bool {
        self.path.len() > segments.len()
            && self.path.iter().zip(segments).all(|(pattern, segment)| match pattern {
                Pattern::Literal(literal) => literal == segment,
                Pattern::Account => true,
            })
    }

    fn literal_count(&self) -> usize {
        self.path.iter().filter(|p| matches!(p, Pattern::Literal(_))).count()
    }
}

/// The rule set.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    /// Rules whose path starts with this literal segment, in configuration order.
    by_first: HashMap<String, Vec<usize>>,
    /// The other rules: `/` and those starting with `{account}`.
    others: Vec<usize>,
}

/// The rule that decides for a path, and the account its `{account}` segment bound.
#[derive(Debug, Clone, Copy)]
pub struct Match<'a> {
    /// The deciding rule.
    pub rule: &'a Rule,
    /// The account named by the path, for `{account}` rules.
    pub bound: Option<&'a str>,
}

impl Rules {
    /// Builds a rule set.
    pub fn new(rules: Vec<Rule>) -> Self {
        let mut by_first: HashMap<String, Vec<usize>> = HashMap::new();
        let mut others = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            match rule.path.first() {
                Some(Pattern::Literal(first)) => by_first.entry(first.clone()).or_default().push(i),
                _ => others.push(i),
            }
        }
        Rules { rules, by_first, others }
    }

    /// The rules, in configuration order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The longest matching rule: most segments, then most literal segments, then first given.
    /// Only rules that can match are looked at: those under the path's first segment, `/`,
    /// and those starting with `{account}`.
    pub fn matching<'a>(&'a self, segments: &'a [String]) -> Option<Match<'a>> {
        let under_first = segments.first().and_then(|first| self.by_first.get(first));
        let mut best: Option<(usize, Match<'a>)> = None;
        for &i in self.others.iter().chain(under_first.into_iter().flatten()) {
            let rule = &self.rules[i];
            let Some(bound) = rule.bind(segments) else { continue };
            let rank = (rule.path.len(), rule.literal_count());
            let better = match &best {
                None => true,
                Some((j, current)) => {
                    let current_rank = (current.rule.path.len(), current.rule.literal_count());
                    rank > current_rank || (rank == current_rank && i < *j)
                }
            };
            if better {
                best = Some((i, Match { rule, bound }));
            }
        }
        best.map(|(_, found)| found)
    }

    /// Decides whether `principal` may do `action` on the path with these segments: the
    /// account's rights by the rules, then the token's limit.
    pub fn decide(&self, principal: &Principal, segments: &[String], action: Action) -> Decision {
        let decision = self.decide_account(principal, segments, action);
        match &principal.limit {
            Some(limit)
                if decision == Decision::Allow
                    && (!segments.starts_with(&limit.scope)
                        || (limit.read_only && action.is_write())) =>
            {
                Decision::OutOfScope
            }
            _ => decision,
        }
    }

    /// Decides whether `principal` may do `action` on *every* path that may exist strictly
    /// beneath `segments` (what a collection's removal would remove), from the rules alone:
    /// each rule reaching beneath is asked for a path it covers, its `{account}` segments
    /// bound to a name that is no account's (the narrowest binding). The first refusal, or
    /// `Allow`. A path beneath that no such rule covers is decided by the rule deciding
    /// `segments`, as `segments` itself is.
    pub fn decide_beneath(
        &self,
        principal: &Principal,
        segments: &[String],
        action: Action,
    ) -> Decision {
        for rule in self.rules.iter().filter(|rule| rule.reaches_beneath(segments)) {
            let mut path = segments.to_vec();
            path.extend(rule.path[segments.len()..].iter().map(|pattern| match pattern {
                Pattern::Literal(literal) => literal.clone(),
                Pattern::Account => String::new(),
            }));
            match self.decide(principal, &path, action) {
                Decision::Allow => {}
                refused => return refused,
            }
        }
        Decision::Allow
    }

    fn decide_account(
        &self,
        principal: &Principal,
        segments: &[String],
        action: Action,
    ) -> Decision {
        if principal.admin {
            return Decision::Allow;
        }
        let Some(found) = self.matching(segments) else {
            return refuse(principal, false);
        };
        let admits =
            |action| found.rule.who(action).iter().any(|w| w.admits(principal, found.bound));
        if admits(action) {
            return Decision::Allow;
        }
        let may_read = admits(Action::Read) || admits(Action::List);
        refuse(principal, found.rule.hidden && !may_read)
    }

    /// True if a child shows in its parent's listing for `principal`: it may be read (or, for
    /// a collection, listed) and its rule is not `unlisted`.
    pub fn listed(&self, principal: &Principal, segments: &[String], collection: bool) -> bool {
        if self.matching(segments).is_some_and(|m| m.rule.unlisted) {
            return false;
        }
        let allowed = |action| self.decide(principal, segments, action) == Decision::Allow;
        allowed(Action::Read) || (collection && allowed(Action::List))
    }
}

fn refuse(principal: &Principal, hidden: bool) -> Decision {
    if hidden {
        Decision::Hidden
    } else if principal.account.is_none() {
        Decision::Unauthenticated
    } else {
        Decision::Forbidden
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Decision::*;

    fn who(list: &[&str]) -> Vec<Who> {
        list.iter().map(|w| Who::parse(w).unwrap()).collect()
    }

    fn rule(path: &str, read: &[&str], write: &[&str]) -> Rule {
        Rule {
            path: Rule::parse_path(path).unwrap(),
            read: who(read),
            list: who(read),
            create: who(write),
            update: who(write),
            delete: who(write),
            ..Rule::default()
        }
    }

    fn rules() -> Rules {
        let mut home = rule("/home/{account}", &["{account}"], &["{account}"]);
        home.hidden = true;
        let mut secret = rule("/secret", &["alice"], &[]);
        secret.hidden = true;
        let mut drafts = rule("/pub/drafts", &["*"], &[]);
        drafts.unlisted = true;
        Rules::new(vec![
            rule("/", &["*"], &["@authenticated"]),
            rule("/team", &["@authenticated"], &["alice"]),
            rule("/pub", &["*"], &[]),
            drafts,
            home,
            secret,
        ])
    }

    fn segments(path: &str) -> Vec<String> {
        path.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect()
    }

    #[test]
    fn decision_table() {
        let anon = Principal::anonymous();
        let alice = Principal::account("alice", false);
        let bob = Principal::account("bob", false);
        let root = Principal::account("root", true);
        let table: &[(&Principal, &str, Action, Decision)] = &[
            // open rule: anyone reads, signed-in accounts write
            (&anon, "/a.txt", Read, Allow),
            (&anon, "/a.txt", Create, Unauthenticated),
            (&bob, "/a.txt", Update, Allow),
            // signed-in rule, named writer
            (&anon, "/team/x", Read, Unauthenticated),
            (&bob, "/team/x", Read, Allow),
            (&bob, "/team/x", Delete, Forbidden),
            (&alice, "/team/x", Delete, Allow),
            // segment-aligned: /teamx falls back to /
            (&anon, "/teamx", Read, Allow),
            // read-only rule overrides the parent's write grant
            (&bob, "/pub/x", Create, Forbidden),
            (&anon, "/pub/drafts/d", Read, Allow),
            // homes: hidden from everyone but the account named by the path
            (&alice, "/home/alice/f", Read, Allow),
            (&alice, "/home/alice/f", Create, Allow),
            (&bob, "/home/alice/f", Read, Hidden),
            (&bob, "/home/alice/f", Delete, Hidden),
            (&anon, "/home/alice/f", Read, Hidden),
            // {account} matches names that are no account's alike: nobody but admins is
            // carol, so /home/carol answers as /home/alice does
            (&bob, "/home/carol/f", Read, Hidden),
            (&anon, "/home/carol/f", Create, Hidden),
            (&anon, "/home/alice/f", Create, Hidden),
            // hidden with a reader: others get 404, the reader 403 for writes
            (&bob, "/secret/s", Read, Hidden),
            (&alice, "/secret/s", Update, Forbidden),
            // admins may do everything
            (&root, "/home/alice/f", Delete, Allow),
            (&root, "/secret/s", Update, Allow),
        ];
        let rules = rules();
        for (principal, path, action, want) in table {
            let got = rules.decide(principal, &segments(path), *action);
            assert_eq!(got, *want, "{principal:?} {action:?} {path}");
        }
    }

    /// The matrix of issue 3: principal × kind of rule × action. Each string gives the
    /// decision for read, list, create, update, delete: A allow, U 401, F 403, H 404 (hidden),
    /// S 403 insufficient_scope. Expired tokens never reach the rules: `auth` refuses them
    /// (see `auth::tests::tokens_sign_in_until_revoked_or_expired`).
    #[test]
    fn matrix() {
        let mut hidden = rule("/hidden", &["alice"], &["alice"]);
        hidden.hidden = true;
        let mut unlisted = rule("/unlisted", &["*"], &[]);
        unlisted.unlisted = true;
        let mut home = rule("/home/{account}", &["{account}"], &["{account}"]);
        home.hidden = true;
        let rules = Rules::new(vec![
            rule("/open", &["*"], &["@authenticated"]),
            rule("/team", &["@authenticated"], &["@authenticated"]),
            rule("/named", &["alice"], &["alice"]),
            hidden,
            unlisted,
            home,
        ]);
        let anon = Principal::anonymous();
        let bob = Principal::account("bob", false);
        let owner = Principal::account("alice", false);
        let admin = Principal::account("root", true);
        let scoped = owner.clone().with_limit(Limit { scope: segments("/team"), read_only: false });
        let read_only = owner.clone().with_limit(Limit { scope: vec![], read_only: true });
        let principals = [
            ("anonymous", &anon),
            ("signed in", &bob),
            ("owner", &owner),
            ("admin", &admin),
            ("scoped token", &scoped),
            ("read-only token", &read_only),
        ];
        let table: [(&str, [&str; 6]); 6] = [
            ("/open/x", ["AAUUU", "AAAAA", "AAAAA", "AAAAA", "SSSSS", "AASSS"]),
            ("/team/x", ["UUUUU", "AAAAA", "AAAAA", "AAAAA", "AAAAA", "AASSS"]),
            ("/named/x", ["UUUUU", "FFFFF", "AAAAA", "AAAAA", "SSSSS", "AASSS"]),
            ("/hidden/x", ["HHHHH", "HHHHH", "AAAAA", "AAAAA", "SSSSS", "AASSS"]),
            ("/unlisted/x", ["AAUUU", "AAFFF", "AAFFF", "AAAAA", "SSFFF", "AAFFF"]),
            ("/home/alice/x", ["HHHHH", "HHHHH", "AAAAA", "AAAAA", "SSSSS", "AASSS"]),
        ];
        for (path, expected) in table {
            for ((name, principal), want) in principals.iter().zip(expected) {
                let got: String = [Read, List, Create, Update, Delete]
                    .into_iter()
                    .map(|action| match rules.decide(principal, &segments(path), action) {
                        Allow => 'A',
                        Unauthenticated => 'U',
                        Forbidden => 'F',
                        Hidden => 'H',
                        OutOfScope => 'S',
                    })
                    .collect();
                assert_eq!(got, want, "{name} on {path} (read, list, create, update, delete)");
            }
        }
    }

    /// What a collection's removal may take: every path beneath, decided from the rules.
    #[test]
    fn beneath() {
        let rules = rules();
        let anon = Principal::anonymous();
        let alice = Principal::account("alice", false);
        let bob = Principal::account("bob", false);
        let root = Principal::account("root", true);
        let scoped = bob.clone().with_limit(Limit { scope: segments("/home"), read_only: false });
        let table: &[(&Principal, &str, Decision)] = &[
            // Others' homes may be beneath /home: nobody but admins removes it whole.
            (&bob, "/home", Hidden),
            (&alice, "/home", Hidden),
            (&anon, "/home", Hidden),
            (&root, "/home", Allow),
            (&bob, "/home/bob", Allow),
            // Only what is beneath: /home/alice itself is decided on its own (hidden).
            (&bob, "/home/alice", Allow),
            // / holds /pub, /team and /secret, each narrower than / for bob.
            (&bob, "/", Forbidden),
            (&scoped, "/home/bob", Allow),
            (&scoped, "/home", Hidden),
            // No rule beneath: the collection's own rule decides for all of it.
            (&bob, "/docs", Allow),
            (&alice, "/team", Allow),
            (&bob, "/team", Allow),
            // /pub/drafts has a rule of its own, which lets nobody delete.
            (&alice, "/pub", Forbidden),
        ];
        for (principal, path, want) in table {
            let got = rules.decide_beneath(principal, &segments(path), Delete);
            assert_eq!(got, *want, "{principal:?} beneath {path}");
        }
    }

    #[test]
    fn unmatched_paths_are_for_admins_only() {
        let rules = Rules::new(vec![rule("/team", &["*"], &[])]);
        let path = segments("/other");
        assert_eq!(rules.decide(&Principal::anonymous(), &path, Read), Unauthenticated);
        assert_eq!(rules.decide(&Principal::account("bob", false), &path, Read), Forbidden);
        assert_eq!(rules.decide(&Principal::account("root", true), &path, Read), Allow);
    }

    #[test]
    fn listings() {
        let rules = rules();
        let anon = Principal::anonymous();
        let alice = Principal::account("alice", false);
        assert!(rules.listed(&anon, &segments("/pub/x"), false));
        assert!(!rules.listed(&anon, &segments("/pub/drafts"), true));
        assert!(!rules.listed(&alice, &segments("/pub/drafts"), true));
        assert!(!rules.listed(&anon, &segments("/home/alice"), true));
        assert!(rules.listed(&alice, &segments("/home/alice"), true));
    }

    #[test]
    fn longest_match_prefers_literals() {
        let mut literal = rule("/home/alice", &["*"], &[]);
        literal.hidden = false;
        let rules = Rules::new(vec![rule("/home/{account}", &["{account}"], &[]), literal]);
        let path = segments("/home/alice/x");
        let found = rules.matching(&path).unwrap();
        assert_eq!(found.rule.read, vec![Who::Anyone]);
    }

    #[test]
    fn principals_parse() {
        assert!(Who::parse("*").is_ok());
        assert!(Who::parse("bad name").is_err());
        assert!(Rule::parse_path("docs").is_err());
        assert!(Rule::parse_path("/a//b").is_err());
        assert_eq!(Rule::parse_path("/").unwrap(), vec![]);
    }
}
