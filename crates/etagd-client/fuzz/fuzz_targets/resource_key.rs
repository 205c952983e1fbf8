//! Fuzzes the request-key normaliser: `ResourceKey::new(scheme, host, path_and_query)` and `ResourceKey::from_url`
//! (see ../README.md for the input format). Two requests for the same resource must share one cache entry, so
//! besides "no panic" it checks that spellings RFC 3986 calls equivalent name the same key.

#![no_main]

use etagd_client::key::{Digest, ResourceKey};
use libfuzzer_sys::fuzz_target;

/// RFC 3986 section 2.3: the characters whose percent-encoding is equivalent to the character itself.
fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.splitn(3, '\n');
    let scheme = parts.next().unwrap_or("");
    let host = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");

    let key = ResourceKey::new(scheme, host, target);
    assert_eq!(key.digest(), Digest::of(key.canonical().as_bytes()), "the digest is the canonical form's");
    let scheme_line = scheme.to_ascii_lowercase();
    assert!(key.canonical().starts_with(&format!("GET\n{scheme_line}\n")), "{:?}", key.canonical());

    // Scheme and host are case-insensitive (RFC 3986 section 6.2.2.1).
    let shouted = ResourceKey::new(&scheme.to_ascii_uppercase(), &host.to_ascii_uppercase(), target);
    assert_eq!(shouted, key, "case of scheme or host changed the key");

    // The scheme's default port is the same as no port (section 6.2.3). Only for a host that does not already end
    // in that port and has no surrounding space, where appending one more is a different authority.
    let port = if scheme_line == "https" { ":443" } else { ":80" };
    if !host.is_empty() && host == host.trim() && !host.ends_with(port) {
        let explicit = ResourceKey::new(scheme, &format!("{host}{port}"), target);
        assert_eq!(explicit, key, "{host}{port} and {host} named different keys");
    }

    // Without other percent signs (a stray `%` may pair up with the new escape), percent-encoding an unreserved
    // character names the same resource (section 6.2.2.2), in either hex case.
    if !target.contains('%') {
        if let Some((at, c)) = target.char_indices().find(|&(_, c)| is_unreserved(c)) {
            let escape =
                if data.len().is_multiple_of(2) { format!("%{:02X}", c as u32) } else { format!("%{:02x}", c as u32) };
            let encoded = format!("{}{escape}{}", &target[..at], &target[at + 1..]);
            assert_eq!(ResourceKey::new(scheme, host, &encoded), key, "{encoded:?} and {target:?} differ");
        }
        // The order of query parameters with distinct names does not matter (the normaliser sorts by name).
        if let Some((path, query)) = target.split_once('?') {
            let params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
            let mut names: Vec<&str> = params.iter().map(|p| p.split_once('=').map_or(*p, |(n, _)| n)).collect();
            names.sort_unstable();
            names.dedup();
            if names.len() == params.len() {
                let reversed: Vec<&str> = params.iter().rev().copied().collect();
                let swapped = format!("{path}?{}", reversed.join("&"));
                assert_eq!(ResourceKey::new(scheme, host, &swapped), key, "{swapped:?} and {target:?} differ");
            }
        }
    }

    // An operator's URL: whatever parses names an http or https resource, and the scheme's case does not matter.
    let url = format!("{scheme}://{host}{target}");
    for candidate in [text, url.as_str()] {
        if let Ok(from_url) = ResourceKey::from_url(candidate) {
            let line = from_url.canonical().lines().nth(1);
            assert!(matches!(line, Some("http" | "https")), "{candidate:?} gave {:?}", from_url.canonical());
            // The scheme is everything before the first colon (RFC 3986 section 3.1).
            if let Some((given, rest)) = candidate.split_once(':') {
                let upper = format!("{}:{rest}", given.to_ascii_uppercase());
                assert_eq!(ResourceKey::from_url(&upper).ok(), Some(from_url), "{upper:?} and {candidate:?} differ");
            }
        }
    }
});
