//! Conditional GET/HEAD answered by the cache: `If-None-Match` and `If-Modified-Since` (RFC 9110 section 13).
//!
//! The cache answers 304 itself when the stored representation matches the client's validators, so this module
//! decides exactly that and nothing more. The rules, in RFC 9110 section 13.2.2 order:
//!
//! 1. `If-None-Match` wins. It is compared with the weak comparison (section 13.1.2), so a `W/` copy of our own
//!    strong tag, as a compressing proxy in front produces, still matches. `*` matches because the cache only
//!    evaluates for a representation it holds.
//! 2. `If-Modified-Since` counts only when the request has no `If-None-Match` line at all (section 13.1.3), even a
//!    malformed one; it is ignored unless it is a single valid HTTP-date and the stored `Last-Modified` is one too.
//!
//! A malformed header is ignored, never an error: the client gets the full response, which is always correct.
//! `If-Match`, `If-Unmodified-Since` and `If-Range` are not evaluated here; [`has_origin_preconditions`] tells the
//! caller to leave such requests to the origin.
//!
//! The caller evaluates only for GET/HEAD and only when the stored response is a 2xx (section 13.2.1: a 304 may
//! only stand for a response that would have been 2xx).

use std::time::SystemTime;

use http::HeaderMap;
use http::header::{IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE};

use crate::etag::{self, EntityTag};

/// A parsed `If-None-Match` (RFC 9110 section 13.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfNoneMatch {
    /// `*`: matches any current representation.
    Any,
    /// A non-empty list of entity tags.
    Tags(Vec<EntityTag>),
}

/// The outcome of evaluating a request's preconditions against a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evaluation {
    /// Answer 304 Not Modified.
    NotModified,
    /// Answer with the full stored response.
    Proceed,
}

/// Reads every `If-None-Match` line as one list.
///
/// `None` when the header is absent, empty, not UTF-8, or malformed anywhere (including `*` mixed with tags):
/// a header we cannot read in full is ignored, so the client gets a 200 rather than a wrong 304.
pub fn if_none_match(headers: &HeaderMap) -> Option<IfNoneMatch> {
    let mut any = false;
    let mut tags = Vec::new();
    for value in headers.get_all(IF_NONE_MATCH) {
        let text = std::str::from_utf8(value.as_bytes()).ok()?;
        if text.trim_matches([' ', '\t']) == "*" {
            any = true;
        } else {
            tags.extend(etag::parse_list(text)?);
        }
    }
    match (any, tags.is_empty()) {
        (true, true) => Some(IfNoneMatch::Any),
        // `If-None-Match = "*" / #entity-tag`: the two forms do not mix.
        (true, false) => None,
        (false, true) => None,
        (false, false) => Some(IfNoneMatch::Tags(tags)),
    }
}

/// Evaluates `If-None-Match` / `If-Modified-Since` against the stored validators (RFC 9110 section 13.2.2).
///
/// `etag` is the stored entity tag, `last_modified` the stored `Last-Modified` value. Returns
/// [`Evaluation::NotModified`] when the client's copy is current.
pub fn evaluate(headers: &HeaderMap, etag: Option<&EntityTag>, last_modified: Option<&str>) -> Evaluation {
    evaluate_read(headers, if_none_match(headers).as_ref(), etag, last_modified)
}

/// [`evaluate`] with `If-None-Match` already read (`if_none_match`), for callers that also look at it for
/// [`weakened_in`].
pub(crate) fn evaluate_read(
    headers: &HeaderMap,
    if_none_match: Option<&IfNoneMatch>,
    etag: Option<&EntityTag>,
    last_modified: Option<&str>,
) -> Evaluation {
    // RFC 9110 section 13.1.3: a recipient MUST ignore If-Modified-Since when the request has If-None-Match,
    // whether or not it could be read.
    if headers.contains_key(IF_NONE_MATCH) {
        let matched = match if_none_match {
            // RFC 9110 section 13.1.2: `*` is false when a current representation exists, and the cache only asks
            // about one it holds.
            Some(IfNoneMatch::Any) => true,
            // RFC 9110 section 13.1.2: the weak comparison function.
            Some(IfNoneMatch::Tags(tags)) => etag.is_some_and(|stored| tags.iter().any(|tag| tag.weak_eq(stored))),
            None => false,
        };
        return if matched { Evaluation::NotModified } else { Evaluation::Proceed };
    }
    match (if_modified_since(headers), last_modified.and_then(parse_date)) {
        // RFC 9110 section 13.1.3: false (304) when the selected representation's last modification date is
        // earlier than or equal to the date provided.
        (Some(since), Some(modified)) if modified <= since => Evaluation::NotModified,
        _ => Evaluation::Proceed,
    }
}

/// The `If-Modified-Since` date, when there is exactly one line holding a valid HTTP-date (RFC 9110 section
/// 13.1.3: otherwise the field is ignored).
fn if_modified_since(headers: &HeaderMap) -> Option<SystemTime> {
    let mut lines = headers.get_all(IF_MODIFIED_SINCE).iter();
    let first = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    parse_date(std::str::from_utf8(first.as_bytes()).ok()?)
}

fn parse_date(value: &str) -> Option<SystemTime> {
    // The clock only settles the century of a two-digit year, so the wall clock serves.
    crate::date::parse(value, SystemTime::now())
}

/// Whether `If-None-Match` carries `W/"<opaque>"` of `etag` while `etag` itself is strong: a proxy in front
/// weakened a tag we sent (nginx's gzip filter does), which an operator wants counted.
pub fn weakened_copy_of(headers: &HeaderMap, etag: &EntityTag) -> bool {
    weakened_in(if_none_match(headers).as_ref(), etag)
}

/// [`weakened_copy_of`] with `If-None-Match` already read.
pub(crate) fn weakened_in(if_none_match: Option<&IfNoneMatch>, etag: &EntityTag) -> bool {
    match if_none_match {
        Some(IfNoneMatch::Tags(tags)) if !etag.weak => tags.iter().any(|tag| tag.weak && tag.opaque == etag.opaque),
        _ => false,
    }
}

/// Whether the request carries a precondition [`evaluate`] looks at (`If-None-Match` or `If-Modified-Since`).
pub fn is_conditional(headers: &HeaderMap) -> bool {
    headers.contains_key(IF_NONE_MATCH) || headers.contains_key(IF_MODIFIED_SINCE)
}

/// Whether the request carries a precondition the cache does not evaluate (`If-Match`, `If-Unmodified-Since`,
/// `If-Range`); RFC 9111 section 4.3.2 lets a cache forward such a request to the origin instead.
pub fn has_origin_preconditions(headers: &HeaderMap) -> bool {
    [IF_MATCH, IF_UNMODIFIED_SINCE, IF_RANGE].iter().any(|name| headers.contains_key(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    type Lines<'a> = Vec<(&'a str, &'a [u8])>;

    const LM: &str = "Tue, 24 Nov 2026 10:00:00 GMT";
    const BEFORE: &str = "Tue, 24 Nov 2026 09:59:59 GMT";
    const AFTER: &str = "Tue, 24 Nov 2026 10:00:01 GMT";

    fn map(lines: &[(&str, &[u8])]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in lines {
            headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_bytes(value).unwrap());
        }
        headers
    }

    fn strong(s: &str) -> EntityTag {
        EntityTag::strong(s)
    }

    fn weak(s: &str) -> EntityTag {
        EntityTag::weak(s)
    }

    #[test]
    fn parsing_if_none_match() {
        let check = |lines: &[&[u8]], expected: Option<IfNoneMatch>| {
            let headers = map(&lines.iter().map(|line| ("if-none-match", *line)).collect::<Vec<_>>());
            assert_eq!(if_none_match(&headers), expected, "lines: {lines:?}");
        };
        check(&[], None);
        check(&[b"*"], Some(IfNoneMatch::Any));
        check(&[b" * "], Some(IfNoneMatch::Any));
        check(&[b"*", b"*"], Some(IfNoneMatch::Any));
        check(&[b"\"a\""], Some(IfNoneMatch::Tags(vec![strong("a")])));
        check(&[b"\"a\", W/\"b\"", b"\"c\""], Some(IfNoneMatch::Tags(vec![strong("a"), weak("b"), strong("c")])));
        check(&[b"\"caf\xc3\xa9\""], Some(IfNoneMatch::Tags(vec![strong("caf\u{e9}")])));
        // Malformed, empty or mixed: ignored.
        check(&[b""], None);
        check(&[b" , "], None);
        check(&[b"*", b"\"a\""], None);
        check(&[b"\"a\", *"], None);
        check(&[b"a"], None);
        check(&[b"\"a"], None);
        check(&[b"\"a\"", b"garbage"], None);
        check(&[b"2026-11-24 10:00:00.123456"], None);
        check(&[b"\"\xff\""], None);
        check(&[b"w/\"a\""], None);
        check(&[&[b'"'; 1000]], None);
    }

    #[test]
    fn evaluation() {
        let tag = strong("v1");
        let weak_tag = weak("v1");
        let cases: Vec<(Lines<'_>, Option<&EntityTag>, Option<&str>, Evaluation)> = vec![
            // No precondition.
            (vec![], Some(&tag), Some(LM), Evaluation::Proceed),
            // If-None-Match, weak comparison.
            (vec![("if-none-match", b"\"v1\"")], Some(&tag), None, Evaluation::NotModified),
            (vec![("if-none-match", b"W/\"v1\"")], Some(&tag), None, Evaluation::NotModified),
            (vec![("if-none-match", b"\"v1\"")], Some(&weak_tag), None, Evaluation::NotModified),
            (vec![("if-none-match", b"\"v0\", \"v1\"")], Some(&tag), None, Evaluation::NotModified),
            (
                vec![("if-none-match", b"\"v0\""), ("if-none-match", b"\"v1\"")],
                Some(&tag),
                None,
                Evaluation::NotModified,
            ),
            (vec![("if-none-match", b"\"v2\"")], Some(&tag), None, Evaluation::Proceed),
            (vec![("if-none-match", b"\"V1\"")], Some(&tag), None, Evaluation::Proceed),
            (vec![("if-none-match", b"\"v1\"")], None, Some(LM), Evaluation::Proceed),
            (vec![("if-none-match", b"*")], Some(&tag), None, Evaluation::NotModified),
            (vec![("if-none-match", b"*")], None, None, Evaluation::NotModified),
            // Unquoted (the seed's tag after nginx) never matches.
            (vec![("if-none-match", b"v1")], Some(&tag), None, Evaluation::Proceed),
            // If-None-Match wins over If-Modified-Since, both ways (RFC 9110 section 13.2.2).
            (
                vec![("if-none-match", b"\"v2\""), ("if-modified-since", AFTER.as_bytes())],
                Some(&tag),
                Some(LM),
                Evaluation::Proceed,
            ),
            (
                vec![("if-none-match", b"\"v1\""), ("if-modified-since", BEFORE.as_bytes())],
                Some(&tag),
                Some(LM),
                Evaluation::NotModified,
            ),
            // A malformed If-None-Match is ignored, and still disables If-Modified-Since.
            (
                vec![("if-none-match", b"garbage"), ("if-modified-since", AFTER.as_bytes())],
                Some(&tag),
                Some(LM),
                Evaluation::Proceed,
            ),
            (
                vec![("if-none-match", b""), ("if-modified-since", AFTER.as_bytes())],
                Some(&tag),
                Some(LM),
                Evaluation::Proceed,
            ),
            // If-Modified-Since alone.
            (vec![("if-modified-since", LM.as_bytes())], Some(&tag), Some(LM), Evaluation::NotModified),
            (vec![("if-modified-since", AFTER.as_bytes())], None, Some(LM), Evaluation::NotModified),
            (vec![("if-modified-since", BEFORE.as_bytes())], Some(&tag), Some(LM), Evaluation::Proceed),
            (vec![("if-modified-since", b"Tuesday, 24-Nov-26 10:00:00 GMT")], None, Some(LM), Evaluation::NotModified),
            (vec![("if-modified-since", b"Tue Nov 24 10:00:00 2026")], None, Some(LM), Evaluation::NotModified),
            (vec![("if-modified-since", LM.as_bytes())], Some(&tag), None, Evaluation::Proceed),
            (vec![("if-modified-since", LM.as_bytes())], Some(&tag), Some("yesterday"), Evaluation::Proceed),
            // Invalid or repeated If-Modified-Since is ignored.
            (vec![("if-modified-since", b"0")], None, Some(LM), Evaluation::Proceed),
            (vec![("if-modified-since", b"")], None, Some(LM), Evaluation::Proceed),
            (vec![("if-modified-since", b"\xff\xfe")], None, Some(LM), Evaluation::Proceed),
            (
                vec![("if-modified-since", b"Tue, 24 Nov 2026 10:00:00 GMT, Tue, 24 Nov 2026 10:00:00 GMT")],
                None,
                Some(LM),
                Evaluation::Proceed,
            ),
            (
                vec![("if-modified-since", AFTER.as_bytes()), ("if-modified-since", AFTER.as_bytes())],
                None,
                Some(LM),
                Evaluation::Proceed,
            ),
            (vec![("if-modified-since", b"Tue, 99 Nov 2026 10:00:00 GMT")], None, Some(LM), Evaluation::Proceed),
            // Preconditions the cache does not evaluate do not produce 304.
            (vec![("if-match", b"\"v1\"")], Some(&tag), Some(LM), Evaluation::Proceed),
            (vec![("if-unmodified-since", AFTER.as_bytes())], Some(&tag), Some(LM), Evaluation::Proceed),
        ];
        for (lines, etag, last_modified, expected) in cases {
            assert_eq!(
                evaluate(&map(&lines), etag, last_modified),
                expected,
                "lines: {lines:?}, etag: {etag:?}, lm: {last_modified:?}"
            );
        }
    }

    #[test]
    fn weakened_copies() {
        let minted = EntityTag::mint_timestamp(0x18a2, 7);
        let weakened = format!("W/\"{}\"", minted.opaque);
        let exact = minted.to_header_value();
        let cases: Vec<(Vec<&[u8]>, EntityTag, bool)> = vec![
            (vec![weakened.as_bytes()], minted.clone(), true),
            (vec![b"\"x\", ", weakened.as_bytes()], minted.clone(), true),
            (vec![exact.as_bytes()], minted.clone(), false),
            (vec![b"W/\"other\""], minted.clone(), false),
            (vec![weakened.as_bytes()], EntityTag::weak(minted.opaque.clone()), false),
            (vec![b"*"], minted.clone(), false),
            (vec![b"garbage"], minted.clone(), false),
            (vec![], minted.clone(), false),
        ];
        for (lines, etag, expected) in cases {
            let headers = map(&lines.iter().map(|line| ("if-none-match", *line)).collect::<Vec<_>>());
            assert_eq!(weakened_copy_of(&headers, &etag), expected, "lines: {lines:?}, etag: {etag}");
        }
    }

    #[test]
    fn precondition_kinds() {
        let cases: Vec<(Lines<'_>, bool, bool)> = vec![
            (vec![], false, false),
            (vec![("if-none-match", b"\"a\"")], true, false),
            (vec![("if-none-match", b"garbage")], true, false),
            (vec![("if-modified-since", LM.as_bytes())], true, false),
            (vec![("if-match", b"*")], false, true),
            (vec![("if-unmodified-since", LM.as_bytes())], false, true),
            (vec![("if-range", b"\"a\"")], false, true),
            (vec![("if-none-match", b"*"), ("if-range", b"\"a\"")], true, true),
            (vec![("etag", b"\"a\"")], false, false),
        ];
        for (lines, conditional, origin) in cases {
            let headers = map(&lines);
            assert_eq!(is_conditional(&headers), conditional, "lines: {lines:?}");
            assert_eq!(has_origin_preconditions(&headers), origin, "lines: {lines:?}");
        }
    }
}
