//! Test support for the etagd workspace: real `memcached` processes, a server that never answers, and unique
//! names so that tests sharing a server never see each other's keys.
//!
//! Everything here is synchronous `std` code with no dependency on the etagd crates, so any crate (including
//! the client library itself) can use it from its tests. Servers bind 127.0.0.1 only.
//!
//! | item | owns |
//! |---|---|
//! | [`Memcached`] | one `memcached` child process on a free loopback port; stop, restart, raw `stats` |
//! | [`Nginx`] | one `nginx` child process on a free loopback port with a generated config (e.g. a gzip proxy) |
//! | [`SilentServer`] | a TCP listener that accepts and never replies (for timeout tests) |
//! | [`unique_namespace`] | a namespace name unique to this process and call |

mod memcached;
mod nginx;
mod silent;

pub use memcached::Memcached;
pub use nginx::Nginx;
pub use silent::SilentServer;

use std::sync::atomic::{AtomicU64, Ordering};

/// A namespace name unique within this test process and across concurrently running test processes: `t`, the
/// process id, `n`, a per-process counter. It satisfies the key schema's namespace rule
/// (`[A-Za-z0-9_-]{1,32}`): at most 1 + 10 + 1 + 20 = 32 characters.
pub fn unique_namespace() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("t{}n{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_unique_and_valid() {
        let names: Vec<String> = (0..100).map(|_| unique_namespace()).collect();
        let distinct: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), names.len());
        for name in &names {
            assert!(!name.is_empty() && name.len() <= 32, "{name}");
            assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'), "{name}");
        }
    }
}
