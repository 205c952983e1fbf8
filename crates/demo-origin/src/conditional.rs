//! `If-None-Match` evaluation for the one route that sends its own `ETag` (`/bytes/{n}`).
//!
//! The demo origin answers 304 itself where it knows the validator, as a well-behaved app would; that keeps the
//! origin-alone row of the 304 benchmark honest and lets a cache revalidate against it.

/// Whether an `If-None-Match` field value matches `etag` (a quoted entity tag such as `"b2048"`).
///
/// RFC 9110 s13.1.2: the comparison is weak (a `W/` prefix on either side is ignored) and `*` matches any
/// current representation. A field that does not parse matches nothing, so the full response is sent.
pub(crate) fn none_match(field: &[u8], etag: &str) -> bool {
    let Ok(field) = std::str::from_utf8(field) else {
        return false;
    };
    let ours = opaque(etag);
    let field = field.trim();
    if field == "*" {
        return true;
    }
    // RFC 9110 s8.8.3: entity tags are quoted strings that cannot contain commas, so splitting on ',' is exact.
    field.split(',').any(|candidate| opaque(candidate.trim()) == ours)
}

/// The opaque-tag part of an entity tag, without the weakness indicator (RFC 9110 s8.8.3.2 weak comparison).
fn opaque(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(field: &[u8], expected: bool) {
        assert_eq!(none_match(field, "\"b2048\""), expected, "{}", String::from_utf8_lossy(field));
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        check(b"\"b2048\"", true);
        check(b"W/\"b2048\"", true);
        check(b" \"x\", \"b2048\" ", true);
        check(b"*", true);
        check(b"\"b2049\"", false);
        check(b"\"b2048", false);
        check(b"b2048", false);
        check(b"", false);
        check(b"\xff", false);
    }
}
