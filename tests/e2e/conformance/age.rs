//! Age (RFC 9111 sections 4.2.3 and 5.1): an answer from storage says how old it is, counting the age the
//! origin reported; `Age` lists and repeated lines use the first value; an invalid `Age` is ignored.

use crate::table::{Case, Is, case, get, serve};

const CASES: &[Case] = &[
    case(
        "RFC 9111 5.1: an answer from storage carries Age",
        &[serve("/age-on-hit", &[("cache-control", "max-age=60")])],
        &[
            get("/age-on-hit").stored().headers(&[("age", Is::Absent)]),
            get("/age-on-hit").hit().headers(&[("age", Is::AtLeast(0))]),
        ],
    ),
    case(
        "RFC 9111 4.2.3: the origin's Age counts towards the age; the fill passes it on unchanged",
        &[serve("/origin-age", &[("cache-control", "max-age=60"), ("age", "30")])],
        &[
            get("/origin-age")
                .cache("etagd; fwd=uri-miss; fwd-status=200; stored; ttl=30")
                .headers(&[("age", Is::Eq("30"))]),
            get("/origin-age").hit().headers(&[("age", Is::AtLeast(30))]),
        ],
    ),
    case(
        "RFC 9111 4.2.3: an Age above max-age is stale on arrival",
        &[serve("/age-over", &[("cache-control", "max-age=60"), ("age", "100")])],
        &[get("/age-over").calls(1), get("/age-over").calls(1)],
    ),
    case(
        "RFC 9111 5.1: an Age list counts its first value (7200, 0 is stale)",
        &[serve("/age-list", &[("cache-control", "max-age=3600"), ("age", "7200, 0")])],
        &[get("/age-list").calls(1), get("/age-list").calls(1)],
    ),
    case(
        "RFC 9111 5.1: two Age lines count the first (0 then 7200 is fresh)",
        &[serve("/age-lines", &[("cache-control", "max-age=3600"), ("age", "0"), ("age", "7200")])],
        &[get("/age-lines").stored(), get("/age-lines").hit()],
    ),
    case(
        "RFC 9111 5.1: an invalid Age is ignored",
        &[serve("/age-invalid", &[("cache-control", "max-age=60"), ("age", "old")])],
        &[get("/age-invalid").stored(), get("/age-invalid").hit()],
    ),
    case(
        "RFC 9110 6.6.1: a response without Date gets one, on the fill and from storage",
        &[serve("/no-date", &[("cache-control", "max-age=60")])],
        &[
            get("/no-date").stored().headers(&[("date", Is::Present)]),
            get("/no-date").hit().headers(&[("date", Is::Present)]),
        ],
    )
    .raw_origin(),
    case(
        "RFC 9111 4.2.3: the apparent age from a Date in the past makes the response stale",
        &[serve("/old-date", &[("cache-control", "max-age=60"), ("date", "Mon, 01 Jan 2001 00:00:00 GMT")])],
        &[get("/old-date").calls(1), get("/old-date").calls(1)],
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age() {
    crate::table::run("age", CASES).await;
}
