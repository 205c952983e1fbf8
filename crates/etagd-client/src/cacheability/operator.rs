//! The operator's lifetime rules of a route, beyond the RFCs (what Varnish's `beresp.ttl` and CDN "edge TTL"
//! settings do): `ttl`, `negative_ttl`, `ttl_override` and `ttl_max`. [`storable`](super::storable) applies
//! them after the RFC 9111 refusals, which they never undo:
//!
//! - `no-store`, `private`, `Set-Cookie`, `Authorization` without `public`, `Vary: *` are refusals to store, not
//!   lifetimes: no route rule stores such a response.
//! - `no-cache` stays a lifetime of 0 (revalidate on every use, RFC 9111 section 5.2.2.4).
//! - `must-revalidate`, `proxy-revalidate` and `s-maxage` (RFC 9111 section 5.2.2.10: it implies
//!   `proxy-revalidate` for a shared cache) still forbid serving stale, whatever lifetime a rule sets; the stale
//!   windows (`stale-while-revalidate`, `stale-if-error`, from the response or the route) are untouched by them.
//!
//! The rules, in the order they apply:
//!
//! 1. Without explicit freshness (`s-maxage`, `max-age`, `Expires`), a heuristically cacheable status (RFC 9110
//!    section 15.1) or a `public` response gets the route's `ttl`, or for 404 and 410 its `negative_ttl` when it
//!    has one (negative caching, RFC 9111 section 4.2.2 lists both statuses); then, if enabled, the heuristic.
//! 2. `ttl_override` replaces the lifetime, explicit or not, of those same statuses (404 and 410 get
//!    `negative_ttl` instead when the route has one). It counts from when etagd stores the response, so an
//!    `Age` the response arrived with does not eat into it. Other statuses (a 500 with `max-age`) keep the
//!    origin's lifetime: a rule never pins an error page the origin did not ask to cache for that long.
//! 3. `ttl_max` caps every lifetime (after the rules above, any status), also counted from storing: a response
//!    is never served from storage without asking the origin for longer than `ttl_max`.
//!
//! [`Policy::check_lifetimes`] refuses the combinations that contradict each other.

use http::StatusCode;

use super::Policy;

/// A combination of route lifetimes that contradict each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LifetimeError {
    /// `ttl_override` already applies to responses without freshness.
    #[error("ttl_override replaces every lifetime, including the missing ones ttl would fill in: drop ttl")]
    OverrideWithTtl,
    /// `ttl_override` and `ttl_max` both set.
    #[error("ttl_override sets the lifetime and ttl_max caps the origin's: use one (ttl_override alone, or ttl_max)")]
    OverrideWithMax,
    /// A route lifetime above the route's own cap.
    #[error("{name} ({}) is above ttl_max ({max}s): lower it to ttl_max or less, or raise ttl_max", shown(*.value))]
    AboveMax {
        /// `ttl` or `negative_ttl`.
        name: &'static str,
        /// Its value, seconds.
        value: u64,
        /// The cap, seconds.
        max: u64,
    },
    /// `ttl_max` of "forever" caps nothing.
    #[error("ttl_max = forever caps nothing: leave ttl_max out, or give a duration such as 5m")]
    MaxForever,
}

/// A lifetime as an operator wrote it.
fn shown(seconds: u64) -> String {
    if seconds == u64::MAX { "forever".to_owned() } else { format!("{seconds}s") }
}

/// Statuses that a route's `negative_ttl` covers: "not found" and "gone".
pub(super) fn is_negative(status: StatusCode) -> bool {
    matches!(status.as_u16(), 404 | 410)
}

impl Policy {
    /// Refuses contradicting route lifetimes (each a configuration error, named so it can be fixed).
    pub fn check_lifetimes(&self) -> Result<(), LifetimeError> {
        if self.ttl_override_s.is_some() && self.route_ttl_s.is_some() {
            return Err(LifetimeError::OverrideWithTtl);
        }
        if self.ttl_override_s.is_some() && self.ttl_max_s.is_some() {
            return Err(LifetimeError::OverrideWithMax);
        }
        if let Some(max) = self.ttl_max_s {
            if max == u64::MAX {
                return Err(LifetimeError::MaxForever);
            }
            for (name, value) in [("ttl", self.route_ttl_s), ("negative_ttl", self.negative_ttl_s)] {
                if let Some(value) = value.filter(|&value| value > max) {
                    return Err(LifetimeError::AboveMax { name, value, max });
                }
            }
        }
        Ok(())
    }

    /// Rule 1: the route's lifetime for a response that gives none.
    pub(super) fn route_default(&self, status: StatusCode) -> Option<u64> {
        if is_negative(status) { self.negative_ttl_s.or(self.route_ttl_s) } else { self.route_ttl_s }
    }

    /// Rules 2 and 3: the lifetime after the route's override and cap. `lifetime` is the response's (explicit, or
    /// from rule 1), `implicit_allowed` whether the status may take a route lifetime at all, `initial_age_s` the
    /// `Age` it arrived with (RFC 9111 section 4.2.3), which a lifetime counted from storing must add.
    pub(super) fn bound_lifetime(
        &self,
        status: StatusCode,
        lifetime: Option<u64>,
        implicit_allowed: bool,
        initial_age_s: u64,
    ) -> Option<u64> {
        let forced = self.ttl_override_s.filter(|_| implicit_allowed).map(|forced| {
            let forced = if is_negative(status) { self.negative_ttl_s.unwrap_or(forced) } else { forced };
            initial_age_s.saturating_add(forced)
        });
        let lifetime = forced.or(lifetime)?;
        Some(match self.ttl_max_s {
            Some(max) => lifetime.min(initial_age_s.saturating_add(max)),
            None => lifetime,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use http::{HeaderMap, HeaderName, HeaderValue, Method};

    use super::super::{Freshness, NoStoreReason, storable};
    use super::*;

    type Outcome = Result<Freshness, NoStoreReason>;
    /// A status, response header lines, and what `storable` must decide.
    type Case<'a> = (u16, &'a [(&'a str, &'a str)], Outcome);

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn lifetime(fresh_for_s: u64, must_revalidate: bool, swr: u32) -> Freshness {
        Freshness { fresh_for_s, initial_age_s: 0, stale_while_revalidate_s: swr, stale_if_error_s: 0, must_revalidate }
    }

    fn fresh(seconds: u64) -> Outcome {
        Ok(lifetime(seconds, false, 0))
    }

    fn run(policy: &Policy, status: u16, lines: &[(&str, &str)]) -> Outcome {
        let mut headers = HeaderMap::new();
        for (name, value) in lines {
            headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        let status = StatusCode::from_u16(status).unwrap();
        storable(&Method::GET, &HeaderMap::new(), status, &headers, policy, now())
    }

    fn check(policy: &Policy, cases: &[Case<'_>]) {
        for (status, lines, expected) in cases {
            assert_eq!(&run(policy, *status, lines), expected, "{status} {lines:?} with {policy:?}");
        }
    }

    const MAX_AGE_5: &[(&str, &str)] = &[("cache-control", "max-age=5")];
    const NOTHING: &[(&str, &str)] = &[];

    /// Beyond the RFCs: `ttl_override` replaces the origin's lifetime of a storable response, never a refusal.
    #[test]
    fn ttl_override_replaces_lifetimes_but_never_refusals() {
        let policy = Policy { ttl_override_s: Some(3600), ..Policy::default() };
        check(
            &policy,
            &[
                (200, MAX_AGE_5, fresh(3600)),
                (200, &[("cache-control", "max-age=99999")], fresh(3600)),
                (200, &[("expires", "0")], fresh(3600)),
                (200, NOTHING, fresh(3600)),
                (301, NOTHING, fresh(3600)),
                // Counted from storing: the Age the response arrived with is added.
                (
                    200,
                    &[("cache-control", "max-age=5"), ("age", "100")],
                    Ok(Freshness { initial_age_s: 100, ..lifetime(3700, false, 0) }),
                ),
                // RFC 9111 sections 5.2.2.5, 5.2.2.7, 3.5 and etagd's Set-Cookie rule: refusals stay refusals.
                (200, &[("cache-control", "no-store, max-age=5")], Err(NoStoreReason::NoStore)),
                (200, &[("cache-control", "private, max-age=5")], Err(NoStoreReason::Private)),
                (200, &[("cache-control", "max-age=5"), ("set-cookie", "a=b")], Err(NoStoreReason::SetCookie)),
                (200, &[("cache-control", "max-age=5"), ("vary", "*")], Err(NoStoreReason::VaryStar)),
                // RFC 9111 section 5.2.2.4: no-cache is "revalidate every time", not a lifetime to replace.
                (200, &[("cache-control", "no-cache")], Ok(lifetime(0, true, 0))),
                // RFC 9111 section 5.2.2.10: s-maxage still forbids serving stale; only the lifetime changes.
                (200, &[("cache-control", "s-maxage=1, stale-while-revalidate=59")], Ok(lifetime(3600, true, 0))),
                (200, &[("cache-control", "max-age=1, stale-while-revalidate=59")], Ok(lifetime(3600, false, 59))),
                // A status that is not heuristically cacheable keeps the origin's own lifetime, and needs one.
                (500, MAX_AGE_5, fresh(5)),
                (500, NOTHING, Err(NoStoreReason::Status)),
                (500, &[("cache-control", "public")], fresh(3600)),
            ],
        );
        // 404 and 410 get negative_ttl in its place when the route has one.
        let negative = Policy { negative_ttl_s: Some(30), ..policy };
        check(&negative, &[(404, MAX_AGE_5, fresh(30)), (410, NOTHING, fresh(30)), (200, MAX_AGE_5, fresh(3600))]);
    }

    /// Beyond the RFCs: `ttl_max` caps every lifetime, whatever its source.
    #[test]
    fn ttl_max_caps_every_lifetime() {
        let policy = Policy { ttl_max_s: Some(60), ..Policy::default() };
        check(
            &policy,
            &[
                (200, &[("cache-control", "max-age=3600")], fresh(60)),
                (200, &[("cache-control", "s-maxage=3600")], Ok(lifetime(60, true, 0))),
                (200, MAX_AGE_5, fresh(5)),
                (500, &[("cache-control", "max-age=3600")], fresh(60)),
                (200, NOTHING, Err(NoStoreReason::NoFreshness)),
                (
                    200,
                    &[("cache-control", "max-age=3600"), ("age", "100")],
                    Ok(Freshness { initial_age_s: 100, ..lifetime(160, false, 0) }),
                ),
                // The stale windows stay what the response says.
                (200, &[("cache-control", "max-age=3600, stale-while-revalidate=30")], Ok(lifetime(60, false, 30))),
                (200, &[("cache-control", "no-store, max-age=3600")], Err(NoStoreReason::NoStore)),
            ],
        );
        let with_ttl = Policy { route_ttl_s: Some(30), ..policy.clone() };
        check(&with_ttl, &[(200, NOTHING, fresh(30)), (200, &[("cache-control", "max-age=3600")], fresh(60))]);
        // The lifetimes a cap also bounds: "forever" from a route and the heuristic.
        let forever = Policy { route_ttl_s: Some(u64::MAX), ..policy.clone() };
        check(&forever, &[(200, NOTHING, fresh(60))]);
        let heuristic = Policy { heuristic_freshness: true, ..policy };
        let ten_days_ago = httpdate::fmt_http_date(now() - Duration::from_secs(864_000));
        check(&heuristic, &[(200, &[("last-modified", ten_days_ago.as_str())], fresh(60))]);
    }

    /// RFC 9111 section 4.2.2: 404 and 410 are heuristically cacheable, so a route may store them without
    /// explicit freshness; `negative_ttl` sets their lifetime apart from the route's `ttl`.
    #[test]
    fn negative_ttl_covers_not_found_and_gone_only() {
        let policy = Policy { negative_ttl_s: Some(30), ..Policy::default() };
        check(
            &policy,
            &[
                (404, NOTHING, fresh(30)),
                (410, NOTHING, fresh(30)),
                // The origin's own freshness wins, as for a route ttl.
                (404, MAX_AGE_5, fresh(5)),
                (404, &[("cache-control", "no-store")], Err(NoStoreReason::NoStore)),
                (404, &[("cache-control", "private")], Err(NoStoreReason::Private)),
                (200, NOTHING, Err(NoStoreReason::NoFreshness)),
                (405, NOTHING, Err(NoStoreReason::NoFreshness)),
                (500, NOTHING, Err(NoStoreReason::Status)),
            ],
        );
        // Without negative_ttl, the route ttl covers 404 and 410 like any heuristically cacheable status.
        let ttl = Policy { route_ttl_s: Some(600), ..Policy::default() };
        check(&ttl, &[(404, NOTHING, fresh(600)), (410, NOTHING, fresh(600)), (200, NOTHING, fresh(600))]);
        let both = Policy { negative_ttl_s: Some(30), ..ttl };
        check(&both, &[(404, NOTHING, fresh(30)), (200, NOTHING, fresh(600))]);
    }

    /// RFC 9111 section 5.2.2.10: `s-maxage` forbids serving stale on a shared cache, so
    /// `stale-while-revalidate` beside it does nothing in etagd; a targeted field for etagd (RFC 9213) says it.
    #[test]
    fn s_maxage_forbids_stale_and_the_targeted_field_is_the_way_to_allow_it() {
        let policy = Policy::default();
        let shared = ("cache-control", "s-maxage=1, stale-while-revalidate=59");
        check(&policy, &[(200, &[shared], Ok(lifetime(1, true, 0)))]);
        for field in ["etagd-cache-control", "cdn-cache-control"] {
            let targeted = (field, "max-age=1, stale-while-revalidate=59");
            check(&policy, &[(200, &[shared, targeted], Ok(lifetime(1, false, 59)))]);
        }
    }

    #[test]
    fn contradicting_lifetimes_are_refused() {
        let policy = |ttl, forced, max, negative| Policy {
            route_ttl_s: ttl,
            ttl_override_s: forced,
            ttl_max_s: max,
            negative_ttl_s: negative,
            ..Policy::default()
        };
        let cases = [
            (policy(None, None, None, None), Ok(())),
            (policy(Some(60), None, Some(60), Some(10)), Ok(())),
            (policy(None, Some(60), None, Some(10)), Ok(())),
            (policy(Some(60), Some(60), None, None), Err(LifetimeError::OverrideWithTtl)),
            (policy(None, Some(60), Some(60), None), Err(LifetimeError::OverrideWithMax)),
            (policy(Some(61), None, Some(60), None), Err(LifetimeError::AboveMax { name: "ttl", value: 61, max: 60 })),
            (
                policy(None, None, Some(60), Some(61)),
                Err(LifetimeError::AboveMax { name: "negative_ttl", value: 61, max: 60 }),
            ),
            (
                policy(Some(u64::MAX), None, Some(60), None),
                Err(LifetimeError::AboveMax { name: "ttl", value: u64::MAX, max: 60 }),
            ),
            (policy(None, None, Some(u64::MAX), None), Err(LifetimeError::MaxForever)),
        ];
        for (policy, expected) in cases {
            assert_eq!(policy.check_lifetimes(), expected, "{policy:?}");
        }
        assert!(LifetimeError::OverrideWithTtl.to_string().contains("drop ttl"));
        let forever = LifetimeError::AboveMax { name: "ttl", value: u64::MAX, max: 60 }.to_string();
        assert!(forever.starts_with("ttl (forever) is above ttl_max (60s)"), "{forever}");
    }
}
