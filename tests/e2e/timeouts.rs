//! A Memcached that stops answering mid-batch (issue 9): every waiting request falls back to the origin once
//! the batch deadline passes, none becomes an error, and the cache comes back by itself when the server does;
//! and no lease a frozen server left behind blocks a URL past the short fill lease (issue 14).

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

/// Issue 14: Memcached frozen while cold URLs are asked. The lookups time out and go to the origin, but the
/// server, once thawed, still executes the leased reads it had buffered: each creates a fill placeholder whose
/// win token nobody receives. Such an orphan must block its URL for one short lease at most (`--fill-lease`,
/// 5 s by default), not for a long one: measured before, each of those URLs waited out `--fill-wait` for up to
/// 30 s. So after thawing, every URL is cached again within the default lease, plus slack for a loaded machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_frozen_memcached_no_url_stays_busy_past_the_lease() {
    guard(async {
        let origin = Origin::start().await;
        let paths: Vec<String> = (0..6).map(|n| format!("/orphan/{n}")).collect();
        for path in &paths {
            origin.route(path, Route::cacheable());
        }
        origin.route("/warm", Route::cacheable());
        let memcached = Memcached::start();
        let fleet = Fleet::new(&origin, &[&memcached]);
        let replica = fleet
            .replica(&[
                "--memcached-timeout",
                "150ms",
                "--memcached-connect-timeout",
                "50ms",
                "--memcached-backoff",
                "200ms",
                "--fill-wait",
                "1s",
            ])
            .await;
        replica.get_ok("/warm").await;

        memcached.pause();
        let replies = join_all(paths.iter().map(|path| replica.get(path, &[]))).await;
        for reply in &replies {
            assert_eq!(reply.status, 200, "{}", reply.cache_status());
        }
        memcached.resume();
        let thawed = tokio::time::Instant::now();

        // The default lease (5 s), plus slack for the back-off, the probe and a loaded machine; a lease of the
        // old default (30 s) would keep every URL busy far beyond it.
        let bound = Duration::from_secs(5 + 4);
        let mut cached = vec![false; paths.len()];
        while cached.iter().any(|done| !done) {
            assert!(
                thawed.elapsed() < bound,
                "URLs still not cached {:?} after memcached thawed: {:?}",
                thawed.elapsed(),
                paths.iter().zip(&cached).filter(|(_, done)| !**done).map(|(path, _)| path).collect::<Vec<_>>()
            );
            let round = join_all(paths.iter().map(|path| replica.get(path, &[]))).await;
            for (done, reply) in cached.iter_mut().zip(&round) {
                assert_eq!(reply.status, 200, "{}", reply.cache_status());
                *done |= reply.is_hit();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        replica.shutdown().await;
    })
    .await;
}
