//! Targeted cache control (RFC 9213): the first valid targeted field in etagd's list (`Etagd-Cache-Control`,
//! then `CDN-Cache-Control`) replaces `Cache-Control` and `Expires` for etagd's own decisions, a field that
//! does not parse as an RFC 8941 Dictionary is ignored, and the fields reach the client unchanged.

use crate::table::{Case, Is, case, get, serve};

const CASES: &[Case] = &[
    case(
        "RFC 9213 2.2: CDN-Cache-Control: private is obeyed over Cache-Control: max-age",
        &[serve("/cdn-private", &[("cdn-cache-control", "private"), ("cache-control", "max-age=60")])],
        &[
            get("/cdn-private").calls(1).headers(&[("cdn-cache-control", Is::Eq("private"))]),
            get("/cdn-private").calls(1),
        ],
    ),
    case(
        "RFC 9213 2.2: CDN-Cache-Control: max-age stores what Cache-Control: no-store forbids others",
        &[serve("/cdn-only", &[("cdn-cache-control", "max-age=60"), ("cache-control", "no-store")])],
        &[
            get("/cdn-only").stored(),
            get("/cdn-only")
                .hit()
                .headers(&[("cdn-cache-control", Is::Eq("max-age=60")), ("cache-control", Is::Eq("no-store"))]),
        ],
    ),
    case(
        "RFC 9213 2.2: with a targeted field, Expires is ignored too",
        &[serve("/cdn-expires", &[("cdn-cache-control", "max-age=60"), ("expires", "Thu, 01 Jan 1970 00:00:00 GMT")])],
        &[get("/cdn-expires").stored(), get("/cdn-expires").hit()],
    ),
    case(
        "RFC 9213 2.1: CDN-Cache-Control: no-store is not stored",
        &[serve("/cdn-no-store", &[("cdn-cache-control", "no-store"), ("cache-control", "max-age=60")])],
        &[get("/cdn-no-store").calls(1), get("/cdn-no-store").calls(1)],
    ),
    case(
        "RFC 9213 2.2: the first field in the list wins (Etagd-Cache-Control before CDN-Cache-Control)",
        &[serve("/etagd-first", &[("etagd-cache-control", "no-store"), ("cdn-cache-control", "max-age=60")])],
        &[get("/etagd-first").calls(1), get("/etagd-first").calls(1)],
    ),
    case(
        "RFC 9213 2.2: Etagd-Cache-Control: max-age wins over CDN-Cache-Control: no-store",
        &[serve("/etagd-wins", &[("etagd-cache-control", "max-age=60"), ("cdn-cache-control", "no-store")])],
        &[get("/etagd-wins").stored(), get("/etagd-wins").hit()],
    ),
    case(
        "RFC 9213 2.1: a targeted field that is not a valid Dictionary is ignored",
        &[serve("/cdn-invalid", &[("cdn-cache-control", "private, =x"), ("cache-control", "max-age=60")])],
        &[get("/cdn-invalid").stored(), get("/cdn-invalid").hit()],
    ),
    case(
        "RFC 9213 2.1: an invalid first field falls through to the next valid one",
        &[serve(
            "/etagd-invalid",
            &[
                ("etagd-cache-control", "max-age=\"60"),
                ("cdn-cache-control", "no-store"),
                ("cache-control", "max-age=60"),
            ],
        )],
        &[get("/etagd-invalid").calls(1), get("/etagd-invalid").calls(1)],
    ),
    case(
        "RFC 9213 2: the targeted fields can be stripped from answers when configured",
        &[serve("/cdn-stripped", &[("cdn-cache-control", "max-age=60")])],
        &[
            get("/cdn-stripped").stored().headers(&[("cdn-cache-control", Is::Absent)]),
            get("/cdn-stripped").hit().headers(&[("cdn-cache-control", Is::Absent)]),
        ],
    )
    .sidecar_toml("strip_targeted_cache_control = true\n")
    .sidecar_only("the layer's builder has no strip_targeted setting"),
    case(
        "RFC 9213 2.2: a configured list replaces the default one",
        &[
            serve("/own-field", &[("x-edge-control", "max-age=60"), ("cache-control", "no-store")]),
            serve("/cdn-not-listed", &[("cdn-cache-control", "max-age=60"), ("cache-control", "no-store")]),
        ],
        &[
            get("/own-field").stored(),
            get("/own-field").hit(),
            get("/cdn-not-listed").calls(1),
            get("/cdn-not-listed").calls(1),
        ],
    )
    .sidecar_toml("targeted_cache_control = [\"x-edge-control\"]\n")
    .sidecar_only("the layer's builder has no targeted_fields setting"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_cache_control() {
    crate::table::run("targeted", CASES).await;
}
