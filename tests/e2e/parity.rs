//! Parity: the sidecar and the tower layer are two fronts of one exchange. This table of request/response cases
//! runs through both (the runner in [`crate::table`]), against the same kind of origin and the same memcached (a
//! namespace each), and every step must give both the same status, validator, `Cache-Status` and number of
//! origin requests. The RFC conformance tables in [`crate::conformance`] run through the same runner.

use crate::table::{Case, Is, case, get, send, serve};

const FRESH: &[(&str, &str)] = &[("cache-control", "max-age=60")];

const CASES: &[Case] = &[
    // RFC 9111 section 4.2: a fresh response answers without the origin.
    case(
        "fresh",
        &[serve("/fresh", FRESH)],
        &[
            get("/fresh").cache("etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60").calls(1),
            get("/fresh").cache("etagd; hit; ttl=60").calls(0),
        ],
    ),
    // RFC 9111 sections 4.2.3 and 4.3: stored already stale (Age above max-age), so the next use revalidates;
    // the origin's 304 refreshes the stored response (section 4.3.4).
    case(
        "stale, 304 from origin",
        &[serve("/stale", &[("cache-control", "max-age=60"), ("age", "100"), ("etag", "\"o1\"")])],
        &[
            get("/stale")
                .cache("etagd; fwd=uri-miss; fwd-status=200; stored; ttl=-40")
                .headers(&[("etag", Is::Eq("\"o1\""))])
                .calls(1),
            get("/stale")
                .cache("etagd; fwd=stale; fwd-status=304; stored; ttl=-40")
                .headers(&[("etag", Is::Eq("\"o1\""))])
                .calls(1),
        ],
    ),
    // RFC 9110 section 12.5.5 / RFC 9111 section 4.1: each Vary variant is its own entry.
    case(
        "vary",
        &[serve("/vary", &[("cache-control", "max-age=60"), ("vary", "accept-language")])],
        &[
            get("/vary")
                .with(&[("accept-language", "de")])
                .cache("etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60")
                .calls(1),
            get("/vary")
                .with(&[("accept-language", "fr")])
                .cache("etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60")
                .calls(1),
            get("/vary").with(&[("accept-language", "de")]).cache("etagd; hit; ttl=60").calls(0),
        ],
    ),
    // RFC 9111 section 3: no-store is never stored, and marks the resource hit-for-pass.
    case(
        "no-store",
        &[serve("/no-store", &[("cache-control", "no-store")])],
        &[
            get("/no-store").cache("etagd; fwd=uri-miss; fwd-status=200; detail=no-store").calls(1),
            get("/no-store").cache("etagd; fwd=bypass; fwd-status=200; detail=hit-for-pass-no-store").calls(1),
        ],
    ),
    // RFC 9111 section 5.2.2.7: private responses are not stored by a shared cache.
    case(
        "private",
        &[serve("/private", &[("cache-control", "private, max-age=60")])],
        &[get("/private").cache("etagd; fwd=uri-miss; fwd-status=200; detail=private").calls(1)],
    ),
    // RFC 9111 section 3.5: not shared without public/s-maxage, and the refusal leaves no pass marker.
    case(
        "authorization",
        &[serve("/auth", FRESH)],
        &[
            get("/auth")
                .with(&[("authorization", "Bearer x")])
                .cache("etagd; fwd=uri-miss; fwd-status=200; detail=authorization")
                .calls(1),
            get("/auth").cache("etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60").calls(1),
        ],
    ),
    // A response setting a cookie is never shared.
    case(
        "set-cookie",
        &[serve("/cookie", &[("cache-control", "max-age=60"), ("set-cookie", "s=1")])],
        &[
            get("/cookie").cache("etagd; fwd=uri-miss; fwd-status=200; detail=set-cookie").calls(1),
            get("/cookie").cache("etagd; fwd=bypass; fwd-status=200; detail=hit-for-pass-set-cookie").calls(1),
        ],
    ),
    // RFC 9111 section 4.4: a successful unsafe method invalidates its target.
    case(
        "unsafe method",
        &[serve("/items", FRESH)],
        &[
            get("/items").cache("etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60").calls(1),
            send("POST", "/items").cache("etagd; fwd=method; fwd-status=200").calls(1),
            get("/items").cache("etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60").calls(1),
        ],
    ),
    // RFC 9110 section 14: a range is answered from the stored whole representation, on the fill too.
    case(
        "range",
        &[serve("/ranged", FRESH)],
        &[
            get("/ranged")
                .with(&[("range", "bytes=0-3")])
                .status(206)
                .cache("etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60")
                .calls(1),
            get("/ranged").with(&[("range", "bytes=-2")]).status(206).cache("etagd; hit; ttl=60").calls(0),
        ],
    ),
    // A forwarded scheme in odd case from a client that is not a trusted proxy changes nothing.
    case(
        "forwarded scheme in odd case",
        &[serve("/scheme", FRESH)],
        &[
            get("/scheme").cache("etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60").calls(1),
            get("/scheme").with(&[("x-forwarded-proto", "HTTPS")]).cache("etagd; hit; ttl=60").calls(0),
        ],
    ),
    // RFC 3986 section 6.2.2.2: a percent-encoded unreserved character names the same resource.
    case(
        "percent-encoded path",
        &[serve("/api/x", FRESH), serve("/%61pi/x", FRESH)],
        &[
            get("/api/x").cache("etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60").calls(1),
            get("/%61pi/x").cache("etagd; hit; ttl=60").calls(0),
        ],
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_fronts_answer_every_case_alike() {
    crate::table::run("parity", CASES).await;
}
