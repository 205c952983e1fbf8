//! The response side of the layer: reading the inner service's answer (up to a size limit) and preparing it for
//! storage, and building the answers the layer gives from a stored entry (200 with the body, 304 without).

use std::collections::VecDeque;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::header::{AGE, CONTENT_LENGTH, DATE, ETAG, LAST_MODIFIED};
use http::response::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tower::BoxError;

use super::ResponseBody;
use super::status::CacheStatus;
use crate::cache::FillResponse;
use crate::cacheability::{Freshness, NoStoreReason};
use crate::conditional::{self, Evaluation};
use crate::entry::EntryMeta;
use crate::etag::EntityTag;
use crate::headers::{self, SURROGATE_KEY};

/// The `Cache-Status` header name (RFC 9211).
pub(crate) const CACHE_STATUS: &str = "cache-status";

/// Response headers not kept for replay: `ETag` and `Age` are set per answer from the entry, `Content-Length`
/// from the stored body, `Cache-Status` per answer, and `Surrogate-Key` is meant for caches only.
const NOT_REPLAYED: [&str; 5] = ["etag", "age", "content-length", CACHE_STATUS, SURROGATE_KEY];

/// The inner service's body, read as far as the layer could.
pub(crate) enum Collected {
    /// The whole body, within the limit.
    Whole(Bytes),
    /// Not storable (above the limit, or with trailers): the part read so far followed by the rest, streamed.
    Partial {
        /// The body to send on.
        body: ResponseBody,
        /// Why it cannot be stored (the hit-for-pass reason).
        reason: &'static str,
    },
    /// The body failed while being read: the part read so far, then the error.
    Failed(ResponseBody),
}

/// Reads a body whole if it fits in `limit` bytes, else hands it back to be streamed through.
pub(crate) async fn collect_limited<B>(body: B, headers: &HeaderMap, limit: usize) -> Collected
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let declared =
        headers.get(CONTENT_LENGTH).and_then(|value| value.to_str().ok()).and_then(|value| value.parse::<u64>().ok());
    let too_large = NoStoreReason::TooLarge.as_str();
    // Known to be too large before reading a byte: stream it through untouched.
    if declared.unwrap_or(0).max(body.size_hint().lower()) > limit as u64 {
        return Collected::Partial { body: ResponseBody::stream(body), reason: too_large };
    }
    let mut body = body.map_err(Into::into).boxed_unsync();
    let mut read: VecDeque<Frame<Bytes>> = VecDeque::new();
    let mut len = 0usize;
    loop {
        match body.frame().await {
            None => return Collected::Whole(concat(read, len)),
            Some(Ok(frame)) => {
                let Some(data) = frame.data_ref() else {
                    // Trailers cannot be replayed from the store.
                    read.push_back(frame);
                    return Collected::Partial { body: ResponseBody::resume(read, body), reason: "trailers" };
                };
                len = len.saturating_add(data.len());
                read.push_back(frame);
                if len > limit {
                    return Collected::Partial { body: ResponseBody::resume(read, body), reason: too_large };
                }
            }
            Some(Err(error)) => return Collected::Failed(ResponseBody::failed(read, error)),
        }
    }
}

fn concat(mut frames: VecDeque<Frame<Bytes>>, len: usize) -> Bytes {
    if frames.len() == 1 {
        if let Some(Ok(data)) = frames.pop_front().map(Frame::into_data) {
            return data;
        }
        return Bytes::new();
    }
    let mut whole = BytesMut::with_capacity(len);
    for frame in frames {
        if let Ok(data) = frame.into_data() {
            whole.extend_from_slice(&data);
        }
    }
    whole.freeze()
}

/// The tags of a response: the layer's own, then those the service named in `Surrogate-Key`.
pub(crate) fn tags(layer_tags: &[String], headers: &HeaderMap) -> Vec<String> {
    let mut tags = layer_tags.to_vec();
    for tag in headers::tags_in(headers, SURROGATE_KEY) {
        if tags.len() >= headers::MAX_TAGS {
            break;
        }
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    tags
}

/// Prepares a storable response for [`Fill::commit`](crate::cache::Fill::commit).
pub(crate) fn prepare(parts: &Parts, body: Bytes, freshness: Freshness, tags: Vec<String>) -> FillResponse {
    let mut headers = parts.headers.clone();
    headers::strip_hop_by_hop(&mut headers);
    let text = |name: HeaderName| headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let etag = text(ETAG).as_deref().and_then(EntityTag::parse);
    let last_modified = text(LAST_MODIFIED);
    let headers_304 = headers::headers_for_304(&headers);
    // `cacheability::storable` already refused `Vary: *`.
    let vary = headers::vary_names(&headers).unwrap_or_default();
    for name in NOT_REPLAYED {
        headers.remove(name);
    }
    let replay = headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), Bytes::copy_from_slice(value.as_bytes())))
        .collect();
    FillResponse {
        status: parts.status.as_u16(),
        headers: replay,
        headers_304,
        body,
        freshness,
        tags,
        vary,
        etag,
        last_modified,
        codings: Vec::new(),
    }
}

/// The freshness an entry has left, for `Cache-Status` (`None`: kept until invalidated).
pub(crate) fn ttl(meta: &EntryMeta, age_s: u64) -> Option<i64> {
    (meta.fresh_for_s != u64::MAX).then(|| {
        let fresh = i64::try_from(meta.fresh_for_s).unwrap_or(i64::MAX);
        fresh.saturating_sub(i64::try_from(age_s).unwrap_or(i64::MAX))
    })
}

/// Evaluates the client's `If-None-Match` / `If-Modified-Since` against an entry.
pub(crate) fn evaluate(request_headers: &HeaderMap, meta: &EntryMeta) -> Evaluation {
    // RFC 9110 section 13.2.1: preconditions apply only where the unconditional answer would be a 2xx.
    if !(200..300).contains(&meta.status) {
        return Evaluation::Proceed;
    }
    let etag = EntityTag::parse(&meta.etag);
    if let Some(etag) = &etag {
        if conditional::weakened_copy_of(request_headers, etag) {
            // Something between the client and the service (a compressing proxy) weakened our tag; weak
            // comparison still matches it (RFC 9110 section 13.1.2), but operators may want to know.
            tracing::debug!(etag = %meta.etag, "request carries a weakened copy of a stored strong ETag");
        }
    }
    conditional::evaluate(request_headers, etag.as_ref(), meta.last_modified.as_deref())
}

/// A 304 for a stored entry: the validator, `Date`, `Age` for a hit, and the headers a 304 repeats
/// (RFC 9110 section 15.4.5).
pub(crate) fn not_modified(
    meta: &EntryMeta,
    age_s: Option<u64>,
    status: &CacheStatus,
    now: SystemTime,
) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    let headers = response.headers_mut();
    for (name, value) in &meta.headers_304 {
        append(headers, name.as_bytes(), value.as_bytes());
    }
    finish_entry_headers(headers, meta, age_s, status, now);
    response
}

/// A full answer from a stored entry: its status and replayed headers, the validator, `Age` for a hit, and the
/// body (none for HEAD, with the `Content-Length` GET would have).
pub(crate) fn from_entry(
    meta: &EntryMeta,
    replay: &[(String, Bytes)],
    body: &Bytes,
    age_s: Option<u64>,
    head: bool,
    status: &CacheStatus,
    now: SystemTime,
) -> Response<ResponseBody> {
    let body_out = if head { ResponseBody::empty() } else { ResponseBody::full(body.clone()) };
    let mut response = Response::new(body_out);
    *response.status_mut() = StatusCode::from_u16(meta.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    for (name, value) in replay {
        append(headers, name.as_bytes(), value);
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    finish_entry_headers(headers, meta, age_s, status, now);
    response
}

fn finish_entry_headers(
    headers: &mut HeaderMap,
    meta: &EntryMeta,
    age_s: Option<u64>,
    status: &CacheStatus,
    now: SystemTime,
) {
    if let Ok(etag) = HeaderValue::from_str(&meta.etag) {
        headers.insert(ETAG, etag);
    }
    if let Some(age_s) = age_s {
        // RFC 9111 section 5.1: a cache answering from storage says how old the answer is.
        headers.insert(AGE, HeaderValue::from(age_s));
    }
    if !headers.contains_key(DATE) {
        let date = HeaderValue::from_str(&httpdate::fmt_http_date(now)).expect("an HTTP date is ASCII");
        headers.insert(DATE, date);
    }
    headers.append(CACHE_STATUS, status.to_header_value());
}

fn append(headers: &mut HeaderMap, name: &[u8], value: &[u8]) {
    // Stored headers came from a valid response; a value that no longer parses is dropped, not fatal.
    if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
        headers.append(name, value);
    }
}

/// An answer the layer did not store, as the inner service gave it, minus `Surrogate-Key` (meant for caches
/// only). For HEAD the body is dropped, keeping the length GET would have when it is known.
pub(crate) fn unstored(
    mut parts: Parts,
    body: ResponseBody,
    head: bool,
    status: CacheStatus,
) -> Response<ResponseBody> {
    parts.headers.remove(SURROGATE_KEY);
    parts.headers.append(CACHE_STATUS, status.fwd_status(parts.status.as_u16()).to_header_value());
    let body = if head {
        if let Some(len) = body.size_hint().exact() {
            parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
        ResponseBody::empty()
    } else {
        body
    };
    Response::from_parts(parts, body)
}

/// The inner service's answer to a request the layer only forwarded.
pub(crate) fn forwarded<B>(response: Response<B>, status: CacheStatus) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(SURROGATE_KEY);
    parts.headers.append(CACHE_STATUS, status.fwd_status(parts.status.as_u16()).to_header_value());
    Response::from_parts(parts, ResponseBody::stream(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Generations;
    use futures_util::stream;
    use http_body_util::{Full, StreamBody};

    fn meta(status: u16, etag: &str, last_modified: Option<&str>) -> EntryMeta {
        EntryMeta {
            fill_id: 1,
            status,
            etag: etag.to_owned(),
            minted: true,
            last_modified: last_modified.map(str::to_owned),
            stored_at_ms: 0,
            initial_age_s: 0,
            fresh_for_s: u64::MAX,
            stale_while_revalidate_s: 0,
            stale_if_error_s: 0,
            must_revalidate: false,
            headers_304: vec![("cache-control".to_owned(), "max-age=60".to_owned())],
            vary: Vec::new(),
            tags: Vec::new(),
            generations: Generations::default(),
            body_len: 0,
            codings: Vec::new(),
        }
    }

    fn map(lines: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in lines {
            headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn conditionals_against_entries() {
        const LM: &str = "Tue, 24 Nov 2026 10:00:00 GMT";
        let check = |status: u16, lines: &[(&str, &str)], expected: Evaluation| {
            let entry = meta(status, "\"v1\"", Some(LM));
            assert_eq!(evaluate(&map(lines), &entry), expected, "{status} {lines:?}");
        };
        check(200, &[], Evaluation::Proceed);
        check(200, &[("if-none-match", "\"v1\"")], Evaluation::NotModified);
        check(200, &[("if-none-match", "W/\"v1\"")], Evaluation::NotModified);
        check(200, &[("if-none-match", "\"v0\", \"v1\"")], Evaluation::NotModified);
        check(200, &[("if-none-match", "\"v2\"")], Evaluation::Proceed);
        check(200, &[("if-none-match", "*")], Evaluation::NotModified);
        check(200, &[("if-modified-since", LM)], Evaluation::NotModified);
        check(204, &[("if-none-match", "\"v1\"")], Evaluation::NotModified);
        check(404, &[("if-none-match", "\"v1\"")], Evaluation::Proceed);
        check(301, &[("if-none-match", "*")], Evaluation::Proceed);
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
    fn tags_merge_layer_and_surrogate_keys() {
        let check = |layer: &[&str], lines: &[(&str, &str)], expected: &[&str]| {
            let layer: Vec<String> = layer.iter().map(|t| (*t).to_owned()).collect();
            assert_eq!(tags(&layer, &map(lines)), expected, "{layer:?} {lines:?}");
        };
        check(&[], &[], &[]);
        check(&["servers"], &[], &["servers"]);
        check(&["servers"], &[("surrogate-key", "servers server-7")], &["servers", "server-7"]);
        check(&[], &[("surrogate-key", "a b"), ("surrogate-key", "c")], &["a", "b", "c"]);
        let many: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
        let layer: Vec<String> = vec!["first".to_owned()];
        let got = tags(&layer, &map(&[("surrogate-key", &many.join(" "))]));
        assert_eq!(got.len(), headers::MAX_TAGS);
        assert_eq!(got[0], "first");
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
            .header("cache-status", "inner; hit")
            .header("cache-control", "max-age=60")
            .header("vary", "Accept-Encoding")
            .header("last-modified", "Tue, 24 Nov 2026 10:00:00 GMT")
            .header("x-multi", "1")
            .header("x-multi", "2")
            .body(())
            .unwrap();
        let (parts, ()) = response.into_parts();
        let freshness = Freshness {
            fresh_for_s: 60,
            initial_age_s: 3,
            stale_while_revalidate_s: 0,
            stale_if_error_s: 0,
            must_revalidate: false,
        };
        let fill = prepare(&parts, Bytes::from_static(b"[]"), freshness.clone(), vec!["a".to_owned()]);
        let mut names: Vec<&str> = fill.headers.iter().map(|(name, _)| name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["cache-control", "content-type", "last-modified", "vary", "x-multi", "x-multi"]);
        assert_eq!(fill.etag, Some(EntityTag::strong("origin")));
        assert_eq!(fill.last_modified.as_deref(), Some("Tue, 24 Nov 2026 10:00:00 GMT"));
        assert_eq!(fill.vary, ["accept-encoding"]);
        assert_eq!(
            fill.headers_304,
            [("cache-control".to_owned(), "max-age=60".to_owned()), ("vary".to_owned(), "Accept-Encoding".to_owned())]
        );
        assert_eq!((fill.status, fill.freshness, fill.tags), (200, freshness, vec!["a".to_owned()]));
        assert_eq!(fill.body, Bytes::from_static(b"[]"));
    }

    #[tokio::test]
    async fn collecting_respects_the_limit() {
        async fn run(chunks: &[&'static str], headers: &[(&str, &str)], limit: usize) -> (String, Vec<u8>) {
            let frames: Vec<Result<Frame<Bytes>, BoxError>> =
                chunks.iter().map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes())))).collect();
            let body = StreamBody::new(stream::iter(frames));
            match collect_limited(body, &map(headers), limit).await {
                Collected::Whole(bytes) => ("whole".to_owned(), bytes.to_vec()),
                Collected::Partial { body, reason } => {
                    (format!("partial {reason}"), body.collect().await.unwrap().to_bytes().to_vec())
                }
                Collected::Failed(_) => ("failed".to_owned(), Vec::new()),
            }
        }
        let check = |got: (String, Vec<u8>), kind: &str, bytes: &str| {
            assert_eq!((got.0.as_str(), got.1.as_slice()), (kind, bytes.as_bytes()));
        };
        check(run(&[], &[], 4).await, "whole", "");
        check(run(&["ab"], &[], 4).await, "whole", "ab");
        check(run(&["ab", "cd"], &[], 4).await, "whole", "abcd");
        check(run(&["ab", "cd", "e"], &[], 4).await, "partial too_large", "abcde");
        check(run(&["abcdef", "g"], &[], 4).await, "partial too_large", "abcdefg");
        check(run(&["ab"], &[("content-length", "99")], 4).await, "partial too_large", "ab");
        check(run(&["ab"], &[("content-length", "2")], 4).await, "whole", "ab");

        let sized = collect_limited(Full::new(Bytes::from_static(b"12345")), &HeaderMap::new(), 4).await;
        assert!(matches!(sized, Collected::Partial { reason: "too_large", .. }));

        let failing: Vec<Result<Frame<Bytes>, BoxError>> =
            vec![Ok(Frame::data(Bytes::from_static(b"ab"))), Err("reset".into())];
        let failed = collect_limited(StreamBody::new(stream::iter(failing)), &HeaderMap::new(), 4).await;
        let Collected::Failed(body) = failed else { panic!("a failing body is reported as failed") };
        assert_eq!(body.collect().await.unwrap_err().to_string(), "reset");

        let with_trailers: Vec<Result<Frame<Bytes>, BoxError>> =
            vec![Ok(Frame::data(Bytes::from_static(b"ab"))), Ok(Frame::trailers(HeaderMap::new()))];
        let trailed = collect_limited(StreamBody::new(stream::iter(with_trailers)), &HeaderMap::new(), 4).await;
        assert!(matches!(trailed, Collected::Partial { reason: "trailers", .. }));
    }

    #[test]
    fn entry_answers() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let entry = meta(200, "\"v1\"", None);
        let status = CacheStatus::hit(None);
        let replay = vec![
            ("content-type".to_owned(), Bytes::from_static(b"text/plain")),
            ("x-multi".to_owned(), Bytes::from_static(b"1")),
            ("x-multi".to_owned(), Bytes::from_static(b"2")),
        ];
        let body = Bytes::from_static(b"hello");
        let get = from_entry(&entry, &replay, &body, Some(7), false, &status, now);
        assert_eq!(get.status(), StatusCode::OK);
        assert_eq!(get.headers()["etag"], "\"v1\"");
        assert_eq!(get.headers()["age"], "7");
        assert_eq!(get.headers()["content-length"], "5");
        assert_eq!(get.headers()["cache-status"], "etagd; hit");
        assert_eq!(get.headers()["date"], httpdate::fmt_http_date(now).as_str());
        assert_eq!(get.headers().get_all("x-multi").iter().count(), 2);
        assert_eq!(get.body().size_hint().exact(), Some(5));

        let head = from_entry(&entry, &replay, &body, None, true, &status, now);
        assert_eq!(head.headers()["content-length"], "5");
        assert!(head.headers().get("age").is_none());
        assert!(head.body().is_end_stream());

        let not_modified = not_modified(&entry, Some(7), &status, now);
        assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(not_modified.headers()["etag"], "\"v1\"");
        assert_eq!(not_modified.headers()["cache-control"], "max-age=60");
        assert_eq!(not_modified.headers()["age"], "7");
        assert!(not_modified.headers().get("content-length").is_none());
        assert!(not_modified.body().is_end_stream());
    }
}
