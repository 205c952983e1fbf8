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

use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, AGE, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_LOCATION, ETAG, HOST, HeaderName, HeaderValue,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, LOCATION, RANGE, VARY,
};
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use etagd_client::cache::{Cache, CommitError, Fill, FillResponse, Hit, HitState, Invalidation, Lookup, LookupRequest};
use etagd_client::cacheability::{self, Freshness, NoStoreReason, Policy};
use etagd_client::conditional::{self, Evaluation};
use etagd_client::encoding::{self, Coding};
use etagd_client::entry::EntryMeta;
use etagd_client::etag::EntityTag;
use etagd_client::headers::{self, ETAGD_INVALIDATE, SURROGATE_KEY};
use etagd_client::key::ResourceKey;

use crate::config::{Config, Route};
use crate::metrics::Metrics;
use crate::origin::{self, Buffered, Origin, ProxyBody};

const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

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

fn status_header(detail: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("etagd; {detail}")).unwrap_or(HeaderValue::from_static("etagd"))
}

fn plain(status: StatusCode, message: &str, cache_status: &str) -> Response<ProxyBody> {
    let mut response = Response::new(origin::full(format!("{message}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response.headers_mut().insert(CACHE_STATUS, status_header(cache_status));
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
            return plain(StatusCode::BAD_REQUEST, "missing Host header", "fwd=request; detail=no-host");
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
            return self.fetch(&read, None, "fwd=request", "pass").await;
        }
        let started = Instant::now();
        let lookup = self.cache.lookup_waiting(read.lookup()).await;
        self.metrics.lookup_duration.observe(started.elapsed().as_secs_f64());
        match lookup {
            Lookup::Hit(hit) => self.on_hit(&read, hit).await,
            Lookup::Miss(fill) => self.fetch(&read, Some(fill), "fwd=uri-miss", "miss").await,
            Lookup::Busy => self.fetch(&read, None, "fwd=miss; detail=fill-wait-timeout", "miss").await,
            Lookup::Pass { reason } => {
                let detail = format!("fwd=bypass; detail=hit-for-pass-{}", reason.replace('_', "-"));
                self.fetch(&read, None, &detail, "pass").await
            }
            Lookup::Unavailable(error) => {
                if self.store_log.allow() {
                    tracing::warn!(%error, "cache store unavailable; serving from the origin (logged at most once a minute)");
                }
                self.fetch(&read, None, "fwd=miss; detail=store-unavailable", "miss").await
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
                let ttl = hit.meta.fresh_for_s.saturating_sub(hit.age_s);
                let detail =
                    if hit.meta.fresh_for_s == u64::MAX { "hit".to_owned() } else { format!("hit; ttl={ttl}") };
                let meta = hit.meta.clone();
                self.serve(read, &hit, &meta, &detail, "hit").await
            }
            HitState::Grace | HitState::Stale { while_revalidate: true, .. } => {
                let reason = if hit.state == HitState::Grace { "grace" } else { "while_revalidate" };
                self.metrics.stale_served.get_or_create(&crate::metrics::ReasonLabel { reason }).inc();
                self.refresh_in_background(read, &hit);
                let detail = format!("hit; detail=stale-{}", reason.replace('_', "-"));
                let meta = hit.meta.clone();
                self.serve(read, &hit, &meta, &detail, "stale").await
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
        detail: &str,
        outcome: &'static str,
    ) -> Response<ProxyBody> {
        // Each stored coding is its own representation with its own validator (RFC 9110 section 8.8.3).
        let coding = encoding::negotiate(&read.parts.headers, &meta.codings);
        let etag = EntityTag::parse(&meta.etag).map(|base| match coding {
            Some(coding) => base.for_coding(coding.as_str()),
            None => base,
        });
        let mut etag_value = etag.as_ref().map_or_else(|| meta.etag.clone(), EntityTag::to_header_value);
        if let Some(etag) = &etag {
            let weakened = conditional::weakened_copy_of(&read.parts.headers, etag);
            if weakened {
                // The client holds the weakened copy: a 304 naming that form lets it update what it stored
                // (RFC 9111 section 4.3.4 selects stored responses by the validator the 304 carries).
                etag_value = format!("W/{etag_value}");
            }
            if meta.minted && weakened {
                self.metrics.weakened_validators.inc();
                if self.weakened_log.allow() {
                    tracing::warn!(
                        "a proxy in front of etagd weakens ETags (W/ copies of strong tags come back); etagd still \
                         answers 304, but check gzip settings in front (see docs/deploying.md)"
                    );
                }
            }
        }
        if conditional::evaluate(&read.parts.headers, etag.as_ref(), meta.last_modified.as_deref())
            == Evaluation::NotModified
        {
            self.metrics.request("not_modified");
            return not_modified(meta, &etag_value, hit.age_s, detail);
        }
        match self.cache.body(hit, coding.map(Coding::as_str)).await {
            Ok(Some(body)) => {
                self.metrics.request(outcome);
                let mut response =
                    Response::new(if read.is_head() { origin::empty() } else { origin::full(body.body.clone()) });
                *response.status_mut() = StatusCode::from_u16(meta.status).unwrap_or(StatusCode::OK);
                let headers = response.headers_mut();
                for (name, value) in &body.headers {
                    if let (Ok(name), Ok(value)) =
                        (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value))
                    {
                        headers.append(name, value);
                    }
                }
                headers.insert(CONTENT_LENGTH, HeaderValue::from(body.body.len()));
                insert_etag(headers, &etag_value);
                headers.insert(AGE, HeaderValue::from(hit.age_s));
                headers.insert(CACHE_STATUS, status_header(detail));
                response
            }
            // The body was evicted or is unreadable: refill it (one caller fleet-wide), never fail the request.
            Ok(None) | Err(_) => {
                let fill = self.cache.refresh_permit(hit, read.lookup()).await;
                self.fetch(read, fill, "fwd=miss; detail=body-missing", "miss").await
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
                    return self.serve(read, &hit, &meta, "hit; detail=stale-if-error", "stale").await;
                }
                return match failed {
                    Ok(response) => self.pass_through(response, "fwd=stale", "miss"),
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
            return self.serve(read, &hit, &meta, "fwd=stale; fwd-status=304; stored", "miss").await;
        }
        match fill {
            Some(fill) => {
                self.store(&read.parts.method, &read.parts.headers, read.route.as_ref(), parts, body, fill).await
            }
            None => self.pass_through(Response::from_parts(parts, body), "fwd=stale", "miss"),
        }
    }

    /// Forwards a GET/HEAD to the origin; with a fill, stores what may be stored.
    async fn fetch(
        self: &Arc<Self>,
        read: &Read,
        fill: Option<Fill>,
        detail: &str,
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
            return with_status(response, detail);
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
        plain(StatusCode::BAD_GATEWAY, "the origin did not answer", "fwd=miss; detail=origin-unavailable")
    }

    fn pass_through(&self, response: Response<Incoming>, detail: &str, outcome: &'static str) -> Response<ProxyBody> {
        self.metrics.request(outcome);
        let (mut parts, body) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(SURROGATE_KEY);
        parts.headers.remove(ETAGD_INVALIDATE);
        with_status(Response::from_parts(parts, origin::stream(body)), detail)
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
                let detail = format!("fwd=uri-miss; detail={}", reason.as_str().replace('_', "-"));
                return with_status(Response::from_parts(parts, origin::stream(body)), &detail);
            }
        };
        let bytes = match origin::buffer(body, self.config.max_body_bytes).await {
            Ok(Buffered::Complete(bytes)) => bytes,
            Ok(Buffered::TooLarge(body)) => {
                fill.abandon(Some(NoStoreReason::TooLarge.as_str())).await;
                self.metrics.request("miss");
                return with_status(Response::from_parts(parts, body), "fwd=uri-miss; detail=too-large");
            }
            Err(error) => {
                drop(fill);
                self.metrics.origin_errors.inc();
                self.metrics.request("error");
                tracing::warn!(%error, "origin body failed");
                return plain(
                    StatusCode::BAD_GATEWAY,
                    "the origin's answer broke off",
                    "fwd=uri-miss; detail=origin-body-error",
                );
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
        let mut vary = headers::vary_names(&parts.headers).unwrap_or_default();
        if !codings.is_empty() {
            vary.retain(|name| name != "accept-encoding");
            add_vary_accept_encoding(&mut parts.headers);
        }
        let origin_etag = parts.headers.get(ETAG).and_then(|v| v.to_str().ok()).and_then(EntityTag::parse);
        let last_modified = parts.headers.get(LAST_MODIFIED).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let replay: Vec<(String, Bytes)> = parts
            .headers
            .iter()
            .filter(|(name, _)| ![ETAG, AGE, CONTENT_LENGTH].contains(name))
            .map(|(name, value)| (name.as_str().to_owned(), Bytes::copy_from_slice(value.as_bytes())))
            .collect();
        let response = FillResponse {
            status: parts.status.as_u16(),
            headers: replay,
            headers_304: headers::headers_for_304(&parts.headers),
            body: bytes.clone(),
            freshness,
            tags,
            vary,
            etag: origin_etag,
            last_modified,
            codings: codings.clone(),
        };
        self.metrics.request("miss");
        match fill.commit(response).await {
            Ok(meta) => {
                let stored: usize = bytes.len() + codings.iter().map(|(_, body)| body.len()).sum::<usize>();
                self.metrics.stored_bytes.inc_by(stored as u64);
                let coding = encoding::negotiate(request, &meta.codings);
                let base = EntityTag::parse(&meta.etag);
                let (etag, body) = match (coding, base) {
                    (Some(coding), Some(base)) => {
                        let body = codings.iter().find(|(c, _)| c == coding.as_str()).map(|(_, b)| b.clone());
                        parts.headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding.as_str()));
                        (base.for_coding(coding.as_str()).to_header_value(), body.unwrap_or(bytes))
                    }
                    _ => (meta.etag.clone(), bytes),
                };
                parts.headers.remove(ETAG);
                insert_etag(&mut parts.headers, &etag);
                parts.headers.insert(AGE, HeaderValue::from(meta.initial_age_s));
                parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
                with_status(Response::from_parts(parts, origin::full(body)), "fwd=uri-miss; stored")
            }
            Err(error) => {
                let detail = match error {
                    CommitError::Invalidated => "fwd=uri-miss; detail=invalidated-during-fill",
                    CommitError::Raced => "fwd=uri-miss; detail=lost-race",
                    _ => "fwd=uri-miss; detail=store-unavailable",
                };
                parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                with_status(Response::from_parts(parts, origin::full(bytes)), detail)
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
        with_status(response, "fwd=method")
    }
}

/// Resolves `Location`/`Content-Location` against the request's origin; `None` for another host.
fn same_host(base: &str, value: &str) -> Option<String> {
    let base_url = url::Url::parse(&format!("{base}/")).ok()?;
    let target = base_url.join(value).ok()?;
    (target.host_str() == base_url.host_str() && target.port_or_known_default() == base_url.port_or_known_default())
        .then(|| target.to_string())
}

fn insert_etag(headers: &mut HeaderMap, etag: &str) {
    if let Ok(etag) = HeaderValue::from_str(etag) {
        headers.insert(ETAG, etag);
    }
}

/// Adds `Accept-Encoding` to `Vary` (RFC 9110 section 12.5.5): caches downstream must key on it once etagd
/// picks codings per request.
fn add_vary_accept_encoding(headers: &mut HeaderMap) {
    let present = headers.get_all(VARY).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|n| n.trim().eq_ignore_ascii_case("accept-encoding") || n.trim() == "*"))
    });
    if !present {
        headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

fn with_status(mut response: Response<ProxyBody>, detail: &str) -> Response<ProxyBody> {
    response.headers_mut().insert(CACHE_STATUS, status_header(detail));
    response
}

/// A 304 with the headers RFC 9110 section 15.4.5 requires (the ones the 200 would carry) and no body.
fn not_modified(meta: &EntryMeta, etag: &str, age_s: u64, detail: &str) -> Response<ProxyBody> {
    let mut response = Response::new(origin::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    let headers = response.headers_mut();
    for (name, value) in &meta.headers_304 {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.append(name, value);
        }
    }
    insert_etag(headers, etag);
    if let Some(value) = meta.last_modified.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(LAST_MODIFIED, value);
    }
    headers.insert(AGE, HeaderValue::from(age_s));
    headers.insert(CACHE_STATUS, status_header(detail));
    response
}
