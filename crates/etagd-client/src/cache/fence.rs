//! Fences: how an invalidation that missed a server is never undone when that server answers again.
//!
//! When a write of an invalidation (a counter copy or a head delete) fails on server S, the writer puts a fence
//! record for S (`f:<xxh3 of S's address>`, a random token) on every other server. Every engine over a remote
//! store of two or more servers polls the fences every [`CacheConfig::fence_poll`](super::CacheConfig) in the
//! background and treats a fenced server as down ([`StoreError::Fenced`]) until it is repaired. Repair: a
//! replica that sees a fence for S and reaches S bumps S's copy of the namespace counter (hard: only S's share
//! misses once), then deletes each fence it read by CAS, so a fence written meanwhile survives.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use futures_util::future::join_all;
use parking_lot::RwLock;

use super::{Cache, Inner};
use crate::generation::random_value;
use crate::store::{DeleteMode, Expiry, GetOutcome, GetRequest, Placement, SetCondition, StoreError};

/// The servers this process treats as fenced, by address.
#[derive(Debug, Default)]
pub(super) struct Fences {
    servers: RwLock<HashSet<String>>,
}

impl Fences {
    fn insert(&self, server: &str) {
        self.servers.write().insert(server.to_owned());
    }

    fn remove(&self, server: &str) {
        self.servers.write().remove(server);
    }

    fn is_empty(&self) -> bool {
        self.servers.read().is_empty()
    }

    fn contains(&self, server: &str) -> bool {
        self.servers.read().contains(server)
    }
}

impl Cache {
    /// Starts the fence poller when the store has two or more remote servers and a tokio runtime is running.
    pub(super) fn spawn_fence_poller(&self) {
        let store = self.store();
        if !store.is_remote() || store.server_count() < 2 {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no tokio runtime: fences of servers that missed an invalidation are not polled");
            return;
        };
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let period = self.config().fence_poll;
        runtime.spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                Cache { inner }.poll_fences().await;
                tokio::time::sleep(period).await;
            }
        });
    }

    /// The error a lookup of a head on a fenced server returns, if its server is fenced.
    pub(super) fn fenced(&self, head_key: &str) -> Option<StoreError> {
        if self.inner.fences.is_empty() {
            return None;
        }
        let server = self.store().server_of(head_key);
        self.inner.fences.contains(&server).then_some(StoreError::Fenced { server })
    }

    /// Writes a fence for the server at `index` on every other server; returns whether at least one landed
    /// (then every replica treats that server as down within one poll, and this one at once).
    pub(super) async fn write_fence(&self, index: usize) -> bool {
        let store = self.store();
        let name = store.server_name(index);
        let key = self.config().namespace.fence_key(&name);
        let token = Bytes::from(format!("{:016x}", random_value()));
        let writes =
            (0..store.server_count()).filter(|&other| other != index).map(|other| {
                let (key, token) = (key.clone(), token.clone());
                async move {
                    store.set_placed(&key, Placement::Server(other), token, Expiry::Never, SetCondition::Always).await
                }
            });
        let landed = join_all(writes).await.iter().any(Result::is_ok);
        if landed {
            self.inner.fences.insert(&name);
            tracing::warn!(server = %name, "an invalidation missed a memcached server: fenced until repaired");
        }
        landed
    }

    /// One round: reads every server's fences from the other servers, updates the fenced set, and repairs the
    /// fenced servers it can reach.
    pub(crate) async fn poll_fences(&self) {
        let store = self.store();
        let count = store.server_count();
        let ns = &self.config().namespace;
        let mut requests = Vec::new();
        let mut owners = Vec::new();
        for fenced in 0..count {
            let key = ns.fence_key(&store.server_name(fenced));
            for holder in (0..count).filter(|&holder| holder != fenced) {
                requests.push(GetRequest::plain(key.clone()).on_server(holder));
                owners.push((fenced, holder));
            }
        }
        let results = store.get_many(&requests).await;
        let mut found: HashMap<usize, Vec<(usize, u64)>> = HashMap::new();
        let mut answered: HashSet<usize> = HashSet::new();
        for ((fenced, holder), result) in owners.into_iter().zip(results) {
            match result {
                Ok(GetOutcome::Hit(item)) => found.entry(fenced).or_default().push((holder, item.cas)),
                Ok(GetOutcome::Miss { .. }) => {
                    answered.insert(fenced);
                }
                Err(_) => {}
            }
        }
        for fenced in 0..count {
            let name = store.server_name(fenced);
            let Some(holders) = found.get(&fenced) else {
                // Unfenced only when some other server answered that it holds no fence.
                if answered.contains(&fenced) {
                    self.inner.fences.remove(&name);
                }
                continue;
            };
            self.inner.fences.insert(&name);
            if self.repair(fenced, holders).await {
                self.inner.fences.remove(&name);
            }
        }
    }

    /// Bumps the fenced server's namespace copy (hard), then deletes the fences read, each by its CAS.
    async fn repair(&self, fenced: usize, holders: &[(usize, u64)]) -> bool {
        let key = self.config().namespace.all_generation_key();
        if self.bump_generation(&key, fenced, None).await.is_err() {
            return false;
        }
        let store = self.store();
        let fence = self.config().namespace.fence_key(&store.server_name(fenced));
        let mut cleared = true;
        for &(holder, cas) in holders {
            let deleted = store.delete_placed(&fence, Placement::Server(holder), DeleteMode::IfCas { cas }).await;
            // Not deleted: a newer fence was written meanwhile (or the holder failed); the next poll sees it.
            cleared &= matches!(deleted, Ok(true));
        }
        tracing::info!(server = %store.server_name(fenced), cleared, "repaired a fenced memcached server");
        cleared
    }
}
