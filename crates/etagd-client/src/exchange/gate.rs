//! The origin gate: at most `max_concurrency` requests to the origin at once, `max_queue` more waiting, and an
//! immediate refusal for the rest (nginx's `max_conns` with a queue, Varnish's `.max_connections`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::config::OriginLimit;

/// Shared by every request of one exchange.
#[derive(Debug)]
pub(crate) struct OriginGate {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    limit: OriginLimit,
}

/// What a request got from the gate.
pub(crate) enum Pass {
    /// A slot, held until the response head arrives.
    Slot(Option<OwnedSemaphorePermit>),
    /// No slot and no room in the queue.
    Refused,
}

impl OriginGate {
    pub(crate) fn new(limit: OriginLimit) -> Self {
        Self { slots: Arc::new(Semaphore::new(limit.max_concurrency.max(1))), waiting: AtomicUsize::new(0), limit }
    }

    /// Waits for a slot if the queue has room; `queue: false` (background refreshes) never waits.
    pub(crate) async fn enter(&self, queue: bool) -> Pass {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Pass::Slot(Some(permit));
        }
        if !queue {
            return Pass::Refused;
        }
        let position = self.waiting.fetch_add(1, Ordering::AcqRel);
        if position >= self.limit.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Pass::Refused;
        }
        let permit = self.slots.clone().acquire_owned().await.ok();
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        Pass::Slot(permit)
    }

    pub(crate) fn retry_after_s(&self) -> u32 {
        self.limit.retry_after_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_the_cap_requests_queue_and_past_the_queue_they_are_refused() {
        let gate = OriginGate::new(OriginLimit { max_concurrency: 1, max_queue: 1, retry_after_s: 1 });
        let Pass::Slot(first) = gate.enter(true).await else { panic!("the first request gets the slot") };
        assert!(matches!(gate.enter(false).await, Pass::Refused), "a background refresh never queues");
        let gate = Arc::new(gate);
        let queued = tokio::spawn({
            let gate = gate.clone();
            async move { matches!(gate.enter(true).await, Pass::Slot(Some(_))) }
        });
        while gate.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(gate.enter(true).await, Pass::Refused), "the queue is full");
        drop(first);
        assert!(queued.await.unwrap(), "the queued request gets the slot once it frees");
    }
}
