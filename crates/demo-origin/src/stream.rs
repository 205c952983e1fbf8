//! `GET /stream/{n}`: a JSON body of about `n` bytes sent in pieces spread over a given time, the way a slow
//! report export or a paginated view reaches a proxy. The benchmark uses it to measure how soon a client sees the
//! first byte of a miss through etagd compared with the origin alone (issue 16).
//!
//! Query parameters (unknown ones are ignored, so a benchmark can make each URL distinct):
//! `ms` (default 1000, at most 60000) is the time from the first piece to the last, and `pieces` (default 64,
//! 1 to 4096) how many pieces the body is cut into. The first piece goes out with the headers at once; piece `i`
//! is sent `ms * i / (pieces - 1)` after the request arrived. There is no `Content-Length` (the body is sent
//! chunked, as a streamed response is) and no `ETag`: the same `Cache-Control` as `/json/{n}`.

use std::convert::Infallible;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use tokio::time::Instant;

use crate::payload::MAX_BODY;
use crate::routes::{AppState, JSON, PUBLIC_HOUR, too_large};

/// Time over which the pieces are spread unless `ms` says otherwise: "about one second" in the issue.
const DEFAULT_MS: u64 = 1000;
/// Longest spread accepted; longer would only keep benchmark connections open for nothing.
const MAX_MS: u64 = 60_000;
/// Pieces unless `pieces` says otherwise: 128 KiB each for the benchmark's 8 MiB body.
const DEFAULT_PIECES: usize = 64;
/// Most pieces accepted; each is one chunk and one timer.
const MAX_PIECES: usize = 4096;

/// The query of `/stream/{n}`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamQuery {
    ms: Option<u64>,
    pieces: Option<usize>,
}

/// When and what to send: validated parameters of one streamed response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    spread: Duration,
    pieces: usize,
}

impl Plan {
    fn from_query(query: &StreamQuery) -> Result<Self, String> {
        let ms = query.ms.unwrap_or(DEFAULT_MS);
        if ms > MAX_MS {
            return Err(format!("ms={ms} is more than the {MAX_MS} this demo waits; pick 0 to {MAX_MS}\n"));
        }
        let pieces = query.pieces.unwrap_or(DEFAULT_PIECES);
        if !(1..=MAX_PIECES).contains(&pieces) {
            return Err(format!("pieces={pieces} is out of range; pick 1 to {MAX_PIECES}\n"));
        }
        Ok(Self { spread: Duration::from_millis(ms), pieces })
    }

    /// The byte ranges of a body of `len` bytes: as many as asked but never an empty one (an empty chunk
    /// would end a chunked body early), sizes differing by at most one byte.
    fn ranges(self, len: usize) -> Vec<Range<usize>> {
        let count = self.pieces.min(len).max(1);
        (0..count).map(|i| len * i / count..len * (i + 1) / count).collect()
    }

    /// How long after the request piece `index` of `count` is sent: the first at once, the last at the spread.
    fn offset(self, index: usize, count: usize) -> Duration {
        if count <= 1 {
            return Duration::ZERO;
        }
        let index = u32::try_from(index).expect("at most MAX_PIECES pieces");
        let steps = u32::try_from(count - 1).expect("at most MAX_PIECES pieces");
        self.spread * index / steps
    }
}

/// The handler of `GET /stream/{n}`.
pub(crate) async fn stream(
    State(state): State<Arc<AppState>>,
    Path(n): Path<usize>,
    Query(query): Query<StreamQuery>,
) -> Response {
    if n > MAX_BODY {
        return too_large(n);
    }
    let plan = match Plan::from_query(&query) {
        Ok(plan) => plan,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    // The schedule starts when the request arrived, so a slow first poll does not shift the whole body later.
    let start = Instant::now();
    let body = state.json(n);
    let ranges = plan.ranges(body.len());
    let count = ranges.len();
    let pieces = futures_util::stream::unfold(ranges.into_iter().enumerate(), move |mut ranges| {
        let body = body.clone();
        async move {
            let (index, range) = ranges.next()?;
            tokio::time::sleep_until(start + plan.offset(index, count)).await;
            Some((Ok::<Bytes, Infallible>(body.slice(range)), ranges))
        }
    });
    ([(CACHE_CONTROL, PUBLIC_HOUR), (CONTENT_TYPE, JSON)], Body::from_stream(pieces)).into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::payload::json_array;
    use crate::routes::app;

    fn plan(ms: Option<u64>, pieces: Option<usize>) -> Result<Plan, String> {
        Plan::from_query(&StreamQuery { ms, pieces })
    }

    #[test]
    fn query_defaults_and_bounds() {
        assert_eq!(plan(None, None), Ok(Plan { spread: Duration::from_secs(1), pieces: 64 }));
        assert_eq!(plan(Some(0), Some(1)), Ok(Plan { spread: Duration::ZERO, pieces: 1 }));
        assert_eq!(plan(Some(MAX_MS), Some(MAX_PIECES)).map(|p| p.pieces), Ok(MAX_PIECES));
        assert!(plan(Some(MAX_MS + 1), None).is_err_and(|e| e.contains("ms=60001")));
        assert!(plan(None, Some(0)).is_err_and(|e| e.contains("pieces=0")));
        assert!(plan(None, Some(MAX_PIECES + 1)).is_err_and(|e| e.contains("pieces=4097")));
    }

    #[test]
    fn ranges_cover_the_body_without_empty_pieces() {
        for (len, pieces) in [(8 << 20, 64), (10, 3), (2, 64), (0, 5), (1000, 1)] {
            let ranges = Plan { spread: Duration::ZERO, pieces }.ranges(len);
            assert_eq!(ranges.first().map(|r| r.start), Some(0), "{len}/{pieces}");
            assert_eq!(ranges.last().map(|r| r.end), Some(len), "{len}/{pieces}");
            assert!(ranges.windows(2).all(|w| w[0].end == w[1].start), "{len}/{pieces}: gaps or overlaps");
            assert!(len == 0 || ranges.iter().all(|r| !r.is_empty()), "{len}/{pieces}: an empty piece");
            assert_eq!(ranges.len(), pieces.min(len).max(1), "{len}/{pieces}");
        }
    }

    #[test]
    fn offsets_run_from_zero_to_the_spread() {
        let plan = Plan { spread: Duration::from_millis(1000), pieces: 5 };
        let offsets: Vec<u128> = (0..5).map(|i| plan.offset(i, 5).as_millis()).collect();
        assert_eq!(offsets, [0, 250, 500, 750, 1000]);
        assert_eq!(plan.offset(0, 1), Duration::ZERO);
    }

    /// The pieces arrive on schedule (on tokio's paused clock, so nothing here depends on the machine's speed)
    /// and together are exactly the `/json/{n}` body, sent without a length.
    #[tokio::test(start_paused = true)]
    async fn streams_the_json_body_on_schedule() {
        let router = app(Arc::new(AppState::new(Duration::ZERO)), None);
        let start = Instant::now();
        let request =
            Request::get("/stream/65536?ms=400&pieces=5&miss=abc-1").body(Body::empty()).expect("a valid request");
        let response = router.oneshot(request).await.expect("the router is infallible");
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(headers.get(CACHE_CONTROL).map(|v| v.as_bytes()), Some(&b"public, max-age=3600"[..]));
        assert_eq!(headers.get(CONTENT_TYPE).map(|v| v.as_bytes()), Some(&b"application/json"[..]));
        assert!(headers.get("content-length").is_none() && headers.get("etag").is_none());
        let mut body = response.into_body();
        let mut received = Vec::new();
        let mut arrivals = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.expect("the stream is infallible").into_data().expect("only data frames");
            arrivals.push(start.elapsed().as_millis());
            received.extend_from_slice(&data);
        }
        assert_eq!(arrivals, [0, 100, 200, 300, 400]);
        assert_eq!(received, json_array(65536));
    }

    #[tokio::test]
    async fn bad_parameters_are_refused_with_a_reason() {
        let router = app(Arc::new(AppState::new(Duration::ZERO)), None);
        for uri in ["/stream/8388609", "/stream/1024?ms=60001", "/stream/1024?pieces=0", "/stream/1024?ms=soon"] {
            let request = Request::get(uri).body(Body::empty()).expect("a valid request");
            let response = router.clone().oneshot(request).await.expect("the router is infallible");
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{uri}");
            let body = response.into_body().collect().await.expect("in memory").to_bytes();
            assert!(!body.is_empty(), "{uri}: no reason given");
        }
    }
}
