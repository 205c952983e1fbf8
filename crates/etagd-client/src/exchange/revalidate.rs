//! Stale entries outside their stale-while-revalidate window: a conditional request to the origin (RFC 9111
//! section 4.3.1). A 304 refreshes the entry without its body (section 4.3.4); a failure within
//! `stale-if-error` serves the stale entry (RFC 5861 section 4); anything else replaces it.

use std::sync::Arc;

use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::{Answer, Filled, Hold, Outcome, Run, Sent, Upstream, forward};
use crate::cache::{Fill, Hit, LookupRequest};
use crate::cacheability;
use crate::entry::EntryMeta;
use crate::headers;

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
            Err(error) => return Err(error),
            Ok(Sent::Answered(response)) => response,
        };
        if response.status() == StatusCode::NOT_MODIFIED {
            let (mut parts, _) = response.into_parts();
            self.apply_invalidate_header(&mut parts.headers).await;
            let refreshed = match fill {
                Some(fill) => self.commit_revalidated(fill, &hit.meta, &parts.headers).await,
                None => None,
            };
            let outcome = if refreshed.is_some() { Outcome::Revalidated } else { Outcome::Refreshed(Filled::NoLease) };
            let meta = refreshed.unwrap_or_else(|| hit.meta.clone());
            // Just validated: as old as the origin's 304 said (RFC 9111 section 4.2.3).
            let age_s = meta.initial_age_s;
            return self.serve(&hit, meta, age_s, outcome).await;
        }
        match fill {
            Some(fill) => self.store(response, fill, Outcome::Refreshed, true).await,
            None => {
                self.report.outcome = Outcome::Refreshed(Filled::NoLease);
                Ok(self.relay(response).await)
            }
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
            Ok(Sent::Answered(response)) if response.status() == StatusCode::NOT_MODIFIED => {
                let (mut parts, _) = response.into_parts();
                self.apply_invalidate_header(&mut parts.headers).await;
                let refreshed = self.commit_revalidated(fill, &hit.meta, &parts.headers).await;
                self.report.outcome =
                    if refreshed.is_some() { Outcome::Revalidated } else { Outcome::Refreshed(Filled::NoLease) };
            }
            Ok(Sent::Answered(response)) => {
                // Nobody waits for this answer: storing it is the whole point, the response is dropped.
                let _ = self.store(response, fill, Outcome::Refreshed, true).await;
            }
        }
    }

    async fn refresh_permit(&mut self, hit: &Hit) -> Option<Fill> {
        let key = self.key.as_ref().expect("a hit has a key");
        let route = self.exchange.config().route_for(key.path());
        let lookup = LookupRequest { resource: key, headers: &self.parts.headers, route_tags: &route.tags };
        self.exchange.cache().refresh_permit(hit, lookup).await
    }

    fn revalidation_request(&mut self, meta: &EntryMeta) -> http::Request<B> {
        let mut headers = self.outbound_headers();
        forward::for_revalidation(&mut headers, meta, !self.exchange.config().compression.codings.is_empty());
        self.request(Method::GET, headers)
    }

    /// Stores what a 304 says about the stored entry: its headers updated with the 304's (RFC 9111 section
    /// 4.3.4; `Content-Length` is never updated, section 3.2), judged as the 200 they stand for. `None` when the
    /// result may not be stored, or the store refused it.
    async fn commit_revalidated(
        &mut self,
        fill: Fill,
        previous: &EntryMeta,
        answer: &HeaderMap,
    ) -> Option<Arc<EntryMeta>> {
        let mut merged = HeaderMap::new();
        for (name, value) in &previous.headers_304 {
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                merged.append(name, value);
            }
        }
        for (name, value) in answer {
            if name != CONTENT_LENGTH && !headers::is_hop_by_hop(name) {
                merged.insert(name.clone(), value.clone());
            }
        }
        let config = self.exchange.config();
        let route = config.route_for(self.key.as_ref().expect("a hit has a key").path());
        let now = self.exchange.now();
        let decision = cacheability::storable(
            &Method::GET,
            &self.parts.headers,
            StatusCode::OK,
            &merged,
            &config.policy(route),
            now,
        );
        let Ok(freshness) = decision else {
            fill.abandon(None).await;
            return None;
        };
        let meta = fill.commit_revalidated(previous, freshness, headers::headers_for_304(answer)).await.ok()?;
        self.report.ttl = crate::reply::ttl(&meta, meta.initial_age_s);
        Some(meta)
    }
}
