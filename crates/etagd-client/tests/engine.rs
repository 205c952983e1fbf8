//! The engine (`Cache`) driven directly, without HTTP: lookups, fills and invalidations against a store, with a
//! test clock the test moves by hand, so every freshness and grace window is reached without waiting.
//!
//! The embedded store's own expiry (of soft-deleted heads, hit-for-pass markers) runs on tokio's clock, which
//! these tests pause and advance; the engine's judgement (age, grace of generations, pass markers) runs on the
//! test clock. Neither needs a sleep. The placement tests at the end need three real memcached servers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use etagd_client::cache::{
    Cache, CacheConfig, Clock, CommitError, FillResponse, Hit, HitState, Invalidation, Lookup, LookupRequest,
};
use etagd_client::cacheability::Freshness;
use etagd_client::generation::Generation;
use etagd_client::key::{Namespace, ResourceKey};
use etagd_client::store::memcached::{MemcachedConfig, MemcachedStore};
use etagd_client::store::memory::MemoryStore;
use etagd_client::store::{
    DeleteMode, Expiry, GetOutcome, GetRequest, Lease, Placement, ServerHealth, ServerStats, SetCondition, SetOutcome,
    Store, StoreError,
};
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
        body: Bytes::copy_from_slice(body.as_bytes()),
        freshness,
        tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
        vary: vary.iter().map(|name| (*name).to_owned()).collect(),
        etag: None,
        codings: Vec::new(),
    }
}

// ---- Freshness and the stale windows (embedded store, test clock).

/// What a lookup should find at some point of an entry's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Fresh,
    Stale { stale_for_s: u64, while_revalidate: bool, if_error: bool },
}

/// One stored response and what lookups find as it ages: (seconds since it was stored, expected age, state).
struct Life {
    rule: &'static str,
    freshness: Freshness,
    checks: Vec<(u64, u64, Expect)>,
}

fn stale(stale_for_s: u64, while_revalidate: bool, if_error: bool) -> Expect {
    Expect::Stale { stale_for_s, while_revalidate, if_error }
}

fn lives() -> Vec<Life> {
    let base = freshness(60);
    vec![
        Life {
            // RFC 9111 section 4.2: response_is_fresh = (freshness_lifetime > current_age); at an age equal to
            // the lifetime it is stale, and with no stale-* directive it may not be served stale.
            rule: "RFC 9111 4.2 freshness lifetime",
            freshness: base.clone(),
            checks: vec![(0, 0, Expect::Fresh), (59, 59, Expect::Fresh), (60, 60, stale(0, false, false))],
        },
        Life {
            // RFC 9111 section 4.2.3: current_age = corrected_initial_age + resident_time; an `Age` of 50 on
            // arrival leaves 10 s of a 60 s lifetime.
            rule: "RFC 9111 4.2.3 age on arrival",
            freshness: Freshness { initial_age_s: 50, ..base.clone() },
            checks: vec![(0, 50, Expect::Fresh), (9, 59, Expect::Fresh), (10, 60, stale(0, false, false))],
        },
        Life {
            // RFC 5861 section 3: stale-while-revalidate=30 lets a cache serve it stale for up to 30 s while it
            // revalidates in the background; past the window it must revalidate first.
            rule: "RFC 5861 3 stale-while-revalidate",
            freshness: Freshness { stale_while_revalidate_s: 30, ..base.clone() },
            checks: vec![
                (59, 59, Expect::Fresh),
                (60, 60, stale(0, true, false)),
                (89, 89, stale(29, true, false)),
                (91, 91, stale(31, false, false)),
            ],
        },
        Life {
            // RFC 5861 section 4: stale-if-error=120 lets a cache serve it stale for up to 120 s when the origin
            // fails; it says nothing about serving stale otherwise.
            rule: "RFC 5861 4 stale-if-error",
            freshness: Freshness { stale_if_error_s: 120, ..base.clone() },
            checks: vec![
                (100, 100, stale(40, false, true)),
                (179, 179, stale(119, false, true)),
                (181, 181, stale(121, false, false)),
            ],
        },
        Life {
            // RFC 9111 section 5.2.2.2 (must-revalidate): once stale, never reused without validation, which
            // overrides the stale-* windows (RFC 9111 section 4.2.4: no stale response when a directive forbids
            // it).
            rule: "RFC 9111 5.2.2.2 must-revalidate",
            freshness: Freshness {
                stale_while_revalidate_s: 30,
                stale_if_error_s: 30,
                must_revalidate: true,
                ..base.clone()
            },
            checks: vec![(30, 30, Expect::Fresh), (61, 61, stale(1, false, false))],
        },
        Life {
            // RFC 9111 section 5.2.2.4 (no-cache): a stored response is never used without validation: a zero
            // lifetime that must be revalidated is stale from the start.
            rule: "RFC 9111 5.2.2.4 no-cache",
            freshness: Freshness { must_revalidate: true, ..freshness(0) },
            checks: vec![(0, 0, stale(0, false, false))],
        },
        Life {
            // Not an RFC rule: a route TTL of "until invalidated" (u64::MAX) never goes stale by age.
            rule: "etagd: fresh until invalidated",
            freshness: freshness(u64::MAX),
            checks: vec![(0, 0, Expect::Fresh), (864_000, 864_000, Expect::Fresh)],
        },
    ]
}

fn memory_engine() -> Engine {
    Engine::over(Arc::new(MemoryStore::new(16 << 20)), CacheConfig::default())
}

impl Engine {
    /// Lets time pass for the engine's clock and for the embedded store's (tokio's paused clock) alike.
    async fn elapse_s(&self, secs: u64) {
        self.advance_s(secs);
        tokio::time::advance(Duration::from_secs(secs)).await;
    }
}

fn state_of(hit: &Hit) -> Expect {
    match hit.state {
        HitState::Fresh => Expect::Fresh,
        HitState::Stale { stale_for_s, while_revalidate, if_error } => {
            Expect::Stale { stale_for_s, while_revalidate, if_error }
        }
        HitState::Grace => panic!("nothing was invalidated, yet the hit is in grace"),
    }
}

#[tokio::test(start_paused = true)]
async fn an_entry_ages_through_fresh_and_stale_windows() {
    for life in lives() {
        let engine = memory_engine();
        let resource = ResourceKey::new("http", "fresh.example", "/page");
        let headers = HeaderMap::new();
        engine.fill(&resource, &headers, response("page", life.freshness.clone(), &[], &[])).await;
        let mut elapsed = 0;
        for &(at_s, age_s, expected) in &life.checks {
            engine.elapse_s(at_s - elapsed).await;
            elapsed = at_s;
            let hit = engine.hit(&resource, &headers).await;
            assert_eq!((hit.age_s, state_of(&hit)), (age_s, expected), "{} at {at_s} s", life.rule);
        }
    }
}

/// RFC 5861 section 3: while a stale response is served, the cache revalidates it in the background; the fleet
/// sends one such request (one refresh permit), and the refreshed entry is fresh again. RFC 9111 section 4.3.4:
/// a 304 from the origin updates the stored freshness and keeps the stored body and validator.
#[tokio::test(start_paused = true)]
async fn one_caller_refreshes_a_stale_entry_and_it_is_fresh_again() {
    let engine = memory_engine();
    let resource = ResourceKey::new("http", "swr.example", "/feed");
    let headers = HeaderMap::new();
    let request = LookupRequest { resource: &resource, headers: &headers, route_tags: &[] };
    let swr = Freshness { stale_while_revalidate_s: 30, ..freshness(60) };
    engine.fill(&resource, &headers, response("feed v1", swr.clone(), &[], &[])).await;
    let first = engine.hit(&resource, &headers).await;
    engine.elapse_s(70).await;

    let stale_hit = engine.hit(&resource, &headers).await;
    assert_eq!(state_of(&stale_hit), stale(10, true, false));
    let refresh = engine.cache.refresh_permit(&stale_hit, request).await.expect("the first caller refreshes");
    let other = engine.hit(&resource, &headers).await;
    assert_eq!(state_of(&other), stale(10, true, false), "others keep getting the stale entry meanwhile");
    assert!(engine.cache.refresh_permit(&other, request).await.is_none(), "and do not refresh it too");

    refresh.commit_revalidated((*stale_hit.meta).clone(), swr.clone()).await.expect("the 304 is stored");
    let refreshed = engine.hit(&resource, &headers).await;
    assert_eq!((refreshed.age_s, state_of(&refreshed)), (0, Expect::Fresh));
    assert_eq!(refreshed.meta.etag, first.meta.etag, "a 304 keeps the validator");
    let body = engine.cache.body(&refreshed, None).await.expect("body read").expect("body present");
    assert_eq!(body.body, "feed v1", "and the body");

    // The permit's lock was let go: the next time it is stale, someone may refresh it again, this time with a
    // new representation (a 200).
    engine.elapse_s(65).await;
    let stale_again = engine.hit(&resource, &headers).await;
    let refresh = engine.cache.refresh_permit(&stale_again, request).await.expect("refreshable again");
    refresh.commit(response("feed v2", swr, &[], &[])).await.expect("the 200 is stored");
    let replaced = engine.hit(&resource, &headers).await;
    assert_eq!(state_of(&replaced), Expect::Fresh);
    let body = engine.cache.body(&replaced, None).await.expect("body read").expect("body present");
    assert_eq!(body.body, "feed v2");
}

// ---- Hit-for-pass (embedded store, test clock). Not an RFC rule: etagd's own, so that requests for a
// resource that just answered uncacheably go straight to the origin instead of queueing behind one filler.

#[tokio::test(start_paused = true)]
async fn a_hit_for_pass_marker_expires_and_the_resource_is_cached_again() {
    // (why the fill was given up, the marker's lifetime: None for the configured pass_ttl)
    let cases: [(Option<&str>, Option<u64>); 3] =
        [(Some("no-store"), None), (Some("origin-error"), Some(5)), (None, None)];
    for (reason, ttl_s) in cases {
        let engine = memory_engine();
        let pass_ttl_s = ttl_s.unwrap_or(engine.cache.config().pass_ttl.as_secs());
        let resource = ResourceKey::new("http", "pass.example", "/account");
        let headers = HeaderMap::new();
        let Lookup::Miss(fill) = engine.lookup(&resource, &headers).await else { panic!("a cold key misses") };
        match ttl_s {
            None => fill.abandon(reason).await,
            Some(secs) => fill.abandon_for(reason, Duration::from_secs(secs)).await,
        }
        let Some(reason) = reason else {
            // Given up without a reason (an origin failure the caller will retry): no marker, the next caller fills.
            assert!(matches!(engine.lookup(&resource, &headers).await, Lookup::Miss(_)));
            continue;
        };
        for _ in 0..2 {
            match engine.lookup(&resource, &headers).await {
                Lookup::Pass { reason: found } => assert_eq!(found, reason),
                other => panic!("{reason}: expected a pass, got {}", other.label()),
            }
        }
        // Judged by the engine's clock alone: the store still holds the marker.
        engine.advance_s(pass_ttl_s - 1);
        assert!(matches!(engine.lookup(&resource, &headers).await, Lookup::Pass { .. }), "{reason}: still passed");
        engine.advance_s(1);
        engine.fill(&resource, &headers, response("account", freshness(60), &[], &[])).await;
        assert_eq!(state_of(&engine.hit(&resource, &headers).await), Expect::Fresh, "{reason}: cached again");
    }
}

// ---- Invalidation by URL, tag and namespace, hard and with grace (embedded store, test clock).

/// What to invalidate, and whether it also covers the bystander entry.
struct Target {
    kind: &'static str,
    invalidation: Invalidation,
    covers_bystander: bool,
}

fn targets(url: &str) -> Vec<Target> {
    vec![
        Target {
            // RFC 9111 section 4.4 asks a cache to invalidate the target URI after an unsafe request; this is
            // the engine side of it (the sidecar decides when).
            kind: "url",
            invalidation: Invalidation { urls: vec![url.to_owned()], ..Invalidation::default() },
            covers_bystander: false,
        },
        Target {
            kind: "tag",
            invalidation: Invalidation { tags: vec!["tag-a".to_owned()], ..Invalidation::default() },
            covers_bystander: false,
        },
        Target {
            // Beyond the RFCs: a path prefix is the tag its entries carry (key::PathPrefix).
            kind: "prefix",
            invalidation: Invalidation { prefixes: vec![prefix_of(url)], ..Invalidation::default() },
            covers_bystander: false,
        },
        Target {
            kind: "all",
            invalidation: Invalidation { all: true, ..Invalidation::default() },
            covers_bystander: true,
        },
    ]
}

/// The directory a URL is in (`http://h/dir/a` is under `http://h/dir/`).
fn prefix_of(url: &str) -> String {
    url[..=url.rfind('/').expect("a URL has a path")].to_owned()
}

/// Expects a miss this caller fills (a refill after an invalidation), and refills it.
async fn refill(engine: &Engine, resource: &ResourceKey, body: &str, tag: &str, what: &str) {
    match engine.lookup(resource, &HeaderMap::new()).await {
        Lookup::Miss(fill) => {
            fill.commit(response(body, freshness(600), &[tag], &[])).await.expect("the refill is stored");
        }
        other => panic!("{what}: expected a miss, got {}", other.label()),
    }
}

#[tokio::test(start_paused = true)]
async fn invalidation_by_url_tag_and_all_hard_and_with_grace() {
    let url = "http://inv.example/dir/a";
    for grace_s in [None, Some(30)] {
        for target in targets(url) {
            let what = format!("{} grace {grace_s:?}", target.kind);
            let engine = memory_engine();
            let headers = HeaderMap::new();
            let a = ResourceKey::from_url(url).expect("a valid url");
            let bystander = ResourceKey::from_url("http://inv.example/b").expect("a valid url");
            engine.fill(&a, &headers, response("a v1", freshness(600), &["tag-a"], &[])).await;
            engine.fill(&bystander, &headers, response("b v1", freshness(600), &["tag-b"], &[])).await;

            let invalidation = Invalidation { grace_s, ..target.invalidation.clone() };
            let report = engine.cache.invalidate(&invalidation).await.expect("a valid invalidation");
            assert!(report.complete && !report.escalated_to_all, "{what}: {report:?}");

            let covered: Vec<(&ResourceKey, &str, &str)> = if target.covers_bystander {
                vec![(&a, "a v2", "tag-a"), (&bystander, "b v2", "tag-b")]
            } else {
                assert_eq!(state_of(&engine.hit(&bystander, &headers).await), Expect::Fresh, "{what}: bystander");
                vec![(&a, "a v2", "tag-a")]
            };
            if grace_s.is_some() {
                // Within grace the old entry is still served, marked as such, while one caller refreshes it.
                for elapsed in [0, 29] {
                    engine.elapse_s(elapsed).await;
                    for (resource, _, _) in &covered {
                        let hit = engine.hit(resource, &headers).await;
                        assert_eq!(hit.state, HitState::Grace, "{what} at {elapsed} s: {}", resource.canonical());
                    }
                }
                engine.elapse_s(2).await;
            }
            for (resource, body, tag) in covered {
                refill(&engine, resource, body, tag, &what).await;
                let hit = engine.hit(resource, &headers).await;
                assert_eq!(state_of(&hit), Expect::Fresh, "{what}: refilled");
                let stored = engine.cache.body(&hit, None).await.expect("body read").expect("body present");
                assert_eq!(stored.body, body, "{what}");
            }
            if !target.covers_bystander {
                assert_eq!(state_of(&engine.hit(&bystander, &headers).await), Expect::Fresh, "{what}: bystander");
            }
        }
    }
}

/// An invalidation that lands while the origin is answering makes the fill unreadable: refused at commit when
/// the tag's counter is first met after the origin answered, unreachable when it was read at lookup.
#[tokio::test(start_paused = true)]
async fn a_fill_racing_an_invalidation_is_never_served() {
    let engine = memory_engine();
    let headers = HeaderMap::new();
    let resource = ResourceKey::new("http", "race.example", "/report");
    engine.fill(&resource, &headers, response("seed", freshness(600), &[], &[])).await;
    engine
        .cache
        .invalidate(&Invalidation { urls: vec!["http://race.example/report".to_owned()], ..Default::default() })
        .await
        .expect("a valid invalidation");

    // The tag is new to this process: its counter is read after the origin answered, and it changed after the
    // fill began.
    let Lookup::Miss(fill) = engine.lookup(&resource, &headers).await else { panic!("invalidated: a miss") };
    engine.cache.invalidate(&Invalidation { tags: vec!["report".to_owned()], ..Default::default() }).await.expect("ok");
    let refused = fill.commit(response("late", freshness(600), &["report"], &[])).await;
    assert!(matches!(refused, Err(CommitError::Invalidated)), "{refused:?}");

    // Now the tag is known, so the next lookup reads its counter up front and the fill records it.
    engine.advance_s(5);
    let Lookup::Miss(fill) = engine.lookup(&resource, &headers).await else { panic!("nothing stored: a miss") };
    engine.cache.invalidate(&Invalidation { tags: vec!["report".to_owned()], ..Default::default() }).await.expect("ok");
    fill.commit(response("late again", freshness(600), &["report"], &[])).await.expect("written");
    match engine.lookup(&resource, &headers).await {
        Lookup::Miss(_) => {}
        other => panic!("the late write must not be served, got {}", other.label()),
    }
}

// ---- Grace never serves what the response forbade to serve stale (embedded store, test clock).

/// RFC 9111 section 4.2.4: "A cache MUST NOT generate a stale response if it is prohibited by an explicit
/// in-protocol directive (e.g., by a no-cache response directive, a must-revalidate response directive, or an
/// applicable s-maxage or proxy-revalidate response directive)". A soft invalidation (URL, tag or namespace)
/// makes an entry stale; one stored with such a directive is refilled at once instead of served in grace,
/// while an entry without one is served in grace.
#[tokio::test(start_paused = true)]
async fn grace_never_serves_an_entry_that_forbids_serving_stale() {
    let url = "http://strict.example/dir/a";
    for target in targets(url) {
        for must_revalidate in [false, true] {
            let what = format!("{} must_revalidate {must_revalidate}", target.kind);
            let engine = memory_engine();
            let headers = HeaderMap::new();
            let resource = ResourceKey::from_url(url).expect("a valid url");
            // `cacheability::storable` records `must-revalidate`, `proxy-revalidate`, `no-cache` and `s-maxage` as
            // `must_revalidate` (a shared cache applies all four).
            let fresh = Freshness { must_revalidate, ..freshness(600) };
            engine.fill(&resource, &headers, response("v1", fresh, &["tag-a"], &[])).await;
            let invalidation = Invalidation { grace_s: Some(30), ..target.invalidation.clone() };
            let report = engine.cache.invalidate(&invalidation).await.expect("a valid invalidation");
            assert!(report.complete, "{what}: {report:?}");
            match engine.lookup(&resource, &headers).await {
                Lookup::Hit(hit) if !must_revalidate => assert_eq!(hit.state, HitState::Grace, "{what}"),
                Lookup::Miss(fill) if must_revalidate => {
                    assert!(fill.is_leader(), "{what}: one caller refills it");
                    assert!(
                        matches!(engine.lookup(&resource, &headers).await, Lookup::Busy),
                        "{what}: the others wait for that refill rather than get the stale entry"
                    );
                }
                other => panic!("{what}: got {}", other.label()),
            }
        }
    }
}

// ---- A soft invalidation never undoes a hard one (embedded store behind a store that interleaves a write).

/// The embedded store, meddled with: a hard invalidation of one counter slipped in right after the first read
/// of it once armed (the interleaving of two invalidations sent at once, one soft: read then write, one hard:
/// a write), or every delete lost (a filler whose release never arrives).
struct Meddling {
    inner: MemoryStore,
    key: std::sync::Mutex<String>,
    hard_value: Bytes,
    done: AtomicBool,
    lose_deletes: AtomicBool,
}

impl Meddling {
    fn new() -> Self {
        Self {
            inner: MemoryStore::new(16 << 20),
            key: std::sync::Mutex::new(String::new()),
            hard_value: Generation::invalidated(None, 1_750_000_000_000, None).encode(),
            done: AtomicBool::new(true),
            lose_deletes: AtomicBool::new(false),
        }
    }
}

#[async_trait::async_trait]
impl Store for Meddling {
    async fn get_many(&self, requests: &[GetRequest]) -> Vec<Result<GetOutcome, StoreError>> {
        let results = self.inner.get_many(requests).await;
        let key = self.key.lock().expect("not poisoned").clone();
        if requests.iter().any(|request| request.key == key) && !self.done.swap(true, Ordering::SeqCst) {
            let hard = self.hard_value.clone();
            self.inner.set(&key, hard, Expiry::Never, SetCondition::Always).await.expect("the hard write");
        }
        results
    }
    async fn set_placed(
        &self,
        key: &str,
        placement: Placement<'_>,
        value: Bytes,
        expiry: Expiry,
        condition: SetCondition,
    ) -> Result<SetOutcome, StoreError> {
        self.inner.set_placed(key, placement, value, expiry, condition).await
    }
    async fn delete_placed(&self, key: &str, placement: Placement<'_>, mode: DeleteMode) -> Result<bool, StoreError> {
        if self.lose_deletes.load(Ordering::SeqCst) {
            return Err(StoreError::Timeout { server: "embedded".to_owned(), timeout: Duration::from_millis(100) });
        }
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

/// A soft invalidation reads a counter and writes it back with the old value kept for grace. A hard
/// invalidation that lands between the read and the write must win: entries filled before it are never served
/// again, not even in grace.
#[tokio::test(start_paused = true)]
async fn a_soft_invalidation_never_overwrites_a_hard_one_that_landed_in_between() {
    for kind in ["tag", "all"] {
        let store = Arc::new(Meddling::new());
        let engine = Engine::over(store.clone(), CacheConfig::default());
        let namespace = &engine.cache.config().namespace;
        *store.key.lock().expect("not poisoned") = match kind {
            "tag" => namespace.tag_generation_key("tag-a"),
            _ => namespace.all_generation_key(),
        };
        let headers = HeaderMap::new();
        let resource = ResourceKey::new("http", "soft.example", "/a");
        engine.fill(&resource, &headers, response("v1", freshness(600), &["tag-a"], &[])).await;
        // Arm the interleaving only now, so the fill's own reads are untouched.
        store.done.store(false, Ordering::SeqCst);
        let invalidation = match kind {
            "tag" => Invalidation { tags: vec!["tag-a".to_owned()], grace_s: Some(30), ..Invalidation::default() },
            _ => Invalidation { all: true, grace_s: Some(30), ..Invalidation::default() },
        };
        let report = engine.cache.invalidate(&invalidation).await.expect("a valid invalidation");
        assert!(report.complete, "{kind}: {report:?}");
        assert!(store.done.load(Ordering::SeqCst), "{kind}: the hard write was interleaved");
        match engine.lookup(&resource, &headers).await {
            Lookup::Miss(_) => {}
            other => panic!("{kind}: the entry predates a hard invalidation, yet got {}", other.label()),
        }
    }
}

// ---- Vary variants get hit-for-pass markers and leave no orphaned leases (embedded store, test clock).

fn with_language(language: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::ACCEPT_LANGUAGE, http::HeaderValue::from_static(language));
    headers
}

/// An unstorable answer for one variant of a varying resource marks that variant hit-for-pass, so its waiters
/// go straight to the origin instead of queueing one after the other behind each new filler; the resource's
/// other variants stay cached.
#[tokio::test(start_paused = true)]
async fn an_unstorable_variant_is_marked_hit_for_pass_and_the_others_stay_cached() {
    let engine = memory_engine();
    let resource = ResourceKey::new("http", "vary.example", "/page");
    let (en, de) = (with_language("en"), with_language("de"));
    engine.fill(&resource, &en, response("english", freshness(600), &[], &["accept-language"])).await;
    let Lookup::Miss(fill) = engine.lookup(&resource, &de).await else { panic!("the de variant is not stored") };
    assert!(fill.is_leader(), "the de variant's filler holds its lease");
    fill.abandon(Some("private")).await;
    for _ in 0..2 {
        match engine.lookup(&resource, &de).await {
            Lookup::Pass { reason } => assert_eq!(reason, "private"),
            other => panic!("expected the de variant to be passed, got {}", other.label()),
        }
    }
    assert_eq!(state_of(&engine.hit(&resource, &en).await), Expect::Fresh, "the en variant stays cached");
    engine.advance_s(engine.cache.config().pass_ttl.as_secs());
    engine.fill(&resource, &de, response("deutsch", freshness(600), &[], &["accept-language"])).await;
    assert_eq!(state_of(&engine.hit(&resource, &de).await), Expect::Fresh, "cached again once the marker ends");
}

/// The first round reads the variant this process expects with a lease; when the head turns out not to need
/// it (here: the URL was invalidated, so the head itself is missing and its lease is the one that counts), the
/// variant's placeholder is released at once rather than left to block that variant until it expires.
#[tokio::test(start_paused = true)]
async fn a_hinted_variant_lease_the_lookup_does_not_use_is_released() {
    let engine = memory_engine();
    let resource = ResourceKey::new("http", "vary.example", "/hinted");
    let (en, de) = (with_language("en"), with_language("de"));
    engine.fill(&resource, &en, response("english", freshness(600), &[], &["accept-language"])).await;
    engine
        .cache
        .invalidate(&Invalidation { urls: vec![resource.url()], ..Invalidation::default() })
        .await
        .expect("a valid invalidation");
    let Lookup::Miss(fill) = engine.lookup(&resource, &de).await else { panic!("invalidated: a miss") };
    let ns = &engine.cache.config().namespace;
    let variant_key = ns.variant_key(&resource.variant(&["accept-language".to_owned()], &de));
    let read = GetRequest::plain(variant_key).near(ns.head_key(&resource));
    let found = engine.cache.store().get_many(&[read]).await.pop().expect("one result").expect("read");
    assert_eq!(found, GetOutcome::Miss { lease: Lease::None }, "no placeholder left on the variant");
    fill.abandon(None).await;
}

// ---- Short leases, renewed while the fill works (embedded store, tokio's paused clock). Not an RFC rule:
// etagd's own, so that an abandoned lease blocks a resource for one short lease at most.

/// Lets tokio's paused clock run one second at a time, so background renewals run on schedule.
async fn run_for_s(secs: u64) {
    for _ in 0..secs {
        tokio::time::advance(Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
    }
}

/// A fill that takes longer than its lease keeps it: others see the resource busy (and wait for the one fill)
/// for as long as the filler works. When the filler goes away and its release is lost, the lease ends within
/// one `fill_lease` and the next caller fills.
#[tokio::test(start_paused = true)]
async fn a_live_fill_renews_its_short_lease_and_an_abandoned_one_expires_within_it() {
    let store = Arc::new(Meddling::new());
    let engine = Engine::over(store.clone(), CacheConfig::default());
    let lease_s = engine.cache.config().fill_lease.as_secs();
    assert_eq!(lease_s, 5, "the default lease is short");
    let headers = HeaderMap::new();
    for (what, resource) in [
        ("a cold key's placeholder", ResourceKey::new("http", "lease.example", "/cold")),
        ("an invalidated entry's refresh lock", ResourceKey::new("http", "lease.example", "/invalidated")),
    ] {
        if what.contains("lock") {
            engine.fill(&resource, &headers, response("v1", freshness(600), &["t"], &[])).await;
            let invalidation = Invalidation { tags: vec!["t".to_owned()], ..Invalidation::default() };
            engine.cache.invalidate(&invalidation).await.expect("a valid invalidation");
        }
        let Lookup::Miss(fill) = engine.lookup(&resource, &headers).await else { panic!("{what}: a miss") };
        assert!(fill.is_leader(), "{what}");
        run_for_s(4 * lease_s).await;
        assert!(matches!(engine.lookup(&resource, &headers).await, Lookup::Busy), "{what}: still held while alive");
        store.lose_deletes.store(true, Ordering::SeqCst);
        drop(fill);
        // The last renewal was less than a third of a lease ago: the lease ends within one lease from now.
        run_for_s(lease_s).await;
        store.lose_deletes.store(false, Ordering::SeqCst);
        match engine.lookup(&resource, &headers).await {
            Lookup::Miss(fill) => {
                assert!(fill.is_leader(), "{what}: the next caller fills");
                fill.commit(response("v2", freshness(600), &["t"], &[])).await.expect("stored");
            }
            other => panic!("{what}: the abandoned lease must have expired, got {}", other.label()),
        }
        // The committed entry is not touched by the ended renewal: it lives its own lifetime.
        run_for_s(2 * lease_s).await;
        assert_eq!(state_of(&engine.hit(&resource, &headers).await), Expect::Fresh, "{what}");
    }
}

// ---- Bodies over the store's item limit (embedded store). Not an RFC rule: storage limits.

/// A body larger than one item is stored in chunks under one entry and read back whole; small ones stay one
/// item (the chunk size is recorded only when needed).
#[tokio::test(start_paused = true)]
async fn a_body_over_the_item_limit_is_stored_in_chunks() {
    let limit = 64 * 1024;
    let engine = Engine::over(Arc::new(MemoryStore::new(16 << 20).with_max_item_bytes(limit)), CacheConfig::default());
    let headers = HeaderMap::new();
    let big_resource = ResourceKey::new("http", "big.example", "/download");
    let big: String = (0..limit * 5 / 2).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    engine.fill(&big_resource, &headers, response(&big, freshness(600), &[], &[])).await;
    let hit = engine.hit(&big_resource, &headers).await;
    let layout = hit.meta.chunk_layout(None).expect("stored in chunks");
    assert_eq!((layout.len(), layout.count()), (big.len() as u64, 3));
    assert!(engine.cache.body(&hit, None).await.expect("read").is_none(), "no single body item");
    let whole = engine.cache.whole_body(&hit, None).await.expect("read").expect("every chunk present");
    assert_eq!(whole, big.as_bytes());

    let small_resource = ResourceKey::new("http", "big.example", "/small");
    engine.fill(&small_resource, &headers, response("small", freshness(600), &[], &[])).await;
    let hit = engine.hit(&small_resource, &headers).await;
    assert_eq!((hit.meta.chunk_size, hit.meta.chunk_layout(None)), (0, None), "one item, as before chunking");
    assert_eq!(engine.cache.body(&hit, None).await.expect("read").expect("present").body, "small".as_bytes());
}

/// A hit on a chunked body checks every chunk a range needs before its head goes out (a missing one: no body,
/// the caller refills); a chunk that disappears after that check fails the stream instead of ending it short,
/// so the connection is aborted and no client gets a truncated body under the entry's validator.
#[tokio::test(start_paused = true)]
async fn a_chunk_missing_before_the_head_is_a_miss_and_after_it_an_aborted_stream() {
    use etagd_client::body::BodySource;
    use etagd_client::cache::StoredRepresentation;
    use http_body_util::BodyExt;

    let limit = 16 * 1024;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(16 << 20).with_max_item_bytes(limit));
    let engine = Engine::over(store.clone(), CacheConfig::default());
    let headers = HeaderMap::new();
    let resource = ResourceKey::new("http", "big.example", "/report");
    let body: String = (0..limit * 110).map(|i| char::from(b'a' + (i % 23) as u8)).collect();
    engine.fill(&resource, &headers, response(&body, freshness(600), &[], &[])).await;
    let hit = engine.hit(&resource, &headers).await;
    let Some(StoredRepresentation::Chunked(chunked)) = engine.cache.representation(&hit, None).await.expect("read")
    else {
        panic!("a body of 110 items is chunked")
    };
    let layout = chunked.layout();
    assert!(layout.count() > 100, "{layout:?}");
    // A range inside the body reads only its chunks and gives exactly its bytes.
    let middle = layout.chunk_size() * 7 + 100..layout.chunk_size() * 9 + 5;
    let part = chunked.open(middle.clone()).await.expect("every chunk present").collect().await.expect("streams");
    assert_eq!(part.to_bytes(), body.as_bytes()[middle.start as usize..middle.end as usize]);
    assert_eq!(chunked.len(), body.len() as u64);

    let last = layout.count() - 1;
    let near = Placement::Near(hit.head_key());
    // Gone before the head: `open` says so, and nothing is streamed.
    store.delete_placed(&hit.chunk_key(&engine.cache, None, 3), near, DeleteMode::Hard).await.expect("delete");
    assert!(chunked.open(0..layout.len()).await.is_none(), "a missing chunk is found before the head goes out");
    assert!(chunked.open(layout.span(last)).await.is_some(), "a range not needing it is still served");
    // Gone after the check: the stream fails before the end instead of ending short.
    // (The first window, about 1 MiB of chunks, is read at the check; the last chunk is past it.)
    let opened = chunked.open(layout.span(5).start..layout.len()).await.expect("present at the check");
    store.delete_placed(&hit.chunk_key(&engine.cache, None, last), near, DeleteMode::Hard).await.expect("delete");
    let streamed = opened.collect().await;
    assert!(streamed.is_err(), "the stream fails rather than ending short");
}

/// Admission: an object above the configured fraction of the store's memory is refused, and the resource is
/// marked hit-for-pass so waiters go straight to the origin.
#[tokio::test(start_paused = true)]
async fn an_object_above_the_admission_limit_marks_the_resource_hit_for_pass() {
    let config = CacheConfig { max_object_fraction: 0.25, ..CacheConfig::default() };
    let engine = Engine::over(Arc::new(MemoryStore::new(4 << 20)), config);
    assert_eq!(engine.cache.max_body_bytes(), 1 << 20, "a quarter of the store's 4 MiB");
    let headers = HeaderMap::new();
    let resource = ResourceKey::new("http", "big.example", "/export");
    let Lookup::Miss(fill) = engine.lookup(&resource, &headers).await else { panic!("a cold key misses") };
    let big = "x".repeat((1 << 20) + 1);
    match fill.commit(response(&big, freshness(600), &[], &[])).await {
        Err(CommitError::NotAdmitted { size, limit }) => assert_eq!((size, limit), (big.len(), 1 << 20)),
        other => panic!("expected NotAdmitted, got {other:?}"),
    }
    for _ in 0..2 {
        match engine.lookup(&resource, &headers).await {
            Lookup::Pass { reason } => assert_eq!(reason, "too_large", "waiters go straight to the origin"),
            other => panic!("expected a pass, got {}", other.label()),
        }
    }
    engine.advance_s(engine.cache.config().pass_ttl.as_secs());
    let admitted = "y".repeat(1 << 20);
    engine.fill(&resource, &headers, response(&admitted, freshness(600), &[], &[])).await;
    assert_eq!(state_of(&engine.hit(&resource, &headers).await), Expect::Fresh, "an object within the limit is stored");
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
    // 24 items, 12 of them varying: the chance that every variant's own key routes to its head's server anyway
    // (the check below) is 3^-12, not the 3^-6 of 12 items, which one CI run met.
    for n in 0..24 {
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

/// RFC 9111 section 4 lets a cache answer from any copy it holds; the process-memory copy of a body is admitted
/// when the body is read, not when it is written, so a flood of fills that are never read again (distinct URLs)
/// does not push the hot bodies out.
#[tokio::test]
async fn a_body_enters_process_memory_when_read_not_when_written() {
    let server = Memcached::start();
    let store = MemcachedStore::connect(relaxed(vec![server.addr()])).await.expect("connect");
    let engine = Engine::over(Arc::new(store), CacheConfig::default());
    let headers = HeaderMap::new();
    let resource = ResourceKey::new("http", "memory.example", "/page");
    engine.fill(&resource, &headers, response("page", freshness(60), &[], &[])).await;
    let hit = engine.hit(&resource, &headers).await;
    let reads = |engine: &Engine| {
        let counters = engine.cache.counters();
        (counters.body_store_reads, counters.body_cache_hits)
    };
    assert_eq!(engine.cache.body(&hit, None).await.expect("read").expect("present").body, "page".as_bytes());
    assert_eq!(reads(&engine), (1, 0), "the first read after the fill goes to Memcached");
    assert_eq!(engine.cache.body(&hit, None).await.expect("read").expect("present").body, "page".as_bytes());
    assert_eq!(reads(&engine), (1, 1), "the next one is answered from process memory");
}
