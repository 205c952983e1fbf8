//! The engine: lookup, fill and invalidation over any [`Store`], shared by the sidecar, the tower layer and
//! `etagctl`.
//!
//! One lookup is one round of store reads in the common case: the head record (with a fill lease on a miss),
//! the namespace generation, and the generations of the tags this process last saw on the resource (or that a
//! route rule gives it), all in one batch. A varying resource, or a tag this process has not seen yet, costs a
//! second round. A hit's body is read separately, and only when the caller needs it (not for a 304); with a
//! remote store it is kept in process keyed by its immutable name, so a hot body crosses the network once.
//!
//! What a caller does with each [`Lookup`]:
//!
//! | lookup | the caller |
//! |---|---|
//! | `Hit` fresh | answers from the entry (304 or body) |
//! | `Hit` stale or in grace | serves it while one caller refreshes ([`Cache::refresh_permit`]), or revalidates |
//! | `Miss(fill)` | asks the origin, then [`Fill::commit`] or [`Fill::abandon`] |
//! | `Busy` | another caller (anywhere in the fleet) is filling: [`Cache::lookup_waiting`] waits for it |
//! | `Pass` | goes to the origin without storing (the resource was recently uncacheable) |
//! | `Unavailable` | goes to the origin: the store failed, which is never the client's problem |

mod fill;
mod inflight;
mod invalidate;
mod memo;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

pub use fill::{CommitError, Fill, FillResponse};
pub use invalidate::{Invalidation, InvalidationReport, TargetReport};

use crate::entry::{EntryMeta, HeadRecord, StoredBody, VaryIndex};
use crate::generation::{Check, Generation};
use crate::key::{Digest, Namespace, ResourceKey};
use bytes::Bytes;

use crate::store::{
    DeleteMode, Expiry, GetOutcome, GetRequest, Item, Lease, SetCondition, SetOutcome, Store, StoreError,
};

/// How the engine mints validators when the origin sends none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValidatorMode {
    /// A strong timestamp tag minted at fill time, unique across replicas (the seed's choice).
    #[default]
    Timestamp,
    /// The xxh3-128 of the body: identical content keeps its validator across invalidations.
    Content,
}

/// A source of wall-clock time in unix milliseconds; replaceable in tests.
pub trait Clock: Send + Sync + 'static {
    /// Now, in unix milliseconds.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

/// Engine settings.
#[derive(Clone)]
pub struct CacheConfig {
    /// Keeps deployments sharing one Memcached apart.
    pub namespace: Namespace,
    /// How the engine mints validators.
    pub validator: ValidatorMode,
    /// Lifetime of a fill lease: if the filler dies, others may fill after this. Set it above the slowest
    /// origin response you want coalesced.
    pub fill_lease: Duration,
    /// How long a request waits for another caller's fill before going to the origin itself.
    pub fill_wait: Duration,
    /// How long an uncacheable answer sends the resource straight to the origin (hit-for-pass).
    pub pass_ttl: Duration,
    /// How long a stale entry is kept after its freshness and stale windows, for revalidation.
    pub keep: Duration,
    /// Clock skew allowed between replicas when checking counters first met after the origin answered.
    pub clock_skew: Duration,
    /// Bytes of bodies kept in process (remote stores only; 0 turns it off).
    pub body_cache_bytes: u64,
    /// Resources whose tags and Vary names this process remembers to batch their reads.
    pub hint_capacity: u64,
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            namespace: Namespace::default(),
            validator: ValidatorMode::default(),
            fill_lease: Duration::from_secs(30),
            fill_wait: Duration::from_secs(5),
            pass_ttl: Duration::from_secs(30),
            keep: Duration::from_secs(3600),
            clock_skew: Duration::from_secs(1),
            body_cache_bytes: 64 << 20,
            hint_capacity: 100_000,
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for CacheConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheConfig")
            .field("namespace", &self.namespace)
            .field("validator", &self.validator)
            .field("fill_lease", &self.fill_lease)
            .field("fill_wait", &self.fill_wait)
            .field("pass_ttl", &self.pass_ttl)
            .field("keep", &self.keep)
            .field("clock_skew", &self.clock_skew)
            .field("body_cache_bytes", &self.body_cache_bytes)
            .field("hint_capacity", &self.hint_capacity)
            .finish_non_exhaustive()
    }
}

/// Counters the engine keeps; the sidecar exports them as metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Store operations that failed.
    pub store_errors: AtomicU64,
    /// Stored items that did not decode (treated as misses).
    pub corrupt_items: AtomicU64,
    /// Fill leases won (this process fills).
    pub leases_won: AtomicU64,
    /// Fill leases found held by another caller.
    pub leases_busy: AtomicU64,
    /// Fills stored.
    pub fills_stored: AtomicU64,
    /// Fills refused because an invalidation landed while the origin was answering.
    pub fills_invalidated: AtomicU64,
    /// Fills that lost a race with another writer.
    pub fills_raced: AtomicU64,
    /// Bodies read from the in-process body cache.
    pub body_cache_hits: AtomicU64,
    /// Bodies read from the store.
    pub body_store_reads: AtomicU64,
    /// Invalidation targets written.
    pub invalidations: AtomicU64,
    /// Invalidation targets that could not be written.
    pub invalidation_failures: AtomicU64,
}

/// A snapshot of [`Counters`] plus gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CounterSnapshot {
    /// See [`Counters::store_errors`].
    pub store_errors: u64,
    /// See [`Counters::corrupt_items`].
    pub corrupt_items: u64,
    /// See [`Counters::leases_won`].
    pub leases_won: u64,
    /// See [`Counters::leases_busy`].
    pub leases_busy: u64,
    /// See [`Counters::fills_stored`].
    pub fills_stored: u64,
    /// See [`Counters::fills_invalidated`].
    pub fills_invalidated: u64,
    /// See [`Counters::fills_raced`].
    pub fills_raced: u64,
    /// See [`Counters::body_cache_hits`].
    pub body_cache_hits: u64,
    /// See [`Counters::body_store_reads`].
    pub body_store_reads: u64,
    /// See [`Counters::invalidations`].
    pub invalidations: u64,
    /// See [`Counters::invalidation_failures`].
    pub invalidation_failures: u64,
    /// Bytes held by the in-process body cache.
    pub body_cache_bytes: u64,
    /// Fills in flight in this process.
    pub fills_in_flight: u64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What this process remembers about a resource to batch its reads: never a validator, only which keys to ask.
#[derive(Debug, Clone, Default)]
struct Hint {
    vary: Vec<String>,
    tags: Vec<String>,
}

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
    slot: Slot,
    /// Whether the store already handed this caller the refresh lease (soft-deleted head).
    refresh_lease: bool,
}

/// Where an entry lives: the digest naming its body, the item holding its meta, and that item's CAS.
#[derive(Debug, Clone)]
struct Slot {
    entry_digest: Digest,
    meta_cas: u64,
    index: Option<VaryIndex>,
    head_cas: u64,
    generations: Live,
}

/// Live generation values read in a lookup.
#[derive(Debug, Clone, Default)]
pub(crate) struct Live {
    pub(crate) all: Option<Generation>,
    pub(crate) tags: HashMap<String, Option<Generation>>,
}

/// A decoded head record; the entry case comes from the decode memo, shared.
enum Head {
    Entry(Arc<EntryMeta>),
    Other(HeadRecord),
}

/// The outcome of a lookup.
#[derive(Debug)]
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

impl Hit {
    /// The name of this entry's body item for a content coding (`None`: identity).
    pub fn body_key(&self, cache: &Cache, coding: Option<&str>) -> String {
        cache.inner.config.namespace.body_key(&self.slot.entry_digest, self.meta.fill_id, coding)
    }
}

/// The engine. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    config: CacheConfig,
    bodies: Option<moka::sync::Cache<String, Arc<StoredBody>>>,
    hints: moka::sync::Cache<Digest, Arc<Hint>>,
    inflight: inflight::InFlight,
    memo: memo::Memo,
    counters: Counters,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl Cache {
    /// An engine over a store.
    pub fn new(store: Arc<dyn Store>, config: CacheConfig) -> Self {
        let bodies = (store.is_remote() && config.body_cache_bytes > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(config.body_cache_bytes)
                .weigher(|key: &String, body: &Arc<StoredBody>| {
                    let headers: usize = body.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
                    u32::try_from(key.len() + headers + body.body.len()).unwrap_or(u32::MAX)
                })
                .build()
        });
        let hints = moka::sync::Cache::new(config.hint_capacity);
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                bodies,
                hints,
                inflight: inflight::InFlight::default(),
                memo: memo::Memo::default(),
                counters: Counters::default(),
            }),
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The settings.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// Now, by the engine's clock, in unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.inner.config.clock.now_ms()
    }

    /// Counters and gauges.
    pub fn counters(&self) -> CounterSnapshot {
        let c = &self.inner.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSnapshot {
            store_errors: load(&c.store_errors),
            corrupt_items: load(&c.corrupt_items),
            leases_won: load(&c.leases_won),
            leases_busy: load(&c.leases_busy),
            fills_stored: load(&c.fills_stored),
            fills_invalidated: load(&c.fills_invalidated),
            fills_raced: load(&c.fills_raced),
            body_cache_hits: load(&c.body_cache_hits),
            body_store_reads: load(&c.body_store_reads),
            invalidations: load(&c.invalidations),
            invalidation_failures: load(&c.invalidation_failures),
            body_cache_bytes: self.inner.bodies.as_ref().map_or(0, |b| {
                b.run_pending_tasks();
                b.weighted_size()
            }),
            fills_in_flight: self.inner.inflight.len() as u64,
        }
    }

    fn store_error(&self, error: &StoreError) {
        bump(&self.inner.counters.store_errors);
        tracing::debug!(%error, "store operation failed; falling back to the origin");
    }

    /// Looks a request up, taking the fill lease on a miss.
    pub async fn lookup(&self, request: LookupRequest<'_>) -> Lookup {
        let config = &self.inner.config;
        let ns = &config.namespace;
        let resource = request.resource;
        let hint = self.inner.hints.get(&resource.digest());

        // First round: head (leased), g:all, the tags we expect, and the variant we expect.
        let mut tags: Vec<String> = request.route_tags.to_vec();
        if let Some(hint) = &hint {
            for tag in &hint.tags {
                if !tags.contains(tag) {
                    tags.push(tag.clone());
                }
            }
        }
        let lease_secs = lease_secs(config.fill_lease);
        let mut requests =
            vec![GetRequest::leased(ns.head_key(resource), lease_secs), GetRequest::plain(ns.all_generation_key())];
        requests.extend(tags.iter().map(|tag| GetRequest::plain(ns.tag_generation_key(tag))));
        let hinted_variant = hint
            .as_ref()
            .filter(|hint| !hint.vary.is_empty())
            .map(|hint| resource.variant(&hint.vary, request.headers));
        if let Some(variant) = &hinted_variant {
            requests.push(GetRequest::leased(ns.variant_key(variant), lease_secs));
        }
        let mut results = self.inner.store.get_many(&requests).await.into_iter();
        let head = results.next().expect("one result per request");
        let all = results.next().expect("one result per request");
        let mut live = Live { all: None, tags: HashMap::new() };
        match all {
            Ok(outcome) => live.all = self.generation_of(outcome),
            Err(error) => {
                // The namespace counter decides every entry: without it nothing can be proven current.
                self.store_error(&error);
                if let Ok(GetOutcome::Miss { lease: Lease::Won { cas } }) = head {
                    self.release(&ns.head_key(resource), cas).await;
                }
                return Lookup::Unavailable(error);
            }
        }
        for tag in &tags {
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
            GetOutcome::Hit(item) => self.on_head(request, item, live, hinted_variant_result, now_ms).await,
        }
    }

    /// Like [`lookup`](Self::lookup), but when another caller is filling, waits for it (up to
    /// [`CacheConfig::fill_wait`]) and looks again. Returns `Busy` only when the wait ran out.
    pub async fn lookup_waiting(&self, request: LookupRequest<'_>) -> Lookup {
        let deadline = tokio::time::Instant::now() + self.inner.config.fill_wait;
        let mut pause = Duration::from_millis(2);
        loop {
            let lookup = self.lookup(request).await;
            if !matches!(lookup, Lookup::Busy) {
                return lookup;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Lookup::Busy;
            }
            // A fill in this process wakes us when it ends; one elsewhere in the fleet is polled with backoff,
            // since Memcached cannot notify.
            let wait = pause.min(deadline - now);
            self.inner.inflight.wait(&request.resource.digest(), wait).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Releases a placeholder this caller created, unless someone replaced it since.
    pub(crate) async fn release(&self, key: &str, cas: u64) {
        if let Err(error) = self.inner.store.delete(key, DeleteMode::IfCas { cas }).await {
            self.store_error(&error);
        }
    }

    fn generation_of(&self, outcome: GetOutcome) -> Option<Generation> {
        match outcome {
            GetOutcome::Hit(item) => {
                let generation = Generation::decode(&item.value);
                if generation.is_none() {
                    bump(&self.inner.counters.corrupt_items);
                }
                generation
            }
            GetOutcome::Miss { .. } => None,
        }
    }

    /// Keeps a body this process just stored in the in-process body cache (remote stores only).
    pub(crate) fn keep_body(&self, key: String, headers: &[(String, Bytes)], body: &Bytes) {
        if let Some(bodies) = &self.inner.bodies {
            bodies.insert(key, Arc::new(StoredBody { headers: headers.to_vec(), body: body.clone() }));
        }
    }

    fn remember(&self, resource: &ResourceKey, vary: &[String], tags: &[String]) {
        let digest = resource.digest();
        let same = self.inner.hints.get(&digest).is_some_and(|hint| hint.vary == vary && hint.tags == tags);
        if !same {
            self.inner.hints.insert(digest, Arc::new(Hint { vary: vary.to_vec(), tags: tags.to_vec() }));
        }
    }

    /// Reads the counters of tags not read yet (one round for all of them).
    async fn read_tags(&self, tags: &[String], live: &mut Live) {
        let missing: Vec<&String> = tags.iter().filter(|tag| !live.tags.contains_key(*tag)).collect();
        if missing.is_empty() {
            return;
        }
        let ns = &self.inner.config.namespace;
        let requests: Vec<GetRequest> =
            missing.iter().map(|tag| GetRequest::plain(ns.tag_generation_key(tag))).collect();
        let results = self.inner.store.get_many(&requests).await;
        for (tag, result) in missing.into_iter().zip(results) {
            let generation = match result {
                Ok(outcome) => self.generation_of(outcome),
                Err(error) => {
                    self.store_error(&error);
                    None
                }
            };
            live.tags.insert(tag.clone(), generation);
        }
    }

    /// Whether an entry's recorded generations are still live.
    fn validity(meta: &EntryMeta, live: &Live, url_generation: Option<u64>, now_ms: u64) -> Check {
        if let Some(url) = url_generation {
            if meta.generations.url != url {
                return Check::Changed;
            }
        }
        let Some(all) = &live.all else {
            return Check::Changed;
        };
        let mut result = all.check(meta.generations.all, now_ms);
        if meta.generations.tags.len() != meta.tags.len() {
            return Check::Changed;
        }
        for (tag, recorded) in meta.tags.iter().zip(&meta.generations.tags) {
            let check = match live.tags.get(tag) {
                Some(Some(generation)) => generation.check(*recorded, now_ms),
                _ => Check::Changed,
            };
            match check {
                Check::Changed => return Check::Changed,
                Check::Grace => result = Check::Grace,
                Check::Current => {}
            }
        }
        result
    }

    async fn on_head(
        &self,
        request: LookupRequest<'_>,
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
                tracing::warn!(%error, key = %self.inner.config.namespace.head_key(resource), "corrupt head record");
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
                self.on_entry_head(request, meta, item, live, now_ms).await
            }
            Head::Entry(meta) => self.on_entry_head(request, meta, item, live, now_ms).await,
            Head::Other(HeadRecord::Variants(index)) => {
                let digest = resource.variant(&index.vary, request.headers);
                let outcome = match hinted_variant {
                    Some((hinted, outcome)) if hinted == digest => outcome,
                    _ => {
                        let key = self.inner.config.namespace.variant_key(&digest);
                        let lease = GetRequest::leased(key, lease_secs(self.inner.config.fill_lease));
                        self.inner.store.get_many(&[lease]).await.pop().expect("one result per request")
                    }
                };
                let head_stale = item.stale;
                let mut plan = fill::Plan::variant(item.cas, (!head_stale).then(|| index.clone()), digest);
                let variant = match outcome {
                    Ok(GetOutcome::Hit(variant)) => variant,
                    Ok(GetOutcome::Miss { lease: Lease::Won { cas } }) => {
                        bump(&self.inner.counters.leases_won);
                        self.remember(resource, &index.vary, &[]);
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
                let meta = match self.inner.memo.entry(&variant.value) {
                    Ok(meta) => meta,
                    Err(error) => {
                        bump(&self.inner.counters.corrupt_items);
                        tracing::warn!(%error, "corrupt variant entry");
                        plan.variant_cas(variant.cas);
                        return Lookup::Miss(Fill::new(self, request, plan, live, now_ms));
                    }
                };
                self.remember(resource, &index.vary, &meta.tags);
                self.read_tags(&meta.tags, &mut live).await;
                plan.variant_cas(variant.cas);
                let slot = Slot {
                    entry_digest: digest,
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

    async fn on_entry_head(
        &self,
        request: LookupRequest<'_>,
        meta: Arc<EntryMeta>,
        item: Item,
        mut live: Live,
        now_ms: u64,
    ) -> Lookup {
        let resource = request.resource;
        self.remember(resource, &[], &meta.tags);
        self.read_tags(&meta.tags, &mut live).await;
        let slot = Slot {
            entry_digest: resource.digest(),
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
        if check == Check::Changed || (item.stale && meta.must_revalidate) {
            let lock = self.inner.config.namespace.refresh_lock_key(&slot.entry_digest);
            return match self.take_lock(&lock).await {
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

    /// Tries to take an entry's refresh lock: `Some(true)` won, `Some(false)` held elsewhere, `None` the store
    /// failed (the caller proceeds without coordination).
    async fn take_lock(&self, key: &str) -> Option<bool> {
        let expiry = Expiry::from_secs(self.inner.config.fill_lease.as_secs());
        match self.inner.store.set(key, Bytes::from_static(b"1"), expiry, SetCondition::Add).await {
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
            if self.take_lock(&lock).await != Some(true) {
                return None;
            }
            plan.lock(lock);
        }
        Some(Fill::new(self, request, plan, slot.generations.clone(), self.now_ms()))
    }

    /// Reads a hit's body (identity, or one content coding): from process memory when a remote store's body was
    /// read before, else from the store. `None` when it was evicted or is corrupt: treat the hit as a miss.
    pub async fn body(&self, hit: &Hit, coding: Option<&str>) -> Result<Option<Arc<StoredBody>>, StoreError> {
        let key = hit.body_key(self, coding);
        if let Some(bodies) = &self.inner.bodies {
            if let Some(body) = bodies.get(&key) {
                bump(&self.inner.counters.body_cache_hits);
                return Ok(Some(body));
            }
        }
        bump(&self.inner.counters.body_store_reads);
        let outcome = self.inner.store.get_many(&[GetRequest::plain(key.clone())]).await.pop().expect("one result");
        let item = match outcome {
            Ok(GetOutcome::Hit(item)) => item,
            Ok(GetOutcome::Miss { .. }) => return Ok(None),
            Err(error) => {
                self.store_error(&error);
                return Err(error);
            }
        };
        match StoredBody::decode(item.value) {
            Ok(body) => {
                let body = Arc::new(body);
                if let Some(bodies) = &self.inner.bodies {
                    bodies.insert(key, body.clone());
                }
                Ok(Some(body))
            }
            Err(error) => {
                bump(&self.inner.counters.corrupt_items);
                tracing::warn!(%error, %key, "corrupt body item");
                Ok(None)
            }
        }
    }

    /// What is stored for a resource, read without taking any lease (for `/entries` and `etagctl inspect`).
    pub async fn inspect(&self, resource: &ResourceKey, headers: &HeaderMap) -> Result<Inspection, StoreError> {
        let ns = &self.inner.config.namespace;
        let requests = [GetRequest::plain(ns.head_key(resource)), GetRequest::plain(ns.all_generation_key())];
        let mut results = self.inner.store.get_many(&requests).await.into_iter();
        let head = results.next().expect("one result")?;
        let mut live = Live { all: self.generation_of(results.next().expect("one result")?), tags: HashMap::new() };
        let now_ms = self.now_ms();
        let mut inspection = Inspection {
            canonical: resource.canonical().to_owned(),
            head_key: ns.head_key(resource),
            server: self.inner.store.server_of(&ns.head_key(resource)),
            head: "missing",
            vary: Vec::new(),
            pass_reason: None,
            entry: None,
        };
        let item = match head {
            GetOutcome::Hit(item) if item.value.is_empty() => {
                inspection.head = "fill-in-progress";
                return Ok(inspection);
            }
            GetOutcome::Hit(item) => item,
            GetOutcome::Miss { .. } => return Ok(inspection),
        };
        let (meta, url_generation, stale) = match HeadRecord::decode(&item.value) {
            Err(_) => {
                inspection.head = "corrupt";
                return Ok(inspection);
            }
            Ok(HeadRecord::Pass(marker)) => {
                inspection.head = "pass";
                inspection.pass_reason = Some(marker.reason);
                return Ok(inspection);
            }
            Ok(HeadRecord::Entry(meta)) => {
                inspection.head = "entry";
                (*meta, None, item.stale)
            }
            Ok(HeadRecord::Variants(index)) => {
                inspection.head = "variants";
                inspection.vary = index.vary.clone();
                let key = ns.variant_key(&resource.variant(&index.vary, headers));
                match self.inner.store.get_many(&[GetRequest::plain(key)]).await.pop().expect("one result")? {
                    GetOutcome::Hit(variant) if !variant.value.is_empty() => match EntryMeta::decode(&variant.value) {
                        Ok(meta) => (meta, Some(index.url_generation), item.stale || variant.stale),
                        Err(_) => return Ok(inspection),
                    },
                    _ => return Ok(inspection),
                }
            }
        };
        self.read_tags(&meta.tags, &mut live).await;
        let check = Self::validity(&meta, &live, url_generation, now_ms);
        let age_s = meta.initial_age_s.saturating_add(now_ms.saturating_sub(meta.stored_at_ms) / 1000);
        let state = match check {
            Check::Changed => "invalidated",
            Check::Grace => "grace",
            Check::Current if stale => "grace",
            Check::Current if meta.fresh_for_s == u64::MAX || age_s < meta.fresh_for_s => "fresh",
            Check::Current => "stale",
        };
        inspection.entry = Some(EntryView {
            etag: meta.etag.clone(),
            status: meta.status,
            state,
            age_s,
            ttl_left_s: (meta.fresh_for_s != u64::MAX).then(|| meta.fresh_for_s.saturating_sub(age_s)),
            body_bytes: meta.body_len,
            tags: meta.tags.clone(),
            codings: meta.codings.clone(),
            stored_at_ms: meta.stored_at_ms,
        });
        Ok(inspection)
    }
}

/// What [`Cache::inspect`] found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    /// The canonical form the key was derived from.
    pub canonical: String,
    /// The head record's key.
    pub head_key: String,
    /// The server holding the head record.
    pub server: String,
    /// `missing`, `fill-in-progress`, `entry`, `variants`, `pass` or `corrupt`.
    pub head: &'static str,
    /// The header names the resource varies on.
    pub vary: Vec<String>,
    /// Why the resource is passed, for `pass`.
    pub pass_reason: Option<String>,
    /// The entry (for `variants`, the variant the given request headers select).
    pub entry: Option<EntryView>,
}

/// One stored entry, as operators see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EntryView {
    /// The validator.
    pub etag: String,
    /// The status.
    pub status: u16,
    /// `fresh`, `stale`, `grace` or `invalidated`.
    pub state: &'static str,
    /// Age in seconds.
    pub age_s: u64,
    /// Freshness left in seconds; `None` for "until invalidated".
    pub ttl_left_s: Option<u64>,
    /// Identity body size.
    pub body_bytes: u64,
    /// Tags.
    pub tags: Vec<String>,
    /// Stored content codings besides identity.
    pub codings: Vec<String>,
    /// Unix ms when stored.
    pub stored_at_ms: u64,
}

fn lease_secs(lease: Duration) -> u32 {
    u32::try_from(lease.as_secs().max(1)).unwrap_or(u32::MAX)
}
