//! Request directives (RFC 9111 section 5.2.1) as a shared cache: `only-if-cached` and `max-stale` always;
//! `no-cache`, `max-age`, `min-fresh` and `Pragma: no-cache` (section 5.4) only with `honour_client_freshness`,
//! since RFC 9111 makes them preferences and honouring them lets any client send every request to the origin;
//! a request's `no-store` always keeps its answer out of storage (5.2.1.5).

use etagd_client::layer::EtagCacheLayer;

use crate::table::{Case, Is, case, get, serve};

const HONOUR: &str = "honour_client_freshness = true\n";

fn honour(layer: EtagCacheLayer) -> EtagCacheLayer {
    layer.client_freshness(true)
}

/// Fresh for 500 more seconds, 100 s old on arrival.
const AGED: &[(&str, &str)] = &[("cache-control", "max-age=600"), ("age", "100"), ("etag", "\"d1\"")];
/// Stale by 29 s on arrival.
const STALE: &[(&str, &str)] = &[("cache-control", "max-age=1"), ("age", "30")];

const CASES: &[Case] = &[
    case(
        "RFC 9111 5.2.1.7: only-if-cached with nothing stored is a 504, the origin untouched",
        &[serve("/only-if-cached-cold", &[("cache-control", "max-age=60")])],
        &[get("/only-if-cached-cold")
            .with(&[("cache-control", "only-if-cached")])
            .status(504)
            .cache("etagd; fwd=request; detail=only-if-cached")
            .calls(0)],
    ),
    case(
        "RFC 9111 5.2.1.7: only-if-cached is answered from a fresh entry",
        &[serve("/only-if-cached-hit", &[("cache-control", "max-age=60")])],
        &[
            get("/only-if-cached-hit").stored(),
            get("/only-if-cached-hit").with(&[("cache-control", "only-if-cached")]).hit(),
        ],
    ),
    case(
        "RFC 9111 5.2.1.7: only-if-cached with only a stale entry is a 504",
        &[serve("/only-if-cached-stale", STALE)],
        &[
            get("/only-if-cached-stale").calls(1),
            get("/only-if-cached-stale").with(&[("cache-control", "only-if-cached")]).status(504).calls(0),
        ],
    ),
    case(
        "RFC 9111 5.2.1.2: max-stale accepts a stale entry within its bound, or any without one",
        &[serve("/max-stale", STALE)],
        &[
            get("/max-stale").calls(1),
            get("/max-stale")
                .with(&[("cache-control", "max-stale=60")])
                .calls(0)
                .body(Is::Eq("/max-stale v1"))
                .headers(&[("cache-status", Is::Contains("max-stale"))]),
            get("/max-stale").with(&[("cache-control", "max-stale")]).calls(0),
            get("/max-stale").with(&[("cache-control", "max-stale=10")]).calls(1),
        ],
    ),
    case(
        "RFC 9111 5.2.2.2: max-stale does not override must-revalidate",
        &[serve("/max-stale-strict", &[("cache-control", "max-age=1, must-revalidate"), ("age", "30")])],
        &[
            get("/max-stale-strict").calls(1),
            get("/max-stale-strict").with(&[("cache-control", "max-stale=60")]).calls(1),
        ],
    ),
    case(
        "RFC 9111 5.2.1.5: a request's no-store keeps its answer out of storage",
        &[serve("/request-no-store", &[("cache-control", "max-age=60")])],
        &[get("/request-no-store").with(&[("cache-control", "no-store")]).calls(1), get("/request-no-store").stored()],
    ),
    case(
        "RFC 9111 5.2.1: no-cache, max-age and min-fresh are preferences etagd ignores by default",
        &[serve("/preferences", AGED)],
        &[
            get("/preferences").stored(),
            get("/preferences").with(&[("cache-control", "no-cache")]).hit(),
            get("/preferences").with(&[("cache-control", "max-age=0")]).hit(),
            get("/preferences").with(&[("cache-control", "min-fresh=3600")]).hit(),
            get("/preferences").with(&[("pragma", "no-cache")]).hit(),
        ],
    ),
    case(
        "RFC 9111 5.2.1.4: no-cache, when honoured, revalidates with the origin",
        &[serve("/honour-no-cache", AGED)],
        &[
            get("/honour-no-cache").stored(),
            get("/honour-no-cache")
                .with(&[("cache-control", "no-cache")])
                .calls(1)
                .origin_saw(&[("if-none-match", Is::Eq("\"d1\""))])
                .body(Is::Eq("/honour-no-cache v1")),
        ],
    )
    .sidecar_toml(HONOUR)
    .layer_with(honour),
    case(
        "RFC 9111 5.2.1.1: max-age, when honoured, refuses an older entry and accepts a younger one",
        &[serve("/honour-max-age", AGED)],
        &[
            get("/honour-max-age").stored(),
            get("/honour-max-age").with(&[("cache-control", "max-age=200")]).hit(),
            get("/honour-max-age").with(&[("cache-control", "max-age=50")]).calls(1),
        ],
    )
    .sidecar_toml(HONOUR)
    .layer_with(honour),
    case(
        "RFC 9111 5.2.1.3: min-fresh, when honoured, refuses an entry fresh for less than asked",
        &[serve("/honour-min-fresh", AGED)],
        &[
            get("/honour-min-fresh").stored(),
            get("/honour-min-fresh").with(&[("cache-control", "min-fresh=100")]).hit(),
            get("/honour-min-fresh").with(&[("cache-control", "min-fresh=3600")]).calls(1),
        ],
    )
    .sidecar_toml(HONOUR)
    .layer_with(honour),
    case(
        "RFC 9111 5.4: Pragma: no-cache without Cache-Control, when honoured, acts as no-cache",
        &[serve("/honour-pragma", AGED)],
        &[get("/honour-pragma").stored(), get("/honour-pragma").with(&[("pragma", "no-cache")]).calls(1)],
    )
    .sidecar_toml(HONOUR)
    .layer_with(honour),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_directives() {
    crate::table::run("request directives", CASES).await;
}
