//! The command line: argument definitions (with the help text of every flag), and the
//! commands `serve` (run every check in the background and serve the HTTP API),
//! `validate` (check a config and its plugins), `list` (every check and its state),
//! `migrate` (the host's tables), `usage` (the AI usage report), `check` (run one
//! plugin once under production limits), `wit` (print the plugin contract), `alert`
//! (test an alert channel), `rules` (Prometheus alerting rules) and `new` (write a plugin project).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::capabilities::sql::{Datasource, Datasources, RoleError};
use crate::config::{Compiler, Config};
use crate::health::CheckSet;
use crate::health::dropins::{self, Loader};
use crate::health::folder::{Folder, Scan};
use crate::health::load::Load;
use crate::listing;
use crate::runtime::{Compilation, Runtime};
use crate::scaffold::{self, Lang};
use crate::usage::UsageStore;
use crate::usage::report::{self, By};

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
    /// Apply the migrations of the host's tables (ai_usage, and the check history when
    /// it is kept in a database) and say what was applied.
    Migrate(DatabaseArgs),
    /// Print AI usage from the ai_usage table: calls, tokens and cost by operation,
    /// model, day or user, with the cost per active user.
    Usage(UsageArgs),
    /// Run one plugin once under production limits and print its report.
    ///
    /// Exit status: 0 pass, 1 warn, 2 fail, 3 could not run (load error, timeout,
    /// trap, limit broken, bad arguments) — the Nagios convention.
    Check(Box<CheckArgs>),
    /// Print the plugin contract (WIT) for generating bindings in any language.
    Wit,
    /// Print Prometheus alerting rules for the config's checks (down, stale, errors,
    /// SLO burn rate) and the host's own failures, to load beside the host's /metrics.
    Rules(ConfigArgs),
    /// Alerting's channels: `alert test CHANNEL` sends a test message and prints the
    /// channel's answer.
    Alert(alert::AlertArgs),
    /// Upload a component to a registry as a Wasm OCI artifact; prints its digest.
    Push(oci::PushArgs),
    /// Write a cosign key pair: PREFIX.key (sealed with $COSIGN_PASSWORD) and
    /// PREFIX.pub.
    Keygen(oci::KeygenArgs),
    /// Sign a plugin in a registry with a cosign key (a tag is resolved once; its
    /// digest is signed).
    Sign(oci::SignArgs),
    /// Pull and verify a plugin as `serve` would (digest, signature, component);
    /// exit status 1 when it is refused.
    Verify(oci::ReferenceArgs),
    /// Resolve each OCI tag of the config's checks and pin its digest in
    /// healthhost.lock beside the config.
    Lock(ConfigArgs),
    /// Write every OCI plugin of the config, with its signatures, into an OCI image
    /// layout folder, for hosts without the registry (`--registry-mirror`).
    Mirror(oci::MirrorArgs),
    /// Write a new plugin project: the check's source, its build script, a grant
    /// file, fixtures for pass, warn and fail, a test that runs them, and a README.
    New(NewArgs),
    /// The host's own compiler process: a component on stdin, its compiled artifact
    /// on stdout (see runtime/compile.rs).
    #[command(name = crate::runtime::CHILD_COMMAND, hide = true)]
    CompilePlugin(CompilePluginArgs),
    /// The host's SQL worker process: a datasource, then its plugin statements, on
    /// stdin, their rows on stdout (see capabilities/sql/worker.rs).
    #[command(name = crate::capabilities::sql::worker::CHILD_COMMAND, hide = true)]
    SqlWorker,
}

#[derive(Debug, Args)]
struct CompilePluginArgs {
    #[arg(long, value_enum)]
    compiler: Compiler,
    /// Bytes of writable memory the compile may use.
    #[arg(long)]
    memory_limit: u64,
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

    /// Do not apply the migrations of the host's tables at start: `ai_usage` in the
    /// usage datasource (`usage.datasource`, `main` by default) and the history tables
    /// in the history datasource (`history.datasource`, `main` by default).
    #[arg(long)]
    no_migrate: bool,

    /// Listen on this address instead of the config's `listen`, e.g. 0.0.0.0:8080.
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,

    /// Resolve OCI tags missing from healthhost.lock and add them to it, instead of
    /// refusing to start (the config's at start, dropped-in ones as they load).
    #[arg(long)]
    update_lock: bool,

    /// Load OCI plugins from this folder (written by `healthhost mirror`) before
    /// asking their registries; replaces the config's `registry_mirror`.
    #[arg(long, value_name = "PATH")]
    registry_mirror: Option<PathBuf>,
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
    ($($arg:tt)*) => { $crate::cli::emit(&format!($($arg)*)) };
}

/// `println!` through [`emit`].
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::emit(&format!("{}\n", format_args!($($arg)*))) };
}

mod alert;
mod check;
mod oci;
mod serve;

use check::CheckArgs;

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
        Command::Serve(args) => serve::serve(args),
        Command::Validate(args) => validate(args),
        Command::Alert(args) => alert::alert(args),
        Command::Rules(args) => {
            let config = Config::load(&args.config)?;
            let name = args
                .config
                .file_name()
                .unwrap_or_default()
                .to_string_lossy();
            out!("{}", crate::promrules::rules(&config, &name))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::List(args) => list(args),
        Command::Migrate(args) => migrate(args),
        Command::Usage(args) => usage_report(args),
        Command::Check(args) => check::check(*args),
        Command::Wit => {
            out!("{}", crate::WIT)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Push(args) => oci::push(args),
        Command::Keygen(args) => oci::keygen(args),
        Command::Sign(args) => oci::sign(args),
        Command::Verify(args) => oci::verify(args),
        Command::Lock(args) => oci::lock(args),
        Command::Mirror(args) => oci::mirror(args),
        Command::New(args) => new_project(args),
        Command::CompilePlugin(args) => {
            Ok(crate::runtime::child_main(args.compiler, args.memory_limit))
        }
        Command::SqlWorker => Ok(crate::capabilities::sql::worker::child_main()),
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

/// A runtime for `config`'s datasources, with its compile cache when one is
/// configured (a cache that cannot be opened only costs compile time).
fn open_runtime(
    config: &Config,
    lookups: Option<prometheus::IntCounterVec>,
) -> anyhow::Result<Runtime> {
    let mut runtime = Runtime::with_compiler(datasources(config), config.compiler)?;
    runtime.compile_in(child_compilation(
        config.compile_memory,
        config.compile_timeout,
    ));
    if let Some(dir) = &config.cache_dir
        && let Err(e) = runtime.use_cache(dir, lookups)
    {
        tracing::warn!("{e}; compiling plugins without a cache");
    }
    Ok(runtime)
}

/// The running executable, for the child processes it starts (compilers, SQLite
/// workers). On Linux it is `/proc/self/exe`: the very binary that is running, even
/// after a package upgrade replaced or deleted its file (a newer binary's artifacts
/// would not load here). `None`, with a warning, if it cannot be found.
fn this_executable(children: &str) -> Option<PathBuf> {
    let proc_exe = Path::new("/proc/self/exe");
    let exe = if proc_exe.exists() {
        Ok(proc_exe.to_owned())
    } else {
        std::env::current_exe()
    };
    exe.inspect_err(|e| {
        tracing::warn!("cannot find this executable ({e}); {children} in the host's own process")
    })
    .ok()
}

/// Plugins compiled by this executable in a child process with `memory_limit` and
/// `time_limit` (runtime/compile.rs says why), or in this process if the executable
/// cannot be found.
fn child_compilation(memory_limit: u64, time_limit: Duration) -> Compilation {
    match this_executable("compiling plugins") {
        Some(exe) => Compilation::Child {
            exe,
            memory_limit,
            time_limit,
        },
        None => Compilation::InProcess,
    }
}

/// Runs plugin statements on `datasources` in worker processes of this executable
/// (capabilities/sql/worker.rs says why), or in this process if it cannot be found.
fn isolate_sql(datasources: &mut Datasources) {
    if let Some(exe) = this_executable("running plugin statements") {
        datasources.run_in_workers(&exe);
    }
}

/// Every check of the config file and of its plugins folder, each as far as it loads.
async fn everything(mut config: Config, path: &Path) -> anyhow::Result<(Arc<Config>, CheckSet)> {
    let store = oci::prepare(&mut config, path, oci::Unlocked::Report, None)
        .await?
        .map(Arc::new);
    let config = Arc::new(config);
    let runtime = Arc::new(open_runtime(&config, None)?);
    let mut folder = Folder::new(config.clone(), None);
    let scan = Scan {
        retry_failed: true,
        settle: Duration::ZERO,
    };
    let (mut set, loads) = initial_set(&config, &mut folder, scan);
    let loader = Loader::new(runtime, store, None, config.compile_concurrency);
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
    for spec in &config.datasources {
        all.insert(Datasource::new(spec.clone()));
    }
    isolate_sql(&mut all);
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
        .filter(|spec| granted.contains(spec.name()))
        .map(|spec| async move {
            let datasource = Datasource::new(spec.clone());
            (
                spec,
                tokio::time::timeout(ROLE_CHECK_TIMEOUT, datasource.check_role()).await,
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
    let (config, set) = tokio.block_on(everything(config, &args.config))?;
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
    let names: Vec<&str> = set.entries.keys().map(String::as_str).collect();
    let (rule_errors, notes) = alert::rule_problems(&config, &names);
    for note in notes {
        eprintln!("note: {note}");
    }
    if !rule_errors.is_empty() {
        bail!("{}", rule_errors.join("\n"));
    }
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
    let (_, set) = tokio.block_on(everything(config, &args.config.config))?;
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
        return Ok(crate::dburl::normalize_url(&url).into_owned());
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

/// Applies the migrations of `ai_usage` (to `--database-url` or the usage datasource)
/// and of the history tables (to `--database-url` or the history datasource, if any).
fn migrate(args: DatabaseArgs) -> anyhow::Result<ExitCode> {
    let history = match &args.database_url {
        Some(url) => Some(crate::dburl::normalize_url(url).into_owned()),
        None => Config::load(&args.config.config)?
            .history_datasource()
            .map(|d| d.url().to_owned()),
    };
    let usage = usage_url(args)?;
    let tokio = current_thread()?;
    let mut applied = tokio.block_on(crate::migrate::migrate(&usage, &crate::migrate::USAGE))?;
    if let Some(url) = history {
        applied.extend(tokio.block_on(crate::migrate::migrate(&url, &crate::migrate::HISTORY))?);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
