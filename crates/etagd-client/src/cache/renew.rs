//! Lease renewal: while a fill is alive, what it holds (a lease placeholder or a refresh lock) is kept alive by
//! a background touch every third of the lease, so leases can be short. A filler that dies, hangs up or loses
//! its store connection stops renewing, and whatever it held expires within one lease (`fill_lease`), whatever
//! happened: no orphaned lease blocks a resource for longer.
//!
//! Renewal stops before the fill writes anything (commit or hit-for-pass), and no touch is in flight once it
//! has stopped, so a touch never shortens the life of what the fill stored. It also stops as soon as the item
//! is gone or is no longer the placeholder this fill created (released, expired, invalidated). A touch cannot
//! be made conditional on the CAS (`mg` has no compare), so in one race, where the placeholder was deleted and
//! another filler stored an entry under the key since the last renewal, that one touch shortens the entry's
//! life to one lease: it then misses early and is refilled, which fails towards a miss.
//!
//! A fill that streams the origin's body also reports its progress ([`Progress`]): a marker beside the head
//! record (`key::Namespace::fill_progress_key`), rewritten at the same interval but only while bytes keep
//! arriving, so it lives one lease past the last byte. Waiters whose `fill_wait` ran out keep waiting while it
//! is there: a fill making progress is worth waiting for (the alternative, every waiter going to the origin for
//! the same large body, is what leases exist to prevent), while one whose origin stalled loses its marker
//! within a lease and sends them on, as before.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::Cache;
use crate::key::ResourceKey;
use crate::store::{Expiry, GetOutcome, GetRequest, Placement, SetCondition};

/// The shortest interval between renewals, whatever the lease.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// What a fill holds and keeps alive.
pub(super) struct Held {
    /// The item's key.
    pub(super) key: String,
    /// The key whose server the item lives on, when not its own (variant placeholders and locks).
    pub(super) near: Option<String>,
    /// The CAS the item must still have (placeholders); `None` for a lock, which only this fill can hold.
    pub(super) cas: Option<u64>,
}

/// A running renewal; stopped by [`stop`](Renewal::stop) or when dropped.
#[derive(Debug)]
pub(super) struct Renewal {
    stopped: Arc<Mutex<bool>>,
    task: JoinHandle<()>,
}

impl Renewal {
    /// Starts renewing every third of the configured lease (`None` outside a tokio runtime).
    pub(super) fn start(cache: &Cache, held: Held) -> Option<Renewal> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let lease = cache.config().fill_lease;
        let every = (lease / 3).max(MIN_INTERVAL);
        let expiry = Expiry::from_secs(lease.as_secs());
        let stopped = Arc::new(Mutex::new(false));
        let flag = stopped.clone();
        let cache = cache.clone();
        let task = runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                // Held across the touch, so `stop` waits for a touch in flight.
                let stopped = flag.lock().await;
                if *stopped {
                    return;
                }
                let placement = held.near.as_deref().map_or(Placement::Own, Placement::Near);
                match cache.store().touch_placed(&held.key, placement, expiry).await {
                    Ok(Some(cas)) if held.cas.is_none_or(|expected| expected == cas) => {}
                    Ok(_) => {
                        // Released, expired or replaced: nothing of this fill's is left to keep alive.
                        tracing::debug!(key = %held.key, "fill lease lost; renewal stops");
                        return;
                    }
                    // The lease may still live: try again at the next interval.
                    Err(error) => cache.store_error(&error),
                }
            }
        });
        Some(Renewal { stopped, task })
    }

    /// Stops renewing. Once it returns, no touch is in flight and none will be sent.
    pub(super) async fn stop(&self) {
        *self.stopped.lock().await = true;
        self.task.abort();
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A streaming fill's progress report; stops when dropped (the marker then expires within one lease).
#[derive(Debug)]
pub(super) struct Progress {
    bytes: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Progress {
    /// Writes the marker now and keeps it alive while [`bytes`](Self::bytes) grows (`None` outside a tokio
    /// runtime).
    pub(super) fn start(cache: &Cache, resource: &ResourceKey) -> Option<Progress> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let lease = cache.config().fill_lease;
        let every = (lease / 3).max(MIN_INTERVAL);
        let expiry = Expiry::from_secs(lease.as_secs());
        let ns = &cache.config().namespace;
        let (key, head_key) = (ns.fill_progress_key(resource), ns.head_key(resource));
        let bytes = Arc::new(AtomicU64::new(0));
        let counter = bytes.clone();
        let cache = cache.clone();
        let task = runtime.spawn(async move {
            let mut reported = None;
            loop {
                let now = counter.load(Ordering::Relaxed);
                if reported != Some(now) {
                    let near = Placement::Near(&head_key);
                    let marker = Bytes::from(now.to_string());
                    match cache.store().set_placed(&key, near, marker, expiry, SetCondition::Always).await {
                        Ok(_) => reported = Some(now),
                        Err(error) => cache.store_error(&error),
                    }
                }
                tokio::time::sleep(every).await;
            }
        });
        Some(Progress { bytes, task })
    }

    /// The count of body bytes received, which the streaming side adds to.
    pub(super) fn bytes(&self) -> Arc<AtomicU64> {
        self.bytes.clone()
    }
}

impl Cache {
    /// Whether a fill of the resource reports progress: its marker beside the head record lives one lease past
    /// the last bytes it received.
    pub(super) async fn fill_progressing(&self, resource: &ResourceKey) -> bool {
        let ns = &self.inner.config.namespace;
        let read = GetRequest::plain(ns.fill_progress_key(resource)).near(ns.head_key(resource));
        matches!(self.inner.store.get_many(&[read]).await.pop(), Some(Ok(GetOutcome::Hit(_))))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
    }
}
