//! Routing and node health: which server a key lives on (rendezvous hashing over the configured addresses, so
//! every process puts a key on the same server), and per-server failure tracking (a server that fails in
//! transport is marked down and skipped for a back-off, then probed by one request). An item placed
//! [`Near`](crate::store::Placement::Near) another key is routed by that key.
//!
//! A down server's keys are never remapped onto the others: when it came back, those copies would be stale (an
//! invalidation sent meanwhile would have gone to the wrong server). Its keys fail fast instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use memcache::exp::{Rendezvous, Router};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::MemcachedConfig;
use super::coalescer::{Job, spawn_batcher};
use super::pool::Pool;
use super::stats::{Limits, read_limits};

/// memcached's default item size limit (`-I 1m`), less headroom: assumed until the server's own is read.
const DEFAULT_ITEM_LIMIT: usize = (1 << 20) - super::stats::ITEM_HEADROOM;
/// How often a known item limit is read again (a server restarted with another `-I`).
const LIMIT_REFRESH: Duration = Duration::from_secs(60);
/// How soon an item limit that could not be read is tried again.
const LIMIT_RETRY: Duration = Duration::from_secs(5);
use crate::store::{ServerHealth, StoreError};

/// Rendezvous routing over the configured addresses: the identities hashed are the address strings, so every
/// process listing the same servers (in any order) routes a key the same way.
pub(super) struct Routing {
    /// The configured addresses, in configuration order.
    ids: Vec<String>,
    router: Rendezvous,
}

impl Routing {
    /// Routing over these addresses.
    pub(super) fn new(ids: Vec<String>) -> Self {
        Self { ids, router: Rendezvous::new() }
    }

    /// The configured addresses, in configuration order.
    pub(super) fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The position (in configuration order) of the server owning `key`.
    pub(super) fn server(&self, key: &str) -> usize {
        self.router.route(key.as_bytes(), &self.ids)
    }
}

/// What one server's failure tracking knows.
#[derive(Debug, Default)]
struct NodeState {
    /// Set while the server is marked down: until then its keys fail fast; after it, one probe goes through.
    down_until: Option<Instant>,
    /// A probe request is in flight; others keep failing fast until it settles.
    probing: bool,
    last_error: Option<String>,
}

/// One server: its connection pool and its failure tracking.
pub(super) struct ServerNode {
    pub(super) addr: String,
    /// Connections for every command but bulk reads, shared with the coalescer.
    pub(super) pool: Arc<Pool>,
    /// Connections for bulk reads ([`MemcachedConfig::bulk_timeout`]): their own pool and their own time limit.
    pub(super) bulk_pool: Pool,
    pub(super) bulk_timeout: Duration,
    /// The coalescer, when batching is on.
    pub(super) batcher: Option<mpsc::UnboundedSender<Job>>,
    state: Mutex<NodeState>,
    pub(super) connect_timeout: Duration,
    pub(super) io_timeout: Duration,
    pub(super) down_backoff: Duration,
    /// The largest value this server stores: its own `item_size_max` less headroom once read (`stats`),
    /// capped by the configured limit; memcached's default until then.
    pub(super) item_limit: Arc<AtomicUsize>,
    /// The configured upper bound on `item_limit`.
    pub(super) item_cap: usize,
    /// The server's memory for items (`maxbytes`) once read; 0 until then.
    pub(super) memory_limit: Arc<AtomicU64>,
}

/// Permission to run one exchange on a server. Settling it records the transport outcome; dropping it
/// unsettled (the caller's future was cancelled, or nothing was sent) leaves the state as it was, except that
/// an unsettled probe frees the probe slot so the next request probes again.
pub(super) struct Pass<'a> {
    node: &'a ServerNode,
    probe: bool,
    settled: bool,
}

impl Pass<'_> {
    /// The server answered: it is up.
    pub(super) fn succeeded(mut self) {
        self.settled = true;
        let mut state = self.node.state.lock();
        if state.down_until.take().is_some() {
            tracing::info!(server = %self.node.addr, "memcached is answering again; its keys are cached again");
        }
        state.probing = false;
    }

    /// The exchange failed in transport: mark the server down for the back-off.
    pub(super) fn failed(mut self, error: &StoreError) {
        self.settled = true;
        let mut state = self.node.state.lock();
        if state.down_until.is_none() || self.probe {
            tracing::warn!(
                server = %self.node.addr,
                error = %error,
                backoff = ?self.node.down_backoff,
                "memcached marked down; its keys go to the origin until it answers again"
            );
        }
        state.down_until = Some(Instant::now() + self.node.down_backoff);
        state.probing = false;
        state.last_error = Some(error.to_string());
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.probe && !self.settled {
            self.node.state.lock().probing = false;
        }
    }
}

impl ServerNode {
    pub(super) fn new(addr: String, config: &MemcachedConfig) -> ServerNode {
        let deadline = config.connect_timeout + config.io_timeout;
        let pool = Arc::new(Pool::new(addr.clone(), config.connect_timeout, config.max_idle));
        let batcher = config.batch.then(|| spawn_batcher(addr.clone(), pool.clone(), deadline));
        ServerNode {
            bulk_pool: Pool::new(addr.clone(), config.connect_timeout, config.max_idle),
            addr,
            pool,
            bulk_timeout: config.bulk_timeout,
            batcher,
            state: Mutex::new(NodeState::default()),
            connect_timeout: config.connect_timeout,
            io_timeout: config.io_timeout,
            down_backoff: config.down_backoff,
            item_limit: Arc::new(AtomicUsize::new(config.max_item_bytes.unwrap_or(DEFAULT_ITEM_LIMIT))),
            item_cap: config.max_item_bytes.unwrap_or(usize::MAX),
            memory_limit: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The largest value this server is known to store.
    pub(super) fn item_limit(&self) -> usize {
        self.item_limit.load(Ordering::Relaxed)
    }

    /// The server's memory for items, once read.
    pub(super) fn memory_limit(&self) -> Option<u64> {
        Some(self.memory_limit.load(Ordering::Relaxed)).filter(|bytes| *bytes > 0)
    }

    /// Reads the server's item limit (and memory) now (bounded by the deadline), then keeps them current in the
    /// background: every minute, or every few seconds until a first read succeeds (the server may be down at
    /// start).
    pub(super) async fn learn_item_limit(&self) {
        let (addr, connect_timeout, deadline) = (self.addr.clone(), self.connect_timeout, self.deadline());
        let (limit, cap, memory) = (self.item_limit.clone(), self.item_cap, self.memory_limit.clone());
        let learn = move |read: Result<Limits, String>, limit: &AtomicUsize| match read {
            Ok(found) => {
                limit.store(found.item.min(cap), Ordering::Relaxed);
                memory.store(found.memory.unwrap_or(0), Ordering::Relaxed);
                true
            }
            Err(error) => {
                tracing::debug!(server = %addr, %error, "memcached item limit not read; assuming the last known");
                false
            }
        };
        let mut known = learn(read_limits(&self.addr, connect_timeout, deadline).await, &limit);
        let server = self.addr.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(if known { LIMIT_REFRESH } else { LIMIT_RETRY }).await;
                if Arc::strong_count(&limit) == 1 {
                    return; // The store is gone.
                }
                known = learn(read_limits(&server, connect_timeout, deadline).await, &limit) || known;
            }
        });
    }

    /// The outer bound on one exchange: dialling plus the exchange itself, including the one redial of a
    /// pooled connection the server closed.
    pub(super) fn deadline(&self) -> Duration {
        self.connect_timeout + self.io_timeout
    }

    /// Lets a request through, or fails it at once while the server is marked down.
    pub(super) fn admit(&self) -> Result<Pass<'_>, StoreError> {
        let mut state = self.state.lock();
        let Some(until) = state.down_until else {
            return Ok(Pass { node: self, probe: false, settled: false });
        };
        let now = Instant::now();
        if now < until || state.probing {
            return Err(StoreError::ServerDown {
                server: self.addr.clone(),
                retry_in: until.saturating_duration_since(now),
            });
        }
        state.probing = true;
        Ok(Pass { node: self, probe: true, settled: false })
    }

    pub(super) fn timeout_error(&self) -> StoreError {
        StoreError::Timeout { server: self.addr.clone(), timeout: self.io_timeout }
    }

    pub(super) fn bulk_timeout_error(&self) -> StoreError {
        StoreError::Timeout { server: self.addr.clone(), timeout: self.bulk_timeout }
    }

    pub(super) fn health(&self) -> ServerHealth {
        let state = self.state.lock();
        ServerHealth { server: self.addr.clone(), up: state.down_until.is_none(), last_error: state.last_error.clone() }
    }
}
