//! Bridging a rolling upgrade across a key schema change (`CacheConfig::bridge_from`).
//!
//! While replicas of the landed release (schema `etagd1`) and of this one (`etagd2`) serve side by side against
//! one Memcached, neither reads the other's entries, but each must honour the other's invalidations. With the
//! bridge on, this release:
//!
//! - **writes every invalidation in the older names too**: a URL's older head record is deleted, a tag's or the
//!   namespace's older counter bumped (hard: the older release then refills, never serves staler), each on the
//!   server its own key hashes to, as the older release places them;
//! - **checks every entry against the older release's invalidations**: a fill records the CAS values of the
//!   older head record and counters (`EntryMeta::bridge`), and a hit is current only while they are unchanged.
//!   Any change (an older URL, tag or namespace invalidation, or the older release refilling the resource) makes
//!   it a miss: this release deletes its own head record and fills again. An older head record that changes
//!   while this release's fill is at the origin, or an older counter bumped since the fill began, keeps the fill
//!   from being stored.
//!
//! It costs one more batch per lookup (the older items live on the servers their own keys hash to) and a read at
//! the start of each fill, so it is meant for the length of a rollout: turn it off once no older replica is left.

use super::fill::Fill;
use super::invalidate::TargetReport;
use super::{Cache, CommitError, Lookup, LookupRequest};
use crate::entry::EntryMeta;
use crate::generation::Generation;
use crate::key::{BridgedNames, ResourceKey};
use crate::store::{DeleteMode, GetOutcome, GetRequest, Placement, StoreError};

/// The older items' CAS values as a fill began, by key.
#[derive(Debug)]
pub(super) struct Begun(Vec<(String, u64)>);

/// What the older schema holds for one entry: the head record's CAS, then the namespace counter and each tag's
/// (0: absent), with the counters decoded where present.
struct OlderState {
    cas: Vec<u64>,
    counters: Vec<Option<Generation>>,
}

impl Cache {
    fn bridged(&self) -> Option<BridgedNames<'_>> {
        let config = self.config();
        config.bridge_from.map(|schema| config.namespace.bridged(schema))
    }

    async fn older_state(
        &self,
        names: BridgedNames<'_>,
        resource: &ResourceKey,
        tags: &[String],
    ) -> Result<OlderState, StoreError> {
        let mut requests =
            vec![GetRequest::plain(names.head_key(resource)), GetRequest::plain(names.all_generation_key())];
        requests.extend(tags.iter().map(|tag| GetRequest::plain(names.tag_generation_key(tag))));
        let mut state = OlderState { cas: Vec::with_capacity(requests.len()), counters: Vec::new() };
        for (index, result) in self.store().get_many(&requests).await.into_iter().enumerate() {
            let item = match result? {
                GetOutcome::Hit(item) => Some(item),
                GetOutcome::Miss { .. } => None,
            };
            state.cas.push(item.as_ref().map_or(0, |item| item.cas));
            if index > 0 {
                state.counters.push(item.and_then(|item| Generation::decode(&item.value)));
            }
        }
        Ok(state)
    }

    /// Whether a hit is still current for the older release too (always, without a bridge). A store error
    /// counts as not current: the request goes to the origin rather than risk an invalidated answer.
    pub(super) async fn bridge_holds(&self, resource: &ResourceKey, meta: &EntryMeta) -> bool {
        let Some(names) = self.bridged() else { return true };
        let Some(recorded) = &meta.bridge else { return false };
        match self.older_state(names, resource, &meta.tags).await {
            Ok(state) => &state.cas == recorded,
            Err(error) => {
                self.store_error(&error);
                false
            }
        }
    }

    /// Applies an older-release invalidation a hit revealed: this release's head record goes too.
    pub(super) async fn bridge_forget(&self, resource: &ResourceKey) {
        let key = self.config().namespace.head_key(resource);
        if let Err(error) = self.store().delete(&key, DeleteMode::Hard).await {
            self.store_error(&error);
        }
    }

    /// What the older schema holds as a fill begins: the CAS (0: absent) of its head record, namespace counter
    /// and the counters of `tags` (those the lookup read), by key. `None` without a bridge or when it could not
    /// be read, which keeps the fill from being stored.
    pub(super) async fn bridge_begin(&self, resource: &ResourceKey, tags: &[String]) -> Option<Box<Begun>> {
        let names = self.bridged()?;
        match self.older_state(names, resource, tags).await {
            Ok(state) => Some(Box::new(Begun(older_keys(names, resource, tags).zip(state.cas).collect()))),
            Err(error) => {
                self.store_error(&error);
                None
            }
        }
    }

    /// Writes an invalidation in the older names: `urls` deleted (hard or soft, as asked), `tags` and, with
    /// `all`, the namespace bumped hard. One report row per write, kind `bridge-url`, `bridge-tag`, `bridge-all`.
    pub(super) async fn bridge_mirror(
        &self,
        urls: &[(&ResourceKey, &str)],
        tags: &[String],
        all: bool,
        mode: DeleteMode,
    ) -> Vec<TargetReport> {
        let Some(names) = self.bridged() else { return Vec::new() };
        let deletes = urls.iter().map(|(resource, url)| async move {
            let key = names.head_key(resource);
            let result = self.store().delete(&key, mode).await;
            self.report("bridge-url", url, &key, result.as_ref().map(|_| ()).map_err(|e| e.to_string()), result.ok())
        });
        let mut counters: Vec<(&str, String)> =
            tags.iter().map(|tag| (tag.as_str(), names.tag_generation_key(tag))).collect();
        if all {
            counters.push(("", names.all_generation_key()));
        }
        let bumps = counters.into_iter().map(|(name, key)| async move {
            let result = self.bump_hard(&key, Placement::Own).await;
            let kind = if name.is_empty() { "bridge-all" } else { "bridge-tag" };
            self.report(kind, name, &key, result.map(|_| ()).map_err(|e| e.to_string()), None)
        });
        let (mut rows, bumped) =
            futures_util::join!(futures_util::future::join_all(deletes), futures_util::future::join_all(bumps));
        rows.extend(bumped);
        rows
    }
}

impl Cache {
    /// Checks a lookup against the older release: a hit it invalidated becomes a miss (this release's head
    /// record deleted, then looked up again, once), and a fill notes the older head record it began under.
    pub(super) async fn bridge_lookup(&self, request: LookupRequest<'_>, lookup: Lookup) -> Lookup {
        let lookup = match lookup {
            Lookup::Hit(hit) if !self.bridge_holds(request.resource, &hit.meta).await => {
                self.bridge_forget(request.resource).await;
                match self.lookup_once(request).await {
                    Lookup::Hit(hit) if !self.bridge_holds(request.resource, &hit.meta).await => {
                        return Lookup::Pass { reason: "bridge".to_owned() };
                    }
                    again => again,
                }
            }
            other => other,
        };
        match lookup {
            Lookup::Miss(mut fill) => {
                let tags: Vec<String> = fill.live.tags.keys().cloned().collect();
                fill.bridge_begun = self.bridge_begin(request.resource, &tags).await;
                Lookup::Miss(fill)
            }
            other => other,
        }
    }
}

impl Fill {
    /// What a commit records for the older release (`None` without a bridge). Refuses the commit when an older
    /// item read as the fill began has changed since (an older invalidation or refill), or a counter first met
    /// now changed after the fill began.
    pub(super) async fn bridge_witness(&self, tags: &[String]) -> Result<Option<Vec<u64>>, CommitError> {
        let Some(names) = self.cache.bridged() else { return Ok(None) };
        let Some(begun) = &self.bridge_begun else { return Err(CommitError::Invalidated) };
        let state = self.cache.older_state(names, &self.resource, tags).await?;
        let skew = self.cache.config().clock_skew;
        let counters = std::iter::once(None).chain(state.counters.iter().map(Some));
        for ((key, cas), counter) in older_keys(names, &self.resource, tags).zip(&state.cas).zip(counters) {
            let unchanged = match begun.0.iter().find(|(begun_key, _)| *begun_key == key) {
                Some((_, before)) => before == cas,
                None => counter.and_then(Option::as_ref).is_none_or(|counter| counter.predates(self.started_ms, skew)),
            };
            if !unchanged {
                return Err(CommitError::Invalidated);
            }
        }
        Ok(Some(state.cas))
    }
}

/// The older items' keys in the order `older_state` reads them: head record, namespace counter, tag counters.
fn older_keys<'a>(
    names: BridgedNames<'a>,
    resource: &'a ResourceKey,
    tags: &'a [String],
) -> impl Iterator<Item = String> + 'a {
    [names.head_key(resource), names.all_generation_key()]
        .into_iter()
        .chain(tags.iter().map(move |tag| names.tag_generation_key(tag)))
}
