//! May a shared cache store this response, and for how long (RFC 9111 sections 3, 4.2 and 5.2)?
//!
//! [`storable`] is the single decision point: it either returns the [`Freshness`] to store the response with or
//! the [`NoStoreReason`] that feeds the hit-for-pass marker, the `Cache-Status` header and the metrics. The rules,
//! in the order they are checked:
//!
//! 1. only GET and HEAD are cached ([`NoStoreReason::Method`]);
//! 2. a request `no-store` forbids storing the answer (RFC 9111 section 5.2.1.5);
//! 3. 206 is never stored (etagd does not combine ranges), nor a non-final status or a 304 (a 304 updates a stored
//!    response, section 4.3.4, and is not one);
//! 4. response `no-store` (section 5.2.2.5) and `private` (section 5.2.2.7, a shared cache);
//! 5. a request with `Authorization` only with `public`, `s-maxage` or `must-revalidate` (section 3.5);
//! 6. `Set-Cookie` never: a cookie meant for one user must not reach another (etagd's policy, stricter than RFC
//!    9111 section 7.3 requires);
//! 7. `Vary: *` (section 4.1);
//! 8. the freshness lifetime (section 4.2.1): `s-maxage`, else `max-age`, else `Expires` minus `Date`; else the
//!    route TTL; else, when enabled, 10% of `Date` minus `Last-Modified` capped at one day (section 4.2.2). The
//!    last two apply only to heuristically cacheable statuses (RFC 9110 section 15.1) or a `public` response; any
//!    other status needs explicit freshness ([`NoStoreReason::Status`]). A `no-cache` response is stored with
//!    lifetime 0 and must always be revalidated (section 5.2.2.4);
//! 9. beyond the RFCs, the route's operator rules (`operator.rs`): `negative_ttl` for 404 and 410 in place of the
//!    route TTL, `ttl_override` replacing the lifetime, `ttl_max` capping it. They never undo a refusal above.
//!
//! The initial age (section 4.2.3) is the larger of the `Age` value and the apparent age, `now - Date`, less one
//! second: `Date` has whole-second resolution and the origin's clock is not ours, so a response rendered a
//! moment ago is not aged by rounding. A `Date` from long ago makes the response that much older, as the RFC
//! asks. The response delay is not added: the sidecar talks to its own origin.

use std::time::{Duration, SystemTime};

use http::header::{AGE, AUTHORIZATION, DATE, EXPIRES, LAST_MODIFIED, PRAGMA, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use crate::cache_control::{CacheControl, DELTA_SECONDS_MAX, parse_delta_seconds};
use crate::headers::vary_names;

mod operator;

pub use operator::LifetimeError;

/// The longest heuristic lifetime (RFC 9111 section 4.2.2 suggests 10% of the age, and a cap keeps a decade-old
/// `Last-Modified` from pinning an entry for a year).
pub const HEURISTIC_MAX_S: u64 = 86_400;

/// Why a response was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoStoreReason {
    /// The request method is neither GET nor HEAD.
    Method,
    /// The status is not storable (non-final, 304, or not heuristically cacheable without explicit freshness).
    Status,
    /// The request said `Cache-Control: no-store`.
    RequestNoStore,
    /// The response said `Cache-Control: no-store`.
    NoStore,
    /// The response said `Cache-Control: private`.
    Private,
    /// The request carried `Authorization` and the response did not allow sharing it.
    Authorization,
    /// The response sets a cookie.
    SetCookie,
    /// The response carries `Vary: *`.
    VaryStar,
    /// The response has no explicit freshness, no route TTL applies and heuristics are off or impossible.
    NoFreshness,
    /// The body is over the configured limit (decided by the caller).
    TooLarge,
    /// The response is a 206 Partial Content.
    PartialContent,
    /// The body ends with trailers, which cannot be replayed from storage.
    Trailers,
    /// The request carries cookies that matter, and only a route rule (no freshness from the origin) would have
    /// made the answer storable: it may be personalised.
    Cookie,
}

impl NoStoreReason {
    /// Every reason, in declaration order (for registering metric labels up front).
    pub const ALL: [NoStoreReason; 13] = [
        NoStoreReason::Method,
        NoStoreReason::Status,
        NoStoreReason::RequestNoStore,
        NoStoreReason::NoStore,
        NoStoreReason::Private,
        NoStoreReason::Authorization,
        NoStoreReason::SetCookie,
        NoStoreReason::VaryStar,
        NoStoreReason::NoFreshness,
        NoStoreReason::TooLarge,
        NoStoreReason::PartialContent,
        NoStoreReason::Trailers,
        NoStoreReason::Cookie,
    ];

    /// The snake_case label used in metrics, logs and the `Cache-Status` header.
    pub fn as_str(&self) -> &'static str {
        match self {
            NoStoreReason::Method => "method",
            NoStoreReason::Status => "status",
            NoStoreReason::RequestNoStore => "request_no_store",
            NoStoreReason::NoStore => "no_store",
            NoStoreReason::Private => "private",
            NoStoreReason::Authorization => "authorization",
            NoStoreReason::SetCookie => "set_cookie",
            NoStoreReason::VaryStar => "vary_star",
            NoStoreReason::NoFreshness => "no_freshness",
            NoStoreReason::TooLarge => "too_large",
            NoStoreReason::PartialContent => "partial_content",
            NoStoreReason::Trailers => "trailers",
            NoStoreReason::Cookie => "cookie",
        }
    }

    /// The reason as a `Cache-Status` detail (RFC 9211 section 2.7): the label in kebab case, like every other
    /// detail etagd writes.
    pub fn detail(&self) -> &'static str {
        match self {
            NoStoreReason::Method => "method",
            NoStoreReason::Status => "status",
            NoStoreReason::RequestNoStore => "request-no-store",
            NoStoreReason::NoStore => "no-store",
            NoStoreReason::Private => "private",
            NoStoreReason::Authorization => "authorization",
            NoStoreReason::SetCookie => "set-cookie",
            NoStoreReason::VaryStar => "vary-star",
            NoStoreReason::NoFreshness => "no-freshness",
            NoStoreReason::TooLarge => "too-large",
            NoStoreReason::PartialContent => "partial-content",
            NoStoreReason::Trailers => "trailers",
            NoStoreReason::Cookie => "cookie",
        }
    }

    /// The reason named by a label written by [`as_str`](Self::as_str) (a hit-for-pass marker stores it, maybe
    /// written by another replica).
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == label)
    }

    /// Whether this refusal is caused by the request alone. Such a refusal must never mark the resource
    /// hit-for-pass: one client's credentials or `no-store` would switch caching off for everyone else.
    pub fn is_request_specific(&self) -> bool {
        matches!(
            self,
            NoStoreReason::RequestNoStore
                | NoStoreReason::Authorization
                | NoStoreReason::Method
                | NoStoreReason::Cookie
        )
    }
}

impl std::fmt::Display for NoStoreReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long a stored response may be served, and how it may be served stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    /// The freshness lifetime in seconds (RFC 9111 section 4.2.1); `u64::MAX` means until invalidated. Parsed
    /// header values never exceed 2^31, so only a route TTL can produce `u64::MAX`.
    pub fresh_for_s: u64,
    /// The `Age` the response arrived with, in seconds (RFC 9111 section 4.2.3).
    pub initial_age_s: u64,
    /// How long after going stale it may be served while one refill runs (RFC 5861 section 3).
    pub stale_while_revalidate_s: u32,
    /// How long after going stale it may be served when the origin fails (RFC 5861 section 4).
    pub stale_if_error_s: u32,
    /// Never serve it stale; with `fresh_for_s == 0` (a `no-cache` response) revalidate on every use.
    pub must_revalidate: bool,
}

/// The targeted cache-control fields etagd obeys by default, in order (RFC 9213 section 2.2): its own, then
/// the one every CDN reads.
pub const DEFAULT_TARGETED_FIELDS: [&str; 2] = ["etagd-cache-control", "cdn-cache-control"];

/// Deployment choices that widen or shape what [`storable`] allows.
#[derive(Debug, Clone)]
pub struct Policy {
    /// A route rule's TTL for responses without explicit freshness (`u64::MAX`: until invalidated). It never
    /// overrides `no-store`, `private` or explicit origin freshness, and applies only to heuristically cacheable
    /// statuses or `public` responses, so an error page is not pinned for the route's TTL.
    pub route_ttl_s: Option<u64>,
    /// A route rule's lifetime for 404 and 410 responses without explicit freshness, in place of `route_ttl_s`
    /// (and of `ttl_override_s` when both are set): negative caching. See `operator` for every route lifetime.
    pub negative_ttl_s: Option<u64>,
    /// A route rule's lifetime replacing the origin's for heuristically cacheable (or `public`) responses,
    /// counted from storing (beyond the RFCs; never overrides a refusal such as `no-store` or `private`).
    pub ttl_override_s: Option<u64>,
    /// A route rule's cap on every lifetime, counted from storing.
    pub ttl_max_s: Option<u64>,
    /// `stale-while-revalidate` window when the response gives none.
    pub default_stale_while_revalidate_s: u32,
    /// `stale-if-error` window when the response gives none.
    pub default_stale_if_error_s: u32,
    /// Allow RFC 9111 section 4.2.2 heuristic freshness from `Last-Modified`.
    pub heuristic_freshness: bool,
    /// Targeted cache-control fields, in order (RFC 9213): the first present with a valid, non-empty Dictionary
    /// value replaces `Cache-Control` and `Expires` for etagd's storage and freshness decisions.
    pub targeted: Vec<HeaderName>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            route_ttl_s: None,
            negative_ttl_s: None,
            ttl_override_s: None,
            ttl_max_s: None,
            default_stale_while_revalidate_s: 0,
            default_stale_if_error_s: 0,
            heuristic_freshness: false,
            targeted: DEFAULT_TARGETED_FIELDS.iter().map(|name| HeaderName::from_static(name)).collect(),
        }
    }
}

/// The caching directives that rule a response for etagd: the first valid targeted field's (RFC 9213 section
/// 2.2), else `Cache-Control`'s. The flag says whether a targeted field ruled (then `Expires` is ignored too).
pub fn ruling_directives(resp_headers: &HeaderMap, targeted: &[HeaderName]) -> (CacheControl, bool) {
    match targeted.iter().find_map(|name| targeted_directives(resp_headers, name)) {
        Some(cc) => (cc, true),
        None => (CacheControl::from_headers(resp_headers), false),
    }
}

/// One targeted field read as directives: an RFC 8941 Dictionary (RFC 9213 section 2.1), unlike the lenient
/// `Cache-Control` parser, so a value that does not parse, or an empty one, counts as absent.
fn targeted_directives(resp_headers: &HeaderMap, name: &HeaderName) -> Option<CacheControl> {
    let lines: Vec<&[u8]> = resp_headers.get_all(name).iter().map(|value| value.as_bytes()).collect();
    if lines.is_empty() {
        return None;
    }
    // Several lines are one list (RFC 9110 section 5.3).
    let joined = lines.join(&b", "[..]);
    let dictionary = sfv::Parser::parse_dictionary(&joined).ok()?;
    if dictionary.is_empty() {
        return None;
    }
    let mut directives: Vec<String> = Vec::new();
    for (key, member) in &dictionary {
        // Parameters and inner lists carry nothing RFC 9213 defines; a false boolean is an absent directive.
        let sfv::ListEntry::Item(item) = member else { continue };
        match &item.bare_item {
            sfv::BareItem::Boolean(true) => directives.push(key.clone()),
            sfv::BareItem::Integer(n) if *n >= 0 => directives.push(format!("{key}={n}")),
            // A directive with a value of the wrong type is not understood: ignored (RFC 9213 section 2.1).
            _ => {}
        }
    }
    let mut synthetic = HeaderMap::new();
    synthetic.insert(http::header::CACHE_CONTROL, HeaderValue::from_str(&directives.join(", ")).ok()?);
    Some(CacheControl::from_headers(&synthetic))
}

/// Final statuses whose caching requirements etagd implements (RFC 9110 section 15; RFC 9111 section 5.2.2.3).
fn understood(status: StatusCode) -> bool {
    is_heuristically_cacheable(status) || matches!(status.as_u16(), 302 | 303 | 307)
}

/// Statuses that are heuristically cacheable (RFC 9110 section 15.1): a cache may store them without explicit
/// freshness.
pub fn is_heuristically_cacheable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501)
}

/// Decides whether a shared cache may store the response to this request, and with which [`Freshness`].
///
/// `now` stands in for a missing or invalid `Date` (RFC 9110 section 6.6.1: the time of receipt). Body size is
/// the caller's to check ([`NoStoreReason::TooLarge`]).
pub fn storable(
    method: &Method,
    req_headers: &HeaderMap,
    status: StatusCode,
    resp_headers: &HeaderMap,
    policy: &Policy,
    now: SystemTime,
) -> Result<Freshness, NoStoreReason> {
    // RFC 9111 section 3: the request method is understood and defined as cacheable; etagd keeps to GET and HEAD.
    if method != Method::GET && method != Method::HEAD {
        return Err(NoStoreReason::Method);
    }
    // RFC 9111 section 5.2.1.5.
    if CacheControl::from_headers(req_headers).no_store {
        return Err(NoStoreReason::RequestNoStore);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        return Err(NoStoreReason::PartialContent);
    }
    // RFC 9111 section 3: the status is final. A 304 refreshes a stored response (section 4.3.4), the caller's job.
    if status.is_informational() || status == StatusCode::NOT_MODIFIED {
        return Err(NoStoreReason::Status);
    }
    let (cc, targeted) = ruling_directives(resp_headers, &policy.targeted);
    // RFC 9111 section 5.2.2.5.
    // RFC 9111 section 5.2.2.3: with must-understand, a cache that implements the status code's caching rules
    // ignores no-store (the directive pair keeps older caches from storing it).
    if cc.no_store && !(cc.must_understand && understood(status)) {
        return Err(NoStoreReason::NoStore);
    }
    // RFC 9111 section 5.2.2.7: a shared cache MUST NOT store a private response.
    if cc.private {
        return Err(NoStoreReason::Private);
    }
    // RFC 9111 section 3.5: only these three directives make an authenticated answer shareable.
    if req_headers.contains_key(AUTHORIZATION) && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate) {
        return Err(NoStoreReason::Authorization);
    }
    if resp_headers.contains_key(SET_COOKIE) {
        return Err(NoStoreReason::SetCookie);
    }
    // RFC 9111 section 4.1: `Vary: *` always fails to match.
    if vary_names(resp_headers).is_err() {
        return Err(NoStoreReason::VaryStar);
    }

    let explicit = explicit_lifetime(&cc, resp_headers, now, !targeted);
    // RFC 9111 section 4.2.2: heuristics (and, by etagd's choice, route TTLs) only for heuristically cacheable
    // statuses or responses marked public.
    let implicit_allowed = is_heuristically_cacheable(status) || cc.public;
    let lifetime = match explicit {
        Some(seconds) => Some(seconds),
        None if !implicit_allowed => return Err(NoStoreReason::Status),
        None => policy
            .route_default(status)
            .or_else(|| policy.heuristic_freshness.then(|| heuristic_lifetime(resp_headers, now)).flatten()),
    };
    let initial_age_s = initial_age(resp_headers, now);
    // Beyond the RFCs: the route's ttl_override and ttl_max (`operator`), after every refusal above.
    let lifetime = policy.bound_lifetime(status, lifetime, implicit_allowed, initial_age_s);
    let fresh_for_s = match (cc.no_cache, lifetime) {
        // RFC 9111 section 5.2.2.4: storable, but never used without revalidation.
        (true, _) => 0,
        (false, Some(seconds)) => seconds,
        (false, None) => return Err(NoStoreReason::NoFreshness),
    };

    // RFC 9111 section 5.2.2.10: s-maxage implies proxy-revalidate for a shared cache; section 4.2.4: none of
    // these may be served stale, whatever stale-* says.
    let must_revalidate = cc.must_revalidate || cc.proxy_revalidate || cc.no_cache || cc.s_maxage.is_some();
    let window = |directive: Option<u64>, default: u32| -> u32 {
        if must_revalidate {
            0
        } else {
            directive.map_or(default, |seconds| u32::try_from(seconds).unwrap_or(u32::MAX))
        }
    };
    Ok(Freshness {
        fresh_for_s,
        initial_age_s,
        stale_while_revalidate_s: window(cc.stale_while_revalidate, policy.default_stale_while_revalidate_s),
        stale_if_error_s: window(cc.stale_if_error, policy.default_stale_if_error_s),
        must_revalidate,
    })
}

/// RFC 9111 section 4.2.1, in order: `s-maxage` (shared caches), `max-age`, then `Expires` minus `Date`.
fn explicit_lifetime(cc: &CacheControl, headers: &HeaderMap, now: SystemTime, use_expires: bool) -> Option<u64> {
    if let Some(seconds) = cc.s_maxage.or(cc.max_age) {
        return Some(seconds);
    }
    if !use_expires {
        return None;
    }
    let mut lines = headers.get_all(EXPIRES).iter();
    let expires = lines.next()?;
    // RFC 9111 section 4.2.1: several Expires lines may make the response stale.
    if lines.next().is_some() {
        return Some(0);
    }
    // RFC 9111 section 5.3: an invalid date, especially "0", is a time in the past.
    let Some(expires) = parse_date(expires, now) else {
        return Some(0);
    };
    let date = date_or(headers, now);
    Some(seconds_between(date, expires).min(DELTA_SECONDS_MAX))
}

/// RFC 9111 section 4.2.2: 10% of the time since `Last-Modified`, capped at [`HEURISTIC_MAX_S`].
fn heuristic_lifetime(headers: &HeaderMap, now: SystemTime) -> Option<u64> {
    let last_modified = parse_date(headers.get(LAST_MODIFIED)?, now)?;
    let date = date_or(headers, now);
    // A Last-Modified after Date is nonsense; no heuristic can be drawn from it.
    let age = date.duration_since(last_modified).ok()?;
    Some((age.as_secs() / 10).min(HEURISTIC_MAX_S))
}

/// The `Age` value (RFC 9111 section 5.1): a list (on one line or on several) counts by its first member, and an
/// invalid first member means no `Age` at all (0).
///
/// The apparent age from `Date` counts too (section 4.2.3), less the one second of `Date`'s resolution.
fn initial_age(headers: &HeaderMap, now: SystemTime) -> u64 {
    let first = headers.get(AGE).and_then(|value| std::str::from_utf8(value.as_bytes()).ok());
    let member = first.and_then(|text| text.split(',').next()).map(|member| member.trim_matches([' ', '\t']));
    let age_value = member.and_then(parse_delta_seconds).unwrap_or(0);
    let apparent = seconds_between(date_or(headers, now), now).saturating_sub(1);
    age_value.max(apparent)
}

fn date_or(headers: &HeaderMap, now: SystemTime) -> SystemTime {
    headers.get(DATE).and_then(|date| parse_date(date, now)).unwrap_or(now)
}

/// An HTTP date in any format a recipient must accept, read leniently (`date::parse`).
fn parse_date(value: &HeaderValue, now: SystemTime) -> Option<SystemTime> {
    crate::date::parse(std::str::from_utf8(value.as_bytes()).ok()?, now)
}

/// Whole seconds from `from` to `to`, 0 when `to` is not later.
fn seconds_between(from: SystemTime, to: SystemTime) -> u64 {
    to.duration_since(from).unwrap_or(Duration::ZERO).as_secs()
}

/// Whether a response gives its own freshness (RFC 9111 section 4.2.1: `s-maxage`, `max-age` or `Expires`),
/// as opposed to getting it from a route rule. Only such responses are stored for, or served to, requests
/// carrying cookies that matter.
pub fn has_explicit_freshness(resp_headers: &HeaderMap, targeted: &[HeaderName]) -> bool {
    let (cc, ruled) = ruling_directives(resp_headers, targeted);
    cc.s_maxage.is_some() || cc.max_age.is_some() || (!ruled && resp_headers.contains_key(http::header::EXPIRES))
}

/// Whether the client asked to bypass stored responses: request `Cache-Control: no-cache`, or `Pragma: no-cache`
/// when the request has no `Cache-Control` (RFC 9111 sections 5.2.1.4 and 5.4). etagd revalidates with the
/// origin instead of serving from the cache.
pub fn request_bypasses(req_headers: &HeaderMap) -> bool {
    if req_headers.contains_key(http::header::CACHE_CONTROL) {
        // RFC 9111 section 5.4: Pragma is ignored when Cache-Control is present.
        return CacheControl::from_headers(req_headers).no_cache;
    }
    req_headers.get_all(PRAGMA).iter().any(|value| {
        value.as_bytes().split(|&b| b == b',').any(|directive| directive.trim_ascii().eq_ignore_ascii_case(b"no-cache"))
    })
}

#[cfg(test)]
mod tests {
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
            (
                vec![("cache-control", "max-age=60"), ("date", &ago_100)],
                Ok(Freshness { initial_age_s: 99, ..fresh(60) }),
            ),
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
        let defaults =
            Policy { default_stale_while_revalidate_s: 30, default_stale_if_error_s: 600, ..Policy::default() };
        let stale =
            |swr: u32, sie: u32| Freshness { stale_while_revalidate_s: swr, stale_if_error_s: sie, ..fresh(60) };
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
            (
                &none,
                vec![("cache-control", "max-age=60"), ("age", "15")],
                Ok(Freshness { initial_age_s: 15, ..fresh(60) }),
            ),
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
            (
                vec![("cdn-cache-control", "max-age=\"3600\", s-maxage=5"), ("cache-control", "no-store")],
                Ok(revalidate(5)),
            ),
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
            let got =
                storable(&Method::GET, &HeaderMap::new(), StatusCode::OK, &response, &Policy::default(), received);
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
}
