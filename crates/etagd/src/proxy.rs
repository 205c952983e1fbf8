//! The inbound side: every client request, from lookup to response.
//!
//! ```text
//! GET/HEAD ─ lookup (one store round) ─┬─ fresh hit ──────────── 304 or stored body
//!                                      ├─ stale, within SWR ──── stored body now, one refresh in the background
//!                                      ├─ stale ──────────────── revalidate with the origin (304 refreshes it)
//!                                      ├─ miss (lease won) ───── origin ─ storable? ─ commit ─ answer with ETag
//!                                      ├─ busy (wait ran out) ── origin, not stored
//!                                      └─ pass / store down ──── origin, not stored
//! POST/PUT/PATCH/DELETE ─ origin ─ 2xx/3xx? ─ invalidate URL, Location, Content-Location (same host)
//! any origin answer with Etagd-Invalidate ─ invalidate those tags before answering
//! ```
//!
//! **Invariant:** a store error never becomes a client error; the request goes to the origin.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use http::header::{
    ACCEPT_ENCODING, CONTENT_LENGTH, CONTENT_LOCATION, HOST, HeaderName, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    LOCATION, RANGE,
};
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use etagd_client::cache::{Cache, CommitError, Fill, Hit, HitState, Invalidation, Lookup, LookupRequest};
use etagd_client::cacheability::{self, Freshness, NoStoreReason, Policy};
use etagd_client::conditional::{self, Evaluation};
use etagd_client::encoding::Coding;
use etagd_client::entry::EntryMeta;
use etagd_client::headers::{self, ETAGD_INVALIDATE, SURROGATE_KEY};
use etagd_client::key::ResourceKey;
use etagd_client::reply::{self, CACHE_STATUS, CacheStatus, Fwd, Representation};

use crate::config::{Config, Route};
use crate::metrics::Metrics;
use crate::origin::{self, Buffered, Origin, ProxyBody};

/// Logs at most once a minute per kind, so a Memcached outage does not flood the logs.
#[derive(Debug, Default)]
struct RateLimited(AtomicU64);

impl RateLimited {
    fn allow(&self) -> bool {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let last = self.0.load(Ordering::Relaxed);
        now >= last + 60 && self.0.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

/// The proxy: shared by every connection.
#[derive(Debug)]
pub struct Proxy {
    config: Arc<Config>,
    cache: Cache,
    origin: Origin,
    metrics: Arc<Metrics>,
    store_log: RateLimited,
    weakened_log: RateLimited,
}

/// What the proxy knows about one GET/HEAD request.
struct Read {
    parts: Parts,
    peer: Option<SocketAddr>,
    scheme: String,
    resource: ResourceKey,
    route: Option<Route>,
}

impl Read {
    fn lookup(&self) -> LookupRequest<'_> {
        LookupRequest {
            resource: &self.resource,
            headers: &self.parts.headers,
            route_tags: self.route.as_ref().map_or(&[], |r| r.tags.as_slice()),
        }
    }

    fn path_and_query(&self) -> &str {
        self.parts.uri.path_and_query().map_or("/", |p| p.as_str())
    }

    fn is_head(&self) -> bool {
        self.parts.method == Method::HEAD
    }
}

fn plain(status: StatusCode, message: &str, cache_status: &CacheStatus) -> Response<ProxyBody> {
    let mut response = Response::new(origin::full(format!("{message}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response.headers_mut().insert(CACHE_STATUS, cache_status.to_header_value());
    response
}

impl Proxy {
    /// Creates the proxy.
    pub fn new(config: Arc<Config>, cache: Cache, metrics: Arc<Metrics>) -> Self {
        let origin = Origin::new(&config.upstream, config.origin_timeout);
        Self { config, cache, origin, metrics, store_log: RateLimited::default(), weakened_log: RateLimited::default() }
    }

    /// Handles one request; never fails (errors become 4xx/5xx responses about the request or the origin).
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>, peer: Option<SocketAddr>) -> Response<ProxyBody> {
        let (parts, body) = request.into_parts();
        let scheme = parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .filter(|v| *v == "https" || *v == "http")
            .unwrap_or("http")
            .to_owned();
        let host = parts
            .headers
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()));
        let Some(host) = host else {
            let status = CacheStatus::forward(Fwd::Request).detail("no-host");
            return plain(StatusCode::BAD_REQUEST, "missing Host header", &status);
        };
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return self.unsafe_method(parts, body, peer, &scheme, &host).await;
        }
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let resource = ResourceKey::new(&scheme, &host, path_and_query);
        let route = self.config.route_for(parts.uri.path()).cloned();
        let read = Read { parts, peer, scheme, resource, route };
        // Range and the preconditions a cache does not evaluate go to the origin (RFC 9111 section 4.3.2).
        if read.parts.headers.contains_key(RANGE) || conditional::has_origin_preconditions(&read.parts.headers) {
            return self.fetch(&read, None, &CacheStatus::forward(Fwd::Request), "pass").await;
        }
        let started = Instant::now();
        let lookup = self.cache.lookup_waiting(read.lookup()).await;
        self.metrics.lookup_duration.observe(started.elapsed().as_secs_f64());
        match lookup {
            Lookup::Hit(hit) => self.on_hit(&read, hit).await,
            Lookup::Miss(fill) => self.fetch(&read, Some(fill), &CacheStatus::forward(Fwd::UriMiss), "miss").await,
            Lookup::Busy => {
                let status = CacheStatus::forward(Fwd::Miss).detail("fill-wait-timeout");
                self.fetch(&read, None, &status, "miss").await
            }
            Lookup::Pass { reason } => {
                let detail = format!("hit-for-pass-{}", reason.replace('_', "-"));
                self.fetch(&read, None, &CacheStatus::forward(Fwd::Bypass).detail(detail), "pass").await
            }
            Lookup::Unavailable(error) => {
                if self.store_log.allow() {
                    tracing::warn!(%error, "cache store unavailable; serving from the origin (logged at most once a minute)");
                }
                let status = CacheStatus::forward(Fwd::Miss).detail("store-unavailable");
                self.fetch(&read, None, &status, "miss").await
            }
        }
    }

    fn policy(&self, route: Option<&Route>) -> Policy {
        Policy {
            route_ttl_s: route.and_then(|r| r.ttl_s),
            default_stale_while_revalidate_s: route
                .and_then(|r| r.stale_while_revalidate_s)
                .unwrap_or(self.config.stale_while_revalidate_s),
            default_stale_if_error_s: route.and_then(|r| r.stale_if_error_s).unwrap_or(self.config.stale_if_error_s),
            heuristic_freshness: false,
        }
    }

    async fn on_hit(self: &Arc<Self>, read: &Read, hit: Hit) -> Response<ProxyBody> {
        match hit.state {
            HitState::Fresh => {
                let status = CacheStatus::hit(reply::ttl(&hit.meta, hit.age_s));
                let meta = hit.meta.clone();
                self.serve(read, &hit, &meta, &status, "hit").await
            }
            HitState::Grace | HitState::Stale { while_revalidate: true, .. } => {
                let (reason, detail) = if hit.state == HitState::Grace {
                    ("grace", "stale-grace")
                } else {
                    ("while_revalidate", "stale-while-revalidate")
                };
                self.metrics.stale_served.get_or_create(&crate::metrics::ReasonLabel { reason }).inc();
                self.refresh_in_background(read, &hit);
                let meta = hit.meta.clone();
                self.serve(read, &hit, &meta, &CacheStatus::hit(None).detail(detail), "stale").await
            }
            HitState::Stale { if_error, .. } => self.revalidate(read, hit, if_error).await,
        }
    }

    /// Answers from a stored entry: 304 when the client's validator matches, else the stored body.
    async fn serve(
        self: &Arc<Self>,
        read: &Read,
        hit: &Hit,
        meta: &EntryMeta,
        status: &CacheStatus,
        outcome: &'static str,
    ) -> Response<ProxyBody> {
        // Each stored coding is its own representation with its own validator (RFC 9110 section 8.8.3).
        let chosen = Representation::negotiate(&read.parts.headers, meta).echo_weakened();
        if meta.minted && chosen.weakened() {
            self.metrics.weakened_validators.inc();
            if self.weakened_log.allow() {
                tracing::warn!(
                    "a proxy in front of etagd weakens ETags (W/ copies of strong tags come back); etagd still \
                     answers 304, but check gzip settings in front (see docs/deploying.md)"
                );
            }
        }
        if chosen.evaluate() == Evaluation::NotModified {
            self.metrics.request("not_modified");
            return chosen.not_modified(Some(hit.age_s), status).map(|()| origin::empty());
        }
        match self.cache.body(hit, chosen.coding().map(Coding::as_str)).await {
            Ok(Some(body)) => {
                self.metrics.request(outcome);
                let answer = chosen.from_entry(&body.headers, body.body.len(), Some(hit.age_s), status);
                answer.map(|()| if read.is_head() { origin::empty() } else { origin::full(body.body.clone()) })
            }
            // The body was evicted or is unreadable: refill it (one caller fleet-wide), never fail the request.
            Ok(None) | Err(_) => {
                let fill = self.cache.refresh_permit(hit, read.lookup()).await;
                let status = CacheStatus::forward(Fwd::Miss).detail("body-missing");
                self.fetch(read, fill, &status, "miss").await
            }
        }
    }

    fn refresh_in_background(self: &Arc<Self>, read: &Read, hit: &Hit) {
        let proxy = self.clone();
        let hit = hit.clone();
        let headers = read.parts.headers.clone();
        let resource = read.resource.clone();
        let route = read.route.clone();
        let path_and_query = read.path_and_query().to_owned();
        let peer = read.peer;
        let scheme = read.scheme.clone();
        tokio::spawn(async move {
            let lookup = LookupRequest {
                resource: &resource,
                headers: &headers,
                route_tags: route.as_ref().map_or(&[], |r| r.tags.as_slice()),
            };
            let Some(fill) = proxy.cache.refresh_permit(&hit, lookup).await else { return };
            let request_headers = proxy.revalidation_headers(&headers, peer, &scheme, &hit.meta);
            let Ok(response) = proxy.origin.send(Method::GET, &path_and_query, request_headers, origin::empty()).await
            else {
                proxy.metrics.origin_errors.inc();
                return;
            };
            let (parts, body) = response.into_parts();
            if parts.status == StatusCode::NOT_MODIFIED {
                if let Some(freshness) =
                    proxy.revalidated_freshness(&headers, &hit.meta, &parts.headers, route.as_ref())
                {
                    let _ =
                        fill.commit_revalidated(&hit.meta, freshness, headers::headers_for_304(&parts.headers)).await;
                }
                return;
            }
            let _ = proxy.store(&Method::GET, &headers, route.as_ref(), parts, body, fill).await;
        });
    }

    /// Headers for a conditional request to the origin about a stored entry: the client's conditionals replaced
    /// by the entry's validators (only the origin's own: a tag etagd minted means nothing to the origin).
    fn revalidation_headers(
        &self,
        client: &HeaderMap,
        peer: Option<SocketAddr>,
        scheme: &str,
        meta: &EntryMeta,
    ) -> HeaderMap {
        let mut headers = origin::forward_headers(client.clone(), peer, scheme);
        headers.remove(IF_NONE_MATCH);
        headers.remove(IF_MODIFIED_SINCE);
        if !self.config.compression.codings.is_empty() {
            headers.remove(ACCEPT_ENCODING);
        }
        if !meta.minted {
            if let Ok(value) = HeaderValue::from_str(&meta.etag) {
                headers.insert(IF_NONE_MATCH, value);
            }
        }
        if let Some(value) = meta.last_modified.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(IF_MODIFIED_SINCE, value);
        }
        headers
    }

    /// The freshness of an entry after the origin answered 304: its stored headers updated with the 304's
    /// (RFC 9111 section 4.3.4), judged as the 200 they stand for.
    fn revalidated_freshness(
        &self,
        request: &HeaderMap,
        meta: &EntryMeta,
        answer: &HeaderMap,
        route: Option<&Route>,
    ) -> Option<Freshness> {
        let mut merged = HeaderMap::new();
        for (name, value) in &meta.headers_304 {
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                merged.append(name, value);
            }
        }
        for (name, value) in answer {
            if name != CONTENT_LENGTH {
                merged.insert(name.clone(), value.clone());
            }
        }
        cacheability::storable(&Method::GET, request, StatusCode::OK, &merged, &self.policy(route), SystemTime::now())
            .ok()
    }

    /// A stale entry outside its stale-while-revalidate window: ask the origin, conditionally.
    async fn revalidate(self: &Arc<Self>, read: &Read, hit: Hit, if_error: bool) -> Response<ProxyBody> {
        let fill = self.cache.refresh_permit(&hit, read.lookup()).await;
        let headers = self.revalidation_headers(&read.parts.headers, read.peer, &read.scheme, &hit.meta);
        let started = Instant::now();
        let answer = self.origin.send(Method::GET, read.path_and_query(), headers, origin::empty()).await;
        self.metrics.origin_duration.observe(started.elapsed().as_secs_f64());
        let response = match answer {
            Ok(response) if !(if_error && response.status().is_server_error()) => response,
            failed => {
                if failed.is_err() {
                    self.metrics.origin_errors.inc();
                }
                if if_error {
                    // RFC 5861 section 4: the origin failed, and the entry may be served stale for a while.
                    self.metrics.stale_served.get_or_create(&crate::metrics::ReasonLabel { reason: "if_error" }).inc();
                    let meta = hit.meta.clone();
                    let status = CacheStatus::hit(None).detail("stale-if-error");
                    return self.serve(read, &hit, &meta, &status, "stale").await;
                }
                return match failed {
                    Ok(response) => self.pass_through(response, &CacheStatus::forward(Fwd::Stale), "miss"),
                    Err(error) => self.origin_failed(&error),
                };
            }
        };
        let (parts, body) = response.into_parts();
        if parts.status == StatusCode::NOT_MODIFIED {
            let refreshed = match (
                fill,
                self.revalidated_freshness(&read.parts.headers, &hit.meta, &parts.headers, read.route.as_ref()),
            ) {
                (Some(fill), Some(freshness)) => {
                    fill.commit_revalidated(&hit.meta, freshness, headers::headers_for_304(&parts.headers)).await.ok()
                }
                _ => None,
            };
            let meta = refreshed.unwrap_or_else(|| hit.meta.clone());
            let mut hit = hit;
            hit.age_s = 0;
            let status = CacheStatus::forward(Fwd::Stale).fwd_status(304).stored(None);
            return self.serve(read, &hit, &meta, &status, "miss").await;
        }
        match fill {
            Some(fill) => {
                self.store(&read.parts.method, &read.parts.headers, read.route.as_ref(), parts, body, fill).await
            }
            None => self.pass_through(Response::from_parts(parts, body), &CacheStatus::forward(Fwd::Stale), "miss"),
        }
    }

    /// Forwards a GET/HEAD to the origin; with a fill, stores what may be stored.
    async fn fetch(
        self: &Arc<Self>,
        read: &Read,
        fill: Option<Fill>,
        status: &CacheStatus,
        outcome: &'static str,
    ) -> Response<ProxyBody> {
        let mut headers = origin::forward_headers(read.parts.headers.clone(), read.peer, &read.scheme);
        // A fill needs the full response, and HEAD becomes GET so the body can be stored (as Varnish does).
        let method = if fill.is_some() {
            headers.remove(IF_NONE_MATCH);
            headers.remove(IF_MODIFIED_SINCE);
            if !self.config.compression.codings.is_empty() {
                // etagd negotiates codings itself from one identity fill; an origin that compressed per client
                // would split the entry into one variant per Accept-Encoding value.
                headers.remove(ACCEPT_ENCODING);
            }
            Method::GET
        } else {
            read.parts.method.clone()
        };
        let started = Instant::now();
        let answer = self.origin.send(method, read.path_and_query(), headers, origin::empty()).await;
        self.metrics.origin_duration.observe(started.elapsed().as_secs_f64());
        let response = match answer {
            Ok(response) => response,
            Err(error) => return self.origin_failed(&error),
        };
        let (parts, body) = response.into_parts();
        let Some(fill) = fill else {
            self.metrics.request(outcome);
            let response = self.finish_origin_response(parts, body).await;
            return with_status(response, status);
        };
        let mut response =
            self.store(&read.parts.method, &read.parts.headers, read.route.as_ref(), parts, body, fill).await;
        if read.is_head() {
            *response.body_mut() = origin::empty();
        }
        response
    }

    fn origin_failed(&self, error: &origin::OriginError) -> Response<ProxyBody> {
        self.metrics.origin_errors.inc();
        self.metrics.request("error");
        tracing::warn!(%error, "origin request failed");
        let status = CacheStatus::forward(Fwd::Miss).detail("origin-unavailable");
        plain(StatusCode::BAD_GATEWAY, "the origin did not answer", &status)
    }

    fn pass_through(
        &self,
        response: Response<Incoming>,
        status: &CacheStatus,
        outcome: &'static str,
    ) -> Response<ProxyBody> {
        self.metrics.request(outcome);
        let (mut parts, body) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(SURROGATE_KEY);
        parts.headers.remove(ETAGD_INVALIDATE);
        with_status(Response::from_parts(parts, origin::stream(body)), status)
    }

    /// Applies an origin answer's `Etagd-Invalidate`, strips etagd's own headers and streams it.
    async fn finish_origin_response(&self, mut parts: http::response::Parts, body: Incoming) -> Response<ProxyBody> {
        self.apply_invalidate_header(&mut parts.headers).await;
        headers::strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(SURROGATE_KEY);
        Response::from_parts(parts, origin::stream(body))
    }

    async fn apply_invalidate_header(&self, headers: &mut HeaderMap) {
        let tags = headers::tags_in(headers, ETAGD_INVALIDATE);
        headers.remove(ETAGD_INVALIDATE);
        if !tags.is_empty() {
            self.invalidate(Invalidation { tags, ..Default::default() }, "header").await;
        }
    }

    async fn invalidate(&self, invalidation: Invalidation, source: &'static str) {
        self.metrics.invalidations.get_or_create(&crate::metrics::SourceLabel { source }).inc();
        match self.cache.invalidate(&invalidation).await {
            Ok(report) if !report.complete => {
                tracing::warn!(?report, "invalidation did not reach every Memcached server");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "invalidation skipped"),
        }
    }

    /// Decides, buffers and commits an origin answer under a fill; answers the client either way.
    async fn store(
        self: &Arc<Self>,
        method: &Method,
        request: &HeaderMap,
        route: Option<&Route>,
        mut parts: http::response::Parts,
        body: Incoming,
        fill: Fill,
    ) -> Response<ProxyBody> {
        self.apply_invalidate_header(&mut parts.headers).await;
        headers::strip_hop_by_hop(&mut parts.headers);
        let mut tags = headers::tags_in(&parts.headers, SURROGATE_KEY);
        parts.headers.remove(SURROGATE_KEY);
        let decision = cacheability::storable(
            method,
            request,
            parts.status,
            &parts.headers,
            &self.policy(route),
            SystemTime::now(),
        );
        let declared =
            parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
        let decision = match decision {
            Ok(_) if declared.is_some_and(|len| len > self.config.max_body_bytes) => Err(NoStoreReason::TooLarge),
            other => other,
        };
        let freshness = match decision {
            Ok(freshness) => freshness,
            Err(reason) => {
                if parts.status.is_server_error() {
                    fill.abandon_for(Some(reason.as_str()), Duration::from_secs(1)).await;
                } else {
                    fill.abandon(Some(reason.as_str())).await;
                }
                self.metrics.request("miss");
                let status = CacheStatus::forward(Fwd::UriMiss).detail(reason.as_str().replace('_', "-"));
                return with_status(Response::from_parts(parts, origin::stream(body)), &status);
            }
        };
        let bytes = match origin::buffer(body, self.config.max_body_bytes).await {
            Ok(Buffered::Complete(bytes)) => bytes,
            Ok(Buffered::TooLarge(body)) => {
                fill.abandon(Some(NoStoreReason::TooLarge.as_str())).await;
                self.metrics.request("miss");
                let status = CacheStatus::forward(Fwd::UriMiss).detail("too-large");
                return with_status(Response::from_parts(parts, body), &status);
            }
            Err(error) => {
                drop(fill);
                self.metrics.origin_errors.inc();
                self.metrics.request("error");
                tracing::warn!(%error, "origin body failed");
                let status = CacheStatus::forward(Fwd::UriMiss).detail("origin-body-error");
                return plain(StatusCode::BAD_GATEWAY, "the origin's answer broke off", &status);
            }
        };
        if let Some(route) = route {
            for tag in &route.tags {
                if !tags.contains(tag) {
                    tags.push(tag.clone());
                }
            }
        }
        let codings = if self.config.compression.applies(&parts.headers, bytes.len()) {
            let policy = self.config.compression.clone();
            let body = bytes.clone();
            // Compression is CPU work of up to milliseconds: keep it off the reactor threads.
            tokio::task::spawn_blocking(move || policy.encode_all(&body)).await.unwrap_or_default()
        } else {
            Vec::new()
        };
        if !codings.is_empty() {
            // The client's answer varies on Accept-Encoding too, stored or not.
            reply::vary_on_accept_encoding(&mut parts.headers);
        }
        let response = reply::prepare_fill(&parts, bytes.clone(), freshness, tags, codings.clone());
        self.metrics.request("miss");
        match fill.commit(response).await {
            Ok(meta) => {
                let stored: usize = bytes.len() + codings.iter().map(|(_, body)| body.len()).sum::<usize>();
                self.metrics.stored_bytes.inc_by(stored as u64);
                let chosen = Representation::negotiate(request, &meta);
                let body = chosen
                    .coding()
                    .and_then(|coding| codings.iter().find(|(c, _)| c == coding.as_str()))
                    .map_or(bytes, |(_, body)| body.clone());
                chosen.stamp(&mut parts.headers, body.len(), Some(meta.initial_age_s));
                let status = CacheStatus::forward(Fwd::UriMiss).stored(None);
                with_status(Response::from_parts(parts, origin::full(body)), &status)
            }
            Err(error) => {
                let detail = match error {
                    CommitError::Invalidated => "invalidated-during-fill",
                    CommitError::Raced => "lost-race",
                    _ => "store-unavailable",
                };
                parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                with_status(
                    Response::from_parts(parts, origin::full(bytes)),
                    &CacheStatus::forward(Fwd::UriMiss).detail(detail),
                )
            }
        }
    }

    /// POST, PUT, PATCH, DELETE, ...: forwarded; a success invalidates the target and the URLs the answer names
    /// on the same host (RFC 9111 section 4.4), for every replica at once.
    async fn unsafe_method(
        self: &Arc<Self>,
        parts: Parts,
        body: Incoming,
        peer: Option<SocketAddr>,
        scheme: &str,
        host: &str,
    ) -> Response<ProxyBody> {
        let headers = origin::forward_headers(parts.headers.clone(), peer, scheme);
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let started = Instant::now();
        let answer = self.origin.send(parts.method.clone(), &path_and_query, headers, origin::stream(body)).await;
        self.metrics.origin_duration.observe(started.elapsed().as_secs_f64());
        let response = match answer {
            Ok(response) => response,
            Err(error) => return self.origin_failed(&error),
        };
        let safe = matches!(parts.method, Method::OPTIONS | Method::TRACE | Method::CONNECT);
        let status = response.status();
        if !safe && (status.is_success() || status.is_redirection()) {
            let base = format!("{scheme}://{host}");
            let mut urls = vec![format!("{base}{path_and_query}")];
            for name in [LOCATION, CONTENT_LOCATION] {
                if let Some(url) =
                    response.headers().get(name).and_then(|v| v.to_str().ok()).and_then(|v| same_host(&base, v))
                {
                    urls.push(url);
                }
            }
            self.invalidate(Invalidation { urls, ..Default::default() }, "unsafe_method").await;
        }
        self.metrics.request("bypass");
        let (parts, body) = response.into_parts();
        let response = self.finish_origin_response(parts, body).await;
        with_status(response, &CacheStatus::forward(Fwd::Method))
    }
}

/// Resolves `Location`/`Content-Location` against the request's origin; `None` for another host.
fn same_host(base: &str, value: &str) -> Option<String> {
    let base_url = url::Url::parse(&format!("{base}/")).ok()?;
    let target = base_url.join(value).ok()?;
    (target.host_str() == base_url.host_str() && target.port_or_known_default() == base_url.port_or_known_default())
        .then(|| target.to_string())
}

fn with_status(mut response: Response<ProxyBody>, status: &CacheStatus) -> Response<ProxyBody> {
    response.headers_mut().insert(CACHE_STATUS, status.to_header_value());
    response
}
