//! The exchange: one HTTP request through the shared cache, from lookup to response, run against an
//! [`Upstream`]. The sidecar and the tower layer are adapters around it: they turn their transport into a
//! `Request`, an [`Upstream`] and a [`RequestContext`], call [`Exchange::run`], and send what it returns.
//!
//! ```text
//! GET/HEAD ─ key ─ lookup (one store round) ─┬─ fresh hit ─────────── 304 or stored body          (serve.rs)
//!                                            │                        a wanted coding made later   (codings.rs)
//!                                            ├─ stale, in SWR/grace ─ stored body now, one background refresh
//!                                            ├─ stale ─────────────── conditional request; 304 refreshes the entry,
//!                                            │                        5xx/error within stale-if-error serves it
//!                                            │                                                    (revalidate.rs)
//!                                            ├─ miss (lease won) ──── origin ─ storable? ─ commit   (fill.rs)
//!                                            └─ busy / pass / store down ── origin, not stored
//! GET/HEAD with Range or If-Match/-Unmodified-Since/-Range ── origin, not stored          (policy.rs)
//! other methods ── origin ── 2xx/3xx? ── invalidate target, Location, Content-Location    (triggers.rs)
//! any origin answer with Etagd-Invalidate ── invalidate those tags before answering       (triggers.rs)
//! ```
//!
//! Every run ends in one [`Report`], whose [`Outcome`] names the `Cache-Status` header, the metrics label and
//! the access log line (`log.rs`).
//!
//! **Invariant:** a store error never becomes a client error; the request goes to the origin.

mod codings;
mod compress;
mod config;
mod context;
mod fill;
mod forward;
mod gate;
mod log;
mod outcome;
mod policy;
mod range;
mod revalidate;
mod serve;
mod stream;
mod triggers;
mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::header::{CONTENT_TYPE, DATE};
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode};

pub use config::{DEFAULT_MAX_BODY_BYTES, ExchangeConfig, OriginLimit, Route, Triggers};
pub use context::{BadTrustedProxy, InformationalHook, RequestContext, TrustedProxies};
pub use forward::UNTRUSTED_FORWARDING_HEADERS;
pub use log::{Observer, Report, Trigger};
pub use outcome::{Filled, Outcome};
pub use policy::RequestBypass;
pub use upstream::Upstream;

use crate::body::Body;
use crate::cache::{Cache, Lookup, LookupRequest};
use crate::headers::{self, SURROGATE_KEY};
use crate::key::ResourceKey;
use crate::reply::CACHE_STATUS;
use policy::Class;

/// The exchange: the cache engine plus the request rules. Cheap to clone.
#[derive(Clone)]
pub struct Exchange {
    inner: Arc<Inner>,
}

struct Inner {
    cache: Cache,
    config: ExchangeConfig,
    observer: Option<Arc<dyn Observer>>,
    /// Write each report's `etagd::access` event (unless the observer writes the access log itself).
    access_events: bool,
    gate: Option<gate::OriginGate>,
    dates: log::DateCache,
    store_log: log::RateLimited,
    weakened_log: log::RateLimited,
    /// Bodies compressed at once on blocking threads (`compress.rs`).
    compressions: Arc<tokio::sync::Semaphore>,
    /// Commits of fills answered before them, running or waiting (`stream.rs`).
    queued_commits: Arc<tokio::sync::Semaphore>,
    /// Codings this process lately tried to make on demand (`codings.rs`).
    on_demand: codings::Recent,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

/// What [`Exchange::run`] returns: the response (or the upstream's error, when nothing stale could stand in)
/// and the report of what happened.
#[derive(Debug)]
pub struct Exchanged<E> {
    /// The response to send, `Cache-Status` included; `Err` when the upstream failed and nothing could be
    /// served in its place (the sidecar answers 502, the layer returns the service's error).
    pub response: Result<Response<Body>, E>,
    /// What happened.
    pub report: Report,
}

impl Exchange {
    /// An exchange over `cache`.
    pub fn new(cache: Cache, config: ExchangeConfig) -> Self {
        let gate = config.origin_limit.map(gate::OriginGate::new);
        Self {
            inner: Arc::new(Inner {
                cache,
                config,
                observer: None,
                access_events: true,
                gate,
                dates: log::DateCache::default(),
                store_log: log::RateLimited::default(),
                weakened_log: log::RateLimited::default(),
                compressions: Arc::new(tokio::sync::Semaphore::new(compress::compressions_at_once())),
                queued_commits: Arc::new(tokio::sync::Semaphore::new(stream::QUEUED_COMMITS)),
                on_demand: codings::Recent::default(),
            }),
        }
    }

    /// Hands every [`Report`] (foreground and background) to `observer`, e.g. to update metrics.
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        let inner = self.inner_mut();
        inner.access_events = !observer.writes_access_log();
        inner.observer = Some(observer);
        self
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::get_mut(&mut self.inner).expect("an exchange is configured before it is cloned")
    }

    /// The cache engine.
    pub fn cache(&self) -> &Cache {
        &self.inner.cache
    }

    /// The settings.
    pub fn config(&self) -> &ExchangeConfig {
        &self.inner.config
    }

    /// The context of a request from `peer`, with the trusted-proxy decision made.
    pub fn context(&self, peer: Option<std::net::SocketAddr>) -> RequestContext {
        RequestContext::new(peer, &self.inner.config.trusted_proxies)
    }

    /// Runs one request through the cache.
    pub async fn run<B, U>(&self, request: Request<B>, context: RequestContext, upstream: U) -> Exchanged<U::Error>
    where
        B: Default + Send + 'static,
        U: Upstream<B>,
    {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let run = Run::new(self.clone(), parts, body, context, upstream);
        // Every future is copied whole where it is created and each time it moves, and nested `async fn`s
        // embed their callees: unboxed, a 304 copied tens of KB (`memcpy` was the top user-space symbol). So
        // the exchange is boxed once here, before it moves into the front's task, and the paths a fresh hit
        // does not take (fills, revalidation, refills, the upgrade bridge) are boxed where they start.
        Box::pin(run.drive(started)).await
    }

    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.inner.cache.now_ms())
    }

    /// Hands a finished report to the access log and the observer.
    fn observe(&self, report: &Report) {
        if self.inner.access_events {
            log::access(report);
        }
        if let Some(observer) = &self.inner.observer {
            observer.report(report);
        }
    }
}

/// One request in flight: what the exchange knows about it and what has happened so far.
struct Run<B, U: Upstream<B>> {
    exchange: Exchange,
    parts: Parts,
    /// The client's body, until a request upstream takes it.
    body: Option<B>,
    context: RequestContext,
    upstream: U,
    key: Option<ResourceKey>,
    /// The request carries cookies that matter (`ExchangeConfig::ignore_cookies`).
    personal: bool,
    /// The client's body goes upstream with the first request (unsafe methods and bypasses forward it).
    forwards_body: bool,
    /// The client said `only-if-cached`: nothing goes upstream.
    only_if_cached: bool,
    /// The client's request directives (RFC 9111 section 5.2.1).
    client: crate::cache_control::CacheControl,
    report: Report,
}

type Answer<E> = Result<Response<Body>, E>;

/// What a request upstream came to, short of an upstream error.
enum Sent {
    /// The origin answered.
    Answered(Response<Body>),
    /// It was not sent.
    Held(Hold),
}

/// Why a request was not sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// The origin gate refused it: too many requests to the origin already.
    Overloaded,
    /// The client said `only-if-cached` (RFC 9111 section 5.2.1.7).
    OnlyIfCached,
}

impl<B, U> Run<B, U>
where
    B: Default + Send + 'static,
    U: Upstream<B>,
{
    fn new(exchange: Exchange, parts: Parts, body: B, context: RequestContext, upstream: U) -> Self {
        let report = Report::new(&parts);
        Self {
            exchange,
            parts,
            body: Some(body),
            context,
            upstream,
            key: None,
            personal: false,
            forwards_body: false,
            only_if_cached: false,
            client: crate::cache_control::CacheControl::default(),
            report,
        }
    }

    async fn drive(mut self, started: Instant) -> Exchanged<U::Error> {
        let response = self.dispatch().await;
        self.finish(response, started)
    }

    async fn dispatch(&mut self) -> Answer<U::Error> {
        match policy::classify(&self.parts) {
            Class::Unsafe => {
                self.forwards_body = true;
                self.key = self.request_key().ok();
                self.unsafe_method().await
            }
            Class::Bypass(bypass) => {
                self.forwards_body = true;
                self.key = self.request_key().ok();
                self.pass(Outcome::Request(bypass)).await
            }
            Class::Cacheable => match self.request_key() {
                Ok(key) => {
                    self.key = Some(key);
                    self.cacheable().await
                }
                Err(_) => self.pass(Outcome::Request(RequestBypass::NoHost)).await,
            },
        }
    }

    /// The request's resource as it is stored (ignored query parameters left out).
    fn request_key(&self) -> Result<ResourceKey, crate::key::KeyError> {
        let key = ResourceKey::from_request(&self.parts, self.context.forwarding)?;
        Ok(self.exchange.config().storage_key(key))
    }

    async fn cacheable(&mut self) -> Answer<U::Error> {
        let exchange = self.exchange.clone();
        let key = self.key.as_ref().expect("a cacheable request has a key");
        let route = exchange.config().route_for(key.path());
        self.client = crate::cache_control::CacheControl::from_headers(&self.parts.headers);
        self.only_if_cached = self.client.only_if_cached;
        self.personal =
            policy::is_personal(&self.parts.headers, &[&exchange.config().ignore_cookies, &route.ignore_cookies]);
        let lookup = LookupRequest { resource: key, headers: &self.parts.headers, route_tags: &route.tags };
        let started = Instant::now();
        let found = exchange.cache().lookup_waiting(lookup).await;
        self.report.lookup = Some(started.elapsed());
        match found {
            Lookup::Hit(hit) => self.on_hit(hit).await,
            Lookup::Miss(fill) => Box::pin(self.fill(fill, Outcome::Miss, false)).await,
            Lookup::Busy => self.pass(Outcome::FillWaitTimeout).await,
            Lookup::Pass { reason } => {
                self.pass(Outcome::HitForPass(crate::cacheability::NoStoreReason::from_label(&reason))).await
            }
            Lookup::Unavailable(error) => {
                if exchange.inner.store_log.allow(exchange.cache().now_ms()) {
                    tracing::warn!(%error, "cache store unavailable; answering from the origin (logged at most once a minute)");
                }
                self.pass(Outcome::StoreUnavailable).await
            }
        }
    }

    /// Forwards the request as it is, without reading or writing the cache.
    async fn pass(&mut self, outcome: Outcome) -> Answer<U::Error> {
        self.report.outcome = outcome;
        let headers = self.outbound_headers();
        let request = self.request(self.parts.method.clone(), headers);
        let response = match self.send(request).await? {
            Sent::Answered(response) => response,
            Sent::Held(hold) => return Ok(self.held(hold)),
        };
        Ok(self.relay(response).await)
    }

    /// The client's headers as the origin should see them.
    fn outbound_headers(&self) -> http::HeaderMap {
        let untrusted = &self.exchange.inner.config.untrusted_headers;
        forward::outbound(&self.parts.headers, self.key.as_ref(), &self.context, untrusted)
    }

    /// A request upstream for the client's target, with the client's body the first time and an empty one after.
    fn request(&mut self, method: Method, mut headers: http::HeaderMap) -> Request<B> {
        let body = match self.body.take() {
            Some(body) if self.forwards_body => body,
            _ => {
                // An empty body must not be announced: an origin that waits for announced bytes would stall the
                // fill, and the pooled connection would fall out of step (RFC 9112 section 6.3).
                headers.remove(http::header::CONTENT_LENGTH);
                headers.remove(http::header::TRANSFER_ENCODING);
                headers.remove(http::header::EXPECT);
                B::default()
            }
        };
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = self.parts.uri.clone();
        *request.version_mut() = self.parts.version;
        *request.headers_mut() = headers;
        if let Some(hook) = &self.context.informational {
            request.extensions_mut().insert(hook.clone());
        }
        request
    }

    /// Sends a request upstream through the origin gate, timing it; an error is recorded for the report.
    async fn send(&mut self, request: Request<B>) -> Result<Sent, U::Error> {
        if self.only_if_cached {
            return Ok(Sent::Held(Hold::OnlyIfCached));
        }
        let exchange = self.exchange.clone();
        // Held until the response head is here: the gate bounds origin requests, not slow clients.
        let _slot = match &exchange.inner.gate {
            Some(gate) => match gate.enter(!self.report.background).await {
                gate::Pass::Slot(slot) => slot,
                gate::Pass::Refused => return Ok(Sent::Held(Hold::Overloaded)),
            },
            None => None,
        };
        let started = Instant::now();
        let answer = self.upstream.clone().send(request).await;
        let elapsed = started.elapsed();
        self.report.origin = Some(self.report.origin.map_or(elapsed, |before| before + elapsed));
        match &answer {
            Ok(response) => self.report.fwd_status = Some(response.status().as_u16()),
            Err(error) => {
                self.report.origin_error = true;
                tracing::warn!(%error, "origin request failed");
            }
        }
        answer.map(Sent::Answered)
    }

    /// The answer to a request that was not sent upstream, when nothing stored may stand in.
    fn held(&mut self, hold: Hold) -> Response<Body> {
        match hold {
            Hold::Overloaded => self.overloaded(),
            Hold::OnlyIfCached => {
                // RFC 9111 section 5.2.1.7: nothing stored satisfies the request, so a 504.
                self.report.outcome = Outcome::Request(RequestBypass::OnlyIfCached);
                let mut response =
                    Response::new(Body::full("not in the cache, and the request said only-if-cached\n".into()));
                *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
                response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
                response
            }
        }
    }

    /// The answer when the origin gate refused the request and nothing stale may stand in: 503 with
    /// `Retry-After` (RFC 9110 sections 15.6.4 and 10.2.3).
    fn overloaded(&mut self) -> Response<Body> {
        self.report.outcome = Outcome::Overloaded;
        let retry_after = self.exchange.inner.gate.as_ref().map_or(1, gate::OriginGate::retry_after_s);
        let mut response = Response::new(Body::full(
            "the origin is at its concurrency limit (--origin-max-concurrency); retry shortly\n".into(),
        ));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after));
        response
    }

    /// An origin answer the cache does not store, on its way to the client: its `Etagd-Invalidate` applied and
    /// the headers meant for caches only removed.
    async fn relay(&mut self, response: Response<Body>) -> Response<Body> {
        let (mut parts, body) = response.into_parts();
        self.apply_invalidate_header(&mut parts.headers).await;
        parts.headers.remove(SURROGATE_KEY);
        headers::strip_hop_by_hop(&mut parts.headers);
        let config = self.exchange.config();
        if config.strip_targeted {
            for name in &config.targeted_fields {
                parts.headers.remove(name);
            }
        }
        let body = if self.parts.method == Method::HEAD { Body::empty() } else { body };
        Response::from_parts(parts, body)
    }

    fn finish(mut self, response: Answer<U::Error>, started: Instant) -> Exchanged<U::Error> {
        let report = &mut self.report;
        let response = response.map(|mut response| {
            let value = report.outcome.cache_status(report.fwd_status, report.ttl).to_header_value();
            response.headers_mut().insert(CACHE_STATUS, value);
            if report.outcome.is_hit() && !response.headers().contains_key(DATE) {
                // An answer from storage is made now (RFC 9110 section 6.6.1); the layer may sit under a server
                // that adds no Date of its own.
                response.headers_mut().insert(DATE, self.exchange.inner.dates.now(self.exchange.now()));
            }
            report.status = response.status().as_u16();
            response
        });
        if response.is_err() {
            report.outcome = Outcome::OriginUnavailable;
            report.status = StatusCode::BAD_GATEWAY.as_u16();
        }
        report.host = self.key.as_ref().map(|key| key.host().to_owned());
        report.elapsed = started.elapsed();
        self.exchange.observe(report);
        Exchanged { response, report: self.report }
    }
}

/// The answer a front sends when the upstream failed and nothing could stand in: a plain 502 with the
/// `Cache-Status` of [`Outcome::OriginUnavailable`].
pub fn origin_unavailable() -> Response<Body> {
    let mut response = Response::new(Body::full("the origin did not answer\n".into()));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    let status = Outcome::OriginUnavailable.cache_status(None, None);
    response.headers_mut().insert(CACHE_STATUS, status.to_header_value());
    response
}

#[cfg(test)]
mod tests;
