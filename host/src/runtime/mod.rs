//! The sandboxed runtime: one wasmtime engine, plugin loading, and single runs.
//!
//! Owns the engine (component model, fuel, epoch interruption, pooling allocator),
//! the epoch ticker, and a tokio runtime of its own on which every plugin run and
//! every host call of a plugin executes, apart from the host's other async work: a
//! plugin that spins or floods cannot slow the HTTP server.
//!
//! A plugin is compiled and pre-instantiated once ([`Runtime::load`]); every run gets
//! a fresh store with its own limits ([`Runtime::run`]) and ends in a [`RunReport`]
//! whose [`Outcome`] is decided by matching on what happened.

mod compile;
mod distinct;
mod engine;
mod guest_error;
mod judge;
pub mod limiter;
mod outcome;
pub mod state;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::Linker;
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

use crate::cache::{CacheError, CompileCache, hex};
use crate::capabilities::bindings::{Check, CheckPre};
use crate::capabilities::fixtures::Fixtures;
use crate::capabilities::log::{CapturePipe, LogState};
use crate::capabilities::sql::Datasources;
use crate::capabilities::{self, RunContext, http, settings, sql};
use crate::config::Compiler;
use crate::config::grants::{Grants, HttpPolicy, Settings, SqlPolicy};
use crate::limits::{self, Deadline, Limits, STDIO_CAPTURE_BYTES};
use crate::samples::Drops;
use crate::scrub::Scrubber;
pub use compile::{CHILD_COMMAND, Compilation, CompileError, child_main};
use distinct::{Distinct, SharedPre};
use engine::{EpochTicker, Executor, engine_config};
use judge::{DeadlineExceeded, Stage, judge};
pub use outcome::{Calls, ErrorKind, Outcome, RunReport};
use state::RunState;

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot create the WebAssembly engine: {0}")]
    Engine(String),
    #[error("cannot start the plugin threads: {0}")]
    Threads(#[from] std::io::Error),
}

/// Why a plugin could not be loaded. Each variant names the check.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "check '{check}': cannot read {path}: {error}{}",
        missing_hint(error, path)
    )]
    Read {
        check: String,
        path: String,
        error: std::io::Error,
    },
    #[error("check '{check}': not a valid WebAssembly component: {reason}")]
    Compile { check: String, reason: String },
    #[error("check '{check}': cannot compile the plugin: {reason}")]
    Compiler { check: String, reason: String },
    #[error(
        "check '{check}': the component does not implement the healthhost:plugin/check world: {reason}"
    )]
    World { check: String, reason: String },
    #[error("check '{check}': the file's SHA-256 is {actual}, but its pin says {expected}")]
    Pin {
        check: String,
        expected: String,
        actual: String,
    },
    #[error("check '{check}': {source}")]
    Limits {
        check: String,
        source: limits::LimitError,
    },
    /// A plugin by OCI reference could not be pulled or verified.
    #[error("check '{check}': {reason}")]
    Oci { check: String, reason: String },
    /// A dropped-in check's grant file could not be read.
    #[error("cannot read {path}: {error}")]
    GrantRead { path: String, error: std::io::Error },
    /// A dropped-in check's grant file has problems, each located in the file.
    #[error("invalid grant file: {problems}")]
    Grants { problems: String },
}

/// What to check when a plugin file is missing: a Rust crate without a `cdylib`
/// target builds no `.wasm` at all.
fn missing_hint(error: &std::io::Error, path: &str) -> &'static str {
    if error.kind() == std::io::ErrorKind::NotFound && path.ends_with(".wasm") {
        " (a Rust plugin needs `crate-type = [\"cdylib\"]` under [lib] in its Cargo.toml; \
         `cargo build --release --target wasm32-wasip2` then writes \
         target/wasm32-wasip2/release/NAME.wasm)"
    } else {
        ""
    }
}

/// A compiled, pre-instantiated plugin with its grants and limits. Cheap to share.
pub struct Plugin {
    name: Arc<str>,
    sha256: String,
    pre: SharedPre,
    limits: Limits,
    http: Arc<HttpPolicy>,
    sql: Arc<SqlPolicy>,
    settings: Arc<Settings>,
    scrubber: Arc<Scrubber>,
    fixtures: Option<Arc<Fixtures>>,
}

impl Plugin {
    /// Hex SHA-256 of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Whether `other` runs the very same compiled code (its bytes are the same).
    pub fn shares_code_with(&self, other: &Plugin) -> bool {
        Arc::ptr_eq(&self.pre, &other.pre)
    }

    /// The same plugin answered by `fixtures` instead of the network and the databases
    /// (`healthhost check --fixtures`); grants and limits still apply.
    pub fn with_fixtures(mut self, fixtures: Fixtures) -> Plugin {
        self.fixtures = Some(Arc::new(fixtures));
        self
    }
}

struct Shared {
    engine: Engine,
    linker: Linker<RunState>,
    client: reqwest::Client,
    datasources: Arc<Datasources>,
}

/// The engine, its epoch ticker, the plugin threads, where plugins are compiled and
/// the compile cache.
pub struct Runtime {
    shared: Arc<Shared>,
    executor: Executor,
    _ticker: EpochTicker,
    compiler: Compiler,
    compilation: Compilation,
    cache: Option<CompileCache>,
    /// The compiled components in use, one per distinct plugin.
    distinct: Distinct,
    /// Set when the host stops: compiles in progress are killed, none starts.
    stopping: AtomicBool,
}

impl Runtime {
    /// Starts a runtime whose plugins may query `datasources` (as far as granted).
    pub fn new(datasources: Datasources) -> Result<Runtime, RuntimeError> {
        Runtime::with_compiler(datasources, Compiler::default())
    }

    /// Starts a runtime that compiles plugins with `compiler`.
    pub fn with_compiler(
        datasources: Datasources,
        compiler: Compiler,
    ) -> Result<Runtime, RuntimeError> {
        let engine = Engine::new(&engine_config(compiler))
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        state::add_to_linker(&mut linker).map_err(|e| RuntimeError::Engine(e.to_string()))?;
        let executor = Executor::start()?;
        let _ticker = EpochTicker::start(engine.clone())?;
        let shared = Arc::new(Shared {
            engine,
            linker,
            client: http::client(),
            datasources: Arc::new(datasources),
        });
        Ok(Runtime {
            shared,
            executor,
            _ticker,
            compiler,
            compilation: Compilation::InProcess,
            cache: None,
            distinct: Distinct::default(),
            stopping: AtomicBool::new(false),
        })
    }

    /// From now on, plugins are compiled as [`Compilation`] says.
    pub fn compile_in(&mut self, compilation: Compilation) {
        self.compilation = compilation;
    }

    /// From now on, compiled plugins are kept in (and taken from) the cache at `dir`;
    /// lookups are counted in `lookups` by result when given.
    pub fn use_cache(
        &mut self,
        dir: &std::path::Path,
        lookups: Option<prometheus::IntCounterVec>,
    ) -> Result<(), CacheError> {
        self.cache = Some(CompileCache::open(dir, &self.shared.engine, lookups)?);
        Ok(())
    }

    /// Compiles `wasm` as check `name` and checks it against the world and `limits`.
    pub fn load(
        &self,
        name: &str,
        wasm: &[u8],
        grants: Grants,
        settings: Settings,
        limits: Limits,
    ) -> Result<Plugin, LoadError> {
        self.load_while(name, wasm, grants, settings, limits, &|| true)
    }

    /// Stops every compile in progress (their loads fail) and every one to come: the
    /// host is stopping, and a compile must not hold up its exit.
    pub fn stop_compiles(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Like [`Runtime::load`], except that a compile in a child process is stopped,
    /// and the load fails, as soon as `wanted` says no (its file changed or went
    /// away) or the runtime stops compiling ([`Runtime::stop_compiles`]).
    pub fn load_while(
        &self,
        name: &str,
        wasm: &[u8],
        grants: Grants,
        settings: Settings,
        limits: Limits,
        wanted: &dyn Fn() -> bool,
    ) -> Result<Plugin, LoadError> {
        limits.validate().map_err(|source| LoadError::Limits {
            check: name.to_owned(),
            source,
        })?;
        // Names first: a plugin for another contract is told so before a long compile.
        crate::contract::check(wasm).map_err(|e| LoadError::World {
            check: name.to_owned(),
            reason: e.to_string(),
        })?;
        let sha256 = hex(&Sha256::digest(wasm));
        let pre = self
            .distinct
            .get_or_load(&sha256, || self.compile(name, &sha256, wasm, wanted))?;
        let scrubber = Scrubber::new(capabilities::secrets(&settings, &self.shared.datasources));
        Ok(Plugin {
            name: name.into(),
            sha256,
            pre,
            limits,
            http: Arc::new(grants.http),
            sql: Arc::new(grants.sql),
            settings: Arc::new(settings),
            scrubber: Arc::new(scrubber),
            fixtures: None,
        })
    }

    /// Compiles `wasm` (or takes it from the cache) and pre-instantiates it against
    /// the linker, while `wanted`.
    fn compile(
        &self,
        name: &str,
        sha256: &str,
        wasm: &[u8],
        wanted: &dyn Fn() -> bool,
    ) -> Result<CheckPre<RunState>, LoadError> {
        let engine = &self.shared.engine;
        let wanted = || wanted() && !self.stopping.load(Ordering::Relaxed);
        let compile = || compile::artifact(engine, self.compiler, &self.compilation, wasm, &wanted);
        let compiled = match &self.cache {
            Some(cache) => cache.get_or_compile(engine, sha256, compile),
            None => compile().and_then(|artifact| Ok(crate::cache::component(engine, &artifact)?)),
        };
        let check = name.to_owned();
        let component = compiled.map_err(|e| match e {
            CompileError::Invalid(reason) => LoadError::Compile { check, reason },
            CompileError::Failed(reason) => LoadError::Compiler { check, reason },
        })?;
        let world = |e: wasmtime::Error| LoadError::World {
            check: name.to_owned(),
            reason: error_chain(&e),
        };
        let instance_pre = self
            .shared
            .linker
            .instantiate_pre(&component)
            .map_err(world)?;
        CheckPre::new(instance_pre).map_err(world)
    }

    /// How many distinct compiled components the loaded plugins hold.
    pub fn distinct_components(&self) -> usize {
        self.distinct.count()
    }

    /// Reads and loads a plugin file, which must have the SHA-256 `pin` when given.
    pub fn load_file(
        &self,
        name: &str,
        path: &std::path::Path,
        pin: Option<&str>,
        grants: Grants,
        settings: Settings,
        limits: Limits,
    ) -> Result<Plugin, LoadError> {
        let wasm = read_plugin(name, path, pin)?;
        self.load(name, &wasm, grants, settings, limits)
    }

    /// Starts `work` on the plugin threads with a [`Runner`], which runs plugins in
    /// place: for work that runs plugins again and again, such as a check's schedule,
    /// without the hand-off between threads that [`Runtime::run`] pays each time.
    pub fn spawn<F, W>(&self, work: W) -> tokio::task::JoinHandle<F::Output>
    where
        W: FnOnce(Runner) -> F,
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.executor.spawn(work(Runner {
            shared: self.shared.clone(),
        }))
    }

    /// Runs `plugin` once on the plugin threads, under its limits.
    pub async fn run(&self, plugin: &Arc<Plugin>) -> RunReport {
        let shared = self.shared.clone();
        let task = self.executor.spawn(run_once(shared, plugin.clone()));
        match task.await {
            Ok(report) => report,
            Err(e) => {
                tracing::error!(check = %plugin.name, error = %e, "plugin run task failed");
                let mut report = RunReport::empty(plugin);
                report.outcome = Outcome::Error(ErrorKind::Trap);
                report.message = Some("the host's run task failed".to_owned());
                report
            }
        }
    }
}

/// Runs plugins in place, on the plugin thread of the task that holds it: handed only
/// to work started by [`Runtime::spawn`].
pub struct Runner {
    shared: Arc<Shared>,
}

impl Runner {
    /// Runs `plugin` once, under its limits.
    pub async fn run(&self, plugin: &Arc<Plugin>) -> RunReport {
        run_once(self.shared.clone(), plugin.clone()).await
    }
}

impl RunReport {
    fn empty(plugin: &Plugin) -> RunReport {
        RunReport {
            check: plugin.name.to_string(),
            outcome: Outcome::Error(ErrorKind::Trap),
            message: None,
            samples: Vec::new(),
            samples_dropped: Drops::new(),
            latency: Duration::ZERO,
            fuel_consumed: 0,
            peak_memory_bytes: 0,
            calls: Calls::default(),
        }
    }
}

async fn run_once(shared: Arc<Shared>, plugin: Arc<Plugin>) -> RunReport {
    let limits = plugin.limits;
    let started = Instant::now();
    let deadline = Deadline::after(limits.timeout);
    let lookahead = plugin.scrubber.lookahead();
    let stdout = CapturePipe::new(STDIO_CAPTURE_BYTES, lookahead);
    let stderr = CapturePipe::new(STDIO_CAPTURE_BYTES, lookahead);
    let mut store = new_store(&shared, &plugin, deadline, &stdout, &stderr);

    // Time inside host calls burns neither fuel nor epochs: bound the whole run too.
    let mut stage = Stage::Instantiate;
    let result = tokio::time::timeout(limits.timeout, async {
        let instance: Check = plugin.pre.instantiate_async(&mut store).await?;
        stage = Stage::Call;
        instance.call_check(&mut store).await
    })
    .await;

    let latency = started.elapsed();
    let fuel_consumed = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
    let stdout = stdout.text(&plugin.scrubber);
    let stderr = stderr.text(&plugin.scrubber);
    let data = store.data_mut();
    data.log.write_captured("stdout", &stdout);
    data.log.write_captured("stderr", &stderr);
    data.log.finish();
    let peak_memory_bytes = data.limiter.peak();
    let memory_refused = data.limiter.refused();
    let calls = Calls {
        settings_read: std::mem::take(&mut data.settings.read).into_vec(),
        refused: std::mem::take(&mut data.http.refused)
            .into_vec()
            .into_iter()
            .chain(std::mem::take(&mut data.sql.refused).into_vec())
            .collect(),
    }
    .scrubbed(&plugin.scrubber);
    drop(store);

    let mut report = RunReport::empty(&plugin);
    report.calls = calls;
    report.latency = latency;
    report.fuel_consumed = fuel_consumed;
    report.peak_memory_bytes = peak_memory_bytes;
    judge(
        &mut report,
        &plugin,
        result,
        stage,
        memory_refused,
        &stderr.text,
    );
    tracing::debug!(
        check = %plugin.name,
        outcome = report.outcome.label(),
        latency_ms = latency.as_secs_f64() * 1000.0,
        fuel_consumed,
        peak_memory_bytes,
        "run finished"
    );
    report
}

/// A fresh store for one run of `plugin`: WASI writing to the capture pipes, one
/// state per capability, the memory limiter, the run's fuel, and an epoch callback
/// that yields at every tick and ends the run at `deadline`.
fn new_store(
    shared: &Shared,
    plugin: &Plugin,
    deadline: Deadline,
    stdout: &CapturePipe,
    stderr: &CapturePipe,
) -> Store<RunState> {
    let limits = plugin.limits;
    let wasi = WasiCtxBuilder::new()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build();
    let run = RunContext {
        check: plugin.name.clone(),
        scrubber: plugin.scrubber.clone(),
        deadline,
        fixtures: plugin.fixtures.clone(),
    };
    let state = RunState {
        wasi,
        table: Default::default(),
        limiter: limiter::MemoryLimiter::new(limits.memory),
        http: http::HttpState::new(&run, plugin.http.clone(), shared.client.clone()),
        sql: sql::SqlState::new(&run, plugin.sql.clone(), shared.datasources.clone()),
        settings: settings::SettingsState::new(&run, plugin.settings.clone()),
        log: LogState::new(&run),
    };
    let mut store = Store::new(&shared.engine, state);
    store.limiter(|s| &mut s.limiter);
    store
        .set_fuel(limits.fuel)
        .expect("fuel is enabled in the engine config");
    // Yield to the plugin runtime at every tick so a spinning guest shares its thread;
    // end the run at the deadline.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if deadline.expired() {
            Err(DeadlineExceeded.into())
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });

    store
}

/// An error and its causes on one line.
fn error_chain(error: &wasmtime::Error) -> String {
    error
        .chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Reads the plugin file of check `name`, which must have the SHA-256 `pin` when
/// given.
pub fn read_plugin(
    name: &str,
    path: &std::path::Path,
    pin: Option<&str>,
) -> Result<Vec<u8>, LoadError> {
    let wasm = std::fs::read(path).map_err(|error| LoadError::Read {
        check: name.to_owned(),
        path: path.display().to_string(),
        error,
    })?;
    if let Some(expected) = pin {
        let actual = hex(&Sha256::digest(&wasm));
        if actual != expected {
            return Err(LoadError::Pin {
                check: name.to_owned(),
                expected: expected.to_owned(),
                actual,
            });
        }
    }
    Ok(wasm)
}
