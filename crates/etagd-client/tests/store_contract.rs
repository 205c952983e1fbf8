//! The store contract: the same behaviour from the embedded store and from real memcached.
//!
//! Every contract test is an `async fn(Fixture)` run twice by `contract_tests!`: against a fresh
//! [`MemoryStore`] (with tokio's clock paused, so expiry needs no real waiting) and against a
//! [`MemcachedStore`] over its own `memcached` process. Tests after the contract cover what only one store
//! has: several servers and failing servers for Memcached, the byte bound for the embedded store.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etagd_client::store::memcached::{MemcachedConfig, MemcachedStore};
use etagd_client::store::memory::MemoryStore;
use etagd_client::store::{
    DeleteMode, Expiry, GetOutcome, GetRequest, Item, Lease, Placement, SetCondition, SetOutcome, Store, StoreError,
};
use etagd_testkit::{Memcached, SilentServer, unique_namespace};

/// A store under test, a key prefix of its own, and the server behind it (kept alive for the test).
struct Fixture {
    store: Arc<dyn Store>,
    prefix: String,
    _server: Option<Memcached>,
}

/// Timeouts generous enough for a loaded 2-core machine running many tests at once: the contract tests are
/// about semantics, the failure tests below set their own.
fn relaxed_config(servers: Vec<String>) -> MemcachedConfig {
    MemcachedConfig {
        servers,
        connect_timeout: Duration::from_secs(1),
        io_timeout: Duration::from_secs(2),
        ..MemcachedConfig::default()
    }
}

fn memory_fixture() -> Fixture {
    Fixture { store: Arc::new(MemoryStore::new(64 << 20)), prefix: unique_namespace(), _server: None }
}

async fn memcached_fixture() -> Fixture {
    let server = Memcached::start();
    let store = MemcachedStore::connect(relaxed_config(vec![server.addr()])).await.expect("connect to memcached");
    Fixture { store: Arc::new(store), prefix: unique_namespace(), _server: Some(server) }
}

impl Fixture {
    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    async fn read(&self, request: GetRequest) -> GetOutcome {
        let mut results = self.store.get_many(&[request]).await;
        assert_eq!(results.len(), 1);
        results.remove(0).expect("read succeeds")
    }

    async fn get(&self, key: &str) -> GetOutcome {
        self.read(GetRequest::plain(key)).await
    }

    async fn leased(&self, key: &str) -> GetOutcome {
        self.read(GetRequest::leased(key, 30)).await
    }

    async fn put(&self, key: &str, value: &'static str, condition: SetCondition) -> SetOutcome {
        self.store
            .set(key, Bytes::from_static(value.as_bytes()), Expiry::Secs(300), condition)
            .await
            .expect("write succeeds")
    }
}

fn hit(outcome: GetOutcome) -> Item {
    match outcome {
        GetOutcome::Hit(item) => item,
        miss => panic!("expected a hit, got {miss:?}"),
    }
}

fn won(lease: Lease) -> u64 {
    match lease {
        Lease::Won { cas } => cas,
        other => panic!("expected to win the lease, got {other:?}"),
    }
}

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    super::$name(super::memory_fixture()).await;
                }
            )*
        }
        mod memcached_store {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::memcached_fixture().await).await;
                }
            )*
        }
    };
}

contract_tests!(
    miss_set_and_hit,
    add_only_stores_when_absent,
    cas_writes_only_over_the_same_version,
    first_leased_reader_fills_the_others_wait,
    a_released_placeholder_can_be_leased_again,
    soft_delete_serves_stale_and_elects_one_refresher,
    hard_delete_removes,
    items_expire,
    oversized_values_are_refused_without_storing,
    empty_values_are_refused,
    get_many_answers_in_request_order,
    a_bad_key_fails_alone,
    stats_and_health_report_the_server,
    concurrent_readers_share_plain_reads_but_never_a_lease,
    every_verb_honours_a_placement,
    a_touch_keeps_a_placeholder_alive_with_its_cas,
    presence_reads_answer_without_the_value_and_bulk_reads_with_it,
    several_items_are_written_in_one_call,
);

/// A fill's bodies: several items written in one call, all beside their head record. One too large fails the
/// call and is not stored; the others are written all the same.
async fn several_items_are_written_in_one_call(f: Fixture) {
    let owner = f.key("u:owner");
    let near = Placement::Near(&owner);
    let items: Vec<(String, Bytes)> =
        (0..3).map(|i| (f.key(&format!("b:{i}")), Bytes::from(format!("body {i}")))).collect();
    f.store.set_all_placed(items.clone(), near, Expiry::Secs(300)).await.expect("written");
    for (key, value) in &items {
        assert_eq!(hit(f.read(GetRequest::plain(key).near(&owner)).await).value, *value);
    }
    let limit = f.store.max_item_bytes();
    let big = (f.key("b:big"), Bytes::from(vec![b'x'; limit + 1]));
    let after = (f.key("b:after"), Bytes::from_static(b"after"));
    let result = f.store.set_all_placed(vec![big.clone(), after.clone()], near, Expiry::Secs(300)).await;
    assert!(matches!(result, Err(StoreError::TooLarge { .. })), "{result:?}");
    assert_eq!(f.read(GetRequest::plain(&big.0).near(&owner)).await, GetOutcome::Miss { lease: Lease::None });
    assert_eq!(hit(f.read(GetRequest::plain(&after.0).near(&owner)).await).value, after.1);
    f.store.set_all_placed(Vec::new(), near, Expiry::Secs(300)).await.expect("nothing to write");
}

/// A presence read (`mg <key>` without `v`) tells a stored item from a missing one without transferring it; a
/// bulk read (large values, outside the coalescer) reads like a plain one. Mixed in one batch, in order.
async fn presence_reads_answer_without_the_value_and_bulk_reads_with_it(f: Fixture) {
    let (present, absent) = (f.key("chunk-0"), f.key("chunk-1"));
    let value = Bytes::from(vec![b'c'; 256 * 1024]);
    f.store.set(&present, value.clone(), Expiry::Secs(60), SetCondition::Always).await.expect("write");
    let requests = [
        GetRequest::presence(&present),
        GetRequest::presence(&absent),
        GetRequest::bulk(&present),
        GetRequest::bulk(&absent),
    ];
    let mut results = f.store.get_many(&requests).await.into_iter().map(|r| r.expect("read succeeds"));
    assert!(hit(results.next().unwrap()).value.is_empty(), "present, and no value sent");
    assert_eq!(results.next().unwrap(), GetOutcome::Miss { lease: Lease::None });
    assert_eq!(hit(results.next().unwrap()).value, value);
    assert_eq!(results.next().unwrap(), GetOutcome::Miss { lease: Lease::None });
}

/// A filler renews its lease by touching the placeholder: the placeholder outlives its first lifetime, keeps
/// its CAS (so the fill still commits over it) and still answers `Busy` to others. A touch of a stored item
/// keeps its value; a touch of nothing reports that nothing is there (the lease was lost).
async fn a_touch_keeps_a_placeholder_alive_with_its_cas(f: Fixture) {
    let key = f.key("touched");
    let GetOutcome::Miss { lease } = f.read(GetRequest::leased(&key, 1)).await else { panic!("a cold key misses") };
    let cas = won(lease);
    let touched = f.store.touch_placed(&key, Placement::Own, Expiry::Secs(30)).await.expect("touch");
    assert_eq!(touched, Some(cas), "a touch keeps the placeholder's CAS");
    // memcached counts whole seconds; two are enough to outlive a one-second lease (instant under paused time).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(f.leased(&key).await, GetOutcome::Miss { lease: Lease::Busy }, "the placeholder outlived its lease");
    assert_eq!(f.put(&key, "filled", SetCondition::Cas(cas)).await, SetOutcome::Stored, "the filler commits over it");
    let item = hit(f.get(&key).await);
    let touched = f.store.touch_placed(&key, Placement::Own, Expiry::Secs(60)).await.expect("touch");
    assert_eq!(touched, Some(item.cas));
    assert_eq!(hit(f.get(&key).await).value, "filled");
    let nothing = f.store.touch_placed(&f.key("never-stored"), Placement::Own, Expiry::Secs(5)).await;
    assert_eq!(nothing.expect("touch"), None);
}

/// An item placed near another key is read, leased, written under CAS and deleted through the same placement
/// (one server: the hint changes nothing, and must not break anything).
async fn every_verb_honours_a_placement(f: Fixture) {
    let owner = f.key("u:owner");
    let beside = f.key("b:beside");
    let near = Placement::Near(&owner);
    let value = Bytes::from_static(b"body");
    let stored = f.store.set_placed(&beside, near, value.clone(), Expiry::Secs(300), SetCondition::Always).await;
    assert_eq!(stored.expect("write"), SetOutcome::Stored);
    assert_eq!(hit(f.read(GetRequest::plain(&beside).near(&owner)).await).value, value);

    let filled = f.key("v:filled");
    let GetOutcome::Miss { lease } = f.read(GetRequest::leased(&filled, 30).near(&owner)).await else {
        panic!("expected a miss")
    };
    let cas = won(lease);
    assert_eq!(f.read(GetRequest::leased(&filled, 30).near(&owner)).await, GetOutcome::Miss { lease: Lease::Busy });
    let written = f.store.set_placed(&filled, near, value.clone(), Expiry::Secs(300), SetCondition::Cas(cas)).await;
    assert_eq!(written.expect("write"), SetOutcome::Stored);
    assert_eq!(hit(f.read(GetRequest::plain(&filled).near(&owner)).await).value, value);

    assert!(f.store.delete_placed(&beside, near, DeleteMode::Hard).await.expect("delete"));
    assert_eq!(f.read(GetRequest::plain(&beside).near(&owner)).await, GetOutcome::Miss { lease: Lease::None });
    assert_eq!(GetRequest::plain(&beside).placement(), Placement::Own);
    assert_eq!(GetRequest::plain(&beside).near(&owner).placement(), near);
}

/// Many callers at once (which the Memcached store coalesces into one batch, merging identical plain reads): every
/// plain reader sees the value, and of the leased readers of a missing key exactly one wins.
async fn concurrent_readers_share_plain_reads_but_never_a_lease(f: Fixture) {
    let shared = f.key("shared");
    let cold = f.key("cold");
    assert_eq!(f.put(&shared, "value", SetCondition::Always).await, SetOutcome::Stored);
    let reads = (0..40).map(|i| {
        let store = f.store.clone();
        let request = if i % 2 == 0 { GetRequest::plain(&shared) } else { GetRequest::leased(&cold, 30) };
        tokio::spawn(async move { store.get_many(&[request]).await.remove(0).expect("read succeeds") })
    });
    let outcomes: Vec<GetOutcome> =
        futures_util::future::join_all(reads).await.into_iter().map(|o| o.expect("task")).collect();
    let mut winners = 0;
    for (i, outcome) in outcomes.into_iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(hit(outcome).value.as_ref(), b"value");
        } else {
            match outcome {
                GetOutcome::Miss { lease: Lease::Won { .. } } => winners += 1,
                GetOutcome::Miss { lease: Lease::Busy } => {}
                other => panic!("a leased read of a missing key won or waited, got {other:?}"),
            }
        }
    }
    assert_eq!(winners, 1, "exactly one caller wins the fill lease");
}

async fn miss_set_and_hit(f: Fixture) {
    let key = f.key("page");
    assert_eq!(f.get(&key).await, GetOutcome::Miss { lease: Lease::None });
    assert_eq!(f.put(&key, "one", SetCondition::Always).await, SetOutcome::Stored);
    let first = hit(f.get(&key).await);
    assert_eq!((first.value.as_ref(), first.stale, first.lease), (&b"one"[..], false, Lease::None));
    assert_eq!(f.put(&key, "two", SetCondition::Always).await, SetOutcome::Stored);
    let second = hit(f.get(&key).await);
    assert_eq!(second.value.as_ref(), b"two");
    assert_ne!(second.cas, first.cas, "every write gets a new cas");
    let never = f.key("forever");
    f.store.set(&never, Bytes::from_static(b"kept"), Expiry::Never, SetCondition::Always).await.expect("write");
    assert_eq!(hit(f.get(&never).await).value.as_ref(), b"kept");
}

async fn add_only_stores_when_absent(f: Fixture) {
    let key = f.key("claim");
    assert_eq!(f.put(&key, "first", SetCondition::Add).await, SetOutcome::Stored);
    assert_eq!(f.put(&key, "second", SetCondition::Add).await, SetOutcome::NotStored);
    assert_eq!(hit(f.get(&key).await).value.as_ref(), b"first");
}

async fn cas_writes_only_over_the_same_version(f: Fixture) {
    let key = f.key("versioned");
    assert_eq!(f.put(&key, "v1", SetCondition::Cas(12345)).await, SetOutcome::NotStored, "no item, no cas match");
    f.put(&key, "v1", SetCondition::Always).await;
    let v1 = hit(f.get(&key).await);
    assert_eq!(f.put(&key, "v2", SetCondition::Cas(v1.cas)).await, SetOutcome::Stored);
    assert_eq!(f.put(&key, "v3", SetCondition::Cas(v1.cas)).await, SetOutcome::NotStored, "stale cas");
    assert_eq!(hit(f.get(&key).await).value.as_ref(), b"v2");
}

async fn first_leased_reader_fills_the_others_wait(f: Fixture) {
    let key = f.key("hot");
    let cas = won(match f.leased(&key).await {
        GetOutcome::Miss { lease } => lease,
        other => panic!("expected a miss, got {other:?}"),
    });
    assert_eq!(f.leased(&key).await, GetOutcome::Miss { lease: Lease::Busy });
    assert_eq!(f.get(&key).await, GetOutcome::Miss { lease: Lease::Busy }, "plain readers see the fill too");
    assert_eq!(f.put(&key, "late", SetCondition::Add).await, SetOutcome::NotStored, "the placeholder exists");
    assert_eq!(f.put(&key, "wrong", SetCondition::Cas(cas + 1000)).await, SetOutcome::NotStored);
    assert_eq!(f.put(&key, "filled", SetCondition::Cas(cas)).await, SetOutcome::Stored);
    let filled = hit(f.get(&key).await);
    assert_eq!((filled.value.as_ref(), filled.stale, filled.lease), (&b"filled"[..], false, Lease::None));
    assert_eq!(hit(f.leased(&key).await).lease, Lease::None, "a leased read of a fresh hit takes no lease");
}

async fn a_released_placeholder_can_be_leased_again(f: Fixture) {
    let key = f.key("released");
    let GetOutcome::Miss { lease } = f.leased(&key).await else { panic!("expected a miss") };
    let cas = won(lease);
    assert!(!f.store.delete(&key, DeleteMode::IfCas { cas: cas + 1000 }).await.expect("delete"), "wrong cas");
    assert!(f.store.delete(&key, DeleteMode::IfCas { cas }).await.expect("delete"));
    let GetOutcome::Miss { lease } = f.leased(&key).await else { panic!("expected a miss") };
    won(lease);
}

async fn soft_delete_serves_stale_and_elects_one_refresher(f: Fixture) {
    let key = f.key("article");
    assert!(!f.store.delete(&key, DeleteMode::Stale { grace: Duration::from_secs(30) }).await.expect("delete"));
    f.put(&key, "old", SetCondition::Always).await;
    assert!(f.store.delete(&key, DeleteMode::Stale { grace: Duration::from_secs(30) }).await.expect("delete"));
    let plain = hit(f.get(&key).await);
    assert_eq!((plain.value.as_ref(), plain.stale, plain.lease), (&b"old"[..], true, Lease::None));
    let refresher = hit(f.leased(&key).await);
    assert!(refresher.stale);
    let cas = won(refresher.lease);
    let other = hit(f.leased(&key).await);
    assert_eq!((other.value.as_ref(), other.stale, other.lease), (&b"old"[..], true, Lease::Busy));
    assert_eq!(hit(f.get(&key).await).lease, Lease::Busy, "plain readers learn someone is refreshing");
    assert_eq!(f.put(&key, "racer", SetCondition::Add).await, SetOutcome::NotStored, "the stale item exists");
    assert_eq!(f.put(&key, "new", SetCondition::Cas(cas)).await, SetOutcome::Stored);
    let fresh = hit(f.get(&key).await);
    assert_eq!((fresh.value.as_ref(), fresh.stale, fresh.lease), (&b"new"[..], false, Lease::None));
}

async fn hard_delete_removes(f: Fixture) {
    let key = f.key("gone");
    f.put(&key, "value", SetCondition::Always).await;
    assert!(f.store.delete(&key, DeleteMode::Hard).await.expect("delete"));
    assert_eq!(f.get(&key).await, GetOutcome::Miss { lease: Lease::None });
    assert!(!f.store.delete(&key, DeleteMode::Hard).await.expect("delete"));
}

async fn items_expire(f: Fixture) {
    let short = f.key("short");
    let soft = f.key("soft");
    f.store.set(&short, Bytes::from_static(b"x"), Expiry::Secs(1), SetCondition::Always).await.expect("write");
    f.put(&soft, "x", SetCondition::Always).await;
    f.store.delete(&soft, DeleteMode::Stale { grace: Duration::from_secs(1) }).await.expect("delete");
    assert!(matches!(f.get(&short).await, GetOutcome::Hit(_)));
    // memcached counts whole seconds; two are enough for a one-second item (instant under paused time).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(f.get(&short).await, GetOutcome::Miss { lease: Lease::None });
    assert_eq!(f.get(&soft).await, GetOutcome::Miss { lease: Lease::None }, "the grace period ends");
}

async fn oversized_values_are_refused_without_storing(f: Fixture) {
    let key = f.key("big");
    let limit = f.store.max_item_bytes();
    let result = f.store.set(&key, Bytes::from(vec![b'x'; limit + 1]), Expiry::Secs(60), SetCondition::Always).await;
    match result {
        Err(StoreError::TooLarge { key: reported, size, limit: reported_limit }) => {
            assert_eq!((reported, size, reported_limit), (key.clone(), limit + 1, limit));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(f.get(&key).await, GetOutcome::Miss { lease: Lease::None });
    let fits = Bytes::from(vec![b'y'; 64 * 1024]);
    f.store.set(&key, fits.clone(), Expiry::Secs(60), SetCondition::Always).await.expect("a 64 KiB value fits");
    assert_eq!(hit(f.get(&key).await).value, fits);
}

async fn empty_values_are_refused(f: Fixture) {
    let key = f.key("empty");
    let result = f.store.set(&key, Bytes::new(), Expiry::Secs(60), SetCondition::Always).await;
    assert!(matches!(result, Err(StoreError::Server { .. })), "{result:?}");
    assert_eq!(f.get(&key).await, GetOutcome::Miss { lease: Lease::None });
}

async fn get_many_answers_in_request_order(f: Fixture) {
    let keys: Vec<String> = (0..8).map(|n| f.key(&format!("k{n}"))).collect();
    for (n, key) in keys.iter().enumerate().filter(|(n, _)| n % 2 == 0) {
        let value = Bytes::from(format!("v{n}"));
        f.store.set(key, value, Expiry::Secs(60), SetCondition::Always).await.expect("write");
    }
    let mut requests: Vec<GetRequest> = keys.iter().map(GetRequest::plain).collect();
    requests[3] = GetRequest::leased(&keys[3], 30);
    requests.push(GetRequest::plain(&keys[0]));
    let results = f.store.get_many(&requests).await;
    assert_eq!(results.len(), requests.len());
    for (n, result) in results.into_iter().enumerate() {
        let result = result.expect("read succeeds");
        match n {
            8 => assert_eq!(hit(result).value.as_ref(), b"v0"),
            3 => assert!(matches!(result, GetOutcome::Miss { lease: Lease::Won { .. } }), "{result:?}"),
            _ if n % 2 == 0 => assert_eq!(hit(result).value, Bytes::from(format!("v{n}"))),
            _ => assert_eq!(result, GetOutcome::Miss { lease: Lease::None }),
        }
    }
    assert!(f.store.get_many(&[]).await.is_empty());
}

async fn a_bad_key_fails_alone(f: Fixture) {
    let good = f.key("good");
    f.put(&good, "ok", SetCondition::Always).await;
    let results = f.store.get_many(&[GetRequest::plain("has space"), GetRequest::plain(&good)]).await;
    assert!(matches!(results[0], Err(StoreError::Server { .. })), "{:?}", results[0]);
    assert!(matches!(results[1], Ok(GetOutcome::Hit(_))), "{:?}", results[1]);
    assert!(
        f.store.set(&"k".repeat(251), Bytes::from_static(b"x"), Expiry::Never, SetCondition::Always).await.is_err()
    );
    assert!(f.store.health().iter().all(|health| health.up), "a bad key says nothing about the server");
}

async fn stats_and_health_report_the_server(f: Fixture) {
    let key = f.key("counted");
    f.put(&key, "x", SetCondition::Always).await;
    f.get(&key).await;
    f.get(&f.key("absent")).await;
    let stats = f.store.stats().await;
    assert_eq!(stats.len(), 1);
    let stats = &stats[0];
    assert_eq!(stats.server, f.store.server_of(&key));
    assert!(stats.reachable && stats.error.is_none(), "{stats:?}");
    assert!(stats.version.is_some());
    assert!(stats.items >= Some(1) && stats.bytes > Some(0) && stats.limit_bytes > Some(0), "{stats:?}");
    assert!(stats.get_hits >= Some(1) && stats.get_misses >= Some(1) && stats.cmd_get >= Some(2), "{stats:?}");
    assert_eq!(stats.evictions, Some(0));
    let health = f.store.health();
    assert_eq!(health.len(), 1);
    assert!(health[0].up && health[0].last_error.is_none(), "{health:?}");
}

// ---- Memcached only: several servers, failing servers, the server's own item limit.

/// Keys of `store`, at least two per server, in server order.
fn keys_per_server(store: &MemcachedStore, prefix: &str) -> Vec<Vec<String>> {
    let servers = store.servers().to_vec();
    let mut keys: Vec<Vec<String>> = servers.iter().map(|_| Vec::new()).collect();
    for n in 0.. {
        if keys.iter().all(|list| list.len() >= 2) {
            break;
        }
        let key = format!("{prefix}:spread{n}");
        let server = servers.iter().position(|addr| *addr == store.server_of(&key)).expect("a configured server");
        keys[server].push(key);
    }
    keys
}

#[tokio::test]
async fn a_dead_server_fails_only_its_own_keys_until_it_answers_again() {
    let mut servers = [Memcached::start(), Memcached::start(), Memcached::start()];
    let config = MemcachedConfig {
        down_backoff: Duration::from_millis(200),
        ..relaxed_config(servers.iter().map(Memcached::addr).collect())
    };
    let store = MemcachedStore::connect(config).await.expect("connect");
    let keys = keys_per_server(&store, &unique_namespace());
    for key in keys.iter().flatten() {
        store.set(key, Bytes::from_static(b"v"), Expiry::Secs(60), SetCondition::Always).await.expect("write");
    }
    for (server, memcached) in servers.iter().enumerate() {
        assert!(memcached.stats()["curr_items"].parse::<u64>().expect("a number") >= 2, "server {server} holds keys");
    }

    servers[1].stop();
    let requests: Vec<GetRequest> = keys.iter().flatten().map(GetRequest::plain).collect();
    let owners: Vec<usize> =
        keys.iter().enumerate().flat_map(|(server, list)| list.iter().map(move |_| server)).collect();
    let first = store.get_many(&requests).await;
    for (result, &owner) in first.iter().zip(&owners) {
        if owner == 1 {
            assert!(
                matches!(
                    result,
                    Err(StoreError::Server { .. } | StoreError::Timeout { .. } | StoreError::ServerDown { .. })
                ),
                "{result:?}"
            );
        } else {
            assert!(matches!(result, Ok(GetOutcome::Hit(_))), "{result:?}");
        }
    }
    let dead = servers[1].addr();
    // Marked down: its keys now fail at once, without I/O, and are not remapped to the live servers.
    let second = store.get_many(&requests).await;
    for (result, &owner) in second.iter().zip(&owners) {
        if owner == 1 {
            assert!(matches!(result, Err(StoreError::ServerDown { server, .. }) if *server == dead), "{result:?}");
        } else {
            assert!(matches!(result, Ok(GetOutcome::Hit(_))), "{result:?}");
        }
    }
    let write = store.set(&keys[1][0], Bytes::from_static(b"v"), Expiry::Secs(60), SetCondition::Always).await;
    assert!(matches!(write, Err(StoreError::ServerDown { .. })), "{write:?}");
    let health = store.health();
    assert_eq!(health.iter().map(|h| h.up).collect::<Vec<_>>(), [true, false, true]);
    assert!(health[1].last_error.is_some() && health[1].server == dead);
    let stats = store.stats().await;
    assert!(!stats[1].reachable && stats[1].error.is_some(), "{:?}", stats[1]);
    assert!(stats[0].reachable && stats[2].reachable);

    // Back up (empty, as a restarted node is): after the back-off one probe goes through and marks it up.
    servers[1].restart();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let probe = store.get_many(&[GetRequest::plain(&keys[1][0])]).await;
    assert!(matches!(probe[0], Ok(GetOutcome::Miss { .. })), "{:?}", probe[0]);
    assert!(store.health().iter().all(|health| health.up));
}

/// With three servers, an item written near a key lives on that key's server, whatever its own key would pick;
/// reads and deletes through the same placement find it there, and a read by its own key does not.
#[tokio::test]
async fn an_item_placed_near_a_key_lives_on_that_keys_server() {
    let servers = [Memcached::start(), Memcached::start(), Memcached::start()];
    let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
    let store = MemcachedStore::connect(relaxed_config(addrs.clone())).await.expect("connect");
    let mut direct = Vec::new();
    for addr in &addrs {
        direct.push(MemcachedStore::connect(relaxed_config(vec![addr.clone()])).await.expect("connect"));
    }
    let prefix = unique_namespace();
    let value = Bytes::from_static(b"chunk");
    // Pairs whose own servers differ, so the hint is what decides; two per owner server.
    let mut pairs: Vec<(String, String)> = Vec::new();
    for n in 0.. {
        if pairs.len() == 6 {
            break;
        }
        let owner = format!("{prefix}:u:{n}");
        let beside = format!("{prefix}:b:{n}");
        let owner_server = store.server_of(&owner);
        let taken = pairs.iter().filter(|(o, _)| store.server_of(o) == owner_server).count();
        if store.server_of(&beside) != owner_server && taken < 2 {
            pairs.push((owner, beside));
        }
    }
    for (owner, beside) in &pairs {
        let near = Placement::Near(owner);
        let stored = store.set_placed(beside, near, value.clone(), Expiry::Secs(60), SetCondition::Always).await;
        assert_eq!(stored.expect("write"), SetOutcome::Stored);
        let home = addrs.iter().position(|addr| *addr == store.server_of(owner)).expect("a configured server");
        for (server, single) in direct.iter().enumerate() {
            let found = single.get_many(&[GetRequest::plain(beside)]).await.remove(0).expect("read");
            assert_eq!(matches!(found, GetOutcome::Hit(_)), server == home, "{beside} on server {server}: {found:?}");
        }
        let own = store.get_many(&[GetRequest::plain(beside)]).await.remove(0).expect("read");
        assert_eq!(own, GetOutcome::Miss { lease: Lease::None }, "its own key's server never saw it");
    }
    // One batch mixing placements answers each from its own server, in order.
    let requests: Vec<GetRequest> = pairs
        .iter()
        .flat_map(|(owner, beside)| [GetRequest::plain(beside).near(owner), GetRequest::plain(beside)])
        .collect();
    for (n, result) in store.get_many(&requests).await.into_iter().enumerate() {
        let result = result.expect("read");
        if n % 2 == 0 {
            assert_eq!(hit(result).value, value);
        } else {
            assert_eq!(result, GetOutcome::Miss { lease: Lease::None });
        }
    }
    for (owner, beside) in &pairs {
        assert!(store.delete_placed(beside, Placement::Near(owner), DeleteMode::Hard).await.expect("delete"));
        let gone = store.get_many(&[GetRequest::plain(beside).near(owner)]).await.remove(0).expect("read");
        assert_eq!(gone, GetOutcome::Miss { lease: Lease::None });
    }
}

/// A leased read whose caller gave up before the answer came (its deadline passed while the batch waited its
/// turn, or its request was cancelled) must not leave a placeholder that blocks every other caller for the
/// whole lease: the coalescer releases what nobody received.
#[tokio::test]
async fn a_lease_won_by_a_reader_that_gave_up_is_released() {
    use futures_util::FutureExt;
    let server = Memcached::start();
    let store = MemcachedStore::connect(relaxed_config(vec![server.addr()])).await.expect("connect");
    let key = format!("{}:abandoned", unique_namespace());
    let requests = [GetRequest::leased(&key, 30)];
    // Polled once: the read is queued for the server, then the caller goes away.
    assert!(store.get_many(&requests).now_or_never().is_none(), "the read is in flight");
    // A hang guard, not a performance assertion: the placeholder would block for 30 s without the release.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match store.get_many(&requests).await.remove(0).expect("read") {
            GetOutcome::Miss { lease: Lease::Won { .. } } => break,
            GetOutcome::Miss { lease: Lease::Busy } if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("the abandoned placeholder was not released: {other:?}"),
        }
    }
    // The same for the refresh token of a soft-deleted item: handed back, the next leased reader wins it.
    let soft = format!("{}:soft", unique_namespace());
    store.set(&soft, Bytes::from_static(b"old"), Expiry::Secs(300), SetCondition::Always).await.expect("write");
    store.delete(&soft, DeleteMode::Stale { grace: Duration::from_secs(60) }).await.expect("soft delete");
    let requests = [GetRequest::leased(&soft, 30)];
    assert!(store.get_many(&requests).now_or_never().is_none(), "the read is in flight");
    loop {
        match store.get_many(&requests).await.remove(0).expect("read") {
            GetOutcome::Hit(Item { stale: true, lease: Lease::Won { .. }, .. }) => break,
            GetOutcome::Hit(Item { stale: true, lease: Lease::Busy, .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("the abandoned refresh token was not handed back: {other:?}"),
        }
    }
}

/// A counter has one copy per server: `Placement::Server(i)` writes the copy on server `i` (configuration order),
/// `GetRequest::on_server(i)` reads it back, and each copy is independent of the others.
#[tokio::test]
async fn an_item_pinned_to_a_server_has_one_copy_per_server() {
    let servers = [Memcached::start(), Memcached::start(), Memcached::start()];
    let addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
    let store = MemcachedStore::connect(relaxed_config(addrs.clone())).await.expect("connect");
    assert_eq!(store.server_count(), 3);
    let key = format!("{}:g:all", unique_namespace());
    for (index, addr) in addrs.iter().enumerate() {
        assert_eq!(store.server_name(index), *addr);
        let value = Bytes::from(format!("copy {index}"));
        let stored = store.set_placed(&key, Placement::Server(index), value, Expiry::Secs(60), SetCondition::Always);
        assert_eq!(stored.await.expect("write"), SetOutcome::Stored);
    }
    for (index, addr) in addrs.iter().enumerate() {
        let single = MemcachedStore::connect(relaxed_config(vec![addr.clone()])).await.expect("connect");
        let found = single.get_many(&[GetRequest::plain(&key)]).await.remove(0).expect("read");
        assert_eq!(hit(found).value, Bytes::from(format!("copy {index}")), "server {index} holds its own copy");
        let pinned = store.get_many(&[GetRequest::plain(&key).on_server(index)]).await.remove(0).expect("read");
        assert_eq!(hit(pinned).value, Bytes::from(format!("copy {index}")));
    }
    // Read beside a head: the copy on that head's server.
    let head = format!("{key}:u:1");
    let home = addrs.iter().position(|addr| *addr == store.server_of(&head)).expect("a configured server");
    let near = store.get_many(&[GetRequest::plain(&key).near(&head)]).await.remove(0).expect("read");
    assert_eq!(hit(near).value, Bytes::from(format!("copy {home}")));
    assert!(store.delete_placed(&key, Placement::Server(home), DeleteMode::Hard).await.expect("delete"));
    let gone = store.get_many(&[GetRequest::plain(&key).on_server(home)]).await.remove(0).expect("read");
    assert_eq!(gone, GetOutcome::Miss { lease: Lease::None });
}

#[tokio::test]
async fn a_silent_server_times_out_instead_of_hanging() {
    let silent = SilentServer::start();
    let config = MemcachedConfig {
        servers: vec![silent.addr()],
        connect_timeout: Duration::from_millis(200),
        io_timeout: Duration::from_millis(200),
        ..MemcachedConfig::default()
    };
    let store = MemcachedStore::connect(config).await.expect("connect");
    // A hang guard, not a performance assertion: the test must end even if the store waited forever.
    let guard = Duration::from_secs(10);
    let read = tokio::time::timeout(guard, store.get_many(&[GetRequest::plain("k")])).await.expect("no hang");
    assert!(
        matches!(read[0], Err(StoreError::Timeout { ref server, .. }) if *server == silent.addr()),
        "{:?}",
        read[0]
    );
    let write =
        tokio::time::timeout(guard, store.set("k", Bytes::from_static(b"v"), Expiry::Never, SetCondition::Always))
            .await
            .expect("no hang");
    assert!(matches!(write, Err(StoreError::ServerDown { .. })), "{write:?}");
    assert!(!store.health()[0].up);
}

#[tokio::test]
async fn values_over_the_servers_own_limit_are_too_large() {
    let server = Memcached::start(); // memcached's default -I 1m
    let config = MemcachedConfig { max_item_bytes: Some(4 << 20), ..relaxed_config(vec![server.addr()]) };
    let store = MemcachedStore::connect(config).await.expect("connect");
    assert!(store.max_item_bytes() < 1 << 20, "the server's limit, not the configured bound");
    let key = format!("{}:big", unique_namespace());
    let result = store.set(&key, Bytes::from(vec![b'x'; 2 << 20]), Expiry::Secs(60), SetCondition::Always).await;
    assert!(matches!(result, Err(StoreError::TooLarge { .. })), "{result:?}");
    assert_eq!(
        store.set(&key, Bytes::from_static(b"small"), Expiry::Secs(60), SetCondition::Always).await.ok(),
        Some(SetOutcome::Stored)
    );
    assert!(store.health()[0].up, "a refused item says nothing about the server");
}

/// The item limit is read from each server (`stats settings`: `item_size_max`), less headroom for the key and
/// the item header: a value of exactly that size is stored under the longest key memcached allows, one byte
/// more is refused before any I/O. Several servers: the smallest limit, so a value fits wherever it lives.
#[tokio::test]
async fn the_item_limit_is_read_from_each_server() {
    for (flags, item_size_max) in [(&[][..], 1usize << 20), (&["-I", "2m"][..], 2 << 20)] {
        let server = Memcached::start_with(flags);
        let store = MemcachedStore::connect(relaxed_config(vec![server.addr()])).await.expect("connect");
        let limit = store.max_item_bytes();
        assert!(limit < item_size_max && limit + 1024 > item_size_max, "{flags:?}: {limit}");
        let prefix = unique_namespace();
        let key = format!("{prefix}:{}", "k".repeat(249 - prefix.len()));
        let value = Bytes::from(vec![b'x'; limit]);
        let stored = store.set(&key, value.clone(), Expiry::Secs(60), SetCondition::Always).await;
        assert_eq!(stored.ok(), Some(SetOutcome::Stored), "{flags:?}: a value at the limit fits");
        assert_eq!(hit(store.get_many(&[GetRequest::plain(&key)]).await.remove(0).expect("read")).value, value);
        let over = store.set(&key, Bytes::from(vec![b'x'; limit + 1]), Expiry::Secs(60), SetCondition::Always).await;
        assert!(matches!(over, Err(StoreError::TooLarge { .. })), "{flags:?}: {over:?}");
    }
    let (small, large) = (Memcached::start(), Memcached::start_with(&["-I", "2m"]));
    let store = MemcachedStore::connect(relaxed_config(vec![small.addr(), large.addr()])).await.expect("connect");
    assert!(store.max_item_bytes() < 1 << 20, "the smallest of the servers' limits");
}

/// Admission reads each server's memory (`stats settings`: `maxbytes`, memcached's `-m`) and reports the
/// smallest, where an object (all of whose items share a server) may have to fit.
#[tokio::test]
async fn the_memory_of_the_smallest_server_is_read() {
    let (small, large) = (Memcached::start_with(&["-m", "16"]), Memcached::start_with(&["-m", "32"]));
    let store = MemcachedStore::connect(relaxed_config(vec![large.addr()])).await.expect("connect");
    assert_eq!(store.memory_bytes(), Some(32 << 20));
    let store = MemcachedStore::connect(relaxed_config(vec![small.addr(), large.addr()])).await.expect("connect");
    assert_eq!(store.memory_bytes(), Some(16 << 20));
    assert_eq!(MemoryStore::new(8 << 20).memory_bytes(), Some(8 << 20), "the embedded store's byte bound");
}

// ---- Embedded store only.

#[tokio::test(start_paused = true)]
async fn the_embedded_store_stays_within_its_byte_bound() {
    let bound: u64 = 256 * 1024;
    let store = MemoryStore::new(bound);
    let prefix = unique_namespace();
    let value = Bytes::from(vec![b'v'; 1024]);
    let count = 10 * bound / 1024;
    for n in 0..count {
        let key = format!("{prefix}:{n}");
        store.set(&key, value.clone(), Expiry::Never, SetCondition::Always).await.expect("write");
        let stats = &store.stats().await[0];
        assert!(stats.bytes <= Some(bound), "{stats:?}");
    }
    let stats = &store.stats().await[0];
    assert!(stats.evictions > Some(0) && stats.items < Some(count), "{stats:?}");
    assert_eq!(stats.limit_bytes, Some(bound));
    let newest = format!("{prefix}:{}", count - 1);
    assert!(matches!(store.get_many(&[GetRequest::plain(newest)]).await[0], Ok(GetOutcome::Hit(_))));
    assert_eq!(store.server_of("any"), "embedded");
    assert!(!store.is_remote());
}
