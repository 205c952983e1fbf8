//! How a stored entry or an origin answer becomes an HTTP response and a fill: the `Cache-Status` value
//! (RFC 9211), the representation and validator a request gets, the 304 (RFC 9110 section 15.4.5), the 200 from
//! storage, and the [`FillResponse`] prepared from an origin answer.
//!
//! The sidecar and the tower layer both answer through this module, so an entry looks the same whichever of them
//! serves it. Builders return a `Response<()>`; the caller attaches its own body type (none for HEAD and 304).

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use http::header::{AGE, CONTENT_ENCODING, CONTENT_LENGTH, ETAG, IF_MODIFIED_SINCE, LAST_MODIFIED, VARY};
use http::response::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use crate::cache::FillResponse;
use crate::cacheability::Freshness;
use crate::conditional::{self, Evaluation};
use crate::encoding::{self, Coding};
use crate::entry::EntryMeta;
use crate::entry::Fields;
use crate::etag::EntityTag;
use crate::headers::{self, ETAGD_INVALIDATE, SURROGATE_KEY};

/// The `Cache-Status` header name (RFC 9211).
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The cache name in `Cache-Status` (RFC 9211 section 2: each cache identifies itself).
const CACHE_NAME: &str = "etagd";

/// Response fields not kept for replay: `ETag`, `Age` and `Content-Length` are set per answer from the entry and
/// its body, `Cache-Status` per answer, and `Surrogate-Key` / `Etagd-Invalidate` are meant for caches only.
const NOT_REPLAYED: [&str; 6] = ["etag", "age", "content-length", "cache-status", SURROGATE_KEY, ETAGD_INVALIDATE];

// === Cache-Status ===

/// Why a request went past the cache (RFC 9211 section 2.2, the `fwd` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fwd {
    /// The cache does not handle this request: its headers ask for something a shared cache cannot give, or
    /// the URL answered something unstorable recently (hit-for-pass).
    Bypass,
    /// The method is not GET or HEAD.
    Method,
    /// Nothing usable was stored for the URL.
    UriMiss,
    /// The cache could not use what it has (the store failed, a fill elsewhere took too long, a body is gone).
    Miss,
    /// The request's own headers (`no-cache`, `Range`, preconditions) forbid answering from storage.
    Request,
    /// The stored response was stale and had to be refreshed first.
    Stale,
}

impl Fwd {
    /// The parameter's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Fwd::Bypass => "bypass",
            Fwd::Method => "method",
            Fwd::UriMiss => "uri-miss",
            Fwd::Miss => "miss",
            Fwd::Request => "request",
            Fwd::Stale => "stale",
        }
    }

    /// The whole header value when `fwd` is the only parameter, so the common case costs no formatting.
    fn alone(self) -> &'static str {
        match self {
            Fwd::Bypass => "etagd; fwd=bypass",
            Fwd::Method => "etagd; fwd=method",
            Fwd::UriMiss => "etagd; fwd=uri-miss",
            Fwd::Miss => "etagd; fwd=miss",
            Fwd::Request => "etagd; fwd=request",
            Fwd::Stale => "etagd; fwd=stale",
        }
    }
}

/// etagd's member of the `Cache-Status` list (RFC 9211): a hit, or why the request was forwarded and what
/// became of the answer. Parameters are written in the order `hit`/`fwd`, `fwd-status`, `stored`, `ttl`,
/// `detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStatus {
    fwd: Option<Fwd>,
    ttl: Option<i64>,
    fwd_status: Option<u16>,
    stored: bool,
    detail: Option<Cow<'static, str>>,
}

impl CacheStatus {
    /// Answered from the cache. `ttl` is the freshness left (negative when stale), `None` for entries kept
    /// until invalidated or when it is not worth saying; see [`ttl`].
    pub fn hit(ttl: Option<i64>) -> Self {
        Self { fwd: None, ttl, fwd_status: None, stored: false, detail: None }
    }

    /// Forwarded to the origin (or the inner service).
    pub fn forward(fwd: Fwd) -> Self {
        Self { fwd: Some(fwd), ttl: None, fwd_status: None, stored: false, detail: None }
    }

    /// The status code the origin answered with (RFC 9211 section 2.3).
    #[must_use]
    pub fn fwd_status(mut self, status: u16) -> Self {
        self.fwd_status = Some(status);
        self
    }

    /// The answer was stored (RFC 9211 section 2.4), with this much freshness left.
    #[must_use]
    pub fn stored(mut self, ttl: Option<i64>) -> Self {
        self.stored = true;
        self.ttl = ttl;
        self
    }

    /// Free text for operators (a no-store reason, `stale-if-error`, `store-unavailable`), written as a
    /// structured-field token when it is one, else as a string (RFC 9211 section 2.7).
    #[must_use]
    pub fn detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The header value: `etagd; hit; ttl=42`, `etagd; fwd=uri-miss; fwd-status=200; stored`.
    pub fn to_header_value(&self) -> HeaderValue {
        match (self.fwd, self.ttl, self.fwd_status, self.stored, &self.detail) {
            (None, None, None, false, None) => return HeaderValue::from_static("etagd; hit"),
            (Some(fwd), None, None, false, None) => return HeaderValue::from_static(fwd.alone()),
            _ => {}
        }
        // On the stack first: the value is short, and the HeaderValue's own copy is then the only allocation.
        let mut inline = Inline::default();
        if self.write(&mut inline).is_ok() {
            return HeaderValue::from_bytes(inline.as_bytes()).expect("built from visible ASCII only");
        }
        let mut text = String::new();
        self.write(&mut text).expect("writing to a String does not fail");
        HeaderValue::try_from(text).expect("built from visible ASCII only")
    }

    fn write(&self, out: &mut impl fmt::Write) -> fmt::Result {
        out.write_str(CACHE_NAME)?;
        match self.fwd {
            None => out.write_str("; hit")?,
            Some(fwd) => write!(out, "; fwd={}", fwd.as_str())?,
        }
        if let Some(status) = self.fwd_status {
            write!(out, "; fwd-status={status}")?;
        }
        if self.stored {
            out.write_str("; stored")?;
        }
        if let Some(ttl) = self.ttl {
            write!(out, "; ttl={ttl}")?;
        }
        if let Some(detail) = &self.detail {
            out.write_str("; detail=")?;
            write_sf_item(out, detail)?;
        }
        Ok(())
    }
}

/// A fixed buffer for [`CacheStatus::to_header_value`]; writing past its end fails, and the caller falls back
/// to a `String`.
struct Inline {
    bytes: [u8; 96],
    len: usize,
}

impl Default for Inline {
    fn default() -> Self {
        Self { bytes: [0; 96], len: 0 }
    }
}

impl Inline {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Write for Inline {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let slot = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Writes `value` as a structured-field token when it is one, else as a string (RFC 8941 sections 3.3.3-4).
/// Characters a string cannot hold are dropped: the detail is for humans.
fn write_sf_item(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:/".contains(c);
    let mut chars = value.chars();
    let token = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '*') && chars.all(is_tchar);
    if token {
        return out.write_str(value);
    }
    out.write_char('"')?;
    for c in value.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.write_char('\\')?;
        }
        out.write_char(c)?;
    }
    out.write_char('"')
}

/// The freshness an entry has left at `age_s`, for `Cache-Status` `ttl` (negative once stale; `None`: kept
/// until invalidated).
pub fn ttl(meta: &EntryMeta, age_s: u64) -> Option<i64> {
    ttl_left(meta.fresh_for_s, age_s)
}

/// [`ttl`] of a response fresh for `fresh_for_s` (`u64::MAX`: until invalidated), before it is an entry.
pub fn ttl_left(fresh_for_s: u64, age_s: u64) -> Option<i64> {
    (fresh_for_s != u64::MAX).then(|| {
        let fresh = i64::try_from(fresh_for_s).unwrap_or(i64::MAX);
        fresh.saturating_sub(i64::try_from(age_s).unwrap_or(i64::MAX))
    })
}

// === answers from storage ===

/// The stored representation that answers one request, and the validator it carries.
///
/// Each stored content coding is its own representation with its own entity tag (RFC 9110 section 8.8.3,
/// [`EntityTag::for_coding`]). Built once per answer from the request's headers and the entry.
#[derive(Debug, Clone)]
pub struct Representation<'a> {
    request: &'a HeaderMap,
    meta: &'a EntryMeta,
    coding: Option<Coding>,
    /// The entry's fields in HTTP form, parsed once per decoded entry.
    fields: &'a Fields,
    /// The representation's tag: the stored one, or its per-coding tag; `None` when the stored tag does not
    /// parse.
    etag: Option<Cow<'a, EntityTag>>,
    /// The client's `If-None-Match`, read once for both [`weakened`](Self::weakened) and
    /// [`evaluate`](Self::evaluate).
    if_none_match: Option<conditional::IfNoneMatch>,
    /// The client's `If-None-Match` holds a `W/` copy of the (strong) tag.
    weakened: bool,
    /// A 304 names the tag in the weakened form the client holds.
    echo_weakened: bool,
}

impl<'a> Representation<'a> {
    /// The identity representation, whatever codings are stored.
    pub fn identity(request: &'a HeaderMap, meta: &'a EntryMeta) -> Self {
        Self::new(request, meta, None)
    }

    /// The stored coding `Accept-Encoding` prefers ([`encoding::negotiate`]), else identity.
    pub fn negotiate(request: &'a HeaderMap, meta: &'a EntryMeta) -> Self {
        Self::new(request, meta, encoding::negotiate(request, &meta.codings))
    }

    /// The representation in `coding` (`None`: identity), which the caller negotiated among the stored codings
    /// (as [`encoding::CompressionPolicy::choose`] does).
    pub fn coded(request: &'a HeaderMap, meta: &'a EntryMeta, coding: Option<Coding>) -> Self {
        Self::new(request, meta, coding)
    }

    fn new(request: &'a HeaderMap, meta: &'a EntryMeta, coding: Option<Coding>) -> Self {
        let fields = meta.parsed.of(meta);
        let etag = fields.etag.as_ref().map(|base| match coding {
            Some(coding) => Cow::Owned(base.clone().for_coding(coding.as_str())),
            None => Cow::Borrowed(base),
        });
        let if_none_match = conditional::if_none_match(request);
        let weakened = etag.as_ref().is_some_and(|etag| conditional::weakened_in(if_none_match.as_ref(), etag));
        Self { request, meta, fields, coding, etag, if_none_match, weakened, echo_weakened: false }
    }

    /// Makes a 304 name the tag as `W/"..."` when the client sent that weakened copy, so a client holding the
    /// weakened copy can match the 304 to what it stored (RFC 9111 section 4.3.4 selects stored responses by
    /// the validator the 304 carries).
    #[must_use]
    pub fn echo_weakened(mut self) -> Self {
        self.echo_weakened = true;
        self
    }

    /// The content coding of the representation (`None`: identity).
    pub fn coding(&self) -> Option<Coding> {
        self.coding
    }

    /// Whether the client's `If-None-Match` holds a `W/` copy of the representation's strong tag: something in
    /// front (a compressing proxy) weakened a tag etagd sent.
    pub fn weakened(&self) -> bool {
        self.weakened
    }

    /// Evaluates the client's `If-None-Match` / `If-Modified-Since` against the representation.
    pub fn evaluate(&self) -> Evaluation {
        // RFC 9110 section 13.2.1: preconditions apply only where the unconditional answer would be a 2xx.
        if !(200..300).contains(&self.meta.status) {
            return Evaluation::Proceed;
        }
        // RFC 9111 section 4.3.2: without a stored Last-Modified, If-Modified-Since is compared with the time the
        // response was stored (its Date, give or take the fill's own round trip).
        let stored = || {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.meta.stored_at_ms);
            httpdate::fmt_http_date(at)
        };
        // Formatted only for a request that can use it: a date per 304 showed in the profile.
        let last_modified = self
            .request
            .contains_key(IF_MODIFIED_SINCE)
            .then(|| self.meta.last_modified().map_or_else(stored, str::to_owned));
        conditional::evaluate_read(
            self.request,
            self.if_none_match.as_ref(),
            self.etag.as_deref(),
            last_modified.as_deref(),
        )
    }

    /// The representation's `ETag` value; `None` when the stored tag is not a valid field value.
    pub fn etag_value(&self) -> Option<HeaderValue> {
        match (&self.etag, self.coding) {
            (Some(etag), Some(_)) => HeaderValue::try_from(etag.to_header_value()).ok(),
            _ => self.fields.etag_value.clone(),
        }
    }

    /// A 304 for the entry: the fields the 200 would carry that RFC 9110 section 15.4.5 requires (`Cache-Control`,
    /// `Content-Location`, `Expires`, `Vary`, as stored), the validators (`ETag`, and `Last-Modified` as stored),
    /// and `Age` when given. No `Date` or `Cache-Status`: the exchange adds them.
    pub fn not_modified(&self, age_s: Option<u64>) -> Response<()> {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        let headers = response.headers_mut();
        for (name, value, _) in self.fields.lines.iter().filter(|(_, _, on_304)| *on_304) {
            headers.append(name.clone(), value.clone());
        }
        let etag = match &self.etag {
            Some(etag) if self.echo_weakened && self.weakened => {
                HeaderValue::try_from(EntityTag { weak: true, opaque: etag.opaque.clone() }.to_header_value()).ok()
            }
            _ => self.etag_value(),
        };
        if let Some(etag) = etag {
            headers.insert(ETAG, etag);
        }
        if let Some(value) = &self.fields.last_modified {
            headers.insert(LAST_MODIFIED, value.clone());
        }
        if let Some(age_s) = age_s {
            headers.insert(AGE, HeaderValue::from(age_s));
        }
        response
    }

    /// A full answer from storage: the entry's status, its replayed headers, then [`stamp`](Self::stamp).
    /// `Content-Length` is `body_len` also for HEAD.
    pub fn from_entry(&self, body_len: usize, age_s: Option<u64>) -> Response<()> {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::from_u16(self.meta.status).unwrap_or(StatusCode::OK);
        let headers = response.headers_mut();
        headers.reserve(self.fields.lines.len() + 4);
        for (name, value, _) in &self.fields.lines {
            headers.append(name.clone(), value.clone());
        }
        self.stamp(headers, body_len, age_s);
        response
    }

    /// Sets what an answer from storage carries besides the replayed headers: `Content-Encoding` for a coded
    /// representation, its `ETag` (removing any other), `Age` when given (RFC 9111 section 5.1: an answer from
    /// storage says how old it is) and `Content-Length`.
    pub fn stamp(&self, headers: &mut HeaderMap, body_len: usize, age_s: Option<u64>) {
        if let Some(coding) = self.coding {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding.as_str()));
        }
        match self.etag_value() {
            Some(etag) => headers.insert(ETAG, etag),
            None => headers.remove(ETAG),
        };
        if let Some(age_s) = age_s {
            headers.insert(AGE, HeaderValue::from(age_s));
        }
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body_len));
    }
}

// === fills ===

/// Prepares a storable origin answer for [`Fill::commit`](crate::cache::Fill::commit): the headers to replay
/// (all but hop-by-hop fields, `ETag`, `Age`, `Content-Length`, `Cache-Status`, `Surrogate-Key` and
/// `Etagd-Invalidate`), the origin's `ETag` and `Last-Modified`, and the `Vary` names.
///
/// With `codings` (encoded copies of `body`), the answer varies on `Accept-Encoding` for clients
/// ([`vary_on_accept_encoding`]) but not in storage: etagd negotiates the coding itself, from one entry.
/// `cacheability::storable` has already refused `Vary: *`.
pub fn prepare_fill(
    parts: &Parts,
    body: Bytes,
    freshness: Freshness,
    tags: Vec<String>,
    codings: Vec<(String, Bytes)>,
) -> FillResponse {
    let mut headers = parts.headers.clone();
    headers::strip_hop_by_hop(&mut headers);
    let mut vary = headers::vary_names(&headers).unwrap_or_default();
    if !codings.is_empty() {
        vary.retain(|name| name != "accept-encoding");
        vary_on_accept_encoding(&mut headers);
    }
    let text = |name: HeaderName| headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let etag = text(ETAG).as_deref().and_then(EntityTag::parse);
    for name in NOT_REPLAYED {
        headers.remove(name);
    }
    let replay = headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), Bytes::copy_from_slice(value.as_bytes())))
        .collect();
    FillResponse { status: parts.status.as_u16(), headers: replay, body, freshness, tags, vary, etag, codings }
}

/// The head of an origin answer streamed to the client while the fill stores it: what an answer from the stored
/// entry would replay (the same fields [`prepare_fill`] keeps), the validator the entry will carry, the `Age`
/// the answer arrived with (RFC 9111 section 5.1), and the origin's `Content-Length` when it sent one.
pub fn streamed_head(parts: &Parts, etag: &EntityTag, initial_age_s: u64) -> Response<()> {
    let mut headers = parts.headers.clone();
    headers::strip_hop_by_hop(&mut headers);
    let length = headers.get(CONTENT_LENGTH).cloned();
    for name in NOT_REPLAYED {
        headers.remove(name);
    }
    if let Ok(value) = HeaderValue::from_str(&etag.to_header_value()) {
        headers.insert(ETAG, value);
    }
    if initial_age_s > 0 {
        headers.insert(AGE, HeaderValue::from(initial_age_s));
    }
    if let Some(length) = length {
        headers.insert(CONTENT_LENGTH, length);
    }
    let mut response = Response::new(());
    *response.status_mut() = parts.status;
    *response.headers_mut() = headers;
    response
}

/// Makes a fill's answer made before its commit (`streamed_head`) the `coding` representation: its
/// `Content-Encoding` and the coding's own tag derived from the fill's `etag`, the tag the stored coding is
/// answered with later ([`Representation::stamp`]).
pub fn stamp_fill_coding(headers: &mut HeaderMap, etag: &EntityTag, coding: Coding) {
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding.as_str()));
    if let Ok(value) = HeaderValue::from_str(&etag.for_coding(coding.as_str()).to_header_value()) {
        headers.insert(ETAG, value);
    }
}

/// Adds `Accept-Encoding` to `Vary` unless it (or `*`) is there (RFC 9110 section 12.5.5): caches downstream
/// must key on it once etagd picks codings per request.
pub fn vary_on_accept_encoding(headers: &mut HeaderMap) {
    let present = headers.get_all(VARY).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|n| n.trim().eq_ignore_ascii_case("accept-encoding") || n.trim() == "*"))
    });
    if !present {
        headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::entry::Generations;

    const LM: &str = "Tue, 24 Nov 2026 10:00:00 GMT";

    pub(crate) fn meta(status: u16, etag: &str, last_modified: Option<&str>) -> EntryMeta {
        EntryMeta {
            fill_id: 1,
            status,
            etag: etag.to_owned(),
            minted: true,
            stored_at_ms: 0,
            initial_age_s: 0,
            fresh_for_s: u64::MAX,
            stale_while_revalidate_s: 0,
            stale_if_error_s: 0,
            must_revalidate: false,
            headers: std::iter::once(("cache-control", "max-age=60"))
                .chain(last_modified.map(|value| ("last-modified", value)))
                .map(|(name, value)| (name.to_owned(), serde_bytes::ByteBuf::from(value.as_bytes().to_vec())))
                .collect(),
            vary: Vec::new(),
            tags: Vec::new(),
            generations: Generations::default(),
            body_len: 0,
            codings: Vec::new(),
            bridge: None,
            coding_lens: Vec::new(),
            chunk_size: 0,
            parsed: Default::default(),
        }
    }

    pub(crate) fn map(lines: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in lines {
            headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn freshness() -> Freshness {
        Freshness {
            fresh_for_s: 60,
            initial_age_s: 3,
            stale_while_revalidate_s: 0,
            stale_if_error_s: 0,
            must_revalidate: false,
        }
    }

    #[test]
    fn cache_status_values() {
        let check = |status: CacheStatus, expected: &str| {
            assert_eq!(status.to_header_value(), expected, "{status:?}");
        };
        check(CacheStatus::hit(None), "etagd; hit");
        check(CacheStatus::hit(Some(42)), "etagd; hit; ttl=42");
        check(CacheStatus::hit(Some(-3)).detail("stale"), "etagd; hit; ttl=-3; detail=stale");
        check(CacheStatus::hit(None).detail("stale-while-revalidate"), "etagd; hit; detail=stale-while-revalidate");
        check(
            CacheStatus::forward(Fwd::UriMiss).fwd_status(200).stored(None),
            "etagd; fwd=uri-miss; fwd-status=200; stored",
        );
        check(CacheStatus::forward(Fwd::UriMiss).stored(None), "etagd; fwd=uri-miss; stored");
        check(
            CacheStatus::forward(Fwd::Stale).fwd_status(304).stored(None),
            "etagd; fwd=stale; fwd-status=304; stored",
        );
        check(
            CacheStatus::forward(Fwd::Stale).fwd_status(200).stored(Some(60)),
            "etagd; fwd=stale; fwd-status=200; stored; ttl=60",
        );
        check(
            CacheStatus::forward(Fwd::UriMiss).fwd_status(200).detail("set_cookie"),
            "etagd; fwd=uri-miss; fwd-status=200; detail=set_cookie",
        );
        check(CacheStatus::forward(Fwd::Bypass), "etagd; fwd=bypass");
        check(CacheStatus::forward(Fwd::Method), "etagd; fwd=method");
        check(CacheStatus::forward(Fwd::UriMiss), "etagd; fwd=uri-miss");
        check(CacheStatus::forward(Fwd::Miss), "etagd; fwd=miss");
        check(CacheStatus::forward(Fwd::Request), "etagd; fwd=request");
        check(CacheStatus::forward(Fwd::Stale), "etagd; fwd=stale");
        check(CacheStatus::forward(Fwd::Request).detail("no-host"), "etagd; fwd=request; detail=no-host");
        check(CacheStatus::forward(Fwd::Miss).detail("fill-wait-timeout"), "etagd; fwd=miss; detail=fill-wait-timeout");
        check(
            CacheStatus::forward(Fwd::Bypass).detail(format!("hit-for-pass-{}", "set-cookie")),
            "etagd; fwd=bypass; detail=hit-for-pass-set-cookie",
        );
        check(CacheStatus::forward(Fwd::Bypass).detail("two words"), "etagd; fwd=bypass; detail=\"two words\"");
        check(CacheStatus::forward(Fwd::Bypass).detail("9lives"), "etagd; fwd=bypass; detail=\"9lives\"");
        check(CacheStatus::forward(Fwd::Bypass).detail(""), "etagd; fwd=bypass; detail=\"\"");
        check(CacheStatus::forward(Fwd::Bypass).detail("a\"b\\c\u{e9}\n"), "etagd; fwd=bypass; detail=\"a\\\"b\\\\c\"");
        // Longer than the stack buffer: built on the heap instead.
        let long = "d".repeat(200);
        check(CacheStatus::forward(Fwd::Miss).detail(long.clone()), &format!("etagd; fwd=miss; detail={long}"));
    }

    #[test]
    fn ttls() {
        let check = |fresh_for_s: u64, age_s: u64, expected: Option<i64>| {
            let entry = EntryMeta { fresh_for_s, ..meta(200, "\"a\"", None) };
            assert_eq!(ttl(&entry, age_s), expected, "{fresh_for_s} {age_s}");
        };
        check(u64::MAX, 5, None);
        check(60, 0, Some(60));
        check(60, 45, Some(15));
        check(60, 70, Some(-10));
        check(0, 3, Some(-3));
    }

    #[test]
    fn conditionals_against_entries() {
        let check = |status: u16, codings: &[&str], lines: &[(&str, &str)], expected: Evaluation| {
            let entry = EntryMeta {
                codings: codings.iter().map(|c| (*c).to_owned()).collect(),
                ..meta(status, "\"v1\"", Some(LM))
            };
            let request = map(lines);
            assert_eq!(Representation::negotiate(&request, &entry).evaluate(), expected, "{status} {lines:?}");
        };
        check(200, &[], &[], Evaluation::Proceed);
        check(200, &[], &[("if-none-match", "\"v1\"")], Evaluation::NotModified);
        check(200, &[], &[("if-none-match", "W/\"v1\"")], Evaluation::NotModified);
        check(200, &[], &[("if-none-match", "\"v0\", \"v1\"")], Evaluation::NotModified);
        check(200, &[], &[("if-none-match", "\"v2\"")], Evaluation::Proceed);
        check(200, &[], &[("if-none-match", "*")], Evaluation::NotModified);
        check(200, &[], &[("if-modified-since", LM)], Evaluation::NotModified);
        check(204, &[], &[("if-none-match", "\"v1\"")], Evaluation::NotModified);
        check(404, &[], &[("if-none-match", "\"v1\"")], Evaluation::Proceed);
        check(301, &[], &[("if-none-match", "*")], Evaluation::Proceed);
        // A coded representation has its own tag: the identity tag does not validate it, and the reverse.
        let gzip = [("accept-encoding", "gzip")];
        check(200, &["gzip"], &[gzip[0], ("if-none-match", "\"v1-gzip\"")], Evaluation::NotModified);
        check(200, &["gzip"], &[gzip[0], ("if-none-match", "\"v1\"")], Evaluation::Proceed);
        check(200, &["gzip"], &[("if-none-match", "\"v1-gzip\"")], Evaluation::Proceed);
        check(200, &["gzip"], &[("if-none-match", "\"v1\"")], Evaluation::NotModified);
    }

    #[test]
    fn representations_and_their_tags() {
        let check = |codings: &[&str], lines: &[(&str, &str)], coding: Option<Coding>, etag: &str, weakened: bool| {
            let entry =
                EntryMeta { codings: codings.iter().map(|c| (*c).to_owned()).collect(), ..meta(200, "\"v1\"", None) };
            let request = map(lines);
            let chosen = Representation::negotiate(&request, &entry);
            assert_eq!(chosen.coding(), coding, "{codings:?} {lines:?}");
            assert_eq!(chosen.etag_value().unwrap(), etag, "{codings:?} {lines:?}");
            assert_eq!(chosen.weakened(), weakened, "{codings:?} {lines:?}");
        };
        check(&[], &[], None, "\"v1\"", false);
        check(&[], &[("accept-encoding", "gzip")], None, "\"v1\"", false);
        check(&["gzip", "br"], &[("accept-encoding", "gzip")], Some(Coding::Gzip), "\"v1-gzip\"", false);
        check(&["gzip", "br"], &[("accept-encoding", "gzip, br")], Some(Coding::Br), "\"v1-br\"", false);
        check(&["gzip"], &[], None, "\"v1\"", false);
        check(&[], &[("if-none-match", "W/\"v1\"")], None, "\"v1\"", true);
        check(&[], &[("if-none-match", "\"v1\"")], None, "\"v1\"", false);
        check(
            &["gzip"],
            &[("accept-encoding", "gzip"), ("if-none-match", "W/\"v1-gzip\"")],
            Some(Coding::Gzip),
            "\"v1-gzip\"",
            true,
        );
        // Identity is chosen regardless of what is stored and accepted.
        let entry = EntryMeta { codings: vec!["gzip".to_owned()], ..meta(200, "\"v1\"", None) };
        let request = map(&[("accept-encoding", "gzip")]);
        let identity = Representation::identity(&request, &entry);
        assert_eq!((identity.coding(), identity.etag_value().unwrap()), (None, HeaderValue::from_static("\"v1\"")));
    }

    #[test]
    fn not_modified_answers() {
        // (codings, request, echo, age) -> (ETag, Age)
        let check = |codings: &[&str], lines: &[(&str, &str)], echo: bool, age: Option<u64>, expected: (&str, &str)| {
            let entry = EntryMeta {
                codings: codings.iter().map(|c| (*c).to_owned()).collect(),
                ..meta(200, "\"v1\"", Some(LM))
            };
            let request = map(lines);
            let mut chosen = Representation::negotiate(&request, &entry);
            if echo {
                chosen = chosen.echo_weakened();
            }
            let response = chosen.not_modified(age);
            let headers = response.headers();
            assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
            assert_eq!(headers["cache-control"], "max-age=60");
            assert_eq!(headers["last-modified"], LM);
            assert!(headers.get("cache-status").is_none(), "the exchange writes Cache-Status");
            assert!(headers.get("content-length").is_none());
            let age = headers.get("age").map_or("", |v| v.to_str().unwrap());
            assert_eq!((headers["etag"].to_str().unwrap(), age), expected, "{codings:?} {lines:?} {echo}");
        };
        check(&[], &[("if-none-match", "\"v1\"")], true, Some(7), ("\"v1\"", "7"));
        check(&[], &[("if-none-match", "W/\"v1\"")], true, Some(7), ("W/\"v1\"", "7"));
        check(&[], &[("if-none-match", "W/\"v1\"")], false, Some(7), ("\"v1\"", "7"));
        check(&[], &[("if-none-match", "\"v1\"")], false, None, ("\"v1\"", ""));
        let gzip = ("accept-encoding", "gzip");
        check(&["gzip"], &[gzip, ("if-none-match", "\"v1-gzip\"")], true, Some(0), ("\"v1-gzip\"", "0"));
        check(&["gzip"], &[gzip, ("if-none-match", "W/\"v1-gzip\"")], true, Some(0), ("W/\"v1-gzip\"", "0"));
    }

    #[test]
    fn entry_answers() {
        let replay = [
            ("content-type", b"text/plain".as_slice()),
            ("x-multi", b"1"),
            ("x-multi", b"2"),
            ("cache-status", b"origin; hit"),
            ("bad name", b"dropped"),
        ];
        let entry = EntryMeta {
            codings: vec!["gzip".to_owned()],
            headers: replay
                .iter()
                .map(|(name, value)| ((*name).to_owned(), serde_bytes::ByteBuf::from(value.to_vec())))
                .collect(),
            ..meta(200, "\"v1\"", None)
        };
        let request = HeaderMap::new();
        let plain = Representation::negotiate(&request, &entry).from_entry(5, Some(7));
        let headers = plain.headers();
        assert_eq!(plain.status(), StatusCode::OK);
        assert_eq!(headers["etag"], "\"v1\"");
        assert_eq!(headers["age"], "7");
        assert_eq!(headers["content-length"], "5");
        assert_eq!(headers.get_all("x-multi").iter().count(), 2);
        assert!(headers.get("content-encoding").is_none());
        assert_eq!(headers.len(), 7);

        let gzip = map(&[("accept-encoding", "gzip")]);
        let coded = Representation::negotiate(&gzip, &entry).from_entry(3, None);
        assert_eq!(coded.headers()["etag"], "\"v1-gzip\"");
        assert_eq!(coded.headers()["content-encoding"], "gzip");
        assert_eq!(coded.headers()["content-length"], "3");
        assert!(coded.headers().get("age").is_none());

        let stored_404 = meta(404, "\"v1\"", None);
        let missing = Representation::identity(&request, &stored_404).from_entry(0, Some(0));
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn stamping_an_origin_answer() {
        let entry = EntryMeta { codings: vec!["br".to_owned()], ..meta(200, "\"v1\"", None) };
        let origin = [("etag", "\"origin\""), ("age", "9"), ("content-length", "100"), ("x-kept", "1")];
        let check = |lines: &[(&str, &str)], stored_etag: &str, expected: &[(&str, &str)]| {
            let entry = EntryMeta { etag: stored_etag.to_owned(), ..entry.clone() };
            let request = map(lines);
            let mut headers = map(&origin);
            Representation::negotiate(&request, &entry).stamp(&mut headers, 4, Some(0));
            let mut got: Vec<(&str, &str)> =
                headers.iter().map(|(name, value)| (name.as_str(), value.to_str().unwrap())).collect();
            got.sort_unstable();
            assert_eq!(got, expected, "{lines:?}");
        };
        check(&[], "\"v1\"", &[("age", "0"), ("content-length", "4"), ("etag", "\"v1\""), ("x-kept", "1")]);
        check(
            &[("accept-encoding", "br")],
            "\"v1\"",
            &[
                ("age", "0"),
                ("content-encoding", "br"),
                ("content-length", "4"),
                ("etag", "\"v1-br\""),
                ("x-kept", "1"),
            ],
        );
        // A stored tag that is not a field value replaces the origin's with nothing.
        check(&[], "\"v\n1\"", &[("age", "0"), ("content-length", "4"), ("x-kept", "1")]);
    }

    #[test]
    fn prepared_fills_keep_only_replayable_headers() {
        let response = Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("etag", "\"origin\"")
            .header("age", "3")
            .header("content-length", "2")
            .header("connection", "x-private")
            .header("x-private", "1")
            .header("keep-alive", "timeout=5")
            .header("surrogate-key", "a")
            .header("etagd-invalidate", "b")
            .header("cache-status", "inner; hit")
            .header("cache-control", "max-age=60")
            .header("vary", "Accept-Encoding")
            .header("last-modified", LM)
            .header("x-multi", "1")
            .header("x-multi", "2")
            .body(())
            .unwrap();
        let (parts, ()) = response.into_parts();
        let fill = prepare_fill(&parts, Bytes::from_static(b"[]"), freshness(), vec!["a".to_owned()], Vec::new());
        let mut names: Vec<&str> = fill.headers.iter().map(|(name, _)| name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["cache-control", "content-type", "last-modified", "vary", "x-multi", "x-multi"]);
        assert_eq!(fill.etag, Some(EntityTag::strong("origin")));
        assert_eq!(fill.vary, ["accept-encoding"]);
        assert_eq!((fill.status, fill.freshness, fill.tags), (200, freshness(), vec!["a".to_owned()]));
        assert_eq!(fill.body, Bytes::from_static(b"[]"));
        assert!(fill.codings.is_empty());
    }

    #[test]
    fn prepared_fills_with_codings_vary_on_accept_encoding_for_clients_only() {
        // (origin Vary lines) -> (stored vary names, replayed Vary lines)
        let check = |vary: &[&str], names: &[&str], lines: &[&str]| {
            let mut builder = Response::builder().status(200);
            for line in vary {
                builder = builder.header("vary", *line);
            }
            let (parts, ()) = builder.body(()).unwrap().into_parts();
            let codings = vec![("gzip".to_owned(), Bytes::from_static(b"z"))];
            let fill = prepare_fill(&parts, Bytes::from_static(b"body"), freshness(), Vec::new(), codings.clone());
            assert_eq!(fill.vary, names, "{vary:?}");
            let replayed: Vec<&[u8]> =
                fill.headers.iter().filter(|(name, _)| name == "vary").map(|(_, value)| value.as_ref()).collect();
            let expected: Vec<&[u8]> = lines.iter().map(|line| line.as_bytes()).collect();
            assert_eq!(replayed, expected, "{vary:?}");
            assert_eq!(fill.codings, codings);
        };
        check(&[], &[], &["Accept-Encoding"]);
        check(&["accept-encoding"], &[], &["accept-encoding"]);
        check(&["Accept-Language"], &["accept-language"], &["Accept-Language", "Accept-Encoding"]);
        check(&["Accept-Language, Accept-Encoding"], &["accept-language"], &["Accept-Language, Accept-Encoding"]);
    }

    #[test]
    fn vary_accept_encoding_is_added_once() {
        let check = |lines: &[&str], expected: &[&str]| {
            let mut headers = map(&lines.iter().map(|line| ("vary", *line)).collect::<Vec<_>>());
            vary_on_accept_encoding(&mut headers);
            let got: Vec<&str> = headers.get_all(VARY).iter().map(|v| v.to_str().unwrap()).collect();
            assert_eq!(got, expected, "{lines:?}");
        };
        check(&[], &["Accept-Encoding"]);
        check(&["Accept-Encoding"], &["Accept-Encoding"]);
        check(&["cookie, ACCEPT-ENCODING"], &["cookie, ACCEPT-ENCODING"]);
        check(&["*"], &["*"]);
        check(&["cookie"], &["cookie", "Accept-Encoding"]);
    }
}
