//! A tower layer giving a Rust service (axum, or any `tower::Service` over `http`) the shared cache in process:
//! the seed's Django `@etag` plus `cache_response`, with the sidecar's key schema, store and engine.
//!
//! [`EtagCacheLayer`] wraps a service in [`EtagCache`]. For GET and HEAD it looks the request up in the shared
//! cache; a fresh entry is answered without calling the service (304 when the client's `If-None-Match` or
//! `If-Modified-Since` matches, else the stored body); a miss calls the service, stores its answer when
//! RFC 9111 allows it, and answers with the stored `ETag`. Write handlers invalidate by tag through the same
//! [`Cache`] (it is cheap to clone), which is what the seed's post-save signal did. Every answer carries a
//! `Cache-Status` header (RFC 9211) such as `etagd; hit` or `etagd; fwd=uri-miss; fwd-status=200; stored`, and
//! answers from storage carry `Age`.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//!
//! use axum::Router;
//! use axum::body::Body;
//! use axum::extract::State;
//! use axum::http::{Request, StatusCode};
//! use axum::routing::get;
//! use etagd_client::cache::{Cache, CacheConfig, Invalidation};
//! use etagd_client::layer::EtagCacheLayer;
//! use etagd_client::store::memory::MemoryStore;
//! use tower::ServiceExt;
//!
//! async fn list_servers() -> &'static str {
//!     r#"["web-1","web-2"]"#
//! }
//!
//! async fn add_server(State(cache): State<Cache>) -> StatusCode {
//!     // ... save the new server, then do what the seed's post-save signal did:
//!     let invalidation = Invalidation { tags: vec!["servers".into()], ..Default::default() };
//!     // Only a URL can be malformed, so a tag-only invalidation returns a report. When a tag's counter
//!     // cannot be written the engine invalidates the whole namespace instead; `complete` is false only when
//!     // even that failed.
//!     if let Ok(report) = cache.invalidate(&invalidation).await {
//!         if !report.complete {
//!             eprintln!("the cache store is unreachable; cached lists may be stale until it returns");
//!         }
//!     }
//!     StatusCode::CREATED
//! }
//!
//! fn app(cache: Cache) -> Router {
//!     // Cached until invalidated (the seed's model), tagged "servers" for the write handler.
//!     let cached = EtagCacheLayer::new(cache.clone()).tags(["servers"]);
//!     Router::new()
//!         .route("/api/servers", get(list_servers).layer(cached).post(add_server))
//!         .with_state(cache)
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
//! - Only answers to GET and HEAD. HEAD is filled with a GET to the inner service, since both share one entry.
//! - Only what a shared cache may store (`cacheability::storable`): no `no-store`, `private`, `Set-Cookie` or
//!   `Vary: *` answers. A refusal marks the URL hit-for-pass for the engine's `pass_ttl`, so concurrent callers
//!   stop waiting for a fill that will never come.
//! - Answers without explicit freshness (`Cache-Control: max-age`, `Expires`) are kept until invalidated, like
//!   the seed; [`EtagCacheLayer::ttl`] bounds that. The service's own `Cache-Control` always wins.
//! - Bodies up to [`EtagCacheLayer::max_body_bytes`] (1 MiB by default); a larger one is streamed through
//!   uncached (`Cache-Status: ...; detail=too_large`), never cut or failed.
//! - Tags: the layer's ([`EtagCacheLayer::tags`]) plus those the service names in `Surrogate-Key`, which the
//!   layer removes from the answer.
//! - Requests with `Authorization`, `Range`, `If-Match`, `If-Unmodified-Since`, `If-Range`, or
//!   `Cache-Control: no-cache` bypass the cache (`Cache-Status: etagd; fwd=bypass` or `fwd=request`).
//! - The key is the same as the sidecar's: scheme (`X-Forwarded-Proto`, else the URI's, else `http`), `Host`
//!   (else the URI authority), path and query.
//!
//! A stale entry within `stale-while-revalidate` (or soft-invalidated, within its grace period) is served as it
//! is while one caller in the whole fleet refreshes it in the background, calling a clone of the inner service
//! with the request that found it. Past those windows the entry is refreshed on the request path. Refreshes ask
//! the inner service for the whole response: in process, a 304 from the service would save little.
//!
//! A store failure never fails a request: on `Unavailable`, a busy fill or a pass, the inner service answers and
//! nothing is stored. The only errors [`EtagCache`] returns are the inner service's own.
//!
//! # Differences from the sidecar
//!
//! - No proxy hop: the cache runs inside the service, so a hit costs no extra connection or copy, and a miss
//!   calls the handler directly.
//! - It covers only the routes it wraps, and its settings replace the sidecar's route rules.
//! - It is the same engine with the same key schema and entry format over the same store: pointed at the same
//!   Memcached with the same namespace, the sidecar and an in-process service share entries, fills and
//!   invalidations (`etagctl --memcached ... --namespace ... flush --tag servers` reaches both).
//! - It never stores compressed variants; put a compression layer outside it.

mod body;
mod future;
mod request;
mod response;
mod service;

use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use service::EtagCache;

use crate::cache::Cache;
use crate::cacheability::Policy;

/// The default [`EtagCacheLayer::max_body_bytes`]: memcached's default item size.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// A [`Layer`] that wraps services in [`EtagCache`]. Build it with [`EtagCacheLayer::new`] and the builder
/// methods; cheap to clone.
///
/// See the [module docs](crate::layer) for an example.
#[derive(Clone, Debug)]
pub struct EtagCacheLayer {
    shared: Arc<Shared>,
}

/// What every [`EtagCache`] built by one layer shares.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    cache: Cache,
    settings: Settings,
}

#[derive(Clone, Debug)]
struct Settings {
    policy: Policy,
    tags: Vec<String>,
    max_body_bytes: usize,
}

impl EtagCacheLayer {
    /// A layer over `cache`: answers without explicit freshness kept until invalidated, no tags of its own,
    /// bodies up to [`DEFAULT_MAX_BODY_BYTES`].
    pub fn new(cache: Cache) -> Self {
        let settings = Settings {
            policy: Policy { route_ttl_s: Some(u64::MAX), ..Policy::default() },
            tags: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        };
        Self { shared: Arc::new(Shared { cache, settings }) }
    }

    /// Keeps answers without explicit freshness (`Cache-Control: max-age`, `s-maxage`, `Expires`) fresh for
    /// `ttl` (whole seconds) instead of until invalidated. `Duration::MAX` means until invalidated.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.settings_mut().policy.route_ttl_s = Some(ttl.as_secs());
        self
    }

    /// Serves an entry up to `window` past its freshness while it is refreshed in the background, for answers
    /// that do not say otherwise with `stale-while-revalidate` (RFC 5861 section 3). Default: zero.
    #[must_use]
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        let seconds = u32::try_from(window.as_secs()).unwrap_or(u32::MAX);
        self.settings_mut().policy.default_stale_while_revalidate_s = seconds;
        self
    }

    /// Tags every stored answer with these, besides any in its `Surrogate-Key` header, so that
    /// [`Cache::invalidate`] by tag drops them. Replaces tags given before.
    #[must_use]
    pub fn tags<I, T>(mut self, tags: I) -> Self
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
        self.settings_mut().tags = unique;
        self
    }

    /// Stores bodies up to `max` bytes; larger ones are streamed through uncached. The store's own item limit
    /// still applies (an answer it refuses is served, not stored).
    #[must_use]
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.settings_mut().max_body_bytes = max;
        self
    }

    /// The cache engine.
    pub fn cache(&self) -> &Cache {
        &self.shared.cache
    }

    pub(crate) fn wrap<S>(&self, inner: S) -> EtagCache<S> {
        EtagCache::from_shared(inner, self.shared.clone())
    }

    fn settings_mut(&mut self) -> &mut Settings {
        &mut Arc::make_mut(&mut self.shared).settings
    }
}

impl<S> Layer<S> for EtagCacheLayer {
    type Service = EtagCache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.wrap(inner)
    }
}
