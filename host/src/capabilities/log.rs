//! The `log` capability, and the guest's captured stdout and stderr.
//!
//! Per-run state: [`LogState`], which writes each line into `tracing` with the check's
//! name, scrubbed of secrets, within a per-run byte budget shared with stdout and
//! stderr. Stdout and stderr are captured by [`CapturePipe`], which keeps the first
//! bytes up to a cap and silently discards the rest (refusing the write would make
//! Rust's `print!` panic, turning chattiness into a failure).

use std::sync::{Arc, Mutex};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::bindings::healthhost::plugin::log::{self as wit, Level};
use crate::limits::{LOG_MAX_BYTES_PER_RUN, LOG_MAX_LINE_BYTES};
use crate::scrub::Scrubber;

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
    pub fn new(check: Arc<str>, scrubber: Arc<Scrubber>) -> Self {
        LogState {
            check,
            scrubber,
            written: 0,
            dropped: 0,
        }
    }

    /// Writes one line, if the run's budget allows it.
    pub fn write(&mut self, level: Level, source: &'static str, line: &str) {
        let line = truncate(line, LOG_MAX_LINE_BYTES);
        if self.written + line.len() > LOG_MAX_BYTES_PER_RUN {
            self.dropped += 1;
            return;
        }
        self.written += line.len();
        let line = self.scrubber.scrub(line);
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
    pub fn write_captured(&mut self, source: &'static str, pipe: &CapturePipe) {
        let (bytes, discarded) = pipe.contents();
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            self.write(Level::Info, source, line);
        }
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

/// `text` cut to at most `max` bytes at a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A bounded in-memory stdout/stderr: keeps the first `capacity` bytes, discards and
/// counts the rest, and never refuses a write.
#[derive(Clone)]
pub struct CapturePipe {
    capacity: usize,
    inner: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    discarded: u64,
}

impl CapturePipe {
    /// A pipe that keeps up to `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        CapturePipe {
            capacity,
            inner: Arc::default(),
        }
    }

    /// The kept bytes and the number discarded.
    pub fn contents(&self) -> (Vec<u8>, u64) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (inner.bytes.clone(), inner.discarded)
    }

    fn push(&self, buf: &[u8]) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.capacity.saturating_sub(inner.bytes.len());
        let kept = buf.len().min(room);
        inner.bytes.extend_from_slice(&buf[..kept]);
        inner.discarded += (buf.len() - kept) as u64;
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
        let pipe = CapturePipe::new(4);
        pipe.push(b"abc");
        pipe.push(b"defg");
        assert_eq!(pipe.contents(), (b"abcd".to_vec(), 3));
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }

    #[test]
    fn budget_drops_lines_beyond_it() {
        let mut log = LogState::new("t".into(), Arc::default());
        let line = "x".repeat(1024);
        for _ in 0..(LOG_MAX_BYTES_PER_RUN / 1024 + 5) {
            log.write(Level::Info, "plugin", &line);
        }
        assert_eq!(log.dropped, 5);
    }
}
