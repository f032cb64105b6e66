//! The engine and the threads around it: the wasmtime configuration (component
//! model, fuel, epoch interruption, pooling allocator, the chosen compiler), the tokio
//! runtime every plugin run executes on, and the epoch ticker that bounds a run's
//! wall-clock time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig, Strategy,
};

use crate::config::Compiler;
use crate::limits::{
    EPOCH_TICK, MAX_MEMORY_BYTES, PLUGIN_CORE_INSTANCES, PLUGIN_MEMORIES, PLUGIN_TABLES,
    POOL_INSTANCES,
};

/// Worker threads of the plugin runtime: the machine's cores, since guest CPU is the
/// work they do, but at least two so one spinning guest cannot hold them all.
fn plugin_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2)
}

/// The engine's configuration for `compiler`: [`code_config`] with the pooling
/// allocator that runs use. Every pooled resource is sized as [`POOL_INSTANCES`]
/// plugin shares, and each component is held to one share when it loads, so that
/// only the number of runs can fill the pool, and runs are capped below it.
pub(super) fn engine_config(compiler: Compiler) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(POOL_INSTANCES)
        .max_core_instances_per_component(PLUGIN_CORE_INSTANCES)
        .total_core_instances(POOL_INSTANCES * PLUGIN_CORE_INSTANCES)
        .max_memories_per_component(PLUGIN_MEMORIES)
        .total_memories(POOL_INSTANCES * PLUGIN_MEMORIES)
        .max_tables_per_component(PLUGIN_TABLES)
        .total_tables(POOL_INSTANCES * PLUGIN_TABLES)
        // One fiber stack per run: a run's instantiation and call share it.
        .total_stacks(POOL_INSTANCES)
        .max_memory_size(MAX_MEMORY_BYTES as usize);
    let mut config = code_config(compiler);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// Every setting that shapes compiled code (the compiler, fuel, epochs): what the
/// compiler child process needs, which instantiates nothing and so reserves no pool.
pub(super) fn code_config(compiler: Compiler) -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        // Every loaded plugin keeps its whole artifact in memory. Native unwind info
        // (.eh_frame) serves native debuggers and profilers, not wasmtime, which walks
        // wasm frames by frame pointer; the address map gives a trap's backtrace wasm
        // byte offsets, and the function names stay without it. Together they were 14 %
        // of a small plugin's artifact (BENCHMARKS.md, "1,000 copies").
        .native_unwind_info(false)
        .generate_address_map(false);
    match compiler {
        Compiler::Cranelift => config.strategy(Strategy::Cranelift),
        Compiler::CraneliftUnoptimized => config
            .strategy(Strategy::Cranelift)
            .cranelift_opt_level(OptLevel::None),
        Compiler::Winch => config.strategy(Strategy::Winch),
    };
    config
}

/// The tokio runtime plugin runs execute on, shut down without blocking when dropped
/// (it may be dropped from inside another runtime).
pub(super) struct Executor(Option<tokio::runtime::Runtime>);

impl Executor {
    pub(super) fn start() -> std::io::Result<Executor> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(plugin_workers())
            .thread_name("plugin")
            .enable_all()
            .build()?;
        Ok(Executor(Some(runtime)))
    }

    pub(super) fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0
            .as_ref()
            .expect("executor runs until dropped")
            .spawn(future)
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// A thread that advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub(super) struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub(super) fn start(engine: Engine) -> std::io::Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
