//! Fuzzes `If-None-Match` parsing and conditional evaluation (see ../README.md for the input format).

#![no_main]

use etagd_client::conditional::{self, Evaluation, IfNoneMatch};
use etagd_client::etag::{self, EntityTag};
use http::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    let mut stored: Option<EntityTag> = None;
    let mut last_modified: Option<String> = None;
    for line in data.split(|&b| b == b'\n') {
        if let Some(rest) = line.strip_prefix(b"E:") {
            stored = std::str::from_utf8(rest).ok().and_then(EntityTag::parse);
        } else if let Some(rest) = line.strip_prefix(b"L:") {
            last_modified = std::str::from_utf8(rest).ok().map(str::to_owned);
        } else if let Some(rest) = line.strip_prefix(b"M:") {
            if let Ok(value) = HeaderValue::from_bytes(rest) {
                headers.append(IF_MODIFIED_SINCE, value);
            }
        } else if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(IF_NONE_MATCH, value);
        }
    }

    if let Some(IfNoneMatch::Tags(tags)) = conditional::if_none_match(&headers) {
        assert!(!tags.is_empty(), "an empty list reads as no header");
        let joined: Vec<String> = tags.iter().map(EntityTag::to_header_value).collect();
        assert_eq!(etag::parse_list(&joined.join(", ")).as_ref(), Some(&tags), "tags re-parse to themselves");
        for tag in &tags {
            assert_eq!(EntityTag::parse(&tag.to_header_value()).as_ref(), Some(tag));
        }
    }

    let outcome = conditional::evaluate(&headers, stored.as_ref(), last_modified.as_deref());
    if !conditional::is_conditional(&headers) {
        assert_eq!(outcome, Evaluation::Proceed, "no precondition, no 304");
    }
    if let Some(tag) = &stored {
        let weakened = conditional::weakened_copy_of(&headers, tag);
        assert!(!weakened || !tag.weak, "only a strong tag can be weakened");
        if weakened {
            assert_eq!(outcome, Evaluation::NotModified, "a weakened copy still matches (weak comparison)");
        }
        let _ = tag.for_coding("gzip").to_header_value();
    }
});
