//! [`Outcome`]: what the exchange did with one request. It is the single source of the `Cache-Status` value
//! (RFC 9211), the `outcome` metrics label and the access log's fields, so the three can never disagree.

use std::borrow::Cow;

use crate::cacheability::NoStoreReason;
use crate::reply::{CacheStatus, Fwd};

use super::policy::RequestBypass;

/// What became of an origin answer offered to the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filled {
    /// Stored, or being stored: the cache decided to store it (RFC 9211 section 2.6), and a plain GET under a
    /// lease is answered before the commit lands (requests meanwhile wait for it).
    Stored,
    /// Not storable (RFC 9111 section 3), or too large.
    NotStored(NoStoreReason),
    /// Stored with its identity body only: compressible, but above the size compression stops at
    /// ([`crate::encoding::CompressionPolicy::max_bytes`]).
    IdentityOnly,
    /// Streamed to the client as it arrived while the fill stores it (a body larger than one store item).
    /// `Cache-Status` says `stored` (RFC 9211 section 2.6: the cache decided to store it): the answer's head
    /// goes out before the commit lands, so a commit that then loses to an invalidation or a store failure is
    /// told only in the log, as a buffered fill's lost commit would be by the next request. `identity_only`:
    /// the announced length is above the compression limit, so only identity is stored.
    Streamed {
        /// Only identity is stored (see [`Filled::IdentityOnly`]).
        identity_only: bool,
    },
    /// Storable, but above the admission limit (a fraction of the smallest server's memory): stored, it would
    /// evict too much else.
    NotAdmitted,
    /// An invalidation landed while the origin was answering, so the answer was not stored (it would be stale).
    Invalidated,
    /// Another writer stored this entry first.
    Raced,
    /// The store refused the write; the answer was served anyway.
    StoreFailed,
    /// The origin's body broke off.
    BodyError,
    /// Another caller holds the right to refresh this entry: answered without storing.
    NoLease,
    /// An origin 5xx during a refresh: the stale entry is kept, nothing is stored.
    KeptStale,
    /// A HEAD answer described another representation: the stored one was marked stale (RFC 9111 section
    /// 4.3.5), the answer relayed.
    MarkedStale,
}

impl Filled {
    fn detail(self) -> Option<&'static str> {
        match self {
            Filled::Stored => None,
            Filled::NotStored(reason) => Some(reason.detail()),
            Filled::NotAdmitted => Some("too-large-for-memory"),
            Filled::IdentityOnly => Some("identity-only"),
            Filled::Streamed { identity_only: false } => Some("streamed-fill"),
            Filled::Streamed { identity_only: true } => Some("streamed-fill-identity-only"),
            Filled::Invalidated => Some("invalidated-during-fill"),
            Filled::Raced => Some("lost-race"),
            Filled::StoreFailed => Some("store-unavailable"),
            Filled::BodyError => Some("origin-body-error"),
            Filled::NoLease => Some("refresh-busy"),
            Filled::KeptStale => Some("kept-stale"),
            Filled::MarkedStale => Some("marked-stale"),
        }
    }
}

/// What the exchange did with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from a fresh stored response.
    Hit,
    /// Answered from a stale response while one caller in the fleet refreshes it (RFC 5861 section 3).
    StaleWhileRevalidate,
    /// Answered from a soft-invalidated response within its grace period, while one caller refreshes it.
    Grace,
    /// Answered from a stale response because the origin failed (RFC 5861 section 4).
    StaleIfError,
    /// Answered from a stale response because the origin is at its concurrency limit.
    StaleOverloaded,
    /// Answered from a stale response the client accepts with `max-stale` (RFC 9111 section 5.2.1.2).
    MaxStale,
    /// Nothing usable was stored: the origin answered, and this is what became of its answer.
    Miss(Filled),
    /// The stored response was stale: the origin sent a new one (RFC 9111 section 4.3.3).
    Refreshed(Filled),
    /// The stored response was stale and the origin confirmed it with a 304 (RFC 9111 section 4.3.4).
    Revalidated,
    /// The entry was current but its body item was gone (evicted): the origin answered.
    BodyMissing(Filled),
    /// Another caller's fill took longer than the fill wait: the origin answered, nothing was stored.
    FillWaitTimeout,
    /// The store failed: the origin answered, nothing was stored.
    StoreUnavailable,
    /// The resource answered something unstorable recently (hit-for-pass): straight to the origin.
    HitForPass(Option<NoStoreReason>),
    /// The request itself asks for something the cache does not answer from storage.
    Request(RequestBypass),
    /// The method is not GET or HEAD: forwarded, and on success it invalidated its targets.
    Method,
    /// The origin did not answer and nothing stale could stand in.
    OriginUnavailable,
    /// The origin is at its concurrency limit and nothing stale could stand in: 503.
    Overloaded,
}

impl Outcome {
    /// The `outcome` label of `etagd_requests_total` and of the access log (`not_modified` when the client got
    /// a 304 from storage).
    pub fn label(self, not_modified: bool) -> &'static str {
        match self {
            outcome if not_modified && outcome.is_hit() => "not_modified",
            Outcome::Hit => "hit",
            Outcome::StaleWhileRevalidate
            | Outcome::Grace
            | Outcome::StaleIfError
            | Outcome::StaleOverloaded
            | Outcome::MaxStale => "stale",
            Outcome::Miss(_)
            | Outcome::Refreshed(_)
            | Outcome::Revalidated
            | Outcome::BodyMissing(_)
            | Outcome::FillWaitTimeout
            | Outcome::StoreUnavailable => "miss",
            Outcome::HitForPass(_) | Outcome::Request(_) => "pass",
            Outcome::Method => "bypass",
            Outcome::OriginUnavailable => "error",
            Outcome::Overloaded => "overloaded",
        }
    }

    /// Why a stale entry was served (`etagd_stale_served_total{reason}`), for the outcomes that served one.
    pub fn stale_reason(self) -> Option<&'static str> {
        match self {
            Outcome::StaleWhileRevalidate => Some("while_revalidate"),
            Outcome::Grace => Some("grace"),
            Outcome::StaleIfError => Some("if_error"),
            Outcome::StaleOverloaded => Some("origin_overloaded"),
            Outcome::MaxStale => Some("max_stale"),
            _ => None,
        }
    }

    /// Whether the answer came from storage.
    pub fn is_hit(self) -> bool {
        matches!(
            self,
            Outcome::Hit
                | Outcome::StaleWhileRevalidate
                | Outcome::Grace
                | Outcome::StaleIfError
                | Outcome::StaleOverloaded
                | Outcome::MaxStale
        )
    }

    /// Whether the origin's answer was stored.
    pub fn stored(self) -> bool {
        matches!(
            self,
            Outcome::Miss(Filled::Stored | Filled::IdentityOnly | Filled::Streamed { .. })
                | Outcome::Refreshed(Filled::Stored | Filled::IdentityOnly | Filled::Streamed { .. })
                | Outcome::BodyMissing(Filled::Stored | Filled::IdentityOnly | Filled::Streamed { .. })
                | Outcome::Revalidated
        )
    }

    /// The `Cache-Status` `detail` (RFC 9211 section 2.7).
    pub fn detail(self) -> Option<Cow<'static, str>> {
        let text = match self {
            Outcome::Hit | Outcome::Method | Outcome::Revalidated => None,
            Outcome::StaleWhileRevalidate => Some("stale-while-revalidate"),
            Outcome::Grace => Some("grace"),
            Outcome::StaleIfError => Some("stale-if-error"),
            Outcome::StaleOverloaded => Some("stale-origin-overloaded"),
            Outcome::MaxStale => Some("max-stale"),
            Outcome::Miss(filled) | Outcome::Refreshed(filled) => filled.detail(),
            Outcome::BodyMissing(Filled::Stored) => Some("body-missing"),
            Outcome::BodyMissing(filled) => {
                return filled.detail().map(|detail| Cow::Owned(format!("body-missing-{detail}")));
            }
            Outcome::FillWaitTimeout => Some("fill-wait-timeout"),
            Outcome::StoreUnavailable => Some("store-unavailable"),
            Outcome::HitForPass(None) => Some("hit-for-pass"),
            Outcome::HitForPass(Some(reason)) => {
                return Some(Cow::Owned(format!("hit-for-pass-{}", reason.detail())));
            }
            Outcome::Request(bypass) => Some(bypass.as_str()),
            Outcome::OriginUnavailable => Some("origin-unavailable"),
            Outcome::Overloaded => Some("origin-overloaded"),
        };
        text.map(Cow::Borrowed)
    }

    /// The `Cache-Status` member: `hit` or why the request was forwarded, plus the origin's status, whether its
    /// answer was stored, the freshness left and the detail.
    pub fn cache_status(self, fwd_status: Option<u16>, ttl: Option<i64>) -> CacheStatus {
        let fwd = match self {
            Outcome::Hit
            | Outcome::StaleWhileRevalidate
            | Outcome::Grace
            | Outcome::StaleIfError
            | Outcome::StaleOverloaded
            | Outcome::MaxStale => None,
            Outcome::Miss(_) => Some(Fwd::UriMiss),
            Outcome::Refreshed(_) | Outcome::Revalidated => Some(Fwd::Stale),
            Outcome::BodyMissing(_) | Outcome::FillWaitTimeout | Outcome::StoreUnavailable => Some(Fwd::Miss),
            Outcome::OriginUnavailable | Outcome::Overloaded => Some(Fwd::Miss),
            Outcome::HitForPass(_) => Some(Fwd::Bypass),
            Outcome::Request(_) => Some(Fwd::Request),
            Outcome::Method => Some(Fwd::Method),
        };
        let mut status = match fwd {
            None => CacheStatus::hit(ttl),
            Some(fwd) => CacheStatus::forward(fwd),
        };
        if let Some(code) = fwd_status {
            status = status.fwd_status(code);
        }
        if self.stored() {
            status = status.stored(ttl);
        }
        if let Some(detail) = self.detail() {
            status = status.detail(detail);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9211 section 2: each outcome names itself one way, in the header and in the metrics label.
    #[test]
    fn outcomes_name_their_cache_status_and_label() {
        type Case = (Outcome, bool, Option<u16>, Option<i64>, &'static str, &'static str);
        let cases: &[Case] = &[
            (Outcome::Hit, false, None, Some(42), "etagd; hit; ttl=42", "hit"),
            (Outcome::Hit, true, None, None, "etagd; hit", "not_modified"),
            (
                Outcome::StaleWhileRevalidate,
                false,
                None,
                Some(-3),
                "etagd; hit; ttl=-3; detail=stale-while-revalidate",
                "stale",
            ),
            (Outcome::Grace, true, None, None, "etagd; hit; detail=grace", "not_modified"),
            (Outcome::StaleIfError, false, None, None, "etagd; hit; detail=stale-if-error", "stale"),
            (
                Outcome::Miss(Filled::Stored),
                false,
                Some(200),
                Some(60),
                "etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60",
                "miss",
            ),
            (
                Outcome::Miss(Filled::Stored),
                false,
                Some(200),
                None,
                "etagd; fwd=uri-miss; fwd-status=200; stored",
                "miss",
            ),
            // RFC 9211 section 2.6: `stored` says the cache stores the answer; a streamed fill decided to before
            // its head went out, and says so like a buffered one.
            (
                Outcome::Miss(Filled::Streamed { identity_only: false }),
                false,
                Some(200),
                Some(60),
                "etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60; detail=streamed-fill",
                "miss",
            ),
            (
                Outcome::Miss(Filled::Streamed { identity_only: true }),
                false,
                Some(200),
                None,
                "etagd; fwd=uri-miss; fwd-status=200; stored; detail=streamed-fill-identity-only",
                "miss",
            ),
            (
                Outcome::Miss(Filled::IdentityOnly),
                false,
                Some(200),
                None,
                "etagd; fwd=uri-miss; fwd-status=200; stored; detail=identity-only",
                "miss",
            ),
            (
                Outcome::Miss(Filled::NotStored(NoStoreReason::SetCookie)),
                false,
                Some(200),
                None,
                "etagd; fwd=uri-miss; fwd-status=200; detail=set-cookie",
                "miss",
            ),
            (
                Outcome::Miss(Filled::Invalidated),
                false,
                Some(200),
                None,
                "etagd; fwd=uri-miss; fwd-status=200; detail=invalidated-during-fill",
                "miss",
            ),
            (
                Outcome::Revalidated,
                false,
                Some(304),
                Some(10),
                "etagd; fwd=stale; fwd-status=304; stored; ttl=10",
                "miss",
            ),
            (
                Outcome::Refreshed(Filled::KeptStale),
                false,
                Some(503),
                None,
                "etagd; fwd=stale; fwd-status=503; detail=kept-stale",
                "miss",
            ),
            (
                Outcome::BodyMissing(Filled::Stored),
                false,
                Some(200),
                None,
                "etagd; fwd=miss; fwd-status=200; stored; detail=body-missing",
                "miss",
            ),
            (
                Outcome::FillWaitTimeout,
                false,
                Some(200),
                None,
                "etagd; fwd=miss; fwd-status=200; detail=fill-wait-timeout",
                "miss",
            ),
            (
                Outcome::StoreUnavailable,
                false,
                Some(200),
                None,
                "etagd; fwd=miss; fwd-status=200; detail=store-unavailable",
                "miss",
            ),
            (
                Outcome::HitForPass(Some(NoStoreReason::NoStore)),
                false,
                Some(200),
                None,
                "etagd; fwd=bypass; fwd-status=200; detail=hit-for-pass-no-store",
                "pass",
            ),
            (
                Outcome::Request(RequestBypass::Preconditions),
                false,
                Some(412),
                None,
                "etagd; fwd=request; fwd-status=412; detail=preconditions",
                "pass",
            ),
            (Outcome::Method, false, Some(201), None, "etagd; fwd=method; fwd-status=201", "bypass"),
            (Outcome::OriginUnavailable, false, None, None, "etagd; fwd=miss; detail=origin-unavailable", "error"),
        ];
        for (outcome, not_modified, fwd_status, ttl, header, label) in cases {
            let value = outcome.cache_status(*fwd_status, *ttl).to_header_value();
            assert_eq!(value.to_str().unwrap(), *header, "{outcome:?}");
            assert_eq!(outcome.label(*not_modified), *label, "{outcome:?}");
        }
    }
}
