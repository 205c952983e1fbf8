//! Filling an entry: the commit protocol that makes a fill safe against invalidations and other writers.
//!
//! A [`Fill`] is handed out by a lookup that found nothing current. It carries the generation values read
//! before the origin was asked and the CAS of whatever the fill will replace (a lease placeholder, a stale
//! entry). Commit writes in this order, so a reader never sees an entry without its body:
//!
//! 1. the body items (identity and each stored coding), named by a fresh fill id: one item per body, or for a
//!    body larger than one item its chunks (`chunks`), the entry recording the chunk size and lengths;
//! 2. for a varying response, the variant entry;
//! 3. the head record, conditional on the CAS seen at lookup (`Add` when there was nothing). This is the commit
//!    point: if the URL was invalidated meanwhile (its head deleted) or someone else wrote it, the condition
//!    fails and nothing becomes reachable.
//!
//! Bodies and the variant entry (and the refresh lock) are placed on the head record's server
//! ([`Placement::Near`]), so losing one server loses whole entries, never half of one.
//!
//! Failure modes, each releasing what the fill held so waiters move on at once: commit refused (invalidated,
//! raced); [`Fill::abandon`] (uncacheable answer: writes a hit-for-pass marker so waiters go straight to the
//! origin); the fill dropped without either (origin error, panic, cancelled request): the placeholder or lock
//! is released from `Drop`, and failing that (the release is lost, the process died), expires within
//! `fill_lease`: the lease is short, and renewed only while the fill is alive (`renew`).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;

use super::{Cache, Live, LookupRequest, bump, inflight, renew};

mod plan;
mod streaming;

use crate::cacheability::{Freshness, NoStoreReason};
use crate::entry::{EntryMeta, Generations, HeadRecord, PassMarker, VaryIndex};
use crate::etag::EntityTag;
use crate::generation::{Generation, random_value};
use crate::key::{ResourceKey, is_prefix_tag};
use crate::store::{DeleteMode, Expiry, GetOutcome, GetRequest, Placement, SetCondition, SetOutcome, StoreError};
use plan::Held;
pub(crate) use plan::Plan;
use streaming::Streaming;

/// Why a fill was not stored. The response is still good to send to the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// An invalidation landed while the origin was answering.
    #[error("an invalidation landed while the origin was answering; the response was not stored")]
    Invalidated,
    /// The store's item limit cannot hold even one chunk, or a server refused an item the known limit let
    /// through (its limit was lowered since it was read). The resource was marked hit-for-pass (`too_large`),
    /// so the waiters go straight to the origin instead of queueing behind one filler after another.
    #[error("an item of {size} bytes is above the store's item limit of {limit} bytes; marked hit-for-pass")]
    TooLarge {
        /// The size of the body item (body and replayed headers).
        size: usize,
        /// The store's item limit.
        limit: usize,
    },
    /// Admission: the object (identity body plus stored codings) is larger than the configured fraction of the
    /// smallest server's memory ([`Cache::max_body_bytes`]). Marked hit-for-pass (`too_large`), like
    /// [`CommitError::TooLarge`].
    #[error("the object is {size} bytes, above the admission limit of {limit} bytes; marked hit-for-pass")]
    NotAdmitted {
        /// The size of the object.
        size: usize,
        /// The admission limit.
        limit: usize,
    },
    /// Another writer (or an invalidation of the URL) replaced what the lookup saw.
    #[error("the entry changed since the lookup (another fill or an invalidation); the response was not stored")]
    Raced,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the origin answered, prepared for storage by the caller (hop-by-hop and etagd's own headers removed,
/// freshness decided by `cacheability`).
#[derive(Debug, Clone)]
pub struct FillResponse {
    /// The status.
    pub status: u16,
    /// Headers to replay with the body (not `ETag` or `Age`: the engine adds those).
    pub headers: Vec<(String, Bytes)>,
    /// The identity body.
    pub body: Bytes,
    /// Freshness.
    pub freshness: Freshness,
    /// Tags.
    pub tags: Vec<String>,
    /// Lowercase header names the response varies on.
    pub vary: Vec<String>,
    /// The origin's own validator, kept when present.
    pub etag: Option<EntityTag>,
    /// Encoded representations to store beside identity: (content coding, encoded body, headers to replay).
    pub codings: Vec<(String, Bytes)>,
}

/// The right (and duty) to fill one entry. Commit it, abandon it, or drop it.
#[derive(Debug)]
pub struct Fill {
    pub(super) cache: Cache,
    pub(super) resource: ResourceKey,
    headers: HeaderMap,
    plan: Plan,
    pub(super) live: Live,
    pub(super) started_ms: u64,
    finished: bool,
    /// While a rolling upgrade is bridged: the older schema's items as the fill began (`bridge.rs`; boxed:
    /// most deployments never bridge).
    pub(super) bridge_begun: Option<Box<super::bridge::Begun>>,
    /// Keeps the lease or lock alive while the fill works (see `renew`); boxed to keep `Lookup` small.
    renewal: Option<Box<renew::Renewal>>,
    /// What a streaming fill chose or started before its body arrived (boxed: most fills never stream).
    streaming: Option<Box<Streaming>>,
    _in_flight: Option<inflight::Guard>,
}

impl Fill {
    pub(crate) fn new(cache: &Cache, request: LookupRequest<'_>, plan: Plan, live: Live, started_ms: u64) -> Self {
        let in_flight = (plan.held != Held::Nothing).then(|| cache.inflight_guard(request.resource.digest()));
        let renewal = Self::held_item(cache, request.resource, &plan)
            .and_then(|held| renew::Renewal::start(cache, held))
            .map(Box::new);
        Self {
            cache: cache.clone(),
            resource: request.resource.clone(),
            headers: request.headers.clone(),
            plan,
            live,
            started_ms,
            finished: false,
            bridge_begun: None,
            renewal,
            streaming: None,
            _in_flight: in_flight,
        }
    }

    /// The item this plan holds, to keep alive while the fill works.
    fn held_item(cache: &Cache, resource: &ResourceKey, plan: &Plan) -> Option<renew::Held> {
        let ns = &cache.config().namespace;
        let head_key = ns.head_key(resource);
        match &plan.held {
            Held::Nothing => None,
            Held::HeadPlaceholder(cas) => Some(renew::Held { key: head_key, near: None, cas: Some(*cas) }),
            Held::VariantPlaceholder(cas) => plan.variant.as_ref().map(|(digest, _)| renew::Held {
                key: ns.variant_key(digest),
                near: Some(head_key),
                cas: Some(*cas),
            }),
            Held::Lock(key) => Some(renew::Held { key: key.clone(), near: Some(head_key), cas: None }),
        }
    }

    /// Stops renewing the lease before the fill writes: a renewal must never touch what the fill stores.
    async fn stop_renewal(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.stop().await;
        }
    }

    /// Whether this fill holds the fleet-wide right to fill (a lease or lock), as opposed to filling uncoordinated.
    pub fn is_leader(&self) -> bool {
        self.plan.held != Held::Nothing
    }

    /// Whether this fill holds a lease placeholder, so that requests for its entry meanwhile wait for it
    /// rather than being answered from what was stored before (a refresh lock lets them have the stale entry).
    pub fn holds_lease(&self) -> bool {
        matches!(self.plan.held, Held::HeadPlaceholder(_) | Held::VariantPlaceholder(_))
    }

    /// Whether this fill holds the placeholder of a variant read with lease CAS `cas`.
    pub(crate) fn holds_variant_lease(&self, cas: u64) -> bool {
        self.plan.held == Held::VariantPlaceholder(cas)
    }

    /// Unix ms when the lookup that made this fill began.
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// Stores a response. On error nothing new is reachable and whatever the fill held is released.
    pub async fn commit(mut self, response: FillResponse) -> Result<Arc<EntryMeta>, CommitError> {
        // The lease is renewed while the bodies are written (a large body's chunks take a while), and stopped
        // before anything the lease guards is written (`write`), or here if it failed earlier.
        let written = self.write(response).await;
        self.stop_renewal().await;
        let result = match written {
            // The server refused an item the known limit let through (its limit was lowered since it was read).
            Err(CommitError::Store(StoreError::TooLarge { size, limit, .. })) => {
                Err(CommitError::TooLarge { size, limit })
            }
            other => other,
        };
        match &result {
            Ok(_) => bump(&self.cache.inner.counters.fills_stored),
            Err(CommitError::Invalidated) => bump(&self.cache.inner.counters.fills_invalidated),
            Err(CommitError::Raced) => bump(&self.cache.inner.counters.fills_raced),
            Err(CommitError::TooLarge { .. } | CommitError::NotAdmitted { .. }) => {
                // A body this large will not be stored on the next try either: let the waiters go.
                let pass_ttl = self.cache.config().pass_ttl;
                self.mark_pass(NoStoreReason::TooLarge.as_str(), pass_ttl).await;
            }
            Err(CommitError::Store(error)) => self.cache.store_error(error),
        }
        self.release(result.is_ok()).await;
        result
    }

    /// Stores a revalidated entry: the origin answered 304 to a revalidation, so the body stays and the entry
    /// (`updated`: the stored one with the 304's headers, `Last-Modified` and tags applied by the caller) gets new
    /// freshness and generations, and its body items the entry's new lifetime (RFC 9111 section 4.3.4).
    pub async fn commit_revalidated(
        mut self,
        updated: EntryMeta,
        freshness: Freshness,
    ) -> Result<Arc<EntryMeta>, CommitError> {
        self.stop_renewal().await;
        let result = self.write_revalidated(updated, freshness).await;
        if let Err(CommitError::Store(error)) = &result {
            self.cache.store_error(error);
        }
        self.release(result.is_ok()).await;
        result
    }

    /// Gives the fill up. With a reason (the response was not storable), the resource is marked
    /// hit-for-pass for `pass_ttl`, so waiting and later requests go straight to the origin instead of queueing.
    pub async fn abandon(self, reason: Option<&str>) {
        let pass_ttl = self.cache.config().pass_ttl;
        self.abandon_for(reason, pass_ttl).await;
    }

    /// Like [`abandon`](Self::abandon), with the hit-for-pass marker living `pass_ttl`. A transient failure (an
    /// origin 5xx) deserves a short one: long enough that waiters stop queueing behind it, short enough that the
    /// next good answer is stored soon.
    ///
    /// A fill of a Vary variant marks that variant (its slot beside the head record), so the other variants
    /// stay cached and the waiters for this one stop queueing; any other fill marks the head record.
    pub async fn abandon_for(mut self, reason: Option<&str>, pass_ttl: std::time::Duration) {
        self.stop_renewal().await;
        if let Some(reason) = reason {
            self.mark_pass(reason, pass_ttl).await;
        }
        self.release(false).await;
    }

    /// Writes a hit-for-pass marker over what the lookup saw: the head record, or for a Vary variant its slot.
    async fn mark_pass(&mut self, reason: &str, pass_ttl: std::time::Duration) {
        {
            let marker = HeadRecord::Pass(PassMarker {
                until_ms: self.cache.now_ms().saturating_add(pass_ttl.as_millis() as u64),
                reason: reason.to_owned(),
            })
            .encode();
            let ns = &self.cache.config().namespace;
            let head_key = ns.head_key(&self.resource);
            let expiry = Expiry::from_secs(pass_ttl.as_secs());
            let store = self.cache.store();
            let written = match &self.plan.variant {
                None => store.set(&head_key, marker, expiry, self.plan.head_condition()).await,
                Some((digest, cas)) => {
                    let condition = cas.map_or(SetCondition::Add, SetCondition::Cas);
                    let near = Placement::Near(&head_key);
                    store.set_placed(&ns.variant_key(digest), near, marker, expiry, condition).await
                }
            };
            if let Err(error) = written {
                self.cache.store_error(&error);
            }
        }
    }

    async fn release(&mut self, committed: bool) {
        self.finished = true;
        // Nothing more is coming: waiters need not wait for this fill any longer than for any other.
        if let Some(streaming) = &mut self.streaming {
            streaming.progress.take();
        }
        let ns = &self.cache.config().namespace;
        let head_key = ns.head_key(&self.resource);
        match &self.plan.held {
            Held::Nothing => {}
            Held::HeadPlaceholder(cas) if !committed => {
                self.cache.release(&head_key, Placement::Own, *cas).await;
            }
            Held::VariantPlaceholder(cas) => {
                // After a commit the placeholder is either replaced (CAS changed: the delete is a no-op) or was
                // left behind because the response's Vary moved the entry elsewhere.
                if let Some((digest, _)) = &self.plan.variant {
                    self.cache.release(&ns.variant_key(digest), Placement::Near(&head_key), *cas).await;
                }
            }
            Held::HeadPlaceholder(_) => {}
            Held::Lock(key) => {
                if let Err(error) =
                    self.cache.store().delete_placed(key, Placement::Near(&head_key), DeleteMode::Hard).await
                {
                    self.cache.store_error(&error);
                }
            }
        }
    }

    /// The generation values to record: those read at lookup, and for counters first met now, their live
    /// values provided they changed before the fill began.
    async fn generations(&self, tags: &[String]) -> Result<Generations, CommitError> {
        let ns = &self.cache.config().namespace;
        let mut known: HashMap<&str, u64> = HashMap::new();
        let mut late: Vec<(Option<&str>, String)> = Vec::new();
        match &self.live.all {
            Some(generation) => {
                known.insert("", generation.value);
            }
            None => late.push((None, ns.all_generation_key())),
        }
        for tag in tags {
            match self.live.tags.get(tag) {
                Some(Some(generation)) => {
                    known.insert(tag, generation.value);
                }
                _ => late.push((Some(tag), ns.tag_generation_key(tag))),
            }
        }
        if !late.is_empty() {
            // Each server holds its own copy of every counter: the one beside the head is the one readers check.
            let head_key = ns.head_key(&self.resource);
            let requests: Vec<GetRequest> =
                late.iter().map(|(_, key)| GetRequest::plain(key.clone()).near(head_key.clone())).collect();
            let results = self.cache.store().get_many(&requests).await;
            for ((name, key), result) in late.iter().zip(results) {
                let generation = match result? {
                    GetOutcome::Hit(item) => Generation::decode(&item.value),
                    GetOutcome::Miss { .. } => None,
                };
                let generation = match generation {
                    Some(generation) => generation,
                    None => self.create_generation(key, &head_key).await?,
                };
                if !generation.predates(self.started_ms, self.cache.config().clock_skew) {
                    return Err(CommitError::Invalidated);
                }
                known.insert(name.unwrap_or(""), generation.value);
            }
        }
        Ok(Generations { all: known[""], url: 0, tags: tags.iter().map(|tag| known[tag.as_str()]).collect() })
    }

    /// Creates a missing (or unreadable) counter; if another caller created it first, reads theirs.
    /// The copy created is the one on the head record's server (`head_key`), where readers of the entry look.
    async fn create_generation(&self, key: &str, head_key: &str) -> Result<Generation, CommitError> {
        let store = self.cache.store();
        let created = Generation::created();
        let near = Placement::Near(head_key);
        match store.set_placed(key, near, created.encode(), Expiry::Never, SetCondition::Add).await? {
            SetOutcome::Stored => Ok(created),
            SetOutcome::NotStored => {
                let read = GetRequest::plain(key).near(head_key);
                let outcome = store.get_many(&[read]).await.pop().expect("one result")?;
                match outcome {
                    GetOutcome::Hit(item) => Generation::decode(&item.value).ok_or(CommitError::Raced),
                    GetOutcome::Miss { .. } => Err(CommitError::Raced),
                }
            }
        }
    }

    /// The tags an entry of this resource is stored with: `tags` (less prefix tags an older entry carried, in
    /// case the depth changed since), then the resource's prefix tags at the configured depth.
    fn with_prefix_tags(&self, tags: &[String]) -> Vec<String> {
        let mut all: Vec<String> = tags.iter().filter(|tag| !is_prefix_tag(tag)).cloned().collect();
        for tag in self.resource.prefix_tags(self.cache.config().prefix_depth) {
            if !all.contains(&tag) {
                all.push(tag);
            }
        }
        all
    }

    fn expiry(freshness: &Freshness, keep_s: u64) -> Expiry {
        let stale = freshness.stale_while_revalidate_s.max(freshness.stale_if_error_s);
        lifetime_s(freshness.fresh_for_s, freshness.initial_age_s, stale, keep_s)
            .map_or(Expiry::Never, Expiry::from_secs)
    }

    async fn write(&mut self, response: FillResponse) -> Result<Arc<EntryMeta>, CommitError> {
        let cache = self.cache.clone();
        let config = cache.config();
        let ns = &config.namespace;
        let store = cache.store();
        // Every entry carries its resource's prefix tags, whoever filled it (sidecar, layer, any caller).
        let mut response = response;
        response.tags = self.with_prefix_tags(&response.tags);
        // Remember the response's tags and Vary names before anything can fail: if this fill is refused because
        // one of its tags changed, the next lookup must read that tag's counter up front and be judged by value
        // (else every fill for the next `clock_skew` would be judged by time and refused too).
        let mut hinted_vary = response.vary.clone();
        hinted_vary.sort();
        hinted_vary.dedup();
        cache.remember(&self.resource, None, &hinted_vary, &response.tags);
        // Nothing is written, nor any counter created, for an object the store cannot hold or admit.
        let chunk_size = cache.admit(&mut response)?;
        let mut generations = self.generations(&response.tags).await?;
        let now_ms = cache.now_ms();
        let preset = self.streaming.as_mut().and_then(|streaming| streaming.preset.take());
        let fill_id = preset.as_ref().map_or_else(random_value, |(fill_id, _)| *fill_id);
        let etag = match (&response.etag, preset) {
            (Some(etag), _) => etag.clone(),
            (None, Some((_, minted))) => minted,
            (None, None) => match config.validator {
                super::ValidatorMode::Timestamp => EntityTag::mint_timestamp(now_ms.saturating_mul(1000), fill_id),
                super::ValidatorMode::Content => EntityTag::from_content(&response.body),
            },
        };
        let mut vary = response.vary.clone();
        vary.sort();
        vary.dedup();
        let reuse = self.plan.index.clone().filter(|index| !vary.is_empty() && index.vary == vary);
        let (entry_digest, url_generation) = if vary.is_empty() {
            (self.resource.digest(), 0)
        } else {
            let url_generation = reuse.as_ref().map_or_else(random_value, |index| index.url_generation);
            (self.resource.variant(&vary, &self.headers), url_generation)
        };
        generations.url = url_generation;
        let meta = EntryMeta {
            fill_id,
            status: response.status,
            etag: etag.to_header_value(),
            minted: response.etag.is_none(),
            stored_at_ms: now_ms,
            initial_age_s: response.freshness.initial_age_s,
            fresh_for_s: response.freshness.fresh_for_s,
            stale_while_revalidate_s: response.freshness.stale_while_revalidate_s,
            stale_if_error_s: response.freshness.stale_if_error_s,
            must_revalidate: response.freshness.must_revalidate,
            headers: response
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), serde_bytes::ByteBuf::from(value.to_vec())))
                .collect(),
            vary: vary.clone(),
            tags: response.tags.clone(),
            generations,
            body_len: response.body.len() as u64,
            codings: response.codings.iter().map(|(coding, _)| coding.clone()).collect(),
            coding_lens: response.codings.iter().map(|(_, encoded)| encoded.len() as u64).collect(),
            chunk_size,
            parsed: Default::default(),
            bridge: self.bridge_witness(&response.tags).await?,
        };
        let expiry = Self::expiry(&response.freshness, config.keep.as_secs());

        // 1. Bodies, immutable and named by the fill id.
        //    Each is placed beside the head record, so one server's loss never leaves a head without its body.
        let head_key = ns.head_key(&self.resource);
        let near = Placement::Near(&head_key);
        //    Pipelined on one connection: concurrent sets each took a pooled connection of their own, and with
        //    many fills in flight that dialled (and closed) connections past the pool's idle limit (measured: 25
        //    times the connections, no more fills a second); one at a time cost a round trip each.
        //    `Content-Encoding` is stamped per answer (`Representation::stamp`): an item is only the bytes.
        let mut bodies: Vec<(Option<&str>, &Bytes)> = vec![(None, &response.body)];
        bodies.extend(response.codings.iter().map(|(coding, encoded)| (Some(coding.as_str()), encoded)));
        cache.write_bodies(&head_key, &entry_digest, fill_id, &bodies, chunk_size, expiry).await?;
        self.stop_renewal().await;

        if vary.is_empty() {
            // 3. The head record is the entry: the commit point.
            let head = HeadRecord::Entry(Box::new(meta.clone())).encode();
            let written = store.set(&head_key, head, expiry, self.plan.head_condition()).await?;
            if written == SetOutcome::NotStored {
                return Err(CommitError::Raced);
            }
            return Ok(Arc::new(meta));
        }

        // 2. The variant entry. Under a reused index it replaces what the lookup saw; under a new index (new URL
        //    generation) nothing older can match it, so it is written unconditionally.
        let variant_condition = match (&reuse, &self.plan.variant) {
            (Some(_), Some((digest, Some(cas)))) if *digest == entry_digest => SetCondition::Cas(*cas),
            _ => SetCondition::Always,
        };
        let variant_key = ns.variant_key(&entry_digest);
        //    Beside the head record, like the bodies.
        let variant = meta.encode();
        if store.set_placed(&variant_key, near, variant, expiry, variant_condition).await? == SetOutcome::NotStored {
            return Err(CommitError::Raced);
        }
        // 3. A new Vary index when the head is not already the right one: the commit point.
        if reuse.is_none() {
            let index = HeadRecord::Variants(VaryIndex { url_generation, vary });
            let written = store.set(&head_key, index.encode(), Expiry::Never, self.plan.head_condition()).await?;
            if written == SetOutcome::NotStored {
                return Err(CommitError::Raced);
            }
        }
        Ok(Arc::new(meta))
    }

    async fn write_revalidated(
        &mut self,
        updated: EntryMeta,
        freshness: Freshness,
    ) -> Result<Arc<EntryMeta>, CommitError> {
        let cache = self.cache.clone();
        let config = cache.config();
        let ns = &config.namespace;
        let tags = self.with_prefix_tags(&updated.tags);
        let mut generations = self.generations(&tags).await?;
        generations.url = updated.generations.url;
        let mut meta = updated;
        meta.tags = tags;
        meta.stored_at_ms = cache.now_ms();
        meta.initial_age_s = freshness.initial_age_s;
        meta.fresh_for_s = freshness.fresh_for_s;
        meta.stale_while_revalidate_s = freshness.stale_while_revalidate_s;
        meta.stale_if_error_s = freshness.stale_if_error_s;
        meta.must_revalidate = freshness.must_revalidate;
        meta.generations = generations;
        meta.bridge = self.bridge_witness(&meta.tags).await?;
        let expiry = Self::expiry(&freshness, config.keep.as_secs());
        let head_key = ns.head_key(&self.resource);
        let (key, placement, value, condition, entry_digest) = match &self.plan.variant {
            None => (
                head_key.clone(),
                Placement::Own,
                HeadRecord::Entry(Box::new(meta.clone())).encode(),
                self.plan.head_condition(),
                self.resource.digest(),
            ),
            Some((digest, cas)) => {
                if self.plan.index.is_none() {
                    // The Vary index was soft-invalidated: a refresh under it would be unreachable. Refill instead.
                    return Err(CommitError::Raced);
                }
                let condition = cas.map_or(SetCondition::Add, SetCondition::Cas);
                (ns.variant_key(digest), Placement::Near(&head_key), meta.encode(), condition, *digest)
            }
        };
        // The bodies first, so the refreshed entry never outlives them: a body item that is already gone is left to
        // the next hit, which refills it.
        let codings = std::iter::once(None).chain(meta.codings.iter().map(|coding| Some(coding.as_str())));
        for coding in codings {
            let layout = meta.chunk_layout(coding);
            cache.touch_body(&head_key, &entry_digest, meta.fill_id, coding, layout, expiry).await?;
        }
        match cache.store().set_placed(&key, placement, value, expiry, condition).await? {
            SetOutcome::Stored => Ok(Arc::new(meta)),
            SetOutcome::NotStored => Err(CommitError::Raced),
        }
    }
}

/// An entry's item lifetime as its fill writes it, in seconds: the freshness it has left, its longer stale
/// window, then `keep_s` (so a 304 can still refresh it); `None` for an entry fresh until invalidated.
pub(super) fn lifetime_s(fresh_for_s: u64, initial_age_s: u64, stale_s: u32, keep_s: u64) -> Option<u64> {
    (fresh_for_s != u64::MAX)
        .then(|| fresh_for_s.saturating_sub(initial_age_s).saturating_add(u64::from(stale_s)).saturating_add(keep_s))
}

impl Drop for Fill {
    fn drop(&mut self) {
        if self.finished || self.plan.held == Held::Nothing {
            return;
        }
        // Dropped without commit or abandon (origin error, panic, cancelled request): release in the background so
        // waiters do not sit out the whole lease.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let cache = self.cache.clone();
        let ns = cache.config().namespace.clone();
        let head_key = ns.head_key(&self.resource);
        // The head placeholder lives on its own server; a variant placeholder and a lock beside the head.
        let (key, beside_head, mode) = match &self.plan.held {
            Held::HeadPlaceholder(cas) => (head_key.clone(), false, DeleteMode::IfCas { cas: *cas }),
            Held::VariantPlaceholder(cas) => match &self.plan.variant {
                Some((digest, _)) => (ns.variant_key(digest), true, DeleteMode::IfCas { cas: *cas }),
                None => return,
            },
            Held::Lock(key) => (key.clone(), true, DeleteMode::Hard),
            Held::Nothing => return,
        };
        runtime.spawn(async move {
            let placement = if beside_head { Placement::Near(&head_key) } else { Placement::Own };
            if let Err(error) = cache.store().delete_placed(&key, placement, mode).await {
                cache.store_error(&error);
            }
        });
    }
}
