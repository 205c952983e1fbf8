//! etagd-client: a shared HTTP cache whose bodies and validators live in Memcached.
//!
//! `ARCHITECTURE.md` at the repository root has the map. One concern per module:
//!
//! | module | owns |
//! |---|---|
//! | [`key`] | the key schema: the only place a Memcached key is built |
//! | [`entry`] | the stored entry format (head record, variant entry, body item) |
//! | [`cache_control`] | `Cache-Control` directive parsing |
//! | [`cacheability`] | may a response be stored, and for how long (RFC 9111) |
//! | [`etag`] | entity tags: parse, mint, compare |
//! | [`encoding`] | content codings: `Accept-Encoding` negotiation and compression once per fill |
//! | [`conditional`] | `If-None-Match` / `If-Modified-Since` evaluation (RFC 9110 section 13) |
//! | [`headers`] | hop-by-hop headers and the headers a 304 repeats |
//! | [`generation`] | generation counters behind invalidation by URL, tag and namespace |
//! | [`store`] | the `Store` trait, the Memcached store and the embedded store |
//! | [`cache`] | the engine: lookup, fill, invalidate, over any store |
//! | [`reply`] | how a stored entry or an origin answer becomes an HTTP response and a fill (`Cache-Status`, 304, 200) |
//! | [`body`] | the one body type, reading an upstream body up to a limit, and stored bodies served by range |
//! | [`exchange`] | the whole request exchange (lookup, serve, revalidate, fill, pass, triggers) against an upstream |
//! | [`layer`] | a tower layer giving a Rust service the same exchange in process |

pub mod body;
pub mod cache;
pub mod cache_control;
pub mod cacheability;
pub mod conditional;
pub mod date;
pub mod encoding;
pub mod entry;
pub mod etag;
pub mod exchange;
pub mod generation;
pub mod headers;
pub mod key;
pub mod layer;
pub mod reply;
pub mod store;
