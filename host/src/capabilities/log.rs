//! The `log` capability, and the guest's captured stdout and stderr.
//!
//! Per-run state: [`LogState`], which writes each line into `tracing` with the check's
//! name — scrubbed of secrets, then cut, its control characters escaped so it cannot
//! forge a host log line — within a per-run byte budget shared with stdout and stderr.
//! Stdout and stderr are captured by [`CapturePipe`], which keeps the first bytes up
//! to a cap and silently discards the rest (refusing the write would make Rust's
//! `print!` panic, turning chattiness into a failure).

use std::sync::{Arc, Mutex};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::RunContext;
use super::bindings::healthhost::plugin::log::{self as wit, Level};
use crate::escape::escape_controls;
use crate::limits::{LOG_MAX_BYTES_PER_RUN, LOG_MAX_LINE_BYTES};
use crate::scrub::{Scrubber, cut};
use crate::sync::lock;

/// What the `log` import of one run writes to.
pub struct LogState {
    pub(crate) check: Arc<str>,
    pub(crate) scrubber: Arc<Scrubber>,
    /// Bytes written so far this run.
    pub(crate) written: usize,
    /// Lines dropped because the budget ran out.
    pub(crate) dropped: u64,
}

impl LogState {
    /// A fresh budget for one run.
    pub fn new(run: &RunContext) -> Self {
        LogState {
            check: run.check.clone(),
            scrubber: run.scrubber.clone(),
            written: 0,
            dropped: 0,
        }
    }

    /// Writes one line from the plugin, if the run's budget allows it.
    pub fn write(&mut self, level: Level, source: &'static str, line: &str) {
        let line = self.scrubber.scrub_cut(line, LOG_MAX_LINE_BYTES);
        self.emit(level, source, &line);
    }

    /// Writes one line already scrubbed, cut to the line cap, if the budget allows it.
    fn emit(&mut self, level: Level, source: &'static str, line: &str) {
        let line = cut(line, LOG_MAX_LINE_BYTES);
        if self.written + line.len() > LOG_MAX_BYTES_PER_RUN {
            self.dropped += 1;
            return;
        }
        self.written += line.len();
        let line = escape_controls(line);
        let check = &*self.check;
        match level {
            Level::Trace => tracing::trace!(check, source, "{line}"),
            Level::Debug => tracing::debug!(check, source, "{line}"),
            Level::Info => tracing::info!(check, source, "{line}"),
            Level::Warn => tracing::warn!(check, source, "{line}"),
            Level::Error => tracing::error!(check, source, "{line}"),
        }
    }

    /// Writes captured output line by line, then notes how much was dropped.
    pub fn write_captured(&mut self, source: &'static str, captured: &Captured) {
        for line in captured.text.lines().filter(|l| !l.trim().is_empty()) {
            self.emit(Level::Info, source, line);
        }
        let discarded = captured.discarded;
        if discarded > 0 {
            let check = &*self.check;
            tracing::warn!(
                check,
                source,
                discarded,
                "plugin output beyond the capture cap was discarded"
            );
        }
    }

    /// Reports lines dropped over the budget, once per run.
    pub fn finish(&self) {
        if self.dropped > 0 {
            let check = &*self.check;
            tracing::warn!(
                check,
                dropped = self.dropped,
                "plugin log lines over the per-run budget were dropped"
            );
        }
    }
}

impl wit::Host for LogState {
    async fn log(&mut self, level: Level, message: String) {
        self.write(level, "plugin", &message);
    }
}

/// A bounded in-memory stdout/stderr: keeps the first `capacity` bytes (and a
/// `lookahead` beyond them, so that a secret straddling the cap is found whole), never
/// refuses a write, and counts what it discards.
#[derive(Clone)]
pub struct CapturePipe {
    capacity: usize,
    lookahead: usize,
    inner: Arc<Mutex<Written>>,
}

#[derive(Default)]
struct Written {
    bytes: Vec<u8>,
    total: u64,
}

/// What a guest wrote to one stream: the first bytes as text, scrubbed, then cut to
/// the capture cap.
#[derive(Debug, PartialEq, Eq)]
pub struct Captured {
    pub text: String,
    /// Bytes written beyond the cap.
    pub discarded: u64,
}

impl CapturePipe {
    /// A pipe that keeps `capacity` bytes and `lookahead` more for scrubbing.
    pub fn new(capacity: usize, lookahead: usize) -> Self {
        CapturePipe {
            capacity,
            lookahead,
            inner: Arc::default(),
        }
    }

    /// What was written, secrets removed before the cut.
    pub fn text(&self, scrubber: &Scrubber) -> Captured {
        let inner = lock(&self.inner);
        let text = String::from_utf8_lossy(&inner.bytes);
        Captured {
            text: scrubber.scrub_cut(&text, self.capacity).into_owned(),
            discarded: inner.total.saturating_sub(self.capacity as u64),
        }
    }

    fn push(&self, buf: &[u8]) {
        let mut inner = lock(&self.inner);
        let room = (self.capacity + self.lookahead).saturating_sub(inner.bytes.len());
        let kept = buf.len().min(room);
        inner.bytes.extend_from_slice(&buf[..kept]);
        inner.total += buf.len() as u64;
    }
}

impl IsTerminal for CapturePipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturePipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// Most bytes accepted per write; any positive number works since nothing blocks.
const WRITE_PERMIT: usize = 64 * 1024;

impl OutputStream for CapturePipe {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturePipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturePipe {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_the_first_bytes_and_counts_the_rest() {
        let pipe = CapturePipe::new(4, 0);
        pipe.push(b"abc");
        pipe.push(b"defg");
        let captured = Captured {
            text: "abcd".to_owned(),
            discarded: 3,
        };
        assert_eq!(pipe.text(&Scrubber::default()), captured);
    }

    #[test]
    fn capture_scrubs_a_secret_straddling_the_cap_before_cutting() {
        let scrubber = Scrubber::new(["Zq9SECRET"]);
        let pipe = CapturePipe::new(8, scrubber.lookahead());
        pipe.push(b"line\nxxZq9SECRET and more");
        let captured = pipe.text(&scrubber);
        assert_eq!(captured.text, "line\nxx[");
        assert_eq!(captured.discarded, 25 - 8);
    }

    #[test]
    fn budget_drops_lines_beyond_it() {
        let mut log = LogState::new(&RunContext {
            check: "t".into(),
            scrubber: Arc::default(),
            deadline: crate::limits::Deadline::after(std::time::Duration::from_secs(1)),
            fixtures: None,
        });
        let line = "x".repeat(1024);
        for _ in 0..(LOG_MAX_BYTES_PER_RUN / 1024 + 5) {
            log.write(Level::Info, "plugin", &line);
        }
        assert_eq!(log.dropped, 5);
    }
}
