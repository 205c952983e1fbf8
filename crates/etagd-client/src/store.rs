//! The storage abstraction: a small set of Memcached meta-protocol verbs that both stores implement.
//!
//! The cache engine needs six things from a store: a batched read that can hand out a fill lease on a miss
//! (`mg ... N`), a conditional write (`ms` plain, add, or compare-and-swap), a hard or soft delete
//! (`md`, `md I`), a touch that keeps a lease alive (`mg ... T`), per-server statistics and per-server health.
//! Reads, writes, deletes and touches can carry a routing hint ([`Placement`]) so that related items share the
//! server of the item they belong to.
//! [`memcached::MemcachedStore`] maps them onto real servers; [`memory::MemoryStore`] implements the same
//! semantics in process, bounded by bytes. Both pass the same contract tests (`tests/store_contract.rs`).
//!
//! A store never retries a write on its own and never calls `flush_all`.

pub mod authenticated;
pub mod memcached;
pub mod memory;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

/// Why a store operation failed. A store error is never shown to an HTTP client: the caller falls back to the
/// origin and counts it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The server failed recently and is skipped until its back-off ends.
    #[error("memcached {server} is marked down after a failure; its keys go to the origin for {retry_in:?}")]
    ServerDown {
        /// The server address as configured.
        server: String,
        /// Time left until the server is tried again.
        retry_in: Duration,
    },
    /// The server did not answer within the I/O timeout.
    #[error("memcached {server} did not answer within {timeout:?}; check it is up or raise the timeout")]
    Timeout {
        /// The server address as configured.
        server: String,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// A connection or protocol failure.
    #[error("memcached {server} failed: {detail}")]
    Server {
        /// The server address as configured.
        server: String,
        /// What the client library reported.
        detail: String,
    },
    /// An invalidation missed this server, so its items are not trusted until a replica repairs it.
    #[error("memcached {server} missed an invalidation and is fenced; its keys go to the origin until it is repaired")]
    Fenced {
        /// The server address as configured.
        server: String,
    },
    /// The value is larger than the store accepts for one item.
    #[error("item {key} is {size} bytes, above the store's item limit of {limit} bytes (raise memcached -I)")]
    TooLarge {
        /// The item key.
        key: String,
        /// The value size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// Refuses a value above a store's item limit, before any I/O: both stores apply the same rule.
pub(crate) fn check_size(key: &str, value: &Bytes, limit: usize) -> Result<(), StoreError> {
    if value.len() > limit {
        return Err(StoreError::TooLarge { key: key.to_owned(), size: value.len(), limit });
    }
    Ok(())
}

/// How long an item lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Until evicted or deleted.
    Never,
    /// This many seconds (at least 1).
    Secs(u32),
}

/// The longest expiry given to an item; longer lifetimes are stored without one.
///
/// Memcached reads a TTL above 30 days as an absolute unix time, which the client computes as `now + n` in
/// 32 bits: near `u32::MAX` seconds that overflows and the write fails. An item kept longer than its lifetime
/// costs only memory until eviction: freshness is judged from the entry itself, and invalidation never depends
/// on expiry.
pub const MAX_EXPIRY_SECS: u64 = 365 * 24 * 60 * 60;

impl Expiry {
    /// An expiry of at least one second from a duration; past [`MAX_EXPIRY_SECS`], none (eviction and
    /// invalidation bound the item instead).
    pub fn from_secs(secs: u64) -> Self {
        if secs > MAX_EXPIRY_SECS {
            return Self::Never;
        }
        Self::Secs(u32::try_from(secs.max(1)).unwrap_or(u32::MAX))
    }
}

/// A routing hint: which key decides the server an item lives on.
///
/// Related items are placed on the server of the item they belong to (a body, a Vary variant or a refresh lock
/// beside its resource's head record), so losing one server loses whole objects, never a head without its
/// body. Every verb on an item must name the same placement, or reads will not find what writes stored. A
/// store with one node ignores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement<'a> {
    /// On the server that owns the item's own key.
    #[default]
    Own,
    /// On the server that owns this other key (usually the head record's).
    Near(&'a str),
    /// On the server at this position in configuration order (taken modulo [`Store::server_count`]): the
    /// per-server copies of the namespace and tag counters are written to every server this way.
    Server(usize),
}

impl<'a> Placement<'a> {
    /// The key a store routes by for the item named `key` (for [`Placement::Server`], which names no key,
    /// the item's own: check [`server_index`](Self::server_index) first).
    pub fn route_key(self, key: &'a str) -> &'a str {
        match self {
            Placement::Own | Placement::Server(_) => key,
            Placement::Near(owner) => owner,
        }
    }

    /// The server position a [`Placement::Server`] pins the item to.
    pub fn server_index(self) -> Option<usize> {
        match self {
            Placement::Server(index) => Some(index),
            _ => None,
        }
    }
}

/// One item to read in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetRequest {
    /// The item key (from `key`).
    pub key: String,
    /// On a miss, create a placeholder living this many seconds and hand the caller a fill lease; on a stale
    /// item, hand one caller a refresh lease. `None` for a plain read.
    pub lease_secs: Option<u32>,
    /// Read from the server owning this key instead of the item's own (see [`Placement`]); `None`: its own.
    pub route: Option<String>,
    /// Read from the server at this position instead ([`Placement::Server`]); wins over `route`.
    pub server: Option<usize>,
    /// Ask only whether the item exists (`mg <key>` without `v`): a hit carries an empty value. How a hit on a
    /// chunked body checks its chunks are all there without transferring them.
    pub presence_only: bool,
    /// A large value (a body chunk): read on a connection of its own instead of through the read coalescer, so
    /// lookups never queue behind megabytes on the wire.
    pub bulk: bool,
}

impl GetRequest {
    /// A plain read.
    pub fn plain(key: impl Into<String>) -> Self {
        Self { key: key.into(), lease_secs: None, route: None, server: None, presence_only: false, bulk: false }
    }

    /// A read that takes a lease on a miss or a stale item.
    pub fn leased(key: impl Into<String>, lease_secs: u32) -> Self {
        Self {
            key: key.into(),
            lease_secs: Some(lease_secs.max(1)),
            route: None,
            server: None,
            presence_only: false,
            bulk: false,
        }
    }

    /// A plain read of whether the item exists, without its value ([`GetRequest::presence_only`]).
    pub fn presence(key: impl Into<String>) -> Self {
        Self { presence_only: true, ..Self::plain(key) }
    }

    /// A plain read of a large value ([`GetRequest::bulk`]).
    pub fn bulk(key: impl Into<String>) -> Self {
        Self { bulk: true, ..Self::plain(key) }
    }

    /// Reads the item from the server owning `owner` ([`Placement::Near`]), where it was written.
    #[must_use]
    pub fn near(mut self, owner: impl Into<String>) -> Self {
        self.route = Some(owner.into());
        self
    }

    /// Reads the item from the server at this position ([`Placement::Server`]), where it was written.
    #[must_use]
    pub fn on_server(mut self, index: usize) -> Self {
        self.server = Some(index);
        self
    }

    /// Where the item lives.
    pub fn placement(&self) -> Placement<'_> {
        if let Some(index) = self.server {
            return Placement::Server(index);
        }
        self.route.as_deref().map_or(Placement::Own, Placement::Near)
    }
}

/// The lease state a read reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// No lease was requested or involved.
    None,
    /// This caller won: it should fill (or refresh) the item and write it with `SetCondition::Cas(cas)`.
    Won {
        /// The CAS of the placeholder or stale item.
        cas: u64,
    },
    /// Another caller holds the lease.
    Busy,
}

/// A found item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The stored bytes.
    pub value: Bytes,
    /// The item's CAS.
    pub cas: u64,
    /// The item was soft-deleted ([`DeleteMode::Stale`]) and awaits a refresh.
    pub stale: bool,
    /// Lease state (a stale item hands one reader a refresh lease).
    pub lease: Lease,
}

/// What a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetOutcome {
    /// The item exists (possibly stale).
    Hit(Item),
    /// No item (or only a fill placeholder).
    Miss {
        /// `Won` when this caller created the placeholder, `Busy` when another caller is filling.
        lease: Lease,
    },
}

/// When a write applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetCondition {
    /// Always.
    Always,
    /// Only if no item exists.
    Add,
    /// Only if the item exists with this CAS (a lease placeholder counts).
    Cas(u64),
}

/// Whether a write applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// The value was stored.
    Stored,
    /// The condition did not hold (add: exists; cas: changed or gone).
    NotStored,
}

/// How to delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    /// Remove the item.
    Hard,
    /// Remove the item only if its CAS still matches (`md <key> C<cas>`): releases a lease placeholder without
    /// deleting what another caller wrote since.
    IfCas {
        /// The CAS the item must still have.
        cas: u64,
    },
    /// Keep the item readable but stale for `grace`, handing one reader a refresh lease (`md <key> I T<grace>`).
    Stale {
        /// How long the stale item may still be served.
        grace: Duration,
    },
}

/// Statistics of one server (for `etagctl stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServerStats {
    /// The server address, or `embedded`.
    pub server: String,
    /// Whether it answered.
    pub reachable: bool,
    /// The error when it did not.
    pub error: Option<String>,
    /// The server version.
    pub version: Option<String>,
    /// Items currently stored.
    pub items: Option<u64>,
    /// Bytes currently stored.
    pub bytes: Option<u64>,
    /// Byte limit.
    pub limit_bytes: Option<u64>,
    /// Read hits since start.
    pub get_hits: Option<u64>,
    /// Read misses since start.
    pub get_misses: Option<u64>,
    /// Reads since start (`cmd_get`).
    pub cmd_get: Option<u64>,
    /// Evictions since start.
    pub evictions: Option<u64>,
}

/// Health of one server (for `/readyz` and metrics).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServerHealth {
    /// The server address, or `embedded`.
    pub server: String,
    /// False while the server is marked down.
    pub up: bool,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// [`Store::set_all_placed`] one item at a time: every item attempted in order, the first failure returned.
/// The way of stores without a pipelined write, and of the Memcached store for items of several servers.
pub(crate) async fn set_each<S: Store + ?Sized>(
    store: &S,
    items: Vec<(String, Bytes)>,
    placement: Placement<'_>,
    expiry: Expiry,
) -> Result<(), StoreError> {
    let mut first_error = None;
    for (key, value) in items {
        if let Err(error) = store.set_placed(&key, placement, value, expiry, SetCondition::Always).await {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The storage abstraction. Implementations are cheap to share (`Arc<dyn Store>`).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads several items in one round: pipelined per server, servers in parallel. Returns one result per
    /// request, in order; a failing server fails only its own keys.
    async fn get_many(&self, requests: &[GetRequest]) -> Vec<Result<GetOutcome, StoreError>>;

    /// Writes one item under a condition, on the server `placement` names.
    async fn set_placed(
        &self,
        key: &str,
        placement: Placement<'_>,
        value: Bytes,
        expiry: Expiry,
        condition: SetCondition,
    ) -> Result<SetOutcome, StoreError>;

    /// Writes several items unconditionally, all on the server `placement` names (so it must not be
    /// [`Placement::Own`] unless they share a server), as one pipelined exchange where the store can: a fill's
    /// bodies. Every item is attempted in order; the first failure is returned.
    async fn set_all_placed(
        &self,
        items: Vec<(String, Bytes)>,
        placement: Placement<'_>,
        expiry: Expiry,
    ) -> Result<(), StoreError> {
        set_each(self, items, placement, expiry).await
    }

    /// Writes one item under a condition, on the server owning its own key.
    async fn set(
        &self,
        key: &str,
        value: Bytes,
        expiry: Expiry,
        condition: SetCondition,
    ) -> Result<SetOutcome, StoreError> {
        self.set_placed(key, Placement::Own, value, expiry, condition).await
    }

    /// Deletes one item, hard or soft, on the server `placement` names. Returns whether an item existed.
    async fn delete_placed(&self, key: &str, placement: Placement<'_>, mode: DeleteMode) -> Result<bool, StoreError>;

    /// Deletes one item, hard or soft, on the server owning its own key. Returns whether an item existed.
    async fn delete(&self, key: &str, mode: DeleteMode) -> Result<bool, StoreError> {
        self.delete_placed(key, Placement::Own, mode).await
    }

    /// Extends the life of an item to `expiry` without changing its value or CAS (`mg <key> c T<ttl>`), on the
    /// server `placement` names: how a filler keeps its lease placeholder or refresh lock alive while it works,
    /// so that leases can be short. Returns the item's CAS, or `None` when there is no item (the lease expired
    /// or was released).
    async fn touch_placed(
        &self,
        key: &str,
        placement: Placement<'_>,
        expiry: Expiry,
    ) -> Result<Option<u64>, StoreError>;

    /// Statistics per server.
    async fn stats(&self) -> Vec<ServerStats>;

    /// Health per server, from what recent operations saw (no I/O).
    fn health(&self) -> Vec<ServerHealth>;

    /// The server a key lives on, or `embedded` (for error reports). For an item placed
    /// [`Near`](Placement::Near) another key, ask for that key.
    fn server_of(&self, key: &str) -> String;

    /// How many servers the store routes over ([`Placement::Server`] positions are `0..server_count()`); one
    /// for the in-process store.
    fn server_count(&self) -> usize {
        1
    }

    /// The address of the server at a position, or `embedded`.
    fn server_name(&self, index: usize) -> String {
        let _ = index;
        self.server_of("")
    }

    /// The largest value the store accepts for one item, as known now: the Memcached store reads each server's
    /// own limit (`item_size_max`, less headroom) and reports the smallest, so ask again rather than keep it.
    fn max_item_bytes(&self) -> usize;

    /// The memory for items of the smallest server, as known now (memcached's `maxbytes`, read with the item
    /// limit; the embedded store's byte bound); `None` until known. Admission compares an object with it: all of
    /// an object's items live on one server, whichever that is.
    fn memory_bytes(&self) -> Option<u64> {
        None
    }

    /// Whether bodies read from this store are worth keeping in process (false for the in-process store).
    fn is_remote(&self) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9111 section 1.2.2: delta-seconds up to 2^31 must be usable; Memcached cannot express them all.
    #[test]
    fn lifetimes_past_what_memcached_expresses_never_expire() {
        assert_eq!(Expiry::from_secs(0), Expiry::Secs(1));
        assert_eq!(Expiry::from_secs(3600), Expiry::Secs(3600));
        assert_eq!(Expiry::from_secs(MAX_EXPIRY_SECS), Expiry::Secs(MAX_EXPIRY_SECS as u32));
        assert_eq!(Expiry::from_secs(1 << 31), Expiry::Never);
        assert_eq!(Expiry::from_secs(u64::MAX), Expiry::Never);
    }
}
