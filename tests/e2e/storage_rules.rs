//! What a shared cache must not store is not stored (RFC 9111 section 3), what it may store is, and a body too
//! big to store still reaches the client whole.

use etagd_testkit::Memcached;

use crate::support::{Fleet, Origin, Replica, Route, guard, shutdown_all};

/// One storage case: the origin's headers, the client's request headers, and whether the answer may be shared.
struct Case {
    path: &'static str,
    response: &'static [(&'static str, &'static str)],
    request: &'static [(&'static str, &'static str)],
    stored: bool,
}

const CASES: &[Case] = &[
    Case { path: "/plain", response: &[("cache-control", "max-age=60")], request: &[], stored: true },
    Case { path: "/no-store", response: &[("cache-control", "no-store")], request: &[], stored: false },
    Case {
        path: "/no-store-with-max-age",
        response: &[("cache-control", "max-age=60, no-store")],
        request: &[],
        stored: false,
    },
    Case { path: "/private", response: &[("cache-control", "private, max-age=60")], request: &[], stored: false },
    Case {
        path: "/cookie",
        response: &[("cache-control", "max-age=60"), ("set-cookie", "session=abc; HttpOnly")],
        request: &[],
        stored: false,
    },
    Case {
        path: "/authorized",
        response: &[("cache-control", "max-age=60")],
        request: &[("authorization", "Bearer secret")],
        stored: false,
    },
    Case {
        path: "/authorized-public",
        response: &[("cache-control", "public, max-age=60")],
        request: &[("authorization", "Bearer secret")],
        stored: true,
    },
    Case {
        path: "/authorized-s-maxage",
        response: &[("cache-control", "s-maxage=60")],
        request: &[("authorization", "Bearer secret")],
        stored: true,
    },
    // RFC 9111 section 1.2.2: delta-seconds of 2^31 or more are read as 2^31, and such an entry is reused.
    Case { path: "/forever", response: &[("cache-control", "max-age=99999999999")], request: &[], stored: true },
    // RFC 9213 section 2.2: a targeted field replaces Cache-Control for the cache that obeys it.
    Case {
        path: "/cdn-private",
        response: &[("cdn-cache-control", "private"), ("cache-control", "max-age=60")],
        request: &[],
        stored: false,
    },
    Case {
        path: "/cdn-only",
        response: &[("cdn-cache-control", "max-age=60"), ("cache-control", "no-store")],
        request: &[],
        stored: true,
    },
    Case {
        path: "/vary-star",
        response: &[("cache-control", "max-age=60"), ("vary", "*")],
        request: &[],
        stored: false,
    },
];

async fn check(case: &Case, origin: &Origin, a: &Replica, b: &Replica) {
    let mut route = Route::new();
    for (name, value) in case.response {
        route = route.header(name, value);
    }
    origin.route(case.path, route);
    let first = a.get(case.path, case.request).await;
    let second = b.get(case.path, case.request).await;
    let expected_body = format!("{} v1", case.path);
    for reply in [&first, &second] {
        assert_eq!(reply.status, 200, "{}", case.path);
        assert_eq!(reply.text(), expected_body, "{}", case.path);
    }
    if let Some((_, targeted)) = case.response.iter().find(|(name, _)| *name == "cdn-cache-control") {
        assert_eq!(second.header("cdn-cache-control"), *targeted, "passed on downstream unchanged");
    }
    if let Some((_, cookie)) = case.response.iter().find(|(name, _)| *name == "set-cookie") {
        assert_eq!(first.header("set-cookie"), *cookie, "the cookie reaches its client");
    }
    let expected_count = if case.stored { 1 } else { 2 };
    assert_eq!(origin.count(case.path), expected_count, "{}: stored = {}", case.path, case.stored);
    assert_eq!(second.is_hit(), case.stored, "{}: {}", case.path, second.cache_status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_shareable_answers_are_stored() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;
        for case in CASES {
            check(case, &origin, &a, &b).await;
        }
        shutdown_all([a, b]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_to_an_authorized_request_never_reaches_anonymous_clients() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route(
            "/account",
            Route::cacheable().body(|ask| {
                let who = if ask.headers.contains_key("authorization") { "alice" } else { "anonymous" };
                bytes::Bytes::from(who)
            }),
        );
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;
        let private = a.get("/account", &[("authorization", "Bearer alice")]).await;
        assert_eq!(private.text(), "alice");
        for replica in [&a, &b] {
            assert_eq!(replica.get_ok("/account").await.text(), "anonymous");
        }
        shutdown_all([a, b]).await;
    })
    .await;
}

/// A deterministic, non-repeating, non-text body: any corruption or truncation shows.
fn big_body(len: usize) -> bytes::Bytes {
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
