//! The entry format: what one fill stores, split so the 304 path reads only the small part.
//!
//! A fill writes up to three kinds of item (keys in `key`):
//!
//! - the **head record** at `u:<resource>`: one of [`HeadRecord::Entry`] (the response has no `Vary`),
//!   [`HeadRecord::Variants`] (it varies: the names, and the URL generation its variants were stored under) or
//!   [`HeadRecord::Pass`] (recently uncacheable: go straight to the origin, like Varnish's hit-for-pass);
//! - for a varying response, the **variant entry** at `v:<variant>`: an [`EntryMeta`];
//! - the **body** at `b:<entry>:<fill id>[:<coding>]`: the body bytes and their checksum, immutable once
//!   written, so a process may keep it in memory keyed by its name; or, for a representation too large for one
//!   item, its **chunks** at `c:<entry>:<fill id>:<index>[:<coding>]`, each with its own checksum, laid out by
//!   [`ChunkLayout`] from the lengths and chunk size the entry records.
//!
//! [`EntryMeta`] holds the validator, everything needed to decide "is this current?", and the header fields
//! replayed with the body (hop-by-hop fields and the per-answer `ETag`, `Age`, `Content-Length` left out):
//! typically 300-800 bytes. The headers live here rather than in the body item so that a revalidation's 304 can
//! update them (RFC 9111 section 4.3.4) by rewriting this small record, never the immutable body, and so that a
//! 304 to the client is answered from the one record the lookup read.
//!
//! ## Wire layout (schema `etagd2`)
//!
//! Every value begins with the two bytes `E1` and one kind byte: `E` entry, `V` variants, `P` pass, `B` body,
//! `C` chunk. `E`, `V` and `P` are followed by one MessagePack value (the structs below, encoded as arrays of
//! their fields in declaration order). `B` and `C` are followed by the 8-byte little-endian xxh3-64 of the
//! bytes, then the raw bytes to the end of the item. Any other prefix is a corrupt entry and reads as a miss.
//!
//! Format change (within the unreleased `etagd2`): chunk items (`C`) and the entry's last two fields,
//! `coding_lens` and `chunk_size`, were added for bodies larger than one item. An entry written without them
//! decodes with both empty (every representation one `b:` item), as before.

mod chunks;
mod parsed;

pub(crate) use parsed::Fields;
pub use parsed::Parsed;

pub use chunks::ChunkLayout;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

const MAGIC: &[u8; 2] = b"E1";
const KIND_ENTRY: u8 = b'E';
const KIND_VARIANTS: u8 = b'V';
const KIND_PASS: u8 = b'P';
const KIND_BODY: u8 = b'B';
const KIND_CHUNK: u8 = b'C';

/// Why stored bytes could not be read back as an entry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The bytes do not start with a known prefix (another program's item, or an older schema).
    #[error("stored item has an unknown format prefix; it will be treated as a miss and overwritten")]
    UnknownFormat,
    /// The bytes have a known prefix but do not decode.
    #[error("stored item is corrupt ({0}); it will be treated as a miss and overwritten")]
    Corrupt(String),
    /// A body item whose bytes do not match the checksum written with them.
    #[error("stored body failed its checksum; it will be treated as a miss and overwritten")]
    Checksum,
}

/// The generation values an entry was filled under. An entry is current only while every one of them still
/// equals the live generation (see `generation`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generations {
    /// The namespace generation (`g:all`).
    pub all: u64,
    /// The URL generation of the head's Vary index; 0 when the response does not vary.
    pub url: u64,
    /// One value per tag, in the order of [`EntryMeta::tags`].
    pub tags: Vec<u64>,
}

/// The small part of an entry: the validator and what proves it current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// Unique per fill; names the body item.
    pub fill_id: u64,
    /// The response status.
    pub status: u16,
    /// The entity tag exactly as sent to clients, quoted, with `W/` when weak.
    pub etag: String,
    /// Whether etagd minted `etag` (so a weakened copy of it proves a proxy in front rewrote it).
    pub minted: bool,
    /// Unix time in milliseconds when the response was received.
    pub stored_at_ms: u64,
    /// The age the response already had when received (RFC 9111 section 4.2.3), seconds.
    pub initial_age_s: u64,
    /// The freshness lifetime (RFC 9111 section 4.2.1), seconds; `u64::MAX` for "until invalidated".
    pub fresh_for_s: u64,
    /// `stale-while-revalidate` window, seconds (RFC 5861).
    pub stale_while_revalidate_s: u32,
    /// `stale-if-error` window, seconds (RFC 5861).
    pub stale_if_error_s: u32,
    /// `must-revalidate`/`proxy-revalidate`/`no-cache`: never serve it stale, and (no-cache) revalidate always.
    pub must_revalidate: bool,
    /// The header fields replayed with the body, in order, names lowercase; multi-line fields as several lines.
    /// A revalidation's 304 replaces the fields it carries (RFC 9111 section 4.3.4).
    pub headers: Vec<(String, serde_bytes::ByteBuf)>,
    /// Lowercase names of the request headers the response varies on.
    pub vary: Vec<String>,
    /// Tags from `Surrogate-Key` and route rules.
    pub tags: Vec<String>,
    /// The generations the fill was made under.
    pub generations: Generations,
    /// Length of the identity body in bytes.
    pub body_len: u64,
    /// Content codings stored besides identity (each its own body item and its own validator).
    pub codings: Vec<String>,
    /// While a rolling upgrade is bridged (`cache/bridge.rs`): the CAS values (0: absent) of the older
    /// schema's head record, namespace counter and tag counters (in the order of `tags`) when this entry was
    /// filled. Any change means the older release invalidated it.
    #[serde(default)]
    pub bridge: Option<Vec<u64>>,
    /// The body length of each stored coding, in the order of `codings` (a chunked coding's chunks are named and
    /// ranged from it); empty in entries written before chunking, whose codings are all single items.
    #[serde(default)]
    pub coding_lens: Vec<u64>,
    /// Bytes per chunk of the representations stored in chunks (those longer than it); 0 when every
    /// representation is one body item. Fixed at fill time, so a later change of the servers' item limit never
    /// misnames an entry's chunks.
    #[serde(default)]
    pub chunk_size: u64,
    /// The fields in HTTP form, made when first answered from (never stored).
    #[serde(skip)]
    pub parsed: Parsed,
}

/// The head record of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadRecord {
    /// The response does not vary: the entry itself.
    Entry(Box<EntryMeta>),
    /// The response varies: each variant lives at its own key.
    Variants(VaryIndex),
    /// The last response was not storable: skip the cache until `until_ms`.
    Pass(PassMarker),
}

/// The Vary index of a resource whose responses vary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaryIndex {
    /// The URL generation. A new value is minted whenever the index is written afresh, so every variant stored
    /// under an older index stops matching: invalidating a URL is one delete of its head.
    pub url_generation: u64,
    /// Lowercase header names.
    pub vary: Vec<String>,
}

/// A hit-for-pass marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassMarker {
    /// Unix time in milliseconds until which requests go straight to the origin.
    pub until_ms: u64,
    /// Why the response was not stored (a `NoStoreReason` label).
    pub reason: String,
}

/// A decoded body item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBody {
    /// The body bytes (a slice of the stored item, not a copy).
    pub body: Bytes,
}

fn encode_msgpack<T: Serialize>(kind: u8, value: &T) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(MAGIC);
    out.push(kind);
    rmp_serde::encode::write(&mut out, value).expect("entry structs always serialize");
    Bytes::from(out)
}

fn split_prefix(bytes: &[u8]) -> Result<(u8, &[u8]), EntryError> {
    if bytes.len() < 3 || &bytes[..2] != MAGIC {
        return Err(EntryError::UnknownFormat);
    }
    Ok((bytes[2], &bytes[3..]))
}

fn decode_msgpack<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, EntryError> {
    rmp_serde::from_slice(bytes).map_err(|e| EntryError::Corrupt(e.to_string()))
}

impl HeadRecord {
    /// Encodes the record for storage.
    pub fn encode(&self) -> Bytes {
        match self {
            Self::Entry(meta) => meta.encode(),
            Self::Variants(index) => encode_msgpack(KIND_VARIANTS, index),
            Self::Pass(marker) => encode_msgpack(KIND_PASS, marker),
        }
    }

    /// Decodes a stored head record.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        let (kind, rest) = split_prefix(bytes)?;
        match kind {
            KIND_ENTRY => Ok(Self::Entry(Box::new(decode_msgpack(rest)?))),
            KIND_VARIANTS => Ok(Self::Variants(decode_msgpack(rest)?)),
            KIND_PASS => Ok(Self::Pass(decode_msgpack(rest)?)),
            _ => Err(EntryError::UnknownFormat),
        }
    }
}

impl EntryMeta {
    /// Encodes the entry for storage (as a head record or a variant entry).
    pub fn encode(&self) -> Bytes {
        encode_msgpack(KIND_ENTRY, self)
    }

    /// Decodes a stored variant entry.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        match split_prefix(bytes)? {
            (KIND_ENTRY, rest) => decode_msgpack(rest),
            _ => Err(EntryError::UnknownFormat),
        }
    }
}

/// Bytes a body or chunk item adds to what it holds: the prefix and the checksum.
pub const BODY_ITEM_OVERHEAD: usize = 3 + 8;

impl StoredBody {
    /// Encodes a body item.
    pub fn encode(body: &[u8]) -> Bytes {
        Self::encode_kind(KIND_BODY, body)
    }

    /// Encodes a chunk item: like a body item, with its own kind byte so one is never read as the other.
    pub fn encode_chunk(chunk: &[u8]) -> Bytes {
        Self::encode_kind(KIND_CHUNK, chunk)
    }

    fn encode_kind(kind: u8, body: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(BODY_ITEM_OVERHEAD + body.len());
        out.put_slice(MAGIC);
        out.put_u8(kind);
        out.put_u64_le(xxh3_64(body));
        out.put_slice(body);
        out.freeze()
    }

    /// Decodes a body item without copying the body.
    pub fn decode(bytes: Bytes) -> Result<Self, EntryError> {
        Self::decode_kind(KIND_BODY, bytes)
    }

    /// Decodes a chunk item without copying it.
    pub fn decode_chunk(bytes: Bytes) -> Result<Self, EntryError> {
        Self::decode_kind(KIND_CHUNK, bytes)
    }

    fn decode_kind(expected: u8, bytes: Bytes) -> Result<Self, EntryError> {
        let (kind, rest) = split_prefix(&bytes)?;
        if kind != expected {
            return Err(EntryError::UnknownFormat);
        }
        if rest.len() < 8 {
            return Err(EntryError::Corrupt("truncated body checksum".into()));
        }
        let checksum = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
        let body = bytes.slice(3 + 8..);
        if xxh3_64(&body) != checksum {
            return Err(EntryError::Checksum);
        }
        Ok(Self { body })
    }
}

impl EntryMeta {
    /// The body length of a representation (`None`: identity), or `None` when the coding is not stored or its
    /// length was not recorded.
    pub fn representation_len(&self, coding: Option<&str>) -> Option<u64> {
        match coding {
            None => Some(self.body_len),
            Some(coding) => {
                let position = self.codings.iter().position(|stored| stored == coding)?;
                self.coding_lens.get(position).copied()
            }
        }
    }

    /// How a representation's body is stored: `Some` layout when in chunks, `None` when it is one body item.
    pub fn chunk_layout(&self, coding: Option<&str>) -> Option<ChunkLayout> {
        ChunkLayout::of(self.representation_len(coding)?, self.chunk_size)
    }

    /// The stored lines of one replayed field (`name` lowercase).
    pub fn header<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers.iter().filter(move |(n, _)| n == name).map(|(_, value)| value.as_slice())
    }

    /// The stored `Last-Modified`, if the origin sent one (the first line; one that is not text counts as none).
    pub fn last_modified(&self) -> Option<&str> {
        self.header("last-modified").next().and_then(|value| std::str::from_utf8(value).ok())
    }

    /// The replayed headers as a map, lines that no longer parse dropped.
    pub fn header_map(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            if let (Ok(name), Ok(value)) =
                (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_bytes(value))
            {
                map.append(name, value);
            }
        }
        map
    }

    /// Stores `map` as the replayed headers.
    pub fn set_headers(&mut self, map: &http::HeaderMap) {
        self.headers = map
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), serde_bytes::ByteBuf::from(value.as_bytes().to_vec())))
            .collect();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_meta() -> EntryMeta {
        EntryMeta {
            fill_id: 0x0123_4567_89ab_cdef,
            status: 200,
            etag: "\"18a2b3c4d5e6f-0123456789abcdef\"".into(),
            minted: true,
            stored_at_ms: 1_795_000_000_000,
            initial_age_s: 0,
            fresh_for_s: 300,
            stale_while_revalidate_s: 30,
            stale_if_error_s: 600,
            must_revalidate: false,
            headers: [
                ("content-type", "application/json"),
                ("cache-control", "public, max-age=300"),
                ("date", "Tue, 24 Nov 2026 10:00:00 GMT"),
                ("last-modified", "Tue, 24 Nov 2026 10:00:00 GMT"),
                ("vary", "Accept-Encoding"),
            ]
            .into_iter()
            .map(|(name, value)| (name.to_owned(), serde_bytes::ByteBuf::from(value.as_bytes().to_vec())))
            .collect(),
            vary: vec![],
            tags: vec!["server".into(), "list".into()],
            generations: Generations { all: 7, url: 0, tags: vec![1, 2] },
            body_len: 65536,
            codings: vec![],
            bridge: None,
            coding_lens: vec![],
            chunk_size: 0,
            parsed: Parsed::default(),
        }
    }

    #[test]
    fn head_records_round_trip() {
        let records = [
            HeadRecord::Entry(Box::new(sample_meta())),
            HeadRecord::Variants(VaryIndex { url_generation: 9, vary: vec!["accept-encoding".into()] }),
            HeadRecord::Pass(PassMarker { until_ms: 5, reason: "private".into() }),
        ];
        for record in records {
            assert_eq!(HeadRecord::decode(&record.encode()).unwrap(), record);
        }
    }

    #[test]
    fn meta_stays_small_whatever_the_body() {
        // Every lookup reads this record: typical headers keep it well under a kilobyte, however large the body.
        let len = sample_meta().encode().len();
        assert!(len < 700, "entry meta is {len} bytes");
    }

    #[test]
    fn body_round_trips_without_reencoding() {
        let body: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        let encoded = StoredBody::encode(&body);
        let decoded = StoredBody::decode(encoded).unwrap();
        assert_eq!(decoded.body, body);
    }

    #[test]
    fn chunks_and_bodies_are_never_read_as_each_other() {
        let chunk = StoredBody::encode_chunk(b"part");
        assert_eq!(StoredBody::decode_chunk(chunk.clone()).unwrap().body, &b"part"[..]);
        assert!(matches!(StoredBody::decode(chunk), Err(EntryError::UnknownFormat)));
        assert!(matches!(StoredBody::decode_chunk(StoredBody::encode(b"part")), Err(EntryError::UnknownFormat)));
        let mut flipped = StoredBody::encode_chunk(b"part").to_vec();
        flipped[BODY_ITEM_OVERHEAD] ^= 1;
        assert!(matches!(StoredBody::decode_chunk(Bytes::from(flipped)), Err(EntryError::Checksum)));
    }

    #[test]
    fn entries_without_chunk_fields_decode_as_single_items() {
        // An entry encoded before the chunk and bridge fields existed: the same array, three elements shorter.
        let meta = sample_meta();
        let mut array = rmp_serde::to_vec(&meta).unwrap();
        assert_eq!(
            array.split_off(array.len() - 3),
            [0xc0, 0x90, 0x00],
            "bridge nil, coding_lens [] and chunk_size 0 come last"
        );
        // 19 fields: a MessagePack array16 (0xdc, then the big-endian length).
        assert_eq!(array[..3], [0xdc, 0, 19]);
        array[2] = 16;
        let mut bytes = b"E1E".to_vec();
        bytes.extend_from_slice(&array);
        let decoded = EntryMeta::decode(&bytes).unwrap();
        assert_eq!(decoded, meta);
        assert_eq!(decoded.chunk_layout(None), None);
    }

    #[test]
    fn representations_know_their_length_and_layout() {
        let meta = EntryMeta {
            body_len: 10_000,
            codings: vec!["gzip".into(), "br".into()],
            coding_lens: vec![3_000, 900],
            chunk_size: 1_000,
            ..sample_meta()
        };
        assert_eq!(meta.representation_len(Some("br")), Some(900));
        assert_eq!(meta.representation_len(Some("zstd")), None);
        assert_eq!(meta.chunk_layout(None).map(|layout| layout.count()), Some(10));
        assert_eq!(meta.chunk_layout(Some("gzip")).map(|layout| layout.count()), Some(3));
        assert_eq!(meta.chunk_layout(Some("br")), None, "a coding within one chunk is one body item");
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let good = StoredBody::encode(b"hello");
        let mut flipped = good.to_vec();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(StoredBody::decode(Bytes::from(flipped)), Err(EntryError::Checksum)));
        let cases: [&[u8]; 7] = [b"", b"E", b"E1", b"E1B", b"E1B\xff\xff\xff\xff\xff\xff\xff", b"E1E\x00", b"XYZ"];
        for case in cases {
            assert!(HeadRecord::decode(case).is_err());
            assert!(EntryMeta::decode(case).is_err());
            assert!(StoredBody::decode(Bytes::copy_from_slice(case)).is_err());
        }
        let meta = sample_meta().encode();
        for cut in 0..meta.len() {
            let _ = HeadRecord::decode(&meta[..cut]);
        }
    }
}
