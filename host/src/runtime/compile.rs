//! Compiling a plugin to machine code, by default in a short-lived child process.
//!
//! wasmtime holds every function's compiled output until it links them: compiling an
//! 18 MB Python component peaks near 400 MB (BENCHMARKS.md, "Compilers"). In a child
//! process (this same executable, `healthhost compile-plugin`, with the same engine
//! configuration) that memory goes back to the system when the child exits instead of
//! staying in the long-lived host's heap, and a component crafted to exhaust the
//! compiler meets the child's memory limit and fails its own load, not the host. The
//! child reads the component on stdin and writes wasmtime's serialized artifact on
//! stdout; the host loads the artifact as it loads a compile cache entry. The child is
//! killed when its time limit passes, and when its plugin is no longer wanted (its
//! file changed or went away, or the host is stopping), so a compile never outlives
//! its reason nor holds up the host's exit.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Output, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use wasmtime::Engine;

use super::error_chain;
use crate::cache::ArtifactError;
use crate::config::Compiler;
use crate::limits::MIB;

/// The hidden subcommand the child runs.
pub const CHILD_COMMAND: &str = "compile-plugin";
/// The child's exit status for a component that does not compile (the reason is on
/// its stderr); any other failure is the child's own.
const EXIT_DOES_NOT_COMPILE: u8 = 1;
/// The child's exit status when it could not do its work (input, output, set-up).
const EXIT_CHILD_FAILED: u8 = 2;

/// How often a compiler process is looked at while it works: whether its time is up
/// or its plugin is still wanted. A killed compile ends within this; a finished one
/// is noticed at once (its output closing wakes the host).
const WATCH_EVERY: Duration = Duration::from_millis(50);

/// Where plugins are compiled.
#[derive(Debug, Clone)]
pub enum Compilation {
    /// In the host's own process (library users and tests, whose executable is not
    /// `healthhost`).
    InProcess,
    /// In a child process running `exe compile-plugin`, whose writable data may not
    /// grow past `memory_limit` bytes and which is killed after `time_limit`.
    Child {
        exe: PathBuf,
        memory_limit: u64,
        time_limit: Duration,
    },
}

/// Why a plugin was not compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The component does not compile: the author's to fix.
    #[error("{0}")]
    Invalid(String),
    /// The compiler could not do its work (its memory or time limit, a crash, a
    /// failed start, a stop): the operator's to look at.
    #[error("{0}")]
    Failed(String),
}

impl From<ArtifactError> for CompileError {
    fn from(e: ArtifactError) -> CompileError {
        CompileError::Failed(e.to_string())
    }
}

/// The serialized artifact of `wasm` compiled by `engine` (configured for
/// `compiler`), or why not. A compile in a child process is stopped (the child
/// killed) as soon as `wanted` says no.
pub(super) fn artifact(
    engine: &Engine,
    compiler: Compiler,
    how: &Compilation,
    wasm: &[u8],
    wanted: &dyn Fn() -> bool,
) -> Result<Vec<u8>, CompileError> {
    match how {
        Compilation::InProcess => engine
            .precompile_component(wasm)
            .map_err(|e| CompileError::Invalid(compile_reason(&e, wasm))),
        Compilation::Child {
            exe,
            memory_limit,
            time_limit,
        } => in_child(exe, compiler, (*memory_limit, *time_limit), wasm, wanted),
    }
}

fn in_child(
    exe: &Path,
    compiler: Compiler,
    (memory_limit, time_limit): (u64, Duration),
    wasm: &[u8],
    wanted: &dyn Fn() -> bool,
) -> Result<Vec<u8>, CompileError> {
    let failed = CompileError::Failed;
    let child = Command::new(exe)
        .arg(CHILD_COMMAND)
        .arg("--compiler")
        .arg(compiler.name())
        .arg("--memory-limit")
        .arg(memory_limit.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            failed(format!(
                "cannot start the compiler process {}: {e}",
                exe.display()
            ))
        })?;
    let (output, stopped) = watch(child, wasm, time_limit, wanted);
    if let Some(reason) = stopped {
        return Err(failed(reason));
    }
    let output = output.map_err(|e| failed(format!("lost the compiler process: {e}")))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said = stderr.trim();
    if output.status.success() {
        return Ok(output.stdout);
    }
    if output.status.code() == Some(EXIT_DOES_NOT_COMPILE.into()) {
        return Err(CompileError::Invalid(said.to_owned()));
    }
    if out_of_memory(said) {
        return Err(failed(format!(
            "it needs more than the compile memory limit of {} MiB (`compile_memory`)",
            memory_limit / MIB
        )));
    }
    let last = said.lines().last().unwrap_or("no message");
    Err(failed(format!(
        "the compiler process failed ({}): {last}",
        output.status
    )))
}

/// Feeds `wasm` to the compiler `child` and collects what it writes, killing it once
/// `time_limit` has passed since now or `wanted` says no: its output (or why there is
/// none), and why it was stopped, if it was.
fn watch(
    mut child: Child,
    wasm: &[u8],
    time_limit: Duration,
    wanted: &dyn Fn() -> bool,
) -> (std::io::Result<Output>, Option<String>) {
    let started = Instant::now();
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    std::thread::scope(|scope| {
        // A child that dies early closes its input: the write fails, and its status
        // below says why.
        scope.spawn(move || stdin.map(|mut pipe| pipe.write_all(wasm)));
        let (closed, wait) = std::sync::mpsc::channel();
        let out = scope.spawn(move || {
            let bytes = read_all(stdout);
            let _ = closed.send(());
            bytes
        });
        let err = scope.spawn(move || read_all(stderr));
        let stopped = loop {
            match wait.recv_timeout(WATCH_EVERY) {
                Err(RecvTimeoutError::Timeout) => {}
                // The child closed its output: it is done.
                _ => break None,
            }
            if started.elapsed() >= time_limit {
                break Some(format!(
                    "it takes longer than the compile time limit of {} (`compile_timeout`)",
                    humantime::format_duration(time_limit)
                ));
            }
            if !wanted() {
                break Some("stopped: the plugin is no longer wanted (its file changed or went away, or the host is stopping)".to_owned());
            }
        };
        if stopped.is_some() {
            let _ = child.kill();
        }
        let status = child.wait();
        let output = status.map(|status| Output {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        });
        (output, stopped)
    })
}

/// Everything `pipe` yields until it closes (nothing if there is no pipe or it
/// breaks: the child's status tells what happened).
fn read_all(pipe: Option<impl Read>) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_end(&mut bytes);
    }
    bytes
}

/// Whether a failed child said it ran out of memory: Rust's abort on a failed
/// allocation, or an error from a failed mapping or thread start (ENOMEM).
fn out_of_memory(said: &str) -> bool {
    said.contains("memory allocation of")
        || said.contains("os error 12")
        || said.contains("Cannot allocate memory")
}

/// The child's side: reads a component on stdin, compiles it with `compiler` under
/// `memory_limit`, writes the artifact on stdout.
pub fn child_main(compiler: Compiler, memory_limit: u64) -> ExitCode {
    let fail = |message: String| {
        eprintln!("{message}");
        ExitCode::from(EXIT_CHILD_FAILED)
    };
    // A host that dies outright (SIGKILL, a crash) takes its compile with it: the
    // kernel kills the child when the thread that started it, which waits for it,
    // ends.
    #[cfg(target_os = "linux")]
    if let Err(e) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
    {
        return fail(format!("cannot tie the compiler to the host: {e}"));
    }
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut wasm) {
        return fail(format!("cannot read the component: {e}"));
    }
    let engine = match Engine::new(&super::engine::code_config(compiler)) {
        Ok(engine) => engine,
        Err(e) => {
            return fail(format!(
                "cannot configure the compiler: {}",
                error_chain(&e)
            ));
        }
    };
    // Counted from here, with the input already read.
    let limit = rustix::process::Rlimit {
        current: Some(memory_limit),
        maximum: Some(memory_limit),
    };
    if let Err(e) = rustix::process::setrlimit(rustix::process::Resource::Data, limit) {
        return fail(format!("cannot limit the compiler's memory: {e}"));
    }
    match engine.precompile_component(&wasm) {
        Ok(artifact) => match std::io::stdout().lock().write_all(&artifact) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!("cannot write the compiled plugin: {e}")),
        },
        Err(e) => {
            let reason = compile_reason(&e, &wasm);
            eprintln!("{reason}");
            // Out of memory is the limit's doing, not the component's.
            ExitCode::from(if out_of_memory(&reason) {
                EXIT_CHILD_FAILED
            } else {
                EXIT_DOES_NOT_COMPILE
            })
        }
    }
}

/// Why `wasm` does not compile, with a hint for the common wrong inputs.
fn compile_reason(error: &wasmtime::Error, wasm: &[u8]) -> String {
    const MAGIC: &[u8] = b"\0asm";
    if !wasm.starts_with(MAGIC) {
        return "the file does not start with the WebAssembly magic bytes".to_owned();
    }
    let reason = error_chain(error);
    // Byte 4..8: version 1 is a core module, a component has a different layer.
    if wasm.get(4..8) == Some(&[1, 0, 0, 0]) {
        return format!(
            "{reason} (this is a core module, not a component: build it with --target wasm32-wasip2)"
        );
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compile_reason_explains_non_components() {
        let err = wasmtime::Error::msg("boom");
        assert!(compile_reason(&err, b"hello").contains("magic bytes"));
        assert!(compile_reason(&err, b"\0asm\x01\0\0\0").contains("core module"));
        assert_eq!(compile_reason(&err, b"\0asm\x0d\0\x01\0"), "boom");
    }

    #[test]
    fn each_way_of_running_out_of_memory_is_recognised() {
        for said in [
            "memory allocation of 524288 bytes failed",
            "failed to mmap code memory: Cannot allocate memory (os error 12)",
            "thread 'main' panicked: failed to spawn thread: Os { code: 12, kind: OutOfMemory, message: \"Cannot allocate memory\" }",
        ] {
            assert!(out_of_memory(said), "{said}");
        }
        assert!(!out_of_memory("invalid input WebAssembly code at offset 8"));
    }
}
