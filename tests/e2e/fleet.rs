//! Single flight across the fleet: concurrent cold requests on several replicas reach the origin once, and
//! requests for an uncacheable URL are never held behind each other.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etagd_testkit::Memcached;
use futures_util::future::join_all;

use crate::support::{Fleet, Origin, Route, guard};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_cold_requests_on_two_replicas_reach_the_origin_once() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        // Slow enough that all forty overlap with the one fill.
        origin.route("/hot", Route::cacheable().delay(Duration::from_millis(200)));
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;
        let replicas = Arc::new([a, b]);

        let requests = (0..40).map(|i| {
            let replicas = replicas.clone();
            tokio::spawn(async move { replicas[i % 2].get_ok("/hot").await })
        });
        let replies: Vec<_> =
            join_all(requests).await.into_iter().map(|joined| joined.expect("no request panicked")).collect();

        assert_eq!(origin.count("/hot"), 1, "one origin request for forty clients");
        let etags: HashSet<String> = replies.iter().map(|r| r.etag()).collect();
        assert_eq!(etags.len(), 1, "one validator: {etags:?}");
        assert!(replies.iter().all(|r| r.text() == "/hot v1"));
        let [a, b] = Arc::into_inner(replicas).expect("every request task has finished");
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_an_uncacheable_url_all_complete() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        // Each answer is private to its request: the origin numbers them.
        origin.route(
            "/cart",
            Route::new()
                .header("cache-control", "no-store")
                .delay(Duration::from_millis(200))
                .body(|ask| Bytes::from(format!("cart #{}", ask.n))),
        );
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;
        let replicas = Arc::new([a, b]);

        let requests = (0..10).map(|i| {
            let replicas = replicas.clone();
            tokio::spawn(async move { replicas[i % 2].get_ok("/cart").await })
        });
        let replies: Vec<_> =
            join_all(requests).await.into_iter().map(|joined| joined.expect("no request panicked")).collect();

        assert_eq!(replies.len(), 10);
        let bodies: HashSet<String> = replies.iter().map(|r| r.text()).collect();
        assert_eq!(bodies.len(), 10, "no answer was shared: {bodies:?}");
        assert_eq!(origin.count("/cart"), 10, "every request reached the origin");
        assert!(replies.iter().all(|r| !r.is_hit()));
        let [a, b] = Arc::into_inner(replicas).expect("every request task has finished");
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}
