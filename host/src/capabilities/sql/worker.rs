//! Plugin statements in worker processes that can be killed.
//!
//! A driver holds a whole row in memory before the host can count a byte of it:
//! SQLite builds every value of a row before it hands any over, and sqlx reads a
//! PostgreSQL or MySQL row message whole. One row can hold as many values as it has
//! columns, each up to the value cap (100 values of 4 MB took the host to ~790 MB).
//! And SQLite runs in the process that calls it, where its progress handler and
//! `sqlite3_interrupt` act only between two steps of its virtual machine: one step can
//! be a function call that works for minutes (`instr` of a 4 MB text and a 2 MB
//! needle). So `serve` and `check` run plugin statements in workers: children of the
//! running binary (`healthhost sql-worker`, hidden), each holding one connection of
//! one datasource, restricted as its dialect's module says, under
//! [`SQL_WORKER_MEMORY`] of writable memory and [`SQL_WORKER_FILE_BYTES`] per file it
//! writes (SQLite's temporary files). A call whose time is up or whose run was
//! abandoned drops its worker, and a dropped worker is killed: whatever the statement
//! was doing in it stops at once (a database server sees its connection close), and
//! the next call starts a fresh worker. What a worker answers is at most
//! [`SQL_MAX_BYTES`] of values (it counts as it reads) in one frame of at most
//! `MAX_FRAME_BYTES`, so the host's own memory per call is bounded whatever the
//! statement returns.
//!
//! The protocol, on the worker's stdin and stdout: frames of a 4-byte little-endian
//! length and a postcard body; first the datasource (its URL may hold a password, so
//! it never goes on a command line), then a `Request` in and a `Result<Rows, Error>`
//! out, for as long as the host keeps the worker.

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;

use super::{Call, Datasource, Error, QueryError, Rows, Value, driver_error};
use crate::limits::{MIB, SQL_MAX_BYTES, SQL_POOL_SIZE, SQL_WORKER_FILE_BYTES, SQL_WORKER_MEMORY};
use crate::sync::lock;

/// The hidden subcommand a worker runs.
pub const CHILD_COMMAND: &str = "sql-worker";

/// The largest frame either side accepts: the values of one answer ([`SQL_MAX_BYTES`],
/// counted by the worker) with room for their encoding and for row and column
/// overheads, or one request (a statement and its parameters, from a plugin's memory).
const MAX_FRAME_BYTES: usize = 4 * SQL_MAX_BYTES as usize;

/// The datasource a worker serves, sent first.
#[derive(Serialize, Deserialize)]
struct Hello {
    name: String,
    url: String,
}

/// One statement for a worker.
#[derive(Serialize, Deserialize)]
struct Request {
    statement: String,
    params: Vec<Value>,
    /// How long the statement may run, from when the worker reads it.
    timeout: Duration,
}

/// The workers of one datasource: at most [`SQL_POOL_SIZE`] at once, idle ones kept
/// (with their connections) for the next call.
pub(super) struct Workers {
    exe: PathBuf,
    name: String,
    url: String,
    slots: Semaphore,
    idle: Mutex<Vec<Worker>>,
}

/// One worker process, killed when dropped.
struct Worker {
    /// Held so that dropping the worker kills it (`kill_on_drop`).
    _child: Child,
    input: ChildStdin,
    output: ChildStdout,
}

impl Workers {
    /// Workers for datasource `name` at `url`, started from executable `exe`.
    pub(super) fn new(exe: PathBuf, name: &str, url: &str) -> Workers {
        Workers {
            exe,
            name: name.to_owned(),
            url: url.to_owned(),
            slots: Semaphore::new(SQL_POOL_SIZE as usize),
            idle: Mutex::default(),
        }
    }

    /// Runs `call` in a worker. Dropped before it ends (the call timed out, the run
    /// was abandoned), it kills the worker, and with it the statement.
    pub(super) async fn query(&self, call: Call) -> Result<Rows, QueryError> {
        let _slot = self.slots.acquire().await.expect("never closed");
        let idle = lock(&self.idle).pop();
        let reused = idle.is_some();
        let mut worker = match idle {
            Some(worker) => worker,
            None => self.start().await?,
        };
        let request = Request {
            statement: call.statement,
            params: call.params,
            timeout: call.stop_at.saturating_duration_since(Instant::now()),
        };
        let mut answer = worker.exchange(&request).await;
        if answer.is_err() && reused {
            // An idle worker that was ended from outside meanwhile: once more, on a
            // fresh one (a statement only reads, so trying it again is safe).
            worker = self.start().await?;
            answer = worker.exchange(&request).await;
        }
        let answer = match answer {
            Ok(answer) => answer,
            // The worker died: its limits, or a crash. It is dropped, not reused.
            Err(e) => {
                return Err(QueryError::Plugin(Error::Database(format!(
                    "{}: the statement's worker process ended ({e}): most likely the statement needed more than {} MiB of memory, or a temporary file over {} MiB",
                    self.name,
                    SQL_WORKER_MEMORY / MIB,
                    SQL_WORKER_FILE_BYTES / MIB
                ))));
            }
        };
        lock(&self.idle).push(worker);
        answer.map_err(QueryError::Plugin)
    }

    async fn start(&self) -> Result<Worker, QueryError> {
        let failed = |e: std::io::Error| {
            QueryError::Plugin(Error::Database(format!(
                "{}: cannot start a worker process: {e}",
                self.name
            )))
        };
        let mut child = Command::new(&self.exe)
            .arg(CHILD_COMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(failed)?;
        let (Some(mut input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            unreachable!("both are piped");
        };
        let hello = Hello {
            name: self.name.clone(),
            url: self.url.clone(),
        };
        write_frame(&mut input, &hello).await.map_err(failed)?;
        Ok(Worker {
            _child: child,
            input,
            output,
        })
    }
}

impl Worker {
    async fn exchange(&mut self, request: &Request) -> std::io::Result<Result<Rows, Error>> {
        write_frame(&mut self.input, request).await?;
        read_frame(&mut self.output).await
    }
}

async fn write_frame<T: Serialize>(
    to: &mut (impl AsyncWrite + Unpin),
    value: &T,
) -> std::io::Result<()> {
    let body = postcard::to_allocvec(value).map_err(std::io::Error::other)?;
    let length = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    to.write_all(&length.to_le_bytes()).await?;
    to.write_all(&body).await?;
    to.flush().await
}

async fn read_frame<T: for<'de> Deserialize<'de>>(
    from: &mut (impl AsyncRead + Unpin),
) -> std::io::Result<T> {
    let mut length = [0; 4];
    from.read_exact(&mut length).await?;
    let length = u32::from_le_bytes(length) as usize;
    if length > MAX_FRAME_BYTES {
        return Err(std::io::Error::other(format!(
            "a frame of {length} bytes, over {MAX_FRAME_BYTES}"
        )));
    }
    let mut body = vec![0; length];
    from.read_exact(&mut body).await?;
    postcard::from_bytes(&body).map_err(std::io::Error::other)
}

/// The worker's side: limits itself, reads which datasource it serves, and answers
/// each request on stdin (on its own connection, restricted as the dialect's module
/// says) until stdin closes.
pub fn child_main() -> ExitCode {
    let fail = |message: String| {
        eprintln!("{message}");
        ExitCode::FAILURE
    };
    if let Err(e) = limit_self() {
        return fail(format!("cannot limit the worker: {e}"));
    }
    let tokio = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(tokio) => tokio,
        Err(e) => return fail(format!("cannot start: {e}")),
    };
    tokio.block_on(async {
        let (mut input, mut output) = (tokio::io::stdin(), tokio::io::stdout());
        let datasource = match read_frame::<Hello>(&mut input).await {
            Ok(hello) => match Datasource::parse(&hello.name, &hello.url) {
                Ok(datasource) => datasource,
                Err(e) => return fail(e.to_string()),
            },
            Err(e) => return fail(format!("cannot read the datasource: {e}")),
        };
        while let Ok(request) = read_frame::<Request>(&mut input).await {
            let call = Call {
                statement: request.statement,
                params: request.params,
                timeout: request.timeout,
                stop_at: Instant::now() + request.timeout,
            };
            let answer = datasource.pool().await.query(call).await;
            let answer = answer.map_err(|e| match e {
                QueryError::Sqlx(e) => driver_error(&datasource, &e),
                QueryError::Plugin(e) => e,
                QueryError::Role(e) => Error::Database(e.to_string()),
            });
            if write_frame(&mut output, &answer).await.is_err() {
                break;
            }
        }
        ExitCode::SUCCESS
    })
}

/// The worker's own limits: its writable memory and the size of any file it writes,
/// and its death with the host's.
fn limit_self() -> std::io::Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    #[cfg(target_os = "linux")]
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    for (resource, bytes) in [
        (Resource::Data, SQL_WORKER_MEMORY),
        (Resource::Fsize, SQL_WORKER_FILE_BYTES),
    ] {
        let limit = Rlimit {
            current: Some(bytes),
            maximum: Some(bytes),
        };
        setrlimit(resource, limit)?;
    }
    Ok(())
}
