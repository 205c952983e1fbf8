//! What a commit writes: the generation values the entry records (creating counters first met), the entry's
//! meta, its bodies and, last, the head record or variant entry that makes it reachable. `Fill::commit` and
//! `Fill::commit_revalidated` call these and own the bookkeeping around them (counters, release, pass marks).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::{CommitError, Fill, FillResponse};
use crate::cache::ValidatorMode;
use crate::cacheability::Freshness;
use crate::entry::{EntryMeta, Generations, HeadRecord, VaryIndex};
use crate::etag::EntityTag;
use crate::generation::{Generation, random_value};
use crate::key::is_prefix_tag;
use crate::store::{Expiry, GetOutcome, GetRequest, Placement, SetCondition, SetOutcome};

impl Fill {
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

    /// Writes a response in the commit order (module docs): bodies, variant, head record.
    pub(super) async fn write(&mut self, response: FillResponse) -> Result<Arc<EntryMeta>, CommitError> {
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
                ValidatorMode::Timestamp => EntityTag::mint_timestamp(now_ms.saturating_mul(1000), fill_id),
                ValidatorMode::Content => EntityTag::from_content(&response.body),
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

    /// Writes a revalidated entry: its bodies' lifetimes extended, then the entry itself.
    pub(super) async fn write_revalidated(
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
pub(crate) fn lifetime_s(fresh_for_s: u64, initial_age_s: u64, stale_s: u32, keep_s: u64) -> Option<u64> {
    (fresh_for_s != u64::MAX)
        .then(|| fresh_for_s.saturating_sub(initial_age_s).saturating_add(u64::from(stale_s)).saturating_add(keep_s))
}
