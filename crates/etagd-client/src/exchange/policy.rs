//! The request policy, in one place: which requests the cache answers, which it only forwards, and which
//! refusals to store may mark a resource hit-for-pass for everyone.

use http::request::Parts;
use http::{Method, StatusCode};

use crate::cacheability::NoStoreReason;

/// Why a GET or HEAD request is forwarded without the cache being read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBypass {
    /// `If-Match`, `If-Unmodified-Since` or `If-Range`: preconditions on the current state of the resource,
    /// which only the origin can evaluate (RFC 9110 section 13.2.1).
    Preconditions,
    /// No `Host` and no authority: the request names no resource to key.
    NoHost,
    /// A GET or HEAD with a body: the key does not cover the body, so the answer is never shared (it is
    /// forwarded with its body, keeping the origin connection in step).
    Body,
    /// The request carries cookies that matter, and the stored entry's freshness comes only from a route
    /// rule: it may be someone else's personalised page, or this client's should not be stored.
    Cookie,
    /// `only-if-cached` and nothing stored satisfies the request: 504 (RFC 9111 section 5.2.1.7).
    OnlyIfCached,
}

impl RequestBypass {
    /// The `Cache-Status` detail.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestBypass::Preconditions => "preconditions",
            RequestBypass::NoHost => "no-host",
            RequestBypass::Body => "request-body",
            RequestBypass::Cookie => "cookie",
            RequestBypass::OnlyIfCached => "only-if-cached",
        }
    }
}

/// How the exchange treats a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// GET or HEAD the cache may answer.
    Cacheable,
    /// GET or HEAD forwarded as it is.
    Bypass(RequestBypass),
    /// Any other method: forwarded; on success it invalidates (RFC 9111 section 4.4).
    Unsafe,
}

/// Classifies a request.
///
/// Deliberately not a bypass, as in Varnish and nginx: request `Cache-Control: no-cache` / `Pragma: no-cache`
/// (RFC 9111 section 5.2.1.4 makes it a preference, and honouring it would let any client send every request
/// to the origin), and `Authorization` (RFC 9111 section 3.5 governs storing the answer, which
/// `cacheability::storable` checks; a refusal it causes never marks the resource hit-for-pass).
pub(crate) fn classify(parts: &Parts) -> Class {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        Class::Unsafe
    } else if has_body(&parts.headers) {
        Class::Bypass(RequestBypass::Body)
    } else if parts.headers.contains_key(http::header::IF_MATCH)
        || parts.headers.contains_key(http::header::IF_UNMODIFIED_SINCE)
        || (parts.headers.contains_key(http::header::IF_RANGE) && !parts.headers.contains_key(http::header::RANGE))
    {
        Class::Bypass(RequestBypass::Preconditions)
    } else {
        Class::Cacheable
    }
}

/// Whether a request says it has a body (RFC 9112 section 6.3: `Transfer-Encoding`, or a `Content-Length`
/// other than 0).
fn has_body(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers.get_all(http::header::CONTENT_LENGTH).iter().any(|value| value.as_bytes().trim_ascii() != b"0")
}

/// Whether a request carries a cookie that is not in `ignored` (names, or prefixes ending in `*`). Cookie
/// names are case-sensitive (RFC 6265 section 4.1.1).
pub(crate) fn is_personal(headers: &http::HeaderMap, ignored: &[&[String]]) -> bool {
    let matches = |name: &str| {
        ignored.iter().flat_map(|list| list.iter()).any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == pattern,
        })
    };
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .filter_map(|pair| {
            let name = pair.split(|&b| b == b'=').next()?.trim_ascii();
            (!name.is_empty()).then_some(name)
        })
        .any(|name| !std::str::from_utf8(name).is_ok_and(matches))
}

/// Whether a method changes nothing on the origin (RFC 9110 section 9.2.1), so a success invalidates nothing.
pub(crate) fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// What a refused fill leaves behind for the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Nothing: the refusal says nothing about other requests (or a stale entry must stay for stale-if-error).
    Release,
    /// A hit-for-pass marker of the engine's usual lifetime: the resource answers unstorably.
    Pass,
    /// A short hit-for-pass marker: a 5xx is likely transient, but waiters must stop queueing behind it.
    ShortPass,
}

/// Decides what a refusal to store leaves behind. A refusal caused by the request alone never marks the resource
/// (one client's `Authorization` must not switch caching off for everyone), and a failing refresh of a stored
/// entry never replaces it (`stale-if-error` must still find it).
pub(crate) fn refusal(reason: NoStoreReason, status: StatusCode, refreshing: bool) -> Refusal {
    if reason.is_request_specific() || (refreshing && status.is_server_error()) {
        Refusal::Release
    } else if status.is_server_error() {
        Refusal::ShortPass
    } else {
        Refusal::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: Method, lines: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder().method(method).uri("/");
        for (name, value) in lines {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn requests_are_classified() {
        type Case = (Method, &'static [(&'static str, &'static str)], Class);
        let cases: &[Case] = &[
            (Method::GET, &[], Class::Cacheable),
            (Method::HEAD, &[], Class::Cacheable),
            (Method::GET, &[("cache-control", "no-cache")], Class::Cacheable),
            (Method::GET, &[("pragma", "no-cache")], Class::Cacheable),
            (Method::GET, &[("authorization", "Bearer t")], Class::Cacheable),
            (Method::GET, &[("if-none-match", "\"a\"")], Class::Cacheable),
            // RFC 9110 section 14: ranges are answered from storage (exchange/range.rs), If-Range with them.
            (Method::GET, &[("range", "bytes=0-9")], Class::Cacheable),
            (Method::GET, &[("range", "bytes=0-9"), ("if-range", "\"a\"")], Class::Cacheable),
            (Method::GET, &[("if-range", "\"a\"")], Class::Bypass(RequestBypass::Preconditions)),
            // RFC 9110 sections 13.1.1, 13.1.4: preconditions only the origin can evaluate.
            (Method::GET, &[("if-match", "\"a\"")], Class::Bypass(RequestBypass::Preconditions)),
            (
                Method::GET,
                &[("if-unmodified-since", "Tue, 24 Nov 2026 10:00:00 GMT")],
                Class::Bypass(RequestBypass::Preconditions),
            ),
            // RFC 9112 section 6.3: a GET that says it has a body is forwarded with it, never cached.
            (Method::GET, &[("content-length", "10")], Class::Bypass(RequestBypass::Body)),
            (Method::GET, &[("transfer-encoding", "chunked")], Class::Bypass(RequestBypass::Body)),
            (Method::GET, &[("content-length", "0")], Class::Cacheable),
            (Method::POST, &[], Class::Unsafe),
            (Method::DELETE, &[], Class::Unsafe),
            (Method::OPTIONS, &[], Class::Unsafe),
        ];
        for (method, lines, expected) in cases {
            assert_eq!(classify(&parts(method.clone(), lines)), *expected, "{method} {lines:?}");
        }
        assert!(is_safe(&Method::OPTIONS) && !is_safe(&Method::PATCH));
    }

    /// RFC 6265 section 4.2: a request's cookies; those the operator lists as not mattering are ignored.
    #[test]
    fn cookies_make_a_request_personal_unless_ignored() {
        let ignored = vec!["_ga".to_owned(), "_gcl_*".to_owned()];
        let check = |cookie: Option<&str>, expected: bool| {
            let mut headers = http::HeaderMap::new();
            if let Some(cookie) = cookie {
                headers.insert(http::header::COOKIE, cookie.parse().unwrap());
            }
            assert_eq!(is_personal(&headers, &[&ignored]), expected, "{cookie:?}");
        };
        check(None, false);
        check(Some("_ga=GA1.2"), false);
        check(Some("_ga=1; _gcl_au=2"), false);
        check(Some("_ga=1; sessionid=abc"), true);
        check(Some("sessionid=abc"), true);
        check(Some("_GA=1"), true);
        check(Some(" ; "), false);
    }

    #[test]
    fn only_the_response_may_mark_a_resource_hit_for_pass() {
        let ok = StatusCode::OK;
        let failed = StatusCode::BAD_GATEWAY;
        let cases = [
            (NoStoreReason::Authorization, ok, false, Refusal::Release),
            (NoStoreReason::RequestNoStore, ok, false, Refusal::Release),
            (NoStoreReason::NoStore, ok, false, Refusal::Pass),
            (NoStoreReason::SetCookie, ok, true, Refusal::Pass),
            (NoStoreReason::Status, failed, false, Refusal::ShortPass),
            (NoStoreReason::Status, failed, true, Refusal::Release),
            (NoStoreReason::TooLarge, ok, false, Refusal::Pass),
        ];
        for (reason, status, refreshing, expected) in cases {
            assert_eq!(refusal(reason, status, refreshing), expected, "{reason} {status} {refreshing}");
        }
    }
}
