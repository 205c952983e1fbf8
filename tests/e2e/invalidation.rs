//! Invalidation reaches every replica at once, whichever way it comes: an unsafe method through one replica
//! (RFC 9111 section 4.4), the admin API (URLs, tags, everything), or an origin's `Etagd-Invalidate` header. And
//! the seed's race: a fill that was under way when its tag was invalidated is never served afterwards.

use std::sync::Arc;

use etagd_testkit::Memcached;
use tokio::sync::Semaphore;

use crate::support::{Fleet, Origin, Replica, Route, guard, shutdown_all, url};

/// Fills `paths` through `a` and checks `b` hits each.
async fn warm(a: &Replica, b: &Replica, paths: &[&str]) {
    for path in paths {
        a.get_ok(path).await;
        let hit = b.get_ok(path).await;
        assert!(hit.is_fresh_hit(), "{path}: {}", hit.cache_status());
    }
}

/// Asserts that `path` is a miss (one more origin request, the new version) and then a hit again.
async fn assert_refetched(origin: &Origin, replica: &Replica, path: &str, count_before: usize) {
    let reply = replica.get_ok(path).await;
    assert!(!reply.is_hit(), "{path} must miss after invalidation: {}", reply.cache_status());
    assert_eq!(origin.count(path), count_before + 1, "{path}: one refetch");
    assert_eq!(reply.text(), format!("{path} v2"), "{path}: the new content");
    let again = replica.get_ok(path).await;
    assert!(again.is_fresh_hit(), "{path} is stored again: {}", again.cache_status());
}

async fn assert_still_hit(replica: &Replica, path: &str) {
    let reply = replica.get_ok(path).await;
    assert!(reply.is_fresh_hit(), "{path} was not invalidated: {}", reply.cache_status());
    assert_eq!(reply.text(), format!("{path} v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_through_one_replica_invalidates_for_the_other() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/item", Route::cacheable());
        origin.route("/other", Route::cacheable());
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;
        warm(&a, &b, &["/item", "/other"]).await;

        origin.bump_version();
        let post = a.request("POST", "/item", &[]).await;
        assert_eq!(post.status, 200);
        assert!(post.cache_status().contains("fwd=method"), "{}", post.cache_status());
        assert_refetched(&origin, &b, "/item", 2).await;
        assert_still_hit(&b, "/other").await;
        shutdown_all([a, b]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_invalidation_by_url_tag_and_all() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/a", Route::cacheable().header("surrogate-key", "red shared"));
        origin.route("/b", Route::cacheable().header("surrogate-key", "blue shared"));
        origin.route("/c", Route::cacheable());
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;
        warm(&a, &b, &["/a", "/b", "/c"]).await;
        origin.bump_version();

        // By URL, through A's admin port: B misses that URL only.
        let report = a.invalidate(&format!(r#"{{"urls": ["{}"]}}"#, url("/c"))).await;
        assert_eq!(report["complete"], true, "{report}");
        assert_refetched(&origin, &b, "/c", 1).await;
        assert_still_hit(&b, "/a").await;

        // By tag, through B's admin port: A misses the tagged URL only.
        b.invalidate(r#"{"tags": ["red"]}"#).await;
        assert_refetched(&origin, &a, "/a", 1).await;
        assert_still_hit(&a, "/b").await;

        // Everything.
        a.invalidate(r#"{"all": true}"#).await;
        let counts: Vec<usize> = ["/a", "/b", "/c"].iter().map(|p| origin.count(p)).collect();
        for (path, before) in ["/a", "/b", "/c"].into_iter().zip(counts) {
            let reply = b.get_ok(path).await;
            assert!(!reply.is_hit(), "{path}: {}", reply.cache_status());
            assert_eq!(origin.count(path), before + 1, "{path}");
            assert_eq!(reply.text(), format!("{path} v2"));
        }
        shutdown_all([a, b]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_invalidate_header_reaches_the_other_replica_at_once() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/product", Route::cacheable().header("surrogate-key", "products"));
        origin.route("/catalog", Route::cacheable().header("surrogate-key", "catalog"));
        // Some other response, itself uncacheable, announces that the products changed.
        origin
            .route("/restock", Route::new().header("cache-control", "no-store").header("etagd-invalidate", "products"));
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;
        warm(&a, &b, &["/product", "/catalog"]).await;
        origin.bump_version();

        let restock = a.get_ok("/restock").await;
        assert!(restock.header("etagd-invalidate").is_empty());
        assert_refetched(&origin, &b, "/product", 1).await;
        assert_still_hit(&b, "/catalog").await;
        shutdown_all([a, b]).await;
    })
    .await;
}

/// The seed's race: a fill starts (the origin has read the old data), the data changes and its tag is
/// invalidated, then the fill ends. The late fill must not be stored: the next request goes to the origin and
/// gets the new data. `warm` first runs one fill and invalidation so the tag's counter and the replicas' hints
/// already exist; cold runs it on a tag nobody has seen.
async fn late_fill_after_tag_invalidation(warm_first: bool) {
    let memcached = Memcached::start();
    let origin = Origin::start().await;
    let gate = Arc::new(Semaphore::new(0));
    origin.route("/report", Route::cacheable().header("surrogate-key", "reports"));
    let fleet = Fleet::new(&origin, &[&memcached]);
    let (a, b) = fleet.pair(&[]).await;
    let mut before = 0;
    if warm_first {
        warm(&a, &b, &["/report"]).await;
        a.invalidate(r#"{"tags": ["reports"]}"#).await;
        before = origin.count("/report");
    }
    origin.route("/report", Route::cacheable().header("surrogate-key", "reports").gate(gate.clone()));
    let old_version = origin.bump_version();

    let slow = tokio::spawn(async move {
        let reply = a.get_ok("/report").await;
        (a, reply)
    });
    assert_eq!(origin.wait_count("/report", before + 1).await, before + 1, "the fill reached the origin");
    origin.bump_version();
    b.invalidate(r#"{"tags": ["reports"]}"#).await;
    origin.route("/report", Route::cacheable().header("surrogate-key", "reports"));
    gate.add_permits(1_000);
    let (a, late) = slow.await.expect("the slow request does not panic");
    let old_body = format!("/report v{old_version}");
    assert_eq!(late.text(), old_body, "the request in flight gets what the origin rendered");

    let next = b.get_ok("/report").await;
    let new_body = format!("/report v{}", old_version + 1);
    assert_eq!(next.text(), new_body, "the late fill was not stored: {}", next.cache_status());
    assert!(!next.is_hit(), "{}", next.cache_status());
    assert_eq!(origin.count("/report"), before + 2, "the next request went to the origin");
    for replica in [&a, &b, &a, &b] {
        assert_eq!(replica.get_ok("/report").await.text(), new_body, "the old body never comes back");
    }
    shutdown_all([a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_fill_is_not_served_after_its_tag_was_invalidated() {
    guard(late_fill_after_tag_invalidation(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_refill_is_not_served_after_its_tag_was_invalidated_again() {
    guard(late_fill_after_tag_invalidation(true)).await;
}

/// After a fill was refused because a tag it first met had just been invalidated, the engine knows the tag: the
/// next fill reads its counter before asking the origin, is judged by value rather than by time, and is stored.
/// (Refusing the first fill is right: the invalidation is within the clock skew allowed between replicas.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fill_after_a_refused_one_is_stored() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/news", Route::cacheable().header("surrogate-key", "news"));
        let fleet = Fleet::new(&origin, &[&memcached]);
        let a = fleet.replica(&[]).await;
        // A tag nobody has filled under yet is invalidated, then its URL is requested at once.
        a.invalidate(r#"{"tags": ["news"]}"#).await;
        let first = a.get_ok("/news").await;
        assert!(!first.is_hit());
        let second = a.get_ok("/news").await;
        let third = a.get_ok("/news").await;
        assert!(
            third.is_fresh_hit(),
            "the second fill should be stored; statuses: {:?}, {:?}, {:?}",
            first.cache_status(),
            second.cache_status(),
            third.cache_status()
        );
        assert_eq!(origin.count("/news"), 2);
        shutdown_all([a]).await;
    })
    .await;
}

/// One name per resource (RFC 3986 section 6.2.2, issue 13): the lookup, route matching, the admin API and
/// `etagctl` all normalise a URL with the same code, so a percent-encoded, odd-case or dot-segment spelling of
/// a URL reaches the entry the lookup stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_of_naming_a_resource_reaches_the_same_entry() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        // No freshness headers: only the route's TTL makes these storable, so a stored fill proves the route
        // matched the normalised path.
        let config = std::env::temp_dir().join(format!("etagd-names-{}.toml", etagd_testkit::unique_namespace()));
        std::fs::write(&config, "[[route]]\nprefix = \"/api\"\nttl = \"1h\"\ntags = [\"api\"]\n")
            .expect("write config");
        let fleet = Fleet::new(&origin, &[&memcached]);
        let replica = fleet.replica(&["--config", config.to_str().expect("utf-8 temp path")]).await;
        let stored = |reply: &crate::support::Reply| reply.cache_status().contains("stored");

        let first = replica.get_ok("/%61pi/x?b=2&a=1").await;
        assert!(stored(&first), "the /api route applies to /%61pi/x: {}", first.cache_status());
        assert!(replica.get_ok("/api/x?a=1&b=2").await.is_fresh_hit(), "one entry for both spellings");

        // The admin API, with an odd-case host and a default port.
        let report = replica.invalidate(r#"{"urls": ["http://APP.test:80/api/x?a=1&b=2"]}"#).await;
        assert_eq!(report["complete"], true, "{report}");
        assert!(stored(&replica.get_ok("/api/x?a=1&b=2").await), "the admin URL named the lookup's entry");

        // etagctl, straight to Memcached, with the percent-encoded spelling.
        let namespace = fleet.namespace().to_owned();
        let (code, out, err) = crate::etagctl::etagctl(&[
            "--memcached",
            &memcached.addr(),
            "--namespace",
            &namespace,
            "flush",
            "--url",
            &url("/%61pi/x?b=2&a=1"),
        ]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(stored(&replica.get_ok("/api/x?b=2&a=1").await), "etagctl's URL named the lookup's entry");

        // The route's tag was given to the fill of the percent-encoded spelling.
        replica.invalidate(r#"{"tags": ["api"]}"#).await;
        assert!(stored(&replica.get_ok("/%61pi/x?a=1&b=2").await), "the route tag reached the entry");

        // A dot-segment spelling, as an operator may paste it: HTTP clients resolve dot segments before they
        // send (RFC 3986 section 5.2.4), so the entry is /api/z's. (Raw dot segments, which only hand-made
        // requests carry, are keyed as sent; the key module's tests cover them.)
        assert!(stored(&replica.get_ok("/api/./z").await));
        assert!(replica.get_ok("/api/z").await.is_fresh_hit());
        replica.invalidate(r#"{"urls": ["HTTP://app.test/api/z"]}"#).await;
        assert!(stored(&replica.get_ok("/api/z").await), "an odd-case scheme named the same entry");
        let _ = std::fs::remove_file(&config);
        replica.shutdown().await;
    })
    .await;
}

/// Issue 14, cache-key hygiene: with `ignore_query`, marketing parameters do not split an entry, the app still
/// gets the full URL, and the admin API names URLs the way the lookups stored them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_query_parameters_share_one_entry_and_its_invalidation() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/q?utm_source=news&x=1", Route::cacheable());
        origin.route("/q?x=1", Route::cacheable());
        let config = std::env::temp_dir().join(format!("etagd-query-{}.toml", etagd_testkit::unique_namespace()));
        std::fs::write(&config, "ignore_query = [\"utm_*\", \"gclid\"]\n").expect("write config");
        let fleet = Fleet::new(&origin, &[&memcached]);
        let replica = fleet.replica(&["--config", config.to_str().expect("utf-8 temp path")]).await;
        let stored = |reply: &crate::support::Reply| reply.cache_status().contains("stored");
        assert!(stored(&replica.get_ok("/q?utm_source=news&x=1").await));
        assert_eq!(origin.count("/q?utm_source=news&x=1"), 1, "the app got the full URL");
        assert!(replica.get_ok("/q?x=1&gclid=abc").await.is_fresh_hit());
        let report = replica.invalidate(r#"{"urls": ["http://app.test/q?x=1&utm_medium=mail"]}"#).await;
        assert_eq!(report["complete"], true, "{report}");
        assert!(stored(&replica.get_ok("/q?x=1").await), "the admin URL named the shared entry");
        let _ = std::fs::remove_file(&config);
        replica.shutdown().await;
    })
    .await;
}
