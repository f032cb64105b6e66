//! Per-run memory accounting: caps the linear memory (and table growth, and the
//! instances, memories and tables a plugin's share of the pool allows) of one store,
//! records the peak, and records that a grow was refused — that is how a run that
//! dies of memory is told apart from one that trapped for another reason (a refused
//! grow usually surfaces as the guest aborting, which looks like any other trap).

use crate::limits::{MAX_TABLE_ELEMENTS, PLUGIN_CORE_INSTANCES, PLUGIN_MEMORIES, PLUGIN_TABLES};

/// A `ResourceLimiter` for one run.
#[derive(Debug)]
pub struct MemoryLimiter {
    limit: u64,
    /// Bytes of linear memory across all of the store's memories.
    total: u64,
    peak: u64,
    refused: bool,
}

impl MemoryLimiter {
    /// A limiter allowing `limit` bytes of linear memory in total.
    pub fn new(limit: u64) -> Self {
        MemoryLimiter {
            limit,
            total: 0,
            peak: 0,
            refused: false,
        }
    }

    /// The most linear memory the run held at once.
    pub fn peak(&self) -> u64 {
        self.peak
    }

    /// Whether a memory grow was refused because of the limit.
    pub fn refused(&self) -> bool {
        self.refused
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current) as u64;
        if self.total + growth > self.limit {
            self.refused = true;
            return Ok(false);
        }
        self.total += growth;
        self.peak = self.peak.max(self.total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    // A plugin's share of the pool, checked again per run (the engine checks each
    // component against it when it loads).
    fn instances(&self) -> usize {
        PLUGIN_CORE_INSTANCES as usize
    }

    fn memories(&self) -> usize {
        PLUGIN_MEMORIES as usize
    }

    fn tables(&self) -> usize {
        PLUGIN_TABLES as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn counts_all_memories_and_refuses_beyond_the_limit() {
        let mut limiter = MemoryLimiter::new(100);
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        assert!(limiter.memory_growing(0, 30, None).unwrap());
        assert!(!limiter.refused());
        assert!(!limiter.memory_growing(60, 80, None).unwrap());
        assert!(limiter.refused());
        assert_eq!(limiter.peak(), 90);
    }
}
