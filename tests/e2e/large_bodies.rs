//! Bodies larger than one Memcached item: stored in chunks under one entry and one validator, served whole or by
//! range from any replica, refilled (never truncated) when a chunk is evicted, removed by one invalidation, and
//! refused by admission when one object would take too much of a server's memory. Through the sidecar, and the
//! tower layer for the hit path.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use etagd_client::cache::{Cache, CacheConfig, Lookup, LookupRequest};
use etagd_client::key::{Namespace, ResourceKey};
use etagd_client::layer::EtagCacheLayer;
use etagd_client::store::memcached::{MemcachedConfig, MemcachedStore};
use etagd_client::store::{DeleteMode, Placement};
use etagd_testkit::{Memcached, unique_namespace};
use http::{Request, Response};

use crate::storage_rules::big_body;
use crate::support::{self, Fleet, Origin, Replica, Route, guard, shutdown_all, url};

const MIB: usize = 1024 * 1024;

/// A route answering `body` with a type etagd does not compress, so the stored object is the body alone.
fn export(body: bytes::Bytes) -> Route {
    Route::cacheable().header("content-type", "application/octet-stream").body(move |_| body.clone())
}

/// The entry a replica finds for `path`, once a fill in flight (a streamed one commits after its answer ended)
/// has landed.
async fn stored_hit(replica: &Replica, path: &str) -> etagd_client::cache::Hit {
    let resource = ResourceKey::from_url(&url(path)).expect("a valid URL");
    let headers = http::HeaderMap::new();
    let request = LookupRequest { resource: &resource, headers: &headers, route_tags: &[] };
    match replica.cache().lookup_waiting(request).await {
        Lookup::Hit(hit) => hit,
        other => panic!("{path}: expected a stored entry, got {}", other.label()),
    }
}

/// A 5 MiB body (over memcached's default 1 MiB item) is stored once and served byte-identical, with the same
/// `ETag`, by another replica; a range in the middle of it, across a chunk boundary, is its exact bytes
/// (RFC 9110 section 14.2, 15.3.7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_mib_body_is_stored_in_chunks_and_served_identically_by_another_replica() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        let body = big_body(5 * MIB);
        origin.route("/export", export(body.clone()));
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;

        let first = a.get_ok("/export").await;
        // Larger than one item: streamed to the filling client while it is stored.
        assert!(first.cache_status().contains("streamed-fill"), "{}", first.cache_status());
        assert!(first.body == body, "the filling client gets every byte");
        let second = b.get_ok("/export").await;
        assert!(second.is_fresh_hit(), "{}", second.cache_status());
        assert!(second.body == body, "another replica serves the same bytes");
        assert_eq!(second.etag(), first.etag(), "under the same validator");
        assert_eq!(second.header("content-length"), body.len().to_string());
        assert_eq!(origin.count("/export"), 1, "one origin fill");

        let layout = stored_hit(&b, "/export").await.meta.chunk_layout(None).expect("stored in chunks");
        assert!(layout.count() >= 5, "{layout:?}");
        let (from, to) = (2_500_000, 3_700_000);
        assert!(from / layout.chunk_size() != to / layout.chunk_size(), "the range crosses a chunk boundary");
        let part = b.get("/export", &[("range", &format!("bytes={from}-{to}"))]).await;
        assert_eq!(part.status, 206, "{}", part.text());
        assert_eq!(part.header("content-range"), format!("bytes {from}-{to}/{}", body.len()));
        assert!(part.is_hit(), "{}", part.cache_status());
        assert!(part.body == body[from as usize..=to as usize], "exactly the range's bytes");

        // Without process memory in front, a range reads only the chunks it covers (two or three of them).
        let cold = fleet.replica(&["--body-cache-bytes", "0"]).await;
        let sent = || memcached.stats()["bytes_written"].parse::<usize>().expect("a byte count");
        let before = sent();
        let part = cold.get("/export", &[("range", &format!("bytes={from}-{to}"))]).await;
        assert!(part.status == 206 && part.body == body[from as usize..=to as usize]);
        let for_range = sent() - before;
        assert!(for_range < 3 * layout.chunk_size() as usize, "the range cost {for_range} bytes from memcached");
        let before = sent();
        assert!(cold.get_ok("/export").await.body == body);
        assert!(sent() - before >= body.len(), "the whole body is read from memcached");
        assert_eq!(origin.count("/export"), 1);
        shutdown_all([a, b, cold]).await;
    })
    .await;
}

/// A chunk evicted behind etagd's back (deleted here by its name in the key schema) makes the next request a
/// miss and a refill with the right bytes, never a truncated or mixed 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_deleted_behind_etagds_back_gives_a_refill_never_a_truncated_body() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        let body = big_body(5 * MIB);
        origin.route("/export", export(body.clone()));
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;

        assert!(a.get_ok("/export").await.body == body);
        let hit = stored_hit(&a, "/export").await;
        let chunk = hit.chunk_key(a.cache(), None, 2);
        let near = Placement::Near(hit.head_key());
        let deleted = a.cache().store().delete_placed(&chunk, near, DeleteMode::Hard).await.expect("memcached");
        assert!(deleted, "{chunk} was stored");

        // `b` has never read the body, so it cannot have the chunk in process memory.
        let refilled = b.get_ok("/export").await;
        assert!(!refilled.is_hit() && refilled.cache_status().contains("body-missing"), "{}", refilled.cache_status());
        assert!(refilled.body == body, "the refill answers every byte");
        assert_eq!(origin.count("/export"), 2, "one refill");
        // The refill streamed: its commit lands just after its answer ended.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while stored_hit(&b, "/export").await.meta.fill_id == hit.meta.fill_id {
            assert!(tokio::time::Instant::now() < deadline, "the refill was not stored within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let again = b.get_ok("/export").await;
        assert!(again.is_fresh_hit() && again.body == body, "{}", again.cache_status());
        assert_eq!(again.etag(), refilled.etag(), "the refill's validator");
        shutdown_all([a, b]).await;
    })
    .await;
}

/// One invalidation of the URL removes the whole chunked object: the next request on any replica is a miss
/// that fetches the new data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_removes_a_chunked_body() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        let (v1, v2) = (big_body(3 * MIB), big_body(3 * MIB + 1));
        let versions = [v1.clone(), v2.clone()];
        origin.route(
            "/export",
            Route::cacheable()
                .header("content-type", "application/octet-stream")
                .body(move |ask| versions[(ask.version - 1).min(1)].clone()),
        );
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;

        assert!(a.get_ok("/export").await.body == v1);
        assert!(b.get_ok("/export").await.is_fresh_hit());
        origin.bump_version();
        b.invalidate(&format!(r#"{{"urls": ["{}"]}}"#, url("/export"))).await;
        for replica in [&a, &b] {
            let reply = replica.get_ok("/export").await;
            assert!(reply.body == v2, "the old object is gone everywhere ({})", reply.cache_status());
        }
        assert_eq!(origin.count("/export"), 2, "one refill after the invalidation");
        shutdown_all([a, b]).await;
    })
    .await;
}

/// Admission: with memcached `-m 16` and the default fraction (1/8), no object above 2 MiB is stored, whether
/// its size is announced or not; the client still gets it whole, and the resource goes straight to the origin
/// for a while (hit-for-pass, with the reason). A larger fraction admits it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_above_the_memory_fraction_is_not_admitted() {
    guard(async {
        let memcached = Memcached::start_with(&["-m", "16"]);
        let origin = Origin::start().await;
        let body = big_body(3 * MIB);
        origin.route("/export", export(body.clone()));
        let streamed = body.clone();
        origin.route(
            "/export-chunked",
            Route::cacheable()
                .header("content-type", "application/octet-stream")
                .chunked()
                .body(move |_| streamed.clone()),
        );
        origin.route("/export-admitted", export(body.clone()));
        let fleet = Fleet::new(&origin, &[&memcached]);
        let a = fleet.replica(&[]).await;

        // Announced, the size is refused before a byte is read; unannounced, the body streams to the client until
        // it passes the limit, and the fill is given up then.
        for (path, detail) in [("/export", "too-large-for-memory"), ("/export-chunked", "streamed-fill")] {
            let refused = a.get_ok(path).await;
            assert!(refused.cache_status().contains(detail), "{path}: {}", refused.cache_status());
            assert!(refused.body == body, "{path}: delivered whole");
            let passed = a.get_ok(path).await;
            assert!(passed.cache_status().contains("hit-for-pass"), "{path}: {}", passed.cache_status());
            assert!(passed.body == body);
            assert_eq!(origin.count(path), 2, "{path} is not stored");
        }

        let generous = fleet.replica(&["--max-object-fraction", "0.5"]).await;
        assert!(!generous.get_ok("/export-admitted").await.is_hit());
        let hit = generous.get_ok("/export-admitted").await;
        assert!(hit.is_fresh_hit() && hit.body == body, "{}", hit.cache_status());
        assert_eq!(origin.count("/export-admitted"), 1);
        shutdown_all([a, generous]).await;
    })
    .await;
}

/// The tower layer stores and serves a chunked body the same way: one call to the wrapped service, then hits
/// with the same bytes and validator, and a range from the chunks it covers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_serves_a_chunked_body_from_storage() {
    guard(async {
        let memcached = Memcached::start();
        let store = MemcachedStore::connect(MemcachedConfig {
            servers: vec![memcached.addr()],
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(2),
            ..MemcachedConfig::default()
        })
        .await
        .expect("memcached client");
        let namespace = Namespace::new(&unique_namespace()).expect("valid namespace");
        let cache = Cache::new(Arc::new(store), CacheConfig { namespace, ..CacheConfig::default() });
        let body = big_body(5 * MIB);
        let calls = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (body.clone(), calls.clone());
        let service = tower::service_fn(move |_request: Request<Body>| {
            counted.fetch_add(1, Ordering::SeqCst);
            let body = served.clone();
            async move {
                let response = Response::builder()
                    .header("cache-control", "max-age=60")
                    .header("content-type", "application/octet-stream")
                    .body(Body::from(body))
                    .expect("a valid response");
                Ok::<_, Infallible>(response)
            }
        });
        let app = Router::new().fallback_service(service).layer(EtagCacheLayer::new(cache));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind on loopback");
        let base = format!("http://{}", listener.local_addr().expect("bound"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let client = support::http_client();
        let get = |range: Option<&'static str>| {
            let mut headers = vec![("host", support::HOST)];
            headers.extend(range.map(|range| ("range", range)));
            let (client, url) = (client.clone(), format!("{base}/export"));
            async move { support::send(&client, "GET", &url, &headers, None).await }
        };

        let first = get(None).await;
        assert!(first.status == 200 && first.body == body && !first.is_hit(), "{}", first.cache_status());
        let second = get(None).await;
        assert!(second.is_fresh_hit() && second.body == body, "{}", second.cache_status());
        assert_eq!(second.etag(), first.etag());
        let part = get(Some("bytes=4000000-4100000")).await;
        assert_eq!(part.status, 206);
        assert!(part.body == body[4_000_000..=4_100_000]);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one call to the wrapped service");
        task.abort();
    })
    .await;
}
