//! Entity tags: parse, mint, compare (RFC 9110 section 8.8.3).
//!
//! An entity tag is opaque (RFC 9110 section 8.8.3: only its producer may assign meaning to it), so this module
//! never looks inside one it did not mint. etagd mints two kinds, both strong and always quoted (a compressing proxy
//! in front deletes an unquoted tag and weakens a quoted one, see `conditional::weakened_copy_of`):
//!
//! - [`EntityTag::mint_timestamp`]: `"<stored-at micros, hex>-<fill id, 16 hex>"`, the seed's timestamp tag made
//!   unique across replicas by the random fill id;
//! - [`EntityTag::from_content`]: `"x<xxh3-128 of the body, 32 hex>"`, stable across refills of identical bodies.
//!
//! Each content coding stored for a fill gets its own tag from [`EntityTag::for_coding`], because a gzip and an
//! identity representation are different representations (RFC 9110 section 8.8.3).

use std::fmt;

use xxhash_rust::xxh3::xxh3_128;

/// An entity tag: a weakness flag and the opaque string between the quotes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntityTag {
    /// `W/` prefix: the tag may be shared by semantically equivalent representations (RFC 9110 section 8.8.3).
    pub weak: bool,
    /// The characters between the double quotes, without the quotes.
    pub opaque: String,
}

// === impl EntityTag ===

impl EntityTag {
    /// Parses one `entity-tag = [ weak ] opaque-tag` (RFC 9110 section 8.8.3).
    ///
    /// `W/` is case-sensitive, the quotes are required and the opaque part is `etagc*` (`%x21 / %x23-7E /
    /// obs-text`). Only surrounding spaces and tabs are forgiven; anything else that does not match is `None`.
    pub fn parse(s: &str) -> Option<EntityTag> {
        let s = s.trim_matches([' ', '\t']);
        let (weak, rest) = match s.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let opaque = rest.strip_prefix('"')?.strip_suffix('"')?;
        if !opaque.bytes().all(is_etagc) {
            return None;
        }
        Some(EntityTag { weak, opaque: opaque.to_owned() })
    }

    /// A strong tag. `opaque` must consist of `etagc` characters (no `"`, no controls, no spaces).
    pub fn strong(opaque: impl Into<String>) -> EntityTag {
        EntityTag { weak: false, opaque: opaque.into() }
    }

    /// A weak tag. `opaque` must consist of `etagc` characters (no `"`, no controls, no spaces).
    pub fn weak(opaque: impl Into<String>) -> EntityTag {
        EntityTag { weak: true, opaque: opaque.into() }
    }

    /// The tag as an `ETag` field value: always quoted, `W/` when weak.
    pub fn to_header_value(&self) -> String {
        self.to_string()
    }

    /// Strong comparison (RFC 9110 section 8.8.3.2): both strong and the opaque strings equal.
    pub fn strong_eq(&self, other: &EntityTag) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// Weak comparison (RFC 9110 section 8.8.3.2): the opaque strings equal, whatever the weakness.
    pub fn weak_eq(&self, other: &EntityTag) -> bool {
        self.opaque == other.opaque
    }

    /// The timestamp tag: strong, `"<stored_at_micros in lowercase hex>-<fill_id as 16 hex digits>"`.
    ///
    /// The timestamp alone (the seed's scheme) could repeat when two replicas fill in the same microsecond; the
    /// random 64-bit fill id makes a collision practically impossible.
    pub fn mint_timestamp(stored_at_micros: u64, fill_id: u64) -> EntityTag {
        EntityTag::strong(format!("{stored_at_micros:x}-{fill_id:016x}"))
    }

    /// The content tag: strong, `"x<xxh3-128 of body as 32 hex digits>"`, equal for equal bodies.
    pub fn from_content(body: &[u8]) -> EntityTag {
        EntityTag::strong(format!("x{:032x}", xxh3_128(body)))
    }

    /// The tag of the `coding` representation of the same fill: same weakness, opaque `"<opaque>-<coding>"`.
    ///
    /// Content codings are tokens (RFC 9110 section 8.4.1); any character that could not appear in a tag is
    /// dropped so the result always serializes.
    pub fn for_coding(&self, coding: &str) -> EntityTag {
        let coding: String = coding.chars().filter(|&c| c.is_ascii() && is_etagc(c as u8)).collect();
        EntityTag { weak: self.weak, opaque: format!("{}-{}", self.opaque, coding) }
    }
}

impl fmt::Display for EntityTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.weak {
            f.write_str("W/")?;
        }
        write!(f, "\"{}\"", self.opaque)
    }
}

/// `etagc = %x21 / %x23-7E / obs-text` (RFC 9110 section 8.8.3); obs-text is every byte from 0x80.
fn is_etagc(byte: u8) -> bool {
    byte == 0x21 || (0x23..=0x7e).contains(&byte) || byte >= 0x80
}

fn is_ows(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// Parses a comma-separated list of entity tags (`#entity-tag`, RFC 9110 section 5.6.1), as in `If-None-Match`.
///
/// Empty elements are skipped, so `""` and `" , "` give an empty list. `None` when any element is malformed,
/// including `*` (which the caller handles on its own). Commas inside the quotes belong to the tag.
pub fn parse_list(s: &str) -> Option<Vec<EntityTag>> {
    let bytes = s.as_bytes();
    let len = bytes.len();
    let mut tags = Vec::new();
    let mut i = 0;
    loop {
        while i < len && (bytes[i] == b',' || is_ows(bytes[i])) {
            i += 1;
        }
        if i == len {
            return Some(tags);
        }
        let weak = bytes[i..].starts_with(b"W/");
        if weak {
            i += 2;
        }
        if i == len || bytes[i] != b'"' {
            return None;
        }
        i += 1;
        let start = i;
        while i < len && bytes[i] != b'"' {
            if !is_etagc(bytes[i]) {
                return None;
            }
            i += 1;
        }
        if i == len {
            return None;
        }
        // Both ends sit on an ASCII quote, so the slice is on character boundaries.
        tags.push(EntityTag { weak, opaque: s[start..i].to_owned() });
        i += 1;
        while i < len && is_ows(bytes[i]) {
            i += 1;
        }
        if i < len && bytes[i] != b',' {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strong(s: &str) -> EntityTag {
        EntityTag::strong(s)
    }

    fn weak(s: &str) -> EntityTag {
        EntityTag::weak(s)
    }

    #[test]
    fn parse_one() {
        let cases: Vec<(&str, Option<EntityTag>)> = vec![
            ("\"abc\"", Some(strong("abc"))),
            ("W/\"abc\"", Some(weak("abc"))),
            ("\"\"", Some(strong(""))),
            ("W/\"\"", Some(weak(""))),
            ("  \"abc\"\t", Some(strong("abc"))),
            ("\"a,b\"", Some(strong("a,b"))),
            ("\"!#~\"", Some(strong("!#~"))),
            ("\"caf\u{e9}\"", Some(strong("caf\u{e9}"))),
            ("\"18a2b3c4d5e6f-0123456789abcdef\"", Some(strong("18a2b3c4d5e6f-0123456789abcdef"))),
            // Malformed.
            ("", None),
            ("abc", None),
            ("\"abc", None),
            ("abc\"", None),
            ("\"", None),
            ("w/\"abc\"", None),
            ("W/abc", None),
            ("W/ \"abc\"", None),
            ("W/", None),
            ("\"a\"b\"", None),
            ("\"a b\"", None),
            ("\"a\tb\"", None),
            ("\"a\u{7f}\"", None),
            ("\"a\u{0}\"", None),
            ("*", None),
            ("\"a\", \"b\"", None),
        ];
        for (input, expected) in cases {
            assert_eq!(EntityTag::parse(input), expected, "input: {input:?}");
        }
    }

    #[test]
    fn parse_lists() {
        let cases: Vec<(&str, Option<Vec<EntityTag>>)> = vec![
            ("", Some(vec![])),
            (" , ,", Some(vec![])),
            ("\"a\"", Some(vec![strong("a")])),
            ("\"a\", W/\"b\"", Some(vec![strong("a"), weak("b")])),
            ("\"a\",W/\"b\",,\"c\" ", Some(vec![strong("a"), weak("b"), strong("c")])),
            ("\"a,b\", \"c\"", Some(vec![strong("a,b"), strong("c")])),
            ("W/\"x\"\t,\t\"y\"", Some(vec![weak("x"), strong("y")])),
            ("*", None),
            ("\"a\", *", None),
            ("\"a\" \"b\"", None),
            ("\"a\"b", None),
            ("\"a", None),
            ("\"a\", \"b", None),
            ("a", None),
            ("W/", None),
            ("W/\"a\" junk", None),
            ("\"a\u{0}\"", None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_list(input), expected, "input: {input:?}");
        }
        // No prefix of a busy list panics.
        let busy = "W/\"a,b\", \"caf\u{e9}\" ,, \"x\"";
        for end in (0..=busy.len()).filter(|&end| busy.is_char_boundary(end)) {
            let _ = parse_list(&busy[..end]);
        }
    }

    #[test]
    fn header_value_round_trips() {
        let cases: [(EntityTag, &str); 4] =
            [(strong("abc"), "\"abc\""), (weak("abc"), "W/\"abc\""), (strong(""), "\"\""), (weak("a,b"), "W/\"a,b\"")];
        for (tag, expected) in cases {
            assert_eq!(tag.to_header_value(), expected);
            assert_eq!(EntityTag::parse(expected), Some(tag));
        }
    }

    #[test]
    fn comparison() {
        // RFC 9110 section 8.8.3.2, the table.
        let cases: [(EntityTag, EntityTag, bool, bool); 4] = [
            (weak("1"), weak("1"), false, true),
            (weak("1"), weak("2"), false, false),
            (weak("1"), strong("1"), false, true),
            (strong("1"), strong("1"), true, true),
        ];
        for (a, b, strong_expected, weak_expected) in cases {
            assert_eq!(a.strong_eq(&b), strong_expected, "{a} strong {b}");
            assert_eq!(b.strong_eq(&a), strong_expected, "{b} strong {a}");
            assert_eq!(a.weak_eq(&b), weak_expected, "{a} weak {b}");
            assert_eq!(b.weak_eq(&a), weak_expected, "{b} weak {a}");
        }
    }

    #[test]
    fn minting() {
        let cases: [(EntityTag, &str); 6] = [
            (EntityTag::mint_timestamp(0, 0), "\"0-0000000000000000\""),
            (EntityTag::mint_timestamp(0x18a2b3c4d5e6f, 0x0123_4567_89ab_cdef), "\"18a2b3c4d5e6f-0123456789abcdef\""),
            (EntityTag::mint_timestamp(u64::MAX, u64::MAX), "\"ffffffffffffffff-ffffffffffffffff\""),
            (EntityTag::mint_timestamp(255, 1).for_coding("gzip"), "\"ff-0000000000000001-gzip\""),
            (weak("v1").for_coding("br"), "W/\"v1-br\""),
            (strong("v1").for_coding("b r\"\u{e9}"), "\"v1-br\""),
        ];
        for (tag, expected) in cases {
            assert_eq!(tag.to_header_value(), expected);
            assert_eq!(EntityTag::parse(expected), Some(tag), "minted tags parse back");
        }
    }

    #[test]
    fn content_tags() {
        let empty = EntityTag::from_content(b"");
        let hello = EntityTag::from_content(b"hello");
        assert!(!hello.weak);
        assert_eq!(hello.opaque.len(), 33);
        assert!(hello.opaque.starts_with('x'));
        assert!(hello.opaque[1..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(hello, EntityTag::from_content(b"hello"));
        assert_ne!(hello, EntityTag::from_content(b"hellp"));
        assert_ne!(hello, empty);
        assert_eq!(EntityTag::parse(&empty.to_header_value()), Some(empty));
    }
}
