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

/// Replica flags for a frozen server: lookups and invalidations give up on it quickly.
const FAST: [&str; 6] =
    ["--memcached-timeout", "150ms", "--memcached-connect-timeout", "50ms", "--memcached-backoff", "300ms"];

/// Longer than the default `fence_poll` (1 s), so every replica has read a fence written before it.
const FENCE_SEEN: std::time::Duration = std::time::Duration::from_millis(1500);

/// A path whose head record lives on `server`.
fn path_on(replica: &Replica, prefix: &str, server: &str) -> String {
    (0..500).map(|i| format!("/{prefix}/{i}")).find(|p| server_of(replica, p) == *server).expect("a path")
}

/// Asks `path` through both replicas until it is a fresh hit again (bounded), asserting on the way that the old
/// copy (`<path> v1`) is never served.
async fn never_old_until_a_fresh_hit(replicas: [&Replica; 2], path: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        for replica in replicas {
            let reply = replica.get(path, &[]).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
            assert_ne!(reply.text(), format!("{path} v1"), "{path}: the invalidated copy came back");
            if reply.is_fresh_hit() {
                return;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{path} never became a hit again after the repair");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Issue 14 (RFC 9111 section 4.4: an unsafe method invalidates the target URI): POSTs whose invalidation cannot
/// reach a frozen server fence it instead of flushing the namespace, so the live server's entries stay hits
/// through every POST, and the frozen server's invalidated entry never comes back once it thaws.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_during_a_partial_outage_never_flush_the_live_server_and_never_revive_the_dead_ones() {
    guard(async {
        let (first, second) = (Memcached::start(), Memcached::start());
        let origin = Origin::start().await;
        let fleet = Fleet::new(&origin, &[&first, &second]);
        let (a, b) = fleet.pair(&FAST).await;
        let (live, doomed) = (path_on(&a, "live", &first.addr()), path_on(&a, "doomed", &second.addr()));
        for path in [&live, &doomed] {
            origin.route(path, Route::cacheable());
            a.get_ok(path).await;
            assert!(b.get_ok(path).await.is_fresh_hit(), "{path}");
        }
        origin.bump_version();
        second.pause();
        for _ in 0..4 {
            assert_eq!(a.request("POST", &doomed, &[]).await.status, 200);
            for replica in [&a, &b] {
                let reply = replica.get_ok(&live).await;
                assert!(reply.is_fresh_hit(), "the live server's entry was flushed: {}", reply.cache_status());
                assert_eq!(reply.text(), format!("{live} v1"));
            }
        }
        // Every replica polls the fences every second (`fence_poll`): give the other one time to see it.
        tokio::time::sleep(FENCE_SEEN).await;
        assert!(b.get_ok(&live).await.is_fresh_hit());
        second.resume();
        never_old_until_a_fresh_hit([&b, &a], &doomed).await;
        assert!(a.get_ok(&live).await.is_fresh_hit(), "the repair costs only the fenced server's share");
        shutdown_all([a, b]).await;
    })
    .await;
}

/// Issue 14 (RFC 9111 section 4.4 for invalidation; the fence is etagd's own guarantee): a tag invalidated through
/// the admin API while one server is frozen answers 207 naming the fenced server; the live server's tagged entry
/// refills at once; after the thaw the frozen server's tagged entry never returns (treated as down until
/// repaired, then a miss and a refill), and the repair costs its untagged entries one miss each, then they hit,
/// while the live server's untagged entry is never refetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_invalidated_while_a_server_is_frozen_never_returns_after_the_thaw() {
    guard(async {
        let (first, second) = (Memcached::start(), Memcached::start());
        let origin = Origin::start().await;
        let fleet = Fleet::new(&origin, &[&first, &second]);
        let (a, b) = fleet.pair(&FAST).await;
        let tagged_live = path_on(&a, "tagged-live", &first.addr());
        let tagged_frozen = path_on(&a, "tagged-frozen", &second.addr());
        let plain_live = path_on(&a, "plain-live", &first.addr());
        let plain_frozen = path_on(&a, "plain-frozen", &second.addr());
        for path in [&tagged_live, &tagged_frozen] {
            origin.route(path, Route::cacheable().header("Surrogate-Key", "catalogue"));
        }
        for path in [&plain_live, &plain_frozen] {
            origin.route(path, Route::cacheable());
        }
        for path in [&tagged_live, &tagged_frozen, &plain_live, &plain_frozen] {
            a.get_ok(path).await;
            assert!(b.get_ok(path).await.is_fresh_hit(), "{path}");
        }
        origin.bump_version();
        second.pause();
        let reply = a
            .admin("POST", "/invalidate", &[("content-type", "application/json")], Some(r#"{"tags": ["catalogue"]}"#))
            .await;
        assert_eq!(reply.status, 207, "a write failed, so not a plain 200: {}", reply.text());
        let report = reply.json();
        assert_eq!(report["complete"], true, "{report}");
        assert_eq!(report["fenced"], serde_json::json!([second.addr()]), "{report}");

        let refilled = b.get_ok(&tagged_live).await;
        assert!(!refilled.is_hit(), "{}", refilled.cache_status());
        assert_eq!(refilled.text(), format!("{tagged_live} v2"));
        let plain_live_fills = origin.count(&plain_live);
        // Every replica polls the fences every second (`fence_poll`): give the other one time to see it.
        tokio::time::sleep(FENCE_SEEN).await;
        second.resume();
        never_old_until_a_fresh_hit([&b, &a], &tagged_frozen).await;
        // The repair bumped the thawed server's namespace copy: its untagged entry misses once, then hits.
        let before = origin.count(&plain_frozen);
        never_old_until_a_fresh_hit([&a, &b], &plain_frozen).await;
        assert!(origin.count(&plain_frozen) > before, "the repaired server's share was refetched");
        // Each replica lifts a fence at its own next poll (`fence_poll`): the other one may still be waiting
        // for it, so ask it until it serves the refilled entry too (bounded, never the old copy).
        never_old_until_a_fresh_hit([&a, &a], &plain_frozen).await;
        assert!(a.get_ok(&plain_live).await.is_fresh_hit());
        assert_eq!(origin.count(&plain_live), plain_live_fills, "the live server's share was never refetched");
        shutdown_all([a, b]).await;
    })
    .await;
}
