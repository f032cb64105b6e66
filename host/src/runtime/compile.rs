//! Compiling a plugin to machine code, by default in a short-lived child process.
//!
//! wasmtime holds every function's compiled output until it links them: compiling an
//! 18 MB Python component peaks near 400 MB (BENCHMARKS.md, "Compilers"). In a child
//! process (this same executable, `healthhost compile-plugin`, with the same engine
//! configuration) that memory goes back to the system when the child exits instead of
//! staying in the long-lived host's heap, and a component crafted to exhaust the
//! compiler meets the child's memory limit and fails its own load, not the host. The
//! child reads the component on stdin and writes wasmtime's serialized artifact on
//! stdout; the host loads the artifact as it loads a compile cache entry.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

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

/// Where plugins are compiled.
#[derive(Debug, Clone)]
pub enum Compilation {
    /// In the host's own process (library users and tests, whose executable is not
    /// `healthhost`).
    InProcess,
    /// In a child process running `exe compile-plugin`, whose writable data may not
    /// grow past `memory_limit` bytes.
    Child { exe: PathBuf, memory_limit: u64 },
}

/// Why a plugin was not compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The component does not compile: the author's to fix.
    #[error("{0}")]
    Invalid(String),
    /// The compiler could not do its work (its memory limit, a crash, a failed
    /// start): the operator's to look at.
    #[error("{0}")]
    Failed(String),
}

impl From<ArtifactError> for CompileError {
    fn from(e: ArtifactError) -> CompileError {
        CompileError::Failed(e.to_string())
    }
}

/// The serialized artifact of `wasm` compiled by `engine` (configured for
/// `compiler`), or why not.
pub(super) fn artifact(
    engine: &Engine,
    compiler: Compiler,
    how: &Compilation,
    wasm: &[u8],
) -> Result<Vec<u8>, CompileError> {
    match how {
        Compilation::InProcess => engine
            .precompile_component(wasm)
            .map_err(|e| CompileError::Invalid(compile_reason(&e, wasm))),
        Compilation::Child { exe, memory_limit } => in_child(exe, compiler, *memory_limit, wasm),
    }
}

fn in_child(
    exe: &Path,
    compiler: Compiler,
    memory_limit: u64,
    wasm: &[u8],
) -> Result<Vec<u8>, CompileError> {
    let failed = CompileError::Failed;
    let mut child = Command::new(exe)
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
    // The child reads all of its input before it writes anything, so writing first
    // cannot deadlock; a child that died early shows in its status below.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(wasm);
    }
    let output = child
        .wait_with_output()
        .map_err(|e| failed(format!("lost the compiler process: {e}")))?;
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
