//! HTTP caching conformance: one table per RFC section, written from the RFCs (RFC 9111 caching, RFC 9110
//! semantics, RFC 9213 targeted fields, RFC 5861 stale extensions), each case naming the section it checks. The
//! tables run through the one runner in [`crate::table`]: through the sidecar on a real memcached and, unless a
//! case says why not, through the tower layer too.
//!
//! | module | sections |
//! |---|---|
//! | `storage` | RFC 9111 3, 3.5, 4.4, 5.2.2.3, 5.2.2.5, 5.2.2.7; RFC 9110 9.3.2, 15.1 |
//! | `freshness` | RFC 9111 1.2.2, 4.2, 4.2.1, 4.2.2, 5.2.2.4, 5.3; RFC 9110 5.6.7 |
//! | `age` | RFC 9111 4.2.3, 5.1; RFC 9110 6.6.1 |
//! | `validation` | RFC 9111 4.3.1-4.3.3; RFC 9110 8.8.3, 13.1, 13.2.2, 15.4.5 |
//! | `vary` | RFC 9111 4.1; RFC 9110 12.5.5 |
//! | `ranges` | RFC 9110 13.1.5, 14 |
//! | `targeted` | RFC 9213 |
//! | `interim` | RFC 9110 15.2 (1xx are not relayed: hyperium/hyper#2426; never stored) |
//! | `stale` | RFC 9111 4.2.4, 5.2.2.2, 5.2.2.8, 5.2.2.10; RFC 5861 |
//! | `request_directives` | RFC 9111 5.2.1, 5.4 |

mod age;
mod freshness;
mod interim;
mod ranges;
mod request_directives;
mod stale;
mod storage;
mod targeted;
mod validation;
mod vary;
