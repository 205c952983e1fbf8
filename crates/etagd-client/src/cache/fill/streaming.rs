//! What a streaming fill settles before its body arrives: the validator its answer carries (so the stored
//! entry gets the same one), and the progress report that keeps waiters elsewhere in the fleet waiting.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::Fill;
use crate::cache::{ValidatorMode, renew};
use crate::etag::EntityTag;
use crate::generation::random_value;

/// What a streaming fill chose or started before its body arrived.
#[derive(Debug, Default)]
pub(super) struct Streaming {
    /// The fill id and minted validator.
    pub(super) preset: Option<(u64, EntityTag)>,
    /// Reports the fill's progress to waiters in the fleet.
    pub(super) progress: Option<renew::Progress>,
}

impl Fill {
    /// The validator the stored entry will carry, chosen now, before the body arrives, so an answer can stream
    /// to the client while the fill stores it: the origin's own tag, or a minted timestamp tag (whose fill id
    /// the commit then uses). `None` under [`ValidatorMode::Content`] without an origin tag: that tag is
    /// the body's hash, known only once it is whole.
    pub fn validator_before_body(&mut self, origin: Option<&EntityTag>) -> Option<EntityTag> {
        if let Some(origin) = origin {
            return Some(origin.clone());
        }
        let streaming = self.streaming.get_or_insert_default();
        if let Some((_, etag)) = &streaming.preset {
            return Some(etag.clone());
        }
        match self.cache.config().validator {
            ValidatorMode::Timestamp => {
                let fill_id = random_value();
                let etag = EntityTag::mint_timestamp(self.cache.now_ms().saturating_mul(1000), fill_id);
                streaming.preset = Some((fill_id, etag.clone()));
                Some(etag)
            }
            ValidatorMode::Content => None,
        }
    }

    /// The validator the stored entry will carry, for a body already whole, so its answer can go out before
    /// the commit: as [`validator_before_body`](Self::validator_before_body), or under
    /// [`ValidatorMode::Content`] the body's hash, which the commit derives alike.
    pub fn validator_for_body(&mut self, origin: Option<&EntityTag>, body: &[u8]) -> EntityTag {
        self.validator_before_body(origin).unwrap_or_else(|| EntityTag::from_content(body))
    }

    /// Announces that this fill is streaming the origin's body, and returns the counter to add received bytes
    /// to. While the count grows, a marker beside the head record is kept alive (every third of a lease, with
    /// the lease renewal), and waiters on other replicas whose `fill_wait` ran out keep waiting for this fill
    /// instead of going to the origin (see [`crate::cache::Cache::lookup_waiting`]). Only a fill holding the lease reports.
    pub fn report_progress(&mut self) -> Option<Arc<AtomicU64>> {
        if !self.is_leader() {
            return None;
        }
        let streaming = self.streaming.get_or_insert_default();
        if streaming.progress.is_none() {
            streaming.progress = renew::Progress::start(&self.cache, &self.resource);
        }
        streaming.progress.as_ref().map(renew::Progress::bytes)
    }
}
