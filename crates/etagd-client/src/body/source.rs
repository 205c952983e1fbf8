//! Where a stored body's bytes come from when it is served.
//!
//! The exchange asks a [`BodySource`] for a byte range, never for "the body": a full answer is the range
//! `0..len`. Today every stored body is one item held in memory ([`StoredBodySource`]); a body stored in chunks
//! implements the same trait by reading only the chunks a range covers, and a `Range` request (RFC 9110
//! section 14) is answered from whichever source the entry has.

use std::ops::Range;
use std::sync::Arc;

use super::Body;
use crate::entry::StoredBody;

/// A stored body that can be served whole or by byte range.
pub trait BodySource: Send + Sync {
    /// The body's length in bytes.
    fn len(&self) -> u64;

    /// Whether the body is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of `range` (clamped to the body) as a response body.
    fn range(&self, range: Range<u64>) -> Body;

    /// The whole body.
    fn whole(&self) -> Body {
        self.range(0..self.len())
    }
}

/// A body stored as one item and already read into memory (shared with the in-process body cache).
#[derive(Debug, Clone)]
pub struct StoredBodySource(pub Arc<StoredBody>);

impl BodySource for StoredBodySource {
    fn len(&self) -> u64 {
        self.0.body.len() as u64
    }

    fn range(&self, range: Range<u64>) -> Body {
        let len = self.0.body.len();
        let start = usize::try_from(range.start).unwrap_or(usize::MAX).min(len);
        let end = usize::try_from(range.end).unwrap_or(usize::MAX).clamp(start, len);
        // `Bytes::slice` shares the stored allocation: serving a range copies nothing.
        Body::full(self.0.body.slice(start..end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn ranges_are_clamped_to_the_body() {
        let source = StoredBodySource(Arc::new(StoredBody { body: Bytes::from_static(b"0123456789") }));
        let cases = [(0..10, "0123456789"), (2..5, "234"), (8..99, "89"), (12..20, ""), (5..5, "")];
        for (range, expected) in cases {
            let bytes = source.range(range.clone()).collect().await.unwrap().to_bytes();
            assert_eq!(bytes, expected.as_bytes(), "{range:?}");
        }
        assert_eq!(source.whole().collect().await.unwrap().to_bytes(), "0123456789".as_bytes());
        assert_eq!(source.len(), 10);
    }
}
