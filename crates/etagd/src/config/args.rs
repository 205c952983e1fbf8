//! The command line: every flag, each with its `ETAGD_<FLAG>` environment fallback and default, as clap reads
//! it. Nothing here is validated beyond its type; [`Config`](super::Config) checks the values and combines them
//! with the TOML file.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Raw command-line flags; each also reads `ETAGD_<FLAG>`.
#[derive(Debug, Clone, Parser)]
#[command(name = "etagd", version, about = "A shared HTTP cache in front of each app replica, backed by Memcached")]
#[command(after_help = "Example:\n  etagd --listen 0.0.0.0:8080 --upstream http://127.0.0.1:8000 \\\n        \
    --memcached mc-0:11211,mc-1:11211 --admin-listen 127.0.0.1:9091")]
pub struct Args {
    /// Address the proxy listens on.
    #[arg(long, env = "ETAGD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The app this sidecar fronts.
    #[arg(long, env = "ETAGD_UPSTREAM", default_value = "http://127.0.0.1:8000")]
    pub upstream: String,
    /// Memcached servers, comma separated. Without it, an embedded in-process store is used and validators are
    /// not shared between replicas.
    #[arg(long, env = "ETAGD_MEMCACHED", value_delimiter = ',')]
    pub memcached: Vec<String>,
    /// Address of the admin port (invalidation, health, metrics).
    #[arg(long, env = "ETAGD_ADMIN_LISTEN", default_value = "127.0.0.1:9091")]
    pub admin_listen: String,
    /// Bearer token for the admin API; required when the admin port is not on loopback.
    #[arg(long, env = "ETAGD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// TOML file with route rules and tuning.
    #[arg(long, env = "ETAGD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Key namespace, so deployments can share a Memcached.
    #[arg(long, env = "ETAGD_NAMESPACE")]
    pub namespace: Option<String>,
    /// A fleet secret (at least 16 bytes, the same on every replica): every item written carries a keyed MAC,
    /// and one that fails it is a miss, so a Memcached writer cannot forge responses.
    #[arg(long, env = "ETAGD_ENTRY_KEY", hide_env_values = true)]
    pub entry_key: Option<String>,
    /// During a rolling upgrade from the release using this key schema (`etagd1`): honour its invalidations
    /// and write ours in its names too. Costs one more Memcached batch per lookup; turn it off after the rollout.
    #[arg(long, env = "ETAGD_BRIDGE_SCHEMA")]
    pub bridge_schema: Option<String>,
    /// Log format.
    #[arg(long, env = "ETAGD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Tokio worker threads (default: half the cores, at least 1).
    #[arg(long, env = "ETAGD_WORKERS")]
    pub workers: Option<usize>,
    /// Largest response body stored, in bytes (larger ones stream through uncached; default 64 MiB). Bodies
    /// larger than one Memcached item are stored in chunks.
    #[arg(long, env = "ETAGD_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Admission: the largest object stored (body plus stored codings), as a fraction of the smallest
    /// Memcached server's memory (`-m`) or of the embedded store (default 0.125).
    #[arg(long, env = "ETAGD_MAX_OBJECT_FRACTION")]
    pub max_object_fraction: Option<f64>,
    /// Memcached I/O timeout per batch.
    #[arg(long, env = "ETAGD_MEMCACHED_TIMEOUT", value_parser = parse_duration, default_value = "100ms")]
    pub memcached_timeout: Duration,
    /// Memcached I/O timeout of one read of a large body's chunks (own connections; its timing out fails that
    /// response only and does not mark the server down).
    #[arg(long, env = "ETAGD_MEMCACHED_BULK_TIMEOUT", value_parser = parse_duration, default_value = "2s")]
    pub memcached_bulk_timeout: Duration,
    /// Memcached connect timeout.
    #[arg(long, env = "ETAGD_MEMCACHED_CONNECT_TIMEOUT", value_parser = parse_duration, default_value = "50ms")]
    pub memcached_connect_timeout: Duration,
    /// How long a failed Memcached server is skipped before it is tried again.
    #[arg(long, env = "ETAGD_MEMCACHED_BACKOFF", value_parser = parse_duration, default_value = "2s")]
    pub memcached_backoff: Duration,
    /// Coalesce concurrent Memcached reads and small writes into one pipelined write per server.
    #[arg(long, env = "ETAGD_MEMCACHED_BATCH", default_value_t = true, action = clap::ArgAction::Set)]
    pub memcached_batch: bool,
    /// Bytes of the embedded store (when no --memcached).
    #[arg(long, env = "ETAGD_EMBEDDED_BYTES", default_value_t = 256 << 20)]
    pub embedded_bytes: u64,
    /// Bytes of bodies kept in process in front of Memcached (keyed by their immutable fill id; validators are
    /// still checked in Memcached on every request).
    #[arg(long, env = "ETAGD_BODY_CACHE_BYTES", default_value_t = 64 << 20)]
    pub body_cache_bytes: u64,
    /// How long a request waits for another replica's fill before asking the origin itself.
    #[arg(long, env = "ETAGD_FILL_WAIT", value_parser = parse_duration, default_value = "5s")]
    pub fill_wait: Duration,
    /// How long an abandoned fill lease can block others: the lease's lifetime when nobody renews it. A live
    /// fill renews its lease every third of this while the origin answers, so it need not cover slow views;
    /// short, so that a lease whose filler died or whose answer was lost (Memcached stalled) expires soon.
    #[arg(long, env = "ETAGD_FILL_LEASE", value_parser = parse_duration, default_value = "5s")]
    pub fill_lease: Duration,
    /// Timeout for one origin request (headers). It need not fit in the fill lease: a live fill renews its
    /// lease while it waits, so another replica never fills the same key meanwhile.
    #[arg(long, env = "ETAGD_ORIGIN_TIMEOUT", value_parser = parse_duration, default_value = "60s")]
    pub origin_timeout: Duration,
    /// While an origin body is read or streamed, the longest wait for its next frame before it is cut.
    #[arg(long, env = "ETAGD_ORIGIN_BODY_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub origin_body_timeout: Duration,
    /// How long a client may take to send a request's headers. hyper also applies it to a keep-alive connection
    /// waiting for its next request, so it must stay above the idle timeout of the proxy in front.
    #[arg(long, env = "ETAGD_HEADER_READ_TIMEOUT", value_parser = parse_duration, default_value = "65s")]
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) in bytes; larger ones are answered 431.
    #[arg(long, env = "ETAGD_MAX_HEADER_BYTES", default_value_t = 64 << 10)]
    pub max_header_bytes: usize,
    /// Requests handled at once; more are answered 503 with Retry-After.
    #[arg(long, env = "ETAGD_MAX_IN_FLIGHT", default_value_t = 4096)]
    pub max_in_flight: usize,
    /// Content codings etagd produces once per fill for compressible responses (`gzip,br,zstd`), or `off`.
    #[arg(long, env = "ETAGD_COMPRESS", default_value = "gzip,br,zstd")]
    pub compress: String,
    /// Make only the first of `--compress` with the fill and each other one when a client first asks for it
    /// (once per fill for the whole fleet); `false` makes every coding with the fill.
    #[arg(long, env = "ETAGD_COMPRESS_ON_DEMAND", default_value_t = true, action = clap::ArgAction::Set)]
    pub compress_on_demand: bool,
    /// Compression level (gzip 1-9, br 0-11, zstd 1-19; clamped per codec).
    #[arg(long, env = "ETAGD_COMPRESS_LEVEL", default_value_t = 5)]
    pub compress_level: u32,
    /// Smallest body worth compressing, in bytes.
    #[arg(long, env = "ETAGD_COMPRESS_MIN_BYTES", default_value_t = 1024)]
    pub compress_min_bytes: usize,
    /// Largest body compressed, in bytes: above it only identity is stored (`Cache-Status` detail
    /// `identity-only`), because producing every coding of a body that large costs seconds of CPU per fill.
    #[arg(long, env = "ETAGD_COMPRESS_MAX_BYTES", default_value_t = etagd_client::encoding::DEFAULT_COMPRESS_MAX_BYTES)]
    pub compress_max_bytes: usize,
    /// How long in-flight requests may run after SIGTERM.
    #[arg(long, env = "ETAGD_DRAIN_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub drain_timeout: Duration,
    /// Path segments that get an automatic prefix tag, so `POST /invalidate {"prefixes": [...]}` and
    /// `etagctl flush --prefix` purge everything under a prefix with one write (0 to 8; 0: off). Each level is
    /// one more counter read per lookup; every replica and etagctl must use the same value.
    #[arg(long, env = "ETAGD_PREFIX_DEPTH", default_value_t = etagd_client::key::DEFAULT_PREFIX_DEPTH)]
    pub prefix_depth: u8,
    /// Peers whose X-Forwarded-Proto/-Host are believed and keyed (comma-separated CIDRs or addresses, e.g. the
    /// ingress's). From anyone else forwarding headers are dropped before the app sees them.
    #[arg(long, env = "ETAGD_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// Requests in flight to the origin at once (0: no cap). Past it requests queue; past the queue a stale
    /// copy is served where one may be, else 503 with Retry-After.
    #[arg(long, env = "ETAGD_ORIGIN_MAX_CONCURRENCY", default_value_t = 256)]
    pub origin_max_concurrency: usize,
    /// Requests that may wait for an origin slot.
    #[arg(long, env = "ETAGD_ORIGIN_QUEUE", default_value_t = 1024)]
    pub origin_queue: usize,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A duration flag (`100ms`, `2s`, `5m`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (write it like 100ms, 2s, 5m)"))
}
