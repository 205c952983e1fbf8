//! Fills: the origin's answer to a request the cache will store, judged (RFC 9111 section 3), read up to the
//! body limit, compressed once and committed with CAS; a plain GET under a lease is answered before the
//! codings and the commit (`stream.rs`), anything else from what was stored.

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use http::{HeaderValue, Method, Response, StatusCode};

use super::policy::{self, Refusal};
use super::{Answer, Filled, Outcome, Run, Sent, Upstream, forward};
use crate::body::{Body, Collected, read_limited};
use crate::cache::{CommitError, Fill};
use crate::cacheability::{self, NoStoreReason};
use crate::conditional::Evaluation;
use crate::etag::EntityTag;
use crate::headers::{self, MAX_TAGS, SURROGATE_KEY};
use crate::reply::{self, Representation};

impl<B, U> Run<B, U>
where
    B: Default + Send + 'static,
    U: Upstream<B>,
{
    /// Asks the origin for a response to store under `fill`; `outcome` names what kind of fill this is.
    /// HEAD is filled with a GET, as Varnish does: both share one entry, and the entry needs the body.
    pub(super) async fn fill(
        &mut self,
        fill: Fill,
        outcome: fn(Filled) -> Outcome,
        refreshing: bool,
    ) -> Answer<U::Error> {
        let mut headers = self.outbound_headers();
        forward::for_fill(&mut headers, !self.exchange.config().compression.codings.is_empty());
        let request = self.request(Method::GET, headers);
        // An upstream error drops the fill, which releases it for the next caller.
        let response = match self.send(request).await? {
            Sent::Answered(response) => response,
            Sent::Held(hold) => {
                // Dropping the fill releases it: waiters try again rather than queue behind a refusal.
                drop(fill);
                return Ok(self.held(hold));
            }
        };
        let answer = self.store(response, fill, outcome, refreshing).await?;
        Ok(if self.parts.method == Method::HEAD { answer.map(|_| Body::empty()) } else { answer })
    }

    /// Decides, reads and commits an origin answer under a fill, and answers the client either way.
    pub(super) async fn store(
        &mut self,
        response: Response<Body>,
        fill: Fill,
        outcome: fn(Filled) -> Outcome,
        refreshing: bool,
    ) -> Answer<U::Error> {
        let exchange = self.exchange.clone();
        let config = exchange.config();
        let (mut parts, body) = response.into_parts();
        self.apply_invalidate_header(&mut parts.headers).await;
        headers::strip_hop_by_hop(&mut parts.headers);
        let tags = headers::tags_in(&parts.headers, SURROGATE_KEY);
        parts.headers.remove(SURROGATE_KEY);
        let route = config.route_for(self.key.as_ref().expect("a fill has a key").path());
        // HEAD was turned into GET for the fill, so the rules are those of GET.
        let decision = cacheability::storable(
            &Method::GET,
            &self.parts.headers,
            parts.status,
            &parts.headers,
            &config.policy(route),
            exchange.now(),
        );
        // Bodies larger than one item are stored in chunks; admission (a fraction of the smallest server's
        // memory) may bound them below the configured limit.
        let admitted = exchange.cache().max_body_bytes();
        let limit = config.max_body_bytes.min(admitted);
        // What a refusal is reported as: a body over the limit that only admission set was not admitted.
        let refused = |reason: NoStoreReason, len: Option<usize>| match reason {
            NoStoreReason::TooLarge
                if admitted < config.max_body_bytes && len.is_none_or(|len| len <= config.max_body_bytes) =>
            {
                Filled::NotAdmitted
            }
            reason => Filled::NotStored(reason),
        };
        let declared =
            parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
        let decision = match decision {
            Ok(_) if declared.is_some_and(|len| len > limit) => Err(NoStoreReason::TooLarge),
            other => self.unless_personal(other, &parts.headers),
        };
        self.strip_targeted(&mut parts.headers);
        let freshness = match decision {
            Ok(freshness) => freshness,
            Err(reason) => {
                self.refuse(fill, reason, parts.status, refreshing).await;
                self.report.outcome = outcome(refused(reason, declared));
                return Ok(Response::from_parts(parts, body));
            }
        };
        // A body that may be larger than one store item (announced so, or of unknown length) streams to the
        // client from its first byte while it is stored (`stream`): waiting to see whether it fits one item
        // would hold the first byte back for up to an item's worth of the origin's time. A body announced to
        // fit is read whole first.
        let mut fill = fill;
        let item = exchange.cache().store().max_item_bytes();
        // An in-process service's body often has no Content-Length yet, only an exact size.
        let known = declared.or_else(|| http_body::Body::size_hint(&body).exact().map(|len| len as usize));
        let may_exceed_item = known.is_none_or(|len| len > item);
        if item < limit && may_exceed_item && super::stream::streams(&self.parts.method, &self.parts.headers) {
            let origin_etag = parts.headers.get(ETAG).and_then(|v| v.to_str().ok()).and_then(EntityTag::parse);
            // `None`: the validator is the body's hash, so the body is read whole.
            if let Some(etag) = fill.validator_before_body(origin_etag.as_ref()) {
                let tags = with_route_tags(tags, &route.tags);
                return self.stream_fill(parts, body, fill, &etag, freshness, tags, limit, outcome, refreshing);
            }
        }
        let bytes = match read_limited(body, &parts.headers, limit).await {
            Collected::Whole(bytes) => bytes,
            Collected::Partial { body, reason } => {
                self.refuse(fill, reason, parts.status, refreshing).await;
                self.report.outcome = outcome(refused(reason, None));
                return Ok(Response::from_parts(parts, body));
            }
            Collected::Failed(_) => {
                // Dropping the fill releases it without marking the resource: the failure may be transient.
                drop(fill);
                self.report.outcome = outcome(Filled::BodyError);
                return Ok(broken_off());
            }
        };
        let tags = with_route_tags(tags, &route.tags);
        let compressible = config.compression.applies(&parts.headers, bytes.len());
        let identity_only = compressible && config.compression.identity_only(bytes.len());
        // A plain GET is answered now, identity as it came; the codings and the commit follow off the request
        // path (`stream::answer_then_store`), under a lease that makes the next requests wait for the commit.
        // A range, a conditional request or a HEAD is answered from what was stored, and so is a fill others
        // do not wait for (a refresh under a lock, an uncoordinated fill): the next request would find the old
        // entry and fill again.
        if fill.holds_lease() && super::stream::streams(&self.parts.method, &self.parts.headers) {
            let compressing = compressible && !identity_only;
            return Ok(self
                .answer_then_store(parts, bytes, fill, freshness, tags, outcome, compressing, identity_only)
                .await);
        }
        let codings = if compressible && !identity_only {
            exchange.compress(&bytes, |policy, body| policy.encode_at_fill(body)).await
        } else {
            Vec::new()
        };
        if !codings.is_empty() {
            // The client's answer varies on Accept-Encoding too, stored or not.
            reply::vary_on_accept_encoding(&mut parts.headers);
        }
        let prepared = reply::prepare_fill(&parts, bytes.clone(), freshness, tags, codings.clone());
        match fill.commit(prepared).await {
            Ok(meta) => {
                self.report.stored_bytes =
                    (bytes.len() + codings.iter().map(|(_, body)| body.len()).sum::<usize>()) as u64;
                self.report.outcome = outcome(if identity_only { Filled::IdentityOnly } else { Filled::Stored });
                self.report.ttl = reply::ttl(&meta, meta.initial_age_s);
                // RFC 9111 section 5.1: an answer the origin made for this request carries no Age of etagd's,
                // only the one it arrived with.
                let age = (meta.initial_age_s > 0).then_some(meta.initial_age_s);
                // The client may already hold what was just stored (RFC 9110 section 13.2.2).
                let chosen = Representation::negotiate(&self.parts.headers, &meta);
                if chosen.evaluate() == Evaluation::NotModified {
                    self.report.not_modified = true;
                    return Ok(chosen.not_modified(age).map(|()| Body::empty()));
                }
                let body = chosen
                    .coding()
                    .and_then(|coding| codings.iter().find(|(c, _)| c == coding.as_str()))
                    .map_or(bytes, |(_, body)| body.clone());
                let head = chosen.from_entry(body.len(), age);
                // A range request that filled the whole representation is answered its range (RFC 9110 14).
                if head.status() == StatusCode::OK && self.parts.method == Method::GET {
                    let source = crate::body::StoredBodySource(std::sync::Arc::new(crate::entry::StoredBody { body }));
                    return Ok(super::range::apply(head, &source, &self.parts.headers));
                }
                Ok(head.map(|()| Body::full(body)))
            }
            Err(error) => {
                self.report.outcome = outcome(match error {
                    CommitError::Invalidated => Filled::Invalidated,
                    CommitError::Raced => Filled::Raced,
                    // The fill already marked the resource hit-for-pass.
                    CommitError::TooLarge { .. } => Filled::NotStored(NoStoreReason::TooLarge),
                    CommitError::NotAdmitted { .. } => Filled::NotAdmitted,
                    _ => Filled::StoreFailed,
                });
                parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                Ok(Response::from_parts(parts, Body::full(bytes)))
            }
        }
    }

    /// A storage decision with the cookie rule applied: freshness from a route rule alone is for anonymous
    /// requests, so for a request with cookies that matter an answer without its own freshness is refused.
    pub(super) fn unless_personal(
        &self,
        decision: Result<cacheability::Freshness, NoStoreReason>,
        response: &http::HeaderMap,
    ) -> Result<cacheability::Freshness, NoStoreReason> {
        let targeted = &self.exchange.config().targeted_fields;
        match decision {
            Ok(_) if self.personal && !cacheability::has_explicit_freshness(response, targeted) => {
                Err(NoStoreReason::Cookie)
            }
            other => other,
        }
    }

    /// Removes the targeted cache-control fields from what clients get, when configured to.
    pub(super) fn strip_targeted(&self, headers: &mut http::HeaderMap) {
        let config = self.exchange.config();
        if config.strip_targeted {
            for name in &config.targeted_fields {
                headers.remove(name);
            }
        }
    }

    /// Gives a refused fill up, leaving behind what the request policy allows.
    pub(super) async fn refuse(&mut self, fill: Fill, reason: NoStoreReason, status: StatusCode, refreshing: bool) {
        give_up(fill, reason, status, refreshing, self.exchange.config().server_error_pass).await;
    }
}

/// Gives a refused fill up, leaving behind what the request policy allows (`server_error_pass`: the short
/// hit-for-pass of an origin 5xx).
pub(super) async fn give_up(
    fill: Fill,
    reason: NoStoreReason,
    status: StatusCode,
    refreshing: bool,
    server_error_pass: std::time::Duration,
) {
    match policy::refusal(reason, status, refreshing) {
        Refusal::Release => fill.abandon(None).await,
        Refusal::Pass => fill.abandon(Some(reason.as_str())).await,
        Refusal::ShortPass => fill.abandon_for(Some(reason.as_str()), server_error_pass).await,
    }
}

/// The origin's tags and then the route's, up to the limit.
pub(super) fn with_route_tags(mut tags: Vec<String>, route: &[String]) -> Vec<String> {
    for tag in route {
        if tags.len() < MAX_TAGS && !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    tags
}

/// The origin's body broke off before the cache had it all: nothing was sent yet, so the client gets an honest
/// 502 instead of a truncated 200.
fn broken_off() -> Response<Body> {
    let mut response = Response::new(Body::full("the origin's answer broke off\n".into()));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
