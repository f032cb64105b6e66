//! The command line: argument definitions (with the help text of every flag), and the
//! commands `serve` (run every check in the background and serve the HTTP API),
//! `validate` (check a config and its plugins), `list` (every check and its state),
//! `migrate` (the host's tables), `usage` (the AI usage report), `check` (run one
//! plugin once under production limits), `wit` (print the plugin contract) and `new`
//! (write a plugin project).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::capabilities::Grants;
use crate::capabilities::fixtures::Fixtures;
use crate::capabilities::http::HttpPolicy;
use crate::capabilities::sql::{Datasource, Datasources, RoleError, SqlPolicy};
use crate::config::Config;
use crate::diagnose::Diagnostics;
use crate::dropins::{self, Folder, Load, Loader, Scan};
use crate::escape::escape_controls;
use crate::health::{CheckSet, Health};
use crate::limits::Limits;
use crate::listing;
use crate::metrics::Metrics;
use crate::runtime::{Compiler, RunReport, Runtime};
use crate::scaffold::{self, Lang};
use crate::server;
use crate::units;
use crate::usage::ingest::Ingest;
use crate::usage::report::{self, By};
use crate::usage::{self, UsageStore};

/// Exit status when a check could not run at all (Nagios UNKNOWN); also used for
/// usage errors, so a monitoring system never mistakes a typo for a verdict.
pub const EXIT_COULD_NOT_RUN: u8 = 3;

/// Runs service health checks as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "healthhost", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every configured check in the background and serve /health, /livez,
    /// /readyz and /metrics.
    Serve(ServeArgs),
    /// Check a config file and load every plugin it names and every plugin of its
    /// plugins folder; report all problems at once.
    Validate(ConfigArgs),
    /// List every check (config and plugins folder): source, file hash, grants,
    /// limits, interval, load status, and the last outcome a running host reports.
    List(ListArgs),
    /// Apply the migrations of the host's tables (ai_usage) and say what was applied.
    Migrate(DatabaseArgs),
    /// Print AI usage from the ai_usage table: calls, tokens and cost by operation,
    /// model, day or user, with the cost per active user.
    Usage(UsageArgs),
    /// Run one plugin once under production limits and print its report.
    ///
    /// Exit status: 0 pass, 1 warn, 2 fail, 3 could not run (load error, timeout,
    /// trap, limit broken, bad arguments) — the Nagios convention.
    Check(CheckArgs),
    /// Print the plugin contract (WIT) for generating bindings in any language.
    Wit,
    /// Write a new plugin project: the check's source, its build script, a grant
    /// file, fixtures for pass, warn and fail, a test that runs them, and a README.
    New(NewArgs),
}

#[derive(Debug, Args)]
struct NewArgs {
    /// The check's name: a letter, then letters, digits, '-' and '_'.
    name: String,

    /// The language of the project.
    #[arg(long, value_enum)]
    lang: Lang,

    /// The folder to create [default: NAME in the current folder]; it must not exist.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ConfigArgs {
    /// The configuration file; relative paths in it are relative to its folder.
    #[arg(long, short, value_name = "FILE", default_value = "config.toml")]
    config: PathBuf,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    config: ConfigArgs,

    /// Print JSON (an array, one object per check) instead of text.
    #[arg(long)]
    json: bool,

    /// The running host to ask for each check's last outcome, e.g.
    /// http://127.0.0.1:8080 [default: the config's listen address].
    #[arg(long, value_name = "URL")]
    host: Option<url::Url>,
}

#[derive(Debug, Args)]
struct DatabaseArgs {
    #[command(flatten)]
    config: ConfigArgs,

    /// The database holding ai_usage [default: the config's `usage.datasource`, `main`
    /// unless set, whose URL DATABASE_URL overrides].
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

#[derive(Debug, Args)]
struct UsageArgs {
    #[command(flatten)]
    database: DatabaseArgs,

    /// Rows created within this long before now, e.g. 24h, 7d, 30d.
    #[arg(long, value_name = "DURATION", default_value = report::DEFAULT_SINCE, value_parser = report::parse_since)]
    since: Duration,

    /// Group rows by operation, model, day (the database's date) or user.
    #[arg(long, value_enum, default_value_t = By::Operation)]
    by: By,

    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,

    /// Do not apply migrations to the `main` datasource at start.
    #[arg(long)]
    no_migrate: bool,

    /// Listen on this address instead of the config's `listen`, e.g. 0.0.0.0:8080.
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The plugin: a WebAssembly component (.wasm) built for the healthhost:plugin/check world.
    plugin: PathBuf,

    /// The check's name in logs and output [default: the file name without extension].
    #[arg(long)]
    name: Option<String>,

    /// Allow HTTP requests to this origin, e.g. https://api.telegram.org or
    /// http://127.0.0.1:8080 (repeatable; `*` allows any origin).
    #[arg(long = "allow-http", value_name = "ORIGIN")]
    allow_http: Vec<String>,

    /// Define a datasource and grant it to the check, e.g.
    /// main=postgres://user@127.0.0.1:5432/app, main=sqlite:data/app.db,
    /// main=mysql://root@127.0.0.1:3306/test (repeatable).
    #[arg(long = "datasource", value_name = "NAME=URL")]
    datasources: Vec<String>,

    /// Let the check use datasource NAME although its role can run programs or read
    /// and write files on the database server (a superuser, say). Without it such a
    /// datasource is refused (repeatable).
    #[arg(long = "unsafe-allow-privileged-role", value_name = "NAME")]
    unsafe_allow_privileged_role: Vec<String>,

    /// Give the check a setting (repeatable; overrides the grant file's).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,

    /// Give the check a secret setting read from an environment variable (repeatable).
    /// Secrets are removed from every output. An unset variable leaves the key unset.
    #[arg(long = "secret-env", value_name = "KEY=ENVVAR")]
    secrets: Vec<String>,

    /// Take grants, settings and limits from a grant file, as `serve` does for a
    /// dropped-in NAME.toml; the flags above add to it and override it.
    #[arg(long, value_name = "FILE")]
    grants: Option<PathBuf>,

    /// Answer the check's HTTP requests and SQL queries from a fixtures file instead
    /// of the network and the databases (repeatable; see README, "Writing a plugin").
    /// Grants and limits still apply; a call no fixture answers is refused.
    #[arg(long, value_name = "FILE")]
    fixtures: Vec<PathBuf>,

    /// A quick HTTP fixture: '[METHOD] URL -> STATUS [BODY]', e.g.
    /// 'GET http://127.0.0.1:8080/status -> 200 {"status":"ok"}' (repeatable).
    #[arg(long, value_name = "SPEC")]
    respond: Vec<String>,

    /// A quick SQL fixture: 'DATASOURCE: STATEMENT -> ROWS', ROWS a JSON array of
    /// rows or 'error: TEXT', e.g. 'main: SELECT count(*) FROM jobs -> [[3]]'
    /// (repeatable).
    #[arg(long, value_name = "SPEC")]
    sql: Vec<String>,

    /// Wall-clock limit for the run, e.g. 3s or 500ms [default: the grant file's, or 10s].
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    timeout: Option<Duration>,

    /// Fuel limit (about one unit per WebAssembly instruction) [default: the grant
    /// file's, or 5000000000].
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,

    /// Linear-memory limit, e.g. 16MiB [default: the grant file's, or 64MiB].
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size)]
    memory: Option<u64>,

    /// The code generator: cranelift compiles slowest and runs fastest (what `serve`
    /// uses by default), winch compiles fastest.
    #[arg(long, value_enum, default_value_t = Compiler::Cranelift)]
    compiler: Compiler,

    /// Print the report as JSON.
    #[arg(long)]
    json: bool,

    /// Where compiled plugins are kept, so that checking an unchanged plugin again
    /// does not compile it again (default: serve's, `$XDG_CACHE_HOME/healthhost`).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Compile the plugin without reading or writing the compile cache.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
}

/// Writes `text` to stdout. A reader that went away (`healthhost list | head`) is
/// not an error: the rest of the output is dropped and the command still ends with
/// its own exit status.
fn emit(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// `print!` through [`emit`].
macro_rules! out {
    ($($arg:tt)*) => { emit(&format!($($arg)*)) };
}

/// `println!` through [`emit`].
macro_rules! outln {
    ($($arg:tt)*) => { emit(&format!("{}\n", format_args!($($arg)*))) };
}

/// Prints a command-line error (help and version go to stdout with status 0).
pub fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = error.print();
        return ExitCode::from(EXIT_COULD_NOT_RUN);
    }
    // clap's first line names the problem; the rest is usage, available with --help.
    let text = error.render().to_string();
    let first = text.lines().next().unwrap_or("invalid arguments");
    eprintln!("{first} (see healthhost --help)");
    ExitCode::from(EXIT_COULD_NOT_RUN)
}

/// Logs go to stderr, so `--json` output on stdout stays clean. `HEALTHHOST_LOG` (or
/// `RUST_LOG`) sets the filter; plugin log lines are shown by default.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("HEALTHHOST_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "warn,healthhost=info".to_owned());
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Runs a parsed command line and returns the process's exit status.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Validate(args) => validate(args),
        Command::List(args) => list(args),
        Command::Migrate(args) => migrate(args),
        Command::Usage(args) => usage_report(args),
        Command::Check(args) => check(args),
        Command::Wit => {
            out!("{}", crate::WIT)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::New(args) => new_project(args),
    }
}

fn new_project(args: NewArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    let files = scaffold::create(&args.name, args.lang, &dir)?;
    outln!(
        "created {} ({} check '{}'):",
        dir.display(),
        args.lang.name(),
        args.name
    )?;
    for file in files {
        outln!("  {file}")?;
    }
    outln!(
        "next: cd {} && ./test.sh   (builds {}.wasm, then runs it on fixtures/pass.toml, warn.toml and fail.toml; see README.md)",
        dir.display(),
        args.name
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Everything `serve` and `validate` need: a runtime with the config's datasources
/// and every check loaded. Load errors are collected and reported together.
/// A runtime for `config`'s datasources, with its compile cache when one is
/// configured (a cache that cannot be opened only costs compile time).
fn open_runtime(
    config: &Config,
    lookups: Option<prometheus::IntCounterVec>,
) -> anyhow::Result<Runtime> {
    let mut runtime = Runtime::with_compiler(datasources(config), config.compiler)?;
    if let Some(dir) = &config.cache_dir
        && let Err(e) = runtime.use_cache(dir, lookups)
    {
        tracing::warn!("{e}; compiling plugins without a cache");
    }
    Ok(runtime)
}

/// Every check of the config file and of its plugins folder, each as far as it loads.
async fn everything(config: Config) -> anyhow::Result<(Arc<Config>, CheckSet)> {
    let config = Arc::new(config);
    let runtime = Arc::new(open_runtime(&config, None)?);
    let mut folder = Folder::new(config.clone());
    let scan = Scan {
        retry_failed: true,
        settle: Duration::ZERO,
    };
    let (mut set, loads) = initial_set(&config, &mut folder, scan);
    let loader = Loader::new(config.clone(), runtime, None, config.compile_concurrency);
    for (name, entry) in loader.load_all(loads).await {
        set.entries.insert(name, entry);
    }
    Ok((config, set))
}

/// The config file's checks and the plugins folder's, all marked loading, and their
/// loads.
fn initial_set(config: &Config, folder: &mut Folder, scan: Scan) -> (CheckSet, Vec<Load>) {
    let (set, mut loads) = dropins::configured(config);
    match folder.scan(&set, scan) {
        Some((next, more)) => {
            loads.extend(more);
            (next, loads)
        }
        None => (set, loads),
    }
}

fn datasources(config: &Config) -> Datasources {
    let mut all = Datasources::default();
    for ds in &config.datasources {
        all.insert(ds.clone());
    }
    all
}

/// Refuses to start when a datasource that a configured check is granted connects
/// as a role with powers over the database server (unless the operator allowed it). A
/// database that cannot be reached now is checked on first use instead.
async fn check_roles(config: &Config) -> anyhow::Result<()> {
    let granted: BTreeSet<&str> = config
        .checks
        .iter()
        .flat_map(|c| c.grants.sql.names())
        .collect();
    let checks = config
        .datasources
        .iter()
        .filter(|d| granted.contains(d.name()))
        .map(|d| async move {
            (
                d,
                tokio::time::timeout(ROLE_CHECK_TIMEOUT, d.check_role()).await,
            )
        });
    let mut refused = Vec::new();
    for (datasource, result) in futures_util::future::join_all(checks).await {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e @ RoleError::Privileged { .. })) => refused.push(e.to_string()),
            Ok(Err(e)) => tracing::warn!("{e}; it is checked again on first use"),
            Err(_) => tracing::warn!(
                "datasource '{}': no answer within {ROLE_CHECK_TIMEOUT:?} to check its role; it is checked again on first use",
                datasource.name()
            ),
        }
    }
    if !refused.is_empty() {
        bail!("{}", refused.join("\n"));
    }
    Ok(())
}

/// How long start-up waits for a database to answer the role check.
const ROLE_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

fn validate(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let tokio = current_thread()?;
    tokio.block_on(check_roles(&config))?;
    let (config, set) = tokio.block_on(everything(config))?;
    let errors: Vec<String> = set
        .entries
        .values()
        .filter_map(|e| {
            e.load_error
                .as_ref()
                .map(|why| format!("{}: {why}", e.file.display()))
        })
        .chain(
            set.rejected
                .iter()
                .map(|(file, why)| format!("{}: {why}", file.display())),
        )
        .collect();
    if !errors.is_empty() {
        bail!(
            "{} plugin(s) failed to load:\n  {}",
            errors.len(),
            errors.join("\n  ")
        );
    }
    outln!(
        "{}: ok, {} check(s), {} datasource(s)",
        args.config.display(),
        set.entries.len(),
        config.datasources.len()
    )?;
    Ok(ExitCode::SUCCESS)
}

fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config.config)?;
    let host = match args.host {
        Some(url) => url,
        None => listing::local_url(config.listen),
    };
    let tokio = current_thread()?;
    let (_, set) = tokio.block_on(everything(config))?;
    let host = tokio.block_on(listing::running_host(&host));
    let rows = listing::rows(&set, host.as_ref());
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&rows)?)?;
    } else {
        out!("{}", listing::human(&rows, host.is_some()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The URL of the database holding `ai_usage`: `--database-url`, or the config's
/// usage datasource.
fn usage_url(args: DatabaseArgs) -> anyhow::Result<String> {
    if let Some(url) = args.database_url {
        return Ok(crate::capabilities::sql::normalize_url(&url).into_owned());
    }
    let config = Config::load(&args.config.config)?;
    let datasource = config.usage_datasource().with_context(|| {
        format!(
            "{} defines no [datasources.{}]: pass --database-url",
            args.config.config.display(),
            config.usage.datasource
        )
    })?;
    Ok(datasource.url().to_owned())
}

fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn migrate(args: DatabaseArgs) -> anyhow::Result<ExitCode> {
    let url = usage_url(args)?;
    let applied = current_thread()?.block_on(usage::migrate(&url))?;
    if applied.is_empty() {
        outln!("nothing to apply: the database is up to date")?;
    }
    for m in applied {
        outln!("applied {} {}", m.version, m.description)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn usage_report(args: UsageArgs) -> anyhow::Result<ExitCode> {
    let url = usage_url(args.database)?;
    let report = current_thread()?.block_on(async {
        let store = UsageStore::lazy(&url)?;
        report::report(&store, args.by, args.since).await
    })?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report.to_json())?)?;
    } else {
        out!("{}", report.to_table())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config.config)?;
    let listen = args.listen.unwrap_or(config.listen);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async {
        check_roles(&config).await?;
        let usage_datasource = config.usage_datasource();
        if !args.no_migrate
            && config.usage.migrate
            && let Some(datasource) = usage_datasource
        {
            // A database that is down must not keep the host from reporting it.
            match usage::migrate(datasource.url()).await {
                Ok(applied) => {
                    for m in applied {
                        tracing::info!("applied migration {} {}", m.version, m.description);
                    }
                }
                Err(e @ usage::MigrationError::Foreign) => tracing::info!("{e}"),
                Err(e) => tracing::warn!("cannot migrate datasource '{}': {e}", datasource.name()),
            }
        }
        let metrics = Arc::new(Metrics::new(&config.namespace)?);
        let runtime = Arc::new(open_runtime(&config, Some(metrics.compile_cache.clone()))?);
        // Config validation guarantees the datasource when there is a token.
        let ingest = match (&config.usage.token, usage_datasource) {
            (Some(token), Some(datasource)) => {
                let store = UsageStore::lazy(datasource.url())?;
                tracing::info!("recording ai usage on POST {}", server::AI_USAGE_PATH);
                Some(Arc::new(Ingest::new(
                    token.clone(),
                    config.usage.max_batch,
                    config.usage.max_label_values,
                    store,
                    metrics.clone(),
                )))
            }
            _ => None,
        };
        let health = Arc::new(Health::new(
            runtime.clone(),
            metrics.clone(),
            config.max_concurrent_runs,
            config.startup_grace,
        ));
        let config = Arc::new(config);
        // Every check is listed as loading at once; they compile after the listener
        // is up, so probes get answers from the first moment.
        let mut folder = Folder::new(config.clone());
        let first = Scan {
            retry_failed: true,
            settle: dropins::SETTLE_TIME,
        };
        let loads = health
            .edit(|_| Some(initial_set(&config, &mut folder, first)))
            .unwrap_or_default();
        let loader = Loader::new(
            config.clone(),
            runtime,
            Some(metrics.clone()),
            config.compile_concurrency,
        );
        let state = Arc::new(server::AppState {
            health: health.clone(),
            metrics,
            show_details: config.show_details,
            details_token: config.details_token.clone(),
            ingest,
            bodies: server::HealthBodies::default(),
        });
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let checks = health.set().entries.len();
        tracing::info!(
            "listening on http://{} with {checks} check(s) to load",
            listener.local_addr()?
        );
        loader.spawn(loads, health.clone());
        let watcher = tokio::spawn(dropins::watch(
            folder,
            loader,
            health.clone(),
            config.watch_interval,
        ));
        let shutdown = {
            let health = health.clone();
            let delay = config.shutdown_delay;
            async move {
                let signal = shutdown_signal().await;
                health.begin_shutdown();
                if signal == Signal::Terminate {
                    tracing::info!(
                        "SIGTERM: /readyz now answers 503; serving for {} more",
                        humantime::format_duration(delay)
                    );
                    // Keep serving while load balancers notice; a second signal cuts
                    // it short.
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {},
                        _ = shutdown_signal() => {},
                    }
                } else {
                    tracing::info!("SIGINT: stopping");
                }
            }
        };
        axum::serve(listener, server::router(state))
            .with_graceful_shutdown(shutdown)
            .await?;
        watcher.abort();
        health.stop();
        tracing::info!("stopped");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The signals that stop `serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// SIGINT (Ctrl-C): a person at a terminal; stop at once.
    Interrupt,
    /// SIGTERM: an orchestrator; drain for `shutdown_delay` first.
    Terminate,
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C), saying which.
async fn shutdown_signal() -> Signal {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => Signal::Interrupt,
        () = term => Signal::Terminate,
    }
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => default_name(&args.plugin)?,
    };
    let fixtures = fixtures_from_flags(&args)?;
    let setup = check_setup(&args, &name, fixtures.as_ref())?;
    let tokio = current_thread()?;
    let mut runtime = Runtime::with_compiler(setup.datasources, args.compiler)?;
    if !args.no_cache {
        let dir = args
            .cache_dir
            .clone()
            .unwrap_or_else(crate::cache::default_dir);
        if let Err(e) = runtime.use_cache(&dir, None) {
            // Only slower: the plugin is compiled without the cache.
            tracing::warn!("{e}; compiling without a cache");
        }
    }
    let settings = setup.grants.settings.clone();
    let mut plugin = runtime.load_file(&name, &args.plugin, None, setup.grants, setup.limits)?;
    if let Some(fixtures) = fixtures {
        plugin = plugin.with_fixtures(fixtures);
    }
    let report = tokio.block_on(runtime.run(&Arc::new(plugin)));
    let diagnostics = Diagnostics::of(&report, &settings, &setup.metrics);
    if args.json {
        let mut json = serde_json::to_value(&report)?;
        json["diagnostics"] = serde_json::to_value(&diagnostics)?;
        outln!("{}", serde_json::to_string_pretty(&json)?)?;
    } else {
        out!("{}{}", human(&report), diagnostics.human())?;
    }
    Ok(ExitCode::from(report.outcome.exit_code()))
}

/// The fixtures of `--fixtures`, `--respond` and `--sql`, in that order; `None` when
/// there are none (the check then reaches the network and the databases).
fn fixtures_from_flags(args: &CheckArgs) -> anyhow::Result<Option<Fixtures>> {
    let mut all = Fixtures::default();
    for path in &args.fixtures {
        all.extend(Fixtures::load(path)?);
    }
    for spec in &args.respond {
        all.extend(Fixtures::respond_flag(spec)?);
    }
    for spec in &args.sql {
        all.extend(Fixtures::sql_flag(spec)?);
    }
    let given = !args.fixtures.is_empty() || !args.respond.is_empty() || !args.sql.is_empty();
    Ok(given.then_some(all))
}

/// What `check` runs a plugin with: the grant file's grants, settings and limits (or
/// none), with the flags' added and overriding.
struct CheckSetup {
    grants: Grants,
    datasources: Datasources,
    limits: Limits,
    metrics: BTreeSet<String>,
}

fn check_setup(
    args: &CheckArgs,
    name: &str,
    fixtures: Option<&Fixtures>,
) -> anyhow::Result<CheckSetup> {
    let env = |var: &str| std::env::var(var).ok();
    let file = match &args.grants {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read grant file {}", path.display()))?;
            let check =
                crate::config::grant_file(name, args.plugin.clone(), Some(&text), &env, None)
                    .map_err(|problems| {
                        anyhow::anyhow!(crate::problems::render(
                            &path.display().to_string(),
                            &problems
                        ))
                    })?;
            Some(check)
        }
        None => None,
    };
    let (mut grants, limits, metrics) = match file {
        Some(c) => (c.grants, c.limits, c.metrics),
        None => (Grants::default(), Limits::default(), BTreeSet::new()),
    };
    let mut origins = grants.http.entries();
    origins.extend(args.allow_http.iter().cloned());
    grants.http = HttpPolicy::parse(&origins)?;

    let mut datasources = Datasources::default();
    let mut names: Vec<String> = grants.sql.names().map(str::to_owned).collect();
    for pair in &args.datasources {
        let (ds, url) = split_pair("--datasource", pair)?;
        let allow = args.unsafe_allow_privileged_role.iter().any(|n| n == ds);
        datasources.insert(Datasource::parse(ds, url)?.unsafe_allow_privileged_role(allow));
        names.push(ds.to_owned());
    }
    if fixtures.is_none()
        && let Some(missing) = names.iter().find(|n| datasources.get(n).is_none())
    {
        bail!(
            "the grant file grants datasource '{missing}', which is not defined: pass --datasource {missing}=URL, or answer its queries with --fixtures or --sql"
        );
    }
    grants.sql = SqlPolicy::new(names);

    for pair in &args.settings {
        let (key, value) = split_pair("--set", pair)?;
        grants.settings.set(key, value);
    }
    for pair in &args.secrets {
        let (key, var) = split_pair("--secret-env", pair)?;
        match std::env::var(var) {
            Ok(value) => grants.settings.set_secret(key, value),
            Err(std::env::VarError::NotPresent) => {
                tracing::warn!("environment variable {var} is not set; setting '{key}' stays unset")
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                bail!("environment variable {var} is not valid UTF-8")
            }
        }
    }
    let limits = Limits {
        timeout: args.timeout.unwrap_or(limits.timeout),
        fuel: args.fuel.unwrap_or(limits.fuel),
        memory: args.memory.unwrap_or(limits.memory),
    };
    Ok(CheckSetup {
        grants,
        datasources,
        limits,
        metrics,
    })
}

fn default_name(plugin: &Path) -> anyhow::Result<String> {
    plugin
        .file_stem()
        .and_then(|s| s.to_str())
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "cannot derive a check name from '{}': pass --name",
                plugin.display()
            )
        })
}

/// Splits `KEY=VALUE`, naming the flag when the `=` is missing.
fn split_pair<'a>(flag: &str, pair: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    match pair.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key, value)),
        _ => bail!("invalid {flag} '{pair}': expected KEY=VALUE"),
    }
}

/// The report for people: verdict line, measurements, samples, dropped samples. The
/// plugin's text has its control characters escaped, so it cannot forge lines or
/// drive the terminal.
fn human(report: &RunReport) -> String {
    let outcome = report.outcome.label().to_uppercase();
    let kind = match report.outcome {
        crate::runtime::Outcome::Error(_) => "ERROR ",
        _ => "",
    };
    let mut out = format!("{}: {kind}{outcome}", escape_controls(&report.check));
    if let Some(message) = &report.message {
        out.push_str(&format!(" - {}", escape_controls(message)));
    }
    out.push('\n');
    out.push_str(&format!(
        "  latency {:.2} ms, fuel {}, peak memory {:.2} MiB\n",
        report.latency.as_secs_f64() * 1000.0,
        report.fuel_consumed,
        report.peak_memory_bytes as f64 / (1024.0 * 1024.0)
    ));
    for sample in &report.samples {
        let labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_controls(v)))
            .collect();
        out.push_str(&format!(
            "  {}{{{}}} {}\n",
            sample.name,
            labels.join(","),
            sample.value
        ));
    }
    if !report.samples_dropped.is_empty() {
        let reasons: Vec<String> = report
            .samples_dropped
            .iter()
            .map(|(reason, n)| format!("{} {n}", reason.label()))
            .collect();
        out.push_str(&format!("  samples dropped: {}\n", reasons.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_need_a_key_and_an_equals_sign() {
        assert_eq!(split_pair("--set", "a=b=c").unwrap(), ("a", "b=c"));
        assert_eq!(split_pair("--set", "a=").unwrap(), ("a", ""));
        for bad in ["a", "=b", ""] {
            let err = split_pair("--set", bad).unwrap_err().to_string();
            assert!(
                err.contains("--set") && err.contains(&format!("'{bad}'")),
                "{err}"
            );
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
