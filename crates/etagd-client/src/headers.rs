//! Header rules that are not about freshness: hop-by-hop fields, the fields a 304 repeats, `Vary` names and the
//! tag lists of `Surrogate-Key` / `Etagd-Invalidate`.
//!
//! Everything here is a pure function of a `HeaderMap`; non-UTF-8 values are skipped rather than guessed at.

use http::header::{CACHE_CONTROL, CONNECTION, CONTENT_LOCATION, EXPIRES, VARY};
use http::{HeaderMap, HeaderName};

/// The response header carrying the space-separated tags an entry is filed under (Fastly's name for it).
pub const SURROGATE_KEY: &str = "surrogate-key";

/// The response header an origin sets to invalidate tags as a side effect of a response (space-separated tags).
pub const ETAGD_INVALIDATE: &str = "etagd-invalidate";

/// The most tags [`parse_tags`] keeps; each tag costs a generation read on every lookup.
pub const MAX_TAGS: usize = 64;

/// The longest tag in bytes [`parse_tags`] keeps.
pub const MAX_TAG_LEN: usize = 256;

/// The hop-by-hop fields removed whether or not `Connection` names them (RFC 9110 section 7.6.1, plus the
/// non-standard `keep-alive` and `proxy-connection` that HTTP/1.0 clients still send).
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The fields a 304 repeats from the 200 it stands for (RFC 9110 section 15.4.5), besides `ETag` and `Date`.
const REPEATED_ON_304: [HeaderName; 4] = [CACHE_CONTROL, CONTENT_LOCATION, EXPIRES, VARY];

/// `Vary: *` (RFC 9110 section 12.5.5): the response varies on something outside the request, so a shared cache
/// can never reuse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the response carries `Vary: *` and cannot be reused; drop `*` from Vary to make it cacheable")]
pub struct VaryStar;

/// Whether `name` is always hop-by-hop (one of [`HOP_BY_HOP`]).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// Removes the hop-by-hop fields: every name in [`HOP_BY_HOP`] and every field named in a `Connection` value
/// (RFC 9110 section 7.6.1).
///
/// Since a client can name any field in `Connection`, a proxy must add its own forwarding fields after calling
/// this, never before.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        // Options such as `close` parse as names too; removing a field that is absent is harmless.
        .filter_map(|option| HeaderName::from_bytes(trim_ows(option)).ok())
        .collect();
    for name in &named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |last| last + 1);
    &bytes[start..end]
}

/// Parses a space-separated tag list (`Surrogate-Key`, `Etagd-Invalidate`).
///
/// Tags are split on ASCII whitespace, kept in first-seen order without duplicates; a tag containing a control
/// character or longer than [`MAX_TAG_LEN`] bytes is dropped, and at most [`MAX_TAGS`] tags are kept.
pub fn parse_tags(value: &str) -> Vec<String> {
    let mut tags = Vec::new();
    push_tags(&mut tags, value);
    tags
}

/// The tags of every `name` line in `headers`, combined as [`parse_tags`] does; non-UTF-8 tags are dropped.
pub fn tags_in(headers: &HeaderMap, name: &str) -> Vec<String> {
    let mut tags = Vec::new();
    for value in headers.get_all(name) {
        for word in value.as_bytes().split(|b| b.is_ascii_whitespace()) {
            if let Ok(word) = std::str::from_utf8(word) {
                push_tags(&mut tags, word);
            }
        }
    }
    tags
}

fn push_tags(tags: &mut Vec<String>, value: &str) {
    for tag in value.split_ascii_whitespace() {
        if tags.len() >= MAX_TAGS {
            return;
        }
        let acceptable = tag.len() <= MAX_TAG_LEN && !tag.chars().any(char::is_control);
        if acceptable && !tags.iter().any(|seen| seen == tag) {
            tags.push(tag.to_owned());
        }
    }
}

/// Whether a stored 200's field `name` (lowercase) is repeated on a 304 (RFC 9110 section 15.4.5):
/// `Cache-Control`, `Content-Location`, `Expires`, `Vary`. `ETag` and `Date` are not included: the caller writes
/// the current validator and the current date.
pub fn repeated_on_304(name: &str) -> bool {
    REPEATED_ON_304.iter().any(|repeated| repeated.as_str() == name)
}

/// Fields of a 304 (or of a HEAD answer standing for one) that never replace a stored field: `Content-Length`
/// (RFC 9111 section 3.2), the validator and `Vary` (the 304 confirms the validator it was asked about, and the
/// per-coding representations and their tags are etagd's own), the fields describing bytes the 304 did not
/// carry, and those etagd consumes or writes on every answer.
const NOT_UPDATED_BY_304: [&str; 9] = [
    "content-length",
    "etag",
    "vary",
    "content-encoding",
    "content-range",
    "age",
    "cache-status",
    SURROGATE_KEY,
    ETAGD_INVALIDATE,
];

/// Whether a field of a 304 replaces the stored response's field of that name (RFC 9111 section 4.3.4);
/// hop-by-hop fields never do. Call [`strip_hop_by_hop`] first for the fields `Connection` names.
pub fn updates_stored(name: &HeaderName) -> bool {
    !is_hop_by_hop(name) && !NOT_UPDATED_BY_304.contains(&name.as_str())
}

/// The stored header fields `stored` updated with a 304's `answer` (RFC 9111 section 4.3.4): each field the
/// answer carries replaces every stored line of that name, and keeps all of its own lines (a multi-line field
/// stays whole).
pub fn updated_with_304(stored: &HeaderMap, answer: &HeaderMap) -> HeaderMap {
    let mut merged = stored.clone();
    for name in answer.keys().filter(|name| updates_stored(name)) {
        merged.remove(name);
        for value in answer.get_all(name) {
            merged.append(name.clone(), value.clone());
        }
    }
    merged
}

/// The field names a response varies on (RFC 9110 section 12.5.5), combining every `Vary` line: lowercase,
/// sorted, without duplicates or empty elements.
///
/// A member that is not a valid field name cannot occur in any request, so it never splits variants and is
/// dropped. `Err(VaryStar)` when any member is `*`.
pub fn vary_names(headers: &HeaderMap) -> Result<Vec<String>, VaryStar> {
    let mut names = Vec::new();
    for value in headers.get_all(VARY) {
        for member in value.as_bytes().split(|&b| b == b',') {
            let member = trim_ows(member);
            if member == b"*" {
                return Err(VaryStar);
            }
            if let Ok(name) = HeaderName::from_bytes(member) {
                names.push(name.as_str().to_owned());
            }
        }
    }
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(lines: &[(&str, &[u8])]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in lines {
            headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_bytes(value).unwrap());
        }
        headers
    }

    fn names(headers: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn hop_by_hop_names() {
        let cases = [
            ("connection", true),
            ("Keep-Alive", true),
            ("proxy-connection", true),
            ("proxy-authenticate", true),
            ("proxy-authorization", true),
            ("te", true),
            ("trailer", true),
            ("transfer-encoding", true),
            ("upgrade", true),
            ("content-length", false),
            ("cache-control", false),
            ("authorization", false),
            ("x-te", false),
        ];
        for (name, expected) in cases {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(is_hop_by_hop(&name), expected, "{name}");
        }
    }

    #[test]
    fn stripping() {
        let check = |lines: &[(&str, &[u8])], expected: &[&str]| {
            let mut headers = map(lines);
            strip_hop_by_hop(&mut headers);
            assert_eq!(names(&headers), expected, "lines: {lines:?}");
        };
        check(&[], &[]);
        check(
            &[
                ("connection", b"keep-alive"),
                ("keep-alive", b"timeout=5"),
                ("transfer-encoding", b"chunked"),
                ("te", b"trailers"),
                ("trailer", b"x-checksum"),
                ("upgrade", b"h2c"),
                ("proxy-connection", b"close"),
                ("proxy-authorization", b"Basic x"),
                ("proxy-authenticate", b"Basic"),
                ("content-type", b"text/html"),
                ("etag", b"\"a\""),
            ],
            &["content-type", "etag"],
        );
        // Fields named in Connection go too, whatever their case, across lines and with odd spacing.
        check(
            &[
                ("connection", b"close, X-Private-Thing"),
                ("connection", b" ,\tx-other ,"),
                ("x-private-thing", b"1"),
                ("x-other", b"2"),
                ("x-kept", b"3"),
            ],
            &["x-kept"],
        );
        // Junk in Connection is skipped without touching anything else.
        check(&[("connection", b"\xff\xfe, a b, ,"), ("a", b"1"), ("b", b"2")], &["a", "b"]);
    }

    #[test]
    fn tag_lists() {
        let long = "t".repeat(MAX_TAG_LEN);
        let too_long = "t".repeat(MAX_TAG_LEN + 1);
        let with_long = format!("a {long} {too_long} b");
        let many: String = (0..100).map(|n| format!("t{n} ")).collect();
        let first_64: Vec<String> = (0..64).map(|n| format!("t{n}")).collect();
        let cases: Vec<(&str, Vec<String>)> = vec![
            ("", vec![]),
            ("   ", vec![]),
            ("server", vec!["server".into()]),
            ("server list  server\tlist page:1", vec!["server".into(), "list".into(), "page:1".into()]),
            ("b a b a", vec!["b".into(), "a".into()]),
            ("Case case", vec!["Case".into(), "case".into()]),
            ("ok bad\u{1}tag also\u{7f}bad fine caf\u{e9}", vec!["ok".into(), "fine".into(), "caf\u{e9}".into()]),
            ("x\u{85}y z", vec!["z".into()]),
            (&with_long, vec!["a".into(), long.clone(), "b".into()]),
            (&many, first_64),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_tags(input), expected, "input: {input:?}");
        }
    }

    #[test]
    fn tags_across_lines() {
        let headers = map(&[
            ("surrogate-key", b"a b"),
            ("surrogate-key", b"b c \xff\xfe d"),
            ("surrogate-key", b""),
            ("etagd-invalidate", b"z"),
        ]);
        assert_eq!(tags_in(&headers, SURROGATE_KEY), ["a", "b", "c", "d"]);
        assert_eq!(tags_in(&headers, ETAGD_INVALIDATE), ["z"]);
        assert!(tags_in(&headers, "x-none").is_empty());
        let many: Vec<(&str, &[u8])> = vec![("surrogate-key", b"a b c d e f g h"); 20];
        assert_eq!(tags_in(&map(&many), SURROGATE_KEY).len(), 8);
        let lines: Vec<String> = (0..10).map(|line| (0..10).map(|n| format!("t{line}-{n} ")).collect()).collect();
        let lines: Vec<(&str, &[u8])> = lines.iter().map(|line| ("surrogate-key", line.as_bytes())).collect();
        assert_eq!(tags_in(&map(&lines), SURROGATE_KEY).len(), MAX_TAGS);
    }

    #[test]
    fn repeated_on_304_names() {
        // RFC 9110 section 15.4.5.
        for name in ["cache-control", "content-location", "expires", "vary"] {
            assert!(repeated_on_304(name), "{name}");
        }
        for name in ["content-type", "content-length", "etag", "date", "set-cookie", "last-modified"] {
            assert!(!repeated_on_304(name), "{name}");
        }
    }

    #[test]
    fn a_304_replaces_whole_fields_but_never_framing_or_validators() {
        // RFC 9111 section 4.3.4: every field of the 304 replaces all stored lines of its name; section 3.2:
        // Content-Length is never updated; hop-by-hop fields never apply.
        let stored = map(&[
            ("content-type", b"text/html"),
            ("cache-control", b"public"),
            ("cache-control", b"max-age=1"),
            ("x-multi", b"1"),
            ("x-multi", b"2"),
            ("vary", b"Accept-Encoding"),
            ("content-length", b"5"),
        ]);
        let answer = map(&[
            ("cache-control", b"max-age=3600"),
            ("x-multi", b"3"),
            ("x-multi", b"4"),
            ("x-new", b"n"),
            ("content-length", b"0"),
            ("etag", b"\"other\""),
            ("vary", b"*"),
            ("keep-alive", b"timeout=5"),
            ("surrogate-key", b"t"),
        ]);
        let merged = updated_with_304(&stored, &answer);
        let lines = |name: &str| -> Vec<&[u8]> { merged.get_all(name).iter().map(|v| v.as_bytes()).collect() };
        assert_eq!(lines("cache-control"), [b"max-age=3600".as_slice()]);
        assert_eq!(lines("x-multi"), [b"3".as_slice(), b"4"]);
        assert_eq!(lines("x-new"), [b"n".as_slice()]);
        assert_eq!(lines("content-type"), [b"text/html".as_slice()]);
        assert_eq!(lines("content-length"), [b"5".as_slice()]);
        assert_eq!(lines("vary"), [b"Accept-Encoding".as_slice()]);
        assert!(lines("etag").is_empty() && lines("keep-alive").is_empty() && lines("surrogate-key").is_empty());
    }

    #[test]
    fn vary() {
        let check = |lines: &[&[u8]], expected: Result<Vec<&str>, VaryStar>| {
            let headers = map(&lines.iter().map(|line| ("vary", *line)).collect::<Vec<_>>());
            let expected = expected.map(|names| names.into_iter().map(str::to_owned).collect::<Vec<_>>());
            assert_eq!(vary_names(&headers), expected, "lines: {lines:?}");
        };
        check(&[], Ok(vec![]));
        check(&[b""], Ok(vec![]));
        check(&[b"Accept-Encoding"], Ok(vec!["accept-encoding"]));
        check(
            &[b"accept-language, Accept-Encoding", b"ACCEPT-ENCODING,,cookie"],
            Ok(vec!["accept-encoding", "accept-language", "cookie"]),
        );
        check(&[b" , x-a ,\tx-b\t"], Ok(vec!["x-a", "x-b"]));
        check(&[b"*"], Err(VaryStar));
        check(&[b"accept", b" * "], Err(VaryStar));
        check(&[b"accept, *, cookie"], Err(VaryStar));
        // Members that are not field names can never split variants.
        check(&[b"bad name, \xff, a\"b, accept"], Ok(vec!["accept"]));
        // `*` is a token character, so `**` is an ordinary (odd) field name, not the wildcard.
        check(&[b"**"], Ok(vec!["**"]));
    }
}
