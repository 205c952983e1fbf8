//! A Memcached that stops answering mid-batch (issue 9): every waiting request falls back to the origin once
//! the batch deadline passes, none becomes an error, and the cache comes back by itself when the server does.

use std::time::Duration;

use etagd_testkit::Memcached;
use futures_util::future::join_all;

use crate::support::{Fleet, Origin, Route, guard};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_memcached_turns_no_request_into_an_error() {
    guard(async {
        let origin = Origin::start().await;
        origin.route("/frozen", Route::cacheable());
        let memcached = Memcached::start();
        let fleet = Fleet::new(&origin, &[&memcached]);
        let replica = fleet
            .replica(&[
                "--memcached-timeout",
                "150ms",
                "--memcached-connect-timeout",
                "50ms",
                "--memcached-backoff",
                "500ms",
            ])
            .await;
        replica.get_ok("/frozen").await;
        assert!(replica.get_ok("/frozen").await.is_hit());
        let before = origin.count("/frozen");

        // SIGSTOP: connections are still accepted and requests buffered, but nothing is ever answered, so a
        // batch already on the wire and every lookup queued behind it can only end by the deadline.
        memcached.pause();
        let replies = join_all((0..32).map(|_| replica.get("/frozen", &[]))).await;
        for reply in &replies {
            assert_eq!(reply.status, 200, "a frozen memcached must not fail a request: {}", reply.cache_status());
            assert!(!reply.is_hit(), "nothing can be a hit while memcached is frozen: {}", reply.cache_status());
        }
        assert_eq!(origin.count("/frozen") - before, 32, "every request fell back to the origin");
        let health = replica.admin("GET", "/readyz", &[], None).await;
        assert_eq!(health.status, 200, "memcached trouble does not make etagd unready");
        assert_eq!(health.json()["servers_down"], 1, "{}", health.text());

        // Thawed, the server is probed again after the back-off and the entry is served from the cache again.
        memcached.resume();
        let mut hit = false;
        for _ in 0..100 {
            if replica.get_ok("/frozen").await.is_hit() {
                hit = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(hit, "the cache came back after memcached resumed");
        replica.shutdown().await;
    })
    .await;
}
