//! Storage limits beyond the RFCs: a body above `--max-body-bytes` still reaches the client whole (bodies above
//! one Memcached item but within it are stored in chunks: `large_bodies`), and a page only a route rule makes
//! cacheable never reaches others from a session. (RFC 9111 section 3's storing rules are
//! table cases in `conformance::storage`.)

use etagd_testkit::Memcached;

use crate::support::{Fleet, Origin, Route, guard, shutdown_all};

/// A deterministic, non-repeating, non-text body: any corruption or truncation shows.
pub(crate) fn big_body(len: usize) -> bytes::Bytes {
    let mut state: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect::<Vec<u8>>()
        .into()
}

/// The configured limit, not the item size, bounds what is stored: 200 000 bytes would fit in chunks, but not
/// under `--max-body-bytes 65536`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_above_the_limit_is_delivered_whole_and_not_stored() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        let body = big_body(200_000);
        let small = big_body(4_000);
        let (whole, chunked) = (body.clone(), body.clone());
        origin.route("/big", Route::cacheable().body(move |_| whole.clone()));
        origin.route("/big-chunked", Route::cacheable().chunked().body(move |_| chunked.clone()));
        let fitting = small.clone();
        origin.route("/small-chunked", Route::cacheable().chunked().body(move |_| fitting.clone()));
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&["--max-body-bytes", "65536"]).await;

        for path in ["/big", "/big-chunked"] {
            for replica in [&a, &b, &a] {
                let reply = replica.get_ok(path).await;
                assert!(!reply.is_hit(), "{path}: {}", reply.cache_status());
                assert_eq!(reply.body.len(), body.len(), "{path}: every byte arrives");
                assert!(reply.body == body, "{path}: the body arrives byte-exact");
            }
            assert_eq!(origin.count(path), 3, "{path} is too big to store");
        }
        // Below the limit a chunked body is stored like any other.
        assert!(a.get_ok("/small-chunked").await.body == small);
        let hit = b.get_ok("/small-chunked").await;
        assert!(hit.is_fresh_hit() && hit.body == small);
        assert_eq!(origin.count("/small-chunked"), 1);
        shutdown_all([a, b]).await;
    })
    .await;
}

/// Issue 14: a page that only a route rule makes cacheable (the app forgot `Vary: Cookie` and `private`),
/// requested with a session cookie, never reaches another client; analytics cookies listed in
/// `ignore_cookies` do not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cookie_page_under_a_route_rule_is_never_served_to_others() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route(
            "/home",
            Route::new().body(|ask| {
                let cookie = ask.headers.get("cookie").and_then(|v| v.to_str().ok()).unwrap_or("");
                let who = cookie.split(';').find_map(|c| c.trim().strip_prefix("sessionid=")).unwrap_or("anonymous");
                format!("hello {who}").into()
            }),
        );
        let config = std::env::temp_dir().join(format!("etagd-cookies-{}.toml", etagd_testkit::unique_namespace()));
        std::fs::write(&config, "ignore_cookies = [\"_ga*\"]\n[[route]]\nprefix = \"/\"\nttl = \"1h\"\n")
            .expect("write");
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&["--config", config.to_str().expect("utf-8 path")]).await;

        let alice = a.get("/home", &[("cookie", "sessionid=alice; _ga=GA1.1")]).await;
        assert_eq!(alice.text(), "hello alice");
        assert!(!alice.cache_status().contains("stored"), "{}", alice.cache_status());
        for replica in [&a, &b] {
            let anonymous = replica.get("/home", &[("cookie", "_ga=GA1.2")]).await;
            assert_eq!(anonymous.text(), "hello anonymous", "alice's page never reaches others");
        }
        assert!(b.get("/home", &[]).await.is_fresh_hit(), "the anonymous page is shared");
        let bob = b.get("/home", &[("cookie", "sessionid=bob")]).await;
        assert_eq!(bob.text(), "hello bob", "a session never gets the shared anonymous page");
        let _ = std::fs::remove_file(&config);
        shutdown_all([a, b]).await;
    })
    .await;
}
