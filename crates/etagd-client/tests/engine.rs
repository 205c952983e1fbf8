//! The engine (`Cache`) driven directly, without HTTP: lookups, fills and invalidations against a store, with a
//! test clock the test moves by hand, so every freshness and grace window is reached without waiting.
//!
//! The embedded store's own expiry (of soft-deleted heads, hit-for-pass markers) runs on tokio's clock, which
//! these tests pause and advance; the engine's judgement (age, grace of generations, pass markers) runs on the
//! test clock. Neither needs a sleep. The placement tests at the end need three real memcached servers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use etagd_client::cache::{Cache, CacheConfig, Clock, FillResponse, Hit, Lookup, LookupRequest};
use etagd_client::cacheability::Freshness;
use etagd_client::key::{Namespace, ResourceKey};
use etagd_client::store::memcached::{MemcachedConfig, MemcachedStore};
use etagd_client::store::{GetOutcome, GetRequest, Store};
use etagd_testkit::{Memcached, unique_namespace};
use http::HeaderMap;

/// A clock the test moves by hand: the engine reads time only through it.
struct TestClock(AtomicU64);

impl TestClock {
    fn advance(&self, by: Duration) {
        self.0.fetch_add(u64::try_from(by.as_millis()).expect("short test durations"), Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// An engine over a store, with its test clock.
struct Engine {
    cache: Cache,
    clock: Arc<TestClock>,
}

impl Engine {
    fn over(store: Arc<dyn Store>, config: CacheConfig) -> Self {
        // Any realistic wall-clock start: generations compare unix milliseconds.
        let clock = Arc::new(TestClock(AtomicU64::new(1_750_000_000_000)));
        let config = CacheConfig {
            namespace: Namespace::new(&unique_namespace()).expect("testkit namespaces are valid"),
            clock: clock.clone(),
            ..config
        };
        Self { cache: Cache::new(store, config), clock }
    }

    fn advance_s(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    async fn lookup(&self, resource: &ResourceKey, headers: &HeaderMap) -> Lookup {
        self.cache.lookup(LookupRequest { resource, headers, route_tags: &[] }).await
    }

    /// Looks up, expects a miss this caller fills, and commits `response`.
    async fn fill(&self, resource: &ResourceKey, headers: &HeaderMap, response: FillResponse) {
        match self.lookup(resource, headers).await {
            Lookup::Miss(fill) => {
                fill.commit(response).await.expect("the fill is stored");
            }
            other => panic!("expected a miss to fill for {}, got {}", resource.canonical(), other.label()),
        }
    }

    async fn hit(&self, resource: &ResourceKey, headers: &HeaderMap) -> Hit {
        match self.lookup(resource, headers).await {
            Lookup::Hit(hit) => hit,
            other => panic!("expected a hit for {}, got {}", resource.canonical(), other.label()),
        }
    }
}

fn freshness(fresh_for_s: u64) -> Freshness {
    Freshness {
        fresh_for_s,
        initial_age_s: 0,
        stale_while_revalidate_s: 0,
        stale_if_error_s: 0,
        must_revalidate: false,
    }
}

fn response(body: &str, freshness: Freshness, tags: &[&str], vary: &[&str]) -> FillResponse {
    FillResponse {
        status: 200,
        headers: vec![("content-type".to_owned(), Bytes::from_static(b"text/plain"))],
        headers_304: Vec::new(),
        body: Bytes::copy_from_slice(body.as_bytes()),
        freshness,
        tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
        vary: vary.iter().map(|name| (*name).to_owned()).collect(),
        etag: None,
        last_modified: None,
        codings: Vec::new(),
    }
}

// ---- Placement: an entry's items live on its head record's server (three memcached servers).

/// Timeouts generous enough for a loaded 2-core machine running many tests at once.
fn relaxed(servers: Vec<String>) -> MemcachedConfig {
    MemcachedConfig {
        servers,
        connect_timeout: Duration::from_secs(1),
        io_timeout: Duration::from_secs(2),
        ..MemcachedConfig::default()
    }
}

/// Which of the per-server stores hold `key`, by server address.
async fn holders(direct: &[(String, MemcachedStore)], key: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (addr, single) in direct {
        let read = single.get_many(&[GetRequest::plain(key)]).await.remove(0).expect("read");
        if matches!(read, GetOutcome::Hit(_)) {
            found.push(addr.clone());
        }
    }
    found
}

/// Bodies, Vary variant entries and refresh locks are written beside the head record, so a server's loss
/// takes whole entries with it, never a head whose body lived elsewhere; and the engine reads them back there.
#[tokio::test]
async fn an_entrys_items_live_on_its_head_records_server() {
    let servers = [Memcached::start(), Memcached::start(), Memcached::start()];
    let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
    let store = MemcachedStore::connect(relaxed(addrs.clone())).await.expect("connect");
    let mut direct = Vec::new();
    for addr in &addrs {
        direct.push((addr.clone(), MemcachedStore::connect(relaxed(vec![addr.clone()])).await.expect("connect")));
    }
    // No in-process body cache: every body read below goes to the store.
    let engine = Engine::over(Arc::new(store), CacheConfig { body_cache_bytes: 0, ..CacheConfig::default() });
    let ns = &engine.cache.config().namespace;
    let store = engine.cache.store().clone();

    let mut headers = HeaderMap::new();
    headers.insert("accept-language", "de".parse().expect("a header value"));
    let (mut bodies_elsewhere, mut variants_elsewhere) = (0, 0);
    for n in 0..12 {
        let resource = ResourceKey::new("http", "placement.example", &format!("/item/{n}"));
        let varies = n % 2 == 1;
        let vary: &[&str] = if varies { &["accept-language"] } else { &[] };
        engine.fill(&resource, &headers, response(&format!("item {n}"), freshness(60), &[], vary)).await;
        let hit = engine.hit(&resource, &headers).await;
        let home = store.server_of(&ns.head_key(&resource));

        let body_key = hit.body_key(&engine.cache, None);
        assert_eq!(holders(&direct, &body_key).await, [home.as_str()], "body of {n}");
        bodies_elsewhere += usize::from(store.server_of(&body_key) != home);
        let body = engine.cache.body(&hit, None).await.expect("body read").expect("body present");
        assert_eq!(body.body, format!("item {n}"));

        let entry_digest = if varies {
            let digest = resource.variant(&["accept-language".to_owned()], &headers);
            let variant_key = ns.variant_key(&digest);
            assert_eq!(holders(&direct, &variant_key).await, [home.as_str()], "variant of {n}");
            variants_elsewhere += usize::from(store.server_of(&variant_key) != home);
            digest
        } else {
            resource.digest()
        };

        // A stale hit's refresh permit holds the entry's lock, beside the head too, and lets it go.
        engine.advance_s(61);
        let stale = engine.hit(&resource, &headers).await;
        let request = LookupRequest { resource: &resource, headers: &headers, route_tags: &[] };
        let refresh = engine.cache.refresh_permit(&stale, request).await.expect("this caller refreshes");
        let lock_key = ns.refresh_lock_key(&entry_digest);
        assert_eq!(holders(&direct, &lock_key).await, [home.as_str()], "refresh lock of {n}");
        refresh.abandon(None).await;
        assert!(holders(&direct, &lock_key).await.is_empty(), "the lock of {n} is released where it was taken");
    }
    // Without the hint some of these would have landed elsewhere: the test proves the hint, not luck.
    assert!(bodies_elsewhere > 0 && variants_elsewhere > 0, "{bodies_elsewhere} bodies, {variants_elsewhere} variants");
}
