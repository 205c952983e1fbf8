//! Engine settings and the clock: what a deployment chooses (namespace, validator minting, lease and wait times,
//! in-process budgets) and where the engine reads the time, so tests can replace it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::key::Namespace;

/// The default [`CacheConfig::max_object_fraction`].
pub const DEFAULT_MAX_OBJECT_FRACTION: f64 = 0.125;

/// How the engine mints validators when the origin sends none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValidatorMode {
    /// A strong timestamp tag minted at fill time, unique across replicas (the seed's choice).
    #[default]
    Timestamp,
    /// The xxh3-128 of the body: identical content keeps its validator across invalidations.
    Content,
}

/// A source of wall-clock time in unix milliseconds; replaceable in tests.
pub trait Clock: Send + Sync + 'static {
    /// Now, in unix milliseconds.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

/// Engine settings.
#[derive(Clone)]
pub struct CacheConfig {
    /// Keeps deployments sharing one Memcached apart.
    pub namespace: Namespace,
    /// How the engine mints validators.
    pub validator: ValidatorMode,
    /// Lifetime of a fill lease (or refresh lock) that nobody renews: how long an abandoned lease can block
    /// others. A live fill renews its lease every third of this while it works, so it need not cover the
    /// slowest origin response; keep it short (a few seconds), so that a lease whose filler died or whose
    /// answer was lost expires soon.
    pub fill_lease: Duration,
    /// How long a request waits for another caller's fill before going to the origin itself.
    pub fill_wait: Duration,
    /// How long an uncacheable answer sends the resource straight to the origin (hit-for-pass).
    pub pass_ttl: Duration,
    /// How long a stale entry is kept after its freshness and stale windows, for revalidation.
    pub keep: Duration,
    /// Clock skew allowed between replicas when checking counters first met after the origin answered.
    pub clock_skew: Duration,
    /// Bytes of bodies kept in process (remote stores only; 0 turns it off). A body stored in chunks is kept
    /// (chunk by chunk) only when it is at most a quarter of this, so one large body cannot push out the many
    /// small hot ones.
    pub body_cache_bytes: u64,
    /// Admission: the largest object stored (identity body plus stored codings), as a fraction of the smallest
    /// server's memory ([`crate::store::Store::memory_bytes`]; every item of an object lives on one
    /// server). Default 0.125: one object may displace at most an eighth of a server, so a large
    /// export cannot evict everything else (an 8 MiB cap on memcached's default `-m 64`).
    pub max_object_fraction: f64,
    /// Resources whose tags and Vary names this process remembers to batch their reads.
    pub hint_capacity: u64,
    /// How often the background poller reads the fences of servers that missed an invalidation (remote stores
    /// of two or more servers); a fenced server's entries go to the origin until it is repaired.
    pub fence_poll: Duration,
    /// Bridges a rolling upgrade from this older key schema (one of `key::BRIDGEABLE_SCHEMAS`): invalidations
    /// are also written in its names, and entries are checked against its invalidations (`cache/bridge.rs`).
    pub bridge_from: Option<&'static str>,
    /// How many path segments get an automatic prefix tag (`key::PathPrefix`): at 2, an entry for
    /// `/api/v2/users/7` carries `/api/` and `/api/v2/`, so a purge of either is one counter write. Each level is
    /// one more counter read in every lookup's batch; 0 turns prefix tags (and prefix purges) off. At most
    /// [`MAX_PREFIX_DEPTH`](crate::key::MAX_PREFIX_DEPTH). Every replica and `etagctl` must use the same value.
    pub prefix_depth: u8,
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            namespace: Namespace::default(),
            validator: ValidatorMode::default(),
            fill_lease: Duration::from_secs(5),
            fill_wait: Duration::from_secs(5),
            pass_ttl: Duration::from_secs(30),
            keep: Duration::from_secs(3600),
            clock_skew: Duration::from_secs(1),
            body_cache_bytes: 64 << 20,
            max_object_fraction: DEFAULT_MAX_OBJECT_FRACTION,
            hint_capacity: 100_000,
            fence_poll: Duration::from_secs(1),
            bridge_from: None,
            prefix_depth: crate::key::DEFAULT_PREFIX_DEPTH,
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for CacheConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheConfig")
            .field("namespace", &self.namespace)
            .field("validator", &self.validator)
            .field("fill_lease", &self.fill_lease)
            .field("fill_wait", &self.fill_wait)
            .field("pass_ttl", &self.pass_ttl)
            .field("keep", &self.keep)
            .field("clock_skew", &self.clock_skew)
            .field("body_cache_bytes", &self.body_cache_bytes)
            .field("max_object_fraction", &self.max_object_fraction)
            .field("hint_capacity", &self.hint_capacity)
            .field("bridge_from", &self.bridge_from)
            .field("prefix_depth", &self.prefix_depth)
            .finish_non_exhaustive()
    }
}
