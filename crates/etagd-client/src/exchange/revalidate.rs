//! Stale entries outside their stale-while-revalidate window: a conditional request to the origin (RFC 9111
//! section 4.3.1). A 304 updates the stored entry without its body (section 4.3.4); a failure within
//! `stale-if-error` serves the stale entry (RFC 5861 section 4); anything else replaces it. A HEAD request
//! revalidates with HEAD, and a 200 to it updates the stored GET response or marks it stale (section 4.3.5).

use std::sync::Arc;

use http::header::{AGE, CONTENT_ENCODING, CONTENT_LENGTH, ETAG, LAST_MODIFIED};
use http::{HeaderMap, Method, StatusCode};

use super::{Answer, Filled, Hold, Outcome, Run, Sent, Upstream, forward};
use crate::cache::{CommitError, Fill, Hit, LookupRequest};
use crate::cacheability::{self, Freshness, NoStoreReason};
use crate::entry::EntryMeta;
use crate::etag::EntityTag;
use crate::headers::{self, SURROGATE_KEY};

/// What the origin's answer to a revalidation says about the stored entry.
enum Verdict {
    /// A 304, or a HEAD 200 for the same representation: the stored body stands, its headers are updated.
    Unchanged(http::response::Parts),
    /// A HEAD 200 whose validators or length differ: the stored response is stale (RFC 9111 section 4.3.5);
    /// the answer is relayed.
    Changed(http::Response<crate::body::Body>),
    /// Any other answer: it replaces the entry like a fill.
    Replaced(http::Response<crate::body::Body>),
}

impl<B, U> Run<B, U>
where
    B: Default + Send + 'static,
    U: Upstream<B>,
{
    /// Revalidates a stale hit on the client's request path. `if_error`: within `stale-if-error`;
    /// `if_unreachable`: may stand in if the origin cannot be reached (`stale_if_unreachable_s`).
    pub(super) async fn revalidate(&mut self, hit: Hit, if_error: bool, if_unreachable: bool) -> Answer<U::Error> {
        let fill = self.refresh_permit(&hit).await;
        let request = self.revalidation_request(&hit.meta);
        let answer = self.send(request).await;
        // RFC 5861 section 4 (an error or a 5xx within stale-if-error) and RFC 9111 section 4.2.4 (disconnected
        // from the origin, unless forbidden): the stale entry stands in. The fill is dropped, which releases it:
        // the stale entry stays for the next caller.
        let stands_in = match &answer {
            Ok(Sent::Answered(response)) => if_error && response.status().is_server_error(),
            Ok(Sent::Held(_)) => false,
            Err(_) => if_error || if_unreachable,
        };
        if stands_in {
            drop(fill);
            return self.serve(&hit, hit.meta.clone(), hit.age_s, Outcome::StaleIfError).await;
        }
        let response = match answer {
            // The origin is at its limit: a stale copy that may be served stale stands in (RFC 9111 section
            // 4.2.4 allows it only without must-revalidate), else the client gets the refusal.
            Ok(Sent::Held(Hold::Overloaded)) if !hit.meta.must_revalidate => {
                drop(fill);
                return self.serve(&hit, hit.meta.clone(), hit.age_s, Outcome::StaleOverloaded).await;
            }
            Ok(Sent::Held(hold)) => return Ok(self.held(hold)),
            // RFC 9111 section 5.2.2.2: a stored response that must be revalidated is not reused when the origin
            // cannot be reached, and the client gets a 504.
            Err(_) if hit.meta.must_revalidate => return Ok(self.unvalidated()),
            Err(error) => return Err(error),
            Ok(Sent::Answered(response)) => response,
        };
        match self.verdict(&hit.meta, response) {
            Verdict::Unchanged(mut parts) => {
                let (meta, outcome) = self.apply_unchanged(fill, &hit.meta, &mut parts, false).await;
                // Just validated: as old as the origin's answer said (RFC 9111 section 4.2.3).
                let age_s = meta.initial_age_s;
                self.serve(&hit, meta, age_s, outcome).await
            }
            Verdict::Changed(response) => {
                self.mark_stale(fill, &hit.meta).await;
                self.report.outcome = Outcome::Refreshed(Filled::MarkedStale);
                Ok(self.relay(response).await)
            }
            Verdict::Replaced(response) => match fill {
                Some(fill) => self.store(response, fill, Outcome::Refreshed, true).await,
                None => {
                    self.report.outcome = Outcome::Refreshed(Filled::NoLease);
                    Ok(self.relay(response).await)
                }
            },
        }
    }

    /// Revalidates a stale hit in the background (the client was answered from it). A failure or an origin 5xx
    /// leaves the stale entry in place, so `stale-if-error` still finds it.
    pub(super) async fn refresh(&mut self, hit: Hit) {
        let Some(fill) = self.refresh_permit(&hit).await else {
            self.report.outcome = Outcome::Refreshed(Filled::NoLease);
            return;
        };
        let request = self.revalidation_request(&hit.meta);
        match self.send(request).await {
            Err(_) | Ok(Sent::Held(_)) => self.report.outcome = Outcome::Refreshed(Filled::KeptStale),
            Ok(Sent::Answered(response)) if response.status().is_server_error() => {
                fill.abandon(None).await;
                self.report.outcome = Outcome::Refreshed(Filled::KeptStale);
            }
            Ok(Sent::Answered(response)) => match self.verdict(&hit.meta, response) {
                Verdict::Unchanged(mut parts) => {
                    let (_, outcome) = self.apply_unchanged(Some(fill), &hit.meta, &mut parts, true).await;
                    self.report.outcome = outcome;
                }
                Verdict::Changed(_) => {
                    self.mark_stale(Some(fill), &hit.meta).await;
                    self.report.outcome = Outcome::Refreshed(Filled::MarkedStale);
                }
                Verdict::Replaced(response) => {
                    // Nobody waits for this answer: storing it is the whole point, the response is dropped.
                    let _ = self.store(response, fill, Outcome::Refreshed, true).await;
                }
            },
        }
    }

    async fn refresh_permit(&mut self, hit: &Hit) -> Option<Fill> {
        let key = self.key.as_ref().expect("a hit has a key");
        let route = self.exchange.config().route_for(key.path());
        let lookup = LookupRequest { resource: key, headers: &self.parts.headers, route_tags: &route.tags };
        self.exchange.cache().refresh_permit(hit, lookup).await
    }

    /// The answer when a stored response could not be validated and may not be reused.
    fn unvalidated(&mut self) -> http::Response<crate::body::Body> {
        self.report.outcome = Outcome::OriginUnavailable;
        let body = "the origin could not be reached to validate the stored response, which must not be reused \
                    stale (must-revalidate, proxy-revalidate or s-maxage)\n";
        let mut response = http::Response::new(crate::body::Body::full(body.into()));
        *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
        response
    }

    /// The conditional request: GET, or HEAD for a HEAD (the origin need not render a body nobody reads).
    fn revalidation_request(&mut self, meta: &EntryMeta) -> http::Request<B> {
        let mut headers = self.outbound_headers();
        forward::for_revalidation(&mut headers, meta, !self.exchange.config().compression.codings.is_empty());
        let method = if self.parts.method == Method::HEAD { Method::HEAD } else { Method::GET };
        self.request(method, headers)
    }

    fn verdict(&self, meta: &EntryMeta, response: http::Response<crate::body::Body>) -> Verdict {
        if response.status() == StatusCode::NOT_MODIFIED {
            return Verdict::Unchanged(response.into_parts().0);
        }
        if self.parts.method != Method::HEAD || response.status() != StatusCode::OK {
            return Verdict::Replaced(response);
        }
        if same_representation(meta, response.headers()) {
            Verdict::Unchanged(response.into_parts().0)
        } else {
            Verdict::Changed(response)
        }
    }

    /// Applies an answer that says the stored body stands: triggers, then the stored headers updated with the
    /// answer's (RFC 9111 section 4.3.4), judged as the 200 they now describe, and committed when `fill` allows.
    /// A `no-store` or `private` (or any other refusal) is handled as on a 200. Returns the entry to answer from.
    async fn apply_unchanged(
        &mut self,
        fill: Option<Fill>,
        previous: &Arc<EntryMeta>,
        parts: &mut http::response::Parts,
        refreshing: bool,
    ) -> (Arc<EntryMeta>, Outcome) {
        self.apply_invalidate_header(&mut parts.headers).await;
        headers::strip_hop_by_hop(&mut parts.headers);
        let (updated, decision) = self.updated_entry(previous, &parts.headers);
        let Some(fill) = fill else {
            return (Arc::new(updated), Outcome::Refreshed(Filled::NoLease));
        };
        let freshness = match decision {
            Ok(freshness) => freshness,
            Err(reason) => {
                let status = StatusCode::from_u16(previous.status).unwrap_or(StatusCode::OK);
                self.refuse(fill, reason, status, refreshing).await;
                return (Arc::new(updated), Outcome::Refreshed(Filled::NotStored(reason)));
            }
        };
        match fill.commit_revalidated(updated.clone(), freshness).await {
            Ok(meta) => {
                self.report.ttl = crate::reply::ttl(&meta, meta.initial_age_s);
                (meta, Outcome::Revalidated)
            }
            Err(error) => {
                let filled = match error {
                    CommitError::Invalidated => Filled::Invalidated,
                    CommitError::Raced => Filled::Raced,
                    _ => Filled::StoreFailed,
                };
                (Arc::new(updated), Outcome::Refreshed(filled))
            }
        }
    }

    /// The stored entry with an unchanged-answer's fields applied, and whether the result may be stored.
    fn updated_entry(&self, previous: &EntryMeta, answer: &HeaderMap) -> (EntryMeta, Result<Freshness, NoStoreReason>) {
        let config = self.exchange.config();
        let route = config.route_for(self.key.as_ref().expect("a hit has a key").path());
        let mut merged = headers::updated_with_304(&previous.header_map(), answer);
        let mut updated = previous.clone();
        // New tags replace the old ones, as they would on a 200; route tags always apply.
        let tags = headers::tags_in(answer, SURROGATE_KEY);
        if !tags.is_empty() {
            updated.tags = super::fill::with_route_tags(tags, &route.tags);
        }
        let status = StatusCode::from_u16(previous.status).unwrap_or(StatusCode::OK);
        // Judged with the answer's `Age` too: it is never stored, but it says how old the answer already is
        // (RFC 9111 section 4.2.3).
        let mut judged = merged.clone();
        for age in answer.get_all(AGE) {
            judged.append(AGE, age.clone());
        }
        let decision = cacheability::storable(
            &Method::GET,
            &self.parts.headers,
            status,
            &judged,
            &config.policy(route),
            self.exchange.now(),
        );
        let decision = self.unless_personal(decision, &merged);
        self.strip_targeted(&mut merged);
        updated.set_headers(&merged);
        (updated, decision)
    }

    /// RFC 9111 section 4.3.5: a HEAD answer for another representation makes the stored one stale. It is kept
    /// (for `stale-if-error`) with no freshness and no stale-while-revalidate window, so the next GET revalidates
    /// before using it.
    async fn mark_stale(&mut self, fill: Option<Fill>, previous: &EntryMeta) {
        let Some(fill) = fill else { return };
        let freshness = Freshness {
            fresh_for_s: 0,
            initial_age_s: 0,
            stale_while_revalidate_s: 0,
            stale_if_error_s: previous.stale_if_error_s,
            must_revalidate: previous.must_revalidate,
        };
        let _ = fill.commit_revalidated(previous.clone(), freshness).await;
    }
}

/// RFC 9111 section 4.3.5: whether a HEAD 200 describes the stored response: every validator it carries matches
/// the stored one (the origin's `ETag`, `Last-Modified`), and its `Content-Length`, when it has one for the same
/// coding, is the stored body's.
fn same_representation(meta: &EntryMeta, head: &HeaderMap) -> bool {
    let text = |name| head.get(name).and_then(|v: &http::HeaderValue| v.to_str().ok());
    if let Some(etag) = text(ETAG) {
        let stored = (!meta.minted).then(|| EntityTag::parse(&meta.etag)).flatten();
        let matches = EntityTag::parse(etag).zip(stored).is_some_and(|(got, stored)| got == stored);
        if !matches {
            return false;
        }
    }
    if let Some(modified) = text(LAST_MODIFIED) {
        if meta.last_modified() != Some(modified) {
            return false;
        }
    }
    let stored_coding = meta.header("content-encoding").next();
    let same_coding = head.get(CONTENT_ENCODING).map(|v| v.as_bytes()) == stored_coding;
    match text(CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok()) {
        Some(length) if same_coding => length == meta.body_len,
        _ => true,
    }
}
