//! The engine: lookup, fill and invalidation over any [`Store`], shared by the sidecar, the tower layer and
//! `etagctl`.
//!
//! One lookup is one round of store reads in the common case: the head record (with a fill lease on a miss),
//! the namespace generation, and the generations of the tags this process last saw on the resource (or that a
//! route rule gives it), all in one batch. A varying resource, or a tag this process has not seen yet, costs a
//! second round. A hit's body is read separately, and only when the caller needs it (not for a 304); with a
//! remote store it is kept in process keyed by its immutable name, so a hot body crosses the network once.
//!
//! What a caller does with each [`Lookup`]:
//!
//! | lookup | the caller |
//! |---|---|
//! | `Hit` fresh | answers from the entry (304 or body) |
//! | `Hit` stale or in grace | serves it while one caller refreshes ([`Cache::refresh_permit`]), or revalidates |
//! | `Miss(fill)` | asks the origin, then [`Fill::commit`] or [`Fill::abandon`] |
//! | `Busy` | another caller (anywhere in the fleet) is filling: [`Cache::lookup_waiting`] waits for it |
//! | `Pass` | goes to the origin without storing (the resource was recently uncacheable) |
//! | `Unavailable` | goes to the origin: the store failed, which is never the client's problem |
//!
//! One concern per file:
//! - `config`: settings and the clock.
//! - `lookup`: the batched read, and the wait for another caller's fill.
//! - `judge`: what the read found (fresh, stale, grace or invalid), refresh permits and locks.
//! - `live`: generation counters read and checked.
//! - `body`: body reads and the in-process body cache.
//! - `chunks`: bodies larger than one item, written, touched and streamed in chunks.
//! - `codings`: a coding added to a stored entry on demand.
//! - `fill`: the commit protocol.
//! - `invalidate`, `inspect` (what operators see), `counters`.
//! - `inflight`: waiting for a fill in this process.
//! - `memo`: decoded entries.
//! - `hints`: which keys a resource's first round asks for.
//! - `renew`: keeping a fill's short lease alive while it works.
//! - `fence`: an invalidation that missed a server is never undone when it answers again.
//! - `bridge`: honouring invalidations across a rolling upgrade's key schema change.
//!
//! An entry's bodies, variant and refresh lock are placed on its head record's server
//! ([`crate::store::Placement`]).

mod body;
mod bridge;
mod chunks;
mod codings;
mod config;
mod counters;
mod fence;
mod fill;
mod hints;
mod inflight;
mod inspect;
mod invalidate;
mod judge;
mod live;
mod lookup;
mod memo;
mod renew;

use std::sync::Arc;

pub use body::StoredRepresentation;
pub use chunks::ChunkedBody;
pub use codings::CODING_CLAIM_TTL_S;
pub use config::{CacheConfig, Clock, DEFAULT_MAX_OBJECT_FRACTION, SystemClock, ValidatorMode};
pub use counters::{CounterSnapshot, Counters};
pub use fill::{CommitError, Fill, FillResponse};
pub use inspect::{EntryView, Inspection};
pub use invalidate::{Invalidation, InvalidationReport, TargetReport};
pub use judge::{Hit, HitState};
pub use lookup::{Lookup, LookupRequest};

use crate::store::{Store, StoreError};
use counters::bump;
use live::Live;

/// The engine. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    config: CacheConfig,
    bodies: Option<body::BodyCache>,
    hints: hints::Hints,
    inflight: inflight::InFlight,
    memo: memo::Memo,
    counters: Counters,
    fences: fence::Fences,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl Cache {
    /// An engine over a store.
    pub fn new(store: Arc<dyn Store>, config: CacheConfig) -> Self {
        let bodies = body::body_cache(store.as_ref(), &config);
        let hints = hints::Hints::new(config.hint_capacity);
        let cache = Self {
            inner: Arc::new(Inner {
                store,
                config,
                bodies,
                hints,
                inflight: inflight::InFlight::default(),
                memo: memo::Memo::default(),
                counters: Counters::default(),
                fences: fence::Fences::default(),
            }),
        };
        cache.spawn_fence_poller();
        cache
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The settings.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// The largest object a fill may store now (identity body plus stored codings, in bytes): admission, at
    /// [`CacheConfig::max_object_fraction`] of the smallest server's memory ([`Store::memory_bytes`]), so one
    /// object cannot evict most of a server; unbounded until the store reports its memory (the exchange's own
    /// `max_body_bytes` still applies). A body larger than one item is stored in chunks, so the item limit no
    /// longer bounds it. A larger object is refused at commit ([`CommitError::NotAdmitted`], which marks the
    /// resource hit-for-pass); a caller that knows the size early (`Content-Length`) should give the fill up at
    /// once with [`Fill::abandon`] instead of reading the body, so waiters do not queue behind it.
    pub fn max_body_bytes(&self) -> usize {
        self.admission_limit().unwrap_or(usize::MAX)
    }

    fn admission_limit(&self) -> Option<usize> {
        let memory = self.inner.store.memory_bytes()?;
        let fraction = self.inner.config.max_object_fraction.clamp(0.0, 1.0);
        Some((memory as f64 * fraction) as usize)
    }

    /// Now, by the engine's clock, in unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.inner.config.clock.now_ms()
    }

    /// Counts a failed store operation; the caller falls back to the origin.
    fn store_error(&self, error: &StoreError) {
        bump(&self.inner.counters.store_errors);
        tracing::debug!(%error, "store operation failed; falling back to the origin");
    }
}
