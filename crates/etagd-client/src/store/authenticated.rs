//! Optional entry authentication (`--entry-key`): anyone who can write to Memcached cannot forge what the fleet
//! serves.
//!
//! [`AuthenticatedStore`] wraps any [`Store`]. Every value it writes is prefixed with a keyed BLAKE3 MAC
//! (16 bytes) over the item's key name and the value, so an item cannot be forged, altered, or moved to another
//! key (a body under another entry's name, a counter under another tag's). A value that fails the check reads
//! as a miss, and is counted. It covers every item etagd writes through the store, whatever its kind: head
//! records and variant entries (with the counter values they were filled under), bodies, the namespace and tag
//! counters, fences and locks, so a forged counter cannot make an invalidated entry current either.
//!
//! What it cannot stop: a writer replaying bytes the fleet itself wrote under the same key earlier (an old
//! counter value put back revives the entries filled under it), deleting items, or flushing the servers. Those
//! need Memcached's own access control (SASL, network policy); the MAC makes Memcached write access no longer
//! mean "serve any bytes to every client".
//!
//! The wrapper sits under the engine, so the one rule lives in one place: nothing above it knows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};

use super::{
    DeleteMode, Expiry, GetOutcome, GetRequest, Lease, Placement, ServerHealth, ServerStats, SetCondition, SetOutcome,
    Store, StoreError,
};

/// Bytes of MAC in front of every value.
pub const MAC_LEN: usize = 16;

/// The shortest secret accepted: a fleet secret shorter than this is guessable offline from one stored item.
pub const MIN_SECRET_LEN: usize = 16;

/// Why a secret cannot key entries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryKeyError {
    /// Fewer than [`MIN_SECRET_LEN`] bytes.
    #[error(
        "the entry key is {0} bytes; use at least 16 random bytes, the same on every replica (e.g. `openssl rand -hex 32`)"
    )]
    TooShort(usize),
}

/// A fleet secret turned into the MAC key.
#[derive(Clone)]
pub struct EntryKey([u8; 32]);

impl EntryKey {
    /// Derives the key from a secret every replica shares.
    pub fn new(secret: &str) -> Result<Self, EntryKeyError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(EntryKeyError::TooShort(secret.len()));
        }
        Ok(Self(blake3::derive_key("etagd 2026 entry authentication v1", secret.as_bytes())))
    }

    fn mac(&self, key: &str, value: &[u8]) -> [u8; MAC_LEN] {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(&(key.len() as u64).to_le_bytes());
        hasher.update(key.as_bytes());
        hasher.update(value);
        let mut mac = [0; MAC_LEN];
        mac.copy_from_slice(&hasher.finalize().as_bytes()[..MAC_LEN]);
        mac
    }
}

impl std::fmt::Debug for EntryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EntryKey(..)")
    }
}

/// A store whose values carry a keyed MAC (see the module docs).
pub struct AuthenticatedStore {
    inner: Arc<dyn Store>,
    key: EntryKey,
    rejected: AtomicU64,
}

impl AuthenticatedStore {
    /// `value` with the MAC bound to `key` in front, as stored.
    fn seal(&self, key: &str, value: &[u8]) -> Bytes {
        let mut sealed = BytesMut::with_capacity(MAC_LEN + value.len());
        sealed.put_slice(&self.key.mac(key, value));
        sealed.put_slice(value);
        sealed.freeze()
    }

    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, key: EntryKey) -> Self {
        Self { inner, key, rejected: AtomicU64::new(0) }
    }

    /// How many items failed their MAC and were read as misses.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Checks and strips the MAC of a read item; `Err(cas)` when it fails.
    fn open(&self, key: &str, outcome: GetOutcome) -> Result<GetOutcome, u64> {
        let GetOutcome::Hit(mut item) = outcome else { return Ok(outcome) };
        let genuine = item.value.len() >= MAC_LEN && {
            let (mac, value) = item.value.split_at(MAC_LEN);
            // Constant time: the comparison must not tell a forger how many bytes of a MAC were right.
            bool::from(subtle::ConstantTimeEq::ct_eq(mac, &self.key.mac(key, value)[..]))
        };
        if !genuine {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(key, "a stored item failed its entry key check; removed and treated as a miss");
            return Err(item.cas);
        }
        item.value = item.value.slice(MAC_LEN..);
        Ok(GetOutcome::Hit(item))
    }
}

#[async_trait]
impl Store for AuthenticatedStore {
    async fn get_many(&self, requests: &[GetRequest]) -> Vec<Result<GetOutcome, StoreError>> {
        let results = self.inner.get_many(requests).await;
        let mut checked = Vec::with_capacity(results.len());
        for (request, result) in requests.iter().zip(results) {
            // A presence read carries no value to check: whether the item exists is all it asks, and the value
            // is checked when it is read.
            if request.presence_only {
                checked.push(result);
                continue;
            }
            checked.push(match result.map(|outcome| self.open(&request.key, outcome)) {
                Ok(Ok(outcome)) => Ok(outcome),
                // Removed (unless rewritten meanwhile), so that etagd's next write of this key is not refused by
                // a forged item squatting on it.
                Ok(Err(cas)) => {
                    let placement = match (request.server, &request.route) {
                        (Some(server), _) => Placement::Server(server),
                        (None, Some(route)) => Placement::Near(route),
                        (None, None) => Placement::Own,
                    };
                    let _ = self.inner.delete_placed(&request.key, placement, DeleteMode::IfCas { cas }).await;
                    Ok(GetOutcome::Miss { lease: Lease::None })
                }
                Err(error) => Err(error),
            });
        }
        checked
    }

    async fn set_placed(
        &self,
        key: &str,
        placement: Placement<'_>,
        value: Bytes,
        expiry: Expiry,
        condition: SetCondition,
    ) -> Result<SetOutcome, StoreError> {
        self.inner.set_placed(key, placement, self.seal(key, &value), expiry, condition).await
    }

    async fn set_all_placed(
        &self,
        items: Vec<(String, Bytes)>,
        placement: Placement<'_>,
        expiry: Expiry,
    ) -> Result<(), StoreError> {
        let sealed = items.into_iter().map(|(key, value)| {
            let sealed = self.seal(&key, &value);
            (key, sealed)
        });
        self.inner.set_all_placed(sealed.collect(), placement, expiry).await
    }

    async fn delete_placed(&self, key: &str, placement: Placement<'_>, mode: DeleteMode) -> Result<bool, StoreError> {
        self.inner.delete_placed(key, placement, mode).await
    }

    async fn touch_placed(
        &self,
        key: &str,
        placement: Placement<'_>,
        expiry: Expiry,
    ) -> Result<Option<u64>, StoreError> {
        self.inner.touch_placed(key, placement, expiry).await
    }

    async fn stats(&self) -> Vec<ServerStats> {
        self.inner.stats().await
    }

    fn health(&self) -> Vec<ServerHealth> {
        self.inner.health()
    }

    fn server_of(&self, key: &str) -> String {
        self.inner.server_of(key)
    }

    fn server_count(&self) -> usize {
        self.inner.server_count()
    }

    fn server_name(&self, index: usize) -> String {
        self.inner.server_name(index)
    }

    fn max_item_bytes(&self) -> usize {
        self.inner.max_item_bytes().saturating_sub(MAC_LEN)
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn stores() -> (Arc<dyn Store>, AuthenticatedStore) {
        let raw: Arc<dyn Store> = Arc::new(MemoryStore::new(1 << 20));
        let key = EntryKey::new("a fleet secret of some length").unwrap();
        (raw.clone(), AuthenticatedStore::new(raw, key))
    }

    async fn read(store: &dyn Store, key: &str) -> Option<Bytes> {
        match store.get_many(&[GetRequest::plain(key)]).await.pop().unwrap().unwrap() {
            GetOutcome::Hit(item) => Some(item.value),
            GetOutcome::Miss { .. } => None,
        }
    }

    #[tokio::test]
    async fn what_it_wrote_reads_back_and_nothing_else_does() {
        let (raw, store) = stores();
        store.set("k1", Bytes::from_static(b"value"), Expiry::Never, SetCondition::Always).await.unwrap();
        assert_eq!(read(&store, "k1").await.as_deref(), Some(&b"value"[..]));
        // Forged by a writer without the key, altered, moved to another key, or too short: each is a miss.
        raw.set("forged", Bytes::from_static(b"0123456789abcdefvalue"), Expiry::Never, SetCondition::Always)
            .await
            .unwrap();
        let sealed = read(&*raw, "k1").await.unwrap();
        let mut altered = sealed.to_vec();
        *altered.last_mut().unwrap() ^= 1;
        raw.set("altered", Bytes::from(altered), Expiry::Never, SetCondition::Always).await.unwrap();
        raw.set("moved", sealed, Expiry::Never, SetCondition::Always).await.unwrap();
        raw.set("short", Bytes::from_static(b"x"), Expiry::Never, SetCondition::Always).await.unwrap();
        for key in ["forged", "altered", "moved", "short"] {
            assert_eq!(read(&store, key).await, None, "{key}");
            assert_eq!(read(&*raw, key).await, None, "{key} was removed");
        }
        assert_eq!(store.rejected(), 4);
        // A presence read sees the item without judging it (its value is checked when it is read).
        let presence = store.get_many(&[GetRequest::presence("k1")]).await.pop().unwrap().unwrap();
        assert!(matches!(presence, GetOutcome::Hit(_)));
        // A different fleet secret cannot read it either.
        let other = AuthenticatedStore::new(raw.clone(), EntryKey::new("another fleet's secret!").unwrap());
        assert_eq!(read(&other, "k1").await, None);
        assert_eq!(read(&store, "k1").await, None, "and removed it");
    }

    #[test]
    fn short_secrets_are_refused_with_advice() {
        let error = EntryKey::new("short").unwrap_err();
        assert!(error.to_string().contains("at least 16"), "{error}");
    }
}
