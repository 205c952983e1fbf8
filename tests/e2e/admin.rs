//! The admin port: Prometheus metrics, entry inspection, request validation and the bearer token.

use etagd_testkit::Memcached;

use crate::support::{Fleet, Origin, Route, guard, shutdown_all, url};

/// The value of one sample line (`name{labels} value`) in Prometheus text, if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_outcome() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/page", Route::cacheable());
        let fleet = Fleet::new(&origin, &[&memcached]);
        let a = fleet.replica(&[]).await;
        a.get_ok("/page").await;
        a.get_ok("/page").await;
        a.get_ok("/page").await;

        let scrape = a.admin("GET", "/metrics", &[], None).await;
        assert_eq!(scrape.status, 200);
        let text = scrape.text();
        assert!(text.contains("# TYPE etagd_requests counter"), "{text}");
        let hits = sample(&text, r#"etagd_requests_total{outcome="hit"}"#);
        let misses = sample(&text, r#"etagd_requests_total{outcome="miss"}"#);
        assert_eq!(hits, Some(2.0), "{text}");
        assert_eq!(misses, Some(1.0), "{text}");
        assert!(text.contains("etagd_fills_stored_total 1"), "{text}");
        shutdown_all([a]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_show_the_stored_etag() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/page", Route::cacheable().header("surrogate-key", "pages"));
        let fleet = Fleet::new(&origin, &[&memcached]);
        let (a, b) = fleet.pair(&[]).await;
        let etag = a.get_ok("/page").await.etag();
        // The fill's answer goes out before its commit lands.
        b.wait_entry_state("/page", "fresh").await;

        let query = format!("/entries?url={}", url("/page"));
        let entry = b.admin("GET", &query, &[], None).await;
        assert_eq!(entry.status, 200, "{}", entry.text());
        let json = entry.json();
        assert_eq!(json["head"], "entry", "{json}");
        assert_eq!(json["entry"]["etag"], etag.as_str(), "{json}");
        assert_eq!(json["entry"]["state"], "fresh", "{json}");
        assert_eq!(json["entry"]["tags"][0], "pages", "{json}");

        let missing = b.admin("GET", &format!("/entries?url={}", url("/never")), &[], None).await;
        assert_eq!(missing.status, 200);
        assert_eq!(missing.json()["head"], "missing");
        let unnamed = b.admin("GET", "/entries", &[], None).await;
        assert_eq!(unnamed.status, 400);
        assert!(unnamed.json()["error"].as_str().is_some_and(|e| !e.is_empty()));
        assert_eq!(origin.count("/page"), 1, "inspection does not fetch");
        shutdown_all([a, b]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_invalidation_requests_get_400_with_a_reason() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/page", Route::cacheable());
        let fleet = Fleet::new(&origin, &[&memcached]);
        let a = fleet.replica(&[]).await;
        a.get_ok("/page").await;

        let cases = [
            r#"{"urls": ["#,
            "not json",
            r#"{"url": "http://app.test/page"}"#,
            r#"{"tags": "one"}"#,
            "{}",
            r#"{"urls": ["not a url"]}"#,
        ];
        for body in cases {
            let reply = a.admin("POST", "/invalidate", &[("content-type", "application/json")], Some(body)).await;
            assert_eq!(reply.status, 400, "{body}: {}", reply.text());
            let reason = reply.json()["error"].as_str().unwrap_or("").to_owned();
            assert!(!reason.is_empty(), "{body}: a 400 says why: {}", reply.text());
        }
        assert!(a.get_ok("/page").await.is_fresh_hit(), "nothing was invalidated");
        shutdown_all([a]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_guards_invalidation_and_entries() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/page", Route::cacheable());
        let fleet = Fleet::new(&origin, &[&memcached]);
        let a = fleet.replica(&["--admin-token", "t"]).await;
        a.get_ok("/page").await;
        let body = Some(r#"{"all": true}"#);
        let json = ("content-type", "application/json");

        let none = a.admin("POST", "/invalidate", &[json], body).await;
        assert_eq!(none.status, 401, "{}", none.text());
        assert!(none.json()["error"].as_str().is_some());
        let wrong = a.admin("POST", "/invalidate", &[json, ("authorization", "Bearer x")], body).await;
        assert_eq!(wrong.status, 401);
        assert!(a.get_ok("/page").await.is_fresh_hit(), "refused invalidations change nothing");
        let entries = a.admin("GET", &format!("/entries?url={}", url("/page")), &[], None).await;
        assert_eq!(entries.status, 401);

        let right = a.admin("POST", "/invalidate", &[json, ("authorization", "Bearer t")], body).await;
        assert_eq!(right.status, 200, "{}", right.text());
        assert!(!a.get_ok("/page").await.is_hit(), "the invalidation applied");
        assert_eq!(origin.count("/page"), 2);
        // Health, readiness and metrics stay open for probes and scrapers.
        for path in ["/healthz", "/readyz", "/metrics"] {
            assert_eq!(a.admin("GET", path, &[], None).await.status, 200, "{path}");
        }
        shutdown_all([a]).await;
    })
    .await;
}
