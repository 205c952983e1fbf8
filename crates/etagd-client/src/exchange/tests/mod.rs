//! The exchange against the embedded store, a hand-moved clock and a scripted upstream (no sockets). The
//! parity suite in `tests/parity.rs` runs the same kind of cases through both fronts.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Response, StatusCode};
use http_body_util::BodyExt;
use parking_lot::Mutex;

use super::*;
use crate::cache::{CacheConfig, Clock};
use crate::store::memory::MemoryStore;

struct TestClock(AtomicU64);

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

type ScriptedAnswer = Result<Response<Body>, String>;

/// An upstream that answers from a script and records what it was sent.
#[derive(Clone, Default)]
struct Scripted {
    answers: Arc<Mutex<VecDeque<ScriptedAnswer>>>,
    seen: Arc<Mutex<Vec<(Method, String, HeaderMap)>>>,
    calls: Arc<AtomicUsize>,
    /// When set, each answer waits for a permit: the test decides when the origin answers.
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl Scripted {
    fn answer(&self, status: u16, lines: &[(&str, &str)], body: &'static str) -> &Self {
        let mut response = Response::new(Body::full(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        for (name, value) in lines {
            response.headers_mut().append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        self.answers.lock().push_back(Ok(response));
        self
    }

    fn fail(&self) -> &Self {
        self.answers.lock().push_back(Err("connection refused".to_owned()));
        self
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn last(&self) -> (Method, String, HeaderMap) {
        self.seen.lock().last().cloned().expect("the upstream was called")
    }
}

impl Upstream<Body> for Scripted {
    type Error = String;

    async fn send(self, request: Request<Body>) -> Result<Response<Body>, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().push((request.method().clone(), request.uri().to_string(), request.headers().clone()));
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("the test never closes the gate").forget();
        }
        self.answers.lock().pop_front().unwrap_or_else(|| Err("no scripted answer left".to_owned()))
    }
}

struct Fixture {
    exchange: Exchange,
    clock: Arc<TestClock>,
    upstream: Scripted,
}

fn fixture(config: ExchangeConfig) -> Fixture {
    fixture_on(Arc::new(MemoryStore::new(16 << 20)), config)
}

fn fixture_on(store: Arc<dyn crate::store::Store>, config: ExchangeConfig) -> Fixture {
    let clock = Arc::new(TestClock(AtomicU64::new(1_800_000_000_000)));
    let cache_config = CacheConfig { clock: clock.clone(), ..CacheConfig::default() };
    let cache = Cache::new(store, cache_config);
    Fixture { exchange: Exchange::new(cache, config), clock, upstream: Scripted::default() }
}

struct Got {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
    report: Report,
}

impl Got {
    fn cache_status(&self) -> &str {
        self.headers.get("cache-status").map_or("", |v| v.to_str().unwrap())
    }
}

impl Fixture {
    async fn send(&self, method: Method, target: &str, lines: &[(&str, &str)], peer: Option<&str>) -> Got {
        let got = self.send_unsettled(method, target, lines, peer).await;
        self.settle().await;
        got
    }

    /// Sends a request and returns its answer without waiting for fills answered before their commit.
    async fn send_unsettled(&self, method: Method, target: &str, lines: &[(&str, &str)], peer: Option<&str>) -> Got {
        let mut request = Request::new(Body::empty());
        *request.method_mut() = method;
        *request.uri_mut() = target.parse().unwrap();
        request.headers_mut().insert("host", "shop.example".parse().unwrap());
        for (name, value) in lines {
            request.headers_mut().append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        let context = self.exchange.context(peer.map(|p| p.parse().unwrap()));
        let exchanged = self.exchange.run(request, context, self.upstream.clone()).await;
        let response = exchanged.response.unwrap_or_else(|_| origin_unavailable());
        let status = response.status().as_u16();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        Got { status, headers: parts.headers, body, report: exchanged.report }
    }

    /// Lets fills answered before their commit (`stream::answer_then_store`) commit before the test moves the
    /// clock. Bounded: a fill the test itself holds up (a gated upstream) is left running.
    async fn settle(&self) {
        for _ in 0..200 {
            if self.exchange.cache().counters().fills_in_flight == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    async fn get(&self, target: &str, lines: &[(&str, &str)]) -> Got {
        self.send(Method::GET, target, lines, None).await
    }

    fn advance(&self, seconds: u64) {
        self.clock.0.fetch_add(seconds * 1000, Ordering::SeqCst);
    }
}

const FRESH: &[(&str, &str)] = &[("cache-control", "max-age=60")];

mod codings;
mod commits;

/// RFC 9111 section 4: a stored fresh response answers without the origin; RFC 9110 section 13.1.2: a matching
/// `If-None-Match` gets a 304.
#[tokio::test]
async fn a_fill_answers_later_requests_and_their_conditionals() {
    let f = fixture(ExchangeConfig::default());
    f.upstream.answer(200, FRESH, "v1");
    let miss = f.get("/a", &[]).await;
    assert_eq!(miss.cache_status(), "etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60");
    assert_eq!(miss.report.outcome, Outcome::Miss(Filled::Stored));
    let etag = miss.headers["etag"].to_str().unwrap().to_owned();
    let hit = f.get("/a", &[]).await;
    assert_eq!((hit.status, hit.body.as_ref(), hit.cache_status()), (200, &b"v1"[..], "etagd; hit; ttl=60"));
    assert!(hit.headers.contains_key("date") && hit.headers.contains_key("age"));
    let conditional = f.get("/a", &[("if-none-match", &etag)]).await;
    assert_eq!((conditional.status, conditional.report.label()), (304, "not_modified"));
    assert_eq!(f.upstream.calls(), 1);
}

/// RFC 9111 section 3.5 governs storing an answer to an `Authorization` request; a refusal it causes must not
/// turn caching off for other clients (the hit-for-pass marker is the response's to write, never the request's).
#[tokio::test]
async fn one_authorized_request_does_not_switch_caching_off() {
    let f = fixture(ExchangeConfig::default());
    f.upstream.answer(200, FRESH, "private view").answer(200, FRESH, "public view");
    let authorized = f.get("/account", &[("authorization", "Bearer x")]).await;
    assert_eq!(authorized.cache_status(), "etagd; fwd=uri-miss; fwd-status=200; detail=authorization");
    let anonymous = f.get("/account", &[]).await;
    assert_eq!(anonymous.cache_status(), "etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60");
    assert_eq!(f.get("/account", &[]).await.body.as_ref(), b"public view");
}

/// RFC 5861 section 4 and section 3: a background refresh that meets an origin 5xx keeps the stale entry, so
/// stale-if-error still serves it.
#[tokio::test]
async fn a_failing_background_refresh_keeps_the_stale_entry() {
    let f = fixture(ExchangeConfig::default());
    f.upstream.answer(200, &[("cache-control", "max-age=1, stale-while-revalidate=60, stale-if-error=600")], "v1");
    f.get("/p", &[]).await;
    f.advance(5);
    f.upstream.answer(503, &[], "down");
    let stale = f.get("/p", &[]).await;
    assert_eq!(stale.report.outcome, Outcome::StaleWhileRevalidate);
    // Let the background refresh run to its end.
    for _ in 0..50 {
        tokio::task::yield_now().await;
        if f.upstream.calls() == 2 {
            break;
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    f.advance(120);
    f.upstream.fail();
    let rescued = f.get("/p", &[]).await;
    assert_eq!((rescued.status, rescued.body.as_ref()), (200, &b"v1"[..]), "{}", rescued.cache_status());
    assert_eq!(rescued.report.outcome, Outcome::StaleIfError);
}

/// RFC 9111 section 4.3.1-4.3.4: a stale entry is revalidated with the origin's own validator, and a 304
/// refreshes it without a new body.
#[tokio::test]
async fn stale_entries_are_revalidated_conditionally() {
    let f = fixture(ExchangeConfig::default());
    f.upstream.answer(200, &[("cache-control", "max-age=1"), ("etag", "\"o1\"")], "v1");
    f.get("/r", &[]).await;
    f.advance(5);
    f.upstream.answer(304, &[("cache-control", "max-age=100")], "");
    let revalidated = f.get("/r", &[]).await;
    assert_eq!(f.upstream.last().2["if-none-match"], "\"o1\"");
    assert_eq!(revalidated.cache_status(), "etagd; fwd=stale; fwd-status=304; stored; ttl=100");
    assert_eq!(revalidated.body.as_ref(), b"v1");
    assert_eq!(f.get("/r", &[]).await.report.outcome, Outcome::Hit);
}

/// RFC 9111 section 4.4: a successful unsafe request invalidates its target and the same-host `Location`, named
/// by the same normaliser as lookups (here through a percent-encoded, dot-segment reference).
#[tokio::test]
async fn unsafe_methods_invalidate_what_lookups_named() {
    let f = fixture(ExchangeConfig::default());
    f.upstream.answer(200, FRESH, "list v1").answer(200, FRESH, "item v1");
    f.get("/api/items", &[]).await;
    f.get("/api/items/%37", &[]).await;
    f.upstream.answer(201, &[("location", "./x/../7")], "");
    let post = f.send(Method::POST, "/api/items/", &[], None).await;
    assert_eq!(post.cache_status(), "etagd; fwd=method; fwd-status=201");
    assert_eq!(post.report.invalidations, [Trigger::UnsafeMethod]);
    f.upstream.answer(200, FRESH, "item v2");
    assert_eq!(f.get("/api/items/7", &[]).await.body.as_ref(), b"item v2");
    assert_eq!(f.get("/api/items", &[]).await.report.outcome, Outcome::Hit, "another URL stays");
}

/// RFC 7239 section 8.3: forwarding headers from an untrusted client never reach the origin, so a page
/// rendered for `evil.example` can never be stored under `shop.example`'s key.
#[tokio::test]
async fn forwarded_host_from_a_client_cannot_poison_the_cache() {
    let f = fixture(ExchangeConfig::default());
    f.upstream.answer(200, FRESH, "page");
    f.send(Method::GET, "/", &[("x-forwarded-host", "evil.example")], Some("192.0.2.9:4000")).await;
    let (_, _, sent) = f.upstream.last();
    assert_eq!(sent["x-forwarded-host"], "shop.example");
    assert_eq!(sent["x-forwarded-for"], "192.0.2.9");

    let trusting = fixture(ExchangeConfig {
        trusted_proxies: TrustedProxies::parse(["192.0.2.0/24"]).unwrap(),
        ..ExchangeConfig::default()
    });
    trusting.upstream.answer(200, FRESH, "for evil").answer(200, FRESH, "for shop");
    let peer = Some("192.0.2.9:4000");
    trusting.send(Method::GET, "/", &[("x-forwarded-host", "evil.example")], peer).await;
    let shop = trusting.send(Method::GET, "/", &[], peer).await;
    assert_eq!(shop.body.as_ref(), b"for shop", "a trusted forwarded host is part of the key");
}

/// RFC 9111 section 3: an unstorable answer marks the resource hit-for-pass; the `Etagd-Invalidate` header of
/// any answer invalidates its tags and never reaches the client.
#[tokio::test]
async fn refusals_and_header_triggers() {
    let route = Route { prefix: "/t".into(), tags: vec!["things".into()], ..Route::default() };
    let f = fixture(ExchangeConfig::default().with_routes(vec![route]));
    f.upstream.answer(200, &[("cache-control", "no-store")], "x").answer(200, &[], "y");
    assert_eq!(f.get("/n", &[]).await.cache_status(), "etagd; fwd=uri-miss; fwd-status=200; detail=no-store");
    let passed = f.get("/n", &[]).await;
    assert_eq!(passed.cache_status(), "etagd; fwd=bypass; fwd-status=200; detail=hit-for-pass-no-store");

    f.upstream.answer(200, FRESH, "things v1");
    f.get("/t/1", &[]).await;
    f.upstream.answer(200, &[("etagd-invalidate", "things")], "done");
    let side_effect = f.send(Method::GET, "/other", &[("if-match", "\"x\"")], None).await;
    assert!(!side_effect.headers.contains_key("etagd-invalidate"));
    assert_eq!(side_effect.report.invalidations, [Trigger::Header]);
    assert_eq!(side_effect.cache_status(), "etagd; fwd=request; fwd-status=200; detail=preconditions");
    f.upstream.answer(200, FRESH, "things v2");
    assert_eq!(f.get("/t/1", &[]).await.body.as_ref(), b"things v2");
}

/// An origin that does not answer is the client's 502 only when nothing stale may stand in.
#[tokio::test]
async fn an_origin_failure_is_reported_once() {
    let f = fixture(ExchangeConfig::default());
    f.upstream.fail();
    let failed = f.get("/down", &[]).await;
    assert_eq!((failed.status, failed.report.label()), (502, "error"));
    assert!(failed.report.origin_error);
    assert_eq!(failed.cache_status(), "etagd; fwd=miss; detail=origin-unavailable");
}

/// Issue 14: a page that only a route rule makes cacheable, requested with a session cookie, is never stored
/// for others, and a stored anonymous copy is not served to a client with a session (as Varnish's built-in
/// policy passes cookie requests); ignored cookies (analytics) change nothing. RFC 9111 section 3 still rules
/// what the origin itself marks fresh.
#[tokio::test]
async fn session_cookies_never_share_route_rule_pages() {
    let route =
        Route { prefix: "/".into(), ttl_s: Some(3600), ignore_cookies: vec!["_ga*".into()], ..Route::default() };
    let f = fixture(ExchangeConfig::default().with_routes(vec![route]));
    f.upstream.answer(200, &[], "hello alice").answer(200, &[], "hello anonymous");
    let alice = f.get("/home", &[("cookie", "sessionid=alice; _ga=1")]).await;
    assert_eq!(alice.cache_status(), "etagd; fwd=uri-miss; fwd-status=200; detail=cookie");
    let anonymous = f.get("/home", &[("cookie", "_ga=2")]).await;
    assert_eq!(anonymous.body.as_ref(), b"hello anonymous");
    assert!(anonymous.cache_status().contains("stored"), "{}", anonymous.cache_status());
    f.upstream.answer(200, &[], "hello bob");
    let bob = f.get("/home", &[("cookie", "sessionid=bob")]).await;
    assert_eq!(
        (bob.body.as_ref(), bob.cache_status()),
        (&b"hello bob"[..], "etagd; fwd=request; fwd-status=200; detail=cookie")
    );
    assert_eq!(f.get("/home", &[]).await.report.outcome, Outcome::Hit);

    // What the origin marks fresh itself is shared as RFC 9111 allows, cookies or not.
    f.upstream.answer(200, FRESH, "catalogue");
    f.get("/catalogue", &[("cookie", "sessionid=alice")]).await;
    assert_eq!(f.get("/catalogue", &[("cookie", "sessionid=bob")]).await.report.outcome, Outcome::Hit);
}

/// RFC 9112 section 6.3: a GET that announces a body is forwarded with it and never cached; a request the
/// exchange sends without the client's body announces none.
#[tokio::test]
async fn announced_bodies_travel_with_their_request_or_not_at_all() {
    let f = fixture(ExchangeConfig::default());
    f.upstream.answer(200, FRESH, "searched");
    let mut request = Request::new(Body::full(Bytes::from_static(b"0123456789")));
    *request.uri_mut() = "/search".parse().unwrap();
    request.headers_mut().insert("host", "shop.example".parse().unwrap());
    request.headers_mut().insert("content-length", "10".parse().unwrap());
    let exchanged = f.exchange.run(request, f.exchange.context(None), f.upstream.clone()).await;
    assert_eq!(exchanged.report.outcome, Outcome::Request(RequestBypass::Body));
    assert_eq!(f.upstream.last().2["content-length"], "10");

    f.upstream.answer(200, FRESH, "page");
    f.get("/page", &[("content-length", "0"), ("expect", "100-continue")]).await;
    let sent = f.upstream.last().2;
    assert!(!sent.contains_key("content-length") && !sent.contains_key("expect"), "{sent:?}");
}

/// Issue 14, origin protection: past the origin cap and its queue, a stale copy stands in where RFC 9111
/// section 4.2.4 allows one, else a 503 with Retry-After (RFC 9110 sections 15.6.4 and 10.2.3).
#[tokio::test]
async fn past_the_origin_cap_stale_stands_in_or_the_client_is_told_to_retry() {
    let limit = OriginLimit { max_concurrency: 1, max_queue: 0, retry_after_s: 2 };
    let mut f = fixture(ExchangeConfig { origin_limit: Some(limit), ..ExchangeConfig::default() });
    f.upstream.answer(200, &[("cache-control", "max-age=1")], "old");
    f.get("/s", &[]).await;
    f.advance(5);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    f.upstream.gate = Some(gate.clone());
    f.upstream.answer(200, FRESH, "slow");
    let exchange = f.exchange.clone();
    let upstream = f.upstream.clone();
    let slow = tokio::spawn(async move {
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = "/slow".parse().unwrap();
        request.headers_mut().insert("host", "shop.example".parse().unwrap());
        exchange.run(request, exchange.context(None), upstream).await.report.outcome
    });
    while f.upstream.calls() < 2 {
        tokio::task::yield_now().await;
    }
    let stale = f.get("/s", &[]).await;
    assert_eq!((stale.body.as_ref(), stale.report.outcome), (&b"old"[..], Outcome::StaleOverloaded));
    let cold = f.get("/cold", &[]).await;
    assert_eq!((cold.status, cold.report.label()), (503, "overloaded"));
    assert_eq!(cold.headers["retry-after"], "2");
    assert_eq!(cold.cache_status(), "etagd; fwd=miss; detail=origin-overloaded");
    gate.add_permits(1);
    assert_eq!(slow.await.unwrap(), Outcome::Miss(Filled::Stored));
}

/// Issue 14, cache-key hygiene: ignored query parameters do not split an entry, the origin still gets the full
/// URL, and an unsafe method's invalidation names the entry the lookups used (RFC 9111 section 4.4).
#[tokio::test]
async fn ignored_query_parameters_do_not_split_entries() {
    let marketing = crate::key::QueryFilter {
        ignore: crate::key::MARKETING_PARAMETERS.iter().map(|p| (*p).to_owned()).collect(),
        keep: None,
    };
    let paged = Route {
        prefix: "/list".into(),
        query: crate::key::QueryFilter { ignore: Vec::new(), keep: Some(vec!["page".into()]) },
        ..Route::default()
    };
    let f = fixture(ExchangeConfig { query: marketing, ..ExchangeConfig::default() }.with_routes(vec![paged]));
    f.upstream.answer(200, FRESH, "p");
    f.get("/p?utm_source=news&x=1", &[]).await;
    assert_eq!(f.upstream.last().1, "/p?utm_source=news&x=1", "the origin gets the full URL");
    assert_eq!(f.get("/p?x=1&gclid=abc", &[]).await.report.outcome, Outcome::Hit);
    f.upstream.answer(200, &[], "");
    f.send(Method::POST, "/p?x=1&utm_campaign=c", &[], None).await;
    f.upstream.answer(200, FRESH, "p2");
    assert_eq!(f.get("/p?x=1", &[]).await.body.as_ref(), b"p2", "the POST invalidated the shared entry");

    f.upstream.answer(200, FRESH, "page 2");
    f.get("/list?page=2&sort=asc", &[]).await;
    assert_eq!(f.get("/list?sort=desc&page=2", &[]).await.report.outcome, Outcome::Hit, "only page names it");
    f.upstream.answer(200, FRESH, "page 3");
    assert_eq!(f.get("/list?page=3", &[]).await.report.outcome, Outcome::Miss(Filled::Stored));
}

/// RFC 9111 section 4.3.2: without a stored Last-Modified, If-Modified-Since is compared with when the stored
/// response was made.
#[tokio::test]
async fn if_modified_since_without_last_modified_uses_the_stored_time() {
    let f = fixture(ExchangeConfig::default());
    f.upstream.answer(200, FRESH, "d");
    f.get("/d", &[]).await;
    let stored_at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(f.clock.0.load(Ordering::SeqCst));
    let later = httpdate::fmt_http_date(stored_at + std::time::Duration::from_secs(10));
    let earlier = httpdate::fmt_http_date(stored_at - std::time::Duration::from_secs(3600));
    assert_eq!(f.get("/d", &[("if-modified-since", &later)]).await.status, 304);
    assert_eq!(f.get("/d", &[("if-modified-since", &earlier)]).await.status, 200);
}

/// RFC 9111 section 4.2.4: disconnected from the origin, a stale entry may stand in for a while even without
/// stale-if-error, unless must-revalidate (or proxy-revalidate, no-cache, s-maxage) forbids it; an origin 5xx is
/// an answer and is passed on.
#[tokio::test]
async fn an_unreachable_origin_is_covered_by_stale_entries_that_allow_it() {
    let f = fixture(ExchangeConfig { stale_if_unreachable_s: 60, ..ExchangeConfig::default() });
    f.upstream.answer(200, &[("cache-control", "max-age=1")], "loose").answer(
        200,
        &[("cache-control", "max-age=1, must-revalidate")],
        "strict",
    );
    f.get("/loose", &[]).await;
    f.get("/strict", &[]).await;
    f.advance(10);
    f.upstream.fail().fail();
    let loose = f.get("/loose", &[]).await;
    assert_eq!((loose.status, loose.report.outcome), (200, Outcome::StaleIfError));
    // RFC 9111 section 5.2.2.2: not reused, and a 504.
    assert_eq!(f.get("/strict", &[]).await.status, 504, "must-revalidate forbids serving it stale");
    f.upstream.answer(503, &[], "down");
    assert_eq!(f.get("/loose", &[]).await.status, 503, "a 5xx is the origin's answer");
    f.advance(120);
    f.upstream.fail();
    assert_eq!(f.get("/loose", &[]).await.status, 502, "past the window");
}

/// RFC 9111 sections 5.2.1.7 and 5.2.1.2: `only-if-cached` never reaches the origin (504 when nothing stored
/// satisfies it); `max-stale` accepts a stale entry unless must-revalidate forbids it.
#[tokio::test]
async fn only_if_cached_and_max_stale_spare_the_origin() {
    let f = fixture(ExchangeConfig::default());
    let cold = f.get("/cold", &[("cache-control", "only-if-cached")]).await;
    assert_eq!((cold.status, cold.cache_status()), (504, "etagd; fwd=request; detail=only-if-cached"));
    assert_eq!(f.upstream.calls(), 0);
    f.upstream.answer(200, &[("cache-control", "max-age=1")], "v1").answer(
        200,
        &[("cache-control", "max-age=1, must-revalidate")],
        "strict",
    );
    f.get("/s", &[]).await;
    f.get("/strict", &[]).await;
    assert_eq!(f.get("/s", &[("cache-control", "only-if-cached")]).await.status, 200);
    f.advance(30);
    let accepted = f.get("/s", &[("cache-control", "max-stale=60")]).await;
    assert_eq!((accepted.body.as_ref(), accepted.report.outcome), (&b"v1"[..], Outcome::MaxStale));
    assert_eq!(f.get("/s", &[("cache-control", "max-stale")]).await.report.outcome, Outcome::MaxStale);
    let calls = f.upstream.calls();
    assert_eq!(f.get("/s", &[("cache-control", "only-if-cached")]).await.status, 504, "stale is not enough");
    assert_eq!(f.upstream.calls(), calls);
    f.upstream.answer(200, &[("cache-control", "max-age=1")], "v2");
    assert_eq!(f.get("/s", &[("cache-control", "max-stale=10")]).await.body.as_ref(), b"v2", "beyond max-stale");
    f.upstream.answer(200, &[("cache-control", "max-age=1, must-revalidate")], "strict 2");
    assert_ne!(f.get("/strict", &[("cache-control", "max-stale")]).await.report.outcome, Outcome::MaxStale);
}

/// RFC 9111 sections 5.2.1.1, 5.2.1.3, 5.2.1.4 are preferences: ignored by default (no client can send every
/// request to the origin), honoured with `client_freshness`.
#[tokio::test]
async fn client_freshness_directives_are_an_option() {
    let ignoring = fixture(ExchangeConfig::default());
    ignoring.upstream.answer(200, FRESH, "v1");
    ignoring.get("/p", &[]).await;
    for directive in ["no-cache", "max-age=0", "min-fresh=3600"] {
        let answer = ignoring.get("/p", &[("cache-control", directive)]).await;
        assert_eq!(answer.report.outcome, Outcome::Hit, "{directive}");
    }
    let honouring = fixture(ExchangeConfig { client_freshness: true, ..ExchangeConfig::default() });
    honouring.upstream.answer(200, FRESH, "v1");
    honouring.get("/p", &[]).await;
    for directive in ["no-cache", "max-age=1", "min-fresh=3600"] {
        honouring.advance(5);
        honouring.upstream.answer(200, FRESH, "v2");
        let answer = honouring.get("/p", &[("cache-control", directive)]).await;
        assert_eq!(answer.report.outcome, Outcome::Refreshed(Filled::Stored), "{directive}");
    }
    assert_eq!(honouring.get("/p", &[("cache-control", "max-age=100")]).await.report.outcome, Outcome::Hit);
}

/// RFC 9110 section 14: a range of a stored complete response is answered from storage (206 with
/// Content-Range, 416 when unsatisfiable, If-Range with a strong validator); a range request on a miss fills the
/// whole representation (the origin is not asked for the range) and answers the range from it.
#[tokio::test]
async fn ranges_are_answered_from_storage() {
    let f = fixture(ExchangeConfig::default());
    f.upstream.answer(200, &[("cache-control", "max-age=60"), ("etag", "\"r1\"")], "0123456789");
    let first = f.get("/r", &[("range", "bytes=2-4")]).await;
    assert_eq!((first.status, first.body.as_ref()), (206, &b"234"[..]));
    assert_eq!(first.headers["content-range"], "bytes 2-4/10");
    assert!(!f.upstream.last().2.contains_key("range"), "the fill asks for the whole representation");
    assert!(first.cache_status().contains("stored"), "{}", first.cache_status());
    type Case = (&'static [(&'static str, &'static str)], u16, &'static str, Option<&'static str>);
    let cases: &[Case] = &[
        (&[("range", "bytes=-3")], 206, "789", Some("bytes 7-9/10")),
        (&[("range", "bytes=8-")], 206, "89", Some("bytes 8-9/10")),
        (&[("range", "bytes=10-")], 416, "", Some("bytes */10")),
        (&[("range", "bytes=0-1,4-5")], 200, "0123456789", None),
        (&[("range", "bytes=0-1"), ("if-range", "\"r1\"")], 206, "01", Some("bytes 0-1/10")),
        (&[("range", "bytes=0-1"), ("if-range", "\"r0\"")], 200, "0123456789", None),
    ];
    for (lines, status, body, content_range) in cases {
        let got = f.get("/r", lines).await;
        assert_eq!((got.status, got.body.as_ref()), (*status, body.as_bytes()), "{lines:?}");
        assert_eq!(got.headers.get("content-range").map(|v| v.to_str().unwrap()), *content_range, "{lines:?}");
        assert_eq!(got.report.outcome, Outcome::Hit, "{lines:?}");
    }
    assert_eq!(f.upstream.calls(), 1);
}

/// RFC 9111 section 4.2.2: heuristic freshness is an option, off by default.
#[tokio::test]
async fn heuristic_freshness_is_an_option() {
    let last_modified = ("last-modified", "Sat, 01 Jan 2000 00:00:00 GMT");
    let off = fixture(ExchangeConfig::default());
    off.upstream.answer(200, &[last_modified], "guess");
    assert_eq!(off.get("/h", &[]).await.cache_status(), "etagd; fwd=uri-miss; fwd-status=200; detail=no-freshness");
    let on = fixture(ExchangeConfig { heuristic_freshness: true, ..ExchangeConfig::default() });
    on.upstream.answer(200, &[last_modified], "guess");
    assert!(on.get("/h", &[]).await.report.outcome.stored());
    assert_eq!(on.get("/h", &[]).await.report.outcome, Outcome::Hit);
}
