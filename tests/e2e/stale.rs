//! A soft invalidation with a grace period behaves like stale-while-revalidate for every replica. (RFC 5861 and
//! RFC 9111 section 4.2.4 are table cases in `conformance::stale`.)

use etagd_testkit::Memcached;

use crate::support::{Fleet, Origin, Route, guard, shutdown_all};

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
