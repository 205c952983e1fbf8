//! Lookup: one batched round of reads (head, namespace and tag counters, the hinted variant), then the
//! judgement of what it found (`judge`), and the wait for another caller's fill.

use std::time::Duration;

use http::HeaderMap;

use super::hints::{Hint, Round};
use super::judge::Hit;
use super::{Cache, Fill, Live, bump, fill};
use crate::key::{Digest, ResourceKey};
use crate::store::{DeleteMode, GetOutcome, GetRequest, Lease, Placement, StoreError};

/// The request side of a lookup.
#[derive(Debug, Clone, Copy)]
pub struct LookupRequest<'a> {
    /// The resource (from `key`).
    pub resource: &'a ResourceKey,
    /// The request headers (for Vary).
    pub headers: &'a HeaderMap,
    /// Tags a route rule gives this resource (their counters join the first batch).
    pub route_tags: &'a [String],
}

/// The outcome of a lookup.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "moved once into the exchange; boxing the fill would add an allocation to every miss"
)]
pub enum Lookup {
    /// A current entry.
    Hit(Hit),
    /// Nothing current: this caller should fill.
    Miss(Fill),
    /// Another caller holds the fill lease.
    Busy,
    /// Recently uncacheable: go to the origin without storing.
    Pass {
        /// Why (a `NoStoreReason` label).
        reason: String,
    },
    /// The store failed: go to the origin.
    Unavailable(StoreError),
}

impl Lookup {
    /// A short label (hit, miss, busy, pass, unavailable) for logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Hit(_) => "hit",
            Self::Miss(_) => "miss",
            Self::Busy => "busy",
            Self::Pass { .. } => "pass",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl Cache {
    /// Looks a request up, taking the fill lease on a miss.
    pub async fn lookup(&self, request: LookupRequest<'_>) -> Lookup {
        let lookup = self.lookup_once(request).await;
        if self.inner.config.bridge_from.is_none() {
            return lookup;
        }
        // Boxed: only a rolling upgrade takes this path, and its state inline would double the size of every
        // lookup's future, which is copied each time a caller creates it.
        Box::pin(self.bridge_lookup(request, lookup)).await
    }

    pub(super) async fn lookup_once(&self, request: LookupRequest<'_>) -> Lookup {
        let config = &self.inner.config;
        let ns = &config.namespace;
        let resource = request.resource;
        let hint = self.inner.hints.get(&resource.digest());

        // First round: head (leased), g:all, the tags we expect, and the variant we expect.
        let computed;
        let round = match &hint {
            Some(hint) => hint.round.get_or_init(|| self.round(request, &hint.tags)),
            None => {
                computed = self.round(request, &[]);
                &computed
            }
        };
        let tags = &round.tags;
        let lease_secs = lease_secs(config.fill_lease);
        let head_key = ns.head_key(resource);
        if let Some(error) = self.fenced(&head_key) {
            self.store_error(&error);
            return Lookup::Unavailable(error);
        }
        // The counters are read from the copies on the head's server, so the batch touches one server.
        let mut requests = vec![
            GetRequest::leased(head_key.clone(), lease_secs),
            GetRequest::plain(ns.all_generation_key()).near(head_key.clone()),
        ];
        requests.extend(round.keys.iter().map(|key| GetRequest::plain(key.clone()).near(head_key.clone())));
        let hinted_variant = hint
            .as_ref()
            .filter(|hint| !hint.vary.is_empty())
            .map(|hint| resource.variant(&hint.vary, request.headers));
        if let Some(variant) = &hinted_variant {
            requests.push(GetRequest::leased(ns.variant_key(variant), lease_secs).near(head_key.clone()));
        }
        let results = self.inner.store.get_many(&requests).await;
        // A lease won on the hinted variant is used only when the head turns out to be a Vary index selecting that
        // very variant and nothing current is there; on every other path it is released here, so it never
        // blocks others until it expires.
        let hinted_lease = hinted_variant.zip(results.last()).and_then(|(digest, result)| match result {
            Ok(GetOutcome::Miss { lease: Lease::Won { cas } }) => Some((digest, *cas)),
            _ => None,
        });
        let lookup = self.first_round(request, hint.as_deref(), &head_key, tags, hinted_variant, results).await;
        if let Some((digest, cas)) = hinted_lease {
            let used = matches!(&lookup, Lookup::Miss(fill) if fill.holds_variant_lease(cas));
            if !used {
                self.release(&config.namespace.variant_key(&digest), Placement::Near(&head_key), cas).await;
            }
        }
        lookup
    }

    /// The tags whose counters a lookup's first round reads: the route's, the resource's prefix tags (they
    /// follow from its key, so they are read even without a hint) and those its entry had (`known`), each once.
    fn round(&self, request: LookupRequest<'_>, known: &[String]) -> Round {
        let config = &self.inner.config;
        let mut tags: Vec<String> = request.route_tags.to_vec();
        for tag in request.resource.prefix_tags(config.prefix_depth) {
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        for tag in known {
            if !tags.contains(tag) {
                tags.push(tag.clone());
            }
        }
        let keys = tags.iter().map(|tag| config.namespace.tag_generation_key(tag)).collect();
        Round { tags, keys }
    }

    /// Judges the first round's results: the head, the counters and the hinted variant.
    async fn first_round(
        &self,
        request: LookupRequest<'_>,
        hint: Option<&Hint>,
        head_key: &str,
        tags: &[String],
        hinted_variant: Option<Digest>,
        results: Vec<Result<GetOutcome, StoreError>>,
    ) -> Lookup {
        let mut results = results.into_iter();
        let head = results.next().expect("one result per request");
        let all = results.next().expect("one result per request");
        let mut live = Live { all: None, tags: Default::default() };
        match all {
            Ok(outcome) => live.all = self.generation_of(outcome),
            Err(error) => {
                // The namespace counter decides every entry: without it nothing can be proven current.
                self.store_error(&error);
                if let Ok(GetOutcome::Miss { lease: Lease::Won { cas } }) = head {
                    self.release(head_key, Placement::Own, cas).await;
                }
                return Lookup::Unavailable(error);
            }
        }
        for tag in tags {
            let outcome = results.next().expect("one result per request");
            match outcome {
                Ok(outcome) => {
                    live.tags.insert(tag.clone(), self.generation_of(outcome));
                }
                Err(error) => {
                    // Its entries fail towards a miss: a missing counter never matches.
                    self.store_error(&error);
                    live.tags.insert(tag.clone(), None);
                }
            }
        }
        let hinted_variant_result = hinted_variant.map(|digest| (digest, results.next().expect("one result")));

        let head = match head {
            Ok(head) => head,
            Err(error) => {
                self.store_error(&error);
                return Lookup::Unavailable(error);
            }
        };
        let now_ms = self.now_ms();
        match head {
            GetOutcome::Miss { lease: Lease::Won { cas } } => {
                bump(&self.inner.counters.leases_won);
                Lookup::Miss(Fill::new(self, request, fill::Plan::head(Some(cas), true), live, now_ms))
            }
            GetOutcome::Miss { lease: Lease::Busy } => {
                bump(&self.inner.counters.leases_busy);
                Lookup::Busy
            }
            GetOutcome::Miss { lease: Lease::None } => {
                Lookup::Miss(Fill::new(self, request, fill::Plan::head(None, false), live, now_ms))
            }
            GetOutcome::Hit(item) => {
                self.on_head(request, hint, head_key, item, live, hinted_variant_result, now_ms).await
            }
        }
    }

    /// Like [`lookup`](Self::lookup), but when another caller is filling, waits for it (up to
    /// [`CacheConfig::fill_wait`](super::CacheConfig::fill_wait), extended while the filler reports its body still
    /// arriving: [`Fill::report_progress`]) and looks again. Returns `Busy` only when the wait ran out.
    pub async fn lookup_waiting(&self, request: LookupRequest<'_>) -> Lookup {
        let mut deadline = tokio::time::Instant::now() + self.inner.config.fill_wait;
        let mut pause = Duration::from_millis(2);
        loop {
            let lookup = self.lookup(request).await;
            if !matches!(lookup, Lookup::Busy) {
                return lookup;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                // A fill still streaming its body with bytes arriving is worth waiting for (`renew`).
                if !self.fill_progressing(request.resource).await {
                    return Lookup::Busy;
                }
                deadline = now + self.inner.config.fill_wait;
            }
            // A fill in this process wakes us when it ends; one elsewhere in the fleet is polled with backoff,
            // since Memcached cannot notify.
            let wait = pause.min(deadline - now);
            self.inner.inflight.wait(&request.resource.digest(), wait).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Releases a placeholder this caller created, unless someone replaced it since.
    pub(crate) async fn release(&self, key: &str, placement: Placement<'_>, cas: u64) {
        if let Err(error) = self.inner.store.delete_placed(key, placement, DeleteMode::IfCas { cas }).await {
            self.store_error(&error);
        }
    }

    /// Records a resource's Vary names and tags for its next lookup's first round; `known` is the hint this
    /// lookup started with (nothing is written when it already says as much).
    pub(super) fn remember(&self, resource: &ResourceKey, known: Option<&Hint>, vary: &[String], tags: &[String]) {
        self.inner.hints.remember(resource.digest(), known, vary, tags);
    }
}

/// A lease's lifetime in whole seconds, as Memcached's `mg ... N` takes it (at least one).
pub(super) fn lease_secs(lease: Duration) -> u32 {
    u32::try_from(lease.as_secs().max(1)).unwrap_or(u32::MAX)
}
