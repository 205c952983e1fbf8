//! A tower layer giving a Rust service (axum, or any `tower::Service` over `http`) the shared cache in process:
//! the seed's Django `@etag` plus `cache_response`, with the sidecar's key schema, store, engine and request
//! exchange. The layer is an adapter: each request runs through [`Exchange::run`](crate::exchange::Exchange::run)
//! with the wrapped service as its upstream, exactly as the sidecar runs it with the app.
//!
//! [`EtagCacheLayer`] wraps a service in [`EtagCache`]. For GET and HEAD it looks the request up in the shared
//! cache; a fresh entry is answered without calling the service (304 when the client's `If-None-Match` or
//! `If-Modified-Since` matches, else the stored body); a miss calls the service, stores its answer when
//! RFC 9111 allows it, and answers with the stored `ETag`. A successful POST, PUT, PATCH or DELETE through the
//! layer invalidates its URL and the `Location` / `Content-Location` it answers with, and an
//! `Etagd-Invalidate: tag1 tag2` response header invalidates those tags, for every replica sharing the store.
//! Every answer carries a `Cache-Status` header (RFC 9211) such as `etagd; hit` or
//! `etagd; fwd=uri-miss; fwd-status=200; stored`, and answers from storage carry `Age`.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//!
//! use axum::Router;
//! use axum::body::Body;
//! use axum::http::{Request, StatusCode};
//! use axum::routing::get;
//! use etagd_client::cache::{Cache, CacheConfig};
//! use etagd_client::layer::EtagCacheLayer;
//! use etagd_client::store::memory::MemoryStore;
//! use tower::ServiceExt;
//!
//! async fn list_servers() -> &'static str {
//!     r#"["web-1","web-2"]"#
//! }
//!
//! async fn add_server() -> StatusCode {
//!     // ... save the new server. The layer invalidates /api/servers itself once this succeeds.
//!     StatusCode::CREATED
//! }
//!
//! fn app(cache: Cache) -> Router {
//!     // Cached until invalidated (the seed's model), tagged "servers".
//!     let cached = EtagCacheLayer::new(cache).tags(["servers"]);
//!     Router::new().route("/api/servers", get(list_servers).post(add_server)).layer(cached)
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let cache = Cache::new(Arc::new(MemoryStore::new(64 << 20)), CacheConfig::default());
//! let app = app(cache);
//! let get = || Request::get("/api/servers").header("host", "api.example.com");
//!
//! let first = app.clone().oneshot(get().body(Body::empty()).unwrap()).await.unwrap();
//! let etag = first.headers()["etag"].clone();
//! assert_eq!(first.headers()["cache-status"], "etagd; fwd=uri-miss; fwd-status=200; stored");
//!
//! let again = get().header("if-none-match", etag).body(Body::empty()).unwrap();
//! let second = app.clone().oneshot(again).await.unwrap();
//! assert_eq!(second.status(), StatusCode::NOT_MODIFIED);
//! assert_eq!(second.headers()["cache-status"], "etagd; hit");
//!
//! let post = Request::post("/api/servers").header("host", "api.example.com").body(Body::empty()).unwrap();
//! app.clone().oneshot(post).await.unwrap();
//! let after = app.clone().oneshot(get().body(Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(after.headers()["cache-status"], "etagd; fwd=uri-miss; fwd-status=200; stored");
//! # });
//! ```
//!
//! Invalidating explicitly, by tag, from code that runs outside a request through the layer (a worker, a
//! signal handler), is one call on the same [`Cache`]:
//!
//! ```
//! # use std::sync::Arc;
//! # use etagd_client::cache::{Cache, CacheConfig, Invalidation};
//! # use etagd_client::store::memory::MemoryStore;
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let cache = Cache::new(Arc::new(MemoryStore::new(1 << 20)), CacheConfig::default());
//! let invalidation = Invalidation { tags: vec!["servers".into()], ..Default::default() };
//! // When a tag's counter cannot be written the engine invalidates the whole namespace instead; `complete`
//! // is false only when even that failed.
//! let report = cache.invalidate(&invalidation).await.expect("a tag-only invalidation is well formed");
//! assert!(report.complete);
//! # });
//! ```
//!
//! Serving it is plain axum (this part binds a socket, so it is not run here):
//!
//! ```no_run
//! # async fn serve(app: axum::Router) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! `crates/etagd-client/examples/axum_app.rs` is a runnable version with a slow handler and Memcached.
//!
//! # What is stored, and for how long
//!
//! The rules are the exchange's, the same as the sidecar's (see `ARCHITECTURE.md`):
//!
//! - Only answers to GET and HEAD. HEAD is filled with a GET to the inner service, since both share one entry.
//! - Only what a shared cache may store (RFC 9111 section 3): no `no-store`, `private`, `Set-Cookie` or
//!   `Vary: *` answers, and answers to `Authorization` requests only when `public`, `s-maxage` or
//!   `must-revalidate` allow it. A refusal caused by the answer marks the URL hit-for-pass for the engine's
//!   `pass_ttl`, so concurrent callers stop waiting for a fill that will never come; a refusal caused by the
//!   request alone never does.
//! - Answers without explicit freshness (`Cache-Control: max-age`, `Expires`) are kept until invalidated, like
//!   the seed; [`EtagCacheLayer::ttl`] bounds that. The service's own `Cache-Control` always wins.
//! - Bodies up to [`EtagCacheLayer::max_body_bytes`] (64 MiB by default; one larger than a Memcached item is
//!   stored in chunks, within the engine's admission limit); a larger one is streamed through uncached
//!   (`Cache-Status: ...; detail=too-large`), never cut or failed.
//! - Tags: the layer's ([`EtagCacheLayer::tags`]) plus those the service names in `Surrogate-Key`, which the
//!   layer removes from the answer.
//! - `Range`, `If-Match`, `If-Unmodified-Since` and `If-Range` requests go to the service uncached
//!   (`Cache-Status: etagd; fwd=request`). A client's `Cache-Control: no-cache` does not bypass the cache, as
//!   in Varnish and nginx.
//! - The key is the sidecar's (`ResourceKey::from_request`): scheme, host, normalised path and query.
//!   `X-Forwarded-Proto` and `X-Forwarded-Host` count, and reach the service, only when
//!   [`EtagCacheLayer::trust_forwarding_headers`] says the callers are trusted proxies; otherwise they and the
//!   rest of `UNTRUSTED_FORWARDING_HEADERS` are removed before the service sees the request.
//!
//! A stale entry within `stale-while-revalidate` (or soft-invalidated, within its grace period) is served as it
//! is while one caller in the whole fleet refreshes it in the background, calling a clone of the inner service
//! with a conditional GET. Past those windows the entry is revalidated on the request path; a 304 from the
//! service refreshes it without a new body.
//!
//! A store failure never fails a request: on `Unavailable`, a busy fill or a pass, the inner service answers and
//! nothing is stored. The only errors [`EtagCache`] returns are the inner service's own, when no stale entry
//! may stand in for its answer.
//!
//! # Differences from the sidecar
//!
//! - No proxy hop: the cache runs inside the service, so a hit costs no extra connection or copy, and a miss
//!   calls the handler directly.
//! - It covers only the routes it wraps, and its settings replace the sidecar's route rules.
//! - It is the same exchange with the same key schema and entry format over the same store: pointed at the same
//!   Memcached with the same namespace, the sidecar and an in-process service share entries, fills and
//!   invalidations (`etagctl --memcached ... --namespace ... flush --tag servers` reaches both).
//! - Documented defaults that differ: no compression (put a compression layer outside it, or turn it on with
//!   [`EtagCacheLayer::compression`]); answers without freshness headers kept until invalidated; the peer
//!   address is unknown, so forwarding headers are trusted all or nothing; no cap on concurrent calls of the
//!   inner service unless [`EtagCacheLayer::origin_limit`] sets one.

mod future;
mod service;

use std::time::Duration;

use tower::Layer;

pub use future::ResponseFuture;
pub use service::{EtagCache, ServiceUpstream};

use crate::cache::Cache;
use crate::encoding::CompressionPolicy;
use crate::exchange::{Exchange, ExchangeConfig, OriginLimit, Route, Triggers, TrustedProxies};

/// The body of every response [`EtagCache`] returns: the exchange's [`Body`](crate::body::Body).
pub type ResponseBody = crate::body::Body;

/// The default [`EtagCacheLayer::max_body_bytes`]: 64 MiB, the sidecar's default.
pub const DEFAULT_MAX_BODY_BYTES: usize = crate::exchange::DEFAULT_MAX_BODY_BYTES;

/// A [`Layer`] that wraps services in [`EtagCache`]. Build it with [`EtagCacheLayer::new`] and the builder
/// methods; cheap to clone.
///
/// See the [module docs](crate::layer) for an example.
#[derive(Clone, Debug)]
pub struct EtagCacheLayer {
    cache: Cache,
    config: ExchangeConfig,
    exchange: Exchange,
}

impl EtagCacheLayer {
    /// A layer over `cache`: answers without explicit freshness kept until invalidated, no tags of its own,
    /// bodies up to [`DEFAULT_MAX_BODY_BYTES`], no compression, invalidation triggers on, forwarding headers
    /// not trusted.
    pub fn new(cache: Cache) -> Self {
        let config = ExchangeConfig {
            fallback: Route { ttl_s: Some(u64::MAX), ..Route::default() },
            compression: CompressionPolicy { codings: Vec::new(), ..CompressionPolicy::default() },
            // The service is in process: its own runtime bounds it; a cap is the operator's choice here.
            origin_limit: None,
            ..ExchangeConfig::default()
        };
        let exchange = Exchange::new(cache.clone(), config.clone());
        Self { cache, config, exchange }
    }

    fn with(mut self, change: impl FnOnce(&mut ExchangeConfig)) -> Self {
        change(&mut self.config);
        self.exchange = Exchange::new(self.cache.clone(), self.config.clone());
        self
    }

    /// Keeps answers without explicit freshness (`Cache-Control: max-age`, `s-maxage`, `Expires`) fresh for
    /// `ttl` (whole seconds) instead of until invalidated. `Duration::MAX` means until invalidated.
    #[must_use]
    pub fn ttl(self, ttl: Duration) -> Self {
        self.with(|config| config.fallback.ttl_s = Some(seconds(ttl)))
    }

    /// Keeps 404 and 410 answers without explicit freshness for `ttl` instead of the layer's
    /// [`ttl`](Self::ttl) (negative caching; RFC 9111 section 4.2.2 lists both as heuristically cacheable).
    #[must_use]
    pub fn negative_ttl(self, ttl: Duration) -> Self {
        self.with(|config| config.fallback.negative_ttl_s = Some(seconds(ttl)))
    }

    /// Keeps every storable answer fresh for `ttl` from when it is stored, whatever its `max-age`, `s-maxage` or
    /// `Expires` say (beyond the RFCs, like Varnish's `beresp.ttl`). It never stores a `no-store` or `private`
    /// answer, never makes `no-cache` fresh and never serves stale where `s-maxage` or `must-revalidate`
    /// forbid it; 404 and 410 get [`negative_ttl`](Self::negative_ttl) instead when one is set.
    #[must_use]
    pub fn ttl_override(self, ttl: Duration) -> Self {
        self.with(|config| config.fallback.ttl_override_s = Some(seconds(ttl)))
    }

    /// Caps how long any answer is served from storage without asking the service, whatever it says (the
    /// layer's default "until invalidated" included).
    #[must_use]
    pub fn ttl_max(self, ttl: Duration) -> Self {
        self.with(|config| config.fallback.ttl_max_s = Some(seconds(ttl)))
    }

    /// Serves an entry up to `window` past its freshness while it is refreshed in the background, for answers
    /// that do not say otherwise with `stale-while-revalidate` (RFC 5861 section 3). Default: zero.
    #[must_use]
    pub fn stale_while_revalidate(self, window: Duration) -> Self {
        let seconds = u32::try_from(window.as_secs()).unwrap_or(u32::MAX);
        self.with(|config| config.stale_while_revalidate_s = seconds)
    }

    /// Serves an entry up to `window` past its freshness when the service fails or answers 5xx, for answers
    /// that do not say otherwise with `stale-if-error` (RFC 5861 section 4). Default: zero.
    #[must_use]
    pub fn stale_if_error(self, window: Duration) -> Self {
        let seconds = u32::try_from(window.as_secs()).unwrap_or(u32::MAX);
        self.with(|config| config.stale_if_error_s = seconds)
    }

    /// Tags every stored answer with these, besides any in its `Surrogate-Key` header, so that
    /// [`Cache::invalidate`] by tag drops them. Replaces tags given before.
    #[must_use]
    pub fn tags<I, T>(self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let mut unique: Vec<String> = Vec::new();
        for tag in tags.into_iter().map(Into::into) {
            if !unique.contains(&tag) {
                unique.push(tag);
            }
        }
        self.with(|config| config.fallback.tags = unique)
    }

    /// Stores bodies up to `max` bytes; larger ones are streamed through uncached. The store's own item limit
    /// still applies (an answer it refuses is served, not stored).
    #[must_use]
    pub fn max_body_bytes(self, max: usize) -> Self {
        self.with(|config| config.max_body_bytes = max)
    }

    /// Produces these codings once per fill and negotiates them per request, as the sidecar does.
    #[must_use]
    pub fn compression(self, policy: CompressionPolicy) -> Self {
        self.with(|config| config.compression = policy)
    }

    /// Caps concurrent calls of the inner service on cache misses (off by default in process): past the cap
    /// requests queue, past the queue a stale copy stands in where one may, else a 503 with `Retry-After`.
    #[must_use]
    pub fn origin_limit(self, limit: Option<OriginLimit>) -> Self {
        self.with(|config| config.origin_limit = limit)
    }

    /// Honours a client's `no-cache`, `max-age` and `min-fresh` by revalidating with the inner service (off by
    /// default, as in the sidecar: RFC 9111 makes them preferences).
    #[must_use]
    pub fn client_freshness(self, honour: bool) -> Self {
        self.with(|config| config.client_freshness = honour)
    }

    /// Which origin answers invalidate as a side effect (both on by default).
    #[must_use]
    pub fn triggers(self, triggers: Triggers) -> Self {
        self.with(|config| config.triggers = triggers)
    }

    /// Believes every caller's `X-Forwarded-Proto` / `X-Forwarded-Host` and keys on them: for a service reachable
    /// only through proxies the operator runs. Off by default, since the layer cannot see the peer address.
    #[must_use]
    pub fn trust_forwarding_headers(self, trusted: bool) -> Self {
        let proxies = if trusted { TrustedProxies::everyone() } else { TrustedProxies::default() };
        self.with(|config| config.trusted_proxies = proxies)
    }

    /// The cache engine.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The exchange every wrapped service runs requests through.
    pub fn exchange(&self) -> &Exchange {
        &self.exchange
    }
}

/// A lifetime in whole seconds; `Duration::MAX` means until invalidated.
fn seconds(ttl: Duration) -> u64 {
    if ttl == Duration::MAX { u64::MAX } else { ttl.as_secs() }
}

impl<S> Layer<S> for EtagCacheLayer {
    type Service = EtagCache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EtagCache::from_exchange(inner, self.exchange.clone())
    }
}
