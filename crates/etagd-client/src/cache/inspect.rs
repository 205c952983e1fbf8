//! Inspection: what is stored for a resource, read without taking any lease, for operators (`/entries`,
//! `etagctl inspect`).

use http::HeaderMap;

use super::{Cache, Live};
use crate::entry::{EntryMeta, HeadRecord};
use crate::generation::Check;
use crate::key::ResourceKey;
use crate::store::{GetOutcome, GetRequest, StoreError};

impl Cache {
    /// What is stored for a resource, read without taking any lease (for `/entries` and `etagctl inspect`).
    pub async fn inspect(&self, resource: &ResourceKey, headers: &HeaderMap) -> Result<Inspection, StoreError> {
        let ns = &self.inner.config.namespace;
        let head_key = ns.head_key(resource);
        if let Some(error) = self.fenced(&head_key) {
            return Err(error);
        }
        let requests =
            [GetRequest::plain(head_key.clone()), GetRequest::plain(ns.all_generation_key()).near(head_key.clone())];
        let mut results = self.inner.store.get_many(&requests).await.into_iter();
        let head = results.next().expect("one result")?;
        let mut live = Live { all: self.generation_of(results.next().expect("one result")?), tags: Default::default() };
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
                let read = GetRequest::plain(key).near(ns.head_key(resource));
                match self.inner.store.get_many(&[read]).await.pop().expect("one result")? {
                    GetOutcome::Hit(variant) if !variant.value.is_empty() => match EntryMeta::decode(&variant.value) {
                        Ok(meta) => (meta, Some(index.url_generation), item.stale || variant.stale),
                        Err(_) => {
                            // A variant marked hit-for-pass.
                            if let Ok(HeadRecord::Pass(marker)) = HeadRecord::decode(&variant.value) {
                                inspection.pass_reason = Some(marker.reason);
                            }
                            return Ok(inspection);
                        }
                    },
                    _ => return Ok(inspection),
                }
            }
        };
        self.read_tags(&meta.tags, &head_key, &mut live).await;
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
    /// Why the resource is passed, for `pass` (under `variants`: why the selected variant is).
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
