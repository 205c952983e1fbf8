//! `Vary` (RFC 9111 section 4.1): each variant is stored and served on its own, on every replica.

use bytes::Bytes;
use etagd_testkit::Memcached;

use crate::support::{Fleet, Origin, Route, guard, shutdown_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn language_variants_are_kept_apart() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route(
            "/greeting",
            Route::cacheable().header("vary", "Accept-Language").body(|ask| {
                let language = ask.headers.get("accept-language").and_then(|v| v.to_str().ok()).unwrap_or("none");
                match language {
                    "fr" => Bytes::from_static(b"bonjour"),
                    "en" => Bytes::from_static(b"hello"),
                    _ => Bytes::from_static(b"hi"),
                }
            }),
        );
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;

        let en = a.get("/greeting", &[("accept-language", "en")]).await;
        let fr = a.get("/greeting", &[("accept-language", "fr")]).await;
        assert_eq!((en.text().as_str(), fr.text().as_str()), ("hello", "bonjour"));
        assert!(!en.is_hit() && !fr.is_hit());
        assert_ne!(en.etag(), fr.etag(), "each variant has its own validator");
        assert_eq!(origin.count("/greeting"), 2);

        for replica in [&a, &b] {
            for (language, expected) in [("en", &en), ("fr", &fr)] {
                let reply = replica.get("/greeting", &[("accept-language", language)]).await;
                assert_eq!(reply.status, 200);
                assert!(reply.is_fresh_hit(), "{language}: {}", reply.cache_status());
                assert_eq!(reply.body, expected.body, "{language}");
                assert_eq!(reply.etag(), expected.etag(), "{language}");
                assert!(reply.header("vary").eq_ignore_ascii_case("accept-language"));
            }
            // A validator matches only its own variant.
            let cross = replica.get("/greeting", &[("accept-language", "fr"), ("if-none-match", &en.etag())]).await;
            assert_eq!(cross.status, 200, "an en validator does not match the fr variant");
            assert_eq!(cross.text(), "bonjour");
            let own = replica.get("/greeting", &[("accept-language", "fr"), ("if-none-match", &fr.etag())]).await;
            assert_eq!(own.status, 304);
        }
        assert_eq!(origin.count("/greeting"), 2, "every later request was a hit");

        // A third variant is a miss of its own and leaves the others alone.
        let none = b.get_ok("/greeting").await;
        assert_eq!(none.text(), "hi");
        assert_eq!(origin.count("/greeting"), 3);
        assert!(a.get("/greeting", &[("accept-language", "en")]).await.is_fresh_hit());
        shutdown_all([a, b]).await;
    })
    .await;
}
