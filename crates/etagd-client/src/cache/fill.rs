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
//!
//! Here: the fill's life (handed out, committed, abandoned, released, dropped). `write`: what a commit writes.
//! `plan`: what the fill replaces and holds. `streaming`: what a fill settles before its body arrives.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;

use super::{Cache, Live, LookupRequest, bump, inflight, renew};

mod plan;
mod streaming;
mod write;

use crate::cacheability::{Freshness, NoStoreReason};
use crate::entry::{EntryMeta, HeadRecord, PassMarker};
use crate::etag::EntityTag;
use crate::key::ResourceKey;
use crate::store::{DeleteMode, Expiry, Placement, SetCondition, StoreError};
use plan::Held;
pub(crate) use plan::Plan;
use streaming::Streaming;
pub(super) use write::lifetime_s;

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
