//! `Cache-Control` directive parsing (RFC 9111 section 5.2), for requests and responses alike.
//!
//! This module owns turning header lines into a [`CacheControl`] value; what the directives *mean* for storage
//! lives in `cacheability`. Parsing never fails and never panics: unknown directives are ignored, and anything
//! malformed falls back to the reading that caches *less*:
//!
//! - an invalid or conflicting `max-age` / `s-maxage` reads as `Some(0)`, i.e. already stale (RFC 9111 sections
//!   4.2.1 and 1.2.2);
//! - an invalid `stale-while-revalidate`, `stale-if-error`, `min-fresh` or `max-stale` argument is ignored (no
//!   permission to serve stale is granted by a value we cannot read);
//! - a qualified `private="set-cookie"` or `no-cache="x"` counts as the unqualified directive (RFC 9111 sections
//!   5.2.2.4 and 5.2.2.7 allow a shared cache to do so, and it is the safe reading);
//! - `public` with an argument is malformed and ignored, since it only ever relaxes the rules.
//!
//! Numbers bigger than 2^31 are capped at 2^31 seconds (RFC 9111 section 1.2.2), so no parsed lifetime can reach
//! `u64::MAX`, which `cacheability` reserves for "until invalidated".

use std::borrow::Cow;

use http::HeaderMap;
use http::header::CACHE_CONTROL;

/// The largest delta-seconds value kept (RFC 9111 section 1.2.2 allows capping at 2^31, about 68 years).
pub const DELTA_SECONDS_MAX: u64 = 1 << 31;

/// The directives of one request's or one response's `Cache-Control` lines, combined.
///
/// Request-only directives (`max-stale`, `min-fresh`, `only-if-cached`) and response-only ones (`s-maxage`,
/// `private`, ...) share the struct: the caller reads the fields that apply to the message it parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-store` (RFC 9111 sections 5.2.1.5, 5.2.2.5).
    pub no_store: bool,
    /// `no-cache`, qualified or not (RFC 9111 sections 5.2.1.4, 5.2.2.4).
    pub no_cache: bool,
    /// `private`, qualified or not (RFC 9111 section 5.2.2.7).
    pub private: bool,
    /// `public` without an argument (RFC 9111 section 5.2.2.9).
    pub public: bool,
    /// `max-age` seconds; `Some(0)` when invalid or given twice with different values (RFC 9111 section 4.2.1).
    pub max_age: Option<u64>,
    /// `s-maxage` seconds; `Some(0)` when invalid or given twice with different values.
    pub s_maxage: Option<u64>,
    /// `must-revalidate` (RFC 9111 section 5.2.2.2).
    pub must_revalidate: bool,
    /// `proxy-revalidate` (RFC 9111 section 5.2.2.8).
    pub proxy_revalidate: bool,
    /// `stale-while-revalidate` seconds (RFC 5861 section 3); the smallest when repeated.
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error` seconds (RFC 5861 section 4); the smallest when repeated.
    pub stale_if_error: Option<u64>,
    /// `immutable` (RFC 8246).
    pub immutable: bool,
    /// `must-understand` (RFC 9111 section 5.2.2.3).
    pub must_understand: bool,
    /// `no-transform` (RFC 9111 sections 5.2.1.6, 5.2.2.6).
    pub no_transform: bool,
    /// `only-if-cached`, a request directive (RFC 9111 section 5.2.1.7).
    pub only_if_cached: bool,
    /// `max-stale`, a request directive (RFC 9111 section 5.2.1.2): `Some(None)` without a limit,
    /// `Some(Some(n))` with one (the smallest when repeated).
    pub max_stale: Option<Option<u64>>,
    /// `min-fresh` seconds, a request directive (RFC 9111 section 5.2.1.3); the largest when repeated.
    pub min_fresh: Option<u64>,
}

impl CacheControl {
    /// Combines every `Cache-Control` line of `headers` (RFC 9110 section 5.3: several lines read as one list).
    ///
    /// Values that are not valid UTF-8 are read lossily: directive names are ASCII, so only an argument can be
    /// damaged, and a damaged numeric argument falls back like any other invalid one.
    pub fn from_headers(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        // Each line is scanned on its own so an unbalanced quote in one line cannot swallow the next.
        for value in headers.get_all(CACHE_CONTROL) {
            cc.absorb(&String::from_utf8_lossy(value.as_bytes()));
        }
        cc
    }

    /// Parses one `Cache-Control` field value.
    pub fn parse(value: &str) -> CacheControl {
        let mut cc = CacheControl::default();
        cc.absorb(value);
        cc
    }

    fn absorb(&mut self, value: &str) {
        for_each_directive(value, |name, arg| self.apply(name, arg));
    }

    fn apply(&mut self, name: &str, arg: Arg<'_>) {
        let name = name.to_ascii_lowercase();
        match name.as_str() {
            "no-store" => self.no_store = true,
            "no-cache" => self.no_cache = true,
            "private" => self.private = true,
            "public" => self.public |= matches!(arg, Arg::Absent),
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "immutable" => self.immutable = true,
            "must-understand" => self.must_understand = true,
            "no-transform" => self.no_transform = true,
            "only-if-cached" => self.only_if_cached = true,
            "max-age" => merge_freshness(&mut self.max_age, arg.seconds()),
            "s-maxage" => merge_freshness(&mut self.s_maxage, arg.seconds()),
            "stale-while-revalidate" => merge_min(&mut self.stale_while_revalidate, arg.seconds()),
            "stale-if-error" => merge_min(&mut self.stale_if_error, arg.seconds()),
            "min-fresh" => {
                if let Some(seconds) = arg.seconds() {
                    self.min_fresh = Some(self.min_fresh.map_or(seconds, |old| old.max(seconds)));
                }
            }
            "max-stale" => match arg {
                // A bare `max-stale` accepts any staleness, but never loosens a limit already given.
                Arg::Absent => {
                    self.max_stale.get_or_insert(None);
                }
                _ => {
                    if let Some(seconds) = arg.seconds() {
                        let limit = match self.max_stale {
                            Some(Some(old)) => old.min(seconds),
                            _ => seconds,
                        };
                        self.max_stale = Some(Some(limit));
                    }
                }
            },
            _ => {}
        }
    }
}

/// RFC 9111 section 4.2.1: a freshness directive that is repeated with a different value, or that cannot be
/// read, makes the response stale; `Some(0)` says exactly that.
fn merge_freshness(slot: &mut Option<u64>, parsed: Option<u64>) {
    *slot = match (*slot, parsed) {
        (None, Some(seconds)) => Some(seconds),
        (Some(old), Some(seconds)) if old == seconds => Some(seconds),
        _ => Some(0),
    };
}

/// Stale windows only grant permission, so an unreadable one is ignored and repeated ones keep the smallest.
fn merge_min(slot: &mut Option<u64>, parsed: Option<u64>) {
    if let Some(seconds) = parsed {
        *slot = Some(slot.map_or(seconds, |old| old.min(seconds)));
    }
}

/// Parses RFC 9111 section 1.2.2 `delta-seconds = 1*DIGIT`, capping at [`DELTA_SECONDS_MAX`].
///
/// No sign, no spaces, no fraction: anything but digits is `None`.
pub fn parse_delta_seconds(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut seconds: u64 = 0;
    for digit in value.bytes() {
        seconds = seconds.saturating_mul(10).saturating_add(u64::from(digit - b'0'));
        if seconds >= DELTA_SECONDS_MAX {
            return Some(DELTA_SECONDS_MAX);
        }
    }
    Some(seconds)
}

/// The argument of one directive as written.
#[derive(Debug, PartialEq, Eq)]
enum Arg<'a> {
    /// No `=` at all.
    Absent,
    /// `name=token` (possibly empty).
    Token(&'a str),
    /// `name="quoted"`, unescaped.
    Quoted(Cow<'a, str>),
    /// An unbalanced quote or junk after the closing quote.
    Malformed,
}

impl Arg<'_> {
    fn seconds(&self) -> Option<u64> {
        match self {
            // RFC 9111 section 5.2: recipients accept the quoted-string form too.
            Arg::Token(token) => parse_delta_seconds(token),
            Arg::Quoted(text) => parse_delta_seconds(text),
            Arg::Absent | Arg::Malformed => None,
        }
    }
}

fn is_ows(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// Walks `cache-directive = token [ "=" ( token / quoted-string ) ]` list elements (RFC 9111 section 5.2),
/// tolerating empty elements, whitespace around `=`, and junk (which it reports as [`Arg::Malformed`]).
///
/// Every delimiter is ASCII, so each slice boundary below falls on a character boundary.
fn for_each_directive(value: &str, mut visit: impl FnMut(&str, Arg<'_>)) {
    let bytes = value.as_bytes();
    let len = bytes.len();
    let mut i = 0;
    loop {
        while i < len && (bytes[i] == b',' || is_ows(bytes[i])) {
            i += 1;
        }
        if i == len {
            return;
        }
        let name_start = i;
        while i < len && !matches!(bytes[i], b',' | b'=') {
            i += 1;
        }
        // `no-store junk` still names `no-store`: keeping the first word is the cautious reading.
        let name = trim_ows(&value[name_start..i]).split([' ', '\t']).next().unwrap_or("");
        let arg = if i < len && bytes[i] == b'=' {
            i += 1;
            while i < len && is_ows(bytes[i]) {
                i += 1;
            }
            if i < len && bytes[i] == b'"' {
                let (arg, next) = quoted_string(value, i);
                i = next;
                arg
            } else {
                let start = i;
                while i < len && bytes[i] != b',' {
                    i += 1;
                }
                Arg::Token(trim_ows(&value[start..i]))
            }
        } else {
            Arg::Absent
        };
        if !name.is_empty() {
            visit(name, arg);
        }
    }
}

/// Reads the quoted-string starting at `value[open]` (a `"`), returning the argument and the index of the comma
/// that ends the element (or the end of the input).
fn quoted_string(value: &str, open: usize) -> (Arg<'_>, usize) {
    let bytes = value.as_bytes();
    let len = bytes.len();
    let mut i = open + 1;
    let mut unescaped: Option<Vec<u8>> = None;
    let mut closed = false;
    while i < len {
        match bytes[i] {
            b'"' => {
                closed = true;
                break;
            }
            // RFC 9110 section 5.6.4 quoted-pair: keep the next byte as is.
            b'\\' if i + 1 < len => {
                let buf = unescaped.get_or_insert_with(|| bytes[open + 1..i].to_vec());
                buf.push(bytes[i + 1]);
                i += 2;
            }
            byte => {
                if let Some(buf) = unescaped.as_mut() {
                    buf.push(byte);
                }
                i += 1;
            }
        }
    }
    if !closed {
        return (Arg::Malformed, len);
    }
    let text = match unescaped {
        // Only ASCII backslashes were removed from valid UTF-8, so this is valid UTF-8 again.
        Some(buf) => Cow::Owned(String::from_utf8_lossy(&buf).into_owned()),
        None => Cow::Borrowed(&value[open + 1..i]),
    };
    i += 1;
    while i < len && is_ows(bytes[i]) {
        i += 1;
    }
    if i < len && bytes[i] != b',' {
        // Junk after the closing quote: skip the rest of the element and distrust its argument.
        while i < len && bytes[i] != b',' {
            i += 1;
        }
        return (Arg::Malformed, i);
    }
    (Arg::Quoted(text), i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cc() -> CacheControl {
        CacheControl::default()
    }

    fn check(input: &str, expected: CacheControl) {
        assert_eq!(CacheControl::parse(input), expected, "input: {input:?}");
    }

    #[test]
    fn directives() {
        let cases: Vec<(&str, CacheControl)> = vec![
            ("", cc()),
            ("no-store", CacheControl { no_store: true, ..cc() }),
            ("no-cache", CacheControl { no_cache: true, ..cc() }),
            ("private", CacheControl { private: true, ..cc() }),
            ("public", CacheControl { public: true, ..cc() }),
            ("must-revalidate", CacheControl { must_revalidate: true, ..cc() }),
            ("proxy-revalidate", CacheControl { proxy_revalidate: true, ..cc() }),
            ("immutable", CacheControl { immutable: true, ..cc() }),
            ("no-transform", CacheControl { no_transform: true, ..cc() }),
            ("only-if-cached", CacheControl { only_if_cached: true, ..cc() }),
            ("max-age=60", CacheControl { max_age: Some(60), ..cc() }),
            ("s-maxage=30", CacheControl { s_maxage: Some(30), ..cc() }),
            ("stale-while-revalidate=5", CacheControl { stale_while_revalidate: Some(5), ..cc() }),
            ("stale-if-error=600", CacheControl { stale_if_error: Some(600), ..cc() }),
            ("max-stale", CacheControl { max_stale: Some(None), ..cc() }),
            ("max-stale=10", CacheControl { max_stale: Some(Some(10)), ..cc() }),
            ("min-fresh=20", CacheControl { min_fresh: Some(20), ..cc() }),
            (
                "public, max-age=300, s-maxage=600, stale-while-revalidate=30, stale-if-error=86400",
                CacheControl {
                    public: true,
                    max_age: Some(300),
                    s_maxage: Some(600),
                    stale_while_revalidate: Some(30),
                    stale_if_error: Some(86400),
                    ..cc()
                },
            ),
            ("max-age=31536000, immutable", CacheControl { max_age: Some(31_536_000), immutable: true, ..cc() }),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    #[test]
    fn syntax_variants() {
        let cases: Vec<(&str, CacheControl)> = vec![
            // Names are case-insensitive.
            ("NO-STORE", CacheControl { no_store: true, ..cc() }),
            ("Max-Age=5", CacheControl { max_age: Some(5), ..cc() }),
            // Quoted arguments are accepted for numbers.
            ("max-age=\"60\"", CacheControl { max_age: Some(60), ..cc() }),
            ("s-maxage=\"7\"", CacheControl { s_maxage: Some(7), ..cc() }),
            // Qualified forms count as the unqualified directive.
            ("private=\"set-cookie\"", CacheControl { private: true, ..cc() }),
            ("private=\"set-cookie, x-user\", max-age=5", CacheControl { private: true, max_age: Some(5), ..cc() }),
            ("no-cache=\"x\"", CacheControl { no_cache: true, ..cc() }),
            ("no-cache=set-cookie", CacheControl { no_cache: true, ..cc() }),
            // Empty list elements and odd whitespace.
            (" , ,no-store,, max-age=1 ,", CacheControl { no_store: true, max_age: Some(1), ..cc() }),
            ("\tmax-age = 9\t", CacheControl { max_age: Some(9), ..cc() }),
            // Unknown directives and extensions are ignored, quoted commas included.
            ("community=\"UCI, x\", foo, bar=baz, max-age=2", CacheControl { max_age: Some(2), ..cc() }),
            ("x=\"a\\\"b\", no-store", CacheControl { no_store: true, ..cc() }),
            // Junk after a name keeps the name.
            ("no-store please", CacheControl { no_store: true, ..cc() }),
            // `public` with an argument is malformed and only relaxes: ignored.
            ("public=yes", cc()),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    #[test]
    fn malformed_freshness_reads_as_stale() {
        let cases: Vec<(&str, Option<u64>)> = vec![
            ("max-age", Some(0)),
            ("max-age=", Some(0)),
            ("max-age=abc", Some(0)),
            ("max-age=-1", Some(0)),
            ("max-age=1.5", Some(0)),
            ("max-age=+5", Some(0)),
            ("max-age=6 0", Some(0)),
            ("max-age=\"60", Some(0)),
            ("max-age=\"60\"x", Some(0)),
            ("max-age=\" 60\"", Some(0)),
            ("max-age=0x10", Some(0)),
            ("max-age 60", Some(0)),
            ("max-age=60, max-age=120", Some(0)),
            ("max-age=60, max-age=abc, max-age=60", Some(0)),
            // Agreeing duplicates are harmless.
            ("max-age=60, max-age=60", Some(60)),
            ("max-age=60, max-age=\"60\"", Some(60)),
            // RFC 9111 section 1.2.2: huge values are capped at 2^31.
            ("max-age=2147483648", Some(DELTA_SECONDS_MAX)),
            ("max-age=99999999999999999999999999999999", Some(DELTA_SECONDS_MAX)),
            ("max-age=2147483647", Some(2_147_483_647)),
            ("max-age=000060", Some(60)),
            ("max-age=\u{0661}", Some(0)),
        ];
        for (input, expected) in cases {
            assert_eq!(CacheControl::parse(input).max_age, expected, "input: {input:?}");
            let s_input = input.replace("max-age", "s-maxage");
            assert_eq!(CacheControl::parse(&s_input).s_maxage, expected, "input: {s_input:?}");
        }
    }

    #[test]
    fn malformed_permissions_are_ignored() {
        let cases: Vec<(&str, CacheControl)> = vec![
            ("stale-while-revalidate", cc()),
            ("stale-while-revalidate=x", cc()),
            ("stale-if-error=-5", cc()),
            (
                "stale-while-revalidate=10, stale-while-revalidate=3",
                CacheControl { stale_while_revalidate: Some(3), ..cc() },
            ),
            (
                "stale-if-error=3, stale-if-error=bad, stale-if-error=9",
                CacheControl { stale_if_error: Some(3), ..cc() },
            ),
            ("min-fresh=x", cc()),
            ("min-fresh=5, min-fresh=8", CacheControl { min_fresh: Some(8), ..cc() }),
            ("max-stale=x", cc()),
            ("max-stale=9, max-stale", CacheControl { max_stale: Some(Some(9)), ..cc() }),
            ("max-stale, max-stale=9", CacheControl { max_stale: Some(Some(9)), ..cc() }),
            ("max-stale=9, max-stale=4", CacheControl { max_stale: Some(Some(4)), ..cc() }),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    #[test]
    fn garbage_never_panics() {
        let inputs = [
            "\"",
            "=",
            "==",
            ",=,",
            "\"\"\"",
            "max-age=\"",
            "max-age=\"\\",
            "\\",
            "a=\"\\\"",
            "=\"x\"",
            "\u{ffff}=\u{0}",
            "max-age=\"é\\é\"",
            "ü=ü",
            "private=\"",
            ";;;",
            "no-store;max-age=5",
        ];
        for input in inputs {
            let _ = CacheControl::parse(input);
        }
        // Every prefix of a busy value.
        let busy = "public, max-age=\"6\\0\", private=\"a, b\", s-maxage=1, x=\"\u{e9}\"";
        for end in (0..=busy.len()).filter(|&end| busy.is_char_boundary(end)) {
            let _ = CacheControl::parse(&busy[..end]);
        }
    }

    #[test]
    fn lines_combine_and_stay_separate_for_quotes() {
        let check_lines = |lines: &[&[u8]], expected: CacheControl| {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append(CACHE_CONTROL, HeaderValue::from_bytes(line).unwrap());
            }
            assert_eq!(CacheControl::from_headers(&headers), expected, "lines: {lines:?}");
        };
        check_lines(&[], cc());
        check_lines(&[b"public", b"max-age=60"], CacheControl { public: true, max_age: Some(60), ..cc() });
        check_lines(&[b"max-age=60", b"max-age=10"], CacheControl { max_age: Some(0), ..cc() });
        // An unbalanced quote in one line does not hide `no-store` in the next.
        check_lines(&[b"private=\"oops", b"no-store"], CacheControl { private: true, no_store: true, ..cc() });
        // Non-UTF-8 bytes only damage arguments.
        check_lines(&[b"max-age=\xff\xfe, no-store"], CacheControl { max_age: Some(0), no_store: true, ..cc() });
        check_lines(&[b"x=\"\xff\", max-age=5"], CacheControl { max_age: Some(5), ..cc() });
        check_lines(&[b""], cc());
    }

    #[test]
    fn delta_seconds() {
        let cases: [(&str, Option<u64>); 8] = [
            ("0", Some(0)),
            ("42", Some(42)),
            ("", None),
            (" 1", None),
            ("1 ", None),
            ("-1", None),
            ("4294967296", Some(DELTA_SECONDS_MAX)),
            ("18446744073709551616", Some(DELTA_SECONDS_MAX)),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_delta_seconds(input), expected, "input: {input:?}");
        }
    }
}
