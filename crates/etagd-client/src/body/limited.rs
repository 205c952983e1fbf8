//! Reading an upstream body whole when it fits in the cache's limit, and handing it back intact when it does not.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use http_body::Frame;
use http_body_util::BodyExt;
use tower::BoxError;

use super::Body;
use crate::cacheability::NoStoreReason;

/// An upstream body, read as far as [`read_limited`] could.
pub enum Collected {
    /// The whole body, within the limit.
    Whole(Bytes),
    /// Not storable (above the limit, or with trailers): the part read so far followed by the rest, streamed,
    /// so the client still gets every byte.
    Partial {
        /// The body to send on.
        body: Body,
        /// Why it cannot be stored.
        reason: NoStoreReason,
    },
    /// The body failed while being read: the part read so far, then the error, so the client sees the same
    /// truncated response it would have seen without the cache.
    Failed(Body),
}

impl std::fmt::Debug for Collected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Whole(bytes) => f.debug_tuple("Whole").field(&bytes.len()).finish(),
            Self::Partial { reason, .. } => f.debug_struct("Partial").field("reason", reason).finish(),
            Self::Failed(_) => f.write_str("Failed"),
        }
    }
}

/// Reads `body` whole if it fits in `limit` bytes, else hands it back to be streamed through.
///
/// A declared `Content-Length` (or an exact size hint) above the limit is refused before a byte is read.
pub async fn read_limited<B>(body: B, headers: &HeaderMap, limit: usize) -> Collected
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let declared =
        headers.get(CONTENT_LENGTH).and_then(|value| value.to_str().ok()).and_then(|value| value.parse::<u64>().ok());
    if declared.unwrap_or(0).max(body.size_hint().lower()) > limit as u64 {
        return Collected::Partial { body: Body::stream(body), reason: NoStoreReason::TooLarge };
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
                    return Collected::Partial { body: Body::resume(read, body), reason: NoStoreReason::Trailers };
                };
                len = len.saturating_add(data.len());
                read.push_back(frame);
                if len > limit {
                    return Collected::Partial { body: Body::resume(read, body), reason: NoStoreReason::TooLarge };
                }
            }
            Some(Err(error)) => return Collected::Failed(Body::failed(read, error)),
        }
    }
}

fn concat(mut frames: VecDeque<Frame<Bytes>>, len: usize) -> Bytes {
    if frames.len() == 1 {
        return frames.pop_front().and_then(|frame| frame.into_data().ok()).unwrap_or_default();
    }
    let mut whole = BytesMut::with_capacity(len);
    for frame in frames {
        if let Ok(data) = frame.into_data() {
            whole.extend_from_slice(&data);
        }
    }
    whole.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use http::HeaderValue;
    use http_body_util::{Full, StreamBody};

    fn map(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        lines.iter().map(|(n, v)| (http::HeaderName::from_static(n), HeaderValue::from_static(v))).collect()
    }

    async fn run(chunks: &[&'static str], headers: &[(&'static str, &'static str)], limit: usize) -> (String, Vec<u8>) {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            chunks.iter().map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes())))).collect();
        let body = StreamBody::new(stream::iter(frames));
        match read_limited(body, &map(headers), limit).await {
            Collected::Whole(bytes) => ("whole".to_owned(), bytes.to_vec()),
            Collected::Partial { body, reason } => {
                (format!("partial {reason}"), body.collect().await.unwrap().to_bytes().to_vec())
            }
            Collected::Failed(_) => ("failed".to_owned(), Vec::new()),
        }
    }

    #[tokio::test]
    async fn reading_respects_the_limit_and_loses_nothing() {
        type Case = (&'static [&'static str], &'static [(&'static str, &'static str)], &'static str, &'static str);
        let cases: &[Case] = &[
            (&[], &[], "whole", ""),
            (&["ab"], &[], "whole", "ab"),
            (&["ab", "cd"], &[], "whole", "abcd"),
            (&["ab", "cd", "e"], &[], "partial too_large", "abcde"),
            (&["abcdef", "g"], &[], "partial too_large", "abcdefg"),
            (&["ab"], &[("content-length", "99")], "partial too_large", "ab"),
            (&["ab"], &[("content-length", "2")], "whole", "ab"),
        ];
        for (chunks, headers, kind, bytes) in cases {
            let got = run(chunks, headers, 4).await;
            assert_eq!((got.0.as_str(), got.1.as_slice()), (*kind, bytes.as_bytes()), "{chunks:?} {headers:?}");
        }
        let sized = read_limited(Full::new(Bytes::from_static(b"12345")), &HeaderMap::new(), 4).await;
        assert!(matches!(sized, Collected::Partial { reason: NoStoreReason::TooLarge, .. }));
    }

    #[tokio::test]
    async fn failures_and_trailers_are_handed_back() {
        let failing: Vec<Result<Frame<Bytes>, BoxError>> =
            vec![Ok(Frame::data(Bytes::from_static(b"ab"))), Err("reset".into())];
        let failed = read_limited(StreamBody::new(stream::iter(failing)), &HeaderMap::new(), 4).await;
        let Collected::Failed(body) = failed else { panic!("a failing body is reported as failed") };
        assert_eq!(body.collect().await.unwrap_err().to_string(), "reset");

        let with_trailers: Vec<Result<Frame<Bytes>, BoxError>> =
            vec![Ok(Frame::data(Bytes::from_static(b"ab"))), Ok(Frame::trailers(HeaderMap::new()))];
        let trailed = read_limited(StreamBody::new(stream::iter(with_trailers)), &HeaderMap::new(), 4).await;
        assert!(matches!(trailed, Collected::Partial { reason: NoStoreReason::Trailers, .. }));
    }
}
