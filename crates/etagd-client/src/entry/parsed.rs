//! What answering from an entry needs in HTTP form (its tag parsed, its header lines as names and values),
//! made once per decoded entry instead of once per answer: entries are shared through the decode memo, so a
//! hot entry's lines are parsed once while its bytes are unchanged.
//!
//! Held beside the stored fields and never stored itself. A copy of an entry starts without it (a copy is
//! what gets changed, by a 304 merge or a fill), so what is held always matches the fields it was made from.

use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use super::EntryMeta;
use crate::etag::EntityTag;
use crate::headers;

/// The parsed form of an entry, made on first use.
#[derive(Default)]
pub struct Parsed(OnceLock<Fields>);

/// An entry's fields as a response carries them.
#[derive(Debug)]
pub(crate) struct Fields {
    /// The stored tag, parsed; `None` when it does not parse.
    pub(crate) etag: Option<EntityTag>,
    /// The stored tag as a field value; `None` when it is not a valid one.
    pub(crate) etag_value: Option<HeaderValue>,
    /// The stored `Last-Modified` (its first line), as a field value.
    pub(crate) last_modified: Option<HeaderValue>,
    /// Every replayed line that still parses, in order, and whether a 304 repeats it (RFC 9110 section 15.4.5).
    pub(crate) lines: Vec<(HeaderName, HeaderValue, bool)>,
}

impl Parsed {
    /// The parsed fields of `meta` (the entry holding this).
    pub(crate) fn of<'a>(&'a self, meta: &EntryMeta) -> &'a Fields {
        self.0.get_or_init(|| Fields::new(meta))
    }
}

impl Fields {
    fn new(meta: &EntryMeta) -> Self {
        // Stored lines came from a valid response; one that no longer parses is dropped, not fatal.
        let lines = meta
            .headers
            .iter()
            .filter_map(|(name, value)| {
                let value = HeaderValue::from_maybe_shared(Bytes::copy_from_slice(value)).ok()?;
                Some((HeaderName::from_bytes(name.as_bytes()).ok()?, value, headers::repeated_on_304(name)))
            })
            .collect();
        Self {
            etag: EntityTag::parse(&meta.etag),
            etag_value: HeaderValue::from_str(&meta.etag).ok(),
            last_modified: meta.last_modified().and_then(|value| HeaderValue::from_str(value).ok()),
            lines,
        }
    }
}

impl Clone for Parsed {
    /// Empty: a copy may be changed, so it parses its own fields when first used.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for Parsed {
    /// Always equal: what is held follows from the fields, which entries compare by.
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for Parsed {}

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "Parsed(made)" } else { "Parsed(not yet)" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_copy_parses_its_own_fields() {
        let mut meta = crate::entry::tests::sample_meta();
        meta.headers = vec![
            ("cache-control".into(), b"max-age=60".to_vec().into()),
            ("content-type".into(), b"text/plain".to_vec().into()),
            ("bad name".into(), b"x".to_vec().into()),
        ];
        let fields = meta.parsed.of(&meta);
        let names: Vec<_> = fields.lines.iter().map(|(name, _, on_304)| (name.as_str(), *on_304)).collect();
        assert_eq!(names, [("cache-control", true), ("content-type", false)], "a line that does not parse is dropped");
        assert_eq!(
            fields.etag.as_ref().map(|etag| etag.opaque.as_str()),
            EntityTag::parse(&meta.etag).map(|e| e.opaque).as_deref()
        );
        let mut copy = meta.clone();
        copy.headers.truncate(1);
        copy.etag = "\"other\"".into();
        let copied = copy.parsed.of(&copy);
        assert_eq!(copied.lines.len(), 1);
        assert_eq!(copied.etag_value.as_ref().unwrap(), "\"other\"");
        assert_eq!(meta, meta.clone(), "entries compare by their stored fields");
    }
}
