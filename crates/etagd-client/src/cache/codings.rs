//! Codings added to a stored entry on demand: a fill stores identity and its first coding; when a client first
//! wants another one (`encoding::CompressionPolicy::choose`), one caller in the fleet claims it
//! ([`Cache::claim_coding`]), encodes the stored identity body and adds the result ([`Cache::add_coding`]).
//!
//! The addition follows the commit protocol of a fill, so a reader never sees a coding without its body and
//! an invalidation is never undone:
//!
//! 1. the coding's body (one item, or chunks at the entry's chunk size), named by the entry's fill id and
//!    placed beside the head record, with what is left of the entry's lifetime;
//! 2. the entry again (head record or Vary variant) with the coding listed, conditional on the CAS the hit
//!    read. A refill, a soft or hard invalidation or another addition meanwhile changed that CAS: nothing
//!    becomes reachable and the body ages out. The entry keeps the generations it was filled under, so a
//!    counter changed meanwhile still invalidates it.
//!
//! The coding's validator is derived from the fill's (`EntityTag::for_coding`), so every replica names it
//! the same whoever made it.

use std::sync::Arc;

use bytes::Bytes;

use super::fill::{self, CommitError};
use super::{Cache, Hit, HitState, bump};
use crate::entry::{EntryMeta, HeadRecord};
use crate::store::{Expiry, Placement, SetCondition, SetOutcome};

/// How long a claim on making one coding lives. It is never released: a coding that did not shrink the body
/// (or whose maker died) is tried again by the fleet once per claim, not by every request meanwhile.
pub const CODING_CLAIM_TTL_S: u64 = 30;

impl Cache {
    /// Claims the making of `coding` for a hit's entry: `true` for one caller per fill and coding in the whole
    /// fleet (per [`CODING_CLAIM_TTL_S`]). Only a fresh hit of an entry that already varies by coding (it stores
    /// one) and lists every coding's length qualifies; a failing store claims nothing.
    pub async fn claim_coding(&self, hit: &Hit, coding: &str) -> bool {
        let meta = &hit.meta;
        let qualifies = hit.state == HitState::Fresh
            && !meta.codings.is_empty()
            && meta.coding_lens.len() == meta.codings.len()
            && !meta.codings.iter().any(|stored| stored == coding);
        if !qualifies {
            return false;
        }
        let key = self.inner.config.namespace.coding_claim_key(&hit.slot.entry_digest, meta.fill_id, coding);
        let expiry = Expiry::from_secs(CODING_CLAIM_TTL_S);
        // A failing store claims nothing: the coding is left to a later request.
        self.take_lock_for(&key, &hit.slot.head_key, expiry).await == Some(true)
    }

    /// Adds `encoded` (the hit's identity body in `coding`) to the hit's entry; the caller holds the claim. On
    /// error nothing new is reachable: [`CommitError::Raced`] when the entry changed since the hit read it,
    /// [`CommitError::NotAdmitted`] when the object would pass the admission limit.
    pub async fn add_coding(&self, hit: &Hit, coding: &str, encoded: Bytes) -> Result<Arc<EntryMeta>, CommitError> {
        let meta = &hit.meta;
        if let Some(limit) = self.admission_limit() {
            let size = usize::try_from(meta.body_len + meta.coding_lens.iter().sum::<u64>()).unwrap_or(usize::MAX)
                + encoded.len();
            if size > limit {
                return Err(CommitError::NotAdmitted { size, limit });
            }
        }
        let Some(expiry) = self.remaining_lifetime(meta) else { return Err(CommitError::Raced) };
        let slot = &hit.slot;
        let bodies = [(Some(coding), &encoded)];
        self.write_bodies(&slot.head_key, &slot.entry_digest, meta.fill_id, &bodies, meta.chunk_size, expiry).await?;

        let mut updated = (**meta).clone();
        updated.codings.push(coding.to_owned());
        updated.coding_lens.push(encoded.len() as u64);
        let condition = SetCondition::Cas(slot.meta_cas);
        let store = self.store();
        let written = match &slot.index {
            None => {
                let head = HeadRecord::Entry(Box::new(updated.clone())).encode();
                store.set(&slot.head_key, head, expiry, condition).await?
            }
            Some(_) => {
                let key = self.inner.config.namespace.variant_key(&slot.entry_digest);
                let near = Placement::Near(&slot.head_key);
                store.set_placed(&key, near, updated.encode(), expiry, condition).await?
            }
        };
        match written {
            SetOutcome::Stored => {
                bump(&self.inner.counters.codings_added);
                Ok(Arc::new(updated))
            }
            SetOutcome::NotStored => Err(CommitError::Raced),
        }
    }

    /// What is left of an entry's item lifetime (the one its fill wrote: freshness, its stale windows, then
    /// `keep`), so an addition neither outlives the entry's bodies nor cuts the entry short. `None` when it is
    /// used up.
    fn remaining_lifetime(&self, meta: &EntryMeta) -> Option<Expiry> {
        let stale = meta.stale_while_revalidate_s.max(meta.stale_if_error_s);
        let keep_s = self.inner.config.keep.as_secs();
        let Some(lifetime_s) = fill::lifetime_s(meta.fresh_for_s, meta.initial_age_s, stale, keep_s) else {
            return Some(Expiry::Never);
        };
        let elapsed_s = self.now_ms().saturating_sub(meta.stored_at_ms) / 1000;
        lifetime_s.checked_sub(elapsed_s).filter(|left| *left > 0).map(Expiry::from_secs)
    }
}
