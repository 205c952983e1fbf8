//! Vary (RFC 9111 section 4.1, RFC 9110 section 12.5.5): a stored response is used only for requests whose
//! varied headers match the ones it was stored for; values differing only in whitespace around list commas, or
//! in case where the field is case-insensitive, match; `Vary: *` never does.

use crate::table::{Case, Is, case, get, serve};

const CASES: &[Case] = &[
    case(
        "RFC 9111 4.1: each variant is stored and served on its own, with its own validator",
        &[serve("/greeting", &[("cache-control", "max-age=60"), ("vary", "Accept-Language")]).echo("accept-language")],
        &[
            get("/greeting").with(&[("accept-language", "en")]).stored().body(Is::Eq("/greeting en")),
            get("/greeting")
                .with(&[("accept-language", "fr")])
                .stored()
                .body(Is::Eq("/greeting fr"))
                .headers(&[("etag", Is::Changed)]),
            get("/greeting")
                .with(&[("accept-language", "en")])
                .hit()
                .body(Is::Eq("/greeting en"))
                .headers(&[("vary", Is::Eq("Accept-Language"))]),
            get("/greeting").with(&[("accept-language", "fr")]).hit().body(Is::Eq("/greeting fr")),
            // A validator matches only its own variant.
            get("/greeting")
                .with(&[("accept-language", "fr"), ("if-none-match", "{etag:1}")])
                .hit()
                .body(Is::Eq("/greeting fr")),
            get("/greeting").with(&[("accept-language", "fr"), ("if-none-match", "{etag:2}")]).status(304).calls(0),
            // No Accept-Language at all is a variant of its own, and leaves the others alone.
            get("/greeting").stored().body(Is::Eq("/greeting none")),
            get("/greeting").with(&[("accept-language", "en")]).hit().body(Is::Eq("/greeting en")),
        ],
    ),
    case(
        "RFC 9111 4.1: Vary: * never matches, so it is not reused",
        &[serve("/vary-star", &[("cache-control", "max-age=60"), ("vary", "*")])],
        &[get("/vary-star").calls(1), get("/vary-star").calls(1)],
    ),
    case(
        "RFC 9111 4.1: whitespace around list commas does not make another variant",
        &[serve("/vary-space", &[("cache-control", "max-age=60"), ("vary", "accept-language")])
            .echo("accept-language")],
        &[
            get("/vary-space").with(&[("accept-language", "en,de")]).stored(),
            get("/vary-space").with(&[("accept-language", "en , de")]).hit().body(Is::Eq("/vary-space en,de")),
        ],
    ),
    case(
        "RFC 9111 4.1: case does not make another variant for a case-insensitive field",
        &[serve("/vary-case", &[("cache-control", "max-age=60"), ("vary", "accept-language")]).echo("accept-language")],
        &[
            get("/vary-case").with(&[("accept-language", "en, de")]).stored(),
            get("/vary-case").with(&[("accept-language", "eN, De")]).hit().body(Is::Eq("/vary-case en, de")),
        ],
    ),
    case(
        "RFC 9111 4.1: field names in Vary are case-insensitive",
        &[serve("/vary-name-case", &[("cache-control", "max-age=60"), ("vary", "ACCEPT-LANGUAGE")])
            .echo("accept-language")],
        &[
            get("/vary-name-case").with(&[("accept-language", "en")]).stored(),
            get("/vary-name-case").with(&[("accept-language", "fr")]).stored().body(Is::Eq("/vary-name-case fr")),
            get("/vary-name-case").with(&[("accept-language", "en")]).hit().body(Is::Eq("/vary-name-case en")),
        ],
    ),
    case(
        "RFC 9111 4.1: every field Vary names must match, on one line or several",
        &[serve("/vary-two", &[("cache-control", "max-age=60"), ("vary", "accept-language"), ("vary", "x-device")])
            .echo("x-device")],
        &[
            get("/vary-two").with(&[("accept-language", "en"), ("x-device", "phone")]).stored(),
            get("/vary-two").with(&[("accept-language", "en"), ("x-device", "desk")]).stored(),
            get("/vary-two").with(&[("accept-language", "de"), ("x-device", "phone")]).stored(),
            get("/vary-two")
                .with(&[("accept-language", "en"), ("x-device", "phone")])
                .hit()
                .body(Is::Eq("/vary-two phone")),
        ],
    ),
    case(
        "RFC 9111 4.1: a varied header that differs in value is another variant",
        &[serve("/vary-custom", &[("cache-control", "max-age=60"), ("vary", "x-tenant")]).echo("x-tenant")],
        &[
            get("/vary-custom").with(&[("x-tenant", "a")]).stored(),
            get("/vary-custom").with(&[("x-tenant", "b")]).stored().body(Is::Eq("/vary-custom b")),
            get("/vary-custom").with(&[("x-tenant", "a")]).hit().body(Is::Eq("/vary-custom a")),
        ],
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary() {
    crate::table::run("vary", CASES).await;
}
