//! Fuzzes the decoders of stored items: whatever Memcached hands back must decode or fail, never panic.

#![no_main]

use bytes::Bytes;
use etagd_client::entry::{EntryMeta, HeadRecord, StoredBody};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = HeadRecord::decode(data) {
        assert_eq!(HeadRecord::decode(&record.encode()).ok().as_ref(), Some(&record), "head records round-trip");
    }
    if let Ok(meta) = EntryMeta::decode(data) {
        assert_eq!(EntryMeta::decode(&meta.encode()).ok().as_ref(), Some(&meta), "entries round-trip");
    }
    if let Ok(body) = StoredBody::decode(Bytes::copy_from_slice(data)) {
        let again = StoredBody::decode(StoredBody::encode(&body.body)).ok();
        assert_eq!(again.as_ref(), Some(&body), "bodies round-trip");
    }
    if let Ok(chunk) = StoredBody::decode_chunk(Bytes::copy_from_slice(data)) {
        let again = StoredBody::decode_chunk(StoredBody::encode_chunk(&chunk.body)).ok();
        assert_eq!(again.as_ref(), Some(&chunk), "chunks round-trip");
    }
});
