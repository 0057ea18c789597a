//! The command line: `serve`, `hash-password`, `check`, `explain` and `token`. Usage and configuration errors
//! exit with status 64 (EX_USAGE) after a message naming the file, the key and the problem.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};

use crate::config::{Overrides, Settings};
use crate::http::App;
use crate::state::State;
use crate::store::{BucketStore, FileStore};
use crate::telemetry::LogFormat;

/// Exit status for usage and configuration errors (sysexits' EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(name = "larder", version, about = "A self-hosted HTTP resource server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve ROOT over HTTP.
    Serve(ServeArgs),
    /// Read a password from standard input and print its argon2id PHC string.
    HashPassword,
    /// Validate the configuration, print the effective one (secrets redacted) and explain
    /// each rule.
    Check(ServeArgs),
    /// Print the decision for every method on PATH, and the rule that made it.
    Explain(ExplainArgs),
    /// Move a folder and its state to a bucket and PostgreSQL, then verify (resumable: run it
    /// again to finish or to catch up).
    Migrate(MigrateArgs),
    /// Manage bearer tokens (works while the server runs).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token for account NAME and print it, once.
    Create(TokenArgs),
}

#[derive(Args)]
struct TokenArgs {
    /// The account the token signs in as.
    name: String,
    /// The configuration file (gives the state folder and the accounts).
    #[arg(long, env = "LARDER_CONFIG")]
    config: Option<PathBuf>,
    /// The state folder or postgres:// URL, when there is no configuration file.
    #[arg(long, env = "LARDER_STATE")]
    state: Option<PathBuf>,
    /// Limit the token to this path and what lies beneath it.
    #[arg(long)]
    scope: Option<String>,
    /// Allow reads only.
    #[arg(long)]
    read_only: bool,
    /// Lifetime, like 30d or 12h (default: no expiry).
    #[arg(long)]
    expires: Option<String>,
}

#[derive(Args)]
struct MigrateArgs {
    /// The installation to move: file:ROOT
    #[arg(long)]
    from: String,
    /// Its state folder [default: ROOT/.larder]
    #[arg(long)]
    from_state: Option<PathBuf>,
    /// Where the bytes go: s3://BUCKET/PREFIX (with the AWS_* variables, as for serve)
    #[arg(long)]
    to: String,
    /// Where the state goes: postgres://USER:PASSWORD@HOST/DATABASE
    #[arg(long, env = "LARDER_TO_STATE")]
    to_state: String,
    /// Only compare the two sides; copy nothing.
    #[arg(long)]
    verify_only: bool,
    /// Write into a database that nodes have served from (what they wrote is overwritten).
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct ExplainArgs {
    /// The path, like /docs/a.txt (a trailing / names a collection).
    path: String,
    /// The account asking [default: an anonymous client]
    #[arg(long = "as", value_name = "NAME")]
    account: Option<String>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Args)]
struct ServeArgs {
    /// The folder whose files are served (created if missing) [default: .]
    #[arg(env = "LARDER_ROOT")]
    root: Option<PathBuf>,
    /// Address to bind [default: 127.0.0.1]
    #[arg(long, env = "LARDER_BIND")]
    bind: Option<String>,
    /// Port to bind; 0 picks a free one [default: 8080]
    #[arg(long, env = "LARDER_PORT")]
    port: Option<u16>,
    /// A TOML configuration file.
    #[arg(long, env = "LARDER_CONFIG")]
    config: Option<PathBuf>,
    /// Where larder keeps its state: a folder [default: ROOT/.larder], or a
    /// postgres://USER:PASSWORD@HOST/DATABASE shared by several nodes
    #[arg(long, env = "LARDER_STATE")]
    state: Option<PathBuf>,
    /// Where the bytes live: file:ROOT (the folder, as ROOT gives it) or s3://BUCKET/PREFIX
    /// (with AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)
    #[arg(long, env = "LARDER_STORE")]
    store: Option<String>,
    /// NAME:SECRET@/path:rw,/other:ro or @/path:ro (repeatable; `|` separates several).
    #[arg(long, env = "LARDER_AUTH")]
    auth: Vec<String>,
    /// PEM certificate chain: serve HTTPS (HTTP/2 by ALPN) instead of HTTP.
    #[arg(long, env = "LARDER_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "LARDER_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// How log lines are written on standard error.
    #[arg(long, env = "LARDER_LOG_FORMAT", value_enum, default_value_t)]
    log_format: LogFormat,
}

impl ServeArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            root: self.root.clone(),
            bind: self.bind.clone(),
            port: self.port,
            config: self.config.clone(),
            state: self.state.clone(),
            store: self.store.clone(),
            auth: self.auth.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
        }
    }

    fn settings(&self) -> Result<Settings, crate::config::Error> {
        let settings = load(self.overrides())?;
        settings.check_backends()?;
        Ok(settings)
    }
}

/// The settings from the flags, the environment and the file they name.
fn load(overrides: Overrides) -> Result<Settings, crate::config::Error> {
    Settings::load(overrides, &|key| std::env::var(key).ok())
}

/// Runs the command line; returns the process's exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(EXIT_CONFIG) } else { ExitCode::SUCCESS };
        }
    };
    let status = match cli.command {
        Command::Serve(args) => serve(args),
        Command::HashPassword => hash_password(),
        Command::Check(args) => check(args),
        Command::Explain(args) => explain(args),
        Command::Migrate(args) => migrate(args),
        Command::Token { command: TokenCommand::Create(args) } => create_token(args),
    };
    crate::telemetry::flush();
    status
}

fn serve(args: ServeArgs) -> ExitCode {
    crate::telemetry::init(args.log_format);
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let settings = match args.settings() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("larder: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let tls = match settings.tls.as_ref().map(crate::server::tls::load).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("larder: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("larder: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings, args.overrides(), tls)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("larder: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    settings: Settings,
    overrides: Overrides,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Before anything is printed: SIGHUP's default action would end the process.
    let hangups = signal(SignalKind::hangup())?;
    crate::state::set_dependency_timeout(settings.dependency_timeout);
    let state = Arc::new(open_state(&settings).await?);
    // Ready before "listening" is printed: whoever waits for that line sees the whole server.
    let files = crate::server::raise_open_file_limit();
    tracing::debug!("open-file limit: {files}");
    let loops = crate::server::Loops::start()?;
    match settings.bucket.clone() {
        None => {
            let store = FileStore::open(&settings.root, state.clone(), &settings.state)?;
            let listener = bind(&settings, tls.is_some()).await?;
            if settings.open_read_only {
                let root = store.root().display();
                println!("no accounts or rules: serving {root} read-only to everyone");
            }
            serve_app(loops, listener, App::new(settings, store, state), hangups, overrides, tls)
                .await?;
        }
        Some(at) => {
            let bucket = crate::store::bucket::connect(&at)?;
            crate::store::bucket::check(bucket.as_ref(), &at).await?;
            let store = BucketStore::open(bucket, &at.prefix, state.clone())?;
            let listener = bind(&settings, tls.is_some()).await?;
            tokio::spawn(heartbeat(state.clone(), node_name(listener.local_addr()?)));
            println!(
                "serving {at}, named in {}",
                crate::config::redact_url(settings.database.as_deref().unwrap_or_default())
            );
            serve_app(loops, listener, App::new(settings, store, state), hangups, overrides, tls)
                .await?;
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// How often a node says in the shared database that it is alive.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);

/// The node's name in the shared database: its host and listening address.
fn node_name(addr: std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{} {addr}", host.trim())
}

/// Says in the shared database, now and every [`HEARTBEAT_EVERY`], that this node serves from
/// it: `larder migrate` refuses to overwrite a database with a heartbeat.
async fn heartbeat(state: Arc<State>, name: String) {
    let started = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let mut every = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        every.tick().await;
        let (state, name) = (state.clone(), name.clone());
        let said = tokio::task::spawn_blocking(move || match state.postgres() {
            Some(db) => db.heartbeat(&name, started),
            None => Ok(()),
        })
        .await;
        if let Ok(Err(e)) = said {
            tracing::warn!("heartbeat: {e}");
        }
    }
}

/// Opens the embedded database, or connects to the shared one.
async fn open_state(settings: &Settings) -> std::io::Result<State> {
    match &settings.database {
        Some(url) => connect(url).await,
        None => State::open(&settings.state),
    }
}

/// Connects to PostgreSQL at `url`; an error names the address, its password redacted.
async fn connect(url: &str) -> std::io::Result<State> {
    State::connect_from_async(url).await.map_err(|e| {
        let at = crate::config::redact_url(url);
        std::io::Error::new(e.kind(), format!("PostgreSQL at {at}: {e}"))
    })
}

async fn bind(settings: &Settings, tls: bool) -> std::io::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind((settings.bind, settings.port)).await?;
    let scheme = if tls { "https" } else { "http" };
    println!("listening on {scheme}://{}", listener.local_addr()?);
    Ok(listener)
}

async fn serve_app<S: crate::store::Store>(
    loops: crate::server::Loops,
    listener: tokio::net::TcpListener,
    app: App<S>,
    hangups: tokio::signal::unix::Signal,
    overrides: Overrides,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let app = Arc::new(app);
    tokio::spawn(reload_on_hangup(hangups, overrides, app.clone()));
    crate::server::run_on(loops, listener, app.clone(), tls, shutdown_signal()).await?;
    app.store().close().await
}

/// On every SIGHUP, reads the configuration again as at start (flags, environment, file) and
/// puts it in force whole; a file that does not load changes nothing.
async fn reload_on_hangup<S: crate::store::Store>(
    mut hangups: tokio::signal::unix::Signal,
    overrides: Overrides,
    app: Arc<App<S>>,
) {
    while hangups.recv().await.is_some() {
        let overrides = overrides.clone();
        match tokio::task::spawn_blocking(move || load(overrides)).await {
            Ok(Ok(settings)) => {
                let restart = app.reload(settings);
                tracing::info!("configuration reloaded");
                if !restart.is_empty() {
                    let keys = restart.join(", ");
                    tracing::warn!("changed but kept until a restart: {keys}");
                }
            }
            Ok(Err(e)) => {
                tracing::error!("configuration not reloaded, the one in force stays: {e}");
            }
            Err(e) => tracing::error!("configuration not reloaded: {e}"),
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
}

fn hash_password() -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        eprintln!("larder: cannot read the password from standard input");
        return ExitCode::from(EXIT_CONFIG);
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("larder: the password is empty");
        return ExitCode::from(EXIT_CONFIG);
    }
    match crate::auth::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("larder: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(args: ServeArgs) -> ExitCode {
    match args.settings() {
        Ok(settings) => {
            // The shared database and the bucket must answer too.
            if let Err(e) = reach_backends(&settings) {
                eprintln!("larder: {e}");
                return ExitCode::FAILURE;
            }
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "# configuration is valid; secrets are redacted");
            let _ = write!(out, "{}", settings.to_redacted_toml());
            let _ = writeln!(out, "\n# the rules, explained (the longest matching rule decides)");
            for line in crate::explain::rules(&settings).lines() {
                let _ = writeln!(out, "{}", format!("# {line}").trim_end());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("larder: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Connects to PostgreSQL and tries the bucket, when the settings name them.
fn reach_backends(settings: &Settings) -> std::io::Result<()> {
    if settings.database.is_none() && settings.bucket.is_none() {
        return Ok(());
    }
    crate::state::set_dependency_timeout(settings.dependency_timeout);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        if let Some(url) = &settings.database {
            connect(url).await?;
        }
        if let Some(at) = &settings.bucket {
            let bucket = crate::store::bucket::connect(at)?;
            crate::store::bucket::check(bucket.as_ref(), at).await?;
        }
        Ok(())
    })
}

fn explain(args: ExplainArgs) -> ExitCode {
    let fail = |message: String| {
        eprintln!("larder: {message}");
        ExitCode::from(EXIT_CONFIG)
    };
    let settings = match args.serve.settings() {
        Ok(settings) => settings,
        Err(e) => return fail(e.to_string()),
    };
    let path = match crate::path::ResourcePath::parse(&args.path) {
        Ok(path) => path,
        Err(e) => return fail(format!("`{}`: {e}", args.path)),
    };
    match crate::explain::principal(&settings, args.account.as_deref()) {
        Ok(principal) => {
            print!("{}", crate::explain::path(&settings, &path, &principal));
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("--as: {e}")),
    }
}

fn migrate(args: MigrateArgs) -> ExitCode {
    crate::telemetry::init(crate::telemetry::LogFormat::default());
    let fail = |message: String| {
        eprintln!("larder: {message}");
        ExitCode::from(EXIT_CONFIG)
    };
    let Some(root) = args.from.strip_prefix("file:").map(PathBuf::from) else {
        return fail(format!("--from `{}`: use file:ROOT", args.from));
    };
    let to = match crate::config::BucketAt::parse(&args.to) {
        Some(Ok(to)) => to,
        Some(Err(problem)) => return fail(format!("--to: {problem}")),
        None => return fail(format!("--to `{}`: use s3://BUCKET/PREFIX", args.to)),
    };
    if !crate::config::is_database_url(&args.to_state) {
        return fail("--to-state: use postgres://USER:PASSWORD@HOST/DATABASE".into());
    }
    let state_dir = args.from_state.clone().unwrap_or_else(|| root.join(".larder"));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let run = async {
        let sides = crate::migrate::open(&root, &state_dir, &to, &args.to_state).await?;
        let say = |line: &str| println!("{line}");
        let mut report = crate::migrate::Report::default();
        if !args.verify_only {
            match crate::migrate::refusal(&sides).await? {
                Some(why) if !args.force => {
                    let at = crate::config::redact_url(&args.to_state);
                    return Ok(Err(format!(
                        "refusing to write into {at}: {why}. Stop the nodes and pass --force \
                         to overwrite it with {}",
                        sides.name
                    )));
                }
                Some(why) => println!("writing anyway (--force): {why}"),
                None => {}
            }
            report = crate::migrate::copy(&sides, &say).await?;
        }
        crate::migrate::verify(&sides, &mut report).await?;
        Ok::<_, std::io::Error>(Ok(report))
    };
    match runtime.block_on(run) {
        Ok(Err(refused)) => {
            eprintln!("larder: migrate: {refused}");
            ExitCode::FAILURE
        }
        Ok(Ok(report)) => {
            println!(
                "copied {} resources ({} bytes), skipped {} already there, {} collections",
                report.copied, report.bytes, report.skipped, report.collections
            );
            println!(
                "deleted {} resources and collections, {} tokens and {} purchases the source \
                 no longer has",
                report.deleted, report.revoked.0, report.revoked.1
            );
            println!(
                "verified {} resources (BLAKE3 of the bytes, ETag, type, owner) and {} balances",
                report.verified, report.balances
            );
            for mismatch in &report.mismatches {
                println!("MISMATCH {mismatch}");
            }
            if report.mismatches.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("larder: migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn create_token(args: TokenArgs) -> ExitCode {
    let fail = |message: String| {
        eprintln!("larder: {message}");
        ExitCode::from(EXIT_CONFIG)
    };
    let has_config = args.config.is_some();
    let overrides = Overrides { config: args.config, state: args.state, ..Overrides::default() };
    let settings = match Settings::load(overrides, &|key| std::env::var(key).ok()) {
        Ok(settings) => settings,
        Err(e) => return fail(e.to_string()),
    };
    if (has_config || !settings.accounts.is_empty()) && !settings.accounts.contains_key(&args.name)
    {
        return fail(format!("no account named `{}` in the configuration", args.name));
    }
    let scope = match args.scope.as_deref().map(crate::path::ResourcePath::parse).transpose() {
        Ok(scope) => scope,
        Err(e) => return fail(format!("--scope: {e}")),
    };
    let expires_in = match args.expires.as_deref().map(crate::config::parse_duration).transpose() {
        Ok(expires) => expires,
        Err(e) => return fail(format!("--expires: {e}")),
    };
    if expires_in.is_some_and(|d| d > crate::auth::MAX_LIFETIME) {
        return fail("--expires: a token lives at most 100 years".into());
    }
    let request = crate::auth::TokenRequest { scope, read_only: args.read_only, expires_in };
    let (record, secret) = crate::auth::new_token(&args.name, &request);
    let state = match &settings.database {
        Some(url) => State::connect(url),
        None => State::open(&settings.state),
    };
    if let Err(e) = state.and_then(|state| state.insert_token(&record)) {
        let place = match &settings.database {
            Some(url) => crate::config::redact_url(url),
            None => settings.state.display().to_string(),
        };
        eprintln!("larder: cannot store the token in {place}: {e}");
        return ExitCode::FAILURE;
    }
    println!("{secret}");
    eprintln!(
        "token {} for {}: scope {}{}{}; shown once, stored only as a hash",
        record.id,
        record.account,
        record.scope,
        if record.read_only { ", read-only" } else { "" },
        match record.expires {
            Some(at) => format!(", expires at {at} (unix time)"),
            None => ", no expiry".to_owned(),
        }
    );
    ExitCode::SUCCESS
}
