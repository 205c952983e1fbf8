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
mod tests;
