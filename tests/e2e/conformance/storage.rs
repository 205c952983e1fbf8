//! Storing responses (RFC 9111 section 3): what a shared cache must not store is not stored, what it may store
//! is, and unsafe methods invalidate (section 4.4).

use crate::table::{Case, Is, case, get, head, send, serve};

const FRESH: &[(&str, &str)] = &[("cache-control", "max-age=60")];
const NOT_STORED: &str = "etagd; fwd=uri-miss; fwd-status=200; detail=*";

const CASES: &[Case] = &[
    case(
        "RFC 9111 3: a response with explicit freshness is stored and reused",
        &[serve("/plain", FRESH)],
        &[get("/plain").stored().body(Is::Eq("/plain v1")), get("/plain").hit().body(Is::Eq("/plain v1"))],
    ),
    case(
        "RFC 9111 5.2.2.5: no-store is never stored",
        &[serve("/no-store", &[("cache-control", "no-store")])],
        &[get("/no-store").cache(NOT_STORED).calls(1), get("/no-store").calls(1)],
    ),
    case(
        "RFC 9111 5.2.2.5: no-store wins over max-age",
        &[serve("/no-store-max-age", &[("cache-control", "max-age=60, no-store")])],
        &[get("/no-store-max-age").cache(NOT_STORED).calls(1), get("/no-store-max-age").calls(1)],
    ),
    case(
        "RFC 9111 5.2.2.7: a shared cache does not store private",
        &[serve("/private", &[("cache-control", "private, max-age=60")])],
        &[get("/private").cache(NOT_STORED).calls(1), get("/private").calls(1)],
    ),
    case(
        "RFC 9111 5.2.2.7: private with field names is still not shared",
        &[serve("/private-field", &[("cache-control", "private=\"x-user\", max-age=60")])],
        &[get("/private-field").calls(1), get("/private-field").calls(1)],
    ),
    case(
        "RFC 9111 5.2.2.3: must-understand on a status the cache implements overrides no-store",
        &[serve("/must-understand", &[("cache-control", "max-age=3600, no-store, must-understand")])],
        &[get("/must-understand").stored(), get("/must-understand").hit()],
    ),
    case(
        "RFC 9111 5.2.2.3: must-understand on a status the cache does not implement leaves no-store in force",
        &[serve("/teapot", &[("cache-control", "max-age=3600, no-store, must-understand")]).status(418)],
        &[get("/teapot").status(418).calls(1), get("/teapot").status(418).calls(1)],
    ),
    // etagd's rule beyond RFC 9111 (which allows it; section 7 warns about shared responses with cookies): an
    // answer setting a cookie is never shared, and the cookie reaches the client that caused it.
    case(
        "etagd: Set-Cookie answers are not shared",
        &[serve("/cookie", &[("cache-control", "max-age=60"), ("set-cookie", "session=abc; HttpOnly")])],
        &[
            get("/cookie").cache(NOT_STORED).headers(&[("set-cookie", Is::Eq("session=abc; HttpOnly"))]).calls(1),
            get("/cookie").calls(1),
        ],
    ),
    case(
        "RFC 9111 3.5: an answer to an Authorization request is not shared by default",
        &[serve("/authorized", FRESH)],
        &[
            get("/authorized").with(&[("authorization", "Bearer secret")]).cache(NOT_STORED).calls(1),
            // The anonymous client gets the origin's answer, not the authorized one.
            get("/authorized").stored(),
        ],
    ),
    case(
        "RFC 9111 3.5: public allows sharing an Authorization answer",
        &[serve("/authorized-public", &[("cache-control", "public, max-age=60")])],
        &[
            get("/authorized-public").with(&[("authorization", "Bearer secret")]).stored(),
            get("/authorized-public").with(&[("authorization", "Bearer secret")]).hit(),
        ],
    ),
    case(
        "RFC 9111 3.5: s-maxage allows sharing an Authorization answer",
        &[serve("/authorized-s-maxage", &[("cache-control", "s-maxage=60")])],
        &[
            get("/authorized-s-maxage").with(&[("authorization", "Bearer secret")]).stored(),
            get("/authorized-s-maxage").with(&[("authorization", "Bearer secret")]).hit(),
        ],
    ),
    case(
        "RFC 9111 3.5: must-revalidate allows sharing an Authorization answer",
        &[serve("/authorized-must-revalidate", &[("cache-control", "max-age=60, must-revalidate")])],
        &[
            get("/authorized-must-revalidate").with(&[("authorization", "Bearer secret")]).stored(),
            get("/authorized-must-revalidate").with(&[("authorization", "Bearer secret")]).hit(),
        ],
    ),
    case(
        "RFC 9110 15.1: a 404 with explicit freshness is stored and replayed as a 404",
        &[serve("/missing", FRESH).status(404)],
        &[get("/missing").status(404).stored(), get("/missing").status(404).hit().body(Is::Eq("/missing v1"))],
    ),
    case(
        "RFC 9110 15.1: a 410 with explicit freshness is stored",
        &[serve("/gone", FRESH).status(410)],
        &[get("/gone").status(410).stored(), get("/gone").status(410).hit()],
    ),
    case(
        "RFC 9110 15.1: a 301 with explicit freshness is stored with its Location",
        &[serve("/moved", &[("cache-control", "max-age=60"), ("location", "/new-home")]).status(301)],
        &[
            get("/moved").status(301).stored(),
            get("/moved").status(301).hit().headers(&[("location", Is::Eq("/new-home"))]),
        ],
    ),
    case(
        "RFC 9110 15.1: a 204 with explicit freshness is stored",
        &[serve("/empty", FRESH).status(204)],
        &[get("/empty").status(204).stored(), get("/empty").status(204).hit().body(Is::Eq(""))],
    ),
    case(
        "RFC 9110 9.3.2 / RFC 9111 4: HEAD is answered from a stored GET, without a body",
        &[serve("/head", &[("cache-control", "max-age=60"), ("etag", "\"h1\"")])],
        &[
            get("/head").stored(),
            head("/head")
                .hit()
                .body(Is::Eq(""))
                .headers(&[("etag", Is::Eq("\"h1\"")), ("content-length", Is::AbsentOr("8"))]),
        ],
    ),
    case(
        "RFC 9111 3 / RFC 9110 9.3.3: a POST answer is not stored for later GETs",
        &[serve("/post-answer", FRESH)],
        &[send("POST", "/post-answer").calls(1), get("/post-answer").stored()],
    ),
    case(
        "RFC 9111 4.4: a successful PUT invalidates its target",
        &[serve("/put-target", FRESH)],
        &[get("/put-target").stored(), send("PUT", "/put-target").calls(1), get("/put-target").stored()],
    ),
    case(
        "RFC 9111 4.4: a successful DELETE invalidates its target",
        &[serve("/delete-target", FRESH)],
        &[get("/delete-target").stored(), send("DELETE", "/delete-target").calls(1), get("/delete-target").stored()],
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storing_responses() {
    crate::table::run("storage", CASES).await;
}
