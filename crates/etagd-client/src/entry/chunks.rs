//! The chunk layout: how a body too large for one item is cut into fixed-size chunks, and which chunks a byte
//! range needs. Pure arithmetic over the lengths an entry records, so every replica names the same chunks.

use std::ops::Range;

use bytes::Bytes;

use super::BODY_ITEM_OVERHEAD;

/// Chunk sizes are whole multiples of this (when the item limit allows at least one), so that a server limit
/// a few bytes different gives the same layout, and chunk boundaries fall on page multiples.
const CHUNK_ALIGN: u64 = 4096;

/// The chunks of one representation's body: chunk `i` holds bytes `i * chunk_size .. min((i + 1) * chunk_size,
/// len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLayout {
    len: u64,
    chunk_size: u64,
}

impl ChunkLayout {
    /// The layout of a body of `len` bytes under an entry's `chunk_size`, or `None` when the body is one item
    /// (no chunk size recorded, or the body fits one chunk).
    pub fn of(len: u64, chunk_size: u64) -> Option<Self> {
        (chunk_size > 0 && len > chunk_size).then_some(Self { len, chunk_size })
    }

    /// The chunk size a fill records for representations of these lengths under a store item limit
    /// ([`crate::store::Store::max_item_bytes`], the smallest server's, since the chunks live on whichever
    /// server holds the head record): 0 when every one fits one body item (small bodies stay exactly as they
    /// were), else the largest aligned size whose chunk item fits, so a body takes as few items (and reads) as
    /// the servers allow. `None` when the limit cannot hold even a chunk's header.
    pub fn chunk_size_for(lens: impl IntoIterator<Item = u64>, item_limit: usize) -> Option<u64> {
        let room = (item_limit as u64).checked_sub(BODY_ITEM_OVERHEAD as u64).filter(|room| *room > 0)?;
        if lens.into_iter().all(|len| len <= room) {
            return Some(0);
        }
        let aligned = room / CHUNK_ALIGN * CHUNK_ALIGN;
        Some(if aligned > 0 { aligned } else { room })
    }

    /// The body's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the body is empty (never, for a chunked one).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes per chunk (the last may be shorter).
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// How many chunks the body has.
    pub fn count(&self) -> u64 {
        self.len.div_ceil(self.chunk_size)
    }

    /// The bytes chunk `index` holds.
    pub fn span(&self, index: u64) -> Range<u64> {
        let start = index.saturating_mul(self.chunk_size).min(self.len);
        start..start.saturating_add(self.chunk_size).min(self.len)
    }

    /// The chunks that hold any byte of `range` (clamped to the body); empty for an empty range.
    pub fn covering(&self, range: &Range<u64>) -> Range<u64> {
        let end = range.end.min(self.len);
        let start = range.start.min(end);
        if start == end {
            return 0..0;
        }
        start / self.chunk_size..end.div_ceil(self.chunk_size)
    }

    /// The body cut into its chunks, sharing its allocation.
    pub fn split<'a>(&self, body: &'a Bytes) -> impl Iterator<Item = Bytes> + 'a {
        let layout = *self;
        (0..self.count()).map(move |index| {
            let span = layout.span(index);
            body.slice(span.start as usize..span.end as usize)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodies_over_one_chunk_are_chunked() {
        assert_eq!(ChunkLayout::of(10, 0), None, "no chunk size recorded: one item");
        assert_eq!(ChunkLayout::of(10, 10), None, "fits one chunk: one item");
        let layout = ChunkLayout::of(25, 10).unwrap();
        assert_eq!(layout.count(), 3);
        assert_eq!([layout.span(0), layout.span(1), layout.span(2)], [0..10, 10..20, 20..25]);
        assert_eq!(layout.span(3), 25..25, "past the end: empty");
    }

    #[test]
    fn the_chunk_size_follows_the_smallest_item_limit() {
        let mib = 1024 * 1024;
        // memcached -I 1m, less the store's 512 bytes of headroom: the largest 4 KiB multiple that fits.
        let limit = mib - 512;
        assert_eq!(ChunkLayout::chunk_size_for([100, 2_000], limit), Some(0), "small bodies stay one item");
        let fits = (limit - BODY_ITEM_OVERHEAD) as u64;
        assert_eq!(ChunkLayout::chunk_size_for([fits], limit), Some(0), "exactly one item's worth");
        assert_eq!(ChunkLayout::chunk_size_for([fits + 1], limit), Some(255 * 4096));
        assert_eq!(ChunkLayout::chunk_size_for([5, 64 << 20], 2 * mib), Some(2 * mib as u64 - 4096));
        assert_eq!(ChunkLayout::chunk_size_for([5_000], 1_000), Some((1_000 - BODY_ITEM_OVERHEAD) as u64));
        assert_eq!(ChunkLayout::chunk_size_for([100], BODY_ITEM_OVERHEAD), None, "no room at all");
    }

    #[test]
    fn ranges_map_to_the_chunks_they_cover() {
        let layout = ChunkLayout::of(100, 10).unwrap();
        let cases = [
            (0..100, 0..10),
            (0..1, 0..1),
            (9..10, 0..1),
            (9..11, 0..2),
            (10..20, 1..2),
            (55..56, 5..6),
            (95..200, 9..10),
            (100..120, 0..0),
            (40..40, 0..0),
        ];
        for (range, chunks) in cases {
            assert_eq!(layout.covering(&range), chunks, "{range:?}");
        }
    }

    #[test]
    fn splitting_and_joining_gives_the_body_back() {
        let body: Bytes = (0..=255u8).cycle().take(10_001).collect::<Vec<u8>>().into();
        let layout = ChunkLayout::of(body.len() as u64, 1_000).unwrap();
        let chunks: Vec<Bytes> = layout.split(&body).collect();
        assert_eq!(chunks.len(), 11);
        assert!(chunks[..10].iter().all(|chunk| chunk.len() == 1_000));
        assert_eq!(chunks.concat(), body);
    }
}
