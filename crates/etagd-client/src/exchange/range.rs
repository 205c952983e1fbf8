//! Byte ranges answered from storage (RFC 9110 section 14): one range of a stored complete 200, as a 206 with
//! `Content-Range`; an unsatisfiable one as a 416; `If-Range` with a strong validator or a date. Several ranges,
//! or a unit other than bytes, get the whole 200, which RFC 9110 section 14.2 allows.

use std::ops::Range;

use http::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::body::{Body, BodySource};
use crate::etag::EntityTag;

/// What a request's `Range` asks of a representation of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// The whole representation (no range, several ranges, another unit, or a failed `If-Range`).
    Whole,
    /// These bytes.
    Part(Range<u64>),
    /// Nothing in range: 416.
    Unsatisfiable,
}

/// Reads the request's `Range` against a stored response (its headers hold the `ETag` and `Last-Modified` the
/// client would see).
pub(crate) fn wanted(request: &HeaderMap, response: &HeaderMap, len: u64) -> Wanted {
    let Some(range) = request.get(RANGE).and_then(|value| value.to_str().ok()) else { return Wanted::Whole };
    if !if_range_holds(request, response) {
        return Wanted::Whole;
    }
    parse(range, len)
}

/// RFC 9110 section 13.1.5: the range applies only when the validator still matches: a strong entity tag
/// compared strongly, or a date equal to `Last-Modified`.
fn if_range_holds(request: &HeaderMap, response: &HeaderMap) -> bool {
    let Some(condition) = request.get(IF_RANGE).and_then(|value| value.to_str().ok()) else { return true };
    let condition = condition.trim();
    if condition.starts_with('"') || condition.starts_with("W/") {
        let current = response.get(ETAG).and_then(|value| value.to_str().ok()).and_then(EntityTag::parse);
        return match (EntityTag::parse(condition), current) {
            (Some(given), Some(current)) => given.strong_eq(&current),
            _ => false,
        };
    }
    let last_modified = response.get(LAST_MODIFIED).and_then(|value| value.to_str().ok());
    match (httpdate::parse_http_date(condition), last_modified.and_then(|lm| httpdate::parse_http_date(lm).ok())) {
        (Ok(given), Some(current)) => given == current,
        _ => false,
    }
}

/// RFC 9110 section 14.1.2: `bytes=first-last`, `bytes=first-`, `bytes=-suffix`.
fn parse(range: &str, len: u64) -> Wanted {
    let Some(spec) = range.trim().strip_prefix("bytes=") else { return Wanted::Whole };
    let mut specs = spec.split(',').map(str::trim).filter(|s| !s.is_empty());
    let (Some(one), None) = (specs.next(), specs.next()) else { return Wanted::Whole };
    let Some((first, last)) = one.split_once('-') else { return Wanted::Whole };
    let number = |text: &str| {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse::<u64>().ok()).flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            Some(0) => Wanted::Unsatisfiable,
            Some(n) if len > 0 => Wanted::Part(len.saturating_sub(n)..len),
            Some(_) => Wanted::Unsatisfiable,
            None => Wanted::Whole,
        },
        (first, last) => {
            let Some(first) = number(first) else { return Wanted::Whole };
            let last = match last {
                "" => len.saturating_sub(1),
                last => match number(last) {
                    Some(last) if last >= first => last.min(len.saturating_sub(1)),
                    // An invalid range-spec: the field is ignored (RFC 9110 section 14.2).
                    _ => return Wanted::Whole,
                },
            };
            if first >= len { Wanted::Unsatisfiable } else { Wanted::Part(first..last + 1) }
        }
    }
}

/// Turns a full answer from storage into what the range asks: a 206 with the part, a 416, or the 200 as it is.
pub(crate) fn apply(head: Response<()>, source: &dyn BodySource, request: &HeaderMap) -> Response<Body> {
    let (head, part) = plan(head, source.len(), request);
    head.map(|()| part.map_or_else(Body::empty, |part| source.range(part)))
}

/// The head of what the range asks of a full answer of `len` bytes, and the bytes its body carries (`None`:
/// none, a 416): for a source that must check its items before the head goes out (a chunked body).
pub(crate) fn plan(head: Response<()>, len: u64, request: &HeaderMap) -> (Response<()>, Option<Range<u64>>) {
    match wanted(request, head.headers(), len) {
        Wanted::Whole => (head, Some(0..len)),
        Wanted::Part(part) => {
            let mut response = head;
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let content_range = format!("bytes {}-{}/{len}", part.start, part.end - 1);
            let headers = response.headers_mut();
            headers.insert(CONTENT_RANGE, HeaderValue::from_str(&content_range).expect("digits and ASCII"));
            headers.insert(CONTENT_LENGTH, HeaderValue::from(part.end - part.start));
            (response, Some(part))
        }
        Wanted::Unsatisfiable => {
            let mut response = head;
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            let headers = response.headers_mut();
            headers.insert(CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{len}")).expect("digits and ASCII"));
            headers.insert(CONTENT_LENGTH, HeaderValue::from(0));
            (response, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        lines.iter().map(|(n, v)| (http::HeaderName::from_static(n), HeaderValue::from_static(v))).collect()
    }

    /// RFC 9110 sections 14.1.2 and 14.2: the forms of a byte range over a 10 000-byte representation.
    #[test]
    fn ranges_are_read_as_rfc_9110_writes_them() {
        let cases = [
            ("bytes=0-499", Wanted::Part(0..500)),
            ("bytes=9500-", Wanted::Part(9500..10_000)),
            ("bytes=-500", Wanted::Part(9500..10_000)),
            ("bytes=-20000", Wanted::Part(0..10_000)),
            ("bytes=9999-20000", Wanted::Part(9999..10_000)),
            ("bytes=10000-", Wanted::Unsatisfiable),
            ("bytes=-0", Wanted::Unsatisfiable),
            ("bytes=500-499", Wanted::Whole),
            ("bytes=0-1,5-6", Wanted::Whole),
            ("items=0-1", Wanted::Whole),
            ("bytes=x-1", Wanted::Whole),
            ("bytes= 0-9 ", Wanted::Part(0..10)),
        ];
        for (range, expected) in cases {
            assert_eq!(parse(range, 10_000), expected, "{range}");
        }
        assert_eq!(parse("bytes=0-", 0), Wanted::Unsatisfiable);
    }

    /// RFC 9110 section 13.1.5: If-Range with a strong tag (strong comparison) or a date equal to Last-Modified.
    #[test]
    fn if_range_needs_a_matching_strong_validator() {
        let stored = map(&[("etag", "\"v1\""), ("last-modified", "Tue, 24 Nov 2026 10:00:00 GMT")]);
        let ask = |if_range: &'static str| wanted(&map(&[("range", "bytes=0-1"), ("if-range", if_range)]), &stored, 10);
        assert_eq!(ask("\"v1\""), Wanted::Part(0..2));
        assert_eq!(ask("\"v0\""), Wanted::Whole);
        assert_eq!(ask("W/\"v1\""), Wanted::Whole, "a weak tag never matches");
        assert_eq!(ask("Tue, 24 Nov 2026 10:00:00 GMT"), Wanted::Part(0..2));
        assert_eq!(ask("Tue, 24 Nov 2026 09:00:00 GMT"), Wanted::Whole);
    }
}
