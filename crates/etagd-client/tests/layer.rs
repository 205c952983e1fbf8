//! The tower layer end to end: an axum router wrapped in `EtagCacheLayer`, driven with `oneshot` (no sockets),
//! over the embedded store, a real memcached, and a memcached that is not there.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use etagd_client::cache::{Cache, CacheConfig, Clock, Invalidation, ValidatorMode};
use etagd_client::key::Namespace;
use etagd_client::layer::EtagCacheLayer;
use etagd_client::store::Store;
use etagd_client::store::memcached::{MemcachedConfig, MemcachedStore};
use etagd_client::store::memory::MemoryStore;
use etagd_testkit::{Memcached, unique_namespace};
use http_body_util::BodyExt;
use tower::ServiceExt;

const HOST: &str = "api.example.com";

/// Calls per handler, so a test can tell a hit (handler not called) from a miss.
#[derive(Default)]
struct Calls {
    servers: AtomicUsize,
    no_store: AtomicUsize,
    cookie: AtomicUsize,
    big: AtomicUsize,
    tagged: AtomicUsize,
    failing: AtomicUsize,
}

fn count(counter: &AtomicUsize) -> usize {
    counter.fetch_add(1, Ordering::SeqCst) + 1
}

struct Fixture {
    app: Router,
    cache: Cache,
    calls: Arc<Calls>,
    _server: Option<Memcached>,
}

/// A clock the test moves by hand (the engine and the layer read time only through it).
struct ManualClock(AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn config() -> CacheConfig {
    CacheConfig {
        namespace: Namespace::new(&unique_namespace()).expect("testkit namespaces are valid"),
        ..CacheConfig::default()
    }
}

fn memory_cache(config: CacheConfig) -> Cache {
    Cache::new(Arc::new(MemoryStore::new(64 << 20)), config)
}

async fn memcached_cache(addr: String) -> Cache {
    memcached_cache_in(addr, config()).await
}

/// Timeouts generous enough for a loaded 2-core machine running many tests at once.
async fn memcached_cache_in(addr: String, config: CacheConfig) -> Cache {
    let store = MemcachedStore::connect(MemcachedConfig {
        servers: vec![addr],
        connect_timeout: Duration::from_secs(1),
        io_timeout: Duration::from_secs(2),
        ..MemcachedConfig::default()
    })
    .await
    .expect("the address resolves");
    let store: Arc<dyn Store> = Arc::new(store);
    Cache::new(store, config)
}

/// The service under test: a server list (GET cached with tag "servers", POST adds and invalidates) and
/// handlers that exercise the storage rules. The whole router is layered, so POST goes through the layer too.
fn app(cache: Cache, layer: impl FnOnce(EtagCacheLayer) -> EtagCacheLayer) -> Fixture {
    let calls = Arc::new(Calls::default());
    let servers = Arc::new(Mutex::new(vec!["web-1".to_owned()]));
    let list = {
        let (calls, servers) = (calls.clone(), servers.clone());
        move || async move {
            count(&calls.servers);
            let names = servers.lock().unwrap().clone();
            ([("content-type", "application/json")], format!("{names:?}"))
        }
    };
    let add = {
        let (cache, servers) = (cache.clone(), servers.clone());
        move |name: String| async move {
            servers.lock().unwrap().push(name);
            let invalidation = Invalidation { tags: vec!["servers".into()], ..Default::default() };
            let report = cache.invalidate(&invalidation).await.expect("tags are never malformed");
            let status = if report.complete { "invalidated" } else { "not invalidated" };
            (StatusCode::CREATED, status)
        }
    };
    let no_store = {
        let calls = calls.clone();
        move || async move {
            let n = count(&calls.no_store);
            ([("cache-control", "no-store")], format!("call {n}"))
        }
    };
    let cookie = {
        let calls = calls.clone();
        move || async move {
            let n = count(&calls.cookie);
            ([("set-cookie", "session=abc")], format!("call {n}"))
        }
    };
    let big = {
        let calls = calls.clone();
        move || async move {
            count(&calls.big);
            "x".repeat(10_000)
        }
    };
    let tagged = {
        let calls = calls.clone();
        move || async move {
            let n = count(&calls.tagged);
            ([("surrogate-key", "item-7 items")], format!("item 7, call {n}"))
        }
    };
    let failing = {
        let calls = calls.clone();
        move || async move {
            count(&calls.failing);
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    };
    let layer = layer(EtagCacheLayer::new(cache.clone()).tags(["servers"]).max_body_bytes(4096));
    let app = Router::new()
        .route("/api/servers", get(list).post(add))
        .route("/no-store", get(no_store))
        .route("/cookie", get(cookie))
        .route("/big", get(big))
        .route("/tagged", get(tagged))
        .route("/failing", get(failing))
        .layer(layer);
    Fixture { app, cache, calls, _server: None }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |value| value.to_str().expect("ASCII header"))
    }

    fn etag(&self) -> String {
        let etag = self.header("etag");
        assert!(!etag.is_empty(), "no ETag; headers: {:?}", self.headers);
        etag.to_owned()
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }
}

impl Fixture {
    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut request = Request::builder().method(method).uri(path).header("host", HOST);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Body::from(body.to_owned())).expect("a valid request");
        let response: Response<Body> = self.app.clone().oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("a whole body").to_bytes();
        // A fill's answer goes out before its commit; let it land before a test moves the clock (bounded: a
        // fill the test holds up is left running).
        for _ in 0..200 {
            if self.cache.counters().fills_in_flight == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Answer { status: parts.status, headers: parts.headers, body }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(Method::GET, path, headers, "").await
    }

    fn calls(&self, counter: impl Fn(&Calls) -> &AtomicUsize) -> usize {
        counter(&self.calls).load(Ordering::SeqCst)
    }
}

// === the seed's flow: miss, hit, 304, invalidate ===

/// The whole flow of the seed's `@etag` + `cache_response`, on any store.
async fn seed_flow(fixture: Fixture) {
    fn servers(calls: &Calls) -> &AtomicUsize {
        &calls.servers
    }

    let first = fixture.get("/api/servers", &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.text(), r#"["web-1"]"#);
    assert_eq!(first.header("cache-status"), "etagd; fwd=uri-miss; fwd-status=200; stored");
    assert_eq!(first.header("content-type"), "application/json");
    assert!(first.headers.get("age").is_none(), "a fresh answer from the service carries no Age");
    let etag = first.etag();
    assert_eq!(fixture.calls(servers), 1);

    let second = fixture.get("/api/servers", &[]).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.etag(), etag);
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("cache-status"), "etagd; hit");
    assert_eq!(second.header("content-type"), "application/json");
    assert!(second.headers.contains_key("age"));
    assert_eq!(fixture.calls(servers), 1, "a hit does not call the handler");

    let not_modified = fixture.get("/api/servers", &[("if-none-match", &etag)]).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.etag(), etag);
    assert_eq!(not_modified.header("cache-status"), "etagd; hit");
    assert!(not_modified.headers.contains_key("date"));

    let weakened = format!("W/{etag}");
    let weak = fixture.get("/api/servers", &[("if-none-match", &weakened)]).await;
    assert_eq!(weak.status, StatusCode::NOT_MODIFIED, "a proxy-weakened copy still matches (RFC 9110 13.1.2)");
    assert_eq!(weak.etag(), weakened, "the 304 names the tag in the form the client holds");

    let listed = format!("\"other\", {etag}");
    let in_list = fixture.get("/api/servers", &[("if-none-match", &listed)]).await;
    assert_eq!(in_list.status, StatusCode::NOT_MODIFIED);

    let other = fixture.get("/api/servers", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.body, first.body);
    assert_eq!(fixture.calls(servers), 1);

    let created = fixture.send(Method::POST, "/api/servers", &[], "web-2").await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.text(), "invalidated");
    assert_eq!(created.header("cache-status"), "etagd; fwd=method; fwd-status=201");

    let after = fixture.get("/api/servers", &[("if-none-match", &etag)]).await;
    assert_eq!(after.status, StatusCode::OK, "the old validator no longer matches");
    assert_eq!(after.text(), r#"["web-1", "web-2"]"#);
    assert_eq!(fixture.calls(servers), 2, "the invalidated entry is refilled from the handler");
    let new_etag = after.etag();
    assert_ne!(new_etag, etag);

    let hit = fixture.get("/api/servers", &[("if-none-match", &new_etag)]).await;
    assert_eq!(hit.status, StatusCode::NOT_MODIFIED);
    assert_eq!(fixture.calls(servers), 2);
}

#[tokio::test]
async fn seed_flow_on_the_embedded_store() {
    seed_flow(app(memory_cache(config()), |layer| layer)).await;
}

#[tokio::test]
async fn seed_flow_on_memcached() {
    let server = Memcached::start();
    let cache = memcached_cache(server.addr()).await;
    let mut fixture = app(cache, |layer| layer);
    fixture._server = Some(server);
    seed_flow(fixture).await;
}

#[tokio::test]
async fn two_services_on_one_memcached_share_entries() {
    let server = Memcached::start();
    let namespace = Namespace::new(&unique_namespace()).unwrap();
    let replica = || async {
        let config = CacheConfig { namespace: namespace.clone(), ..CacheConfig::default() };
        app(memcached_cache_in(server.addr(), config).await, |layer| layer)
    };
    let (a, b) = (replica().await, replica().await);
    let filled = a.get("/api/servers", &[]).await;
    let shared = b.get("/api/servers", &[("if-none-match", &filled.etag())]).await;
    assert_eq!(shared.status, StatusCode::NOT_MODIFIED, "replica b answers from replica a's fill");
    assert_eq!((a.calls(|c| &c.servers), b.calls(|c| &c.servers)), (1, 0));

    // Replica b's write invalidates for replica a too.
    b.send(Method::POST, "/api/servers", &[], "web-3").await;
    let refilled = a.get("/api/servers", &[]).await;
    assert_eq!(refilled.header("cache-status"), "etagd; fwd=uri-miss; fwd-status=200; stored");
    assert_eq!(a.calls(|c| &c.servers), 2);
}

// === what is never stored ===

#[tokio::test]
async fn no_store_answers_are_never_cached() {
    let fixture = app(memory_cache(config()), |layer| layer);
    for n in 1..=3 {
        let answer = fixture.get("/no-store", &[]).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.text(), format!("call {n}"));
        assert!(answer.headers.get("etag").is_none(), "no validator for what was not stored");
        let expected = if n == 1 {
            "etagd; fwd=uri-miss; fwd-status=200; detail=no-store"
        } else {
            "etagd; fwd=bypass; fwd-status=200; detail=hit-for-pass-no-store"
        };
        assert_eq!(answer.header("cache-status"), expected);
    }
    assert_eq!(fixture.calls(|c| &c.no_store), 3);
}

#[tokio::test]
async fn answers_setting_cookies_are_never_cached() {
    let fixture = app(memory_cache(config()), |layer| layer);
    let first = fixture.get("/cookie", &[]).await;
    assert_eq!(first.header("set-cookie"), "session=abc");
    assert_eq!(first.header("cache-status"), "etagd; fwd=uri-miss; fwd-status=200; detail=set-cookie");
    // The refusal marked the URL hit-for-pass: later requests go straight to the handler.
    let second = fixture.get("/cookie", &[]).await;
    assert_eq!(second.text(), "call 2");
    assert_eq!(second.header("set-cookie"), "session=abc");
    assert_eq!(second.header("cache-status"), "etagd; fwd=bypass; fwd-status=200; detail=hit-for-pass-set-cookie");
    assert_eq!(fixture.calls(|c| &c.cookie), 2);
}

#[tokio::test]
async fn bodies_over_the_limit_stream_through_uncached() {
    let fixture = app(memory_cache(config()), |layer| layer);
    let expected = [
        "etagd; fwd=uri-miss; fwd-status=200; detail=too-large",
        "etagd; fwd=bypass; fwd-status=200; detail=hit-for-pass-too-large",
    ];
    for expected in expected {
        let answer = fixture.get("/big", &[]).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body.len(), 10_000, "never cut");
        assert_eq!(answer.header("cache-status"), expected);
    }
    assert_eq!(fixture.calls(|c| &c.big), 2);
}

#[tokio::test]
async fn server_errors_are_not_cached() {
    let fixture = app(memory_cache(config()), |layer| layer);
    for _ in 0..2 {
        assert_eq!(fixture.get("/failing", &[]).await.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(fixture.calls(|c| &c.failing), 2);
}

#[tokio::test]
/// RFC 9111 section 3.5: the answer to an `Authorization` request is not shared unless the response allows it,
/// and that refusal (caused by the request alone) leaves no hit-for-pass marker behind for anonymous callers.
async fn credentials_do_not_spoil_the_entry() {
    let fixture = app(memory_cache(config()), |layer| layer);
    let private = fixture.get("/api/servers", &[("authorization", "Bearer t")]).await;
    assert_eq!(private.header("cache-status"), "etagd; fwd=uri-miss; fwd-status=200; detail=authorization");
    let public = fixture.get("/api/servers", &[]).await;
    assert_eq!(public.header("cache-status"), "etagd; fwd=uri-miss; fwd-status=200; stored");
    assert_eq!(fixture.get("/api/servers", &[]).await.header("cache-status"), "etagd; hit");
    assert_eq!(fixture.calls(|c| &c.servers), 2);
}

#[tokio::test]
/// RFC 9111 section 5.2.1.4 makes a request's `no-cache` a preference; like the sidecar (and Varnish, nginx)
/// the layer answers from the cache, so no client can send every request to the handler.
async fn no_cache_requests_are_answered_from_the_cache() {
    let fixture = app(memory_cache(config()), |layer| layer);
    fixture.get("/api/servers", &[]).await;
    let reload = fixture.get("/api/servers", &[("cache-control", "no-cache")]).await;
    assert_eq!(reload.header("cache-status"), "etagd; hit");
    assert_eq!(fixture.calls(|c| &c.servers), 1);
}

// === tags, HEAD, validators ===

#[tokio::test]
async fn surrogate_keys_tag_entries_and_are_not_sent_on() {
    let fixture = app(memory_cache(config()), |layer| layer);
    let first = fixture.get("/tagged", &[]).await;
    assert!(first.headers.get("surrogate-key").is_none());
    assert_eq!(fixture.get("/tagged", &[]).await.header("cache-status"), "etagd; hit");
    let hit = fixture.get("/tagged", &[]).await;
    assert!(hit.headers.get("surrogate-key").is_none());
    assert_eq!(fixture.calls(|c| &c.tagged), 1);

    let invalidation = Invalidation { tags: vec!["item-7".into()], ..Default::default() };
    fixture.cache.invalidate(&invalidation).await.unwrap();
    let refilled = fixture.get("/tagged", &[]).await;
    assert_eq!(refilled.text(), "item 7, call 2");
    // The layer's own tag applies as well.
    let invalidation = Invalidation { tags: vec!["servers".into()], ..Default::default() };
    fixture.cache.invalidate(&invalidation).await.unwrap();
    assert_eq!(fixture.get("/tagged", &[]).await.text(), "item 7, call 3");
}

#[tokio::test]
async fn head_fills_and_shares_the_get_entry() {
    let fixture = app(memory_cache(config()), |layer| layer);
    let head = fixture.send(Method::HEAD, "/api/servers", &[], "").await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), r#"["web-1"]"#.len().to_string());
    assert_eq!(head.header("cache-status"), "etagd; fwd=uri-miss; fwd-status=200; stored");
    let get = fixture.get("/api/servers", &[]).await;
    assert_eq!(get.header("cache-status"), "etagd; hit");
    assert_eq!(get.text(), r#"["web-1"]"#, "the HEAD filled the whole body");
    assert_eq!(get.etag(), head.etag());
    let head_hit = fixture.send(Method::HEAD, "/api/servers", &[], "").await;
    assert!(head_hit.body.is_empty());
    assert_eq!(head_hit.header("cache-status"), "etagd; hit");
    assert_eq!(fixture.calls(|c| &c.servers), 1);
}

#[tokio::test]
async fn content_validators_survive_an_invalidation_that_changed_nothing() {
    let config = CacheConfig { validator: ValidatorMode::Content, ..config() };
    let fixture = app(memory_cache(config), |layer| layer);
    let etag = fixture.get("/api/servers", &[]).await.etag();
    let invalidation = Invalidation { tags: vec!["servers".into()], ..Default::default() };
    fixture.cache.invalidate(&invalidation).await.unwrap();
    // The refill produces the same bytes, hence the same tag: the client's copy is still good.
    let again = fixture.get("/api/servers", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(again.header("cache-status"), "etagd; fwd=uri-miss; fwd-status=200; stored");
    assert_eq!(fixture.calls(|c| &c.servers), 2);
}

#[tokio::test]
async fn forwarded_proto_and_host_are_part_of_the_key() {
    let fixture = app(memory_cache(config()), |layer| layer.trust_forwarding_headers(true));
    fixture.get("/api/servers", &[]).await;
    let https = fixture.get("/api/servers", &[("x-forwarded-proto", "HTTPS")]).await;
    assert!(https.header("cache-status").starts_with("etagd; fwd=uri-miss"));
    let query = fixture.get("/api/servers?page=2", &[]).await;
    assert!(query.header("cache-status").starts_with("etagd; fwd=uri-miss"));
    assert_eq!(fixture.get("/api/servers", &[]).await.header("cache-status"), "etagd; hit");
    assert_eq!(fixture.calls(|c| &c.servers), 3);

    // From callers that are not trusted proxies the header changes nothing.
    let untrusting = app(memory_cache(config()), |layer| layer);
    untrusting.get("/api/servers", &[]).await;
    let ignored = untrusting.get("/api/servers", &[("x-forwarded-proto", "https")]).await;
    assert_eq!(ignored.header("cache-status"), "etagd; hit");
}

// === freshness ===

#[tokio::test]
async fn stale_entries_are_served_while_refreshed_in_the_background() {
    let clock = Arc::new(ManualClock(AtomicU64::new(1_800_000_000_000)));
    let config = CacheConfig { clock: clock.clone(), ..config() };
    let fixture = app(memory_cache(config), |layer| {
        layer.ttl(Duration::from_secs(10)).stale_while_revalidate(Duration::from_secs(60))
    });
    let first = fixture.get("/api/servers", &[]).await;
    assert_eq!(first.header("cache-status"), "etagd; fwd=uri-miss; fwd-status=200; stored; ttl=10");
    let etag = first.etag();

    clock.0.fetch_add(15_000, Ordering::SeqCst);
    let stale = fixture.get("/api/servers", &[]).await;
    assert_eq!(stale.etag(), etag, "served stale at once");
    assert_eq!(stale.header("cache-status"), "etagd; hit; ttl=-5; detail=stale-while-revalidate");
    assert_eq!(stale.header("age"), "15");

    // The refresh runs in the background; wait for its commit to become visible.
    let resource = etagd_client::key::ResourceKey::new("http", HOST, "/api/servers");
    let mut refreshed = None;
    for _ in 0..500 {
        let inspection = fixture.cache.inspect(&resource, &HeaderMap::new()).await.unwrap();
        match inspection.entry {
            Some(entry) if entry.etag != etag => {
                refreshed = Some(entry.etag);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let refreshed = refreshed.expect("the background refresh committed a new entry");
    assert_eq!(fixture.calls(|c| &c.servers), 2);
    let fresh = fixture.get("/api/servers", &[]).await;
    assert_eq!(fresh.etag(), refreshed);
    assert_eq!(fresh.header("cache-status"), "etagd; hit; ttl=10");
    assert_eq!(fixture.calls(|c| &c.servers), 2);

    // Past the stale-while-revalidate window the entry is refreshed on the request path.
    clock.0.fetch_add(100_000, Ordering::SeqCst);
    let expired = fixture.get("/api/servers", &[]).await;
    assert_eq!(expired.header("cache-status"), "etagd; fwd=stale; fwd-status=200; stored; ttl=10");
    assert_ne!(expired.etag(), refreshed);
    assert_eq!(fixture.calls(|c| &c.servers), 3);
}

// === the store is down ===

#[tokio::test]
async fn a_missing_memcached_never_fails_a_request() {
    // A port that nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let fixture = app(memcached_cache(closed).await, |layer| layer);
    for n in 1..=4 {
        let answer = fixture.get("/api/servers", &[]).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.text(), r#"["web-1"]"#);
        assert_eq!(answer.header("cache-status"), "etagd; fwd=miss; fwd-status=200; detail=store-unavailable");
        assert_eq!(fixture.calls(|c| &c.servers), n);
    }
    let created = fixture.send(Method::POST, "/api/servers", &[], "web-2").await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.text(), "not invalidated");
    let after = fixture.get("/api/servers", &[("if-none-match", "\"anything\"")]).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.text(), r#"["web-1", "web-2"]"#);
}
