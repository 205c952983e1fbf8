//! [`EtagCache`]: the service the layer wraps around an inner service, and the path of one request through
//! the cache.
//!
//! | lookup | what the request gets |
//! |---|---|
//! | fresh hit | 304 or the stored body; the inner service is not called |
//! | stale hit within `stale-while-revalidate`, or soft-invalidated within its grace | the stored answer now; one caller fleet-wide refreshes the entry in the background |
//! | stale hit past those windows | the inner service's answer, stored (or the stale one on a 5xx within `stale-if-error`) |
//! | miss | the inner service's answer, stored when RFC 9111 allows it |
//! | busy, pass, store unavailable | the inner service's answer, not stored |

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::response::Parts;
use http::{HeaderMap, Method, Request, Response};
use http_body::Body;
use tower::{BoxError, Service};

use super::request;
use super::response::{self, Collected};
use super::{EtagCacheLayer, ResponseBody, ResponseFuture, Shared};
use crate::cache::{Cache, CommitError, Fill, FillResponse, Hit, HitState, Lookup, LookupRequest};
use crate::cacheability::{self, NoStoreReason};
use crate::conditional::Evaluation;
use crate::entry::EntryMeta;
use crate::reply::{self, CacheStatus, Fwd};

/// The service built by [`EtagCacheLayer`]: answers GET and HEAD from the shared cache and fills it from the
/// inner service, like the sidecar does for a whole application.
///
/// The inner service must be `Clone` (every axum service is): a clone answers in the background when a stale
/// entry is refreshed. See the [module docs](crate::layer) for an example.
#[derive(Clone, Debug)]
pub struct EtagCache<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> EtagCache<S> {
    /// Wraps `inner` with the default settings of [`EtagCacheLayer::new`].
    pub fn new(inner: S, cache: Cache) -> Self {
        EtagCacheLayer::new(cache).wrap(inner)
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// A layer wrapping services with this cache; configure it with the [`EtagCacheLayer`] builder methods.
    pub fn layer(cache: Cache) -> EtagCacheLayer {
        EtagCacheLayer::new(cache)
    }

    /// The cache engine (share it with write handlers to invalidate).
    pub fn cache(&self) -> &Cache {
        &self.shared.cache
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, ResBody> Service<Request<B>> for EtagCache<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The service that was polled ready goes with this request; a clone stays for the next poll_ready.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(Box::pin(respond(self.shared.clone(), ready, request)))
    }
}

// === the request path ===

async fn respond<S, B, ResBody>(
    shared: Arc<Shared>,
    inner: S,
    request: Request<B>,
) -> Result<Response<ResponseBody>, S::Error>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        return forward(inner, request, CacheStatus::forward(Fwd::Method)).await;
    }
    if let Some(bypass) = request::bypass(request.headers()) {
        let status = CacheStatus::forward(bypass.fwd()).detail(bypass.as_str());
        return forward(inner, request, status).await;
    }
    let resource = request::resource_key(&request);
    let headers = request.headers().clone();
    let lookup = LookupRequest { resource: &resource, headers: &headers, route_tags: &shared.settings.tags };
    match shared.cache.lookup_waiting(lookup).await {
        Lookup::Hit(hit) => on_hit(&shared, inner, request, hit, lookup).await,
        Lookup::Miss(fill) => fill_on_request(&shared, inner, request, fill, Fwd::UriMiss, None).await,
        Lookup::Busy => {
            // Another caller's fill outlasted `fill_wait`: do not queue behind it any longer.
            forward(inner, request, CacheStatus::forward(Fwd::Miss).detail("fill-wait-timeout")).await
        }
        Lookup::Pass { reason } => {
            // Hit-for-pass: the URL answered something unstorable recently (details as the sidecar words them).
            let detail = format!("hit-for-pass-{}", reason.replace('_', "-"));
            forward(inner, request, CacheStatus::forward(Fwd::Bypass).detail(detail)).await
        }
        Lookup::Unavailable(error) => {
            // A store failure is never the client's problem: the engine counted it, the service answers.
            tracing::debug!(%error, "cache store unavailable; answering from the inner service");
            forward(inner, request, CacheStatus::forward(Fwd::Miss).detail("store-unavailable")).await
        }
    }
}

/// Sends a request to the inner service without involving the cache.
async fn forward<S, B, ResBody>(
    mut inner: S,
    request: Request<B>,
    status: CacheStatus,
) -> Result<Response<ResponseBody>, S::Error>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let response = inner.call(request).await?;
    Ok(response::forwarded(response, status))
}

async fn on_hit<S, B, ResBody>(
    shared: &Arc<Shared>,
    inner: S,
    request: Request<B>,
    hit: Hit,
    lookup: LookupRequest<'_>,
) -> Result<Response<ResponseBody>, S::Error>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let (refresh_in_background, detail) = match hit.state {
        HitState::Fresh => (false, None),
        // RFC 5861 section 3: served stale while the entry is refreshed in the background.
        HitState::Stale { while_revalidate: true, .. } => (true, Some("stale")),
        HitState::Grace => (true, Some("grace")),
        // RFC 9111 section 4.2.4: a stale entry outside its windows must be refreshed before use.
        HitState::Stale { .. } => {
            return match shared.cache.refresh_permit(&hit, lookup).await {
                Some(fill) => fill_on_request(shared, inner, request, fill, Fwd::Stale, Some(&hit)).await,
                // Another caller is refreshing it: do not wait, and do not store a second copy.
                None => forward(inner, request, CacheStatus::forward(Fwd::Stale).detail("refresh-busy")).await,
            };
        }
    };
    let mut status = CacheStatus::hit(reply::ttl(&hit.meta, hit.age_s));
    if let Some(detail) = detail {
        status = status.detail(detail);
    }
    let head = request.method() == Method::HEAD;
    let answer = match answer_from_entry(shared, &hit, lookup.headers, head, &status).await {
        Ok(Some(answer)) => answer,
        Ok(None) => {
            // The body item was evicted (or is corrupt) while its entry survived: refill it.
            return match shared.cache.refresh_permit(&hit, lookup).await {
                Some(fill) => fill_on_request(shared, inner, request, fill, Fwd::Miss, None).await,
                None => forward(inner, request, CacheStatus::forward(Fwd::Miss).detail("body-missing")).await,
            };
        }
        Err(error) => {
            tracing::debug!(%error, "cache body unreadable; answering from the inner service");
            return forward(inner, request, CacheStatus::forward(Fwd::Miss).detail("store-unavailable")).await;
        }
    };
    if refresh_in_background {
        if let Some(fill) = shared.cache.refresh_permit(&hit, lookup).await {
            spawn_refresh(shared.clone(), inner, request, fill);
        }
    }
    Ok(answer)
}

/// Answers from a hit: 304 when the client's validators match (no body read), else the stored body. `None`
/// when the body is gone.
async fn answer_from_entry(
    shared: &Shared,
    hit: &Hit,
    request_headers: &HeaderMap,
    head: bool,
    status: &CacheStatus,
) -> Result<Option<Response<ResponseBody>>, crate::store::StoreError> {
    let chosen = response::representation(request_headers, &hit.meta);
    if chosen.evaluate() == Evaluation::NotModified {
        let answer = chosen.not_modified(Some(hit.age_s), status);
        return Ok(Some(response::from_storage(answer, ResponseBody::empty(), shared.now())));
    }
    let Some(stored) = shared.cache.body(hit, chosen.coding().map(|coding| coding.as_str())).await? else {
        return Ok(None);
    };
    let answer = chosen.from_entry(&stored.headers, stored.body.len(), Some(hit.age_s), status);
    let body = if head { ResponseBody::empty() } else { ResponseBody::full(stored.body.clone()) };
    Ok(Some(response::from_storage(answer, body, shared.now())))
}

/// Asks the inner service for the whole response on the request path, stores it when allowed, and answers the
/// client (a 304 when its validators match what was just stored).
async fn fill_on_request<S, B, ResBody>(
    shared: &Shared,
    mut inner: S,
    request: Request<B>,
    fill: Fill,
    fwd: Fwd,
    previous: Option<&Hit>,
) -> Result<Response<ResponseBody>, S::Error>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let head = request.method() == Method::HEAD;
    let (request, request_headers) = fill_request(request);
    // An inner error drops the fill, which releases it for the next caller.
    let response = inner.call(request).await?;
    if let Some(previous) = previous {
        let if_error = matches!(previous.state, HitState::Stale { if_error: true, .. });
        if if_error && response.status().is_server_error() {
            // RFC 5861 section 4: within stale-if-error, a failing refresh is answered with the stale entry.
            let status = CacheStatus::hit(reply::ttl(&previous.meta, previous.age_s)).detail("stale-if-error");
            if let Ok(Some(answer)) = answer_from_entry(shared, previous, &request_headers, head, &status).await {
                return Ok(answer);
            }
        }
    }
    let fwd_status = response.status().as_u16();
    Ok(match store(shared, fill, &request_headers, response).await {
        Stored::Yes { meta, response: stored } => {
            let status = CacheStatus::forward(fwd).fwd_status(fwd_status).stored(reply::ttl(&meta, 0));
            let chosen = response::representation(&request_headers, &meta);
            let (answer, body) = if chosen.evaluate() == Evaluation::NotModified {
                (chosen.not_modified(None, &status), ResponseBody::empty())
            } else {
                let body = if head { ResponseBody::empty() } else { ResponseBody::full(stored.body.clone()) };
                (chosen.from_entry(&stored.headers, stored.body.len(), None, &status), body)
            };
            response::from_storage(answer, body, shared.now())
        }
        Stored::No { parts, body, detail } => {
            response::unstored(parts, body, head, CacheStatus::forward(fwd).detail(detail))
        }
    })
}

/// The request the inner service gets when the layer fills: always GET (HEAD shares GET's entry, so the fill
/// needs the body), and without the client's own conditionals. Returns it with the client's headers.
fn fill_request<B>(request: Request<B>) -> (Request<B>, HeaderMap) {
    let (mut parts, body) = request.into_parts();
    let client_headers = parts.headers.clone();
    parts.method = Method::GET;
    request::strip_conditionals(&mut parts.headers);
    (Request::from_parts(parts, body), client_headers)
}

/// Refreshes a stale entry in the background with the request that found it, which was answered from the
/// cache. An error or a refusal leaves the stale entry in place until it expires.
fn spawn_refresh<S, B, ResBody>(shared: Arc<Shared>, mut inner: S, request: Request<B>, fill: Fill)
where
    S: Service<Request<B>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let (request, request_headers) = fill_request(request);
    let answer = inner.call(request);
    tokio::spawn(async move {
        let Ok(response) = answer.await else {
            tracing::debug!("the inner service failed while refreshing a stale entry; it stays stale");
            return;
        };
        if let Stored::No { detail, .. } = store(&shared, fill, &request_headers, response).await {
            tracing::debug!(%detail, "a background refresh was not stored");
        }
    });
}

/// What became of an inner answer offered to the cache.
enum Stored {
    /// Committed: the entry's meta and what was stored.
    Yes { meta: Arc<EntryMeta>, response: FillResponse },
    /// Not stored (the fill was abandoned or dropped): the answer to send as it is.
    No { parts: Parts, body: ResponseBody, detail: String },
}

/// Reads an inner answer and commits it to the fill when RFC 9111 allows it, else abandons the fill.
async fn store<ResBody>(shared: &Shared, fill: Fill, request_headers: &HeaderMap, response: Response<ResBody>) -> Stored
where
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let (parts, body) = response.into_parts();
    let bytes = match response::collect_limited(body, &parts.headers, shared.settings.max_body_bytes).await {
        Collected::Whole(bytes) => bytes,
        Collected::Partial { body, reason } => {
            fill.abandon(Some(reason)).await;
            return Stored::No { parts, body, detail: reason.to_owned() };
        }
        Collected::Failed(body) => {
            // Dropping the fill releases it without marking the URL uncacheable: the failure may be transient.
            drop(fill);
            return Stored::No { parts, body, detail: "body-error".to_owned() };
        }
    };
    // HEAD was turned into GET for the fill, so the rules are those of GET.
    let decision = cacheability::storable(
        &Method::GET,
        request_headers,
        parts.status,
        &parts.headers,
        &shared.settings.policy,
        shared.now(),
    );
    let freshness = match decision {
        Ok(freshness) => freshness,
        Err(reason) => {
            // A refusal caused by this request alone must not turn the URL into a pass for everyone else.
            let request_specific = matches!(reason, NoStoreReason::RequestNoStore | NoStoreReason::Authorization);
            fill.abandon((!request_specific).then(|| reason.as_str())).await;
            return Stored::No { parts, body: ResponseBody::full(bytes), detail: reason.as_str().to_owned() };
        }
    };
    let tags = response::tags(&shared.settings.tags, &parts.headers);
    let prepared = reply::prepare_fill(&parts, bytes, freshness, tags, Vec::new());
    match fill.commit(prepared.clone()).await {
        Ok(meta) => Stored::Yes { meta, response: prepared },
        Err(error) => {
            tracing::debug!(%error, "a response was not stored");
            let detail = match error {
                CommitError::Invalidated => "invalidated",
                CommitError::Raced => "raced",
                CommitError::Store(_) => "store-unavailable",
            };
            Stored::No { parts, body: ResponseBody::full(prepared.body), detail: detail.to_owned() }
        }
    }
}

impl Shared {
    /// Now by the engine's clock, so tests that move the clock move freshness checks too.
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.cache.now_ms())
    }
}
