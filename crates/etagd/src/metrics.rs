//! Prometheus metrics, all prefixed `etagd_`. Request-path metrics are updated from the exchange's reports
//! ([`Metrics`] is its `Observer`), so the `outcome` label is the same value as `Cache-Status` and the access
//! log's `outcome`; the engine's and the store's counters are read at scrape time by [`EngineCollector`], so
//! the hot path pays for nothing twice.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `etagd_requests_total{outcome}` | counter | requests by outcome: hit, not_modified, miss, pass, stale, bypass, error, overloaded |
//! | `etagd_origin_request_duration_seconds` | histogram | time to the origin's response headers |
//! | `etagd_origin_errors_total` | counter | origin requests that failed (connect, timeout, 5xx counted separately) |
//! | `etagd_origin_informational_total{status}` | counter | informational (1xx) answers the origin sent before its final one |
//! | `etagd_store_lookup_duration_seconds` | histogram | time of one cache lookup (all its store rounds) |
//! | `etagd_stored_bytes_total` | counter | body bytes written by fills |
//! | `etagd_invalidations_total{source}` | counter | invalidation calls: admin, unsafe_method, header |
//! | `etagd_stale_served_total{reason}` | counter | stale entries served: while_revalidate, if_error, grace, origin_overloaded |
//! | `etagd_weakened_validators_total` | counter | conditional requests carrying a `W/` copy of a strong tag etagd minted |
//! | `etagd_store_errors_total` | counter | store operations that failed (requests fell back to the origin) |
//! | `etagd_corrupt_items_total` | counter | stored items that did not decode (read as misses) |
//! | `etagd_leases_won_total` / `etagd_leases_busy_total` | counter | fill leases won / found held elsewhere |
//! | `etagd_fills_stored_total` / `etagd_fills_invalidated_total` / `etagd_fills_raced_total` | counter | fill outcomes |
//! | `etagd_codings_added_total` | counter | content codings added to stored entries on first demand |
//! | `etagd_invalidation_targets_ok_total` / `etagd_invalidation_targets_failed_total` | counter | invalidation targets written / not written |
//! | `etagd_body_cache_hits_total` / `etagd_body_store_reads_total` | counter | bodies served from process memory / read from the store |
//! | `etagd_body_cache_bytes` | gauge | bytes of bodies held in process |
//! | `etagd_fills_in_flight` | gauge | fills running in this process |
//! | `etagd_memcached_servers_down` | gauge | Memcached servers currently marked down |
//! | `etagd_overload_refused_total` | counter | requests answered 503 because `--max-in-flight` requests were already running |
//! | `etagd_origin_body_timeouts_total` | counter | origin bodies cut because no frame came within `--origin-body-timeout` |

use std::sync::Arc;

use etagd_client::cache::Cache;
use etagd_client::exchange::{Observer, Report};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Outcome label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The outcome.
    pub outcome: &'static str,
}

/// Source label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// Where an invalidation came from.
    pub source: &'static str,
}

/// Reason label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: &'static str,
}

/// Status label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// An HTTP status code.
    pub status: u16,
}

/// The sidecar's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Requests by outcome.
    pub requests: Family<OutcomeLabel, Counter>,
    /// Origin latency.
    pub origin_duration: Histogram,
    /// Origin failures.
    pub origin_errors: Counter,
    /// Lookup latency.
    pub lookup_duration: Histogram,
    /// Bytes stored.
    pub stored_bytes: Counter,
    /// Invalidations by source.
    pub invalidations: Family<SourceLabel, Counter>,
    /// Stale served by reason.
    pub stale_served: Family<ReasonLabel, Counter>,
    /// Weakened copies of minted validators seen.
    pub weakened_validators: Counter,
    /// Informational answers from the origin, by status.
    pub informational: Family<StatusLabel, Counter>,
    /// Requests refused with 503 over `--max-in-flight`.
    pub overload_refused: Counter,
    /// Origin bodies cut by `--origin-body-timeout`.
    pub origin_body_timeouts: Counter,
    registry: parking_lot::Mutex<Option<Registry>>,
}

impl Metrics {
    /// Creates the metrics and registers them with the engine's collector.
    pub fn new(cache: Cache) -> Arc<Self> {
        let latency = || Histogram::new(exponential_buckets(0.000_05, 2.0, 18));
        let metrics = Self {
            requests: Family::default(),
            origin_duration: latency(),
            origin_errors: Counter::default(),
            lookup_duration: latency(),
            stored_bytes: Counter::default(),
            invalidations: Family::default(),
            stale_served: Family::default(),
            weakened_validators: Counter::default(),
            informational: Family::default(),
            overload_refused: Counter::default(),
            origin_body_timeouts: Counter::default(),
            registry: parking_lot::Mutex::new(None),
        };
        let mut registry = Registry::with_prefix("etagd");
        registry.register("requests", "Requests by outcome", metrics.requests.clone());
        registry.register(
            "origin_request_duration_seconds",
            "Time to the origin's response headers",
            metrics.origin_duration.clone(),
        );
        registry.register("origin_errors", "Origin requests that failed", metrics.origin_errors.clone());
        registry.register(
            "store_lookup_duration_seconds",
            "Time of one cache lookup, all store rounds",
            metrics.lookup_duration.clone(),
        );
        registry.register("stored_bytes", "Body bytes written by fills", metrics.stored_bytes.clone());
        registry.register("invalidations", "Invalidation calls by source", metrics.invalidations.clone());
        registry.register("stale_served", "Stale entries served, by reason", metrics.stale_served.clone());
        registry.register(
            "weakened_validators",
            "Conditional requests carrying a W/ copy of a strong tag etagd minted (a proxy in front rewrites ETags)",
            metrics.weakened_validators.clone(),
        );
        registry.register(
            "origin_informational",
            "Informational (1xx) answers the origin sent before its final one",
            metrics.informational.clone(),
        );
        registry.register(
            "overload_refused",
            "Requests answered 503 because --max-in-flight requests were already running",
            metrics.overload_refused.clone(),
        );
        registry.register(
            "origin_body_timeouts",
            "Origin bodies cut because no frame came within --origin-body-timeout",
            metrics.origin_body_timeouts.clone(),
        );
        registry.register_collector(Box::new(EngineCollector { cache }));
        *metrics.registry.lock() = Some(registry);
        Arc::new(metrics)
    }

    /// Counts one informational answer from the origin.
    pub fn informational(&self, status: http::StatusCode) {
        self.informational.get_or_create(&StatusLabel { status: status.as_u16() }).inc();
    }

    /// Renders the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(registry) = self.registry.lock().as_ref() {
            // Writing into a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut out, registry);
        }
        out
    }
}

impl Observer for Metrics {
    fn report(&self, report: &Report) {
        if let Some(origin) = report.origin {
            self.origin_duration.observe(origin.as_secs_f64());
        }
        if report.origin_error {
            self.origin_errors.inc();
        }
        self.stored_bytes.inc_by(report.stored_bytes);
        for trigger in &report.invalidations {
            self.invalidations.get_or_create(&SourceLabel { source: trigger.as_str() }).inc();
        }
        // A background refresh is not a client's request.
        if report.background {
            return;
        }
        self.requests.get_or_create(&OutcomeLabel { outcome: report.label() }).inc();
        if let Some(lookup) = report.lookup {
            self.lookup_duration.observe(lookup.as_secs_f64());
        }
        if let Some(reason) = report.outcome.stale_reason() {
            self.stale_served.get_or_create(&ReasonLabel { reason }).inc();
        }
        if report.weakened {
            self.weakened_validators.inc();
        }
    }
}

/// Reads the engine's counters and the store's health at scrape time.
#[derive(Debug)]
pub struct EngineCollector {
    cache: Cache,
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = self.cache.counters();
        let e = &mut encoder;
        counter(e, "store_errors", "Store operations that failed; requests fell back to the origin", c.store_errors)?;
        counter(e, "corrupt_items", "Stored items that did not decode, read as misses", c.corrupt_items)?;
        counter(e, "leases_won", "Fill leases won by this process", c.leases_won)?;
        counter(e, "leases_busy", "Fill leases found held by another caller", c.leases_busy)?;
        counter(e, "fills_stored", "Fills stored", c.fills_stored)?;
        counter(e, "fills_invalidated", "Fills refused: an invalidation landed during the fill", c.fills_invalidated)?;
        counter(e, "fills_raced", "Fills that lost a race with another writer", c.fills_raced)?;
        counter(e, "codings_added", "Content codings added to stored entries on first demand", c.codings_added)?;
        counter(e, "body_cache_hits", "Bodies served from process memory", c.body_cache_hits)?;
        counter(e, "body_store_reads", "Bodies read from the store", c.body_store_reads)?;
        counter(e, "invalidation_targets_ok", "Invalidation targets written", c.invalidations)?;
        counter(e, "invalidation_targets_failed", "Invalidation targets not written", c.invalidation_failures)?;
        gauge(e, "body_cache_bytes", "Bytes of bodies held in process", c.body_cache_bytes as i64)?;
        gauge(e, "fills_in_flight", "Fills running in this process", c.fills_in_flight as i64)?;
        let down = self.cache.store().health().iter().filter(|h| !h.up).count();
        gauge(e, "memcached_servers_down", "Memcached servers currently marked down", down as i64)?;
        Ok(())
    }
}
