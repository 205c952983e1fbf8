//! Serving stale (RFC 5861): within `stale-while-revalidate` the stale body is served at once while one
//! background request refreshes it; within `stale-if-error` a failing origin is hidden; a soft invalidation with
//! a grace period behaves like stale-while-revalidate for every replica.

use std::time::Duration;

use etagd_testkit::Memcached;

use crate::support::{Fleet, Origin, Replica, Route, guard, shutdown_all};

/// Waits past a one-second freshness lifetime. Ages are whole seconds, so 1.5 s is past it.
async fn let_expire() {
    tokio::time::sleep(Duration::from_millis(1_500)).await;
}

/// GETs until the answer is served stale (bounded), returning it. A request that still finds the entry fresh
/// (clock rounding) is a hit and does not reach the origin.
async fn get_stale(replica: &Replica, path: &str) -> crate::support::Reply {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reply = replica.get_ok(path).await;
        if reply.cache_status().contains("stale") || tokio::time::Instant::now() >= deadline {
            return reply;
        }
        assert!(reply.is_fresh_hit(), "{path}: {}", reply.cache_status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_stale_and_refreshes_once_in_the_background() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/feed", Route::new().header("cache-control", "max-age=1, stale-while-revalidate=30"));
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;
        assert_eq!(a.get_ok("/feed").await.text(), "/feed v1");
        origin.bump_version();
        // The refreshed answer stays fresh, so the only origin request left is the one refresh.
        origin.route("/feed", Route::cacheable());
        let_expire().await;

        let stale = get_stale(&b, "/feed").await;
        assert!(stale.cache_status().contains("stale"), "{}", stale.cache_status());
        assert_eq!(stale.text(), "/feed v1", "the stale body, at once");
        assert_eq!(origin.wait_count("/feed", 2).await, 2, "one background refresh");

        // Once the refresh is stored, the new body is served fresh by both replicas. (Waiting through the admin
        // port: a GET finding the entry still stale would start a refresh of its own.)
        let inspection = a.wait_entry_state("/feed", "fresh").await;
        assert_eq!(inspection["entry"]["state"], "fresh", "{inspection}");
        for replica in [&a, &b] {
            let fresh = replica.get_ok("/feed").await;
            assert_eq!(fresh.text(), "/feed v2");
            assert!(fresh.is_fresh_hit(), "{}", fresh.cache_status());
        }
        assert_eq!(origin.count("/feed"), 2, "exactly one refresh");
        shutdown_all([a, b]).await;
    })
    .await;
}

/// `stale-if-error`: once the entry is stale, a failing origin (500, or gone) is hidden behind the stale body.
async fn stale_if_error(stop_origin: bool) {
    let memcached = Memcached::start();
    let mut origin = Origin::start().await;
    origin.route("/prices", Route::new().header("cache-control", "max-age=1, stale-if-error=60"));
    let fleet = Fleet::new(&origin, &[&memcached]);
    let (a, b) = fleet.pair(&[]).await;
    let stored = a.get_ok("/prices").await;
    let_expire().await;
    if stop_origin {
        origin.stop().await;
    } else {
        origin.fail(true);
    }
    for replica in [&a, &b, &a] {
        let reply = replica.get("/prices", &[]).await;
        assert_eq!(reply.status, 200, "the stale body hides the failure: {}", reply.text());
        assert_eq!(reply.body, stored.body);
        assert!(reply.cache_status().contains("stale"), "{}", reply.cache_status());
    }
    if !stop_origin {
        assert!(origin.count("/prices") >= 2, "the origin was asked and failed");
        // Once the origin recovers, the entry is refreshed.
        origin.fail(false);
        origin.bump_version();
        let reply = b.get_ok("/prices").await;
        assert_eq!(reply.text(), "/prices v2", "{}", reply.cache_status());
    }
    shutdown_all([a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_hides_an_origin_500() {
    guard(stale_if_error(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_hides_an_origin_that_is_gone() {
    guard(stale_if_error(true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_invalidation_serves_the_old_body_during_one_refresh() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/menu", Route::cacheable().header("surrogate-key", "t"));
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;
        a.get_ok("/menu").await;
        assert!(b.get_ok("/menu").await.is_fresh_hit());
        origin.bump_version();

        let report = a.invalidate(r#"{"tags": ["t"], "grace_s": 30}"#).await;
        assert_eq!(report["grace_s"], 30, "{report}");
        let graced = b.get_ok("/menu").await;
        assert_eq!(graced.text(), "/menu v1", "the old body during the grace period");
        let status = graced.cache_status();
        assert!(status.contains("stale") || status.contains("grace"), "{status}");
        assert_eq!(origin.wait_count("/menu", 2).await, 2, "one background refresh");

        let inspection = a.wait_entry_state("/menu", "fresh").await;
        assert_eq!(inspection["entry"]["state"], "fresh", "{inspection}");
        for replica in [&a, &b] {
            let fresh = replica.get_ok("/menu").await;
            assert_eq!(fresh.text(), "/menu v2");
            assert!(fresh.is_fresh_hit(), "{}", fresh.cache_status());
        }
        assert_eq!(origin.count("/menu"), 2, "exactly one refresh");
        shutdown_all([a, b]).await;
    })
    .await;
}
