//! The response side of the layer: reading the inner service's answer (up to a size limit), its tags, and the
//! layer's own touches on answers; how an entry or an answer becomes a response or a fill is `reply`'s.

use std::collections::VecDeque;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, DATE};
use http::response::Parts;
use http::{HeaderMap, HeaderValue, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tower::BoxError;

use super::ResponseBody;
use crate::cacheability::NoStoreReason;
use crate::entry::EntryMeta;
use crate::headers::{self, SURROGATE_KEY};
use crate::reply::{CACHE_STATUS, CacheStatus, Representation};

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

/// The stored representation the layer answers with: always identity (the layer leaves compression to a layer
/// outside it), its validator compared with the client's.
pub(crate) fn representation<'a>(request_headers: &'a HeaderMap, meta: &'a EntryMeta) -> Representation<'a> {
    // A 304 names the tag in the form the client holds, as the sidecar does (RFC 9111 section 4.3.4).
    let chosen = Representation::identity(request_headers, meta).echo_weakened();
    if chosen.weakened() {
        // Something between the client and the service (a compressing proxy) weakened our tag; weak
        // comparison still matches it (RFC 9110 section 13.1.2), but operators may want to know.
        tracing::debug!(etag = %meta.etag, "request carries a weakened copy of a stored strong ETag");
    }
    chosen
}

/// An answer from storage ([`Representation::not_modified`] or [`Representation::from_entry`]) with its body,
/// and `Date` when the stored headers have none: the layer may sit under a server that does not add it.
pub(crate) fn from_storage(head: Response<()>, body: ResponseBody, now: SystemTime) -> Response<ResponseBody> {
    let mut response = head.map(|()| body);
    if !response.headers().contains_key(DATE) {
        let date = HeaderValue::from_str(&httpdate::fmt_http_date(now)).expect("an HTTP date is ASCII");
        response.headers_mut().insert(DATE, date);
    }
    response
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
    use crate::reply::tests::{map, meta};
    use futures_util::stream;
    use http_body_util::{Full, StreamBody};

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
    fn answers_from_storage_carry_a_date_and_their_body() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let entry = meta(200, "\"v1\"", None);
        let request = HeaderMap::new();
        let status = CacheStatus::hit(None);
        let replay = vec![("content-type".to_owned(), Bytes::from_static(b"text/plain"))];
        let chosen = representation(&request, &entry);

        let get =
            from_storage(chosen.from_entry(&replay, 5, Some(7), &status), ResponseBody::full("hello".into()), now);
        assert_eq!(get.headers()["date"], httpdate::fmt_http_date(now).as_str());
        assert_eq!(get.headers()["etag"], "\"v1\"");
        assert_eq!(get.body().size_hint().exact(), Some(5));

        let head = from_storage(chosen.from_entry(&replay, 5, None, &status), ResponseBody::empty(), now);
        assert_eq!(head.headers()["content-length"], "5");
        assert!(head.body().is_end_stream());

        let not_modified = from_storage(chosen.not_modified(Some(7), &status), ResponseBody::empty(), now);
        assert_eq!(not_modified.status(), http::StatusCode::NOT_MODIFIED);
        assert_eq!(not_modified.headers()["date"], httpdate::fmt_http_date(now).as_str());

        // A stored Date (the service's own) is kept.
        let dated = vec![("date".to_owned(), Bytes::from_static(b"Tue, 24 Nov 2026 10:00:00 GMT"))];
        let kept = from_storage(chosen.from_entry(&dated, 0, None, &status), ResponseBody::empty(), now);
        assert_eq!(kept.headers()["date"], "Tue, 24 Nov 2026 10:00:00 GMT");
    }
}
