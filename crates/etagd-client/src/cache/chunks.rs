//! Bodies stored in chunks: written by a fill, touched by a revalidation, and read back by a hit as a stream
//! with a bounded window of pipelined reads.
//!
//! Integrity: a chunk is named by its entry's fill id and position, never rewritten, and carries its own
//! checksum, so bytes of two fills can never mix. Before the response head goes out, [`ChunkedBody::open`]
//! makes sure every chunk the answer needs is there, in one pipelined round to the head record's server: the
//! first window with its values (needed at once anyway), every later chunk with a value-less read (`mg <key>`
//! without `v`, a few bytes each), so the check costs no transfer and no extra round trip. A chunk missing
//! there makes the hit a miss (a refill, never a truncated body). A chunk evicted after that check fails the
//! body stream, which makes hyper abort the connection: the client sees a broken transfer, never wrong bytes
//! under the entry's `ETag`.

use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use http_body::{Frame, SizeHint};
use tower::BoxError;

use super::{Cache, CommitError, FillResponse, bump};
use crate::body::{Body, BodySource};
use crate::entry::{BODY_ITEM_OVERHEAD, ChunkLayout, StoredBody};
use crate::key::Digest;
use crate::store::{Expiry, GetOutcome, GetRequest, Placement, SetCondition, StoreError};

/// Bytes of chunks one read batch asks for (at least one chunk). A response has at most two batches in
/// flight, plus the chunk hyper is writing: about 3 MiB of memory at memcached's default 1 MiB items, whatever
/// the body's size.
const BATCH_BYTES: u64 = 1 << 20;
/// Batches read ahead of the one being sent.
const READ_AHEAD: usize = 2;
/// Chunk writes in flight at once during a fill (each on its own pooled connection).
const PARALLEL_WRITES: usize = 4;

/// One representation's body, stored in chunks: names its chunks and streams any byte range of it.
#[derive(Clone)]
pub struct ChunkedBody {
    cache: Cache,
    head_key: Arc<str>,
    entry: Digest,
    fill_id: u64,
    coding: Option<Arc<str>>,
    layout: ChunkLayout,
    /// Whether its chunks are kept in the in-process body cache (a body within a quarter of the budget).
    keep: bool,
}

impl std::fmt::Debug for ChunkedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkedBody").field("layout", &self.layout).field("coding", &self.coding).finish()
    }
}

impl ChunkedBody {
    pub(super) fn new(
        cache: &Cache,
        head_key: &str,
        entry: Digest,
        fill_id: u64,
        coding: Option<&str>,
        layout: ChunkLayout,
    ) -> Self {
        Self {
            cache: cache.clone(),
            head_key: head_key.into(),
            entry,
            fill_id,
            coding: coding.map(Into::into),
            keep: keeps_chunks(cache, layout.len()),
            layout,
        }
    }

    /// The layout of the body.
    pub fn layout(&self) -> ChunkLayout {
        self.layout
    }

    fn key(&self, index: u64) -> String {
        self.cache.inner.config.namespace.chunk_key(&self.entry, self.fill_id, self.coding.as_deref(), index)
    }

    /// How many chunks one read batch asks for.
    fn batch(&self) -> u64 {
        (BATCH_BYTES / self.layout.chunk_size()).max(1)
    }

    /// Checks that every chunk `range` needs is present and reads the first window, in one round; then the
    /// bytes of `range` as a streaming body. `None` when a chunk is missing, corrupt or unreadable: the caller
    /// treats the hit as a miss, before anything was sent.
    pub async fn open(&self, range: Range<u64>) -> Option<Body> {
        let needed = self.layout.covering(&range);
        if needed.is_empty() {
            return Some(Body::empty());
        }
        let first = needed.start..(needed.start + self.batch()).min(needed.end);
        let mut window: Vec<Option<Bytes>> = first.clone().map(|index| self.cached(index)).collect();
        let mut requests = Vec::new();
        let mut asked = Vec::new();
        for (index, slot) in first.clone().zip(&window) {
            if slot.is_none() {
                requests.push(GetRequest::bulk(self.key(index)).near(&*self.head_key));
                asked.push(Some(index));
            }
        }
        for index in first.end..needed.end {
            if !self.is_cached(index) {
                requests.push(GetRequest::presence(self.key(index)).near(&*self.head_key));
                asked.push(None);
            }
        }
        if !requests.is_empty() {
            bump(&self.cache.inner.counters.body_store_reads);
            let results = self.cache.inner.store.get_many(&requests).await;
            for (asked, result) in asked.into_iter().zip(results) {
                let item = match result {
                    Ok(GetOutcome::Hit(item)) => item,
                    Ok(GetOutcome::Miss { .. }) => return None,
                    Err(error) => {
                        self.cache.store_error(&error);
                        return None;
                    }
                };
                if let Some(index) = asked {
                    window[(index - first.start) as usize] = Some(self.decode(index, item.value)?);
                }
            }
        } else {
            bump(&self.cache.inner.counters.body_cache_hits);
        }
        let window: Vec<Bytes> = window.into_iter().map(|chunk| chunk.expect("every slot was filled")).collect();
        Some(self.stream(range, window, first.end..needed.end))
    }

    /// The bytes of `range`: `window` (the chunks from the range's first, already read), then the chunks in
    /// `rest`, read in batches with [`READ_AHEAD`] batches in flight. A chunk that is gone by then fails the
    /// stream (the connection is aborted rather than a short or mixed body sent).
    fn stream(&self, range: Range<u64>, window: Vec<Bytes>, rest: Range<u64>) -> Body {
        let layout = self.layout;
        let end = range.end.min(layout.len());
        let start = range.start.min(end);
        let first_index = rest.start - window.len() as u64;
        let ready =
            stream::iter(window.into_iter().enumerate().map(move |(i, chunk)| Ok((first_index + i as u64, chunk))));
        let this = self.clone();
        let batch = self.batch();
        let batches =
            (rest.start..rest.end).step_by(batch as usize).map(move |from| from..(from + batch).min(rest.end));
        let later = stream::iter(batches)
            .map(move |indices| {
                let this = this.clone();
                async move { this.read(indices).await }
            })
            .buffered(READ_AHEAD)
            .map_ok(|chunks| stream::iter(chunks.into_iter().map(Ok)))
            .try_flatten();
        let chunks = ready.chain(later).map_ok(move |(index, chunk): (u64, Bytes)| {
            // Only the first and last chunk of a range are cut.
            let span = layout.span(index);
            let from = start.max(span.start) - span.start;
            let to = end.min(span.end) - span.start;
            chunk.slice(from as usize..to as usize)
        });
        Body::stream(ChunkStream { chunks: chunks.boxed(), remaining: end - start })
    }

    /// Reads a batch of chunks (from process memory when kept, else one pipelined read).
    async fn read(&self, indices: Range<u64>) -> Result<Vec<(u64, Bytes)>, BoxError> {
        let mut chunks: Vec<(u64, Option<Bytes>)> = indices.map(|index| (index, self.cached(index))).collect();
        let requests: Vec<GetRequest> = chunks
            .iter()
            .filter(|(_, chunk)| chunk.is_none())
            .map(|(index, _)| GetRequest::bulk(self.key(*index)).near(&*self.head_key))
            .collect();
        let mut results = self.cache.inner.store.get_many(&requests).await.into_iter();
        for (index, slot) in &mut chunks {
            if slot.is_some() {
                continue;
            }
            let read = results.next().expect("one result per request");
            let chunk = match read {
                Ok(GetOutcome::Hit(item)) => self.decode(*index, item.value),
                Ok(GetOutcome::Miss { .. }) => None,
                Err(error) => {
                    self.cache.store_error(&error);
                    None
                }
            };
            let Some(chunk) = chunk else {
                tracing::warn!(key = %self.key(*index), "a body chunk went missing mid-response; aborting it");
                return Err(format!("body chunk {index} is no longer stored; the response is aborted").into());
            };
            *slot = Some(chunk);
        }
        Ok(chunks.into_iter().map(|(index, chunk)| (index, chunk.expect("every chunk was read"))).collect())
    }

    /// Decodes a chunk item, checking its checksum and its length against the layout; keeps it when allowed.
    fn decode(&self, index: u64, value: Bytes) -> Option<Bytes> {
        let span = self.layout.span(index);
        match StoredBody::decode_chunk(value) {
            Ok(chunk) if chunk.body.len() as u64 == span.end - span.start => {
                if self.keep {
                    self.cache.keep_body(self.key(index), &chunk.body);
                }
                Some(chunk.body)
            }
            Ok(_) | Err(_) => {
                bump(&self.cache.inner.counters.corrupt_items);
                tracing::warn!(key = %self.key(index), "corrupt body chunk");
                None
            }
        }
    }

    fn cached(&self, index: u64) -> Option<Bytes> {
        let bodies = self.cache.inner.bodies.as_ref().filter(|_| self.keep)?;
        bodies.get(&self.key(index)).map(|body| body.body.clone())
    }

    fn is_cached(&self, index: u64) -> bool {
        self.keep && self.cache.inner.bodies.as_ref().is_some_and(|bodies| bodies.contains_key(&self.key(index)))
    }

    /// Reads the whole body into memory (for callers that need it whole; a response streams instead).
    pub async fn read_whole(&self) -> Option<Bytes> {
        let count = self.layout.count();
        let mut whole = bytes::BytesMut::with_capacity(self.layout.len() as usize);
        let batch = self.batch();
        for from in (0..count).step_by(batch as usize) {
            for (_, chunk) in self.read(from..(from + batch).min(count)).await.ok()? {
                whole.extend_from_slice(&chunk);
            }
        }
        Some(whole.freeze())
    }
}

impl BodySource for ChunkedBody {
    fn len(&self) -> u64 {
        self.layout.len()
    }

    /// Streams the chunks `range` covers without checking them first: prefer [`ChunkedBody::open`] before a
    /// response head goes out. A missing chunk fails the stream.
    fn range(&self, range: Range<u64>) -> Body {
        let needed = self.layout.covering(&range);
        self.stream(range, Vec::new(), needed)
    }
}

/// Whether a chunked body of `len` bytes is kept in the in-process body cache: only within a quarter of its
/// budget, so one large body cannot push out the many small hot ones.
fn keeps_chunks(cache: &Cache, len: u64) -> bool {
    cache.inner.bodies.is_some() && len <= cache.inner.config.body_cache_bytes / 4
}

/// The chunks of a body as a response body of known length.
struct ChunkStream {
    chunks: BoxStream<'static, Result<Bytes, BoxError>>,
    remaining: u64,
}

impl http_body::Body for ChunkStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.chunks.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.remaining = self.remaining.saturating_sub(chunk.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

impl Cache {
    /// Admission and layout of a fill's object, before anything is written: refuses a body above the admission
    /// limit, leaves out codings that would take the object past it (identity still serves every client), and
    /// returns the chunk size the entry records (0: every representation is one item).
    pub(super) fn admit(&self, response: &mut FillResponse) -> Result<u64, CommitError> {
        let body_len = response.body.len();
        if let Some(limit) = self.admission_limit() {
            if body_len > limit {
                return Err(CommitError::NotAdmitted { size: body_len, limit });
            }
            let mut total = body_len;
            response.codings.retain(|(_, encoded)| {
                let fits = total.saturating_add(encoded.len()) <= limit;
                total += if fits { encoded.len() } else { 0 };
                fits
            });
        }
        let item_limit = self.store().max_item_bytes();
        let lens = std::iter::once(body_len).chain(response.codings.iter().map(|(_, encoded)| encoded.len()));
        ChunkLayout::chunk_size_for(lens.map(|len| len as u64), item_limit)
            .ok_or(CommitError::TooLarge { size: body_len + BODY_ITEM_OVERHEAD, limit: item_limit })
    }

    /// Writes one representation's body: one body item when the entry records no chunk size or the body fits one
    /// chunk, else its chunks, a few in parallel. Every item is placed beside the head record (`head_key`).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn write_body(
        &self,
        head_key: &str,
        entry: &Digest,
        fill_id: u64,
        coding: Option<&str>,
        body: &Bytes,
        chunk_size: u64,
        expiry: Expiry,
    ) -> Result<(), StoreError> {
        let ns = &self.inner.config.namespace;
        let near = Placement::Near(head_key);
        let store = self.store();
        let Some(layout) = ChunkLayout::of(body.len() as u64, chunk_size) else {
            let key = ns.body_key(entry, fill_id, coding);
            store.set_placed(&key, near, StoredBody::encode(body), expiry, SetCondition::Always).await?;
            return Ok(());
        };
        stream::iter(layout.split(body).enumerate())
            .map(|(index, chunk)| async move {
                let key = ns.chunk_key(entry, fill_id, coding, index as u64);
                store.set_placed(&key, near, StoredBody::encode_chunk(&chunk), expiry, SetCondition::Always).await?;
                Ok::<(), StoreError>(())
            })
            .buffer_unordered(PARALLEL_WRITES)
            .try_collect::<()>()
            .await
    }

    /// Writes a fill's representations (`None`: identity): those of one item each in one pipelined exchange
    /// (a fill of a small body writes all its codings in one round trip), those in chunks as
    /// [`write_body`](Self::write_body) does.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn write_bodies(
        &self,
        head_key: &str,
        entry: &Digest,
        fill_id: u64,
        bodies: &[(Option<&str>, &Bytes)],
        chunk_size: u64,
        expiry: Expiry,
    ) -> Result<(), StoreError> {
        let ns = &self.inner.config.namespace;
        let mut whole = Vec::with_capacity(bodies.len());
        for &(coding, body) in bodies {
            if ChunkLayout::of(body.len() as u64, chunk_size).is_some() {
                self.write_body(head_key, entry, fill_id, coding, body, chunk_size, expiry).await?;
            } else {
                whole.push((ns.body_key(entry, fill_id, coding), body));
            }
        }
        let items = whole.into_iter().map(|(key, body)| (key, StoredBody::encode(body))).collect();
        self.store().set_all_placed(items, Placement::Near(head_key), expiry).await
    }

    /// Gives one representation's body items the entry's new lifetime (a revalidation). An item already gone is
    /// left to the next hit, which refills it.
    pub(super) async fn touch_body(
        &self,
        head_key: &str,
        entry: &Digest,
        fill_id: u64,
        coding: Option<&str>,
        layout: Option<ChunkLayout>,
        expiry: Expiry,
    ) -> Result<(), StoreError> {
        let ns = &self.inner.config.namespace;
        let near = Placement::Near(head_key);
        let keys: Vec<String> = match layout {
            None => vec![ns.body_key(entry, fill_id, coding)],
            Some(layout) => (0..layout.count()).map(|index| ns.chunk_key(entry, fill_id, coding, index)).collect(),
        };
        let store = self.store();
        stream::iter(keys)
            .map(|key| async move { store.touch_placed(&key, near, expiry).await.map(drop) })
            .buffer_unordered(PARALLEL_WRITES)
            .try_collect::<()>()
            .await
    }
}
