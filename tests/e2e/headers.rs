//! Response headers: `Cache-Status` on every response (RFC 9211), `Age` on stored ones (RFC 9111 section 5.1),
//! etagd's own input headers never forwarded, hop-by-hop fields removed both ways (RFC 9110 section 7.6.1).
//!
//! `Replica::request` checks the per-response invariants on every reply of every test; these tests walk each
//! kind of answer through it on purpose.

use etagd_testkit::Memcached;

use crate::support::{Fleet, Origin, Route, guard, shutdown_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_answer_carries_cache_status_and_stored_ones_age() {
    guard(async {
        let memcached = Memcached::start();
        let mut origin = Origin::start().await;
        origin.route(
            "/tagged",
            Route::cacheable().header("surrogate-key", "one two").header("etagd-invalidate", "unrelated"),
        );
        origin.route("/private", Route::new().header("cache-control", "private"));
        origin.route("/missing", Route::new().status(404));
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;

        let miss = a.get_ok("/tagged").await;
        assert!(miss.cache_status().contains("stored"), "{}", miss.cache_status());
        assert!(!miss.headers.contains_key("age"), "the origin made this answer: no Age (RFC 9111 section 5.1)");
        let hit = b.get_ok("/tagged").await;
        assert!(hit.is_fresh_hit());
        assert!(hit.header("age").parse::<u64>().is_ok(), "Age is a number: {:?}", hit.headers);

        let not_modified = b.get("/tagged", &[("if-none-match", &miss.etag())]).await;
        assert_eq!(not_modified.status, 304);
        assert!(not_modified.headers.contains_key("age"));

        for _ in 0..2 {
            let reply = a.get_ok("/private").await;
            assert!(!reply.is_hit());
            assert!(!reply.headers.contains_key("age"), "not stored, no Age: {:?}", reply.headers);
        }
        assert_eq!(a.get("/missing", &[]).await.status, 404);
        assert_eq!(a.request("POST", "/form", &[]).await.status, 200);
        assert_eq!(a.request("DELETE", "/tagged", &[]).await.status, 200);

        origin.stop().await;
        let down = b.get("/nowhere", &[]).await;
        assert_eq!(down.status, 502, "the origin is gone: {}", down.text());
        shutdown_all([a, b]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_are_removed_both_ways() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        // `X-Hop` is hop-by-hop only because `Connection` names it.
        origin.route(
            "/hop",
            Route::cacheable()
                .header("connection", "x-hop")
                .header("x-hop", "secret")
                .header("keep-alive", "timeout=5")
                .header("proxy-connection", "keep-alive")
                .header("proxy-authenticate", "Basic")
                .header("x-end-to-end", "kept"),
        );
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;

        let request_headers = [
            ("connection", "x-client-hop"),
            ("x-client-hop", "1"),
            ("proxy-authorization", "Basic eDp5"),
            ("te", "trailers"),
            ("x-client-end-to-end", "1"),
        ];
        let miss = a.get("/hop", &request_headers).await;
        let hit = b.get("/hop", &request_headers).await;
        assert!(hit.is_fresh_hit());
        for reply in [&miss, &hit] {
            assert_eq!(reply.status, 200);
            assert_eq!(reply.header("x-end-to-end"), "kept", "end-to-end fields pass");
            assert!(!reply.header("connection").contains("x-hop"), "{:?}", reply.headers);
        }
        let seen = origin.last_headers("/hop");
        for name in ["x-client-hop", "proxy-authorization", "te"] {
            assert!(!seen.contains_key(name), "{name} reached the origin: {seen:?}");
        }
        assert!(
            !seen.get_all("connection").iter().any(|v| v.to_str().unwrap_or("").contains("x-client-hop")),
            "{seen:?}"
        );
        assert_eq!(seen.get("x-client-end-to-end").map(|v| v.as_bytes()), Some(&b"1"[..]));
        assert_eq!(origin.count("/hop"), 1);
        shutdown_all([a, b]).await;
    })
    .await;
}

/// Issue 14, RFC 9112 section 6.3: a GET with a body reaches the origin with its body (so the origin connection
/// stays in step), is answered promptly and is not cached; later requests on the same pooled connections work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_with_a_body_keeps_the_origin_connection_in_step() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/search", Route::cacheable());
        origin.route("/after", Route::cacheable());
        let fleet = Fleet::new(&origin, &[&memcached]);
        let replica = fleet.replica(&[]).await;
        for _ in 0..3 {
            let searched = replica.request_with_body("GET", "/search", "0123456789").await;
            assert_eq!(searched.status, 200);
            assert!(searched.cache_status().contains("detail=request-body"), "{}", searched.cache_status());
            assert_eq!(origin.last_headers("/search")["content-length"], "10");
        }
        for _ in 0..3 {
            assert_eq!(replica.get_ok("/after").await.status, 200);
        }
        assert_eq!(origin.count("/search"), 3, "never answered from the cache");
        replica.shutdown().await;
    })
    .await;
}

/// Issue 14, RFC 7239 section 8.3: an origin that renders links from `X-Forwarded-Host` (as every framework can)
/// cannot be made to store a page linking to a client's host under the shared key. From a trusted proxy the
/// forwarded host is believed, and keyed, so its page never reaches requests for the real host either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_host_cannot_poison_the_shared_page() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route(
            "/links",
            Route::cacheable().body(|ask| {
                let host = ask.headers.get("x-forwarded-host").and_then(|v| v.to_str().ok()).unwrap_or("?");
                format!("<a href=\"https://{host}/next\">").into()
            }),
        );
        let fleet = Fleet::new(&origin, &[&memcached]);
        let untrusting = fleet.replica(&[]).await;
        let attack = untrusting.get("/links", &[("x-forwarded-host", "evil.example")]).await;
        assert_eq!(attack.text(), "<a href=\"https://app.test/next\">", "the client's header never reached the app");
        let victim = untrusting.get("/links", &[]).await;
        assert!(victim.is_fresh_hit());
        assert_eq!(victim.text(), "<a href=\"https://app.test/next\">");
        untrusting.shutdown().await;

        // The test client connects from 127.0.0.1: as a trusted proxy, its forwarded host is a resource of its own.
        let fleet = Fleet::new(&origin, &[&memcached]);
        let trusting = fleet.replica(&["--trusted-proxies", "127.0.0.1"]).await;
        let proxied = trusting.get("/links", &[("x-forwarded-host", "shop.example")]).await;
        assert_eq!(proxied.text(), "<a href=\"https://shop.example/next\">");
        let direct = trusting.get("/links", &[]).await;
        assert_eq!(direct.text(), "<a href=\"https://app.test/next\">", "another host, another entry");
        trusting.shutdown().await;
    })
    .await;
}
