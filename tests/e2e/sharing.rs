//! Replicas share one cache: one origin request fills it for every replica, and every replica hands out, and
//! honours, the same validator.

use etagd_testkit::Memcached;

use crate::support::{Fleet, Origin, Route, guard, shutdown_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_replicas_serve_one_fill_with_one_etag() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/page", Route::cacheable());
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;

        let first = a.get_ok("/page").await;
        let second = b.get_ok("/page").await;
        let third = a.get_ok("/page").await;

        assert_eq!(origin.count("/page"), 1, "one origin request fills both replicas");
        assert!(!first.is_hit(), "{}", first.cache_status());
        assert!(second.is_fresh_hit(), "{}", second.cache_status());
        assert!(third.is_fresh_hit(), "{}", third.cache_status());
        let etag = first.etag();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "a quoted strong tag: {etag}");
        for reply in [&second, &third] {
            assert_eq!(reply.etag(), etag);
            assert_eq!(reply.body, first.body);
        }
        assert_eq!(first.text(), "/page v1");
        shutdown_all([a, b]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_replica_answers_304_to_the_shared_etag_and_its_weak_copy() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/page", Route::cacheable());
        origin.route("/own-etag", Route::cacheable().header("etag", "\"origin-7\""));
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;

        for path in ["/page", "/own-etag"] {
            let etag = a.get_ok(path).await.etag();
            if path == "/own-etag" {
                assert_eq!(etag, "\"origin-7\"", "the origin's own validator is kept");
            }
            let weak = format!("W/{etag}");
            for replica in [&a, &b] {
                for condition in [etag.as_str(), weak.as_str()] {
                    let reply = replica.get(path, &[("if-none-match", condition)]).await;
                    assert_eq!(reply.status, 304, "{path} If-None-Match {condition}");
                    assert!(reply.body.is_empty());
                    // In the form the client holds, so it can match the 304 to what it stored
                    // (RFC 9111 section 4.3.4).
                    assert_eq!(reply.etag(), condition, "a 304 names the validator");
                }
                let other = replica.get(path, &[("if-none-match", "\"something-else\"")]).await;
                assert_eq!(other.status, 200, "a different tag gets the body");
                assert_eq!(other.etag(), etag);
            }
            assert_eq!(origin.count(path), 1, "{path}: every 304 came from the cache");
        }
        shutdown_all([a, b]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_after_get_is_a_hit_without_a_body() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/page", Route::cacheable());
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;

        let get = a.get_ok("/page").await;
        for replica in [&a, &b] {
            let head = replica.request("HEAD", "/page", &[]).await;
            assert_eq!(head.status, 200);
            assert!(head.is_fresh_hit(), "{}", head.cache_status());
            assert!(head.body.is_empty(), "HEAD has no body");
            assert_eq!(head.etag(), get.etag());
            assert_eq!(
                head.header("content-length"),
                get.body.len().to_string(),
                "HEAD announces the length a GET would carry"
            );
        }
        assert_eq!(origin.count("/page"), 1);
        shutdown_all([a, b]).await;
    })
    .await;
}
