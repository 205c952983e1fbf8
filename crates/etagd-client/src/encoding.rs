//! Content codings: which representation a client gets (`Accept-Encoding` negotiation, RFC 9110 section
//! 12.5.3) and producing the encoded representations once per fill.
//!
//! Each stored coding is its own representation with its own strong validator derived from the fill's
//! (`EntityTag::for_coding`), so one invalidation covers them all and every replica serves the same tags.
//! A hit serves stored bytes, never encodes. The first configured coding (gzip by default) is made with the
//! fill; with [`CompressionPolicy::on_demand`] the others are made once, for the whole fleet, when a client
//! first asks for one ([`CompressionPolicy::choose`]; `exchange/codings.rs`), so a URL nobody asks again costs
//! one compression, not three.
//!
//! The parser is ours because the ones in tower-http and async-compression are private; the rule is short.

use std::cell::RefCell;

use http::HeaderMap;
use http::header::{ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE};

/// A content coding etagd can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    /// Brotli.
    Br,
    /// Zstandard.
    Zstd,
    /// Gzip.
    Gzip,
}

impl Coding {
    /// Server preference when the client's weights tie: smallest output first.
    pub const PREFERENCE: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];

    /// The token used in headers and stored keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Br => "br",
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
        }
    }

    /// Parses a token.
    pub fn parse(token: &str) -> Option<Self> {
        match token.trim().to_ascii_lowercase().as_str() {
            "br" => Some(Self::Br),
            "zstd" => Some(Self::Zstd),
            "gzip" | "x-gzip" => Some(Self::Gzip),
            _ => None,
        }
    }

    /// Encodes a body at `level` (clamped to the codec's range).
    pub fn encode(self, body: &[u8], level: u32) -> std::io::Result<Vec<u8>> {
        match self {
            Self::Gzip => gzip(body, level.min(9)),
            Self::Br => {
                let mut out = Vec::with_capacity(body.len() / 3);
                let params = brotli::enc::BrotliEncoderParams { quality: level.min(11) as i32, ..Default::default() };
                brotli::BrotliCompress(&mut &body[..], &mut out, &params)?;
                Ok(out)
            }
            Self::Zstd => zstd::bulk::compress(body, level.clamp(1, 19) as i32),
        }
    }
}

/// Gzip (RFC 1952) around a raw deflate stream from a compressor kept per thread and level: setting one up
/// allocates and clears some 300 KiB, which cost more than compressing a 2 KiB body itself.
fn gzip(body: &[u8], level: u32) -> std::io::Result<Vec<u8>> {
    thread_local! {
        static DEFLATERS: RefCell<Vec<(u32, flate2::Compress)>> = const { RefCell::new(Vec::new()) };
    }
    // Header: magic, deflate, no flags, no mtime, no extra flags, unknown OS.
    let mut out = Vec::with_capacity(body.len() / 3 + 64);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    DEFLATERS.with_borrow_mut(|deflaters| {
        let index = match deflaters.iter().position(|(l, _)| *l == level) {
            Some(index) => index,
            None => {
                deflaters.push((level, flate2::Compress::new(flate2::Compression::new(level), false)));
                deflaters.len() - 1
            }
        };
        let deflater = &mut deflaters[index].1;
        deflater.reset();
        let start = deflater.total_in();
        loop {
            let consumed = (deflater.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(body.len() / 4 + 64);
            }
            let status = deflater
                .compress_vec(&body[consumed..], &mut out, flate2::FlushCompress::Finish)
                .map_err(std::io::Error::other)?;
            if status == flate2::Status::StreamEnd {
                return Ok::<(), std::io::Error>(());
            }
        }
    })?;
    let mut crc = flate2::Crc::new();
    crc.update(body);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    Ok(out)
}

/// Picks the representation for a request among the stored codings: `Some(coding)`, or `None` for identity.
///
/// Weights come from `Accept-Encoding` (`q=0` refuses a coding, `*` covers codings not named); ties go to
/// [`Coding::PREFERENCE`]; no header means identity. Identity stays possible even when the client gives it
/// `q=0`, since answering with it beats a 406 (RFC 9110 section 12.5.3 allows either). Unparseable parts are
/// ignored.
pub fn negotiate(headers: &HeaderMap, available: &[String]) -> Option<Coding> {
    if available.is_empty() {
        return None;
    }
    negotiate_among(headers, |coding| available.iter().any(|a| a == coding.as_str()))
}

/// [`negotiate`] over the codings `available` accepts.
pub fn negotiate_among(headers: &HeaderMap, available: impl Fn(Coding) -> bool) -> Option<Coding> {
    let mut star: Option<f32> = None;
    let mut named: Vec<(Coding, f32)> = Vec::new();
    let mut any_header = false;
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        any_header = true;
        for item in value.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim();
            let mut q = 1.0_f32;
            for param in parts {
                if let Some((name, value)) = param.split_once('=') {
                    if name.trim().eq_ignore_ascii_case("q") {
                        q = value.trim().parse().ok().filter(|q: &f32| (0.0..=1.0).contains(q)).unwrap_or(0.0);
                    }
                }
            }
            if token == "*" {
                star = Some(q);
            } else if let Some(coding) = Coding::parse(token) {
                named.push((coding, q));
            }
        }
    }
    if !any_header {
        return None;
    }
    let weight = |coding: Coding| named.iter().find(|(c, _)| *c == coding).map(|(_, q)| *q).or(star).unwrap_or(0.0);
    let mut best: Option<(Coding, f32)> = None;
    for coding in Coding::PREFERENCE {
        if !available(coding) {
            continue;
        }
        let q = weight(coding);
        if q > 0.0 && best.is_none_or(|(_, best_q)| q > best_q) {
            best = Some((coding, q));
        }
    }
    best.map(|(coding, _)| coding)
}

/// Bodies up to this size (a few TCP segments) are compressed at each codec's fastest good level
/// ([`CompressionPolicy::level_for`]).
pub const SMALL_BODY: usize = 4 * 1024;

/// What etagd compresses.
#[derive(Debug, Clone)]
pub struct CompressionPolicy {
    /// Codings to produce; empty turns compression off.
    pub codings: Vec<Coding>,
    /// Compression level (gzip 1-9, br 0-11, zstd 1-19; clamped per codec).
    pub level: u32,
    /// Content types (without parameters) to compress; a trailing `/*` matches a whole type.
    pub types: Vec<String>,
    /// Smallest body worth compressing.
    pub min_bytes: usize,
    /// Largest body compressed: above it only identity is stored ([`CompressionPolicy::identity_only`]).
    pub max_bytes: usize,
    /// Whether only the first of [`codings`](Self::codings) is made with the fill and the others when a client
    /// first asks for one ([`at_fill`](Self::at_fill)); `false` makes every coding with the fill.
    pub on_demand: bool,
}

/// The default [`CompressionPolicy::max_bytes`]: 8 MiB. Measured (`examples/coding_cost.rs`, release build, JSON
/// from the demo origin) the three codings at level 5 cost about 1.5 s of one core for an 8 MiB body (brotli
/// 1 s of it) and scale linearly: a 40 MiB export would hold a fill (and its waiters) for about 7 s and keep
/// four copies of the body in memory, while the bytes it saves matter to few clients of such an export.
pub const DEFAULT_COMPRESS_MAX_BYTES: usize = 8 << 20;

impl Default for CompressionPolicy {
    fn default() -> Self {
        Self {
            codings: vec![Coding::Gzip, Coding::Br, Coding::Zstd],
            level: 5,
            types: [
                "text/*",
                "application/json",
                "application/javascript",
                "application/xml",
                "application/xhtml+xml",
                "application/rss+xml",
                "application/atom+xml",
                "application/manifest+json",
                "application/ld+json",
                "application/wasm",
                "image/svg+xml",
            ]
            .map(str::to_owned)
            .to_vec(),
            min_bytes: 1024,
            max_bytes: DEFAULT_COMPRESS_MAX_BYTES,
            on_demand: true,
        }
    }
}

impl CompressionPolicy {
    /// Whether etagd should produce encoded representations of this response: compression on, the origin
    /// sent identity, no `no-transform` (RFC 9110 section 7.7), a listed type, at least `min_bytes`.
    pub fn applies(&self, headers: &HeaderMap, body_len: usize) -> bool {
        if self.codings.is_empty() || body_len < self.min_bytes {
            return false;
        }
        let identity = headers
            .get(CONTENT_ENCODING)
            .is_none_or(|v| v.to_str().is_ok_and(|v| v.trim().eq_ignore_ascii_case("identity")));
        let no_transform = headers
            .get_all(CACHE_CONTROL)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.to_ascii_lowercase().contains("no-transform")));
        let Some(content_type) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
        let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let listed = self.types.iter().any(|t| match t.strip_suffix("/*") {
            Some(major) => mime.split('/').next() == Some(major),
            None => *t == mime,
        });
        identity && !no_transform && listed
    }

    /// Whether a body that [`applies`](Self::applies) is above [`max_bytes`](Self::max_bytes), so only its
    /// identity is stored (`Cache-Status` says `identity-only` on the fill's answer).
    pub fn identity_only(&self, body_len: usize) -> bool {
        body_len > self.max_bytes
    }

    /// The level `coding` is produced at for a body of `body_len` bytes: the configured level, capped where a
    /// higher one costs far more CPU than it saves bytes (measured with `examples/coding_cost.rs` on JSON):
    /// brotli above quality 3 costs 2-4x the time for 5-15 % smaller output at every size; above 1 MiB, gzip
    /// above 4 and zstd above 3 cost 1.3-2.5x for a few percent. Up to [`SMALL_BODY`] each codec's fastest
    /// level that still compresses well (gzip 2, br 1, zstd 1): a 2 KiB JSON body's codings then cost 68 us
    /// instead of 112 us and come out 25-65 bytes larger, all still within one TCP segment; every miss pays
    /// the CPU, a client gets a few dozen bytes more. (nginx's own default is gzip level 1.)
    pub fn level_for(&self, coding: Coding, body_len: usize) -> u32 {
        let small = body_len <= SMALL_BODY;
        let large = body_len > 1 << 20;
        let cap = match coding {
            Coding::Gzip if small => 2,
            Coding::Br | Coding::Zstd if small => 1,
            Coding::Br => 3,
            Coding::Gzip if large => 4,
            Coding::Zstd if large => 3,
            Coding::Gzip | Coding::Zstd => u32::MAX,
        };
        self.level.min(cap)
    }

    /// The codings a fill makes: with [`on_demand`](Self::on_demand) only the first configured one (gzip by
    /// default: every client that takes a coding takes gzip, as Varnish's `do_gzip` assumes), else all of them.
    /// The others cost a miss nothing until a client asks for one.
    pub fn at_fill(&self) -> &[Coding] {
        if self.on_demand { &self.codings[..self.codings.len().min(1)] } else { &self.codings }
    }

    /// What a hit answers with and what it should have made, from one negotiation in the common case: the
    /// stored coding `Accept-Encoding` prefers (`None`: identity), and the coding to make on demand (the one
    /// negotiation would pick if every configured coding were stored, when it is not stored; `None` when the
    /// request is best served by a stored representation, or nothing is made on demand). `stored`: the
    /// entry's codings; an entry stored without any does not vary by coding (it was not compressible), so
    /// none is made for it.
    pub fn choose(&self, request: &HeaderMap, stored: &[String]) -> (Option<Coding>, Option<Coding>) {
        if stored.is_empty() {
            return (None, None);
        }
        let is_stored = |coding: Coding| stored.iter().any(|s| s == coding.as_str());
        if !self.on_demand || stored.len() >= self.codings.len() || !request.contains_key(ACCEPT_ENCODING) {
            return (negotiate(request, stored), None);
        }
        match negotiate_among(request, |coding| is_stored(coding) || self.codings.contains(&coding)) {
            Some(best) if !is_stored(best) => (negotiate(request, stored), Some(best)),
            best => (best, None),
        }
    }

    /// Produces the codings a fill makes ([`at_fill`](Self::at_fill)); one that fails or does not shrink the
    /// body is skipped.
    pub fn encode_at_fill(&self, body: &[u8]) -> Vec<(String, bytes::Bytes)> {
        self.at_fill()
            .iter()
            .filter_map(|coding| Some((coding.as_str().to_owned(), self.encode_one(*coding, body)?)))
            .collect()
    }

    /// Produces one coding of `body` at its level ([`level_for`](Self::level_for)); `None` when it fails or
    /// does not shrink the body.
    pub fn encode_one(&self, coding: Coding, body: &[u8]) -> Option<bytes::Bytes> {
        match coding.encode(body, self.level_for(coding, body.len())) {
            Ok(encoded) if encoded.len() < body.len() => Some(encoded.into()),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, coding = coding.as_str(), "compression failed; serving without it");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn pick(accept: Option<&str>, available: &[&str]) -> Option<&'static str> {
        let mut headers = HeaderMap::new();
        if let Some(accept) = accept {
            headers.insert(ACCEPT_ENCODING, accept.parse().unwrap());
        }
        let available: Vec<String> = available.iter().map(|s| s.to_string()).collect();
        negotiate(&headers, &available).map(Coding::as_str)
    }

    #[test]
    fn negotiation_table() {
        let all = ["gzip", "br", "zstd"];
        let cases: [(Option<&str>, &[&str], Option<&str>); 14] = [
            (None, &all, None),
            (Some(""), &all, None),
            (Some("gzip"), &all, Some("gzip")),
            (Some("gzip, br"), &all, Some("br")),
            (Some("gzip;q=1, br;q=0.5"), &all, Some("gzip")),
            (Some("br;q=0, gzip;q=0.1"), &all, Some("gzip")),
            (Some("*"), &all, Some("br")),
            (Some("*;q=0.5, gzip"), &all, Some("gzip")),
            (Some("identity"), &all, None),
            (Some("identity;q=0"), &all, None),
            (Some("gzip;q=garbage"), &all, None),
            (Some(";;,,=, GZIP ;Q=0.8"), &all, Some("gzip")),
            (Some("zstd, gzip"), &["gzip"], Some("gzip")),
            (Some("deflate, compress"), &all, None),
        ];
        for (accept, available, expected) in cases {
            assert_eq!(pick(accept, available), expected, "{accept:?} {available:?}");
        }
        assert_eq!(pick(Some("gzip"), &[]), None);
    }

    #[test]
    fn codings_round_trip() {
        let body = br#"[{"id":1,"name":"server-1","region":"eu"}]"#.repeat(200);
        let policy = CompressionPolicy { on_demand: false, ..CompressionPolicy::default() };
        let encoded = policy.encode_at_fill(&body);
        assert_eq!(encoded.len(), 3);
        for (coding, bytes) in encoded {
            let decoded = match coding.as_str() {
                "gzip" => {
                    let mut out = Vec::new();
                    flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut out).unwrap();
                    out
                }
                "br" => {
                    let mut out = Vec::new();
                    brotli::BrotliDecompress(&mut &bytes[..], &mut out).unwrap();
                    out
                }
                _ => zstd::decode_all(&bytes[..]).unwrap(),
            };
            assert_eq!(decoded, body, "{coding}");
        }
    }

    /// A reused per-thread compressor starts every body afresh: two different bodies in a row each decode to
    /// themselves (RFC 1952 framing, CRC and length included), at two levels.
    #[test]
    fn gzip_from_a_reused_compressor_decodes_to_each_body() {
        let first = br#"{"a":1}"#.repeat(900);
        let second = br#"[{"b":"two"}]"#.repeat(3000);
        for level in [1, 5, 1] {
            for body in [&first, &second] {
                let encoded = Coding::Gzip.encode(body, level).unwrap();
                let mut decoded = Vec::new();
                flate2::read::GzDecoder::new(&encoded[..]).read_to_end(&mut decoded).unwrap();
                assert_eq!(&decoded, body, "level {level}");
            }
        }
    }

    /// Above `max_bytes` only identity is stored; levels are capped by coding and size, never raised.
    #[test]
    fn large_bodies_are_identity_only_and_levels_follow_size() {
        let policy = CompressionPolicy { max_bytes: 1000, ..CompressionPolicy::default() };
        assert!(!policy.identity_only(1000));
        assert!(policy.identity_only(1001));
        let policy = CompressionPolicy::default();
        assert_eq!(policy.level_for(Coding::Br, 2048), 1);
        assert_eq!(policy.level_for(Coding::Gzip, 2048), 2);
        assert_eq!(policy.level_for(Coding::Zstd, 2048), 1);
        assert_eq!(policy.level_for(Coding::Br, SMALL_BODY + 1), 3);
        assert_eq!(policy.level_for(Coding::Gzip, SMALL_BODY + 1), 5);
        assert_eq!(policy.level_for(Coding::Zstd, SMALL_BODY + 1), 5);
        assert_eq!(policy.level_for(Coding::Gzip, 4 << 20), 4);
        assert_eq!(policy.level_for(Coding::Zstd, 4 << 20), 3);
        let low = CompressionPolicy { level: 1, ..CompressionPolicy::default() };
        assert_eq!(low.level_for(Coding::Br, 8192), 1);
        assert_eq!(low.level_for(Coding::Gzip, 2048), 1, "a lower configured level is kept");
    }

    #[test]
    fn policy_applies_to_compressible_identity_only() {
        let policy = CompressionPolicy::default();
        let headers = |pairs: &[(&str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
            }
            map
        };
        assert!(policy.applies(&headers(&[("content-type", "application/json; charset=utf-8")]), 5000));
        assert!(policy.applies(&headers(&[("content-type", "text/html")]), 5000));
        assert!(!policy.applies(&headers(&[("content-type", "text/html")]), 10));
        assert!(!policy.applies(&headers(&[("content-type", "image/png")]), 5000));
        assert!(!policy.applies(&headers(&[("content-type", "text/html"), ("content-encoding", "gzip")]), 5000));
        assert!(!policy.applies(&headers(&[("content-type", "text/html"), ("cache-control", "no-transform")]), 5000));
        assert!(!policy.applies(&headers(&[]), 5000));
        let off = CompressionPolicy { codings: vec![], ..CompressionPolicy::default() };
        assert!(!off.applies(&headers(&[("content-type", "text/html")]), 5000));
    }

    /// With codings on demand a fill makes the first configured coding only; negotiation over every configured
    /// coding (RFC 9110 section 12.5.3) names the one to make when it is not stored.
    #[test]
    fn the_first_coding_is_made_at_fill_and_the_others_when_a_client_wants_one() {
        let policy = CompressionPolicy::default();
        assert_eq!(policy.at_fill(), &[Coding::Gzip]);
        let body = br#"{"id":1,"name":"server-1","region":"eu"}"#.repeat(100);
        let at_fill = policy.encode_at_fill(&body);
        assert_eq!(at_fill.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(), ["gzip"]);

        let wanted = |accept: Option<&str>, stored: &[&str]| {
            let mut request = HeaderMap::new();
            if let Some(accept) = accept {
                request.insert(ACCEPT_ENCODING, accept.parse().unwrap());
            }
            let stored = stored.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            let (served, wanted) = policy.choose(&request, &stored);
            assert_eq!(served, negotiate(&request, &stored), "{accept:?}: served as negotiated among the stored");
            wanted
        };
        assert_eq!(wanted(Some("gzip, br"), &["gzip"]), Some(Coding::Br));
        assert_eq!(wanted(Some("gzip, zstd"), &["gzip"]), Some(Coding::Zstd));
        assert_eq!(wanted(Some("gzip, br"), &["gzip", "br"]), None, "stored already");
        assert_eq!(wanted(Some("gzip"), &["gzip"]), None, "the best for this client is stored");
        assert_eq!(wanted(Some("br;q=0.5, gzip"), &["gzip"]), None, "gzip weighs more");
        assert_eq!(wanted(Some("br;q=0"), &["gzip"]), None, "q=0 refuses br");
        assert_eq!(wanted(None, &["gzip"]), None, "no Accept-Encoding: identity");
        assert_eq!(wanted(Some("*"), &["gzip"]), Some(Coding::Br), "* takes the smallest first");
        assert_eq!(wanted(Some("gzip, br"), &[]), None, "an entry stored without codings does not vary by them");

        let eager = CompressionPolicy { on_demand: false, ..CompressionPolicy::default() };
        assert_eq!(eager.at_fill().len(), 3);
        assert_eq!(eager.choose(&HeaderMap::new(), &[]), (None, None));
        let off = CompressionPolicy { codings: vec![], ..CompressionPolicy::default() };
        assert!(off.at_fill().is_empty());
    }
}
