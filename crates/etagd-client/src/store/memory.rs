//! The embedded store: the [`Store`] verbs in process, bounded by bytes, with memcached 1.6's meta-protocol
//! semantics for the verbs etagd uses. It serves single-replica deployments and tests that need no server.
//!
//! Semantics (memcached 1.6 behaviour unless noted):
//! - Every write, and every soft delete, gives the item a new CAS, unique across the store.
//! - A leased read of a missing key creates a zero-byte placeholder living `lease_secs` and answers
//!   `Miss { Won { cas } }`; while the placeholder lives, reads answer `Miss { Busy }`. A write with
//!   `Cas(placeholder cas)` (or `Always`) replaces it; `Add` fails while it exists, as in memcached.
//! - A soft delete keeps the value, flags it stale, sets its expiry to the grace period (extending or
//!   shortening it, as `md I T` does) and gives it a new CAS. The first leased read of a stale item wins the
//!   refresh (`Won { cas }`, CAS unchanged, as memcached); later ones see `Busy`. Deliberate difference from
//!   raw memcached, matched by the Memcached store: a plain read never takes the refresh token; it sees
//!   `stale: true` and `Busy` once someone holds the token.
//! - A touch sets an item's expiry (placeholder or not) and keeps its CAS and value, as `mg <key> T<ttl>`.
//! - Empty values are refused: zero-byte items are placeholders.
//! - Keys follow memcached's rules (1-250 printable ASCII bytes), so code that works here works there.
//! - Time is `tokio::time::Instant`, so tests can drive expiry with tokio's paused clock.
//!
//! Why sharded `Mutex<HashMap>` with CLOCK eviction rather than `moka`: every verb here is a read-modify-write
//! under a condition (add, CAS, placeholder creation, token hand-out), which a plain mutex makes trivially
//! atomic; and the byte bound must hold after every write, whereas moka evicts asynchronously (its weighted
//! size may run over the bound until pending maintenance runs) and keeps its own clock, which tokio's paused
//! time cannot drive. CLOCK (one reference bit per item, a sweeping hand) approximates LRU with O(1) work per
//! access and no list relinking on reads.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::memcached::check_key;
use super::{
    DeleteMode, Expiry, GetOutcome, GetRequest, Item, Lease, Placement, ServerHealth, ServerStats, SetCondition,
    SetOutcome, Store, StoreError,
};

/// The name the embedded store reports as its server.
const EMBEDDED: &str = "embedded";
/// Bytes charged per item on top of key and value: the bookkeeping (map entry, slot, item header), about
/// what memcached charges per item too.
const ITEM_OVERHEAD: u64 = 64;
/// The default (and largest) item limit, memcached's default `-I`.
const DEFAULT_MAX_ITEM_BYTES: usize = 1024 * 1024;
/// At most this many shards, each guarded by its own lock.
const MAX_SHARDS: u64 = 16;
/// Shards are only split off while each keeps at least this many bytes, so that an item of the default
/// limit stays small against its shard.
const MIN_SHARD_BYTES: u64 = 4 * 1024 * 1024;

/// The embedded [`Store`]: in process, bounded by bytes, same semantics as the Memcached store.
#[derive(Debug)]
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    shard_limit: u64,
    max_bytes: u64,
    max_item_bytes: usize,
    next_cas: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl MemoryStore {
    /// A store holding at most `max_bytes` (keys, values and a fixed per-item overhead). The bytes are split
    /// across up to 16 shards of at least 4 MiB; one item may use at most half a shard, and at most 1 MiB
    /// (so a store under 2 MiB accepts only smaller items; see [`Store::max_item_bytes`]).
    pub fn new(max_bytes: u64) -> MemoryStore {
        let shard_count = (max_bytes / MIN_SHARD_BYTES).clamp(1, MAX_SHARDS);
        let shard_limit = max_bytes / shard_count;
        let item_cap = shard_limit / 2;
        let max_item_bytes = usize::try_from(item_cap).unwrap_or(usize::MAX).min(DEFAULT_MAX_ITEM_BYTES);
        MemoryStore {
            shards: (0..shard_count).map(|_| Mutex::new(Shard::default())).collect(),
            shard_limit,
            max_bytes,
            max_item_bytes,
            next_cas: AtomicU64::new(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// Lowers the largest value accepted for one item (it cannot be raised above what [`MemoryStore::new`]
    /// allows).
    #[must_use]
    pub fn with_max_item_bytes(mut self, max_item_bytes: usize) -> MemoryStore {
        self.max_item_bytes = self.max_item_bytes.min(max_item_bytes);
        self
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        let count = self.shards.len() as u64;
        let index = xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % count;
        &self.shards[usize::try_from(index).expect("a shard index is below the shard count")]
    }

    fn new_cas(&self) -> u64 {
        self.next_cas.fetch_add(1, Ordering::Relaxed)
    }

    fn bad_key(detail: String) -> StoreError {
        StoreError::Server { server: EMBEDDED.to_owned(), detail }
    }

    fn get_one(&self, request: &GetRequest, now: Instant) -> Result<GetOutcome, StoreError> {
        check_key(&request.key).map_err(Self::bad_key)?;
        let mut shard = self.shard(&request.key).lock();
        let outcome = match shard.live(&request.key, now) {
            None => match request.lease_secs {
                None => GetOutcome::Miss { lease: Lease::None },
                Some(secs) => {
                    // memcached `mg N<secs>`: vivify a zero-byte placeholder and hand this caller the token.
                    let cas = self.new_cas();
                    let placeholder = Stored {
                        value: Bytes::new(),
                        cas,
                        expires: Some(now + Duration::from_secs(u64::from(secs.max(1)))),
                        stale: false,
                        token_sent: true,
                    };
                    let evicted = shard.insert(&request.key, placeholder, self.shard_limit, now);
                    self.evictions.fetch_add(evicted, Ordering::Relaxed);
                    GetOutcome::Miss { lease: Lease::Won { cas } }
                }
            },
            Some(slot) => {
                let leased = request.lease_secs.is_some();
                let entry = shard.slot_mut(slot);
                entry.referenced = true;
                let item = &mut entry.item;
                if item.value.is_empty() {
                    // A placeholder: someone holds the fill lease. Its token is free again only if the
                    // placeholder itself was soft-deleted; then the first leased reader takes it, as memcached.
                    let lease = if item.token_sent {
                        Lease::Busy
                    } else if leased {
                        item.token_sent = true;
                        Lease::Won { cas: item.cas }
                    } else {
                        Lease::None
                    };
                    GetOutcome::Miss { lease }
                } else {
                    let lease = if !item.stale {
                        Lease::None
                    } else if item.token_sent {
                        Lease::Busy
                    } else if leased {
                        item.token_sent = true;
                        Lease::Won { cas: item.cas }
                    } else {
                        Lease::None
                    };
                    let value = if request.presence_only { Bytes::new() } else { item.value.clone() };
                    GetOutcome::Hit(Item { value, cas: item.cas, stale: item.stale, lease })
                }
            }
        };
        drop(shard);
        let counter = if matches!(outcome, GetOutcome::Hit(_)) { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(outcome)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get_many(&self, requests: &[GetRequest]) -> Vec<Result<GetOutcome, StoreError>> {
        let now = Instant::now();
        requests.iter().map(|request| self.get_one(request, now)).collect()
    }

    // One process, one node: placement has nothing to choose.
    async fn set_placed(
        &self,
        key: &str,
        _placement: Placement<'_>,
        value: Bytes,
        expiry: Expiry,
        condition: SetCondition,
    ) -> Result<SetOutcome, StoreError> {
        super::check_size(key, &value, self.max_item_bytes)?;
        check_key(key).map_err(Self::bad_key)?;
        if value.is_empty() {
            return Err(Self::bad_key(format!(
                "refusing to store an empty value under {key}: zero-byte items are lease placeholders"
            )));
        }
        let now = Instant::now();
        let mut shard = self.shard(key).lock();
        let current = shard.live(key, now).map(|slot| shard.slot_mut(slot).item.cas);
        let allowed = match (condition, current) {
            (SetCondition::Always, _) => true,
            (SetCondition::Add, existing) => existing.is_none(),
            (SetCondition::Cas(expected), Some(actual)) => expected == actual,
            (SetCondition::Cas(_), None) => false,
        };
        if !allowed {
            return Ok(SetOutcome::NotStored);
        }
        let expires = match expiry {
            Expiry::Never => None,
            Expiry::Secs(secs) => Some(now + Duration::from_secs(u64::from(secs.max(1)))),
        };
        let item = Stored { value, cas: self.new_cas(), expires, stale: false, token_sent: false };
        let evicted = shard.insert(key, item, self.shard_limit, now);
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
        Ok(SetOutcome::Stored)
    }

    async fn delete_placed(&self, key: &str, _placement: Placement<'_>, mode: DeleteMode) -> Result<bool, StoreError> {
        check_key(key).map_err(Self::bad_key)?;
        let now = Instant::now();
        let mut shard = self.shard(key).lock();
        let Some(slot) = shard.live(key, now) else {
            return Ok(false);
        };
        match mode {
            DeleteMode::Hard => shard.remove_at(slot),
            DeleteMode::IfCas { cas } => {
                if shard.slot_mut(slot).item.cas != cas {
                    return Ok(false);
                }
                shard.remove_at(slot);
            }
            DeleteMode::Stale { grace } => {
                let cas = self.new_cas();
                let item = &mut shard.slot_mut(slot).item;
                item.stale = true;
                item.token_sent = false;
                item.cas = cas;
                // Whole seconds, rounded up, at least one: what the Memcached store sends as `T<grace>`.
                let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
                item.expires = Some(now + Duration::from_secs(secs.max(1)));
            }
        }
        Ok(true)
    }

    async fn touch_placed(
        &self,
        key: &str,
        _placement: Placement<'_>,
        expiry: Expiry,
    ) -> Result<Option<u64>, StoreError> {
        check_key(key).map_err(Self::bad_key)?;
        let now = Instant::now();
        let mut shard = self.shard(key).lock();
        let Some(slot) = shard.live(key, now) else {
            return Ok(None);
        };
        let item = &mut shard.slot_mut(slot).item;
        item.expires = match expiry {
            Expiry::Never => None,
            Expiry::Secs(secs) => Some(now + Duration::from_secs(u64::from(secs.max(1)))),
        };
        Ok(Some(item.cas))
    }

    async fn stats(&self) -> Vec<ServerStats> {
        let (mut items, mut bytes) = (0u64, 0u64);
        for shard in self.shards.iter() {
            let shard = shard.lock();
            items += shard.index.len() as u64;
            bytes += shard.bytes;
        }
        let hits = self.hits.load(Ordering::Relaxed);
        let misses = self.misses.load(Ordering::Relaxed);
        vec![ServerStats {
            server: EMBEDDED.to_owned(),
            reachable: true,
            error: None,
            version: Some(concat!("etagd-client ", env!("CARGO_PKG_VERSION")).to_owned()),
            items: Some(items),
            bytes: Some(bytes),
            limit_bytes: Some(self.max_bytes),
            get_hits: Some(hits),
            get_misses: Some(misses),
            cmd_get: Some(hits + misses),
            evictions: Some(self.evictions.load(Ordering::Relaxed)),
        }]
    }

    fn health(&self) -> Vec<ServerHealth> {
        vec![ServerHealth { server: EMBEDDED.to_owned(), up: true, last_error: None }]
    }

    fn server_of(&self, _key: &str) -> String {
        EMBEDDED.to_owned()
    }

    fn max_item_bytes(&self) -> usize {
        self.max_item_bytes
    }

    fn memory_bytes(&self) -> Option<u64> {
        Some(self.max_bytes)
    }

    fn is_remote(&self) -> bool {
        false
    }
}

/// One stored item.
#[derive(Debug)]
struct Stored {
    /// Empty for a lease placeholder (real values are never empty).
    value: Bytes,
    cas: u64,
    expires: Option<Instant>,
    stale: bool,
    /// The fill or refresh token has been handed out (memcached's `ITEM_TOKEN_SENT`).
    token_sent: bool,
}

impl Stored {
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| now >= at)
    }
}

/// One occupied CLOCK slot.
#[derive(Debug)]
struct Slot {
    key: Arc<str>,
    item: Stored,
    /// Set on every read hit, cleared by the sweeping hand: an item is evicted when the hand finds it clear.
    referenced: bool,
}

impl Slot {
    fn weight(&self) -> u64 {
        weight(&self.key, &self.item.value)
    }
}

fn weight(key: &str, value: &[u8]) -> u64 {
    key.len() as u64 + value.len() as u64 + ITEM_OVERHEAD
}

/// One shard: a key index over a slab of CLOCK slots.
#[derive(Debug, Default)]
struct Shard {
    index: HashMap<Arc<str>, usize>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    hand: usize,
    bytes: u64,
}

impl Shard {
    /// The slot of a live item, reclaiming it first if it has expired.
    fn live(&mut self, key: &str, now: Instant) -> Option<usize> {
        let slot = *self.index.get(key)?;
        if self.slot_mut(slot).item.expired(now) {
            self.remove_at(slot);
            return None;
        }
        Some(slot)
    }

    fn slot_mut(&mut self, slot: usize) -> &mut Slot {
        self.slots[slot].as_mut().expect("indexed slots are occupied")
    }

    fn remove_at(&mut self, slot: usize) {
        if let Some(removed) = self.slots[slot].take() {
            self.bytes -= removed.weight();
            self.index.remove(&removed.key);
            self.free.push(slot);
        }
    }

    /// Stores `item` under `key`, replacing any previous item, after evicting until it fits under `limit`.
    /// Returns how many live items were evicted. Values are at most half the limit, so an item only fails
    /// to fit in a store of a few hundred bytes; it is then dropped, as a cache may drop anything.
    fn insert(&mut self, key: &str, item: Stored, limit: u64, now: Instant) -> u64 {
        if let Some(&previous) = self.index.get(key) {
            self.remove_at(previous);
        }
        let need = weight(key, &item.value);
        if need > limit {
            return 0;
        }
        let evicted = self.make_room(need, limit, now);
        let key: Arc<str> = Arc::from(key);
        let slot = Slot { key: Arc::clone(&key), item, referenced: false };
        let position = match self.free.pop() {
            Some(position) => {
                self.slots[position] = Some(slot);
                position
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.index.insert(key, position);
        self.bytes += need;
        evicted
    }

    /// Sweeps the CLOCK hand until `need` more bytes fit: expired items go first as the hand meets them,
    /// referenced items get a second chance, others are evicted. Terminates: each pass clears the bits it
    /// passes, so the second pass over any item removes it.
    fn make_room(&mut self, need: u64, limit: u64, now: Instant) -> u64 {
        let mut evicted = 0;
        while self.bytes + need > limit && !self.index.is_empty() {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let position = self.hand;
            self.hand += 1;
            let Some(slot) = self.slots[position].as_mut() else {
                continue;
            };
            if slot.item.expired(now) {
                self.remove_at(position);
            } else if slot.referenced {
                slot.referenced = false;
            } else {
                self.remove_at(position);
                evicted += 1;
            }
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_byte_bound() {
        fn check(max_bytes: u64, shards: usize, max_item_bytes: usize) {
            let store = MemoryStore::new(max_bytes);
            assert_eq!((store.shards.len(), store.max_item_bytes), (shards, max_item_bytes), "{max_bytes}");
        }
        check(0, 1, 0);
        check(64 * 1024, 1, 32 * 1024);
        check(4 << 20, 1, 1 << 20);
        check(64 << 20, 16, 1 << 20);
        check(1 << 30, 16, 1 << 20);
        assert_eq!(MemoryStore::new(64 << 20).with_max_item_bytes(1000).max_item_bytes, 1000);
        assert_eq!(MemoryStore::new(64 * 1024).with_max_item_bytes(1 << 30).max_item_bytes, 32 * 1024);
    }

    #[test]
    fn clock_spares_recently_read_items() {
        let now = Instant::now();
        let mut shard = Shard::default();
        let item = |value: &'static [u8]| Stored {
            value: Bytes::from_static(value),
            cas: 1,
            expires: None,
            stale: false,
            token_sent: false,
        };
        let limit = 3 * weight("a", b"x");
        for key in ["a", "b", "c"] {
            assert_eq!(shard.insert(key, item(b"x"), limit, now), 0);
        }
        let read = shard.live("a", now).expect("a is live");
        shard.slot_mut(read).referenced = true;
        assert_eq!(shard.insert("d", item(b"x"), limit, now), 1);
        assert!(shard.live("a", now).is_some(), "the read item survives");
        assert!(shard.live("b", now).is_none(), "the oldest unread item goes");
        assert_eq!(shard.bytes, limit);
    }

    #[test]
    fn expired_items_are_reclaimed_not_counted_as_evictions() {
        let now = Instant::now();
        let mut shard = Shard::default();
        let limit = 2 * weight("a", b"x");
        let expiring = Stored {
            value: Bytes::from_static(b"x"),
            cas: 1,
            expires: Some(now + Duration::from_secs(1)),
            stale: false,
            token_sent: false,
        };
        shard.insert("a", expiring, limit, now);
        let later = now + Duration::from_secs(2);
        let fresh =
            || Stored { value: Bytes::from_static(b"x"), cas: 2, expires: None, stale: false, token_sent: false };
        shard.insert("b", fresh(), limit, later);
        assert_eq!(shard.insert("c", fresh(), limit, later), 0);
        assert!(shard.live("a", later).is_none());
        assert_eq!(shard.index.len(), 2);
    }
}
