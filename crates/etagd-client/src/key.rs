//! The key schema: the only place a Memcached key is built.
//!
//! Every item etagd stores is named `etagd1:<namespace>:<kind>:<digest>[...]`, where `etagd1` is the schema
//! version (a new entry format gets a new version, so it can never misread an old one), `<namespace>` separates
//! deployments that share a Memcached (`[A-Za-z0-9_-]{1,32}`, default `default`), and `<digest>` is the
//! lowercase hex xxh3-128 of a canonical text form. Whatever the URL, the key is short, ASCII and space free,
//! so it is always a valid Memcached key (at most 250 bytes).
//!
//! ## Canonical resource form
//!
//! A request names a resource by five lines joined with `\n`:
//!
//! ```text
//! <method class>    GET for GET and HEAD (they share entries)
//! <scheme>          http or https, lowercase
//! <host>            lowercase, default port (80 for http, 443 for https) removed
//! <path>            percent-encoding normalised: %xx of an unreserved character decoded, other %xx uppercased;
//!                   an empty path is "/"
//! <query>           parameters split on '&', empty ones dropped, stably sorted by name; "" when none
//! ```
//!
//! `resource digest = xxh3_128(canonical)`. When the stored response has `Vary`, each variant is named by
//! appending, for each varied header name (lowercase, sorted), a line `\n<name>:<value>` where value is the
//! request's header values joined with `,` with surrounding whitespace trimmed (empty when absent):
//! `variant digest = xxh3_128(canonical + lines)`.
//!
//! ## Kinds of item
//!
//! | key | holds |
//! |---|---|
//! | `etagd1:<ns>:u:<resource digest>` | the head record: the entry itself, a Vary index, or a pass marker (see `entry`) |
//! | `etagd1:<ns>:v:<variant digest>` | the entry of one Vary variant |
//! | `etagd1:<ns>:b:<digest>:<fill id>[:<coding>]` | the replayed headers and body of one fill (immutable) |
//! | `etagd1:<ns>:g:all` | the namespace generation |
//! | `etagd1:<ns>:g:t:<xxh3_128(tag)>` | one tag's generation |
//! | `etagd1:<ns>:l:<digest>` | the refresh lock of one entry (stale-while-revalidate) |
//!
//! `<fill id>` is 16 lowercase hex digits, unique per fill; `<coding>` is a content coding (`gzip`, `br`, `zstd`).

use std::fmt;

use http::header::HeaderMap;
use xxhash_rust::xxh3::xxh3_128;

/// The schema version written into every key.
pub const SCHEMA_PREFIX: &str = "etagd1";

/// The namespace used when none is configured.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A validated namespace: the part of every key that keeps deployments sharing one Memcached apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace(String);

/// Why a namespace or URL cannot name cache entries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The namespace has characters outside `[A-Za-z0-9_-]` or a bad length.
    #[error("namespace {0:?} is invalid: use 1 to 32 characters from A-Z, a-z, 0-9, '_' and '-'")]
    BadNamespace(String),
    /// The URL could not be parsed or is not http(s) with a host.
    #[error("url {url:?} is invalid: {reason} (write it as the client sees it, e.g. http://host/path?q=1)")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Namespace {
    /// Validates a namespace name.
    pub fn new(name: &str) -> Result<Self, KeyError> {
        let ok = !name.is_empty()
            && name.len() <= 32
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok { Ok(Self(name.to_owned())) } else { Err(KeyError::BadNamespace(name.to_owned())) }
    }

    /// The namespace name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn key(&self, kind: &str, rest: &str) -> String {
        let mut key = String::with_capacity(SCHEMA_PREFIX.len() + self.0.len() + kind.len() + rest.len() + 3);
        key.push_str(SCHEMA_PREFIX);
        key.push(':');
        key.push_str(&self.0);
        key.push(':');
        key.push_str(kind);
        if !rest.is_empty() {
            key.push(':');
            key.push_str(rest);
        }
        key
    }

    /// The key of the head record of a resource.
    pub fn head_key(&self, resource: &ResourceKey) -> String {
        self.key("u", &resource.digest.to_string())
    }

    /// The key of the entry of one Vary variant.
    pub fn variant_key(&self, variant: &Digest) -> String {
        self.key("v", &variant.to_string())
    }

    /// The key of the body of one fill of an entry (`entry` is the resource digest, or the variant digest when
    /// the response varies), optionally of one content coding.
    pub fn body_key(&self, entry: &Digest, fill_id: u64, coding: Option<&str>) -> String {
        match coding {
            None => self.key("b", &format!("{entry}:{fill_id:016x}")),
            Some(coding) => self.key("b", &format!("{entry}:{fill_id:016x}:{coding}")),
        }
    }

    /// The key of the namespace-wide generation.
    pub fn all_generation_key(&self) -> String {
        self.key("g", "all")
    }

    /// The key of one tag's generation.
    pub fn tag_generation_key(&self, tag: &str) -> String {
        self.key("g", &format!("t:{}", Digest::of(tag.as_bytes())))
    }

    /// The key of the refresh lock of an entry.
    pub fn refresh_lock_key(&self, entry: &Digest) -> String {
        self.key("l", &entry.to_string())
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Self(DEFAULT_NAMESPACE.to_owned())
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An xxh3-128 digest, shown as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub u128);

impl Digest {
    /// The digest of some bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(xxh3_128(bytes))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A resource named by a request: its canonical form and digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceKey {
    canonical: String,
    digest: Digest,
}

impl ResourceKey {
    /// Names the resource of a GET or HEAD request from its parts. `host` may carry a port; `path_and_query` is
    /// the request target in origin form (`/path?query`).
    pub fn new(scheme: &str, host: &str, path_and_query: &str) -> Self {
        let scheme = scheme.to_ascii_lowercase();
        let host = normalise_host(&scheme, host);
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, query),
            None => (path_and_query, ""),
        };
        let path = if path.is_empty() { "/".to_owned() } else { normalise_percent(path) };
        let query = normalise_query(query);
        let canonical = format!("GET\n{scheme}\n{host}\n{path}\n{query}");
        let digest = Digest::of(canonical.as_bytes());
        Self { canonical, digest }
    }

    /// Names the resource of an absolute URL as a client sees it (`http://host/path?q`), as operators type it.
    pub fn from_url(url: &str) -> Result<Self, KeyError> {
        let bad = |reason: &str| KeyError::BadUrl { url: url.to_owned(), reason: reason.to_owned() };
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if parsed.scheme() != "http" && parsed.scheme() != "https" {
            return Err(bad("the scheme must be http or https"));
        }
        let host = parsed.host_str().ok_or_else(|| bad("it has no host"))?;
        let authority = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let mut target = parsed.path().to_owned();
        if let Some(query) = parsed.query() {
            target.push('?');
            target.push_str(query);
        }
        Ok(Self::new(parsed.scheme(), &authority, &target))
    }

    /// The canonical text form (documented in the module docs).
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The digest that names the head record.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The digest of one variant of this resource, given the names the stored response varies on (lowercase)
    /// and the request's headers.
    pub fn variant(&self, vary: &[String], headers: &HeaderMap) -> Digest {
        let mut names: Vec<&str> = vary.iter().map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        let mut text = self.canonical.clone();
        for name in names {
            text.push('\n');
            text.push_str(name);
            text.push(':');
            let mut first = true;
            for value in headers.get_all(name) {
                if !first {
                    text.push(',');
                }
                first = false;
                // A non-UTF-8 value still names its own variant: hash its bytes lossily but consistently.
                text.push_str(String::from_utf8_lossy(value.as_bytes()).trim());
            }
        }
        Digest::of(text.as_bytes())
    }
}

fn normalise_host(scheme: &str, host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    let default_port = match scheme {
        "https" => ":443",
        _ => ":80",
    };
    match host.strip_suffix(default_port) {
        Some(bare) if !bare.is_empty() => bare.to_owned(),
        _ => host,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes `%xx` of unreserved characters and uppercases the hex of the rest (RFC 3986 section 6.2.2).
fn normalise_percent(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hex = &text[i + 1..i + 3];
            let value = u8::from_str_radix(hex, 16).expect("two hex digits");
            if is_unreserved(value) {
                out.push(value as char);
            } else {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
            continue;
        }
        let ch = text[i..].chars().next().expect("index is on a char boundary");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn normalise_query(query: &str) -> String {
    let mut params: Vec<(String, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let normalised = normalise_percent(p);
            (normalised, p)
        })
        .collect();
    // Stable sort by name only: repeated names keep their order, since `a=1&a=2` and `a=2&a=1` may differ.
    params.sort_by(|a, b| name_of(&a.0).cmp(name_of(&b.0)));
    let parts: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    parts.join("&")
}

fn name_of(param: &str) -> &str {
    param.split_once('=').map_or(param, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(scheme: &str, host: &str, target: &str) -> String {
        ResourceKey::new(scheme, host, target).canonical().to_owned()
    }

    #[test]
    fn canonical_forms() {
        let cases = [
            (("http", "Example.COM", "/a?b=1&a=2"), "GET\nhttp\nexample.com\n/a\na=2&b=1"),
            (("http", "example.com:80", ""), "GET\nhttp\nexample.com\n/\n"),
            (("https", "example.com:443", "/"), "GET\nhttps\nexample.com\n/\n"),
            (("http", "example.com:8080", "/"), "GET\nhttp\nexample.com:8080\n/\n"),
            (("http", "h", "/%7euser/%2f?&&x=%7e&"), "GET\nhttp\nh\n/~user/%2F\nx=~"),
            (("http", "h", "/p?a=2&b=0&a=1"), "GET\nhttp\nh\n/p\na=2&a=1&b=0"),
            (("http", "h", "/%zz%4"), "GET\nhttp\nh\n/%zz%4\n"),
            (("http", "h", "/é?q=ü"), "GET\nhttp\nh\n/é\nq=ü"),
        ];
        for ((scheme, host, target), expected) in cases {
            assert_eq!(canonical(scheme, host, target), expected, "{scheme} {host} {target}");
        }
    }

    #[test]
    fn from_url_matches_request_parts() {
        let a = ResourceKey::from_url("http://API.example.com:80/api/servers?page=2&a=1").unwrap();
        let b = ResourceKey::new("http", "api.example.com", "/api/servers?a=1&page=2");
        assert_eq!(a, b);
        assert!(ResourceKey::from_url("ftp://x/").is_err());
        assert!(ResourceKey::from_url("not a url").is_err());
        assert!(ResourceKey::from_url("/relative").is_err());
    }

    #[test]
    fn every_key_is_a_valid_memcached_key() {
        let ns = Namespace::new("n-1_x").unwrap();
        let long = format!("/{}", "é x\u{1}".repeat(5000));
        let r = ResourceKey::new("http", "h", &long);
        let keys = [
            ns.head_key(&r),
            ns.variant_key(&r.digest()),
            ns.body_key(&r.digest(), u64::MAX, Some("gzip")),
            ns.all_generation_key(),
            ns.tag_generation_key("a tag with spaces\n"),
            ns.refresh_lock_key(&r.digest()),
        ];
        for key in keys {
            assert!(key.len() <= 250 && key.bytes().all(|b| b.is_ascii_graphic()), "{key}");
            assert!(key.starts_with("etagd1:n-1_x:"));
        }
    }

    #[test]
    fn namespaces_are_validated() {
        assert!(Namespace::new("ok_1-2").is_ok());
        for bad in ["", "has space", "x".repeat(33).as_str(), "colon:"] {
            assert!(Namespace::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn variants_depend_on_varied_headers_only() {
        let r = ResourceKey::new("http", "h", "/");
        let mut gzip = HeaderMap::new();
        gzip.insert("accept-encoding", " gzip ".parse().unwrap());
        gzip.insert("user-agent", "x".parse().unwrap());
        let mut gzip2 = HeaderMap::new();
        gzip2.insert("accept-encoding", "gzip".parse().unwrap());
        let none = HeaderMap::new();
        let vary = vec!["accept-encoding".to_owned()];
        assert_eq!(r.variant(&vary, &gzip), r.variant(&vary, &gzip2));
        assert_ne!(r.variant(&vary, &gzip), r.variant(&vary, &none));
        assert_ne!(r.variant(&vary, &none), r.digest());
    }
}
