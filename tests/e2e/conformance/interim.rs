//! Interim responses (RFC 9110 section 15.2). etagd cannot relay them: hyper's HTTP/1 server has no API to send
//! a 1xx (hyperium/hyper#2426), as the README states. What it must do is never take one for the answer: the
//! final response after any number of 1xx is served, stored and replayed, and no 1xx is ever stored. The origin
//! is the raw HTTP/1.1 one (an axum origin cannot send 1xx either), so these run on the sidecar only.

use crate::table::{Case, Is, case, get, head, serve};

const FRESH: &[(&str, &str)] = &[("cache-control", "max-age=60"), ("etag", "\"i1\"")];

const CASES: &[Case] = &[
    case(
        "RFC 9110 15.2: after a 103 Early Hints the final 200 is served and stored, the 103 never",
        &[serve("/early-hints", FRESH).interim(&[103])],
        &[
            get("/early-hints").stored().body(Is::Eq("/early-hints v1")).headers(&[("etag", Is::Eq("\"i1\""))]),
            get("/early-hints").hit().body(Is::Eq("/early-hints v1")).headers(&[("etag", Is::Eq("\"i1\""))]),
            get("/early-hints").with(&[("if-none-match", "\"i1\"")]).status(304).calls(0),
        ],
    )
    .raw_origin(),
    case(
        "RFC 9110 15.2: after a 102 Processing the final 200 is served and stored",
        &[serve("/processing", FRESH).interim(&[102])],
        &[
            get("/processing").stored().body(Is::Eq("/processing v1")),
            head("/processing").hit().body(Is::Eq("")),
            get("/processing").hit().body(Is::Eq("/processing v1")),
        ],
    )
    .raw_origin(),
    case(
        "RFC 9110 15.2: several interim responses before the final one",
        &[serve("/interims", FRESH).interim(&[102, 103, 103])],
        &[get("/interims").stored().body(Is::Eq("/interims v1")), get("/interims").hit().body(Is::Eq("/interims v1"))],
    )
    .raw_origin(),
    case(
        "RFC 9110 15.2: a 103 before an uncacheable final answer stores nothing",
        &[serve("/hints-no-store", &[("cache-control", "no-store")]).interim(&[103])],
        &[get("/hints-no-store").calls(1).body(Is::Eq("/hints-no-store v1")), get("/hints-no-store").calls(1)],
    )
    .raw_origin(),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_responses() {
    crate::table::run("interim", CASES).await;
}
