//! Generation counters: how one write invalidates any number of entries.
//!
//! Each entry records the generation values it was filled under (`entry::Generations`): the namespace's
//! (`g:all`), its URL's (the Vary index's `url_generation`) and one per tag. Invalidating a tag or the namespace
//! writes a new random value to one item; every entry that recorded the old value stops matching. No key scans,
//! no tag indexes to rot, and never `flush_all`.
//!
//! Three rules keep this safe:
//!
//! - **Values never repeat.** A new value is 64 random bits, never an increment, so an evicted and re-created
//!   counter cannot bring old entries back to life (the ABA trap of counters that restart at 0).
//! - **A missing counter means "everything under it is gone".** A reader that cannot read a counter (evicted,
//!   or its server is down) treats the entry as a miss. Eviction fails towards a miss.
//! - **A fill commits only under the generations it started with.** The engine reads the counters before it
//!   asks the origin and stores them in the entry, so an invalidation that lands while the origin is rendering
//!   makes the late write unreadable. Counters first met after the origin answered (tags the origin named) are
//!   checked by time instead: if one changed after the fill began (less the allowed clock skew), the fill is not
//!   stored.
//!
//! Wire form (ASCII, so any language can read it): `<value hex>:<changed ms>` or, during a soft invalidation,
//! `<value hex>:<changed ms>:<previous value hex>:<grace until ms>`. `changed ms` is 0 for a counter created by a
//! fill rather than by an invalidation.

use std::time::Duration;

use bytes::Bytes;

/// A generation counter's value and history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    /// The live value.
    pub value: u64,
    /// Unix ms of the invalidation that set it; 0 when created by a fill.
    pub changed_ms: u64,
    /// During a soft invalidation: the previous value, still servable (stale) until the given unix ms.
    pub previous: Option<(u64, u64)>,
}

/// How an entry's recorded value compares with the live counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The entry is current.
    Current,
    /// The entry was soft-invalidated and may be served stale while one caller refreshes it.
    Grace,
    /// The entry was invalidated.
    Changed,
}

/// A random, non-zero value for a new generation or fill id.
pub fn random_value() -> u64 {
    loop {
        let value: u64 = rand::random();
        if value != 0 {
            return value;
        }
    }
}

impl Generation {
    /// A counter created by a fill that found none: a fresh value, never invalidated.
    pub fn created() -> Self {
        Self { value: random_value(), changed_ms: 0, previous: None }
    }

    /// The counter after an invalidation at `now_ms`. With a grace period, entries stored under the current
    /// value stay servable (stale) until it ends.
    pub fn invalidated(current: Option<&Self>, now_ms: u64, grace: Option<Duration>) -> Self {
        let previous = match (current, grace) {
            (Some(current), Some(grace)) if !grace.is_zero() => {
                Some((current.value, now_ms.saturating_add(grace.as_millis() as u64)))
            }
            _ => None,
        };
        Self { value: random_value(), changed_ms: now_ms, previous }
    }

    /// Compares the value an entry recorded with this live counter.
    pub fn check(&self, recorded: u64, now_ms: u64) -> Check {
        if recorded == self.value {
            return Check::Current;
        }
        match self.previous {
            Some((previous, until_ms)) if previous == recorded && now_ms < until_ms => Check::Grace,
            _ => Check::Changed,
        }
    }

    /// Whether a fill that began at `fill_start_ms` and first met this counter after the origin answered may
    /// still be stored: the counter must have last changed before the fill began, less the clock skew allowed
    /// between replicas.
    pub fn predates(&self, fill_start_ms: u64, skew: Duration) -> bool {
        // A counter no invalidation ever set cannot have invalidated anything.
        self.changed_ms == 0 || self.changed_ms.saturating_add(skew.as_millis() as u64) < fill_start_ms
    }

    /// The stored form.
    pub fn encode(&self) -> Bytes {
        let text = match self.previous {
            None => format!("{:x}:{}", self.value, self.changed_ms),
            Some((previous, until)) => format!("{:x}:{}:{:x}:{}", self.value, self.changed_ms, previous, until),
        };
        Bytes::from(text)
    }

    /// Reads the stored form; `None` for anything malformed (treated like a missing counter: a miss).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(':');
        let value = u64::from_str_radix(parts.next()?, 16).ok()?;
        let changed_ms = parts.next()?.parse().ok()?;
        let previous = match (parts.next(), parts.next()) {
            (None, None) => None,
            (Some(previous), Some(until)) => Some((u64::from_str_radix(previous, 16).ok()?, until.parse().ok()?)),
            _ => return None,
        };
        if parts.next().is_some() || value == 0 {
            return None;
        }
        Some(Self { value, changed_ms, previous })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let plain = Generation { value: 0xabc, changed_ms: 5, previous: None };
        let soft = Generation { value: 1, changed_ms: 2, previous: Some((3, 4)) };
        for generation in [plain, soft] {
            assert_eq!(Generation::decode(&generation.encode()), Some(generation));
        }
        for bad in ["", "x", "0:0", "1", "1:2:3", "1:2:3:4:5", "g:1", "1:-1", "\u{ff}"] {
            assert_eq!(Generation::decode(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn checks() {
        let old = Generation::created();
        let hard = Generation::invalidated(Some(&old), 1_000, None);
        assert_eq!(old.check(old.value, 0), Check::Current);
        assert_eq!(hard.check(old.value, 1_000), Check::Changed);
        let soft = Generation::invalidated(Some(&old), 1_000, Some(Duration::from_secs(10)));
        assert_eq!(soft.check(old.value, 10_999), Check::Grace);
        assert_eq!(soft.check(old.value, 11_000), Check::Changed);
        assert_eq!(soft.check(soft.value, 11_000), Check::Current);
        assert_ne!(hard.value, old.value);
    }

    #[test]
    fn late_counters_are_checked_by_time() {
        let skew = Duration::from_secs(1);
        assert!(Generation::created().predates(1, skew));
        let changed = Generation { value: 1, changed_ms: 10_000, previous: None };
        assert!(changed.predates(11_001, skew));
        assert!(!changed.predates(11_000, skew));
        assert!(!changed.predates(5_000, skew));
    }
}
