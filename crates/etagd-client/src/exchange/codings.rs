//! Codings made on first demand. A fill makes only its first coding (`CompressionPolicy::at_fill`); when a
//! fresh hit's client would take a configured coding the entry does not store yet, it is answered at once
//! with the best stored representation, and a task makes the wanted coding from the stored identity body and
//! adds it to the entry (`cache/codings.rs`): one caller in the fleet per fill and coding, so each coding is
//! still made once per fill, wherever its first client arrived. Later clients get it with its own validator.

use std::collections::HashMap;
use std::sync::Mutex;

use super::Exchange;
use crate::cache::{CODING_CLAIM_TTL_S, Hit};
use crate::encoding::Coding;

/// Fills and codings this process tried to make lately, so that the requests arriving while one is being
/// made (or after a claim lost to another replica, or a coding that did not shrink the body) do not each
/// ask the store for the claim. Forgotten after the claim's lifetime, when the fleet may try again.
#[derive(Debug, Default)]
pub(super) struct Recent {
    tried: Mutex<HashMap<(u64, Coding), u64>>,
}

/// Entries past which expired ones are swept out: the table only holds codings being made or just tried.
const SWEEP_AT: usize = 1024;

impl Recent {
    /// Whether this process should try making `coding` of fill `fill_id` now; if so it is remembered as tried.
    fn first_try(&self, fill_id: u64, coding: Coding, now_ms: u64) -> bool {
        let mut tried = self.tried.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if tried.get(&(fill_id, coding)).is_some_and(|until| *until > now_ms) {
            return false;
        }
        if tried.len() >= SWEEP_AT {
            tried.retain(|_, until| *until > now_ms);
        }
        if tried.len() >= SWEEP_AT {
            // Every one is live: a flood of distinct entries; the oldest claims still hold fleet-wide.
            tried.clear();
        }
        tried.insert((fill_id, coding), now_ms.saturating_add(CODING_CLAIM_TTL_S * 1000));
        true
    }
}

impl Exchange {
    /// Starts making `coding` (`CompressionPolicy::choose`'s wanted one) of `hit`'s entry when its body is not
    /// too large to compress; the request itself is answered from what is stored. `Cache::claim_coding`
    /// checks the rest (a fresh entry that already varies by coding).
    pub(super) fn make_wanted_coding(&self, hit: &Hit, coding: Coding) {
        let policy = &self.config().compression;
        let meta = &hit.meta;
        if policy.identity_only(usize::try_from(meta.body_len).unwrap_or(usize::MAX)) {
            return;
        }
        if !self.inner.on_demand.first_try(meta.fill_id, coding, self.cache().now_ms()) {
            return;
        }
        tokio::spawn(self.clone().make_coding(hit.clone(), coding));
    }

    async fn make_coding(self, hit: Hit, coding: Coding) {
        let cache = self.cache();
        if !cache.claim_coding(&hit, coding.as_str()).await {
            return;
        }
        let Ok(Some(identity)) = cache.whole_body(&hit, None).await else { return };
        let encoded = self.compress(&identity, move |policy, body| policy.encode_one(coding, body)).await;
        // A coding that does not shrink the body is not stored; the claim, left to expire, keeps it untried.
        let Some(encoded) = encoded else { return };
        if let Err(error) = cache.add_coding(&hit, coding.as_str(), encoded).await {
            tracing::debug!(%error, coding = coding.as_str(), "a coding made on demand was not stored");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_and_coding_is_tried_once_per_claim_lifetime() {
        let recent = Recent::default();
        assert!(recent.first_try(1, Coding::Br, 1_000));
        assert!(!recent.first_try(1, Coding::Br, 2_000), "being made");
        assert!(recent.first_try(1, Coding::Zstd, 2_000), "another coding");
        assert!(recent.first_try(2, Coding::Br, 2_000), "another fill");
        assert!(recent.first_try(1, Coding::Br, 1_000 + CODING_CLAIM_TTL_S * 1000), "the claim has expired");
        for fill in 0..(SWEEP_AT as u64 * 2) {
            assert!(recent.first_try(100 + fill, Coding::Br, 5_000));
        }
        assert!(recent.tried.lock().unwrap().len() <= SWEEP_AT, "bounded");
    }
}
