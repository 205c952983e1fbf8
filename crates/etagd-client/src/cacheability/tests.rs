//! The storage and freshness rules, case by case, each citing its RFC section.

use super::*;
use http::HeaderName;

type Outcome = Result<Freshness, NoStoreReason>;
type Lines<'a> = Vec<(&'a str, &'a str)>;

/// 2027-01-15T08:00:00Z, a fixed "now".
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn date(offset_s: i64) -> String {
    let at = if offset_s >= 0 {
        now() + Duration::from_secs(offset_s.unsigned_abs())
    } else {
        now() - Duration::from_secs(offset_s.unsigned_abs())
    };
    httpdate::fmt_http_date(at)
}

fn map(lines: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in lines {
        headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    headers
}

fn fresh(fresh_for_s: u64) -> Freshness {
    Freshness {
        fresh_for_s,
        initial_age_s: 0,
        stale_while_revalidate_s: 0,
        stale_if_error_s: 0,
        must_revalidate: false,
    }
}

fn revalidate(fresh_for_s: u64) -> Freshness {
    Freshness { must_revalidate: true, ..fresh(fresh_for_s) }
}

fn check_with(
    policy: &Policy,
    method: Method,
    req: &[(&str, &str)],
    status: u16,
    resp: &[(&str, &str)],
    expected: Outcome,
) {
    let status = StatusCode::from_u16(status).unwrap();
    let got = storable(&method, &map(req), status, &map(resp), policy, now());
    assert_eq!(got, expected, "{method} {req:?} -> {status} {resp:?} with {policy:?}");
}

fn check(req: &[(&str, &str)], status: u16, resp: &[(&str, &str)], expected: Outcome) {
    check_with(&Policy::default(), Method::GET, req, status, resp, expected);
}

use NoStoreReason::{
    Authorization, NoFreshness, NoStore, PartialContent, Private, RequestNoStore, SetCookie, Status, VaryStar,
};

#[test]
fn methods() {
    let cc = [("cache-control", "max-age=60")];
    check_with(&Policy::default(), Method::GET, &[], 200, &cc, Ok(fresh(60)));
    check_with(&Policy::default(), Method::HEAD, &[], 200, &cc, Ok(fresh(60)));
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS, Method::PATCH, Method::TRACE] {
        check_with(&Policy::default(), method, &[], 200, &cc, Err(NoStoreReason::Method));
    }
    let custom = Method::from_bytes(b"PURGE").unwrap();
    check_with(&Policy::default(), custom, &[], 200, &cc, Err(NoStoreReason::Method));
}

#[test]
fn statuses() {
    let explicit = [("cache-control", "max-age=60")];
    let nothing: [(&str, &str); 0] = [];
    let route = Policy { route_ttl_s: Some(300), ..Policy::default() };
    let cases: [(u16, Outcome, Outcome); 17] = [
        (200, Ok(fresh(60)), Ok(fresh(300))),
        (203, Ok(fresh(60)), Ok(fresh(300))),
        (204, Ok(fresh(60)), Ok(fresh(300))),
        (300, Ok(fresh(60)), Ok(fresh(300))),
        (301, Ok(fresh(60)), Ok(fresh(300))),
        (308, Ok(fresh(60)), Ok(fresh(300))),
        (404, Ok(fresh(60)), Ok(fresh(300))),
        (405, Ok(fresh(60)), Ok(fresh(300))),
        (410, Ok(fresh(60)), Ok(fresh(300))),
        (414, Ok(fresh(60)), Ok(fresh(300))),
        (501, Ok(fresh(60)), Ok(fresh(300))),
        // Not heuristically cacheable: explicit freshness only, route TTL or not.
        (302, Ok(fresh(60)), Err(Status)),
        (500, Ok(fresh(60)), Err(Status)),
        (503, Ok(fresh(60)), Err(Status)),
        (299, Ok(fresh(60)), Err(Status)),
        // Never.
        (206, Err(PartialContent), Err(PartialContent)),
        (304, Err(Status), Err(Status)),
    ];
    for (status, with_explicit, with_route) in cases {
        check(&[], status, &explicit, with_explicit);
        check_with(&route, Method::GET, &[], status, &nothing, with_route);
    }
    check(&[], 100, &explicit, Err(Status));
    check(&[], 101, &explicit, Err(Status));
}

#[test]
fn refusals() {
    let ok = [("cache-control", "max-age=60")];
    let cases: Vec<(Lines<'_>, Lines<'_>, Outcome)> = vec![
        (vec![("cache-control", "no-store")], ok.to_vec(), Err(RequestNoStore)),
        (vec![("cache-control", "max-age=0, NO-STORE")], ok.to_vec(), Err(RequestNoStore)),
        (vec![], vec![("cache-control", "no-store, max-age=60")], Err(NoStore)),
        (vec![], vec![("cache-control", "max-age=60"), ("cache-control", "no-store")], Err(NoStore)),
        (vec![], vec![("cache-control", "private, max-age=60")], Err(Private)),
        (vec![], vec![("cache-control", "private=\"set-cookie\", max-age=60")], Err(Private)),
        (vec![], vec![("cache-control", "public, private, max-age=60")], Err(Private)),
        (vec![], vec![("cache-control", "max-age=60"), ("set-cookie", "session=1")], Err(SetCookie)),
        (vec![], vec![("cache-control", "public, max-age=60"), ("set-cookie", "")], Err(SetCookie)),
        (vec![], vec![("cache-control", "max-age=60"), ("vary", "accept-encoding, *")], Err(VaryStar)),
        (vec![], vec![("cache-control", "max-age=60"), ("vary", "accept-encoding")], Ok(fresh(60))),
        (vec![], vec![], Err(NoFreshness)),
        (vec![], vec![("last-modified", "Thu, 01 Jan 2026 00:00:00 GMT")], Err(NoFreshness)),
        (vec![], vec![("cache-control", "public")], Err(NoFreshness)),
        // A request no-cache does not stop storing the answer (it asks for revalidation).
        (vec![("cache-control", "no-cache")], ok.to_vec(), Ok(fresh(60))),
    ];
    for (req, resp, expected) in cases {
        check(&req, 200, &resp, expected);
    }
}

#[test]
fn authorization() {
    let auth = [("authorization", "Bearer t")];
    let cases: Vec<(&str, Outcome)> = vec![
        ("max-age=60", Err(Authorization)),
        ("no-cache", Err(Authorization)),
        ("public, max-age=60", Ok(fresh(60))),
        ("s-maxage=60", Ok(revalidate(60))),
        ("must-revalidate, max-age=60", Ok(revalidate(60))),
        ("proxy-revalidate, max-age=60", Err(Authorization)),
        ("public=1, max-age=60", Err(Authorization)),
        ("public, private, max-age=60", Err(Private)),
    ];
    for (cc, expected) in cases {
        check(&auth, 200, &[("cache-control", cc)], expected);
    }
    check(&auth, 200, &[], Err(Authorization));
}

#[test]
fn freshness_sources() {
    let (in_600, in_200, in_60, at_0, ago_1, ago_10, ago_100) =
        (date(600), date(200), date(60), date(0), date(-1), date(-10), date(-100));
    let cases: Vec<(Lines<'_>, Outcome)> = vec![
        (vec![("cache-control", "max-age=60")], Ok(fresh(60))),
        (vec![("cache-control", "max-age=0")], Ok(fresh(0))),
        // s-maxage wins over max-age and implies proxy-revalidate.
        (vec![("cache-control", "max-age=60, s-maxage=600")], Ok(revalidate(600))),
        (vec![("cache-control", "max-age=600, s-maxage=0")], Ok(revalidate(0))),
        // Invalid or conflicting freshness reads as stale.
        (vec![("cache-control", "max-age=abc")], Ok(fresh(0))),
        (vec![("cache-control", "max-age=60, max-age=61")], Ok(fresh(0))),
        (vec![("cache-control", "max-age=99999999999999999999")], Ok(fresh(DELTA_SECONDS_MAX))),
        // max-age wins over Expires.
        (vec![("cache-control", "max-age=60"), ("expires", &in_600)], Ok(fresh(60))),
        // Expires minus Date, with Date or with now.
        (vec![("date", &ago_100), ("expires", &in_200)], Ok(Freshness { initial_age_s: 99, ..fresh(300) })),
        // RFC 9111 section 4.2.3: the apparent age (now - Date, less Date's one second of resolution) counts
        // when it exceeds Age; a Date of a moment ago does not.
        (vec![("cache-control", "max-age=60"), ("date", &ago_100)], Ok(Freshness { initial_age_s: 99, ..fresh(60) })),
        (
            vec![("cache-control", "max-age=60"), ("date", &ago_100), ("age", "300")],
            Ok(Freshness { initial_age_s: 300, ..fresh(60) }),
        ),
        (vec![("cache-control", "max-age=60"), ("date", &ago_1)], Ok(fresh(60))),
        (vec![("cache-control", "max-age=60"), ("date", &in_60)], Ok(fresh(60))),
        (vec![("expires", &in_200)], Ok(fresh(200))),
        (vec![("date", "garbage"), ("expires", &in_200)], Ok(fresh(200))),
        (vec![("date", &at_0), ("expires", &ago_10)], Ok(fresh(0))),
        (vec![("expires", "0")], Ok(fresh(0))),
        (vec![("expires", "")], Ok(fresh(0))),
        (vec![("expires", &in_60), ("expires", &in_60)], Ok(fresh(0))),
        (vec![("expires", "Fri, 31 Dec 9999 23:59:59 GMT")], Ok(fresh(DELTA_SECONDS_MAX))),
        // no-cache: stored, lifetime 0, always revalidated.
        (vec![("cache-control", "no-cache")], Ok(revalidate(0))),
        (vec![("cache-control", "no-cache, max-age=600")], Ok(revalidate(0))),
        (vec![("cache-control", "no-cache=\"set-cookie\", max-age=600")], Ok(revalidate(0))),
        // must-revalidate and proxy-revalidate.
        (vec![("cache-control", "max-age=5, must-revalidate")], Ok(revalidate(5))),
        (vec![("cache-control", "max-age=5, proxy-revalidate")], Ok(revalidate(5))),
    ];
    for (resp, expected) in cases {
        check(&[], 200, &resp, expected);
    }
    // A non-heuristic status with no-cache alone is not storable; with public it is.
    check(&[], 500, &[("cache-control", "no-cache")], Err(Status));
    check(&[], 500, &[("cache-control", "no-cache, public")], Ok(revalidate(0)));
}

#[test]
fn route_ttl_and_heuristics() {
    let (ago_1000, ago_500, at_0, in_100) = (date(-1000), date(-500), date(0), date(100));
    let route = Policy { route_ttl_s: Some(120), ..Policy::default() };
    let forever = Policy { route_ttl_s: Some(u64::MAX), ..Policy::default() };
    let heuristic = Policy { heuristic_freshness: true, ..Policy::default() };
    let both = Policy { route_ttl_s: Some(120), heuristic_freshness: true, ..Policy::default() };
    let ten_days_ago = date(-864_000);
    let hundred_days_ago = date(-8_640_000);
    let cases: Vec<(&Policy, u16, Lines<'_>, Outcome)> = vec![
        (&route, 200, vec![], Ok(fresh(120))),
        (&forever, 200, vec![], Ok(fresh(u64::MAX))),
        (&forever, 404, vec![], Ok(fresh(u64::MAX))),
        (&forever, 500, vec![], Err(Status)),
        (&forever, 500, vec![("cache-control", "public")], Ok(fresh(u64::MAX))),
        // The origin's explicit freshness and refusals win over the route.
        (&route, 200, vec![("cache-control", "max-age=5")], Ok(fresh(5))),
        (&route, 200, vec![("expires", "0")], Ok(fresh(0))),
        (&route, 200, vec![("cache-control", "no-store")], Err(NoStore)),
        (&route, 200, vec![("cache-control", "private")], Err(Private)),
        (&route, 200, vec![("cache-control", "no-cache")], Ok(revalidate(0))),
        (&route, 200, vec![("set-cookie", "a=b")], Err(SetCookie)),
        // Heuristics: 10% of Date - Last-Modified, capped at a day.
        (&heuristic, 200, vec![("last-modified", &ten_days_ago)], Ok(fresh(86_400))),
        (&heuristic, 200, vec![("last-modified", &ago_1000)], Ok(fresh(100))),
        // Already 499 s old by its Date (RFC 9111 section 4.2.3), so well past its 50 s.
        (
            &heuristic,
            200,
            vec![("date", &ago_500), ("last-modified", &ago_1000)],
            Ok(Freshness { initial_age_s: 499, ..fresh(50) }),
        ),
        (&heuristic, 200, vec![("last-modified", &at_0)], Ok(fresh(0))),
        (&heuristic, 200, vec![("last-modified", &hundred_days_ago)], Ok(fresh(HEURISTIC_MAX_S))),
        (&heuristic, 200, vec![("last-modified", &in_100)], Err(NoFreshness)),
        (&heuristic, 200, vec![("last-modified", "yesterday")], Err(NoFreshness)),
        (&heuristic, 200, vec![], Err(NoFreshness)),
        (&heuristic, 302, vec![("last-modified", &ago_1000)], Err(Status)),
        (&heuristic, 302, vec![("last-modified", &ago_1000), ("cache-control", "public")], Ok(fresh(100))),
        // The route TTL comes before heuristics.
        (&both, 200, vec![("last-modified", &ago_1000)], Ok(fresh(120))),
    ];
    for (policy, status, resp, expected) in cases {
        check_with(policy, Method::GET, &[], status, &resp, expected);
    }
}

#[test]
fn stale_windows_and_age() {
    let none = Policy::default();
    let defaults = Policy { default_stale_while_revalidate_s: 30, default_stale_if_error_s: 600, ..Policy::default() };
    let stale = |swr: u32, sie: u32| Freshness { stale_while_revalidate_s: swr, stale_if_error_s: sie, ..fresh(60) };
    let cases: Vec<(&Policy, Lines<'_>, Outcome)> = vec![
        (&defaults, vec![("cache-control", "max-age=60")], Ok(stale(30, 600))),
        (&defaults, vec![("cache-control", "max-age=60, stale-while-revalidate=5")], Ok(stale(5, 600))),
        (&defaults, vec![("cache-control", "max-age=60, stale-if-error=0")], Ok(stale(30, 0))),
        (&defaults, vec![("cache-control", "max-age=60, stale-if-error=x")], Ok(stale(30, 600))),
        (&none, vec![("cache-control", "max-age=60, stale-while-revalidate=9, stale-if-error=8")], Ok(stale(9, 8))),
        (&none, vec![("cache-control", "max-age=60, stale-while-revalidate=99999999999")], Ok(stale(1 << 31, 0))),
        // Anything that forbids stale zeroes both windows.
        (
            &defaults,
            vec![("cache-control", "max-age=60, must-revalidate, stale-while-revalidate=5")],
            Ok(revalidate(60)),
        ),
        (&defaults, vec![("cache-control", "max-age=60, proxy-revalidate")], Ok(revalidate(60))),
        (&defaults, vec![("cache-control", "s-maxage=60, stale-if-error=600")], Ok(revalidate(60))),
        (&defaults, vec![("cache-control", "no-cache, stale-while-revalidate=5")], Ok(revalidate(0))),
        // Age.
        (&none, vec![("cache-control", "max-age=60"), ("age", "15")], Ok(Freshness { initial_age_s: 15, ..fresh(60) })),
        (
            &none,
            vec![("cache-control", "max-age=60"), ("age", " 15 ")],
            Ok(Freshness { initial_age_s: 15, ..fresh(60) }),
        ),
        // RFC 9111 section 5.1: a list-based Age counts by its first member, on one line or on several.
        (
            &none,
            vec![("cache-control", "max-age=60"), ("age", "5"), ("age", "9"), ("age", "x")],
            Ok(Freshness { initial_age_s: 5, ..fresh(60) }),
        ),
        (
            &none,
            vec![("cache-control", "max-age=60"), ("age", "7200, 0")],
            Ok(Freshness { initial_age_s: 7200, ..fresh(60) }),
        ),
        (&none, vec![("cache-control", "max-age=60"), ("age", "0"), ("age", "7200")], Ok(fresh(60))),
        (&none, vec![("cache-control", "max-age=60"), ("age", "x, 30")], Ok(fresh(60))),
        (&none, vec![("cache-control", "max-age=60"), ("age", "-5")], Ok(fresh(60))),
        (&none, vec![("cache-control", "max-age=60"), ("age", "1.5")], Ok(fresh(60))),
        (&none, vec![("cache-control", "max-age=60"), ("age", "")], Ok(fresh(60))),
        (
            &none,
            vec![("cache-control", "max-age=60"), ("age", "999999999999999999999")],
            Ok(Freshness { initial_age_s: DELTA_SECONDS_MAX, ..fresh(60) }),
        ),
    ];
    for (policy, resp, expected) in cases {
        check_with(policy, Method::GET, &[], 200, &resp, expected);
    }
}

#[test]
fn non_utf8_headers_never_panic() {
    let mut resp = HeaderMap::new();
    for name in ["cache-control", "expires", "date", "last-modified", "age", "vary"] {
        resp.append(HeaderName::from_static(name), HeaderValue::from_bytes(b"\xff\xfe max-age=5").unwrap());
    }
    let mut req = HeaderMap::new();
    req.append(http::header::CACHE_CONTROL, HeaderValue::from_bytes(b"\xffno-store").unwrap());
    req.append(PRAGMA, HeaderValue::from_bytes(b"\xff").unwrap());
    let policy = Policy { heuristic_freshness: true, route_ttl_s: Some(1), ..Policy::default() };
    // No directive is readable, and the unreadable Expires means "already expired" (RFC 9111 section 5.3).
    assert_eq!(storable(&Method::GET, &req, StatusCode::OK, &resp, &policy, now()), Ok(fresh(0)));
    assert!(!request_bypasses(&req));
}

#[test]
fn bypass() {
    let cases: Vec<(Lines<'_>, bool)> = vec![
        (vec![], false),
        (vec![("cache-control", "no-cache")], true),
        (vec![("cache-control", "No-Cache, max-age=0")], true),
        (vec![("cache-control", "max-age=0")], false),
        (vec![("cache-control", "no-store")], false),
        (vec![("pragma", "no-cache")], true),
        (vec![("pragma", " NO-CACHE ")], true),
        (vec![("pragma", "x, no-cache")], true),
        (vec![("pragma", "no-cache-please")], false),
        (vec![("pragma", "")], false),
        // RFC 9111 section 5.4: Pragma is ignored when Cache-Control is present.
        (vec![("pragma", "no-cache"), ("cache-control", "max-age=10")], false),
    ];
    for (req, expected) in cases {
        assert_eq!(request_bypasses(&map(&req)), expected, "request: {req:?}");
    }
}

/// RFC 9213 sections 2.1-2.2: the first targeted field with a valid, non-empty Dictionary value replaces
/// Cache-Control and Expires; one that does not parse is ignored.
#[test]
fn targeted_fields_replace_cache_control() {
    let cases: Vec<(Vec<(&str, &str)>, Outcome)> = vec![
        (vec![("cdn-cache-control", "private"), ("cache-control", "max-age=60")], Err(Private)),
        (vec![("cdn-cache-control", "no-store"), ("cache-control", "max-age=60")], Err(NoStore)),
        (vec![("cdn-cache-control", "max-age=3600"), ("cache-control", "no-store")], Ok(fresh(3600))),
        (vec![("etagd-cache-control", "max-age=10"), ("cdn-cache-control", "max-age=3600")], Ok(fresh(10))),
        // Not a Dictionary (a string where a key must be): ignored, so the next field or Cache-Control rules.
        (vec![("etagd-cache-control", "\"max-age=10\""), ("cdn-cache-control", "max-age=3600")], Ok(fresh(3600))),
        (vec![("cdn-cache-control", "max-age=3600, ,"), ("cache-control", "max-age=60")], Ok(fresh(60))),
        // A value of the wrong type is a directive not understood.
        (vec![("cdn-cache-control", "max-age=\"3600\", s-maxage=5"), ("cache-control", "no-store")], Ok(revalidate(5))),
        // With a targeted field, Expires does not count either.
        (vec![("cdn-cache-control", "public"), ("expires", "Tue, 24 Nov 2099 10:00:00 GMT")], Err(NoFreshness)),
    ];
    for (resp, expected) in cases {
        check(&[], 200, &resp, expected);
    }
    // An operator may target other fields, or none.
    let none = Policy { targeted: Vec::new(), ..Policy::default() };
    check_with(
        &none,
        Method::GET,
        &[],
        200,
        &[("cdn-cache-control", "no-store"), ("cache-control", "max-age=60")],
        Ok(fresh(60)),
    );
}

/// RFC 9111 section 5.2.2.3: with `must-understand`, a status whose caching rules etagd implements is stored
/// despite `no-store`; any other status is not.
#[test]
fn must_understand_overrides_no_store_for_understood_statuses() {
    let directive = [("cache-control", "max-age=3600, no-store, must-understand")];
    check(&[], 200, &directive, Ok(fresh(3600)));
    check(&[], 404, &directive, Ok(fresh(3600)));
    check(&[], 299, &directive, Err(NoStore));
    check(&[], 200, &[("cache-control", "max-age=3600, no-store")], Err(NoStore));
}

/// RFC 9110 section 5.6.7: recipients accept IMF-fixdate, RFC 850 and asctime dates; RFC 9111 section 4.2:
/// caches read them leniently (case); RFC 9111 section 5.3: an unreadable Expires is already expired.
#[test]
fn expires_is_read_in_every_date_format() {
    let date = "Tue, 24 Nov 2026 10:00:00 GMT";
    let received = httpdate::parse_http_date(date).unwrap();
    let cases = [
        ("Tue, 24 Nov 2026 11:00:00 GMT", 3600),
        ("Tuesday, 24-Nov-26 11:00:00 GMT", 3600),
        ("Tue Nov 24 11:00:00 2026", 3600),
        ("tue, 24 NOV 2026 11:00:00 gmt", 3600),
        ("TUESDAY, 24-nov-26 11:00:00 Gmt", 3600),
        ("next tuesday", 0),
        ("0", 0),
    ];
    for (expires, lifetime) in cases {
        let response = map(&[("date", date), ("expires", expires)]);
        let got = storable(&Method::GET, &HeaderMap::new(), StatusCode::OK, &response, &Policy::default(), received);
        assert_eq!(got, Ok(fresh(lifetime)), "{expires}");
    }
}

#[test]
fn labels() {
    let labels: Vec<&str> = NoStoreReason::ALL.iter().map(NoStoreReason::as_str).collect();
    assert_eq!(
        labels,
        [
            "method",
            "status",
            "request_no_store",
            "no_store",
            "private",
            "authorization",
            "set_cookie",
            "vary_star",
            "no_freshness",
            "too_large",
            "partial_content",
            "trailers",
            "cookie",
        ]
    );
    assert_eq!(NoStoreReason::NoStore.to_string(), "no_store");
}
