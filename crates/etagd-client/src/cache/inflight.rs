//! Fills in flight in this process, so local waiters wake when a local fill ends instead of polling the store.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::key::Digest;

/// The fills this process is running, by resource. Its size is bounded by the number of fills in flight, which
/// is bounded by the number of requests in flight.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    fills: Mutex<HashMap<Digest, Arc<Notify>>>,
}

/// Registered while a fill runs; wakes the waiters when dropped.
#[derive(Debug)]
pub(crate) struct Guard {
    owner: Weak<super::Inner>,
    digest: Digest,
    notify: Arc<Notify>,
}

impl InFlight {
    pub(crate) fn len(&self) -> usize {
        self.fills.lock().len()
    }

    /// Waits until the local fill of `digest` ends, or `max` passes (also when no local fill runs: the filler
    /// is elsewhere in the fleet and the caller polls).
    pub(crate) async fn wait(&self, digest: &Digest, max: Duration) {
        let notify = self.fills.lock().get(digest).cloned();
        match notify {
            Some(notify) => {
                let _ = tokio::time::timeout(max, notify.notified()).await;
            }
            None => tokio::time::sleep(max).await,
        }
    }
}

impl super::Cache {
    pub(crate) fn inflight_guard(&self, digest: Digest) -> Guard {
        let notify = Arc::new(Notify::new());
        self.inner.inflight.fills.lock().insert(digest, notify.clone());
        Guard { owner: Arc::downgrade(&self.inner), digest, notify }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(inner) = self.owner.upgrade() {
            let mut fills = inner.inflight.fills.lock();
            if fills.get(&self.digest).is_some_and(|current| Arc::ptr_eq(current, &self.notify)) {
                fills.remove(&self.digest);
            }
        }
        self.notify.notify_waiters();
    }
}
