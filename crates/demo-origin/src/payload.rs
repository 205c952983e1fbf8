//! Deterministic response bodies: opaque bytes for `/bytes/{n}` and server-inventory JSON for `/json/{n}`.
//!
//! Bodies are built once and handed out as [`Bytes`] clones, because the origin served alone is one of the
//! benchmark's rows: its handlers must cost next to nothing so that the figure measures HTTP, not body building.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use bytes::Bytes;

use crate::servers::Server;

/// Largest body either generator serves; larger requests are refused rather than allocated.
pub(crate) const MAX_BODY: usize = 8 * 1024 * 1024;

/// How many distinct JSON sizes are kept; past that, bodies are built per request (a benchmark asks for one or two).
const MAX_CACHED_JSON_SIZES: usize = 64;

/// SplitMix64: a tiny, well-mixed, seedable generator, so every replica and every run serves identical bodies.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose sequence depends only on `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 pseudo-random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..bound`; the modulo bias is irrelevant for demo data.
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    /// One element of a non-empty slice.
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let len = u64::try_from(items.len()).expect("a slice length fits in u64");
        let index = usize::try_from(self.below(len)).expect("an index below a slice length fits in usize");
        &items[index]
    }
}

/// [`MAX_BODY`] bytes of incompressible pseudo-random content; `/bytes/{n}` serves the first `n` of them, so a
/// response is a zero-copy slice and the same `n` always yields the same body (its `ETag` is fixed).
pub(crate) fn opaque_bytes() -> Bytes {
    let mut rng = SplitMix64::new(0x6574_6167_6462_7974);
    let mut out = Vec::with_capacity(MAX_BODY);
    while out.len() < MAX_BODY {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(MAX_BODY);
    Bytes::from(out)
}

/// A JSON array of generated servers, as many whole objects as fit in `target` bytes (at least `[]`).
///
/// Field names repeat and values vary, so it compresses with gzip about 5-6x, like a real API listing.
pub(crate) fn json_array(target: usize) -> Bytes {
    let mut rng = SplitMix64::new(0x6a73_6f6e);
    let mut out = Vec::with_capacity(target.max(2));
    out.push(b'[');
    let mut object = Vec::with_capacity(512);
    for id in 1.. {
        object.clear();
        serde_json::to_writer(&mut object, &Server::generate(id, &mut rng))
            .expect("serializing a plain struct into a Vec cannot fail");
        let separator = usize::from(id > 1);
        // The closing bracket must still fit after this object.
        if out.len() + separator + object.len() + 1 > target {
            break;
        }
        if separator == 1 {
            out.push(b',');
        }
        out.extend_from_slice(&object);
    }
    out.push(b']');
    Bytes::from(out)
}

/// Built JSON bodies keyed by requested size, so each size is generated once.
#[derive(Debug, Default)]
pub(crate) struct JsonBodies {
    by_size: RwLock<HashMap<usize, Bytes>>,
}

impl JsonBodies {
    /// A cache already holding the bodies for `sizes`, so the first benchmark request is not a slow one.
    pub(crate) fn prebuilt(sizes: &[usize]) -> Self {
        let by_size = sizes.iter().map(|&n| (n, json_array(n))).collect();
        Self { by_size: RwLock::new(by_size) }
    }

    /// The body for `target` bytes (callers bound `target` by [`MAX_BODY`]).
    pub(crate) fn get(&self, target: usize) -> Bytes {
        // A panic elsewhere cannot leave a half-written map entry, so a poisoned lock is still usable.
        if let Some(body) = self.by_size.read().unwrap_or_else(PoisonError::into_inner).get(&target) {
            return body.clone();
        }
        let body = json_array(target);
        let mut by_size = self.by_size.write().unwrap_or_else(PoisonError::into_inner);
        if by_size.len() < MAX_CACHED_JSON_SIZES {
            by_size.insert(target, body.clone());
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip_len(data: &[u8]) -> usize {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        encoder.write_all(data).expect("writing to a Vec cannot fail");
        encoder.finish().expect("finishing into a Vec cannot fail").len()
    }

    /// (requested size, smallest acceptable length, smallest and largest gzip ratio)
    fn check(target: usize, min_len: usize, ratio: (f64, f64)) {
        let body = json_array(target);
        assert!(body.len() <= target.max(2), "{target}: {} bytes", body.len());
        assert!(body.len() >= min_len, "{target}: {} bytes", body.len());
        let parsed: Vec<Server> = serde_json::from_slice(&body).expect("the generator emits valid JSON");
        assert_eq!(!parsed.is_empty(), min_len > 2, "{target}");
        let compressed = gzip_len(&body);
        #[allow(clippy::cast_precision_loss, reason = "bodies are far below 2^52 bytes")]
        let got = body.len() as f64 / compressed as f64;
        assert!(got >= ratio.0 && got <= ratio.1, "{target}: gzip ratio {got:.2}");
    }

    #[test]
    fn json_fills_its_target_and_compresses_like_api_json() {
        check(0, 2, (0.0, 1.0));
        check(100, 2, (0.0, 1.0));
        check(2048, 1600, (2.0, 5.0));
        check(65536, 65000, (4.5, 7.0));
        check(1 << 20, (1 << 20) - 400, (4.5, 7.0));
    }

    #[test]
    fn bodies_are_deterministic() {
        assert_eq!(json_array(4096), json_array(4096));
        let bytes = opaque_bytes();
        assert_eq!(bytes.len(), MAX_BODY);
        assert_eq!(bytes, opaque_bytes());
        // Opaque content must not shrink under gzip, or a proxy compressing it would skew the benchmark.
        assert!(gzip_len(&bytes[..65536]) > 65536);
    }

    #[test]
    fn json_cache_returns_the_same_body() {
        let cache = JsonBodies::prebuilt(&[1024]);
        assert_eq!(cache.get(1024), json_array(1024));
        assert_eq!(cache.get(3000), json_array(3000));
        assert_eq!(cache.get(3000), cache.get(3000));
    }
}
