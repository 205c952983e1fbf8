//! Memcached servers dying: a cache outage is never an outage. Requests fall back to the origin, readiness
//! stays green while reporting the server down, and with several servers only the dead server's share of the
//! URLs goes to the origin.

use std::collections::BTreeSet;

use etagd_client::key::ResourceKey;
use etagd_testkit::Memcached;

use crate::support::{Fleet, HOST, Origin, Replica, Route, guard, shutdown_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_memcached_sends_requests_to_the_origin_and_readiness_says_so() {
    guard(async {
        let mut memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/page", Route::cacheable());
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;
        a.get_ok("/page").await;
        assert!(b.get_ok("/page").await.is_fresh_hit());
        let ready = a.admin("GET", "/readyz", &[], None).await;
        assert_eq!(ready.json()["servers_down"], 0, "{}", ready.text());

        memcached.stop();
        for (i, replica) in [&a, &b, &a, &b, &a, &b].into_iter().enumerate() {
            let reply = replica.get("/page", &[]).await;
            assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
            assert_eq!(reply.text(), "/page v1");
            assert!(!reply.is_hit(), "{}", reply.cache_status());
            let post = replica.request("POST", "/page", &[]).await;
            assert_eq!(post.status, 200, "an invalidating POST still works: {}", post.text());
        }
        assert_eq!(origin.count("/page"), 1 + 6 + 6, "every request was answered by the origin");

        for replica in [&a, &b] {
            let ready = replica.admin("GET", "/readyz", &[], None).await;
            assert_eq!(ready.status, 200, "still ready: {}", ready.text());
            let json = ready.json();
            assert_eq!(json["servers_down"], 1, "{json}");
            assert_eq!(json["servers"][0]["server"], memcached.addr(), "{json}");
            assert_eq!(json["servers"][0]["up"], false, "{json}");
            let health = replica.admin("GET", "/healthz", &[], None).await;
            assert_eq!(health.status, 200);
        }
        shutdown_all([a, b]).await;
    })
    .await;
}

/// The memcached server a path's head record lives on, as the replica's own routing says.
fn server_of(replica: &Replica, path: &str) -> String {
    let cache = replica.cache();
    let key = cache.config().namespace.head_key(&ResourceKey::new("http", HOST, path));
    cache.store().server_of(&key)
}

/// Fills 30 URLs over `count` fresh servers, stops the server at `victim`, and checks (twice) that exactly the
/// URLs whose head record lived there go to the origin while every other one is still a fresh hit. Each server
/// holds its own copy of the namespace and tag counters, read beside the head, so no server is special (issue
/// 14; etagd's own guarantee, RFC 9111 says nothing about how a shared cache is spread over servers).
async fn stopping_one_server_costs_only_its_share(count: usize, victim: usize) {
    let mut servers: Vec<Memcached> = (0..count).map(|_| Memcached::start()).collect();
    let origin = Origin::start().await;
    let paths: Vec<String> = (0..30).map(|i| format!("/item/{i}")).collect();
    // Tagged, so every lookup also reads a tag counter.
    for path in &paths {
        origin.route(path, Route::cacheable().header("Surrogate-Key", "catalogue"));
    }
    let refs: Vec<&Memcached> = servers.iter().collect();
    let fleet = Fleet::new(&origin, &refs);
    let (a, b) = fleet.pair(&[]).await;
    // Fill through A, then read through both, so each replica holds the bodies in process (a filler does
    // not keep what it wrote) and a hit needs only the head record and the counters beside it.
    for path in &paths {
        a.get_ok(path).await;
        assert!(b.get_ok(path).await.is_fresh_hit(), "{path}");
        assert!(a.get_ok(path).await.is_fresh_hit(), "{path}");
    }
    assert!(paths.iter().all(|p| origin.count(p) == 1));

    let victim_addr = servers[victim].addr();
    let on_victim: BTreeSet<&String> = paths.iter().filter(|p| server_of(&a, p) == victim_addr).collect();
    let cache = a.cache();
    let ns = &cache.config().namespace;
    let held = [ns.all_generation_key(), ns.tag_generation_key("catalogue")]
        .iter()
        .filter(|key| cache.store().server_of(key) == victim_addr)
        .count();
    assert!(!on_victim.is_empty(), "server {victim} of {count} holds some of the 30 head records");
    servers[victim].stop();

    for round in 0..2 {
        let mut refetched = BTreeSet::new();
        for (i, path) in paths.iter().enumerate() {
            let replica = if i % 2 == 0 { &a } else { &b };
            let before = origin.count(path);
            let reply = replica.get(path, &[]).await;
            assert_eq!(reply.status, 200, "round {round} {path}: {}", reply.text());
            assert_eq!(reply.text(), format!("{path} v1"));
            if origin.count(path) > before {
                refetched.insert(path);
            } else {
                assert!(reply.is_fresh_hit(), "round {round} {path}: {}", reply.cache_status());
            }
        }
        assert!(
            refetched.len() < paths.len(),
            "round {round}, server {victim} of {count} (held {held} counters by their own hash): not every URL \
             may be refetched, got {}",
            refetched.len()
        );
        assert_eq!(
            refetched, on_victim,
            "round {round}, server {victim} of {count}: exactly the dead server's share went to the origin"
        );
    }
    let ready = b.admin("GET", "/readyz", &[], None).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["servers_down"], 1, "{}", ready.text());
    shutdown_all([a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_of_three_memcached_dying_costs_only_its_share() {
    guard(async {
        for victim in 0..3 {
            stopping_one_server_costs_only_its_share(3, victim).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_of_two_memcached_dying_costs_only_its_share() {
    guard(async {
        for victim in 0..2 {
            stopping_one_server_costs_only_its_share(2, victim).await;
        }
    })
    .await;
}

/// Issue 14: an unsafe method whose invalidation cannot reach a server escalates to the namespace, but at most
/// once per `--escalation-window`; a failure inside the window is covered by one bump at its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalations_from_posts_during_a_partial_outage_are_bounded() {
    guard(async {
        let (first, second) = (Memcached::start(), Memcached::start());
        let origin = Origin::start().await;
        let fleet = Fleet::new(&origin, &[&first, &second]);
        let replica = fleet.replica(&["--escalation-window", "1s"]).await;
        let cache = replica.cache();
        let counter_server = cache.store().server_of(&cache.config().namespace.all_generation_key());
        // A URL whose head lives on the server that does not hold the namespace counter: that server dies.
        let doomed = (0..200).map(|i| format!("/doomed/{i}")).find(|p| server_of(&replica, p) != counter_server);
        let doomed = doomed.expect("some URL lives on the other server");
        let live = (0..200).map(|i| format!("/live/{i}")).find(|p| server_of(&replica, p) == counter_server);
        let live = live.expect("some URL lives on the counter's server");
        for path in [&doomed, &live] {
            origin.route(path, Route::cacheable());
            replica.get_ok(path).await;
        }
        assert!(replica.get_ok(&live).await.is_fresh_hit());
        let mut dying = if first.addr() == counter_server { second } else { first };
        dying.stop();

        // The first failed invalidation bumps the namespace at once: the live entry misses.
        assert_eq!(replica.request("POST", &doomed, &[]).await.status, 200);
        assert!(!replica.get_ok(&live).await.is_hit(), "escalated to the namespace");
        assert!(replica.get_ok(&live).await.is_fresh_hit(), "refilled");

        // More failures inside the window do not flush everything again at once...
        for _ in 0..3 {
            assert_eq!(replica.request("POST", &doomed, &[]).await.status, 200);
        }
        assert!(replica.get_ok(&live).await.is_fresh_hit(), "no flush per POST");
        // ...but one bump at the window's end covers them.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if !replica.get_ok(&live).await.is_hit() {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the deferred escalation never came");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        replica.shutdown().await;
    })
    .await;
}
