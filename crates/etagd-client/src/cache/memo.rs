//! Decoded entries, memoised by their stored bytes.
//!
//! Every lookup still reads the entry from the store (that read is what proves it current); this only skips
//! decoding the same bytes again. A slot is reused only when the bytes just read equal the bytes it was decoded
//! from, so a changed entry can never be answered from here. Direct-mapped and fixed-size: bounded memory and no
//! eviction bookkeeping on the hot path.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use xxhash_rust::xxh3::xxh3_64;

use crate::entry::{EntryError, EntryMeta};

const SLOTS: usize = 4096;

/// The bytes an entry was decoded from, and the entry.
type Slot = Option<(Bytes, Arc<EntryMeta>)>;

/// A fixed-size memo of decoded [`EntryMeta`]s.
#[derive(Debug)]
pub(crate) struct Memo {
    slots: Box<[Mutex<Slot>]>,
}

impl Default for Memo {
    fn default() -> Self {
        Self { slots: (0..SLOTS).map(|_| Mutex::new(None)).collect() }
    }
}

impl Memo {
    /// Decodes stored entry bytes, or returns the entry decoded from the same bytes before.
    pub(crate) fn entry(&self, bytes: &Bytes) -> Result<Arc<EntryMeta>, EntryError> {
        let slot = &self.slots[(xxh3_64(bytes) as usize) % SLOTS];
        if let Some((raw, meta)) = &*slot.lock() {
            if raw == bytes {
                return Ok(meta.clone());
            }
        }
        let meta = Arc::new(EntryMeta::decode(bytes)?);
        *slot.lock() = Some((bytes.clone(), meta.clone()));
        Ok(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_same_entry_changed_bytes_decoded_again() {
        let memo = Memo::default();
        let mut meta = crate::entry::tests::sample_meta();
        let first = meta.encode();
        let a = memo.entry(&first).unwrap();
        let b = memo.entry(&Bytes::copy_from_slice(&first)).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        meta.etag = "\"other\"".into();
        let changed = memo.entry(&meta.encode()).unwrap();
        assert_eq!(changed.etag, "\"other\"");
        assert!(memo.entry(&Bytes::from_static(b"E1Egarbage")).is_err());
    }
}
