//! Lookup: one batched round of reads (head, namespace and tag counters, the hinted variant), then a judgement
//! of what was found (fresh, stale, grace, invalid, pass), taking the fill lease or the refresh lock when this
//! caller is the one to fill.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;

use super::hints::{Hint, Round};
use super::{Cache, Fill, Live, bump, fill};
use crate::entry::{EntryMeta, HeadRecord, VaryIndex};
use crate::generation::Check;
use crate::key::{Digest, ResourceKey};
use crate::store::{
    DeleteMode, Expiry, GetOutcome, GetRequest, Item, Lease, Placement, SetCondition, SetOutcome, StoreError,
};

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

/// Whether and how a hit may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitState {
    /// Within its freshness lifetime.
    Fresh,
    /// Past its freshness lifetime (RFC 9111 section 4.2).
    Stale {
        /// Seconds past freshness.
        stale_for_s: u64,
        /// Within `stale-while-revalidate`: serve it now and refresh in the background (RFC 5861 section 3).
        while_revalidate: bool,
        /// Within `stale-if-error`: serve it if the origin fails (RFC 5861 section 4).
        if_error: bool,
    },
    /// Soft-invalidated and within its grace period: serve it while one caller refreshes it.
    Grace,
}

/// A found, current entry.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The entry's small part.
    pub meta: Arc<EntryMeta>,
    /// How it may be served.
    pub state: HitState,
    /// The current age in seconds (RFC 9111 section 4.2.3), for the `Age` header.
    pub age_s: u64,
    /// Where the entry lives and what a refresh must replace.
    pub(super) slot: Slot,
    /// Whether the store already handed this caller the refresh lease (soft-deleted head).
    refresh_lease: bool,
}

/// Where an entry lives: the digest naming its body, the item holding its meta, and that item's CAS.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub(super) entry_digest: Digest,
    /// The head record's key: the entry's bodies, variant and refresh lock are placed on its server.
    pub(super) head_key: String,
    pub(super) meta_cas: u64,
    pub(super) index: Option<VaryIndex>,
    head_cas: u64,
    generations: Live,
}

/// A decoded head record; the entry case comes from the decode memo, shared.
enum Head {
    Entry(Arc<EntryMeta>),
    Other(HeadRecord),
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

    #[allow(clippy::too_many_arguments)]
    async fn on_head(
        &self,
        request: LookupRequest<'_>,
        hint: Option<&Hint>,
        head_key: &str,
        item: Item,
        mut live: Live,
        hinted_variant: Option<(Digest, Result<GetOutcome, StoreError>)>,
        now_ms: u64,
    ) -> Lookup {
        let resource = request.resource;
        // The common case, a head that is the entry itself, goes through the decode memo.
        let record = if item.value.starts_with(b"E1E") {
            self.inner.memo.entry(&item.value).map(Head::Entry)
        } else {
            HeadRecord::decode(&item.value).map(Head::Other)
        };
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                bump(&self.inner.counters.corrupt_items);
                tracing::warn!(%error, key = %head_key, "corrupt head record");
                return Lookup::Miss(Fill::new(self, request, fill::Plan::head(Some(item.cas), false), live, now_ms));
            }
        };
        match record {
            Head::Other(HeadRecord::Pass(marker)) if now_ms < marker.until_ms => Lookup::Pass { reason: marker.reason },
            Head::Other(HeadRecord::Pass(_)) => {
                Lookup::Miss(Fill::new(self, request, fill::Plan::head(Some(item.cas), false), live, now_ms))
            }
            Head::Other(HeadRecord::Entry(meta)) => {
                let meta: Arc<EntryMeta> = Arc::new(*meta);
                self.on_entry_head(request, hint, head_key, meta, item, live, now_ms).await
            }
            Head::Entry(meta) => self.on_entry_head(request, hint, head_key, meta, item, live, now_ms).await,
            Head::Other(HeadRecord::Variants(index)) => {
                let digest = resource.variant(&index.vary, request.headers);
                let outcome = match hinted_variant {
                    Some((hinted, outcome)) if hinted == digest => outcome,
                    _ => {
                        let ns = &self.inner.config.namespace;
                        let lease =
                            GetRequest::leased(ns.variant_key(&digest), lease_secs(self.inner.config.fill_lease))
                                .near(head_key);
                        self.inner.store.get_many(&[lease]).await.pop().expect("one result per request")
                    }
                };
                let head_stale = item.stale;
                let mut plan = fill::Plan::variant(item.cas, (!head_stale).then(|| index.clone()), digest);
                let variant = match outcome {
                    Ok(GetOutcome::Hit(variant)) => variant,
                    Ok(GetOutcome::Miss { lease: Lease::Won { cas } }) => {
                        bump(&self.inner.counters.leases_won);
                        self.remember(resource, hint, &index.vary, &[]);
                        plan.variant_lease(cas);
                        return Lookup::Miss(Fill::new(self, request, plan, live, now_ms));
                    }
                    Ok(GetOutcome::Miss { lease: Lease::Busy }) => {
                        bump(&self.inner.counters.leases_busy);
                        return Lookup::Busy;
                    }
                    Ok(GetOutcome::Miss { lease: Lease::None }) => {
                        return Lookup::Miss(Fill::new(self, request, plan, live, now_ms));
                    }
                    Err(error) => {
                        self.store_error(&error);
                        return Lookup::Unavailable(error);
                    }
                };
                if !variant.value.starts_with(b"E1E") {
                    // Not an entry: a hit-for-pass marker for this variant (or something unreadable, refilled).
                    if let Ok(HeadRecord::Pass(marker)) = HeadRecord::decode(&variant.value) {
                        if now_ms < marker.until_ms {
                            return Lookup::Pass { reason: marker.reason };
                        }
                        plan.variant_cas(variant.cas);
                        return Lookup::Miss(Fill::new(self, request, plan, live, now_ms));
                    }
                }
                let meta = match self.inner.memo.entry(&variant.value) {
                    Ok(meta) => meta,
                    Err(error) => {
                        bump(&self.inner.counters.corrupt_items);
                        tracing::warn!(%error, "corrupt variant entry");
                        plan.variant_cas(variant.cas);
                        return Lookup::Miss(Fill::new(self, request, plan, live, now_ms));
                    }
                };
                self.remember(resource, hint, &index.vary, &meta.tags);
                self.read_tags(&meta.tags, head_key, &mut live).await;
                plan.variant_cas(variant.cas);
                let slot = Slot {
                    entry_digest: digest,
                    head_key: head_key.to_owned(),
                    meta_cas: variant.cas,
                    index: Some(index.clone()),
                    head_cas: item.cas,
                    generations: live,
                };
                let mut soft = variant;
                soft.stale |= head_stale;
                self.judge(request, meta, &soft, Some(index.url_generation), slot, plan, now_ms).await
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn on_entry_head(
        &self,
        request: LookupRequest<'_>,
        hint: Option<&Hint>,
        head_key: &str,
        meta: Arc<EntryMeta>,
        item: Item,
        mut live: Live,
        now_ms: u64,
    ) -> Lookup {
        let resource = request.resource;
        self.remember(resource, hint, &[], &meta.tags);
        self.read_tags(&meta.tags, head_key, &mut live).await;
        let slot = Slot {
            entry_digest: resource.digest(),
            head_key: head_key.to_owned(),
            meta_cas: item.cas,
            index: None,
            head_cas: item.cas,
            generations: live,
        };
        let plan = fill::Plan::head(Some(item.cas), false);
        self.judge(request, meta, &item, None, slot, plan, now_ms).await
    }

    /// Decides what a found entry is worth: a hit in some state, or an invalid entry to refill (one caller
    /// fleet-wide, through the entry's refresh lock).
    #[allow(clippy::too_many_arguments)]
    async fn judge(
        &self,
        request: LookupRequest<'_>,
        meta: Arc<EntryMeta>,
        item: &Item,
        url_generation: Option<u64>,
        slot: Slot,
        plan: fill::Plan,
        now_ms: u64,
    ) -> Lookup {
        let check = Self::validity(&meta, &slot.generations, url_generation, now_ms);
        // RFC 9111 section 4.2.4: no stale answer when the response forbade it (`must-revalidate`, and
        // `proxy-revalidate`, `no-cache` or `s-maxage`, which `cacheability` folds into it): neither a URL's nor
        // a tag's or the namespace's grace period serves such an entry; it is refilled at once.
        let stale_forbidden = meta.must_revalidate && (item.stale || check == Check::Grace);
        if check == Check::Changed || stale_forbidden {
            let lock = self.inner.config.namespace.refresh_lock_key(&slot.entry_digest);
            return match self.take_lock(&lock, &slot.head_key).await {
                Some(true) => {
                    bump(&self.inner.counters.leases_won);
                    let mut plan = plan;
                    plan.lock(lock);
                    Lookup::Miss(Fill::new(self, request, plan, slot.generations, now_ms))
                }
                Some(false) => {
                    bump(&self.inner.counters.leases_busy);
                    Lookup::Busy
                }
                None => Lookup::Miss(Fill::new(self, request, plan, slot.generations, now_ms)),
            };
        }
        let age_s = meta.initial_age_s.saturating_add(now_ms.saturating_sub(meta.stored_at_ms) / 1000);
        let state = if check == Check::Grace || item.stale {
            HitState::Grace
        } else if meta.fresh_for_s == u64::MAX || age_s < meta.fresh_for_s {
            HitState::Fresh
        } else {
            let stale_for_s = age_s - meta.fresh_for_s;
            HitState::Stale {
                stale_for_s,
                while_revalidate: !meta.must_revalidate && stale_for_s < u64::from(meta.stale_while_revalidate_s),
                if_error: !meta.must_revalidate && stale_for_s < u64::from(meta.stale_if_error_s),
            }
        };
        let refresh_lease = item.stale && matches!(item.lease, Lease::Won { .. });
        Lookup::Hit(Hit { meta, state, age_s, slot, refresh_lease })
    }

    /// Tries to take an entry's refresh lock, for a fill lease: `Some(true)` won, `Some(false)` held
    /// elsewhere, `None` the store failed (the caller proceeds without coordination).
    async fn take_lock(&self, key: &str, head_key: &str) -> Option<bool> {
        self.take_lock_for(key, head_key, Expiry::from_secs(self.inner.config.fill_lease.as_secs())).await
    }

    /// Tries to take a lock item beside an entry's head record (`head_key`), living `expiry`: as
    /// [`take_lock`](Self::take_lock).
    pub(super) async fn take_lock_for(&self, key: &str, head_key: &str, expiry: Expiry) -> Option<bool> {
        let near = Placement::Near(head_key);
        match self.inner.store.set_placed(key, near, Bytes::from_static(b"1"), expiry, SetCondition::Add).await {
            Ok(SetOutcome::Stored) => Some(true),
            Ok(SetOutcome::NotStored) => Some(false),
            Err(error) => {
                self.store_error(&error);
                None
            }
        }
    }

    /// Asks to refresh a stale or soft-invalidated hit. Returns a fill when this caller is the one (in the whole
    /// fleet) to refresh it; the caller then revalidates with the origin and commits, usually in the background.
    pub async fn refresh_permit(&self, hit: &Hit, request: LookupRequest<'_>) -> Option<Fill> {
        let slot = &hit.slot;
        let mut plan = match &slot.index {
            None => fill::Plan::head(Some(slot.meta_cas), false),
            Some(index) => {
                let mut plan = fill::Plan::variant(slot.head_cas, Some(index.clone()), slot.entry_digest);
                plan.variant_cas(slot.meta_cas);
                plan
            }
        };
        if !hit.refresh_lease {
            let lock = self.inner.config.namespace.refresh_lock_key(&slot.entry_digest);
            if self.take_lock(&lock, &slot.head_key).await != Some(true) {
                return None;
            }
            plan.lock(lock);
        }
        let mut fill = Fill::new(self, request, plan, slot.generations.clone(), self.now_ms());
        fill.bridge_begun = self.bridge_begin(request.resource, &hit.meta.tags).await;
        Some(fill)
    }
}

fn lease_secs(lease: Duration) -> u32 {
    u32::try_from(lease.as_secs().max(1)).unwrap_or(u32::MAX)
}
