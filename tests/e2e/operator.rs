//! Operator controls (issue 15), through the sidecar on a real memcached, and through the tower layer where it
//! takes the same rules: route lifetimes that override or cap the origin's (`ttl_override`, `ttl_max`, beyond
//! the RFCs), negative caching of 404 and 410 (`negative_ttl`; RFC 9111 section 4.2.2 makes both heuristically
//! cacheable), purges by path prefix through the admin API and etagctl (beyond the RFCs: Varnish bans, CDN
//! prefix purges), and the documented way to get stale-while-revalidate despite `s-maxage`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use etagd_client::cache::{Cache, CacheConfig, Invalidation};
use etagd_client::key::Namespace;
use etagd_client::layer::EtagCacheLayer;
use etagd_client::store::memcached::{MemcachedConfig, MemcachedStore};
use etagd_testkit::{Memcached, unique_namespace};
use tower::{Layer, ServiceExt};

use crate::etagctl::etagctl;
use crate::support::{Fleet, Origin, Reply, Route, guard, shutdown_all, url};

/// A TOML file of route rules, written where the replica can read it.
fn config_file(name: &str, toml: &str) -> String {
    let path = std::env::temp_dir().join(format!("etagd-{name}-{}.toml", unique_namespace()));
    std::fs::write(&path, toml).expect("write config");
    path.to_str().expect("utf-8 temp path").to_owned()
}

/// The `ttl` parameter of `Cache-Status` (RFC 9211 section 2.6).
fn ttl(reply: &Reply) -> i64 {
    let status = reply.cache_status();
    let ttl = status.split(';').find_map(|param| param.trim().strip_prefix("ttl="));
    ttl.and_then(|ttl| ttl.parse().ok()).unwrap_or_else(|| panic!("no ttl in {status:?}"))
}

fn stored(reply: &Reply) -> bool {
    reply.cache_status().contains("; stored")
}

/// Beyond the RFCs: `ttl_override` replaces the origin's lifetime, explicit or missing; it never stores what
/// the origin refused (RFC 9111 sections 5.2.2.5 and 5.2.2.7), and other routes keep the origin's lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_override_replaces_the_origins_lifetime_but_never_a_refusal() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/fixed/short", Route::new().header("cache-control", "max-age=5"));
        origin.route("/fixed/silent", Route::new());
        origin.route("/fixed/no-store", Route::new().header("cache-control", "no-store, max-age=5"));
        origin.route("/fixed/private", Route::new().header("cache-control", "private, max-age=5"));
        origin.route("/elsewhere", Route::new().header("cache-control", "max-age=5"));
        let config = config_file("override", "[[route]]\nprefix = \"/fixed/\"\nttl_override = \"1h\"\n");
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&["--config", &config]).await;

        for path in ["/fixed/short", "/fixed/silent"] {
            let filled = a.get_ok(path).await;
            assert!(stored(&filled), "{path}: {}", filled.cache_status());
            assert_eq!(ttl(&filled), 3600, "{path}: the route's lifetime, not the origin's");
            let hit = b.get_ok(path).await;
            assert!(hit.is_fresh_hit() && ttl(&hit) > 3000, "{path}: {}", hit.cache_status());
            assert_eq!(origin.count(path), 1, "{path}");
        }
        for (path, detail) in [("/fixed/no-store", "detail=no-store"), ("/fixed/private", "detail=private")] {
            let first = a.get_ok(path).await;
            assert!(first.cache_status().contains(detail), "{path}: {}", first.cache_status());
            b.get_ok(path).await;
            assert_eq!(origin.count(path), 2, "{path}: never stored");
        }
        let elsewhere = a.get_ok("/elsewhere").await;
        assert_eq!(ttl(&elsewhere), 5, "no route: the origin's max-age");
        shutdown_all([a, b]).await;
    })
    .await;
}

/// Beyond the RFCs: `ttl_max` caps the origin's lifetime, counted from storing (an `Age` the response came with,
/// RFC 9111 section 4.2.3, does not eat into the cap); a cap of 0 makes every use a revalidation (section 4.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_max_caps_the_origins_lifetime() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/capped/long", Route::new().header("cache-control", "max-age=3600"));
        origin.route("/capped/aged", Route::new().header("cache-control", "max-age=3600").header("age", "100"));
        origin.route("/capped/short", Route::new().header("cache-control", "max-age=5"));
        let validated = Route::new().header("cache-control", "max-age=3600").header("etag", "\"v1\"").revalidates();
        origin.route("/always/page", validated);
        let config = config_file(
            "cap",
            "[[route]]\nprefix = \"/capped/\"\nttl_max = \"1m\"\n[[route]]\nprefix = \"/always/\"\nttl_max = \"0s\"\n",
        );
        let fleet = Fleet::new(&origin, &[&memcached]);
        let replica = fleet.replica(&["--config", &config]).await;

        for (path, expected) in [("/capped/long", 60), ("/capped/aged", 60), ("/capped/short", 5)] {
            let filled = replica.get_ok(path).await;
            assert!(stored(&filled), "{path}: {}", filled.cache_status());
            assert_eq!(ttl(&filled), expected, "{path}: {}", filled.cache_status());
            assert!(replica.get_ok(path).await.is_fresh_hit(), "{path}");
        }
        replica.get_ok("/always/page").await;
        let again = replica.get_ok("/always/page").await;
        assert!(again.cache_status().contains("fwd=stale; fwd-status=304"), "{}", again.cache_status());
        assert_eq!(origin.count("/always/page"), 2, "revalidated, though the origin said an hour");
        replica.shutdown().await;
    })
    .await;
}

/// RFC 9111 section 4.2.2: 404 and 410 are heuristically cacheable, so a route may store them without explicit
/// freshness (`negative_ttl`); a stored 404 answers as the origin did, and RFC 9110 section 13.2.1 makes a
/// cache ignore `If-None-Match` and `If-Modified-Since` when the answer would not be a 2xx: never a 304.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_caching_stores_404_and_410_for_the_routes_ttl() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        let not_found = Route::new().status(404).body(|_| "no such item".into());
        origin.route("/items/missing", not_found.clone().header("content-type", "text/plain"));
        origin.route("/items/gone", Route::new().status(410));
        origin.route("/items/refused", not_found.header("cache-control", "no-store"));
        origin.route("/items/present", Route::new());
        let config = config_file("negative", "[[route]]\nprefix = \"/items/\"\nnegative_ttl = \"30s\"\n");
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&["--config", &config]).await;

        let filled = a.get("/items/missing", &[]).await;
        assert_eq!(filled.status, 404);
        assert!(stored(&filled) && ttl(&filled) == 30, "{}", filled.cache_status());
        let hit = b.get("/items/missing", &[]).await;
        assert_eq!((hit.status, hit.text().as_str()), (404, "no such item"));
        assert_eq!(hit.header("content-type"), "text/plain");
        assert!(hit.is_fresh_hit(), "{}", hit.cache_status());
        // RFC 9110 section 13.2.1: the preconditions are ignored, so the stored 404 is sent whole.
        let validator = hit.etag();
        let future = "Fri, 31 Dec 2100 23:59:59 GMT";
        let conditions: Vec<(&str, &str)> =
            vec![("if-none-match", "*"), ("if-none-match", validator.as_str()), ("if-modified-since", future)];
        for condition in conditions.into_iter().filter(|(_, value)| !value.is_empty()) {
            let conditional = b.get("/items/missing", &[condition]).await;
            assert_eq!(conditional.status, 404, "{condition:?}");
            assert_eq!(conditional.text(), "no such item", "{condition:?}");
            assert!(conditional.is_hit(), "{condition:?}: {}", conditional.cache_status());
        }
        assert_eq!(origin.count("/items/missing"), 1, "one origin request for the fleet");

        let gone = a.get("/items/gone", &[]).await;
        assert!(gone.status == 410 && stored(&gone), "{}", gone.cache_status());
        assert!(b.get("/items/gone", &[]).await.is_fresh_hit());
        // The origin's no-store still wins, and negative_ttl covers only 404 and 410.
        a.get("/items/refused", &[]).await;
        assert_eq!(b.get("/items/refused", &[]).await.status, 404);
        assert_eq!(origin.count("/items/refused"), 2, "a no-store 404 is not stored");
        let present = a.get_ok("/items/present").await;
        assert!(present.cache_status().contains("detail=no-freshness"), "{}", present.cache_status());
        shutdown_all([a, b]).await;
    })
    .await;
}

/// Beyond the RFCs: a purge of a path prefix through one replica's admin API drops every entry under it, on
/// that host only, for every replica; a prefix deeper than the tags entries carry, or not ending at a segment
/// boundary, is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_purge_drops_everything_under_it_on_that_host_only() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        let paths = ["/api/v2/a", "/api/v2/b", "/api/v1/a", "/static/x"];
        for path in paths {
            origin.route(path, Route::cacheable());
        }
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;
        for path in paths {
            a.get_ok(path).await;
            assert!(b.get_ok(path).await.is_fresh_hit(), "{path}");
        }
        let other_host = a.get_on_host("other.test", "/api/v2/a").await;
        assert!(stored(&other_host), "{}", other_host.cache_status());
        origin.bump_version();

        let report = a.invalidate(&format!(r#"{{"prefixes": ["{}"]}}"#, url("/api/v2/"))).await;
        assert_eq!((&report["complete"], &report["targets"][0]["kind"]), (&true.into(), &"prefix".into()), "{report}");
        for path in ["/api/v2/a", "/api/v2/b"] {
            let reply = b.get_ok(path).await;
            assert!(!reply.is_hit(), "{path}: {}", reply.cache_status());
            assert_eq!(reply.text(), format!("{path} v2"));
        }
        for path in ["/api/v1/a", "/static/x"] {
            assert!(b.get_ok(path).await.is_fresh_hit(), "{path} is not under the prefix");
        }
        let elsewhere = b.get_on_host("other.test", "/api/v2/a").await;
        assert!(elsewhere.is_fresh_hit(), "another host's entry stays: {}", elsewhere.cache_status());

        b.invalidate(&format!(r#"{{"prefixes": ["{}"]}}"#, url("/api/"))).await;
        assert!(!a.get_ok("/api/v1/a").await.is_hit(), "the shallower prefix covers /api/v1/ too");
        assert!(a.get_ok("/static/x").await.is_fresh_hit());

        for (prefix, reason) in [("/api/v2/users/", "--prefix-depth"), ("/api/v", "segment boundary")] {
            let body = format!(r#"{{"prefixes": ["{}"]}}"#, url(prefix));
            let refused = a.admin("POST", "/invalidate", &[("content-type", "application/json")], Some(&body)).await;
            assert_eq!(refused.status, 400, "{prefix}");
            assert!(refused.json()["error"].as_str().unwrap_or("").contains(reason), "{prefix}: {}", refused.text());
        }
        shutdown_all([a, b]).await;
    })
    .await;
}

/// Beyond the RFCs: `etagctl flush --prefix`, through a sidecar's admin API and straight against Memcached (the
/// same key schema and the same configured depth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etagctl_purges_a_prefix_through_the_admin_api_and_memcached() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        for path in ["/docs/a", "/blog/a", "/shop/a"] {
            origin.route(path, Route::cacheable());
        }
        let fleet = Fleet::new(&origin, &[&memcached]);
        let replica = fleet.replica(&["--prefix-depth", "1"]).await;
        for path in ["/docs/a", "/blog/a", "/shop/a"] {
            replica.get_ok(path).await;
        }
        let admin = replica.admin_url();
        let (code, out, err) = etagctl(&["--admin", &admin, "flush", "--prefix", &url("/docs/")]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("prefix"), "{out}");
        assert!(!replica.get_ok("/docs/a").await.is_hit());

        let namespace = fleet.namespace().to_owned();
        let direct = ["--memcached", &memcached.addr(), "--namespace", &namespace, "--prefix-depth", "1", "flush"];
        let (code, _, err) = etagctl(&[&direct[..], &["--prefix", &url("/blog/")]].concat());
        assert_eq!(code, 0, "{err}");
        assert!(!replica.get_ok("/blog/a").await.is_hit(), "the CLI names the sidecar's prefix tag");
        assert!(replica.get_ok("/shop/a").await.is_fresh_hit());

        // Deeper than the depth entries are tagged to: refused before anything is written (usage error).
        let (code, _, err) = etagctl(&[&direct[..], &["--prefix", &url("/shop/a/")]].concat());
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--prefix-depth"), "{err}");
        let (code, _, err) = etagctl(&["--admin", &admin, "flush", "--prefix", &url("/shop/a/")]);
        assert_eq!(code, 2, "the sidecar refuses it as a usage error: {err}");
        assert!(err.contains("--prefix-depth"), "{err}");
        assert!(replica.get_ok("/shop/a").await.is_fresh_hit());
        replica.shutdown().await;
    })
    .await;
}

/// RFC 9111 section 5.2.2.10: `s-maxage` forbids a shared cache to serve stale, so `stale-while-revalidate`
/// beside it does nothing in etagd; the same directives in `Etagd-Cache-Control` (RFC 9213, for etagd only)
/// get it. Both responses arrive already stale (`Age: 5`, RFC 9111 section 4.2.3), so no test waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_targeted_field_allows_the_stale_while_revalidate_that_s_maxage_forbids() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        let shared = Route::new()
            .header("cache-control", "s-maxage=1, stale-while-revalidate=59")
            .header("age", "5")
            .header("etag", "\"s1\"")
            .revalidates();
        origin.route("/shared", shared.clone());
        origin.route("/targeted", shared.header("etagd-cache-control", "max-age=1, stale-while-revalidate=59"));
        let fleet = Fleet::new(&origin, &[&memcached]);
        let replica = fleet.replica(&[]).await;
        replica.get_ok("/shared").await;
        replica.get_ok("/targeted").await;

        let revalidated = replica.get_ok("/shared").await;
        assert!(revalidated.cache_status().contains("fwd=stale"), "{}", revalidated.cache_status());
        let stale = replica.get_ok("/targeted").await;
        assert!(stale.is_hit() && stale.cache_status().contains("stale-while-revalidate"), "{}", stale.cache_status());
        assert_eq!(stale.header("cache-control"), "s-maxage=1, stale-while-revalidate=59", "passed on unchanged");
        replica.shutdown().await;
    })
    .await;
}

/// The tower layer takes the same lifetime rules and prefix purges (one case each, beyond the RFCs and RFC
/// 9111 section 4.2.2 for the 404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_takes_the_same_lifetime_rules_and_prefix_purges() {
    guard(async {
        let memcached = Memcached::start();
        let store = MemcachedStore::connect(MemcachedConfig {
            servers: vec![memcached.addr()],
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(2),
            ..MemcachedConfig::default()
        })
        .await
        .expect("the address resolves");
        let namespace = Namespace::new(&unique_namespace()).expect("testkit namespaces are valid");
        let cache = Cache::new(Arc::new(store), CacheConfig { namespace, ..CacheConfig::default() });
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            counted.fetch_add(1, Ordering::SeqCst);
            let status = if request.uri().path().ends_with("/missing") { 404 } else { 200 };
            async move {
                let mut response = Response::new(Body::from("answer"));
                *response.status_mut() = StatusCode::from_u16(status).expect("valid");
                response.headers_mut().insert("cache-control", "max-age=5".parse().expect("valid"));
                Ok::<_, Infallible>(response)
            }
        });
        let layer = EtagCacheLayer::new(cache.clone())
            .ttl_override(Duration::from_secs(3600))
            .negative_ttl(Duration::from_secs(30));
        let cached = layer.layer(service);
        let get = |path: &str| {
            let request = Request::get(format!("http://layer.test{path}")).body(Body::empty()).expect("valid");
            let cached = cached.clone();
            async move {
                let response = cached.oneshot(request).await.expect("the service never fails");
                let status = response.headers()["cache-status"].to_str().expect("text").to_owned();
                (response.status().as_u16(), status)
            }
        };
        assert_eq!(get("/api/page").await, (200, "etagd; fwd=uri-miss; fwd-status=200; stored; ttl=3600".into()));
        assert_eq!(get("/api/missing").await, (404, "etagd; fwd=uri-miss; fwd-status=404; stored; ttl=30".into()));
        assert!(get("/api/missing").await.1.starts_with("etagd; hit"));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let purge = Invalidation { prefixes: vec!["http://layer.test/api/".into()], ..Invalidation::default() };
        assert!(cache.invalidate(&purge).await.expect("a valid prefix").complete);
        assert!(get("/api/page").await.1.contains("fwd=uri-miss"), "purged by prefix");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    })
    .await;
}
