//! The engine's counters: plain atomics bumped on the request path, read as one snapshot at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Cache;

/// Counters the engine keeps; the sidecar exports them as metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Store operations that failed.
    pub store_errors: AtomicU64,
    /// Stored items that did not decode (treated as misses).
    pub corrupt_items: AtomicU64,
    /// Fill leases won (this process fills).
    pub leases_won: AtomicU64,
    /// Fill leases found held by another caller.
    pub leases_busy: AtomicU64,
    /// Fills stored.
    pub fills_stored: AtomicU64,
    /// Fills refused because an invalidation landed while the origin was answering.
    pub fills_invalidated: AtomicU64,
    /// Fills that lost a race with another writer.
    pub fills_raced: AtomicU64,
    /// Codings added to stored entries on demand (`codings`).
    pub codings_added: AtomicU64,
    /// Bodies read from the in-process body cache.
    pub body_cache_hits: AtomicU64,
    /// Bodies read from the store.
    pub body_store_reads: AtomicU64,
    /// Invalidation targets written.
    pub invalidations: AtomicU64,
    /// Invalidation targets that could not be written.
    pub invalidation_failures: AtomicU64,
}

/// A snapshot of [`Counters`] plus gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CounterSnapshot {
    /// See [`Counters::store_errors`].
    pub store_errors: u64,
    /// See [`Counters::corrupt_items`].
    pub corrupt_items: u64,
    /// See [`Counters::leases_won`].
    pub leases_won: u64,
    /// See [`Counters::leases_busy`].
    pub leases_busy: u64,
    /// See [`Counters::fills_stored`].
    pub fills_stored: u64,
    /// See [`Counters::fills_invalidated`].
    pub fills_invalidated: u64,
    /// See [`Counters::fills_raced`].
    pub fills_raced: u64,
    /// See [`Counters::codings_added`].
    pub codings_added: u64,
    /// See [`Counters::body_cache_hits`].
    pub body_cache_hits: u64,
    /// See [`Counters::body_store_reads`].
    pub body_store_reads: u64,
    /// See [`Counters::invalidations`].
    pub invalidations: u64,
    /// See [`Counters::invalidation_failures`].
    pub invalidation_failures: u64,
    /// Bytes held by the in-process body cache.
    pub body_cache_bytes: u64,
    /// Fills in flight in this process.
    pub fills_in_flight: u64,
}

/// Counts one event.
pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Cache {
    /// Counters and gauges.
    pub fn counters(&self) -> CounterSnapshot {
        let c = &self.inner.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSnapshot {
            store_errors: load(&c.store_errors),
            corrupt_items: load(&c.corrupt_items),
            leases_won: load(&c.leases_won),
            leases_busy: load(&c.leases_busy),
            fills_stored: load(&c.fills_stored),
            fills_invalidated: load(&c.fills_invalidated),
            fills_raced: load(&c.fills_raced),
            codings_added: load(&c.codings_added),
            body_cache_hits: load(&c.body_cache_hits),
            body_store_reads: load(&c.body_store_reads),
            invalidations: load(&c.invalidations),
            invalidation_failures: load(&c.invalidation_failures),
            body_cache_bytes: self.inner.bodies.as_ref().map_or(0, |b| {
                b.run_pending_tasks();
                b.weighted_size()
            }),
            fills_in_flight: self.inner.inflight.len() as u64,
        }
    }
}
