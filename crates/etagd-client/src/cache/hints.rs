//! Read hints: what this process remembers about a resource to batch its reads (its tags and Vary names, so
//! their counters and its variant join the first round). Never a validator: a hint only says which keys to ask.
//!
//! Direct-mapped and fixed-size, like the decode memo: one lock-free-in-practice slot per digest, bounded
//! memory and no eviction bookkeeping on the hot path (the general-purpose cache this replaced did frequency
//! accounting and housekeeping on every read, twice per lookup). Two resources sharing a slot take turns; the
//! one forgotten costs one extra round trip on its next lookup, never a wrong answer.

use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use crate::key::Digest;

/// The largest table: a million slots (about 40 MB), whatever the configured capacity.
const MAX_SLOTS: usize = 1 << 20;

/// What a resource had the last time it was looked up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Hint {
    pub(super) vary: Vec<String>,
    pub(super) tags: Vec<String>,
    /// The counters the resource's first round reads, worked out from the tags above by its first lookup
    /// with this hint and reused by the next ones.
    pub(super) round: OnceLock<Round>,
}

/// The tags whose counters a first round reads, and those counters' keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Round {
    pub(super) tags: Vec<String>,
    pub(super) keys: Vec<String>,
}

type Slot = Option<(Digest, Arc<Hint>)>;

/// The table of hints.
pub(super) struct Hints {
    slots: Box<[Mutex<Slot>]>,
}

impl Hints {
    /// A table with room for about `capacity` resources (rounded up to a power of two).
    pub(super) fn new(capacity: u64) -> Self {
        let slots = usize::try_from(capacity).unwrap_or(MAX_SLOTS).clamp(1, MAX_SLOTS).next_power_of_two();
        Self { slots: (0..slots).map(|_| Mutex::new(None)).collect() }
    }

    fn slot(&self, digest: &Digest) -> &Mutex<Slot> {
        // A digest is already a hash: its low bits pick the slot.
        &self.slots[(digest.0 as usize) & (self.slots.len() - 1)]
    }

    /// The hint for `digest`, if this process has one.
    pub(super) fn get(&self, digest: &Digest) -> Option<Arc<Hint>> {
        match &*self.slot(digest).lock() {
            Some((held, hint)) if held == digest => Some(hint.clone()),
            _ => None,
        }
    }

    /// Records what a lookup found, unless `known` (the hint the lookup started with) already says it.
    pub(super) fn remember(&self, digest: Digest, known: Option<&Hint>, vary: &[String], tags: &[String]) {
        if known.is_some_and(|hint| hint.vary == vary && hint.tags == tags) {
            return;
        }
        let hint = Arc::new(Hint { vary: vary.to_vec(), tags: tags.to_vec(), round: OnceLock::new() });
        *self.slot(&digest).lock() = Some((digest, hint));
    }
}

impl std::fmt::Debug for Hints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hints").field("slots", &self.slots.len()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_is_kept_per_digest_and_a_colliding_one_replaces_it() {
        let hints = Hints::new(4);
        let (a, b, c) = (Digest(1), Digest(2), Digest(1 + 4));
        let tags = ["t".to_owned()];
        hints.remember(a, None, &[], &tags);
        hints.remember(b, None, &["accept".to_owned()], &[]);
        assert_eq!(hints.get(&a).unwrap().tags, tags);
        assert_eq!(hints.get(&b).unwrap().vary, ["accept"]);
        // Same slot as `a`: `a` is forgotten, never answered with `c`'s hint.
        hints.remember(c, None, &[], &[]);
        assert!(hints.get(&a).is_none());
        assert_eq!(*hints.get(&c).unwrap(), Hint::default());
    }

    #[test]
    fn an_unchanged_hint_is_not_written_again() {
        let hints = Hints::new(8);
        let digest = Digest(3);
        hints.remember(digest, None, &[], &["t".to_owned()]);
        let first = hints.get(&digest).unwrap();
        hints.remember(digest, Some(&first), &[], &["t".to_owned()]);
        assert!(Arc::ptr_eq(&first, &hints.get(&digest).unwrap()), "the same hint is kept");
        hints.remember(digest, Some(&first), &[], &["u".to_owned()]);
        assert_eq!(hints.get(&digest).unwrap().tags, ["u"]);
    }
}
