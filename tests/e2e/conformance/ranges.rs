//! Range requests (RFC 9110 section 14) answered from a stored complete response: single ranges in every form,
//! 416 when unsatisfiable, `If-Range` (section 13.1.5), and the cases where `Range` must be ignored.

use crate::table::{Case, Is, Step, case, get, head, serve};

const LAST_MODIFIED: &str = "Sat, 01 Jan 2000 00:00:00 GMT";
const DIGITS: &[(&str, &str)] =
    &[("cache-control", "max-age=60"), ("etag", "\"r1\""), ("last-modified", LAST_MODIFIED)];

/// A GET of `/digits-*` with a `Range`, answered from storage.
const fn ranged(path: &'static str, range: &'static [(&'static str, &'static str)]) -> Step {
    get(path).with(range).calls(0)
}

const CASES: &[Case] = &[
    case(
        "RFC 9110 14.2: a range on a miss fills the whole representation and answers 206",
        &[serve("/digits-fill", DIGITS).body("0123456789")],
        &[
            get("/digits-fill")
                .with(&[("range", "bytes=2-4")])
                .status(206)
                .stored()
                .body(Is::Eq("234"))
                .headers(&[("content-range", Is::Eq("bytes 2-4/10")), ("content-length", Is::Eq("3"))])
                .origin_saw(&[("range", Is::Absent)]),
            get("/digits-fill").hit().body(Is::Eq("0123456789")),
        ],
    ),
    case(
        "RFC 9110 14.1.1: suffix, open-ended and past-the-end ranges",
        &[serve("/digits-forms", DIGITS).body("0123456789")],
        &[
            get("/digits-forms").stored(),
            ranged("/digits-forms", &[("range", "bytes=-3")])
                .status(206)
                .body(Is::Eq("789"))
                .headers(&[("content-range", Is::Eq("bytes 7-9/10"))]),
            ranged("/digits-forms", &[("range", "bytes=8-")])
                .status(206)
                .body(Is::Eq("89"))
                .headers(&[("content-range", Is::Eq("bytes 8-9/10"))]),
            ranged("/digits-forms", &[("range", "bytes=5-100")])
                .status(206)
                .body(Is::Eq("56789"))
                .headers(&[("content-range", Is::Eq("bytes 5-9/10"))]),
            ranged("/digits-forms", &[("range", "bytes=-20")])
                .status(206)
                .body(Is::Eq("0123456789"))
                .headers(&[("content-range", Is::Eq("bytes 0-9/10"))]),
        ],
    ),
    case(
        "RFC 9110 15.5.17: an unsatisfiable range gets 416 with Content-Range: bytes */length",
        &[serve("/digits-416", DIGITS).body("0123456789")],
        &[
            get("/digits-416").stored(),
            ranged("/digits-416", &[("range", "bytes=10-")])
                .status(416)
                .headers(&[("content-range", Is::Eq("bytes */10"))]),
        ],
    ),
    case(
        "RFC 9110 14.2: several ranges may be answered with the whole representation",
        &[serve("/digits-multi", DIGITS).body("0123456789")],
        &[
            get("/digits-multi").stored(),
            ranged("/digits-multi", &[("range", "bytes=0-1,4-5")]).body(Is::Eq("0123456789")),
        ],
    ),
    case(
        "RFC 9110 14.2: a Range in an unknown unit is ignored",
        &[serve("/digits-unit", DIGITS).body("0123456789")],
        &[
            get("/digits-unit").stored(),
            ranged("/digits-unit", &[("range", "items=0-1")])
                .body(Is::Eq("0123456789"))
                .headers(&[("content-range", Is::Absent)]),
        ],
    ),
    case(
        "RFC 9110 14.1.1 / 14.2: an invalid range (last before first) is ignored",
        &[serve("/digits-invalid", DIGITS).body("0123456789")],
        &[
            get("/digits-invalid").stored(),
            ranged("/digits-invalid", &[("range", "bytes=5-2")]).body(Is::Eq("0123456789")),
        ],
    ),
    case(
        "RFC 9110 14.2: Range is ignored on HEAD",
        &[serve("/digits-head", DIGITS).body("0123456789")],
        &[get("/digits-head").stored(), head("/digits-head").with(&[("range", "bytes=0-1")]).calls(0).body(Is::Eq(""))],
    ),
    case(
        "RFC 9110 13.1.5: If-Range with the current strong ETag gets the range",
        &[serve("/digits-if-range", DIGITS).body("0123456789")],
        &[
            get("/digits-if-range").stored(),
            ranged("/digits-if-range", &[("range", "bytes=0-1"), ("if-range", "\"r1\"")])
                .status(206)
                .body(Is::Eq("01")),
        ],
    ),
    case(
        "RFC 9110 13.1.5: If-Range with another ETag gets the whole representation",
        &[serve("/digits-if-range-old", DIGITS).body("0123456789")],
        &[
            get("/digits-if-range-old").stored(),
            ranged("/digits-if-range-old", &[("range", "bytes=0-1"), ("if-range", "\"r0\"")])
                .body(Is::Eq("0123456789")),
        ],
    ),
    case(
        "RFC 9110 13.1.5: If-Range never matches a weak ETag",
        &[serve("/digits-if-range-weak", DIGITS).body("0123456789")],
        &[
            get("/digits-if-range-weak").stored(),
            ranged("/digits-if-range-weak", &[("range", "bytes=0-1"), ("if-range", "W/\"r1\"")])
                .body(Is::Eq("0123456789")),
        ],
    ),
    case(
        "RFC 9110 13.1.5: If-Range with the Last-Modified date gets the range",
        &[serve("/digits-if-range-date", DIGITS).body("0123456789")],
        &[
            get("/digits-if-range-date").stored(),
            ranged("/digits-if-range-date", &[("range", "bytes=0-1"), ("if-range", LAST_MODIFIED)])
                .status(206)
                .body(Is::Eq("01")),
            ranged("/digits-if-range-date", &[("range", "bytes=0-1"), ("if-range", "Sun, 02 Jan 2000 00:00:00 GMT")])
                .body(Is::Eq("0123456789")),
        ],
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges() {
    crate::table::run("ranges", CASES).await;
}
