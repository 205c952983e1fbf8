//! Where a fill's or an on-demand coding's compression runs. A small body is compressed on the task that
//! needs it: a 2 KiB body's gzip costs about 10 us, less than handing it to a blocking thread and waking one
//! (measured on `miss-2k`: the blocking pool's park and wake-up, a futex each way plus a context switch, cost
//! more of a miss than the gzip itself, and each pool thread warmed a compressor of its own). A larger body
//! goes to the blocking pool, at most one per core at once, so the reactor threads never stall on it.

use bytes::Bytes;

use super::Exchange;
use crate::encoding::{CompressionPolicy, SMALL_BODY};

/// Bodies up to this size are compressed inline, on the reactor thread (at most tens of microseconds at the
/// levels [`CompressionPolicy::level_for`] picks for them).
pub(super) const INLINE_BYTES: usize = SMALL_BODY;

/// How many bodies larger than [`INLINE_BYTES`] are compressed at once: one per core. Compression is CPU
/// work, so more at once would only add threads and switches.
pub(super) fn compressions_at_once() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

impl Exchange {
    /// Runs `encode` on `body` under the exchange's compression policy, inline for a small body, else on a
    /// blocking thread once one of the [`compressions_at_once`] permits is free. A panic in `encode` on a
    /// blocking thread yields `T::default()` (no codings), never a failed request.
    pub(super) async fn compress<T, F>(&self, body: &Bytes, encode: F) -> T
    where
        T: Default + Send + 'static,
        F: FnOnce(&CompressionPolicy, &[u8]) -> T + Send + 'static,
    {
        if body.len() <= INLINE_BYTES {
            return self.compress_inline(body, encode);
        }
        // The semaphore is never closed.
        let _core = self.inner.compressions.clone().acquire_owned().await.ok();
        let exchange = self.clone();
        let body = body.clone();
        tokio::task::spawn_blocking(move || encode(&exchange.config().compression, &body)).await.unwrap_or_default()
    }

    /// Runs `encode` on a body of at most [`INLINE_BYTES`] here and now.
    pub(super) fn compress_inline<T>(&self, body: &Bytes, encode: impl FnOnce(&CompressionPolicy, &[u8]) -> T) -> T {
        debug_assert!(body.len() <= INLINE_BYTES, "large bodies go to the blocking pool");
        encode(&self.config().compression, body)
    }
}
