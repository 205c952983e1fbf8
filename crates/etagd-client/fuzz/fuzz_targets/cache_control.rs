//! Fuzzes `Cache-Control` parsing and the storage decision built on it (see ../README.md for the input format).

#![no_main]

use std::time::{Duration, SystemTime};

use etagd_client::cache_control::{CacheControl, DELTA_SECONDS_MAX};
use etagd_client::cacheability::{self, Policy};
use http::header::CACHE_CONTROL;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut request = HeaderMap::new();
    let mut response = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let (target, bytes) = match line.strip_prefix(b"Q:") {
            Some(rest) => (&mut request, rest),
            None => (&mut response, line),
        };
        if let Ok(value) = HeaderValue::from_bytes(bytes) {
            target.append(CACHE_CONTROL, value);
        }
        if let Ok(text) = std::str::from_utf8(line) {
            check(&CacheControl::parse(text));
        }
    }
    let cc = CacheControl::from_headers(&response);
    check(&cc);
    check(&CacheControl::from_headers(&request));

    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let policy = Policy { default_stale_while_revalidate_s: 10, ..Policy::default() };
    let status = StatusCode::from_u16(200 + u16::from(data.first().copied().unwrap_or(0) % 4) * 100)
        .expect("200, 300, 400 and 500 are valid statuses");
    match cacheability::storable(&Method::GET, &request, status, &response, &policy, now) {
        Ok(freshness) => {
            assert!(freshness.fresh_for_s <= DELTA_SECONDS_MAX, "no route TTL, so no lifetime beyond 2^31");
            assert!(!cc.no_store && !cc.private, "no-store and private are never stored");
            if freshness.must_revalidate {
                assert_eq!((freshness.stale_while_revalidate_s, freshness.stale_if_error_s), (0, 0));
            }
        }
        Err(reason) => assert!(!reason.as_str().is_empty()),
    }
    let _ = cacheability::request_bypasses(&request);
});

fn check(cc: &CacheControl) {
    for seconds in [cc.max_age, cc.s_maxage, cc.stale_while_revalidate, cc.stale_if_error, cc.min_fresh]
        .into_iter()
        .chain(cc.max_stale.flatten().map(Some))
        .flatten()
    {
        assert!(seconds <= DELTA_SECONDS_MAX, "delta-seconds are capped at 2^31");
    }
}
