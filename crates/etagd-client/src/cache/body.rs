//! Body reads: a hit's body item, read from the store on demand and, with a remote store, kept in process by
//! its immutable name (a fill id never names two bodies), so a hot body crosses the network once. A body
//! stored in chunks is read by [`ChunkedBody`] instead (`chunks`).

use std::sync::Arc;

use bytes::Bytes;

use super::chunks::ChunkedBody;
use super::{Cache, CacheConfig, Hit, bump};
use crate::entry::StoredBody;
use crate::store::{GetOutcome, GetRequest, Store, StoreError};

/// The in-process body cache, bounded by bytes; only for a remote store (the embedded one already is memory).
/// A body enters it when it is read, never when it is written: a fill's bodies are often never asked for again
/// (a distinct URL per request, a cold start), and writing every one in would cost each miss four inserts and
/// push the hot bodies out.
pub(super) type BodyCache = moka::sync::Cache<String, Arc<StoredBody>>;

/// Builds the body cache a store and settings call for (`None`: off).
pub(super) fn body_cache(store: &dyn Store, config: &CacheConfig) -> Option<BodyCache> {
    (store.is_remote() && config.body_cache_bytes > 0).then(|| {
        moka::sync::Cache::builder()
            .max_capacity(config.body_cache_bytes)
            .weigher(|key: &String, body: &Arc<StoredBody>| {
                u32::try_from(key.len() + body.body.len()).unwrap_or(u32::MAX)
            })
            .build()
    })
}

impl Hit {
    /// The name of this entry's body item for a content coding (`None`: identity).
    pub fn body_key(&self, cache: &Cache, coding: Option<&str>) -> String {
        cache.inner.config.namespace.body_key(&self.slot.entry_digest, self.meta.fill_id, coding)
    }

    /// The name of chunk `index` of this entry's body for a content coding, when that body is stored in chunks
    /// ([`crate::entry::EntryMeta::chunk_layout`]).
    pub fn chunk_key(&self, cache: &Cache, coding: Option<&str>, index: u64) -> String {
        cache.inner.config.namespace.chunk_key(&self.slot.entry_digest, self.meta.fill_id, coding, index)
    }

    /// The head record's key, which an entry's body items are placed beside ([`crate::store::Placement::Near`]).
    pub fn head_key(&self) -> &str {
        &self.slot.head_key
    }
}

/// How a hit's representation is stored, ready to serve.
#[derive(Debug, Clone)]
pub enum StoredRepresentation {
    /// One body item, read into memory (or found there).
    Whole(Arc<StoredBody>),
    /// Chunks, not read yet: [`ChunkedBody::open`] checks and streams the range an answer needs.
    Chunked(ChunkedBody),
}

impl Cache {
    /// A hit's representation (identity, or one content coding): a body stored as one item is read as
    /// [`Cache::body`] reads it (the path of every small body, unchanged); a chunked one costs no I/O here.
    /// `None` when the body item was evicted or is corrupt, or the coding is not stored: treat the hit as a
    /// miss.
    pub async fn representation(
        &self,
        hit: &Hit,
        coding: Option<&str>,
    ) -> Result<Option<StoredRepresentation>, StoreError> {
        match hit.meta.chunk_layout(coding) {
            Some(layout) => Ok(Some(StoredRepresentation::Chunked(ChunkedBody::new(
                self,
                &hit.slot.head_key,
                hit.slot.entry_digest,
                hit.meta.fill_id,
                coding,
                layout,
            )))),
            None => Ok(self.body(hit, coding).await?.map(StoredRepresentation::Whole)),
        }
    }

    /// Reads a hit's whole body into memory, chunked or not (for callers that need it whole: tools and tests;
    /// the exchange streams a chunked body instead). `None` when any item of it is gone or corrupt.
    pub async fn whole_body(&self, hit: &Hit, coding: Option<&str>) -> Result<Option<Bytes>, StoreError> {
        match self.representation(hit, coding).await? {
            Some(StoredRepresentation::Whole(body)) => Ok(Some(body.body.clone())),
            Some(StoredRepresentation::Chunked(chunked)) => Ok(chunked.read_whole().await),
            None => Ok(None),
        }
    }

    /// Reads a hit's body stored as one item (identity, or one content coding): from process memory when a
    /// remote store's body was read before, else from the store. `None` when it was evicted or is corrupt (or
    /// is stored in chunks: see [`Cache::representation`]): treat the hit as a miss.
    pub async fn body(&self, hit: &Hit, coding: Option<&str>) -> Result<Option<Arc<StoredBody>>, StoreError> {
        let key = hit.body_key(self, coding);
        if let Some(bodies) = &self.inner.bodies {
            if let Some(body) = bodies.get(&key) {
                bump(&self.inner.counters.body_cache_hits);
                return Ok(Some(body));
            }
        }
        bump(&self.inner.counters.body_store_reads);
        let outcome = self
            .inner
            .store
            .get_many(&[GetRequest::plain(key.clone()).near(hit.slot.head_key.clone())])
            .await
            .pop()
            .expect("one result");
        let item = match outcome {
            Ok(GetOutcome::Hit(item)) => item,
            Ok(GetOutcome::Miss { .. }) => return Ok(None),
            Err(error) => {
                self.store_error(&error);
                return Err(error);
            }
        };
        match StoredBody::decode(item.value) {
            Ok(body) => {
                let body = Arc::new(body);
                if let Some(bodies) = &self.inner.bodies {
                    bodies.insert(key, body.clone());
                }
                Ok(Some(body))
            }
            Err(error) => {
                bump(&self.inner.counters.corrupt_items);
                tracing::warn!(%error, %key, "corrupt body item");
                Ok(None)
            }
        }
    }

    /// Keeps a body this process just stored in the in-process body cache (remote stores only).
    pub(crate) fn keep_body(&self, key: String, body: &Bytes) {
        if let Some(bodies) = &self.inner.bodies {
            bodies.insert(key, Arc::new(StoredBody { body: body.clone() }));
        }
    }
}
