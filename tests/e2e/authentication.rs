//! Issue 14, entry authentication (`--entry-key`, beyond the RFCs): replicas sharing the fleet secret share
//! entries; bytes written into Memcached by anyone without it (a forged body, an unauthenticated head record)
//! are never served: they read as misses and are refilled from the origin.

use bytes::Bytes;
use etagd_client::entry::{HeadRecord, StoredBody};
use etagd_client::key::{Namespace, ResourceKey};
use etagd_client::store::memcached::{MemcachedConfig, MemcachedStore};
use etagd_client::store::{Expiry, GetOutcome, GetRequest, SetCondition, Store};
use etagd_testkit::Memcached;

use crate::support::{Fleet, Origin, Route, guard, shutdown_all, url};

const KEY: [&str; 2] = ["--entry-key", "correct horse battery staple"];

async fn raw_read(store: &MemcachedStore, key: &str) -> Bytes {
    match store.get_many(&[GetRequest::plain(key)]).await.pop().unwrap().unwrap() {
        GetOutcome::Hit(item) => item.value,
        GetOutcome::Miss { .. } => panic!("{key} is stored"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_forged_in_memcached_are_never_served() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/page", Route::cacheable());
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&KEY).await;
        assert_eq!(a.get_ok("/page").await.text(), "/page v1");
        assert!(b.get_ok("/page").await.is_fresh_hit(), "the fleet secret is shared");

        // A writer without the secret replaces the body with its own bytes, in etagd's own format.
        let raw = MemcachedStore::connect(MemcachedConfig { servers: vec![memcached.addr()], ..Default::default() })
            .await
            .unwrap();
        let ns = Namespace::new(fleet.namespace()).unwrap();
        let resource = ResourceKey::from_url(&url("/page")).unwrap();
        let head = raw_read(&raw, &ns.head_key(&resource)).await;
        let HeadRecord::Entry(meta) = HeadRecord::decode(&head[16..]).expect("a MAC, then the record") else {
            panic!("an entry");
        };
        let body_key = ns.body_key(&resource.digest(), meta.fill_id, None);
        let forged = StoredBody::encode(b"<a href=\"https://evil.example/\">");
        raw.set(&body_key, forged, Expiry::Never, SetCondition::Always).await.unwrap();
        origin.bump_version();
        // A replica that has not kept the body in process reads the forged item: a miss, refilled.
        let c = fleet.replica(&KEY).await;
        let served = c.get_ok("/page").await;
        assert_eq!(served.text(), "/page v2", "{}", served.cache_status());

        // The head record without its MAC (as a writer without the secret would store it) is a miss too.
        let head = raw_read(&raw, &ns.head_key(&resource)).await;
        raw.set(&ns.head_key(&resource), head.slice(16..), Expiry::Never, SetCondition::Always).await.unwrap();
        origin.bump_version();
        let served = a.get_ok("/page").await;
        assert_eq!(served.text(), "/page v3", "{}", served.cache_status());
        assert!(b.get_ok("/page").await.is_fresh_hit(), "what etagd stored again is shared");
        shutdown_all([a, b, c]).await;
    })
    .await;
}
