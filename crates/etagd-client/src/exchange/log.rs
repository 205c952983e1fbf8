//! What one run reports: the [`Report`] handed to an [`Observer`] (the sidecar's metrics), and the access log
//! line written from it, one per request at info level, target `etagd::access`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::Method;
use http::request::Parts;

use super::outcome::{Filled, Outcome};

/// An invalidation an origin answer caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A successful unsafe method (RFC 9111 section 4.4).
    UnsafeMethod,
    /// An `Etagd-Invalidate` response header.
    Header,
}

impl Trigger {
    /// The `source` label of `etagd_invalidations_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::UnsafeMethod => "unsafe_method",
            Trigger::Header => "header",
        }
    }
}

/// What happened to one request (or one background refresh).
#[derive(Debug, Clone)]
pub struct Report {
    /// What the exchange did.
    pub outcome: Outcome,
    /// The client got a 304 from storage.
    pub not_modified: bool,
    /// The status sent to the client.
    pub status: u16,
    /// The status the origin answered with, when it was asked.
    pub fwd_status: Option<u16>,
    /// Freshness left on the entry served or stored (`None`: until invalidated, or no entry).
    pub ttl: Option<i64>,
    /// The request method.
    pub method: Method,
    /// The host the request is keyed under, when it has a key.
    pub host: Option<String>,
    /// The request target as the client sent it.
    pub target: String,
    /// Time from the request to the response head.
    pub elapsed: Duration,
    /// Time spent in the cache lookup.
    pub lookup: Option<Duration>,
    /// Time spent waiting for the origin's response heads.
    pub origin: Option<Duration>,
    /// The origin failed (connect, timeout).
    pub origin_error: bool,
    /// Body bytes written to the store (every coding).
    pub stored_bytes: u64,
    /// The client's `If-None-Match` held a `W/` copy of a strong tag etagd minted: a proxy in front weakens tags.
    pub weakened: bool,
    /// Invalidations the origin's answer caused.
    pub invalidations: Vec<Trigger>,
    /// A background refresh, not a client's request.
    pub background: bool,
}

impl Report {
    pub(crate) fn new(parts: &Parts) -> Self {
        Self {
            outcome: Outcome::Miss(Filled::NoLease),
            not_modified: false,
            status: 0,
            fwd_status: None,
            ttl: None,
            method: parts.method.clone(),
            host: None,
            target: parts.uri.path_and_query().map_or("/", |target| target.as_str()).to_owned(),
            elapsed: Duration::ZERO,
            lookup: None,
            origin: None,
            origin_error: false,
            stored_bytes: 0,
            weakened: false,
            invalidations: Vec::new(),
            background: false,
        }
    }

    /// The outcome's metrics label.
    pub fn label(&self) -> &'static str {
        self.outcome.label(self.not_modified)
    }
}

/// Receives every [`Report`]: the sidecar turns them into metrics and its access log.
pub trait Observer: Send + Sync + 'static {
    /// Called once per request, and once per background refresh, after the response head is ready.
    fn report(&self, report: &Report);

    /// Whether this observer writes the access log itself from the reports it receives. The exchange then
    /// writes no `etagd::access` event of its own (the sidecar formats the line straight from the report,
    /// which skips the subscriber's dispatch and field visiting on every request).
    fn writes_access_log(&self) -> bool {
        false
    }
}

/// Writes the access log line of a report as an `etagd::access` event: `request` at info, `background refresh`
/// at debug.
pub(crate) fn access(report: &Report) {
    let millis = |d: Duration| d.as_secs_f64() * 1000.0;
    let detail = report.outcome.detail();
    if report.background {
        tracing::debug!(
            target: "etagd::access",
            method = %report.method,
            host = report.host.as_deref().unwrap_or(""),
            path = %report.target,
            outcome = report.label(),
            detail = detail.as_deref().unwrap_or(""),
            origin_status = report.fwd_status,
            origin_ms = report.origin.map(millis),
            "background refresh"
        );
        return;
    }
    tracing::info!(
        target: "etagd::access",
        method = %report.method,
        host = report.host.as_deref().unwrap_or(""),
        path = %report.target,
        status = report.status,
        outcome = report.label(),
        detail = detail.as_deref().unwrap_or(""),
        ms = millis(report.elapsed),
        origin_ms = report.origin.map(millis),
        "request"
    );
}

/// The `Date` of answers from storage, formatted once a second rather than once a request (as hyper does for
/// its own).
#[derive(Debug, Default)]
pub(crate) struct DateCache(parking_lot::Mutex<Option<(u64, http::HeaderValue)>>);

impl DateCache {
    pub(crate) fn now(&self, now: std::time::SystemTime) -> http::HeaderValue {
        let second = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut cached = self.0.lock();
        match &*cached {
            Some((at, value)) if *at == second => value.clone(),
            _ => {
                let value = http::HeaderValue::from_str(&httpdate::fmt_http_date(now)).expect("an HTTP date is ASCII");
                *cached = Some((second, value.clone()));
                value
            }
        }
    }
}

/// Lets a message through at most once a minute, so a Memcached outage does not flood the logs.
#[derive(Debug, Default)]
pub(crate) struct RateLimited(AtomicU64);

impl RateLimited {
    /// Whether to log now (`now_ms` by the engine's clock).
    pub(crate) fn allow(&self, now_ms: u64) -> bool {
        let now = now_ms / 1000;
        let last = self.0.load(Ordering::Relaxed);
        (last == 0 || now >= last + 60)
            && self.0.compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_logs_pass_once_a_minute() {
        let limit = RateLimited::default();
        assert!(limit.allow(1_000_000));
        assert!(!limit.allow(1_030_000));
        assert!(limit.allow(1_060_000));
        assert!(!limit.allow(1_060_001));
    }
}
