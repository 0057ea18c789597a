//! The TOML file's shape (unknown keys are errors) and the redacted rendering of the
//! effective configuration that `larder check` prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use super::{Error, Settings, parse_size};
use crate::access::{Rule, Who};

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub bind: Option<String>,
    pub port: Option<u16>,
    pub root: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub store: Option<String>,
    pub realm: Option<String>,
    pub max_upload: Option<Size>,
    pub sign_in_limit: Option<u32>,
    pub header_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub trace: Option<bool>,
    pub metrics_public: Option<bool>,
    pub trusted_proxies: Option<Vec<String>>,
    pub follow_symlinks: Option<bool>,
    pub sendfile: Option<bool>,
    pub shutdown_grace: Option<String>,
    pub dependency_timeout: Option<String>,
    #[serde(default)]
    pub account: Vec<AccountConfig>,
    #[serde(default)]
    pub plan: BTreeMap<String, PlanConfig>,
    #[serde(default)]
    pub rule: Vec<RuleConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub name: String,
    pub password: String,
    pub plan: Option<String>,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    pub storage: Size,
    #[serde(default)]
    pub credits: u64,
    pub files: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub path: String,
    pub read: Option<Vec<String>>,
    pub list: Option<Vec<String>>,
    pub write: Option<Vec<String>>,
    pub create: Option<Vec<String>>,
    pub update: Option<Vec<String>>,
    pub delete: Option<Vec<String>>,
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub unlisted: bool,
    pub price: Option<u64>,
}

impl RuleConfig {
    /// The rule, or the failing field and the problem.
    pub fn to_rule(&self) -> Result<Rule, (&'static str, String)> {
        let path = Rule::parse_path(&self.path).map_err(|p| ("path", p))?;
        let parse = |field: &'static str,
                     list: &Option<Vec<String>>|
         -> Result<Option<Vec<Who>>, (&'static str, String)> {
            list.as_ref()
                .map(|l| l.iter().map(|w| Who::parse(w).map_err(|p| (field, p))).collect())
                .transpose()
        };
        let read = parse("read", &self.read)?.unwrap_or_default();
        let list = parse("list", &self.list)?.unwrap_or_else(|| read.clone());
        let write = parse("write", &self.write)?.unwrap_or_default();
        let create = parse("create", &self.create)?.unwrap_or_else(|| write.clone());
        let update = parse("update", &self.update)?.unwrap_or_else(|| write.clone());
        let delete = parse("delete", &self.delete)?.unwrap_or_else(|| write.clone());
        Ok(Rule {
            path,
            read,
            list,
            create,
            update,
            delete,
            hidden: self.hidden,
            unlisted: self.unlisted,
            price: self.price,
        })
    }
}

/// A size in bytes, written as a number or a string with a unit.
#[derive(Debug, Clone, Copy)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(Size(n)),
            Raw::Text(text) => parse_size(&text).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

/// Reads and parses the file; errors name the file and carry toml's key and line.
pub fn read(path: &Path) -> Result<Config, Error> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::new(&source, "", format!("cannot be read: {e}")))?;
    toml::from_str(&text).map_err(|e| Error::new(&source, "", e.to_string().trim_end().to_owned()))
}

#[derive(Serialize)]
struct Effective<'a> {
    bind: String,
    port: u16,
    root: String,
    state: String,
    store: String,
    realm: &'a str,
    max_upload: u64,
    sign_in_limit: u32,
    header_timeout: String,
    max_connections: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_key: Option<String>,
    trace: bool,
    metrics_public: bool,
    trusted_proxies: Vec<String>,
    follow_symlinks: bool,
    sendfile: bool,
    shutdown_grace: String,
    dependency_timeout: String,
    account: Vec<EffectiveAccount<'a>>,
    plan: BTreeMap<&'a str, EffectivePlan>,
    rule: Vec<EffectiveRule>,
}

#[derive(Serialize)]
struct EffectiveAccount<'a> {
    name: &'a str,
    password: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<&'a str>,
    admin: bool,
}

#[derive(Serialize)]
struct EffectivePlan {
    storage: u64,
    credits: u64,
    files: u64,
}

#[derive(Serialize)]
struct EffectiveRule {
    path: String,
    read: Vec<String>,
    list: Vec<String>,
    create: Vec<String>,
    update: Vec<String>,
    delete: Vec<String>,
    hidden: bool,
    unlisted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<u64>,
}

/// Renders the effective settings as TOML with every secret replaced.
pub fn render(settings: &Settings) -> String {
    let names = |list: &[Who]| list.iter().map(Who::to_string).collect();
    let effective = Effective {
        bind: settings.bind.to_string(),
        port: settings.port,
        root: settings.root.display().to_string(),
        state: match &settings.database {
            Some(url) => super::redact_url(url),
            None => settings.state.display().to_string(),
        },
        store: match &settings.bucket {
            Some(at) => at.to_string(),
            None => format!("file:{}", settings.root.display()),
        },
        realm: &settings.realm,
        max_upload: settings.max_upload,
        sign_in_limit: settings.sign_in_limit,
        header_timeout: format!("{}s", settings.header_timeout.as_secs()),
        max_connections: settings.max_connections,
        tls_cert: settings.tls.as_ref().map(|t| t.cert.display().to_string()),
        tls_key: settings.tls.as_ref().map(|t| t.key.display().to_string()),
        trace: settings.trace,
        metrics_public: settings.metrics_public,
        trusted_proxies: settings.trusted_proxies.iter().map(ToString::to_string).collect(),
        follow_symlinks: settings.follow_symlinks,
        sendfile: settings.sendfile,
        shutdown_grace: format!("{}s", settings.shutdown_grace.as_secs()),
        dependency_timeout: format!("{}ms", settings.dependency_timeout.as_millis()),
        account: settings
            .accounts
            .values()
            .map(|a| EffectiveAccount {
                name: &a.name,
                password: "<redacted>",
                plan: a.plan.as_deref(),
                admin: a.admin,
            })
            .collect(),
        plan: settings
            .plans
            .iter()
            .map(|(name, p)| {
                (
                    name.as_str(),
                    EffectivePlan { storage: p.storage, credits: p.credits, files: p.files },
                )
            })
            .collect(),
        rule: settings
            .rules
            .rules()
            .iter()
            .map(|r| EffectiveRule {
                path: r.display_path(),
                read: names(&r.read),
                list: names(&r.list),
                create: names(&r.create),
                update: names(&r.update),
                delete: names(&r.delete),
                hidden: r.hidden,
                unlisted: r.unlisted,
                price: r.price,
            })
            .collect(),
    };
    toml::to_string(&effective).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}
