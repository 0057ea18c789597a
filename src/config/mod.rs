//! Configuration: the TOML file of SPEC section 2, the `LARDER_*` environment and the flags,
//! merged into one validated [`Settings`]. Flags override the environment (clap does that),
//! the environment overrides the file, the file overrides the defaults.
//!
//! Invariant: a [`Settings`] is only ever built whole; any problem is an [`Error`] naming the
//! file, the key and the problem, and nothing is served.

mod auth_flag;
mod backend;
mod file;
mod units;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use argon2::PasswordHash;

use crate::access::{self, Rule, Rules, Who};

pub use backend::{BucketAt, is_database_url, redact_url};
pub use units::{parse_duration, parse_size};

/// The default `max_upload`: 1 GiB, Apache's default.
pub const DEFAULT_MAX_UPLOAD: u64 = 1 << 30;

/// The default `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The default `sign_in_limit`.
pub const DEFAULT_SIGN_IN_LIMIT: u32 = 10;

/// A configuration problem: where, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The file, or a flag or variable name (`--auth`).
    pub source: String,
    /// The key (`account[0].password`), empty when the problem is the whole source.
    pub key: String,
    /// What is wrong, in a sentence.
    pub problem: String,
}

impl Error {
    fn new(source: &str, key: impl Into<String>, problem: impl Into<String>) -> Self {
        Error { source: source.to_owned(), key: key.into(), problem: problem.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source, self.problem)
        } else {
            write!(f, "{}: {}: {}", self.source, self.key, self.problem)
        }
    }
}

impl std::error::Error for Error {}

/// What the command line and environment give; `None` means "not given".
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// ROOT.
    pub root: Option<PathBuf>,
    /// `--bind`.
    pub bind: Option<String>,
    /// `--port`.
    pub port: Option<u16>,
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--state`: a folder, or a `postgres://` URL.
    pub state: Option<PathBuf>,
    /// `--store`: `file:ROOT` or `s3://BUCKET/PREFIX`.
    pub store: Option<String>,
    /// `--auth`, each possibly holding several rules separated by `|`.
    pub auth: Vec<String>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
}

/// An account that may sign in.
#[derive(Debug, Clone)]
pub struct Account {
    /// The account's name.
    pub name: String,
    /// The argon2id PHC string.
    pub password: String,
    /// The plan's name, if any.
    pub plan: Option<String>,
    /// Admins may do everything, everywhere.
    pub admin: bool,
}

/// A plan: storage quota and credits granted at first sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Bytes an account's own resources may occupy.
    pub storage: u64,
    /// Credits granted once.
    pub credits: u64,
    /// Resources (files) the account may own.
    pub files: u64,
}

/// The default of a plan's `files`.
pub const DEFAULT_FILES: u64 = 100_000;

/// Where the TLS certificate chain and private key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The effective, validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to bind.
    pub bind: IpAddr,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// The served folder.
    pub root: PathBuf,
    /// Where larder keeps its own state (the embedded database's folder).
    pub state: PathBuf,
    /// The bucket holding the bytes instead of ROOT (`--store s3://...`).
    pub bucket: Option<BucketAt>,
    /// The shared PostgreSQL database instead of the embedded one (`--state postgres://...`).
    pub database: Option<String>,
    /// The realm of `WWW-Authenticate` challenges.
    pub realm: String,
    /// The largest request body accepted, in bytes.
    pub max_upload: u64,
    /// Failed sign-ins per account per minute before 429 (twice that per address); 0: off.
    pub sign_in_limit: u32,
    /// How long a client may take to send a request head (also the keep-alive idle limit).
    pub header_timeout: Duration,
    /// Open connections served at once; past that, new ones get 503.
    pub max_connections: usize,
    /// TLS certificate chain and key (PEM files); `None` serves plain HTTP.
    pub tls: Option<Tls>,
    /// Whether TRACE is answered (otherwise 405).
    pub trace: bool,
    /// Whether anyone may read `/.larder/metrics` (otherwise admins only).
    pub metrics_public: bool,
    /// Peers whose `Forwarded` or `X-Forwarded-For` names the client (reverse proxies).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Follow symlinks that stay inside ROOT (the rules of both paths apply).
    pub follow_symlinks: bool,
    /// Send file content with sendfile(2) on plain HTTP/1 connections (nginx's `sendfile`).
    pub sendfile: bool,
    /// How long requests in flight may take to finish once shutdown begins.
    pub shutdown_grace: Duration,
    /// How long a request waits for PostgreSQL or the bucket before a 503.
    pub dependency_timeout: Duration,
    /// Accounts by name.
    pub accounts: BTreeMap<String, Account>,
    /// Plans by name.
    pub plans: BTreeMap<String, Plan>,
    /// The access rules.
    pub rules: Rules,
    /// True when neither accounts nor rules were given and ROOT is served read-only to all.
    pub open_read_only: bool,
    /// The file the configuration came from, if any.
    pub file: Option<PathBuf>,
}

impl Settings {
    /// Settings for `root` with every default: read-only to everyone.
    pub fn for_root(root: impl Into<PathBuf>) -> Result<Settings, Error> {
        Settings::load(Overrides { root: Some(root.into()), ..Overrides::default() }, &env_none)
    }

    /// Reads the configuration file (if any), applies the environment given by `env` (for
    /// the keys that have no flag) and the overrides, and validates the result.
    pub fn load(
        overrides: Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, Error> {
        let (file, source) = match &overrides.config {
            Some(path) => (file::read(path)?, path.display().to_string()),
            None => (file::Config::default(), "configuration".to_owned()),
        };
        let base = overrides.config.as_deref().and_then(Path::parent).unwrap_or(Path::new(""));
        let relative_to_file = |p: &Path| {
            if p.is_absolute() { p.to_owned() } else { base.join(p) }
        };

        let env_value = |key: &str| env(&format!("LARDER_{key}"));
        let bind_text = overrides.bind.clone().or(file.bind.clone()).unwrap_or("127.0.0.1".into());
        let bind = bind_text.parse().map_err(|_| {
            Error::new(&source, "bind", format!("`{bind_text}` is not an IP address"))
        })?;
        let mut root = match (&overrides.root, &file.root) {
            (Some(root), _) => root.clone(),
            (None, Some(root)) => relative_to_file(root),
            (None, None) => PathBuf::from("."),
        };
        let (store, store_source) = match (&overrides.store, &file.store) {
            (Some(store), _) => (Some(store.clone()), "--store"),
            (None, store) => (store.clone(), source.as_str()),
        };
        let mut bucket = None;
        match store.as_deref() {
            None => {}
            Some(text) if text.starts_with("file:") => {
                if overrides.root.is_some() && overrides.store.is_some() {
                    let problem = "give ROOT or --store file:ROOT, not both";
                    return Err(Error::new("--store", "", problem));
                }
                let folder = PathBuf::from(&text["file:".len()..]);
                root = if overrides.store.is_some() { folder } else { relative_to_file(&folder) };
            }
            Some(text) => match BucketAt::parse(text) {
                Some(Ok(at)) => bucket = Some(at),
                Some(Err(problem)) => return Err(Error::new(store_source, "store", problem)),
                None => {
                    let problem = format!("`{text}`: use file:ROOT or s3://BUCKET/PREFIX");
                    return Err(Error::new(store_source, "store", problem));
                }
            },
        }
        let state_text = overrides.state.as_ref().or(file.state.as_ref());
        let database =
            state_text.and_then(|s| s.to_str()).filter(|s| is_database_url(s)).map(str::to_owned);
        let state = match (&overrides.state, &file.state) {
            _ if database.is_some() => root.join(".larder"),
            (Some(state), _) => state.clone(),
            (None, Some(state)) => relative_to_file(state),
            (None, None) => root.join(".larder"),
        };
        let realm = env_value("REALM").or(file.realm.clone()).unwrap_or("larder".into());
        if realm.is_empty() || realm.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
            return Err(Error::new(&source, "realm", "must be non-empty, without \" or \\"));
        }
        let max_upload = match env_value("MAX_UPLOAD") {
            Some(text) => {
                parse_size(&text).map_err(|problem| Error::new("LARDER_MAX_UPLOAD", "", problem))?
            }
            None => file.max_upload.map(|s| s.0).unwrap_or(DEFAULT_MAX_UPLOAD),
        };
        let trace = match env_value("TRACE") {
            Some(text) => {
                text.parse().map_err(|_| Error::new("LARDER_TRACE", "", "must be true or false"))?
            }
            None => file.trace.unwrap_or(true),
        };

        let mut plans = BTreeMap::new();
        for (name, plan) in &file.plan {
            let plan = Plan {
                storage: plan.storage.0,
                credits: plan.credits,
                files: plan.files.unwrap_or(DEFAULT_FILES),
            };
            plans.insert(name.clone(), plan);
        }

        let mut accounts = BTreeMap::new();
        for (i, account) in file.account.iter().enumerate() {
            let key = |field: &str| format!("account[{i}].{field}");
            if !access::valid_account_name(&account.name) {
                let problem = "use letters, digits, -, _ and . (not first)";
                return Err(Error::new(&source, key("name"), problem));
            }
            check_phc(&account.password).map_err(|p| Error::new(&source, key("password"), p))?;
            if let Some(plan) = &account.plan
                && !plans.contains_key(plan)
            {
                let problem = format!("no [plan.{plan}] is defined");
                return Err(Error::new(&source, key("plan"), problem));
            }
            let entry = Account {
                name: account.name.clone(),
                password: account.password.clone(),
                plan: account.plan.clone(),
                admin: account.admin,
            };
            if accounts.insert(account.name.clone(), entry).is_some() {
                let problem = format!("`{}` is defined twice", account.name);
                return Err(Error::new(&source, key("name"), problem));
            }
        }

        let mut rules: Vec<Rule> = Vec::new();
        for (i, rule) in file.rule.iter().enumerate() {
            let parsed = rule
                .to_rule()
                .map_err(|(field, p)| Error::new(&source, format!("rule[{i}].{field}"), p))?;
            if rules.iter().any(|r| r.path == parsed.path) {
                let problem = format!("`{}` is already given by another rule", rule.path);
                return Err(Error::new(&source, format!("rule[{i}].path"), problem));
            }
            rules.push(parsed);
        }

        for text in overrides.auth.iter().flat_map(|a| a.split('|')).filter(|a| !a.is_empty()) {
            let grant = auth_flag::parse(text)
                .map_err(|p| Error::new("--auth", "", format!("`{text}`: {p}")))?;
            if let Some((name, secret)) = &grant.account {
                let password = if secret.starts_with("$argon2") {
                    check_phc(secret).map_err(|p| Error::new("--auth", name.clone(), p))?;
                    secret.clone()
                } else {
                    crate::password::hash_password(secret)
                        .map_err(|p| Error::new("--auth", name.clone(), p))?
                };
                let account = Account { name: name.clone(), password, plan: None, admin: false };
                accounts.entry(name.clone()).or_insert(account);
            }
            auth_flag::merge(&mut rules, &grant);
        }

        for (i, rule) in rules.iter().enumerate() {
            for who in [&rule.read, &rule.list, &rule.create, &rule.update, &rule.delete]
                .into_iter()
                .flatten()
            {
                if let Who::Account(name) = who
                    && !accounts.contains_key(name)
                {
                    let problem = format!("no account named `{name}`");
                    return Err(Error::new(&source, format!("rule[{i}]"), problem));
                }
            }
        }

        let header_timeout = match env_value("HEADER_TIMEOUT").or(file.header_timeout.clone()) {
            Some(text) => parse_duration(&text).ok().filter(|d| !d.is_zero()).ok_or_else(|| {
                Error::new(
                    &source,
                    "header_timeout",
                    format!("`{text}` is not a duration like \"30s\""),
                )
            })?,
            None => Duration::from_secs(30),
        };
        let dependency_timeout = match env_value("DEPENDENCY_TIMEOUT")
            .or(file.dependency_timeout.clone())
        {
            Some(text) => parse_duration(&text).ok().filter(|d| !d.is_zero()).ok_or_else(|| {
                let problem = format!("`{text}` is not a duration like \"10s\"");
                Error::new(&source, "dependency_timeout", problem)
            })?,
            None => Duration::from_secs(10),
        };
        let shutdown_grace = match env_value("SHUTDOWN_GRACE").or(file.shutdown_grace.clone()) {
            Some(text) => parse_duration(&text).map_err(|_| {
                let problem = format!("`{text}` is not a duration like \"30s\"");
                Error::new(&source, "shutdown_grace", problem)
            })?,
            None => Duration::from_secs(30),
        };
        let max_connections = file.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(Error::new(&source, "max_connections", "must be at least 1"));
        }
        let tls_cert =
            overrides.tls_cert.clone().or(file.tls_cert.as_deref().map(relative_to_file));
        let tls_key = overrides.tls_key.clone().or(file.tls_key.as_deref().map(relative_to_file));
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(Tls { cert, key }),
            (None, None) => None,
            _ => return Err(Error::new(&source, "tls_cert", "tls_cert and tls_key go together")),
        };

        let mut trusted_proxies = Vec::new();
        for text in file.trusted_proxies.iter().flatten() {
            let net = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    Error::new(
                        &source,
                        "trusted_proxies",
                        format!("`{text}` is not an address or a network like 127.0.0.1/32"),
                    )
                })?;
            trusted_proxies.push(net);
        }

        let open_read_only = accounts.is_empty() && rules.is_empty();
        if open_read_only {
            rules.push(Rule {
                path: Vec::new(),
                read: vec![Who::Anyone],
                list: vec![Who::Anyone],
                ..Rule::default()
            });
        }
        Ok(Settings {
            bind,
            port: overrides.port.or(file.port).unwrap_or(8080),
            root,
            state,
            realm,
            max_upload,
            sign_in_limit: file.sign_in_limit.unwrap_or(DEFAULT_SIGN_IN_LIMIT),
            header_timeout,
            max_connections,
            tls,
            trace,
            metrics_public: file.metrics_public.unwrap_or(false),
            trusted_proxies,
            follow_symlinks: file.follow_symlinks.unwrap_or(false),
            sendfile: file.sendfile.unwrap_or(true),
            shutdown_grace,
            dependency_timeout,
            accounts,
            plans,
            rules: Rules::new(rules),
            open_read_only,
            file: overrides.config.clone(),
            bucket,
            database,
        })
    }

    /// Refuses a bucket store without a PostgreSQL state, and the reverse: the nodes sharing
    /// a bucket share its namespace and ledger in PostgreSQL, and nodes sharing a database
    /// must see the same bytes.
    pub fn check_backends(&self) -> Result<(), Error> {
        if self.bucket.is_some() == self.database.is_some() {
            return Ok(());
        }
        let source = self.file.as_ref().map_or("configuration".into(), |f| f.display().to_string());
        let (key, problem) = match self.bucket {
            Some(_) => {
                ("state", "an s3:// store needs a postgres:// state (its namespace lives there)")
            }
            None => {
                ("store", "a postgres:// state needs an s3:// store (nodes must share the bytes)")
            }
        };
        Err(Error::new(&source, key, problem))
    }

    /// `new` as a running server can take it from `self`: the accounts, plans, rules and
    /// per-request keys of `new`; the sockets, folders and limits set at start from `self`.
    /// Also returns the keys that differ but need a restart.
    pub fn reloaded(&self, new: Settings) -> (Settings, Vec<&'static str>) {
        let mut ignored = Vec::new();
        let mut keep = |changed: bool, key: &'static str| {
            if changed {
                ignored.push(key);
            }
        };
        keep(self.bind != new.bind, "bind");
        keep(self.port != new.port, "port");
        keep(self.root != new.root, "root");
        keep(self.state != new.state || self.database != new.database, "state");
        keep(self.bucket != new.bucket, "store");
        keep(self.tls != new.tls, "tls_cert");
        keep(self.header_timeout != new.header_timeout, "header_timeout");
        keep(self.max_connections != new.max_connections, "max_connections");
        keep(self.sign_in_limit != new.sign_in_limit, "sign_in_limit");
        keep(self.shutdown_grace != new.shutdown_grace, "shutdown_grace");
        let settings = Settings {
            bind: self.bind,
            port: self.port,
            root: self.root.clone(),
            state: self.state.clone(),
            bucket: self.bucket.clone(),
            database: self.database.clone(),
            tls: self.tls.clone(),
            header_timeout: self.header_timeout,
            max_connections: self.max_connections,
            sign_in_limit: self.sign_in_limit,
            shutdown_grace: self.shutdown_grace,
            ..new
        };
        (settings, ignored)
    }

    /// The effective configuration as TOML, with password hashes redacted.
    pub fn to_redacted_toml(&self) -> String {
        file::render(self)
    }
}

/// An environment with no variables set.
pub fn env_none(_: &str) -> Option<String> {
    None
}

fn check_phc(password: &str) -> Result<(), String> {
    let hash = PasswordHash::new(password).map_err(|_| {
        "must be an argon2id PHC string (`larder hash-password` makes one); plain text is refused"
            .to_owned()
    })?;
    if hash.algorithm.as_str() != "argon2id" {
        return Err(format!("uses {}; only argon2id is accepted", hash.algorithm));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Settings, Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("larder.toml");
        std::fs::write(&path, text).unwrap();
        Settings::load(Overrides { config: Some(path), ..Overrides::default() }, &env_none)
    }

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$y0Ecn0tX+6vS0Wv3Qz0uJ9rX8p4Xz9yBZc1oPtQpT6Y";

    #[test]
    fn defaults_serve_read_only() {
        let settings = Settings::for_root("/srv").unwrap();
        assert!(settings.open_read_only);
        assert_eq!(settings.port, 8080);
        assert_eq!(settings.state, PathBuf::from("/srv/.larder"));
        assert_eq!(settings.max_upload, DEFAULT_MAX_UPLOAD);
    }

    #[test]
    fn full_file() {
        let text = format!(
            r#"
port = 9000
max_upload = "10 MiB"
trace = false
[[account]]
name = "alice"
password = "{HASH}"
plan = "free"
[plan.free]
storage = "100 MiB"
credits = 20
[[rule]]
path = "/"
read = ["*"]
write = ["alice"]
"#
        );
        let settings = load_text(&text).unwrap();
        assert_eq!(settings.port, 9000);
        assert_eq!(settings.max_upload, 10 << 20);
        assert!(!settings.trace);
        assert_eq!(
            settings.plans["free"],
            Plan { storage: 100 << 20, credits: 20, files: DEFAULT_FILES }
        );
        assert!(!settings.open_read_only);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("prot = 1", "prot"),
            ("port = \"x\"", "port"),
            ("[[account]]\nname = \"a\"\npassword = \"hunter2\"", "account[0].password"),
            (
                &format!("[[account]]\nname = \"a\"\npassword = \"{HASH}\"\nplan = \"gold\""),
                "account[0].plan",
            ),
            ("[[rule]]\npath = \"docs\"", "rule[0].path"),
            ("[[rule]]\npath = \"/\"\nread = [\"bob\"]", "rule[0]"),
            ("max_upload = \"12 parsecs\"", "max_upload"),
        ];
        for (text, key) in cases {
            let error = load_text(text).unwrap_err();
            assert!(error.to_string().contains(key), "{text}: {error}");
            assert!(error.source.ends_with("larder.toml"), "{error}");
        }
    }

    #[test]
    fn auth_flag_makes_accounts_and_rules() {
        let overrides = Overrides {
            root: Some("/srv".into()),
            auth: vec![format!("alice:{HASH}@/:rw|@/pub:ro")],
            ..Overrides::default()
        };
        let settings = Settings::load(overrides, &env_none).unwrap();
        assert!(settings.accounts.contains_key("alice"));
        assert_eq!(settings.rules.rules().len(), 2);
        assert!(!settings.open_read_only);
    }

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("larder.toml");
        std::fs::write(&path, "realm = \"file\"\nmax_upload = 5").unwrap();
        let env = |key: &str| (key == "LARDER_REALM").then(|| "env".to_owned());
        let settings =
            Settings::load(Overrides { config: Some(path), ..Overrides::default() }, &env).unwrap();
        assert_eq!(settings.realm, "env");
        assert_eq!(settings.max_upload, 5);
    }

    #[test]
    fn store_and_state_choose_the_backends() {
        let both =
            load_text("store = \"s3://larder-data/site\"\nstate = \"postgres://l:pw@db/larder\"")
                .unwrap();
        let at = both.bucket.clone().unwrap();
        assert_eq!((at.bucket.as_str(), at.prefix.as_str()), ("larder-data", "site"));
        assert_eq!(both.database.as_deref(), Some("postgres://l:pw@db/larder"));
        assert!(both.check_backends().is_ok());
        let rendered = both.to_redacted_toml();
        assert!(rendered.contains("postgres://l:<redacted>@db/larder"), "{rendered}");
        assert!(!rendered.contains("pw"), "{rendered}");

        let folder = load_text("store = \"file:served\"").unwrap();
        assert!(folder.root.ends_with("served") && folder.bucket.is_none());

        let half = load_text("store = \"s3://larder-data\"").unwrap();
        let error = half.check_backends().unwrap_err();
        assert_eq!(error.key, "state", "{error}");
        let other = load_text("state = \"postgresql://db/larder\"").unwrap();
        assert_eq!(other.check_backends().unwrap_err().key, "store");

        for bad in ["store = \"ftp://x\"", "store = \"s3://UPPER/x\""] {
            let error = load_text(bad).unwrap_err();
            assert_eq!(error.key, "store", "{bad}: {error}");
        }
        let overrides = Overrides {
            root: Some("/srv".into()),
            store: Some("file:/other".into()),
            ..Overrides::default()
        };
        assert!(Settings::load(overrides, &env_none).is_err(), "ROOT and --store file: both");
    }
}
