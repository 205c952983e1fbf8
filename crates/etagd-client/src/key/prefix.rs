//! Path-prefix tags: the names that make a purge of every resource under `http://host/api/` one counter write,
//! like a tag purge (Varnish bans and CDN prefix purges without a scan).
//!
//! Every entry carries, besides its own tags, one automatic tag per directory of its path, up to a configured
//! depth: `http://a.example/api/v2/users/7` at depth 2 carries the tags named
//!
//! ```text
//! prefix http://a.example/api/
//! prefix http://a.example/api/v2/
//! ```
//!
//! (`prefix `, then the scheme, the normalised host and the normalised path up to and including the segment's
//! `/`, exactly as `ResourceKey` writes them). Their counters are ordinary tag counters
//! (`etagd2:<ns>:g:t:<xxh3_128(name)>`), so a purge of a prefix is a tag invalidation: the same write on every
//! server, the same soft mode and the same fences. The space keeps them apart from tags an origin can name
//! (`Surrogate-Key` splits on whitespace, and route tags may not contain any).
//!
//! The depth bounds the lookup cost: each of an entry's tags is one more counter read in its lookup batch (the
//! same pipelined batch to the same server, so no extra round trip). A prefix deeper than the depth was never
//! tagged and is refused ([`KeyError::PrefixTooDeep`]) rather than silently purging nothing. The root `/` is
//! never tagged: a whole host is flushed with the namespace (or a route tag).

use super::{KeyError, ResourceKey};

/// The default number of path segments that get a prefix tag: `/api/` and `/api/v2/`.
pub const DEFAULT_PREFIX_DEPTH: u8 = 2;

/// The largest prefix depth: every level is one more counter read on every lookup.
pub const MAX_PREFIX_DEPTH: u8 = 8;

/// What starts the name of every prefix tag.
const PREFIX_TAG: &str = "prefix ";

impl ResourceKey {
    /// The prefix tags of this resource at `depth`: one per directory of its normalised path, shallowest first,
    /// at most `depth` of them (none at depth 0).
    pub fn prefix_tags(&self, depth: u8) -> Vec<String> {
        let path = self.path();
        // The first '/' starts the path; each later one ends a directory segment.
        path.match_indices('/')
            .skip(1)
            .take(usize::from(depth))
            .map(|(end, _)| prefix_tag(self.scheme(), self.host(), &path[..=end]))
            .collect()
    }
}

/// Whether a tag is a prefix tag (so it is derived from the key, never carried over from an older entry).
pub fn is_prefix_tag(tag: &str) -> bool {
    tag.starts_with(PREFIX_TAG)
}

/// The one place a prefix tag's name is written.
fn prefix_tag(scheme: &str, host: &str, prefix: &str) -> String {
    // By hand rather than with `format!`: every lookup names its prefix tags.
    let mut tag = String::with_capacity(PREFIX_TAG.len() + scheme.len() + 3 + host.len() + prefix.len());
    for part in [PREFIX_TAG, scheme, "://", host, prefix] {
        tag.push_str(part);
    }
    tag
}

/// A path prefix to purge, named as clients see it (`http://host/api/`), checked against the configured depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPrefix {
    resource: ResourceKey,
}

impl PathPrefix {
    /// Parses a prefix URL: http(s), a host, a path ending at a segment boundary (`/`) with between 1 and
    /// `depth` segments, and no query. Percent-encoding, host case and default ports are normalised as for URLs.
    pub fn parse(url: &str, depth: u8) -> Result<Self, KeyError> {
        let bad = |reason: String| KeyError::BadPrefix { prefix: url.to_owned(), reason };
        let resource = ResourceKey::from_url(url).map_err(|error| match error {
            KeyError::BadUrl { reason, .. } => bad(reason),
            other => other,
        })?;
        if !resource.query().is_empty() || url.contains('?') {
            return Err(bad("it has a query; a prefix is a path ending in '/'".to_owned()));
        }
        let path = resource.path();
        if path == "/" {
            return Err(bad(
                "it is the whole host, which has no prefix tag: flush everything (--all) or a deeper prefix".to_owned(),
            ));
        }
        if !path.ends_with('/') {
            let parent = &path[..=path.rfind('/').unwrap_or(0)];
            return Err(bad(format!(
                "it does not end at a segment boundary: end it with '/' ({path}/ or {parent}); prefixes are whole \
                 path segments"
            )));
        }
        let segments = path.matches('/').count() - 1;
        if segments > usize::from(depth) {
            return Err(KeyError::PrefixTooDeep { prefix: url.to_owned(), segments, depth });
        }
        Ok(Self { resource })
    }

    /// The tag every entry under this prefix carries.
    pub fn tag(&self) -> String {
        prefix_tag(self.resource.scheme(), self.resource.host(), self.resource.path())
    }

    /// The prefix as a normalised URL.
    pub fn url(&self) -> String {
        self.resource.url()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_carry_one_tag_per_directory_up_to_the_depth() {
        let key = ResourceKey::from_url("http://A.example:80/api/v2/users/7?x=1").unwrap();
        assert_eq!(key.prefix_tags(2), ["prefix http://a.example/api/", "prefix http://a.example/api/v2/"]);
        assert_eq!(key.prefix_tags(3).len(), 3);
        // The last segment is the resource itself, not a directory.
        assert_eq!(key.prefix_tags(8).len(), 3);
        assert!(key.prefix_tags(0).is_empty());
        let cases: [(&str, &[&str]); 5] = [
            ("http://h/", &[]),
            ("http://h/index.html", &[]),
            ("http://h/api", &[]),
            ("http://h/api/", &["prefix http://h/api/"]),
            ("https://h:8443/%61pi/x", &["prefix https://h:8443/api/"]),
        ];
        for (url, tags) in cases {
            assert_eq!(ResourceKey::from_url(url).unwrap().prefix_tags(2), tags, "{url}");
        }
        assert!(key.prefix_tags(2).iter().all(|tag| is_prefix_tag(tag)));
        assert!(!is_prefix_tag("prefix-tags"));
    }

    #[test]
    fn a_purge_names_the_tag_its_entries_carry() {
        let entry = ResourceKey::from_url("http://a.example/api/v2/users/7").unwrap();
        for prefix in ["http://a.example/api/", "HTTP://A.EXAMPLE:80/%61pi/v2/#frag"] {
            let parsed = PathPrefix::parse(prefix, 2).unwrap();
            assert!(entry.prefix_tags(2).contains(&parsed.tag()), "{prefix}");
        }
        // Per host and per scheme: another host's entries carry other tags.
        let other = PathPrefix::parse("http://b.example/api/", 2).unwrap();
        assert!(!entry.prefix_tags(2).contains(&other.tag()));
        let https = PathPrefix::parse("https://a.example/api/", 2).unwrap();
        assert!(!entry.prefix_tags(2).contains(&https.tag()));
        assert_eq!(PathPrefix::parse("http://a.example/api/v2/", 2).unwrap().url(), "http://a.example/api/v2/");
    }

    #[test]
    fn bad_prefixes_say_what_to_do() {
        let cases = [
            ("http://h/api/v2/users/", 2, "3 segments deep"),
            ("http://h/api/", 0, "--prefix-depth"),
            ("http://h/api/v", 2, "segment boundary"),
            ("http://h/api", 2, "/api/"),
            ("http://h/", 2, "whole host"),
            ("http://h", 2, "whole host"),
            ("http://h/api/?x=1", 2, "query"),
            ("/api/", 2, "no scheme"),
            ("ftp://h/api/", 2, "http or https"),
        ];
        for (prefix, depth, needle) in cases {
            let error = PathPrefix::parse(prefix, depth).unwrap_err().to_string();
            assert!(error.contains(needle), "{prefix} at depth {depth}: {error}");
        }
    }
}
