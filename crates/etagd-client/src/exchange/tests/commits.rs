//! Fills answered before their commit (`stream::answer_then_store`) under a store that is slower than the
//! misses arriving.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::*;
use crate::store::{
    DeleteMode, Expiry, GetOutcome, GetRequest, Placement, ServerHealth, ServerStats, SetCondition, SetOutcome, Store,
    StoreError,
};

/// The embedded store, with every write held until the test lets it through.
struct HeldWrites {
    inner: MemoryStore,
    writes: Arc<Semaphore>,
}

impl HeldWrites {
    async fn wait(&self) {
        self.writes.acquire().await.expect("the test never closes the gate").forget();
    }
}

#[async_trait]
impl Store for HeldWrites {
    async fn get_many(&self, requests: &[GetRequest]) -> Vec<Result<GetOutcome, StoreError>> {
        self.inner.get_many(requests).await
    }

    async fn set_placed(
        &self,
        key: &str,
        placement: Placement<'_>,
        value: Bytes,
        expiry: Expiry,
        condition: SetCondition,
    ) -> Result<SetOutcome, StoreError> {
        self.wait().await;
        self.inner.set_placed(key, placement, value, expiry, condition).await
    }

    async fn set_all_placed(
        &self,
        items: Vec<(String, Bytes)>,
        placement: Placement<'_>,
        expiry: Expiry,
    ) -> Result<(), StoreError> {
        self.wait().await;
        self.inner.set_all_placed(items, placement, expiry).await
    }

    async fn delete_placed(&self, key: &str, placement: Placement<'_>, mode: DeleteMode) -> Result<bool, StoreError> {
        self.inner.delete_placed(key, placement, mode).await
    }

    async fn touch_placed(
        &self,
        key: &str,
        placement: Placement<'_>,
        expiry: Expiry,
    ) -> Result<Option<u64>, StoreError> {
        self.inner.touch_placed(key, placement, expiry).await
    }

    async fn stats(&self) -> Vec<ServerStats> {
        self.inner.stats().await
    }

    fn health(&self) -> Vec<ServerHealth> {
        self.inner.health()
    }

    fn server_of(&self, key: &str) -> String {
        self.inner.server_of(key)
    }

    fn max_item_bytes(&self) -> usize {
        self.inner.max_item_bytes()
    }

    fn is_remote(&self) -> bool {
        false
    }
}

/// RFC 9111 section 3 lets a cache store a response after forwarding it; the queue of such commits is bounded,
/// so past it a miss waits for its own commit: misses arriving faster than the store takes them (cache-busting
/// query strings) slow their senders down instead of queueing bodies in memory without bound.
#[tokio::test]
async fn past_the_commit_queue_a_miss_waits_for_its_commit() {
    let writes = Arc::new(Semaphore::new(0));
    let store = HeldWrites { inner: MemoryStore::new(16 << 20), writes: writes.clone() };
    let f = fixture_on(Arc::new(store), ExchangeConfig::default());
    for _ in 0..=super::super::stream::QUEUED_COMMITS {
        f.upstream.answer(200, FRESH, "page");
    }
    for n in 0..super::super::stream::QUEUED_COMMITS {
        let target = format!("/p{n}");
        let early = f.send_unsettled(Method::GET, &target, &[], None);
        let got = tokio::time::timeout(Duration::from_secs(5), early).await.expect("answered while its commit waits");
        assert_eq!((got.status, got.body.as_ref()), (200, &b"page"[..]));
    }
    let mut late = Box::pin(f.send_unsettled(Method::GET, "/late", &[], None));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut late).await.is_err(),
        "with the queue full the miss waits for its commit"
    );
    writes.add_permits(1 << 20);
    let got = tokio::time::timeout(Duration::from_secs(5), late).await.expect("answered once the store moves");
    assert_eq!(got.report.outcome, Outcome::Miss(Filled::Stored));
    f.settle().await;
    assert_eq!(f.get("/late", &[]).await.cache_status(), "etagd; hit; ttl=60", "and it was stored");
}
