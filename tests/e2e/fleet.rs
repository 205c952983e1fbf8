//! Single flight across the fleet: concurrent cold requests on several replicas reach the origin once, and
//! requests for an uncacheable URL are never held behind each other.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etagd_testkit::Memcached;
use futures_util::future::join_all;
use tokio::sync::Semaphore;

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

/// Issue 14, origin protection: a burst of distinct cold URLs (a cold cache after a Memcached restart) reaches
/// the origin at most `--origin-max-concurrency` at a time; `--origin-queue` more wait, and the rest are told
/// to retry (RFC 9110 section 15.6.4: 503 with Retry-After) instead of piling onto the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_cold_urls_reaches_the_origin_within_its_cap() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        let gate = Arc::new(Semaphore::new(0));
        let paths: Vec<String> = (0..10).map(|i| format!("/cold/{i}")).collect();
        for path in &paths {
            origin.route(path, Route::cacheable().gate(gate.clone()));
        }
        let fleet = Fleet::new(&origin, &[&memcached]);
        let replica = Arc::new(fleet.replica(&["--origin-max-concurrency", "2", "--origin-queue", "2"]).await);
        let mut requests = Vec::new();
        for path in paths.clone() {
            let replica = replica.clone();
            requests.push(tokio::spawn(async move { replica.get(&path, &[]).await }));
        }
        // Two reach the origin and wait at its gate, two queue in etagd, six are refused at once.
        let mut refused = 0;
        let mut pending = Vec::new();
        for request in requests {
            if request.is_finished() {
                let reply = request.await.expect("no request panicked");
                assert_eq!(reply.status, 503, "{}", reply.cache_status());
                refused += 1;
            } else {
                pending.push(request);
            }
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while refused < 6 && tokio::time::Instant::now() < deadline {
            let mut still = Vec::new();
            for request in pending {
                if request.is_finished() {
                    let reply = request.await.expect("no request panicked");
                    assert_eq!(reply.status, 503, "only refusals finish while the gate is shut");
                    assert_eq!(reply.header("retry-after"), "1");
                    refused += 1;
                } else {
                    still.push(request);
                }
            }
            pending = still;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(refused, 6, "two in flight and two queued; the rest refused");
        let reached: usize = paths.iter().map(|p| origin.count(p)).sum();
        assert_eq!(reached, 2, "the origin saw no more than the cap while it was slow");
        gate.add_permits(10);
        for request in pending {
            assert_eq!(request.await.expect("no request panicked").status, 200);
        }
        assert_eq!(paths.iter().map(|p| origin.count(p)).sum::<usize>(), 4);
        Arc::try_unwrap(replica).ok().expect("every request finished").shutdown().await;
    })
    .await;
}
