//! Serving stale: RFC 5861's `stale-while-revalidate` (one background refresh, the stale body at once) and
//! `stale-if-error`, and RFC 9111 section 4.2.4's stale answer while the origin cannot be reached, which
//! `must-revalidate` (5.2.2.2), `proxy-revalidate` (5.2.2.8) and `s-maxage` (5.2.2.10) forbid. Entries are
//! stale on arrival (the origin sends an `Age` past `max-age`), so nothing waits for time to pass.

use crate::table::{Case, Is, Step, case, get, serve};

const SIDECAR_ONLY_STOP: &str = "the layer's service cannot be unreachable: it is code in the same process";

const CASES: &[Case] = &[
    case(
        "RFC 5861 3: within stale-while-revalidate the stale body is served at once and refreshed once",
        &[serve("/swr", &[("cache-control", "max-age=1, stale-while-revalidate=30"), ("age", "2")])],
        &[
            get("/swr").calls(1).body(Is::Eq("/swr v1")),
            Step::Reroute(serve("/swr", &[("cache-control", "max-age=60")]).body("refreshed")),
            get("/swr").cache("etagd; hit; ttl=*; detail=stale-while-revalidate").body(Is::Eq("/swr v1")),
            Step::Settle("/swr"),
            get("/swr").hit().body(Is::Eq("refreshed")),
            Step::Total("/swr", 2),
        ],
    ),
    case(
        "RFC 5861 4: within stale-if-error an origin 500 is hidden behind the stale body",
        &[serve("/sie", &[("cache-control", "max-age=1, stale-if-error=60"), ("age", "2")])],
        &[
            get("/sie").calls(1),
            Step::Fail(true),
            get("/sie").calls(1).body(Is::Eq("/sie v1")).headers(&[("cache-status", Is::Contains("stale-if-error"))]),
            get("/sie").body(Is::Eq("/sie v1")),
            // Once the origin recovers, the entry is refreshed.
            Step::Fail(false),
            Step::Reroute(serve("/sie", &[("cache-control", "max-age=60")]).body("recovered")),
            get("/sie").calls(1).body(Is::Eq("recovered")),
            get("/sie").hit().body(Is::Eq("recovered")),
        ],
    ),
    case(
        "RFC 5861 4: without stale-if-error an origin 500 is passed on",
        &[serve("/no-sie", &[("cache-control", "max-age=1"), ("age", "2")])],
        &[get("/no-sie").calls(1), Step::Fail(true), get("/no-sie").status(500).calls(1)],
    ),
    case(
        "RFC 5861 4: within stale-if-error an origin that is gone is hidden",
        &[serve("/sie-gone", &[("cache-control", "max-age=1, stale-if-error=60"), ("age", "2")])],
        &[get("/sie-gone").calls(1), Step::Stop, get("/sie-gone").body(Is::Eq("/sie-gone v1"))],
    )
    .sidecar_only(SIDECAR_ONLY_STOP),
    case(
        "RFC 9111 4.2.4: an unreachable origin is covered by a stale entry (stale_if_unreachable)",
        &[serve("/unreachable", &[("cache-control", "max-age=1"), ("age", "2")])],
        &[
            get("/unreachable").calls(1),
            Step::Stop,
            get("/unreachable").body(Is::Eq("/unreachable v1")).headers(&[("cache-status", Is::Contains("hit"))]),
        ],
    )
    .sidecar_only(SIDECAR_ONLY_STOP),
    case(
        "RFC 9111 5.2.2.2: must-revalidate: never stale; a 504 while the origin is unreachable",
        &[serve("/must-revalidate", &[("cache-control", "max-age=1, must-revalidate"), ("age", "2")])],
        &[get("/must-revalidate").calls(1), Step::Stop, get("/must-revalidate").status(504).body(Is::Lacks("v1"))],
    )
    .sidecar_only(SIDECAR_ONLY_STOP),
    case(
        "RFC 9111 5.2.2.8: proxy-revalidate binds a shared cache like must-revalidate",
        &[serve("/proxy-revalidate", &[("cache-control", "max-age=1, proxy-revalidate"), ("age", "2")])],
        &[get("/proxy-revalidate").calls(1), Step::Stop, get("/proxy-revalidate").status(504).body(Is::Lacks("v1"))],
    )
    .sidecar_only(SIDECAR_ONLY_STOP),
    case(
        "RFC 9111 5.2.2.10: s-maxage forbids serving stale while the origin is unreachable",
        &[serve("/s-maxage-unreachable", &[("cache-control", "s-maxage=1"), ("age", "2")])],
        &[
            get("/s-maxage-unreachable").calls(1),
            Step::Stop,
            get("/s-maxage-unreachable").status(504).body(Is::Lacks("v1")),
        ],
    )
    .sidecar_only(SIDECAR_ONLY_STOP),
    case(
        "RFC 9111 5.2.2.10: s-maxage forbids stale-while-revalidate on a shared cache",
        &[serve("/s-maxage-swr", &[("cache-control", "s-maxage=1, stale-while-revalidate=30"), ("age", "2")])],
        &[
            get("/s-maxage-swr").calls(1),
            Step::Reroute(serve("/s-maxage-swr", &[("cache-control", "max-age=60")]).body("now")),
            get("/s-maxage-swr")
                .calls(1)
                .body(Is::Eq("now"))
                .headers(&[("cache-status", Is::Lacks("stale-while-revalidate"))]),
        ],
    ),
    case(
        "RFC 9111 5.2.2.2: must-revalidate forbids stale-while-revalidate",
        &[serve(
            "/must-revalidate-swr",
            &[("cache-control", "max-age=1, must-revalidate, stale-while-revalidate=30"), ("age", "2")],
        )],
        &[
            get("/must-revalidate-swr").calls(1),
            Step::Reroute(serve("/must-revalidate-swr", &[("cache-control", "max-age=60")]).body("now")),
            get("/must-revalidate-swr").calls(1).body(Is::Eq("now")),
        ],
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_stale() {
    crate::table::run("stale", CASES).await;
}
