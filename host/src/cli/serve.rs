//! `healthhost serve`: migrate, listen, load every check in the background, watch the
//! plugins folder, and stop on SIGTERM (after draining) or SIGINT (at once).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::{ServeArgs, check_roles, initial_set, oci, open_runtime};
use crate::alerts::Alerts;
use crate::config::Config;
use crate::dbpool::DbPool;
use crate::health::dropins::{self, Loader};
use crate::health::folder::{Folder, Scan};
use crate::health::load::Load;
use crate::health::{Health, slo};
use crate::journal::{Journal, prune};
use crate::limits::HISTORY_STOP_FLUSH;
use crate::metrics::Metrics;
use crate::migrate::{self, MigrationError};
use crate::runtime::Runtime;
use crate::server;
use crate::server::HistoryStore;
use crate::usage::UsageStore;
use crate::usage::ingest::Ingest;
use crate::usage::summary::Reader;

pub(super) fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(&args.config.config)?;
    let listen = args.listen.unwrap_or(config.listen);
    raise_open_files_limit();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served = tokio.block_on(async {
        check_roles(&config).await?;
        let mirror = args.registry_mirror.as_deref();
        let unlocked = if args.update_lock {
            oci::Unlocked::Add
        } else {
            oci::Unlocked::Refuse
        };
        let oci = oci::prepare(&mut config, &args.config.config, unlocked, mirror)
            .await?
            .map(|store| Arc::new(store.waiting()));
        if !args.no_migrate {
            migrate_own_tables(&config).await;
        }
        let metrics = Arc::new(Metrics::new(&config.namespace)?);
        let runtime = Arc::new(open_runtime(
            &config,
            Some(metrics.plugins.compile_cache.clone()),
        )?);
        let (ingest, usage_reader) = usage_endpoints(&config, &metrics)?;
        // Bound first: the history's node name has the port, ephemeral or not.
        let (listener, port) = bind(listen).await?;
        let node = node_name(&config, port);
        let (health, history) = start_health(&config, &runtime, &metrics, &node)?;
        let config = Arc::new(config);
        let (folder, loads, loader) = first_loads(&config, &health, &runtime, oci, &metrics);
        let state = Arc::new(server::AppState {
            health: health.clone(),
            metrics,
            show_details: config.show_details,
            details_token: config.details_token.clone(),
            ingest,
            usage_reader,
            bodies: server::HealthBodies::default(),
            history_store: history.as_ref().map(|h| h.store.clone()),
            node,
            alerts: history.as_ref().and_then(|h| h.alerts.clone()),
            page_cache: Default::default(),
        });
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
        axum::serve(listener, server::router(state))
            .with_graceful_shutdown(drain(health.clone(), config.shutdown_delay))
            .await?;
        watcher.abort();
        health.stop();
        runtime.stop_compiles();
        if let Some(history) = history {
            history.flush().await;
        }
        tracing::info!("stopped");
        anyhow::Ok(())
    });
    // Blocking work still running (a compile being killed, a plugin file being read)
    // gets a moment, not a veto: the process exits either way.
    tokio.shutdown_timeout(STOP_GRACE);
    served?;
    Ok(ExitCode::SUCCESS)
}

/// Every check listed as loading at once (they compile after the listener is up, so
/// probes get answers from the first moment): the plugins folder, the loads, and the
/// loader that compiles them.
fn first_loads(
    config: &Arc<Config>,
    health: &Arc<Health>,
    runtime: &Arc<Runtime>,
    oci: Option<Arc<crate::oci::Oci>>,
    metrics: &Arc<Metrics>,
) -> (Folder, Vec<Load>, Arc<Loader>) {
    let lock = oci
        .as_ref()
        .and_then(|o| o.lock_path())
        .map(std::path::Path::to_owned);
    let mut folder = Folder::new(config.clone(), lock);
    let first = Scan {
        retry_failed: true,
        settle: dropins::SETTLE_TIME,
    };
    let loads = health
        .edit(|_| Some(initial_set(config, &mut folder, first)))
        .unwrap_or_default();
    let loader = Loader::new(
        runtime.clone(),
        oci,
        Some(metrics.clone()),
        config.compile_concurrency,
    );
    (folder, loads, loader)
}

/// The listener on `listen`, and the port it got.
async fn bind(listen: std::net::SocketAddr) -> anyhow::Result<(tokio::net::TcpListener, u16)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let port = listener.local_addr()?.port();
    Ok((listener, port))
}

/// Applies the migrations of the host's own tables that the config asks for: `ai_usage`
/// in the usage datasource, the history tables in the history one. A database that is
/// down must not keep the host from reporting it.
async fn migrate_own_tables(config: &Config) {
    let usage = config.usage_datasource().filter(|_| config.usage.migrate);
    let history = config
        .history_datasource()
        .filter(|_| config.history.migrate);
    for (datasource, set) in [(usage, &*migrate::USAGE), (history, &*migrate::HISTORY)] {
        let Some(datasource) = datasource else {
            continue;
        };
        match migrate::migrate(datasource.url(), set).await {
            Ok(applied) => {
                for m in applied {
                    tracing::info!("applied migration {} {}", m.version, m.description);
                }
            }
            Err(e @ MigrationError::Foreign { .. }) => tracing::info!("{e}"),
            Err(e) => tracing::warn!("cannot migrate datasource '{}': {e}", datasource.name()),
        }
    }
}

/// The history writer while it runs.
struct HistoryWriter {
    /// The store's pool (the writer's, pruning's, and the readers') and the journal.
    store: HistoryStore,
    task: tokio::task::JoinHandle<()>,
    /// Pruning, the SLO gauges' refresh and alerting, stopped with the writer.
    others: Vec<tokio::task::JoinHandle<()>>,
    /// Alerting, when rules are configured.
    alerts: Option<Arc<Alerts>>,
}

/// Health for the config's checks, every result it records also queued for the
/// history store when the config keeps one (the writer then runs until flushed).
fn start_health(
    config: &Config,
    runtime: &Arc<Runtime>,
    metrics: &Arc<Metrics>,
    node: &str,
) -> anyhow::Result<(Arc<Health>, Option<HistoryWriter>)> {
    let health = Health::new(
        runtime.clone(),
        metrics.clone(),
        config.max_concurrent_runs,
        config.startup_grace,
    );
    let Some((journal, pool)) = open_journal(config, node, metrics)? else {
        return Ok((Arc::new(health), None));
    };
    let mut health = health.with_journal(journal.clone());
    let task = tokio::spawn(journal.clone().run(pool.clone()));
    let mut others = vec![tokio::spawn(prune::run(
        pool.clone(),
        config.history.retention,
    ))];
    let alerts = Alerts::start(
        Arc::new(config.alerts.clone()),
        pool.clone(),
        node.to_owned(),
        metrics.clone(),
    );
    let alerts = match alerts {
        Some((alerts, tasks)) => {
            health = health.with_alerts(alerts.clone());
            others.extend(tasks);
            Some(alerts)
        }
        None => None,
    };
    let health = Arc::new(health);
    others.push(tokio::spawn(slo::watch(
        health.clone(),
        metrics.clone(),
        pool.clone(),
    )));
    let writer = HistoryWriter {
        store: HistoryStore { pool, journal },
        task,
        others,
        alerts,
    };
    Ok((health, Some(writer)))
}

/// This host's name in the check history: `[history] node`, or this machine's name
/// and `port`, so two hosts on one machine differ.
fn node_name(config: &Config, port: u16) -> String {
    config.history.node.clone().unwrap_or_else(|| {
        let host = rustix::system::uname();
        format!("{}:{port}", host.nodename().to_string_lossy())
    })
}

/// The history journal and its store's pool, when the config keeps history in a
/// datasource.
fn open_journal(
    config: &Config,
    node: &str,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Option<(Arc<Journal>, DbPool)>> {
    let Some(datasource) = config.history_datasource() else {
        tracing::info!("check history is kept in memory only: no history datasource");
        return Ok(None);
    };
    let history = &config.history;
    let pool = Journal::pool(datasource.url())?;
    let journal = Journal::new(
        node.to_owned(),
        history.queue_rows,
        history.queue_bytes,
        metrics.clone(),
    );
    tracing::info!(
        node = journal.node(),
        "writing check history to datasource '{}'",
        datasource.name()
    );
    Ok(Some((Arc::new(journal), pool)))
}

impl HistoryWriter {
    /// Lets the writer send what is left, for at most [`HISTORY_STOP_FLUSH`]; what a
    /// store that is down still holds then is lost, and said.
    async fn flush(mut self) {
        for task in &self.others {
            task.abort();
        }
        self.store.journal.stop();
        if tokio::time::timeout(HISTORY_STOP_FLUSH, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
            tracing::warn!(
                "{} check results were not written to the history store before stopping",
                self.store.journal.queued()
            );
        }
    }
}

/// The usage writer and reader, each present when its token is configured.
type UsageEndpoints = (Option<Arc<Ingest>>, Option<Arc<Reader>>);

/// `POST /v1/ai-usage` and `GET /v1/usage/summary`, each when its token is configured.
/// Config validation guarantees the datasource when there is a token. Writers and
/// readers share the store's pool (SQLite's one connection).
fn usage_endpoints(config: &Config, metrics: &Arc<Metrics>) -> anyhow::Result<UsageEndpoints> {
    let usage = &config.usage;
    let store = match config.usage_datasource() {
        Some(d) if usage.token.is_some() || usage.read_token.is_some() => {
            Some(UsageStore::lazy(d.url())?)
        }
        _ => None,
    };
    let ingest = match (&usage.token, &store) {
        (Some(token), Some(store)) => {
            tracing::info!("recording ai usage on POST {}", server::AI_USAGE_PATH);
            Some(Arc::new(Ingest::new(
                token.clone(),
                usage.max_batch,
                usage.max_label_values,
                store.clone(),
                metrics.clone(),
            )))
        }
        _ => None,
    };
    let reader = match (&usage.read_token, store) {
        (Some(token), Some(store)) => {
            tracing::info!(
                "serving the ai usage summary on GET {}",
                server::USAGE_SUMMARY_PATH
            );
            Some(Arc::new(Reader::new(token.clone(), store)))
        }
        _ => None,
    };
    Ok((ingest, reader))
}

/// Resolves when the listener should close: at once on SIGINT; on SIGTERM after
/// `delay` (or a second signal), with `/readyz` answering 503 meanwhile.
async fn drain(health: Arc<Health>, delay: Duration) {
    let signal = shutdown_signal().await;
    health.begin_shutdown();
    if signal == Signal::Terminate {
        tracing::info!(
            "SIGTERM: /readyz now answers 503; serving for {} more",
            humantime::format_duration(delay)
        );
        // Keep serving while load balancers notice; a second signal cuts it short.
        tokio::select! {
            () = tokio::time::sleep(delay) => {},
            _ = shutdown_signal() => {},
        }
    } else {
        tracing::info!("SIGINT: stopping");
    }
}

/// How long `serve` waits, once stopped, for blocking work to end before it exits
/// anyway: a compile is killed within `runtime::compile`'s watch interval, and a read
/// of a plugin file takes milliseconds.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Raises the soft limit on open files to the hard one. Every loaded plugin holds a
/// file open (its memory image), so a thousand plugins pass the usual soft limit of
/// 1,024, after which the listener can accept no connection and no run can start;
/// servers that hold many files raise it the same way (Go's runtime does at start-up).
fn raise_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // An unlimited hard limit cannot be a soft one for open files: leave it be.
    let (Some(current), Some(maximum)) = (limit.current, limit.maximum) else {
        return;
    };
    if current >= maximum {
        return;
    }
    let raised = Rlimit {
        current: Some(maximum),
        maximum: Some(maximum),
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::debug!("open files limit raised from {current} to {maximum}"),
        Err(e) => tracing::warn!(
            "cannot raise the open files limit from {current} to {maximum} ({e}); \
             each loaded plugin holds a file open"
        ),
    }
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
