//! The key schema: the only place a Memcached key is built.
//!
//! Every item etagd stores is named `etagd2:<namespace>:<kind>:<digest>[...]`, where `etagd2` is the schema
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
//! <path>            percent-encoding normalised: %xx of an unreserved character decoded, other %xx uppercased,
//!                   bytes not allowed in a URI (non-ASCII, space, quotes, ...) written as %XX; an empty path is
//!                   "/"; dot segments are kept (the origin sees the path as sent, so the key does too)
//! <query>           the same percent normalisation, then parameters split on '&', empty ones dropped, stably
//!                   sorted by name; "" when none
//! ```
//!
//! One normaliser (`resource.rs`) serves every way of naming a resource: a request
//! ([`ResourceKey::from_request`]), an operator's URL ([`ResourceKey::from_url`]), a `Location` to invalidate
//! ([`ResourceKey::resolve`]) and route matching ([`ResourceKey::path`]), so they can never disagree.
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
//! | `etagd2:<ns>:u:<resource digest>` | the head record: the entry itself, a Vary index, or a pass marker (see `entry`) |
//! | `etagd2:<ns>:v:<variant digest>` | the entry of one Vary variant |
//! | `etagd2:<ns>:b:<digest>:<fill id>[:<coding>]` | the body of one fill, when it fits one item (immutable) |
//! | `etagd2:<ns>:c:<digest>:<fill id>:<index>[:<coding>]` | one chunk of a body too large for one item (immutable) |
//! | `etagd2:<ns>:g:all` | the namespace generation: one copy on every server, read beside the head record |
//! | `etagd2:<ns>:g:t:<xxh3_128(tag)>` | one tag's generation: one copy on every server, read beside the head |
//! | `etagd2:<ns>:g:t:<xxh3_128("prefix " + scheme "://" host path-prefix)>` | a path prefix's generation (see `prefix.rs`) |
//! | `etagd2:<ns>:l:<digest>` | the refresh lock of one entry (stale-while-revalidate) |
//! | `etagd2:<ns>:k:<digest>:<fill id>:<coding>` | the claim on making one coding of a fill on demand (short-lived) |
//! | `etagd2:<ns>:s:<resource digest>` | a streaming fill's progress: present while its body is still arriving |
//! | `etagd2:<ns>:f:<xxh3_128(server address)>` | a fence for a server that missed an invalidation (on the others) |
//!
//! `<fill id>` is 16 lowercase hex digits, unique per fill; `<coding>` is a content coding (`gzip`, `br`, `zstd`);
//! `<index>` is a chunk's position in its body, in decimal from 0.
//!
//! ## Chunk layout
//!
//! A representation (identity or one stored coding) whose body does not fit one item is stored as chunks
//! instead of one `b:` item: chunk `i` holds bytes `i * chunk_size .. min((i + 1) * chunk_size, len)`, with
//! `chunk_size` and the lengths recorded in the entry (`EntryMeta::chunk_size`, `body_len`, `coding_lens`), so a
//! reader names every chunk from the entry alone and a byte range maps to the chunks it covers. Chunks, like
//! `b:` items, are placed on the head record's server and are never rewritten: the entry record is the commit
//! point, and once it is gone (invalidated, evicted) its chunks are unreachable and age out. This layout is
//! part of the `etagd2` format (not yet released), so it did not get a schema version of its own.
//!
//! The generation counters are not placed by their own hash: each server holds its own copy
//! ([`crate::store::Placement::Server`] on write), and a lookup reads the copy on the head record's server
//! ([`crate::store::GetRequest::near`]), so a lookup touches one server. `etagd2` replaced `etagd1` when this
//! placement changed: an `etagd1` binary looks for a counter on another server than an `etagd2` one, so the two
//! must never share items (see the README's Deploying section for the upgrade).

mod prefix;
mod query;
mod resource;

use std::fmt;

use xxhash_rust::xxh3::xxh3_128;

pub use prefix::{DEFAULT_PREFIX_DEPTH, MAX_PREFIX_DEPTH, PathPrefix, is_prefix_tag};
pub use query::{MARKETING_PARAMETERS, QueryFilter};
pub use resource::{Forwarding, ResourceKey};

/// The schema version written into every key.
pub const SCHEMA_PREFIX: &str = "etagd2";

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
    /// The request names no host (no `Host` header and no authority in its target).
    #[error("the request names no host: send a Host header (HTTP/1.1 requires one)")]
    NoHost,
    /// A path prefix to purge is malformed.
    #[error("prefix {prefix:?} is invalid: {reason} (write it as the client sees it, e.g. http://host/api/)")]
    BadPrefix {
        /// The prefix as given.
        prefix: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A path prefix to purge is deeper than the prefix tags entries carry, so a purge of it would miss them.
    #[error(
        "prefix {prefix:?} is {segments} segments deep, but entries carry prefix tags only to depth {depth}: \
         set --prefix-depth (ETAGD_PREFIX_DEPTH) to {segments} or more on every sidecar and for etagctl (entries \
         stored before get the deeper tag when next filled), or purge a shallower prefix"
    )]
    PrefixTooDeep {
        /// The prefix as given.
        prefix: String,
        /// Its path segments.
        segments: usize,
        /// The configured depth.
        depth: u8,
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
        self.key_in(SCHEMA_PREFIX, kind, rest)
    }

    fn key_in(&self, schema: &str, kind: &str, rest: &str) -> String {
        let mut key = String::with_capacity(schema.len() + self.0.len() + kind.len() + rest.len() + 3);
        key.push_str(schema);
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
        self.key("u", std::str::from_utf8(&resource.digest().hex()).expect("hex digits are ASCII"))
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

    /// The key of chunk `index` of a body stored in chunks (see the chunk layout above): named like
    /// [`body_key`](Self::body_key), plus the chunk's position.
    pub fn chunk_key(&self, entry: &Digest, fill_id: u64, coding: Option<&str>, index: u64) -> String {
        match coding {
            None => self.key("c", &format!("{entry}:{fill_id:016x}:{index}")),
            Some(coding) => self.key("c", &format!("{entry}:{fill_id:016x}:{index}:{coding}")),
        }
    }

    /// The key of the namespace-wide generation.
    pub fn all_generation_key(&self) -> String {
        self.key("g", "all")
    }

    /// The key of one tag's generation.
    pub fn tag_generation_key(&self, tag: &str) -> String {
        self.key("g", &tag_generation_suffix(tag))
    }

    /// The key of the fence for one server (by its configured address): written on every other server when an
    /// invalidation missed that server, which replicas then treat as down until it is repaired.
    pub fn fence_key(&self, server: &str) -> String {
        self.key("f", &Digest::of(server.as_bytes()).to_string())
    }

    /// The key of a resource's streaming-fill progress marker: written beside the head record while a fill
    /// streams the origin's body, and rewritten only while bytes keep arriving, so waiters elsewhere in the
    /// fleet keep waiting for a fill that is making progress instead of all going to the origin.
    pub fn fill_progress_key(&self, resource: &ResourceKey) -> String {
        self.key("s", &resource.digest().to_string())
    }

    /// The key of the refresh lock of an entry.
    pub fn refresh_lock_key(&self, entry: &Digest) -> String {
        self.key("l", &entry.to_string())
    }

    /// The key of the claim on making `coding` of one fill on demand: added by the one caller in the fleet that
    /// makes it, placed beside the head record, left to expire (so a coding that did not shrink the body is not
    /// tried again by every request meanwhile).
    pub fn coding_claim_key(&self, entry: &Digest, fill_id: u64, coding: &str) -> String {
        self.key("k", &format!("{entry}:{fill_id:016x}:{coding}"))
    }

    /// The names an older schema gave the items an invalidation touches, for bridging a rolling upgrade
    /// (`cache/bridge.rs`). `schema` is one of [`BRIDGEABLE_SCHEMAS`].
    pub fn bridged(&self, schema: &'static str) -> BridgedNames<'_> {
        BridgedNames { namespace: self, schema }
    }
}

/// The older key schemas a rolling upgrade can bridge: `etagd1`, the landed release before `etagd2`. Its head
/// records, namespace and tag counters are named as below, each on the server its own key hashes to.
pub const BRIDGEABLE_SCHEMAS: [&str; 1] = ["etagd1"];

/// An older schema's names for the items its invalidations write (see [`Namespace::bridged`]).
#[derive(Debug, Clone, Copy)]
pub struct BridgedNames<'a> {
    namespace: &'a Namespace,
    schema: &'static str,
}

impl BridgedNames<'_> {
    /// The schema prefix.
    pub fn schema(&self) -> &'static str {
        self.schema
    }

    /// `<schema>:<ns>:u:<resource digest>`: deleted by that schema's URL invalidations.
    pub fn head_key(&self, resource: &ResourceKey) -> String {
        self.namespace.key_in(self.schema, "u", &resource.digest().to_string())
    }

    /// `<schema>:<ns>:g:all`: bumped by that schema's namespace invalidations.
    pub fn all_generation_key(&self) -> String {
        self.namespace.key_in(self.schema, "g", "all")
    }

    /// `<schema>:<ns>:g:t:<xxh3_128(tag)>`: bumped by that schema's tag invalidations.
    pub fn tag_generation_key(&self, tag: &str) -> String {
        self.namespace.key_in(self.schema, "g", &tag_generation_suffix(tag))
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

/// `t:<xxh3_128(tag)>`, the part of a tag counter's key after the kind, without `core::fmt` (every lookup names
/// its tag counters).
fn tag_generation_suffix(tag: &str) -> String {
    let mut suffix = String::with_capacity(34);
    suffix.push_str("t:");
    suffix.push_str(std::str::from_utf8(&Digest::of(tag.as_bytes()).hex()).expect("hex digits are ASCII"));
    suffix
}

impl Digest {
    /// The 32 lower-case hex digits of the digest, without `core::fmt`: every key name carries one, and
    /// `{:032x}` on a `u128` was a visible share of a lookup's CPU.
    fn hex(&self) -> [u8; 32] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, digit) in out.iter_mut().enumerate() {
            *digit = DIGITS[((self.0 >> (124 - 4 * i)) & 0xf) as usize];
        }
        out
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.hex()).expect("hex digits are ASCII"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_print_as_32_lower_case_hex_digits() {
        for value in [0u128, 0xab, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210] {
            assert_eq!(Digest(value).to_string(), format!("{value:032x}"));
        }
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
            ns.chunk_key(&r.digest(), u64::MAX, Some("gzip"), u64::MAX),
            ns.all_generation_key(),
            ns.tag_generation_key("a tag with spaces\n"),
            ns.refresh_lock_key(&r.digest()),
            ns.coding_claim_key(&r.digest(), u64::MAX, "zstd"),
            ns.fill_progress_key(&r),
            ns.fence_key("memcached-0.memcached:11211"),
        ];
        for key in keys {
            assert!(key.len() <= 250 && key.bytes().all(|b| b.is_ascii_graphic()), "{key}");
            assert!(key.starts_with("etagd2:n-1_x:"));
        }
    }

    /// The landed `etagd1` release names these items exactly so (its key schema documentation).
    #[test]
    fn bridged_names_follow_the_older_schema() {
        let ns = Namespace::new("shop").unwrap();
        let r = ResourceKey::new("http", "h", "/a");
        let old = ns.bridged("etagd1");
        assert_eq!(old.head_key(&r), ns.head_key(&r).replacen("etagd2", "etagd1", 1));
        assert_eq!(old.all_generation_key(), "etagd1:shop:g:all");
        assert_eq!(old.tag_generation_key("t"), ns.tag_generation_key("t").replacen("etagd2", "etagd1", 1));
    }

    #[test]
    fn chunk_keys_name_the_fill_the_coding_and_the_position() {
        let ns = Namespace::default();
        let entry = Digest(0xab);
        let digest = "000000000000000000000000000000ab";
        assert_eq!(ns.chunk_key(&entry, 0x10, None, 0), format!("etagd2:default:c:{digest}:0000000000000010:0"));
        assert_eq!(
            ns.chunk_key(&entry, 0x10, Some("br"), 12),
            format!("etagd2:default:c:{digest}:0000000000000010:12:br")
        );
        // A chunk never shares a name with a whole-body item, another fill's chunk or another coding's chunk.
        let names = [
            ns.body_key(&entry, 0x10, None),
            ns.chunk_key(&entry, 0x10, None, 1),
            ns.chunk_key(&entry, 0x11, None, 1),
            ns.chunk_key(&entry, 0x10, Some("gzip"), 1),
            ns.chunk_key(&entry, 0x10, None, 11),
        ];
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }

    #[test]
    fn namespaces_are_validated() {
        assert!(Namespace::new("ok_1-2").is_ok());
        for bad in ["", "has space", "x".repeat(33).as_str(), "colon:"] {
            assert!(Namespace::new(bad).is_err(), "{bad:?}");
        }
    }
}
