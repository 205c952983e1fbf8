//! Validation (RFC 9111 section 4.3, RFC 9110 section 13): a stale entry is revalidated with its validators,
//! the origin's 200 replaces it, a fresh entry answers the client's conditionals itself, and a 304 carries what
//! the 200 would have (RFC 9110 section 15.4.5).

use crate::table::{Case, Is, Step, case, get, head, serve};

const LAST_MODIFIED: &str = "Sat, 01 Jan 2000 00:00:00 GMT";

/// A fresh entry with an origin validator.
const TAGGED: &[(&str, &str)] = &[("cache-control", "max-age=60"), ("etag", "\"t1\"")];

const CASES: &[Case] = &[
    case(
        "RFC 9111 4.3.1: revalidating a stale entry sends its ETag in If-None-Match",
        &[serve("/reval-etag", &[("cache-control", "max-age=60"), ("age", "100"), ("etag", "\"r1\"")])],
        &[
            get("/reval-etag").calls(1),
            get("/reval-etag")
                .cache("etagd; fwd=stale; fwd-status=304; stored; ttl=*")
                .calls(1)
                .origin_saw(&[("if-none-match", Is::Eq("\"r1\""))])
                .body(Is::Eq("/reval-etag v1"))
                .headers(&[("etag", Is::Eq("\"r1\""))]),
        ],
    ),
    case(
        "RFC 9111 4.3.1: revalidating a stale entry with only Last-Modified sends If-Modified-Since",
        &[serve("/reval-date", &[("cache-control", "max-age=60"), ("age", "100"), ("last-modified", LAST_MODIFIED)])],
        &[
            get("/reval-date").calls(1),
            get("/reval-date").calls(1).origin_saw(&[("if-modified-since", Is::Eq(LAST_MODIFIED))]),
        ],
    ),
    case(
        "RFC 9111 4.3.3: a 200 to a revalidation replaces the stored response",
        &[serve("/reval-200", &[("cache-control", "max-age=60"), ("age", "100"), ("etag", "\"a1\"")])],
        &[
            get("/reval-200").calls(1).body(Is::Eq("/reval-200 v1")),
            Step::Reroute(serve("/reval-200", &[("cache-control", "max-age=60"), ("etag", "\"a2\"")]).body("new")),
            get("/reval-200").calls(1).body(Is::Eq("new")).headers(&[("etag", Is::Eq("\"a2\""))]),
            get("/reval-200").hit().body(Is::Eq("new")).headers(&[("etag", Is::Eq("\"a2\""))]),
        ],
    ),
    case(
        "RFC 9111 4.3.4: a 304 makes the stored response fresh again",
        &[serve("/reval-fresh", &[("cache-control", "max-age=60"), ("age", "100"), ("etag", "\"f1\"")])],
        &[
            get("/reval-fresh").calls(1),
            Step::Reroute(serve("/reval-fresh", &[("cache-control", "max-age=60"), ("etag", "\"f1\"")])),
            get("/reval-fresh").calls(1).body(Is::Eq("/reval-fresh v1")),
            get("/reval-fresh").hit().body(Is::Eq("/reval-fresh v1")),
        ],
    ),
    case(
        "RFC 9111 4.3.4 / 3.2: a 304 does not change the stored Content-Length or body",
        &[serve("/update-length", &[("cache-control", "max-age=1"), ("age", "5"), ("etag", "\"l1\"")])],
        &[
            get("/update-length").calls(1).headers(&[("content-length", Is::Eq("17"))]),
            Step::Reroute(serve("/update-length", &[("cache-control", "max-age=3600"), ("etag", "\"l1\"")])),
            get("/update-length")
                .calls(1)
                .headers(&[("content-length", Is::Eq("17"))])
                .body(Is::Eq("/update-length v1")),
            get("/update-length").hit().headers(&[("content-length", Is::Eq("17"))]).body(Is::Eq("/update-length v1")),
        ],
    ),
    case(
        "RFC 9111 4.3.2 / RFC 9110 13.1.2: a fresh entry answers a matching If-None-Match with a 304",
        &[serve("/inm", TAGGED)],
        &[get("/inm").stored(), get("/inm").with(&[("if-none-match", "\"t1\"")]).status(304).calls(0).body(Is::Eq(""))],
    ),
    case(
        "RFC 9110 13.1.2: If-None-Match compares weakly (W/ matches the strong tag)",
        &[serve("/inm-weak", TAGGED)],
        &[get("/inm-weak").stored(), get("/inm-weak").with(&[("if-none-match", "W/\"t1\"")]).status(304).calls(0)],
    ),
    case(
        "RFC 9110 13.1.2: a weak origin ETag matches its own and its strong form",
        &[serve("/weak-origin", &[("cache-control", "max-age=60"), ("etag", "W/\"w1\"")])],
        &[
            get("/weak-origin").stored().headers(&[("etag", Is::Eq("W/\"w1\""))]),
            get("/weak-origin").with(&[("if-none-match", "W/\"w1\"")]).status(304).calls(0),
            get("/weak-origin").with(&[("if-none-match", "\"w1\"")]).status(304).calls(0),
        ],
    ),
    case(
        "RFC 9110 13.1.2: If-None-Match lists match any member",
        &[serve("/inm-list", TAGGED)],
        &[
            get("/inm-list").stored(),
            get("/inm-list").with(&[("if-none-match", "\"x\", \"t1\", \"y\"")]).status(304).calls(0),
        ],
    ),
    case(
        "RFC 9110 13.1.2: If-None-Match: * matches a stored representation",
        &[serve("/inm-star", TAGGED)],
        &[get("/inm-star").stored(), get("/inm-star").with(&[("if-none-match", "*")]).status(304).calls(0)],
    ),
    case(
        "RFC 9110 13.1.2: a non-matching If-None-Match gets the full stored answer",
        &[serve("/inm-miss", TAGGED)],
        &[
            get("/inm-miss").stored(),
            get("/inm-miss").with(&[("if-none-match", "\"other\"")]).hit().body(Is::Eq("/inm-miss v1")),
        ],
    ),
    case(
        "RFC 9110 13.1.2: a minted validator earns a 304 from storage",
        &[serve("/minted", &[("cache-control", "max-age=60")])],
        &[
            get("/minted").stored().headers(&[("etag", Is::Present)]),
            get("/minted")
                .with(&[("if-none-match", "{etag:1}")])
                .status(304)
                .calls(0)
                .headers(&[("etag", Is::AsBefore)]),
        ],
    ),
    case(
        "RFC 9110 13.1.3: If-Modified-Since at or after Last-Modified gets a 304",
        &[serve("/ims", &[("cache-control", "max-age=60"), ("last-modified", LAST_MODIFIED)])],
        &[
            get("/ims").stored(),
            get("/ims").with(&[("if-modified-since", LAST_MODIFIED)]).status(304).calls(0),
            get("/ims").with(&[("if-modified-since", "Sun, 02 Jan 2000 00:00:00 GMT")]).status(304).calls(0),
        ],
    ),
    case(
        "RFC 9110 13.1.3: If-Modified-Since before Last-Modified gets the full answer",
        &[serve("/ims-older", &[("cache-control", "max-age=60"), ("last-modified", LAST_MODIFIED)])],
        &[
            get("/ims-older").stored(),
            get("/ims-older").with(&[("if-modified-since", "Fri, 31 Dec 1999 00:00:00 GMT")]).hit().body(Is::Present),
        ],
    ),
    case(
        "RFC 9110 13.1.3: an If-Modified-Since that is not a date is ignored",
        &[serve("/ims-junk", &[("cache-control", "max-age=60"), ("last-modified", LAST_MODIFIED)])],
        &[get("/ims-junk").stored(), get("/ims-junk").with(&[("if-modified-since", "yesterday")]).hit()],
    ),
    case(
        "RFC 9111 4.3.2: without Last-Modified, If-Modified-Since is compared with the stored Date",
        &[serve("/ims-date", &[("cache-control", "max-age=60")])],
        &[
            get("/ims-date").stored().headers(&[("date", Is::Present)]),
            get("/ims-date").with(&[("if-modified-since", "{date:1}")]).status(304).calls(0),
            get("/ims-date").with(&[("if-modified-since", "Sat, 01 Jan 2000 00:00:00 GMT")]).hit(),
        ],
    ),
    case(
        "RFC 9110 13.2.2: If-None-Match takes precedence over If-Modified-Since",
        &[serve(
            "/inm-over-ims",
            &[("cache-control", "max-age=60"), ("etag", "\"p1\""), ("last-modified", LAST_MODIFIED)],
        )],
        &[
            get("/inm-over-ims").stored(),
            get("/inm-over-ims")
                .with(&[("if-none-match", "\"other\""), ("if-modified-since", "Sun, 02 Jan 2000 00:00:00 GMT")])
                .hit()
                .body(Is::Eq("/inm-over-ims v1")),
        ],
    ),
    case(
        "RFC 9110 15.4.5: a 304 carries the ETag, Cache-Control, Content-Location, Expires, Vary and Date",
        &[serve(
            "/304-fields",
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"c1\""),
                ("content-location", "/304-fields.txt"),
                ("expires", "Wed, 01 Jan 2070 00:00:00 GMT"),
                ("vary", "accept-language"),
            ],
        )],
        &[
            get("/304-fields").stored(),
            get("/304-fields").with(&[("if-none-match", "\"c1\"")]).status(304).calls(0).headers(&[
                ("etag", Is::Eq("\"c1\"")),
                ("cache-control", Is::Eq("max-age=60")),
                ("content-location", Is::Eq("/304-fields.txt")),
                ("expires", Is::Eq("Wed, 01 Jan 2070 00:00:00 GMT")),
                ("vary", Is::Contains("accept-language")),
                ("date", Is::Present),
            ]),
        ],
    ),
    case(
        "RFC 9110 8.6 / 15.4.5: a 304 sends no Content-Length other than the 200's",
        &[serve("/304-length", TAGGED)],
        &[
            get("/304-length").stored().headers(&[("content-length", Is::Eq("14"))]),
            get("/304-length")
                .with(&[("if-none-match", "\"t1\"")])
                .status(304)
                .headers(&[("content-length", Is::AbsentOr("14"))]),
        ],
    ),
    case(
        "RFC 9110 13.1.1: If-Match goes to the origin, which evaluates it",
        &[serve("/if-match", TAGGED)],
        &[get("/if-match").stored(), get("/if-match").with(&[("if-match", "\"t1\"")]).calls(1)],
    ),
    case(
        "RFC 9111 4.3.4: every field of a 304 replaces the stored one, on the answer and on later hits",
        &[serve(
            "/update-304",
            &[("cache-control", "max-age=1"), ("age", "5"), ("etag", "\"u1\""), ("x-test-header", "old")],
        )],
        &[
            get("/update-304").calls(1).headers(&[("x-test-header", Is::Eq("old"))]),
            Step::Reroute(serve(
                "/update-304",
                &[
                    ("cache-control", "max-age=3600"),
                    ("etag", "\"u1\""),
                    ("x-test-header", "new"),
                    ("content-foo", "bar"),
                    ("expires", "Wed, 01 Jan 2070 00:00:00 GMT"),
                ],
            )),
            get("/update-304")
                .cache("etagd; fwd=stale; fwd-status=304; stored; ttl=*")
                .calls(1)
                .body(Is::Eq("/update-304 v1"))
                .headers(&[
                    ("cache-control", Is::Eq("max-age=3600")),
                    ("x-test-header", Is::Eq("new")),
                    ("content-foo", Is::Eq("bar")),
                    ("expires", Is::Eq("Wed, 01 Jan 2070 00:00:00 GMT")),
                ]),
            get("/update-304").hit().body(Is::Eq("/update-304 v1")).headers(&[
                ("cache-control", Is::Eq("max-age=3600")),
                ("x-test-header", Is::Eq("new")),
                ("content-foo", Is::Eq("bar")),
                ("expires", Is::Eq("Wed, 01 Jan 2070 00:00:00 GMT")),
                ("age", Is::Lacks("5")),
            ]),
            // A client's conditional gets the updated fields on its 304 too (RFC 9110 15.4.5).
            get("/update-304").with(&[("if-none-match", "\"u1\"")]).status(304).calls(0).headers(&[
                ("cache-control", Is::Eq("max-age=3600")),
                ("expires", Is::Eq("Wed, 01 Jan 2070 00:00:00 GMT")),
            ]),
        ],
    ),
    case(
        "RFC 9111 4.3.5: a HEAD through the cache updates the stored GET's fields",
        &[serve(
            "/head-update",
            &[("cache-control", "max-age=60"), ("age", "100"), ("etag", "\"h1\""), ("x-test-header", "old")],
        )],
        &[
            get("/head-update").calls(1).headers(&[("x-test-header", Is::Eq("old"))]),
            Step::Reroute(serve(
                "/head-update",
                &[("cache-control", "max-age=60"), ("etag", "\"h1\""), ("x-test-header", "new")],
            )),
            head("/head-update").calls(1).headers(&[("x-test-header", Is::Eq("new"))]),
            get("/head-update").hit().body(Is::Eq("/head-update v1")).headers(&[("x-test-header", Is::Eq("new"))]),
        ],
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation() {
    crate::table::run("validation", CASES).await;
}
