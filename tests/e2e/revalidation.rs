//! What a revalidation's answer does to the stored response: a 304 updates the header fields every later answer
//! replays (RFC 9111 section 4.3.4), is judged as the 200 it stands for (no-store, new tags), and a HEAD answer
//! updates the stored GET response or marks it stale (RFC 9111 section 4.3.5). Two replicas, one Memcached: what
//! one stores after a 304, the other replays.

use etagd_testkit::Memcached;

use crate::support::{Fleet, Origin, Reply, Route, guard, shutdown_all};

fn lines(reply: &Reply, name: &str) -> Vec<String> {
    reply.headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

/// A route stored already stale (max-age=0), so the next request revalidates it without any waiting.
fn stale_first(etag: &str) -> Route {
    Route::new()
        .revalidates()
        .header("etag", etag)
        .header("cache-control", "max-age=0")
        .header("x-test-header", "old")
        .header("x-multi", "1")
        .header("x-multi", "2")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_replaces_the_stored_fields_that_later_answers_replay() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/r", stale_first("\"r1\""));
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;
        let first = a.get_ok("/r").await;
        assert!(first.cache_status().contains("stored"), "{}", first.cache_status());

        // RFC 9111 section 4.3.4: every field the 304 carries replaces all stored lines of that name, a
        // multi-line field kept whole; fields it does not carry stay.
        origin.route(
            "/r",
            Route::new()
                .revalidates()
                .header("etag", "\"r1\"")
                .header("cache-control", "max-age=3600")
                .header("x-test-header", "new")
                .header("x-multi", "3")
                .header("x-multi", "4")
                .header("content-foo", "bar"),
        );
        let revalidated = b.get_ok("/r").await;
        assert_eq!(origin.count("/r"), 2, "one conditional request");
        assert_eq!(origin.last_headers("/r")["if-none-match"], "\"r1\"");
        assert_eq!(revalidated.header("cache-control"), "max-age=3600", "{:?}", revalidated.headers);
        assert_eq!(revalidated.header("x-test-header"), "new");

        for replica in [&a, &b] {
            let hit = replica.get_ok("/r").await;
            assert!(hit.is_fresh_hit(), "fresh for an hour now: {}", hit.cache_status());
            assert_eq!(hit.text(), "/r v1", "the stored body stands");
            assert_eq!(hit.header("content-length"), "5", "RFC 9111 section 3.2: never updated by a 304");
            assert_eq!(hit.header("cache-control"), "max-age=3600");
            assert_eq!(hit.header("x-test-header"), "new");
            assert_eq!(lines(&hit, "x-multi"), ["3", "4"]);
            assert_eq!(hit.header("content-foo"), "bar");
            assert_eq!(hit.etag(), "\"r1\"");
            // RFC 9110 section 15.4.5: the 304 to a client repeats the updated Cache-Control.
            let not_modified = replica.get("/r", &[("if-none-match", "\"r1\"")]).await;
            assert_eq!(not_modified.status, 304);
            assert_eq!(not_modified.header("cache-control"), "max-age=3600");
        }
        assert_eq!(origin.count("/r"), 2, "every later answer came from storage");
        shutdown_all([a, b]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_with_no_store_is_handled_as_a_200_with_it() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/n", stale_first("\"n1\""));
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;
        a.get_ok("/n").await;
        origin.route("/n", Route::new().revalidates().header("etag", "\"n1\"").header("cache-control", "no-store"));
        let answered = a.get_ok("/n").await;
        assert_eq!(answered.text(), "/n v1", "the 304 confirmed the stored body");
        assert_eq!(answered.header("cache-control"), "no-store");
        assert!(answered.cache_status().contains("no-store"), "{}", answered.cache_status());
        // RFC 9111 section 3: the response may no longer be stored, so nothing answers from storage.
        for (replica, calls) in [(&b, 3), (&a, 4)] {
            let reply = replica.get_ok("/n").await;
            assert!(!reply.is_hit(), "{}", reply.cache_status());
            assert_eq!(origin.count("/n"), calls);
        }
        shutdown_all([a, b]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_with_new_surrogate_keys_files_the_entry_under_them() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/t", stale_first("\"t1\"").header("surrogate-key", "before"));
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;
        a.get_ok("/t").await;
        origin.route(
            "/t",
            Route::new()
                .revalidates()
                .header("etag", "\"t1\"")
                .header("cache-control", "max-age=3600")
                .header("surrogate-key", "after"),
        );
        a.get_ok("/t").await;
        assert_eq!(origin.count("/t"), 2);
        assert!(b.get_ok("/t").await.is_fresh_hit());
        // The tags are those of the latest answer, as for a 200.
        b.invalidate(r#"{"tags": ["before"]}"#).await;
        assert!(a.get_ok("/t").await.is_fresh_hit(), "no longer filed under the old tag");
        b.invalidate(r#"{"tags": ["after"]}"#).await;
        let after = a.get_ok("/t").await;
        assert!(!after.is_hit(), "filed under the 304's tag: {}", after.cache_status());
        assert_eq!(origin.count("/t"), 3);
        shutdown_all([a, b]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_answer_updates_the_stored_get_or_marks_it_stale() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;

        // RFC 9111 section 4.3.5: same validator and length, so the HEAD's fields update the stored GET.
        origin.route("/h", Route::new().header("etag", "\"h1\"").header("cache-control", "max-age=0"));
        a.get_ok("/h").await;
        origin.route(
            "/h",
            Route::new().header("etag", "\"h1\"").header("cache-control", "max-age=60").header("x-version", "2"),
        );
        let head = a.request("HEAD", "/h", &[]).await;
        assert_eq!(head.status, 200);
        assert_eq!(origin.count("/h"), 2, "one HEAD to the origin");
        assert_eq!(head.header("x-version"), "2");
        let get = b.get_ok("/h").await;
        assert!(get.is_fresh_hit(), "updated by the HEAD: {}", get.cache_status());
        assert_eq!((get.text().as_str(), get.header("x-version")), ("/h v1", "2"));
        assert_eq!(origin.count("/h"), 2);

        // Another validator: the stored response is stale, and the next GET asks the origin.
        origin.route("/s", Route::new().header("etag", "\"s1\"").header("cache-control", "max-age=0"));
        a.get_ok("/s").await;
        origin.bump_version();
        origin.route("/s", Route::new().header("etag", "\"s2\"").header("cache-control", "max-age=60"));
        let head = b.request("HEAD", "/s", &[]).await;
        assert_eq!((head.status, head.etag().as_str()), (200, "\"s2\""));
        assert!(head.cache_status().contains("detail=marked-stale"), "{}", head.cache_status());
        let get = a.get_ok("/s").await;
        assert_eq!(get.text(), "/s v2");
        assert_eq!(origin.count("/s"), 3, "the GET after the HEAD went to the origin");
        shutdown_all([a, b]).await;
    })
    .await;
}
