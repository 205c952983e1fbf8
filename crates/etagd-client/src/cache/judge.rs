//! Judging what a lookup's first round found: the head record decoded (through the decode memo), a Vary index
//! followed to its variant, and the entry judged fresh, stale, in grace or invalid, taking the refresh lock
//! when this caller is the one (fleet-wide) to refill it. Also the refresh permits of stale and grace hits.

use std::sync::Arc;

use bytes::Bytes;

use super::hints::Hint;
use super::lookup::lease_secs;
use super::{Cache, Fill, Live, Lookup, LookupRequest, bump, fill};
use crate::entry::{EntryMeta, HeadRecord, VaryIndex};
use crate::generation::Check;
use crate::key::Digest;
use crate::store::{Expiry, GetOutcome, GetRequest, Item, Lease, Placement, SetCondition, SetOutcome, StoreError};

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

impl Cache {
    /// Judges a found head record: an entry, a hit-for-pass marker, or a Vary index to follow.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn on_head(
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
