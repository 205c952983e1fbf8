//! What the exchange is told once, at start-up: route rules, stale defaults, body limit, compression, triggers.

use std::time::Duration;

use crate::cacheability::Policy;
use crate::encoding::CompressionPolicy;
use crate::key::{QueryFilter, ResourceKey};

use super::context::TrustedProxies;

/// The default [`ExchangeConfig::max_body_bytes`]: 64 MiB, enough for a JSON API or a report export. A body
/// larger than one Memcached item is stored in chunks; admission (`CacheConfig::max_object_fraction`) may cap
/// it lower on a small Memcached.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// A route rule: caching settings for every resource whose normalised path (`ResourceKey::path`) starts with
/// `prefix`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// Path prefix, matched against the normalised path, so `/%61pi/x` gets `/api`'s rule as it gets its entry.
    pub prefix: String,
    /// Cacheable for this many seconds even without freshness headers; `u64::MAX` = until invalidated.
    pub ttl_s: Option<u64>,
    /// Lifetime of 404 and 410 answers without freshness headers (negative caching), in place of `ttl_s` and
    /// of `ttl_override_s`; unset, `ttl_s` covers them as any heuristically cacheable status.
    pub negative_ttl_s: Option<u64>,
    /// Replaces the origin's freshness lifetime of every storable answer (heuristically cacheable or `public`),
    /// counted from storing. Never stores what the origin refused (`no-store`, `private`), never makes
    /// `no-cache` fresh, never allows stale serving that `s-maxage` or `must-revalidate` forbid.
    pub ttl_override_s: Option<u64>,
    /// Caps every freshness lifetime, counted from storing.
    pub ttl_max_s: Option<u64>,
    /// Tags given to every entry under the prefix.
    pub tags: Vec<String>,
    /// `stale-while-revalidate` default, seconds.
    pub stale_while_revalidate_s: Option<u32>,
    /// `stale-if-error` default, seconds.
    pub stale_if_error_s: Option<u32>,
    /// Cookies that do not make a request personal under this route (names, or prefixes ending in `*`), on top
    /// of [`ExchangeConfig::ignore_cookies`].
    pub ignore_cookies: Vec<String>,
    /// Query parameters left out of the key under this route, on top of [`ExchangeConfig::query`]'s; and, when
    /// `keep` is set, the only ones kept.
    pub query: QueryFilter,
}

impl Route {
    /// Refuses lifetimes that contradict each other (`ttl_override` with `ttl` or `ttl_max`, a `ttl` or
    /// `negative_ttl` above `ttl_max`); the rules are `cacheability`'s.
    pub fn check(&self) -> Result<(), crate::cacheability::LifetimeError> {
        ExchangeConfig::default().policy(self).check_lifetimes()
    }
}

/// Which origin answers invalidate cached entries as a side effect (both on by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Triggers {
    /// A successful (2xx/3xx) POST, PUT, PATCH, DELETE, ... invalidates its target and the `Location` and
    /// `Content-Location` it answers with on the same host (RFC 9111 section 4.4).
    pub unsafe_methods: bool,
    /// An `Etagd-Invalidate: tag1 tag2` response header invalidates those tags.
    pub invalidate_header: bool,
}

impl Default for Triggers {
    fn default() -> Self {
        Self { unsafe_methods: true, invalidate_header: true }
    }
}

/// A cap on concurrent requests to the origin, so a cold cache (a Memcached restart, a flush of everything)
/// cannot send thousands of distinct keys to the origin at once. Past the cap requests queue; past the queue a
/// stale copy is served where one exists and may be (not `must-revalidate`), else a 503 with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginLimit {
    /// Requests in flight to the origin at once.
    pub max_concurrency: usize,
    /// Requests waiting for a slot; the next one is refused at once.
    pub max_queue: usize,
    /// The `Retry-After` of a refusal, seconds.
    pub retry_after_s: u32,
}

impl Default for OriginLimit {
    fn default() -> Self {
        Self { max_concurrency: 256, max_queue: 1024, retry_after_s: 1 }
    }
}

/// The exchange's settings, shared by every request. The sidecar builds it from its flags and TOML file, the
/// tower layer from its builder.
#[derive(Debug, Clone)]
pub struct ExchangeConfig {
    /// Route rules; the longest matching prefix wins (the list is kept sorted that way).
    pub routes: Vec<Route>,
    /// The rule for paths no route matches.
    pub fallback: Route,
    /// `stale-while-revalidate` when neither the response nor a route gives one.
    pub stale_while_revalidate_s: u32,
    /// `stale-if-error` when neither the response nor a route gives one.
    pub stale_if_error_s: u32,
    /// How long past its freshness an entry may stand in when the origin cannot be reached at all (connection
    /// refused, reset, timed out), when the response gave no `stale-if-error`. RFC 9111 section 4.2.4 allows
    /// serving stale when disconnected, unless `must-revalidate`, `proxy-revalidate`, `no-cache` or `s-maxage`
    /// forbid it; an invalidated entry is never served. An origin 5xx is an answer, not a disconnection: only
    /// `stale-if-error` covers it.
    pub stale_if_unreachable_s: u32,
    /// Honour a client's wish for a fresher answer: request `no-cache` (or `Pragma: no-cache`), `max-age` and
    /// `min-fresh` then send the request to the origin, conditionally (RFC 9111 sections 5.2.1.1, 5.2.1.3,
    /// 5.2.1.4). Off by default, as in Varnish and nginx: RFC 9111 makes them preferences, and honouring them lets
    /// any client send every request to the origin. `max-stale` and `only-if-cached`, which spare the origin,
    /// are always honoured.
    pub client_freshness: bool,
    /// Heuristic freshness (RFC 9111 section 4.2.2: 10 % of the time since `Last-Modified`, capped at a day)
    /// for responses without explicit freshness. Off by default: on a shared cache a guess made once is served
    /// to everyone until it expires, and an origin that wants caching says so.
    pub heuristic_freshness: bool,
    /// Bodies up to this size are stored; larger ones stream through.
    pub max_body_bytes: usize,
    /// Codings produced once per fill (empty: none).
    pub compression: CompressionPolicy,
    /// Invalidation side effects of origin answers.
    pub triggers: Triggers,
    /// Peers whose forwarding headers are believed and keyed.
    pub trusted_proxies: TrustedProxies,
    /// Request headers dropped from peers that are not trusted proxies (default:
    /// `exchange::UNTRUSTED_FORWARDING_HEADERS`).
    pub untrusted_headers: Vec<http::HeaderName>,
    /// Cookies that never make a request personal (names, or prefixes ending in `*`: analytics cookies such as
    /// `_ga`, `_ga_*`, `_gid`). Any other cookie does: such a request is neither served from nor stored into an
    /// entry whose freshness comes only from a route rule. Empty by default: every cookie counts.
    pub ignore_cookies: Vec<String>,
    /// Query parameters left out of every key (e.g. `key::MARKETING_PARAMETERS`); empty by default: every
    /// parameter names the resource. The origin always gets the full URL.
    pub query: QueryFilter,
    /// Targeted cache-control fields, in order (RFC 9213; default `Etagd-Cache-Control`, `CDN-Cache-Control`):
    /// the first valid one replaces `Cache-Control` and `Expires` for etagd's own decisions.
    pub targeted_fields: Vec<http::HeaderName>,
    /// Removes the targeted fields from answers (default: passed on, a CDN in front may need them).
    pub strip_targeted: bool,
    /// The cap on concurrent origin requests (`None`: no cap).
    pub origin_limit: Option<OriginLimit>,
    /// How long an origin 5xx sends the resource straight to the origin (short: the next good answer should be
    /// stored soon, but waiters must stop queueing behind a failing fill).
    pub server_error_pass: Duration,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        Self {
            routes: Vec::new(),
            fallback: Route::default(),
            stale_while_revalidate_s: 0,
            stale_if_error_s: 0,
            stale_if_unreachable_s: 300,
            client_freshness: false,
            heuristic_freshness: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            compression: CompressionPolicy::default(),
            triggers: Triggers::default(),
            trusted_proxies: TrustedProxies::default(),
            untrusted_headers: super::UNTRUSTED_FORWARDING_HEADERS
                .iter()
                .map(|name| http::HeaderName::from_static(name))
                .collect(),
            ignore_cookies: Vec::new(),
            query: QueryFilter::default(),
            targeted_fields: Policy::default().targeted,
            strip_targeted: false,
            origin_limit: Some(OriginLimit::default()),
            server_error_pass: Duration::from_secs(1),
        }
    }
}

impl ExchangeConfig {
    /// Sorts the routes so that the longest prefix is tried first.
    #[must_use]
    pub fn with_routes(mut self, mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        self.routes = routes;
        self
    }

    /// The rule for a normalised path.
    pub fn route_for(&self, path: &str) -> &Route {
        self.routes.iter().find(|route| path.starts_with(&route.prefix)).unwrap_or(&self.fallback)
    }

    /// The key a request's resource is stored under: `key` without the query parameters the global and the
    /// route's filters drop. The admin API names URLs through this too.
    pub fn storage_key(&self, key: ResourceKey) -> ResourceKey {
        let route = self.route_for(key.path());
        // The common case, no filter anywhere, costs nothing.
        if self.query.is_empty() && route.query.is_empty() {
            return key;
        }
        let mut filter = self.query.clone();
        filter.ignore.extend(route.query.ignore.iter().cloned());
        filter.keep = route.query.keep.clone().or(filter.keep);
        key.filtered(&filter)
    }

    /// The storage policy under a route (RFC 9111 rules widened by the route's TTL and stale defaults).
    pub(crate) fn policy(&self, route: &Route) -> Policy {
        Policy {
            route_ttl_s: route.ttl_s,
            negative_ttl_s: route.negative_ttl_s,
            ttl_override_s: route.ttl_override_s,
            ttl_max_s: route.ttl_max_s,
            default_stale_while_revalidate_s: route.stale_while_revalidate_s.unwrap_or(self.stale_while_revalidate_s),
            default_stale_if_error_s: route.stale_if_error_s.unwrap_or(self.stale_if_error_s),
            heuristic_freshness: self.heuristic_freshness,
            targeted: self.targeted_fields.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_wins_and_the_fallback_catches_the_rest() {
        let route = |prefix: &str, ttl: u64| Route { prefix: prefix.to_owned(), ttl_s: Some(ttl), ..Route::default() };
        let config = ExchangeConfig::default().with_routes(vec![route("/api", 1), route("/api/servers", 2)]);
        assert_eq!(config.route_for("/api/servers/7").ttl_s, Some(2));
        assert_eq!(config.route_for("/api/x").ttl_s, Some(1));
        assert_eq!(config.route_for("/other").ttl_s, None);
    }
}
