//! Bounded escalation for trigger invalidations: when an unsafe method's or a header's invalidation cannot reach
//! a Memcached server, the whole namespace is invalidated (its entries must miss when the server returns), but at
//! most once per window. Every failure is still followed by a namespace bump within one window: the first one
//! at once, later ones by a single deferred bump at the end of the window.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::cache::{Cache, Invalidation};

/// Shared by every request of one exchange.
#[derive(Debug)]
pub(crate) struct Escalations {
    window: Duration,
    /// Engine-clock ms of the last namespace bump this process made for a trigger (0: none yet).
    last_ms: AtomicU64,
    deferred: AtomicBool,
}

impl Escalations {
    pub(crate) fn new(window: Duration) -> Self {
        Self { window, last_ms: AtomicU64::new(0), deferred: AtomicBool::new(false) }
    }

    /// Escalates a failed trigger invalidation, within the bound.
    pub(crate) async fn escalate(self: &Arc<Self>, cache: &Cache) {
        let now = cache.now_ms();
        let last = self.last_ms.load(Ordering::Acquire);
        let window_ms = self.window.as_millis() as u64;
        if (last == 0 || now >= last + window_ms)
            && self.last_ms.compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            bump_all(cache).await;
            return;
        }
        // Within the window: one deferred bump covers this failure and every other one until it runs.
        if !self.deferred.swap(true, Ordering::AcqRel) {
            let this = self.clone();
            let cache = cache.clone();
            let wait = Duration::from_millis((last + window_ms).saturating_sub(now));
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                this.deferred.store(false, Ordering::Release);
                this.last_ms.store(cache.now_ms().max(1), Ordering::Release);
                bump_all(&cache).await;
            });
        }
    }
}

async fn bump_all(cache: &Cache) {
    tracing::warn!("an invalidation could not reach every Memcached server; invalidating the whole namespace");
    match cache.invalidate(&Invalidation { all: true, ..Invalidation::default() }).await {
        Ok(report) if !report.complete => tracing::warn!(?report, "the namespace invalidation did not land either"),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "namespace invalidation skipped"),
    }
}
