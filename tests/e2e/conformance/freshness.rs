//! Freshness (RFC 9111 section 4.2): the freshness lifetime from `s-maxage`, `max-age` and `Expires` in that
//! order (4.2.1), heuristics only when configured (4.2.2), `Expires` in every date format a recipient must read
//! (5.3, RFC 9110 section 5.6.7), and delta-seconds past 2^31 (1.2.2). Staleness comes from the origin (`Age`,
//! `max-age=0`, `Expires` in the past), never from waiting.

use crate::table::{Case, Is, case, get, serve};

/// A date far enough ahead to be fresh for decades and below 2^31 s from now.
const FUTURE: &str = "Wed, 01 Jan 2070 00:00:00 GMT";
const PAST: &str = "Thu, 01 Jan 1970 00:00:00 GMT";

const CASES: &[Case] = &[
    case(
        "RFC 9111 4.2.1: s-maxage takes precedence over max-age in a shared cache",
        &[serve("/s-maxage-wins", &[("cache-control", "max-age=0, s-maxage=60")])],
        &[get("/s-maxage-wins").stored(), get("/s-maxage-wins").hit()],
    ),
    case(
        "RFC 9111 4.2.1: s-maxage=0 makes a max-age=60 response stale for a shared cache",
        &[serve("/s-maxage-zero", &[("cache-control", "max-age=60, s-maxage=0")])],
        &[get("/s-maxage-zero").calls(1), get("/s-maxage-zero").calls(1)],
    ),
    case(
        "RFC 9111 4.2.1: max-age takes precedence over Expires",
        &[serve("/max-age-over-expires", &[("cache-control", "max-age=60"), ("expires", PAST)])],
        &[get("/max-age-over-expires").stored(), get("/max-age-over-expires").hit()],
    ),
    case(
        "RFC 9111 4.2.1: max-age=0 is stale at once",
        &[serve("/max-age-zero", &[("cache-control", "max-age=0")])],
        &[get("/max-age-zero").calls(1), get("/max-age-zero").calls(1)],
    ),
    case(
        "RFC 9111 5.3: Expires in the future (IMF-fixdate) gives freshness",
        &[serve("/expires-future", &[("expires", FUTURE)])],
        &[get("/expires-future").stored(), get("/expires-future").hit().headers(&[("expires", Is::Eq(FUTURE))])],
    ),
    case(
        "RFC 9111 5.3 / RFC 9110 5.6.7: Expires as an RFC 850 date is read",
        &[serve("/expires-rfc850", &[("expires", "Thursday, 01-Jan-37 00:00:00 GMT")])],
        &[get("/expires-rfc850").stored(), get("/expires-rfc850").hit()],
    ),
    case(
        "RFC 9111 5.3 / RFC 9110 5.6.7: Expires as an asctime date is read",
        &[serve("/expires-asctime", &[("expires", "Wed Jan  1 00:00:00 2070")])],
        &[get("/expires-asctime").stored(), get("/expires-asctime").hit()],
    ),
    case(
        "RFC 9111 4.2: Expires with wrong-case weekday, month and zone is read leniently",
        &[serve("/expires-lowercase", &[("expires", "wed, 01 jan 2070 00:00:00 gmt")])],
        &[get("/expires-lowercase").stored(), get("/expires-lowercase").hit()],
    ),
    case(
        "RFC 9111 5.3: Expires in the past is stale",
        &[serve("/expires-past", &[("expires", PAST)])],
        &[get("/expires-past").calls(1), get("/expires-past").calls(1)],
    ),
    case(
        "RFC 9111 5.3: an Expires that cannot be read (\"0\") means already expired",
        &[serve("/expires-zero", &[("expires", "0")])],
        &[get("/expires-zero").calls(1), get("/expires-zero").calls(1)],
    ),
    case(
        "RFC 9111 5.3: an unreadable Expires does not override max-age",
        &[serve("/expires-bad-max-age", &[("cache-control", "max-age=60"), ("expires", "soon")])],
        &[get("/expires-bad-max-age").stored(), get("/expires-bad-max-age").hit()],
    ),
    case(
        "RFC 9111 1.2.2: max-age=2147483648 is reused",
        &[serve("/max-age-2-31", &[("cache-control", "max-age=2147483648")])],
        &[get("/max-age-2-31").stored(), get("/max-age-2-31").hit()],
    ),
    case(
        "RFC 9111 1.2.2: a delta-seconds too large for any integer is read as 2^31",
        &[serve("/max-age-huge", &[("cache-control", "max-age=99999999999999999999")])],
        &[get("/max-age-huge").stored(), get("/max-age-huge").hit()],
    ),
    case(
        "RFC 9111 1.2.2 / 4.2.1: a max-age that is not a number gives no freshness",
        &[serve("/max-age-junk", &[("cache-control", "max-age=soon")])],
        &[get("/max-age-junk").calls(1), get("/max-age-junk").calls(1)],
    ),
    case(
        "RFC 9111 5.2.2.4: no-cache is never reused without validation",
        &[serve("/no-cache", &[("cache-control", "no-cache, max-age=60"), ("etag", "\"nc1\"")])],
        &[get("/no-cache").calls(1), get("/no-cache").calls(1).body(Is::Eq("/no-cache v1"))],
    ),
    case(
        "RFC 9111 4.2.2: without explicit freshness (heuristics off by default) nothing is reused",
        &[serve("/no-freshness", &[("last-modified", "Sat, 01 Jan 2000 00:00:00 GMT")])],
        // (The sidecar reports `detail=no-freshness`; the layer, built with `ttl(0)`, stores it stale at once.)
        &[get("/no-freshness").calls(1), get("/no-freshness").calls(1)],
    ),
    case(
        "RFC 9111 4.2.2: heuristic freshness from Last-Modified, when configured",
        &[serve("/heuristic", &[("last-modified", "Sat, 01 Jan 2000 00:00:00 GMT")])],
        &[get("/heuristic").stored(), get("/heuristic").hit()],
    )
    .sidecar_toml("heuristic_freshness = true\n")
    .sidecar_only("the layer's builder has no heuristic_freshness setting"),
    case(
        "RFC 9111 4.2.2: no heuristic freshness for a status that is not heuristically cacheable (302)",
        &[serve("/heuristic-302", &[("last-modified", "Sat, 01 Jan 2000 00:00:00 GMT"), ("location", "/x")])
            .status(302)],
        &[get("/heuristic-302").status(302).calls(1), get("/heuristic-302").status(302).calls(1)],
    )
    .sidecar_toml("heuristic_freshness = true\n")
    .sidecar_only("the layer's builder has no heuristic_freshness setting"),
    case(
        "RFC 9110 5.6.7: a two-digit RFC 850 year less than 50 years ahead is in this century (70 is 2070)",
        &[serve("/expires-rfc850-70", &[("expires", "Wednesday, 01-Jan-70 00:00:00 GMT")])],
        &[get("/expires-rfc850-70").stored(), get("/expires-rfc850-70").hit()],
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness() {
    crate::table::run("freshness", CASES).await;
}
