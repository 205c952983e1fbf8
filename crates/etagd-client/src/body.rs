//! The one body type of the exchange, for requests and responses alike: a stored body replayed from memory, or
//! an upstream body streamed through (possibly after the part the exchange already read while deciding whether
//! it fits in the cache), and [`read_limited`], which reads an upstream body whole when it fits.
//!
//! [`BodySource`] is how a stored body is read: whole today, by byte range once ranges are served from storage,
//! so a chunked body can read only the chunks a range needs.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use tower::BoxError;

mod limited;
mod source;

pub use limited::{Collected, read_limited};
pub use source::{BodySource, StoredBodySource};

/// The body of every response the exchange returns, and of the requests it sends upstream. It implements
/// [`http_body::Body`] with `Bytes` data and [`BoxError`] errors, so hyper and axum accept it as is.
pub struct Body {
    kind: Kind,
}

enum Kind {
    /// A whole body in memory; `None` once sent.
    Full(Option<Bytes>),
    /// Frames already read from the inner body, then an error it reported or the rest of it.
    Streamed { read: VecDeque<Frame<Bytes>>, error: Option<BoxError>, rest: Option<UnsyncBoxBody<Bytes, BoxError>> },
}

impl Body {
    /// A body with no bytes (304s, HEAD).
    pub fn empty() -> Self {
        Self { kind: Kind::Full(None) }
    }

    /// A whole body held in memory.
    pub fn full(bytes: Bytes) -> Self {
        let bytes = (!bytes.is_empty()).then_some(bytes);
        Self { kind: Kind::Full(bytes) }
    }

    /// Another body (an upstream's), streamed through untouched.
    pub fn stream<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self::resume(VecDeque::new(), body.map_err(Into::into).boxed_unsync())
    }

    /// Frames already read from a body, followed by the rest of it.
    pub(crate) fn resume(read: VecDeque<Frame<Bytes>>, rest: UnsyncBoxBody<Bytes, BoxError>) -> Self {
        Self { kind: Kind::Streamed { read, error: None, rest: Some(rest) } }
    }

    /// Frames already read from a body, followed by the error that body then reported: the client sees the
    /// same truncated response it would have seen without the layer.
    pub(crate) fn failed(read: VecDeque<Frame<Bytes>>, error: BoxError) -> Self {
        Self { kind: Kind::Streamed { read, error: Some(error), rest: None } }
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full(bytes) => {
                f.debug_struct("Body").field("full_bytes", &bytes.as_ref().map_or(0, Bytes::len)).finish()
            }
            Kind::Streamed { read, error, rest } => f
                .debug_struct("Body")
                .field("read_frames", &read.len())
                .field("error", error)
                .field("streaming", &rest.is_some())
                .finish(),
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Every field is Unpin (the inner body is boxed), so the body is too.
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Kind::Streamed { read, error, rest } => {
                if let Some(frame) = read.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                if let Some(error) = error.take() {
                    return Poll::Ready(Some(Err(error)));
                }
                match rest {
                    Some(rest) => Pin::new(rest).poll_frame(cx),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Streamed { read, error, rest } => {
                read.is_empty() && error.is_none() && rest.as_ref().is_none_or(http_body::Body::is_end_stream)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Streamed { read, error, rest } => {
                let read_bytes: u64 = read.iter().filter_map(Frame::data_ref).map(|data| data.len() as u64).sum();
                match (error, rest) {
                    (None, Some(rest)) => {
                        let rest = rest.size_hint();
                        let mut hint = SizeHint::new();
                        hint.set_lower(read_bytes.saturating_add(rest.lower()));
                        if let Some(upper) = rest.upper() {
                            hint.set_upper(read_bytes.saturating_add(upper));
                        }
                        hint
                    }
                    _ => SizeHint::with_exact(read_bytes),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::{BodyExt, Full, StreamBody};

    async fn collect(body: Body) -> Result<Bytes, String> {
        body.collect().await.map(|c| c.to_bytes()).map_err(|e| e.to_string())
    }

    fn frames(parts: &[&'static str]) -> VecDeque<Frame<Bytes>> {
        parts.iter().map(|p| Frame::data(Bytes::from_static(p.as_bytes()))).collect()
    }

    #[tokio::test]
    async fn bodies_yield_their_bytes() {
        let rest = || Full::new(Bytes::from_static(b"rest")).map_err(|never| match never {}).boxed_unsync();
        let cases: Vec<(Body, Result<&str, &str>, Option<u64>)> = vec![
            (Body::empty(), Ok(""), Some(0)),
            (Body::full(Bytes::new()), Ok(""), Some(0)),
            (Body::full(Bytes::from_static(b"abc")), Ok("abc"), Some(3)),
            (Body::stream(Full::new(Bytes::from_static(b"xyz"))), Ok("xyz"), Some(3)),
            (Body::resume(frames(&["ab", "c"]), rest()), Ok("abcrest"), Some(7)),
            (Body::resume(VecDeque::new(), rest()), Ok("rest"), Some(4)),
            (Body::failed(frames(&["ab"]), "origin went away".into()), Err("origin went away"), Some(2)),
        ];
        for (body, expected, exact) in cases {
            assert_eq!(body.size_hint().exact(), exact, "{body:?}");
            let got = collect(body).await;
            let got = got.as_ref().map(|b| std::str::from_utf8(b).unwrap()).map_err(String::as_str);
            assert_eq!(got, expected);
        }
    }

    #[tokio::test]
    async fn unknown_length_streams_have_open_hints() {
        let chunks: Vec<Result<Frame<Bytes>, BoxError>> = vec![Ok(Frame::data(Bytes::from_static(b"1")))];
        let body = Body::resume(frames(&["0"]), StreamBody::new(futures_util::stream::iter(chunks)).boxed_unsync());
        assert_eq!(body.size_hint().lower(), 1);
        assert_eq!(body.size_hint().upper(), None);
        assert!(!body.is_end_stream());
        assert_eq!(collect(body).await.unwrap(), Bytes::from_static(b"01"));
        assert!(Body::empty().is_end_stream());
    }
}
