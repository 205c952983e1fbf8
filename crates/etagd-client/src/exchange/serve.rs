//! Answers from storage: a 304 when the client's validator matches (no body read), else the stored body of the
//! representation `Accept-Encoding` picks (a wanted coding not stored yet is made for later clients:
//! `codings.rs`); stale entries within their windows served while one caller in the fleet refreshes them in
//! the background.

use std::sync::Arc;

use http::{Method, Request};

use super::{Answer, Exchange, Filled, Outcome, RequestContext, Run, Upstream};
use crate::body::{Body, BodySource, StoredBodySource};
use crate::cache::{Hit, HitState, LookupRequest, StoredRepresentation};
use crate::conditional::Evaluation;
use crate::encoding::Coding;
use crate::entry::EntryMeta;
use crate::key::ResourceKey;
use crate::reply::{self, Representation};

impl<B, U> Run<B, U>
where
    B: Default + Send + 'static,
    U: Upstream<B>,
{
    /// A current entry was found.
    pub(super) async fn on_hit(&mut self, hit: Hit) -> Answer<U::Error> {
        if self.personal && !explicitly_fresh(&hit.meta, &self.exchange.config().targeted_fields) {
            // Fresh only by a route rule: it may be another client's view; this one's goes unstored too.
            return self.pass(Outcome::Request(super::RequestBypass::Cookie)).await;
        }
        match hit.state {
            HitState::Fresh if self.exchange.config().client_freshness && self.wants_fresher(&hit) => {
                // Still fresh: if the origin cannot be reached, this entry is as good as it was a moment ago.
                Box::pin(self.revalidate(hit, false, true)).await
            }
            HitState::Fresh => self.serve(&hit, hit.meta.clone(), hit.age_s, Outcome::Hit).await,
            // RFC 5861 section 3, and soft invalidation: served now, refreshed once for the fleet.
            HitState::Grace | HitState::Stale { while_revalidate: true, .. } => {
                let outcome = if hit.state == HitState::Grace { Outcome::Grace } else { Outcome::StaleWhileRevalidate };
                self.refresh_in_background(&hit);
                self.serve(&hit, hit.meta.clone(), hit.age_s, outcome).await
            }
            // RFC 9111 section 5.2.1.2: the client accepts this much staleness (never past must-revalidate).
            HitState::Stale { stale_for_s, .. }
                if !hit.meta.must_revalidate
                    && self.client.max_stale.is_some_and(|limit| limit.is_none_or(|limit| stale_for_s <= limit)) =>
            {
                self.serve(&hit, hit.meta.clone(), hit.age_s, Outcome::MaxStale).await
            }
            // RFC 9111 section 4.2.4: a stale entry outside its windows must be validated before use.
            HitState::Stale { if_error, stale_for_s, .. } => {
                let window = u64::from(self.exchange.config().stale_if_unreachable_s);
                let unreachable = !hit.meta.must_revalidate && stale_for_s <= window;
                Box::pin(self.revalidate(hit, if_error, unreachable)).await
            }
        }
    }

    /// Whether the client asks for fresher than this fresh entry: `no-cache`, an age above its `max-age`, or
    /// less freshness left than its `min-fresh` (RFC 9111 sections 5.2.1.4, 5.2.1.1, 5.2.1.3).
    fn wants_fresher(&self, hit: &Hit) -> bool {
        let left = hit.meta.fresh_for_s.saturating_sub(hit.age_s);
        crate::cacheability::request_bypasses(&self.parts.headers)
            || self.client.max_age.is_some_and(|max_age| hit.age_s > max_age)
            || (hit.meta.fresh_for_s != u64::MAX && self.client.min_fresh.is_some_and(|min_fresh| left < min_fresh))
    }

    /// Answers from `meta` (the hit's entry, or what a revalidation made of it) at `age_s`.
    pub(super) async fn serve(
        &mut self,
        hit: &Hit,
        meta: Arc<EntryMeta>,
        age_s: u64,
        outcome: Outcome,
    ) -> Answer<U::Error> {
        let exchange = self.exchange.clone();
        // Each stored coding is its own representation with its own validator (RFC 9110 section 8.8.3).
        let (coding, wanted) = exchange.config().compression.choose(&self.parts.headers, &meta.codings);
        let chosen = Representation::coded(&self.parts.headers, &meta, coding).echo_weakened();
        if let Some(wanted) = wanted.filter(|_| matches!(outcome, Outcome::Hit)) {
            // A coding this client would take and the entry lacks is made for the next ones (`codings.rs`).
            exchange.make_wanted_coding(hit, wanted);
        }
        if meta.minted && chosen.weakened() {
            self.report.weakened = true;
            if exchange.inner.weakened_log.allow(exchange.cache().now_ms()) {
                tracing::warn!(
                    "a proxy in front of etagd weakens ETags (W/ copies of strong tags come back); etagd still \
                     answers 304, but check gzip settings in front (see docs/deploying.md)"
                );
            }
        }
        if chosen.evaluate() == Evaluation::NotModified {
            self.report.outcome = outcome;
            self.report.ttl = reply::ttl(&meta, age_s);
            self.report.not_modified = true;
            return Ok(chosen.not_modified(Some(age_s)).map(|()| Body::empty()));
        }
        let representation = exchange.cache().representation(hit, chosen.coding().map(Coding::as_str)).await;
        match representation {
            Ok(Some(StoredRepresentation::Whole(stored))) => {
                self.report.outcome = outcome;
                self.report.ttl = reply::ttl(&meta, age_s);
                let source = StoredBodySource(stored);
                let len = usize::try_from(source.len()).unwrap_or(usize::MAX);
                let head = chosen.from_entry(len, Some(age_s));
                if self.parts.method == Method::HEAD {
                    return Ok(head.map(|()| Body::empty()));
                }
                // RFC 9110 section 14: a range of a stored complete 200 is answered from storage.
                if head.status() == http::StatusCode::OK {
                    return Ok(super::range::apply(head, &source, &self.parts.headers));
                }
                Ok(head.map(|()| source.whole()))
            }
            Ok(Some(StoredRepresentation::Chunked(chunked))) => {
                let len = chunked.len();
                let head = chosen.from_entry(usize::try_from(len).unwrap_or(usize::MAX), Some(age_s));
                let (head, part) = if self.parts.method == Method::HEAD {
                    (head, None)
                } else if head.status() == http::StatusCode::OK {
                    super::range::plan(head, len, &self.parts.headers)
                } else {
                    (head, Some(0..len))
                };
                // Every chunk the answer needs is checked before its head goes out; one missing is a miss.
                let body = match part {
                    None => Body::empty(),
                    Some(part) => match chunked.open(part).await {
                        Some(body) => body,
                        None => return Box::pin(self.body_missing(hit)).await,
                    },
                };
                self.report.outcome = outcome;
                self.report.ttl = reply::ttl(&meta, age_s);
                Ok(head.map(|()| body))
            }
            Ok(None) | Err(_) => Box::pin(self.body_missing(hit)).await,
        }
    }

    /// The body was evicted or is unreadable: refill it (one caller fleet-wide), never fail the request.
    async fn body_missing(&mut self, hit: &Hit) -> Answer<U::Error> {
        let exchange = self.exchange.clone();
        let key = self.key.clone().expect("a hit has a key");
        let route = exchange.config().route_for(key.path());
        let lookup = LookupRequest { resource: &key, headers: &self.parts.headers, route_tags: &route.tags };
        match exchange.cache().refresh_permit(hit, lookup).await {
            Some(fill) => self.fill(fill, Outcome::BodyMissing, false).await,
            None => self.pass(Outcome::BodyMissing(Filled::NoLease)).await,
        }
    }

    /// Refreshes a stale entry after the client was answered from it: one caller in the fleet asks the origin,
    /// conditionally, in a task of its own.
    fn refresh_in_background(&self, hit: &Hit) {
        let Some(key) = self.key.clone() else { return };
        let mut request = Request::new(());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = self.parts.uri.clone();
        *request.headers_mut() = self.parts.headers.clone();
        let (parts, ()) = request.into_parts();
        let context = RequestContext { informational: None, ..self.context.clone() };
        let background = Background {
            exchange: self.exchange.clone(),
            parts,
            context,
            upstream: self.upstream.clone(),
            key,
            hit: hit.clone(),
        };
        tokio::spawn(background.run());
    }
}

/// Whether a stored response's freshness came from the origin (its stored `Cache-Control`, `Expires` or targeted
/// field) rather than from a route rule.
fn explicitly_fresh(meta: &EntryMeta, targeted: &[http::HeaderName]) -> bool {
    crate::cacheability::has_explicit_freshness(&meta.header_map(), targeted)
}

/// What a background refresh needs, owned, so it can outlive the client's request.
struct Background<U> {
    exchange: Exchange,
    parts: http::request::Parts,
    context: RequestContext,
    upstream: U,
    key: ResourceKey,
    hit: Hit,
}

impl<U> Background<U> {
    async fn run<B>(self)
    where
        B: Default + Send + 'static,
        U: Upstream<B>,
    {
        let started = std::time::Instant::now();
        let mut run = Run::new(self.exchange, self.parts, B::default(), self.context, self.upstream);
        run.key = Some(self.key);
        run.report.background = true;
        run.refresh(self.hit).await;
        run.report.elapsed = started.elapsed();
        run.report.host = run.key.as_ref().map(|key| key.host().to_owned());
        run.exchange.observe(&run.report);
    }
}
