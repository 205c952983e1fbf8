//! The Memcached store: the [`Store`] verbs over one or more real servers, speaking the meta protocol through
//! our own pipelined client (`protocol`, `pool`, `coalescer`); `memcache::exp` provides the routing hash.
//!
//! This file holds the store itself and its settings; one concern per submodule:
//!
//! | module | owns |
//! |---|---|
//! | `routing` | which server a key (or the key a [`Placement`] names) lives on, down-marking and back-off |
//! | `coalescer` | concurrent callers' commands for one server merged into one pipelined write, one batch in flight |
//! | `protocol` | `mg`/`ms`/`md` on the wire: a batch encoded in one buffer, answers parsed in place |
//! | `pool` | pooled connections to one server: a batch written, its answers read back in order |
//! | `wire` | the verbs as meta-protocol requests, and memcached's answers (lease, stale flags) as outcomes |
//! | `stats` | the raw `stats` command |
//!
//! Design choices:
//! - One connection pool per server rather than one multi-server client: the store must know which server a
//!   key lives on to mark that server down and to report it.
//! - A down server's keys are never remapped onto the others: when it came back, those copies would be stale
//!   (an invalidation sent meanwhile would have gone to the wrong server). Its keys fail fast instead, and the
//!   caller goes to the origin.
//! - Reads of one call are grouped per server, each group sent as one pipelined batch, the groups
//!   concurrently; concurrent calls' groups for one server are coalesced (`coalescer`), and so are small
//!   writes, so that a fill's sets ride in the same write as other requests' reads.

mod coalescer;
mod pool;
mod protocol;
mod routing;
mod stats;
mod wire;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    DeleteMode, Expiry, GetOutcome, GetRequest, Placement, ServerHealth, ServerStats, SetCondition, SetOutcome, Store,
    StoreError,
};
use routing::{Routing, ServerNode};
pub(crate) use wire::check_key;

/// How to reach the Memcached servers and how patient to be with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemcachedConfig {
    /// Server addresses as `host:port`. Keys are spread over them by rendezvous hashing on these strings, so
    /// every process must list the same servers (order does not matter).
    pub servers: Vec<String>,
    /// Limit on dialling one connection (default 50 ms).
    pub connect_timeout: Duration,
    /// Limit on one exchange (one request or one pipelined batch) once connected (default 100 ms).
    pub io_timeout: Duration,
    /// How long a server that failed is skipped before one probe request is let through (default 2 s).
    pub down_backoff: Duration,
    /// An upper bound on the value accepted for one item. Each server's own limit is read from it (`stats
    /// settings`: `item_size_max` less headroom for the key and the item header, which memcached counts too),
    /// at connect and every minute; until it is known, memcached's default (`-I 1m`) is assumed. `None`
    /// (default): the servers' limits alone. A value a server refuses anyway is reported as
    /// [`StoreError::TooLarge`] as well.
    pub max_item_bytes: Option<usize>,
    /// Idle connections kept per server (default 16).
    pub max_idle: usize,
    /// Limit on one read of large values (the chunks of a body larger than one item; default 2 s). Such a read
    /// moves megabytes and queues behind other clients' at the server, so it gets its own connections and a
    /// longer limit, and its timing out fails only the response it was for: it does not mark the server down
    /// (the small reads every request makes decide that).
    pub bulk_timeout: Duration,
    /// Coalesce the reads and small writes of concurrent callers into one pipelined write per server (default
    /// on). Off, each call's commands go out on their own; kept as a switch so the gain can be measured side by
    /// side.
    pub batch: bool,
}

impl Default for MemcachedConfig {
    fn default() -> Self {
        Self {
            servers: vec!["127.0.0.1:11211".to_owned()],
            connect_timeout: Duration::from_millis(50),
            io_timeout: Duration::from_millis(100),
            down_backoff: Duration::from_secs(2),
            max_item_bytes: None,
            max_idle: 16,
            bulk_timeout: Duration::from_secs(2),
            batch: true,
        }
    }
}

/// The [`Store`] over real Memcached servers. Cheap to share behind an `Arc`; every clone of the underlying
/// clients shares their connection pools.
pub struct MemcachedStore {
    nodes: Vec<ServerNode>,
    /// Which node (by position) owns a key.
    routing: Routing,
}

impl std::fmt::Debug for MemcachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedStore").field("servers", &self.routing.ids()).finish_non_exhaustive()
    }
}

impl MemcachedStore {
    /// Resolves every server address and prepares its connection pool. Connections are dialled lazily, so a
    /// server that is down right now does not fail this call; it surfaces at the first operation on its keys.
    ///
    /// # Errors
    ///
    /// [`StoreError::Server`] naming the server when an address does not resolve, is listed twice, or when
    /// no server is configured.
    pub async fn connect(config: MemcachedConfig) -> Result<MemcachedStore, StoreError> {
        if config.servers.is_empty() {
            return Err(StoreError::Server {
                server: "(none)".to_owned(),
                detail: "no memcached servers configured; list at least one host:port".to_owned(),
            });
        }
        let mut nodes = Vec::with_capacity(config.servers.len());
        for (position, addr) in config.servers.iter().enumerate() {
            if config.servers[..position].contains(addr) {
                return Err(StoreError::Server {
                    server: addr.clone(),
                    detail: "listed twice; list each server once".to_owned(),
                });
            }
            let unresolved = |detail: String| StoreError::Server {
                server: addr.clone(),
                detail: format!("cannot resolve the address ({detail}); write it as host:port"),
            };
            match tokio::net::lookup_host(addr.as_str()).await.map(|mut found| found.next()) {
                Ok(Some(_)) => {}
                Ok(None) => return Err(unresolved("no address found".to_owned())),
                Err(error) => return Err(unresolved(error.to_string())),
            }
            nodes.push(ServerNode::new(addr.clone(), &config));
        }
        // Each server's item limit, read in parallel; a server that does not answer now is asked again later.
        futures_util::future::join_all(nodes.iter().map(ServerNode::learn_item_limit)).await;
        Ok(MemcachedStore { nodes, routing: Routing::new(config.servers.clone()) })
    }

    /// The configured server addresses, in configuration order.
    pub fn servers(&self) -> &[String] {
        self.routing.ids()
    }

    fn node_for(&self, key: &str) -> &ServerNode {
        &self.nodes[self.routing.server(key)]
    }

    /// The position of the server an item placed so lives on.
    fn index_of(&self, key: &str, placement: Placement<'_>) -> usize {
        match placement.server_index() {
            Some(index) => index % self.nodes.len(),
            None => self.routing.server(placement.route_key(key)),
        }
    }
}

#[async_trait]
impl Store for MemcachedStore {
    async fn get_many(&self, requests: &[GetRequest]) -> Vec<Result<GetOutcome, StoreError>> {
        if let [node] = self.nodes.as_slice() {
            // One server: no routing and no fan-out to assemble.
            let batch: Vec<&GetRequest> = requests.iter().collect();
            return node.get_batch(&batch).await;
        }
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        for (index, request) in requests.iter().enumerate() {
            groups[self.index_of(&request.key, request.placement())].push(index);
        }
        let exchanges = groups.iter().enumerate().filter(|(_, indices)| !indices.is_empty()).map(|(node, indices)| {
            let batch: Vec<&GetRequest> = indices.iter().map(|&index| &requests[index]).collect();
            async move { (indices, self.nodes[node].get_batch(&batch).await) }
        });
        let mut outputs: Vec<Option<Result<GetOutcome, StoreError>>> = requests.iter().map(|_| None).collect();
        for (indices, results) in futures_util::future::join_all(exchanges).await {
            for (&index, result) in indices.iter().zip(results) {
                outputs[index] = Some(result);
            }
        }
        outputs.into_iter().map(|output| output.expect("every request belongs to exactly one server group")).collect()
    }

    async fn set_placed(
        &self,
        key: &str,
        placement: Placement<'_>,
        value: Bytes,
        expiry: Expiry,
        condition: SetCondition,
    ) -> Result<SetOutcome, StoreError> {
        let node = &self.nodes[self.index_of(key, placement)];
        let limit = node.item_limit();
        super::check_size(key, &value, limit)?;
        node.set(key, &value, expiry, condition, limit).await
    }

    async fn set_all_placed(
        &self,
        items: Vec<(String, Bytes)>,
        placement: Placement<'_>,
        expiry: Expiry,
    ) -> Result<(), StoreError> {
        let Some((first, _)) = items.first() else { return Ok(()) };
        let index = self.index_of(first, placement);
        if items.iter().any(|(key, _)| self.index_of(key, placement) != index) {
            // Not one server's items: one at a time, each to its own.
            return super::set_each(self, items, placement, expiry).await;
        }
        let node = &self.nodes[index];
        let limit = node.item_limit();
        // An item too large is refused without being sent; the others are still written.
        let mut refused = None;
        let fitting: Vec<(String, Bytes)> = items
            .into_iter()
            .filter(|(key, value)| match super::check_size(key, value, limit) {
                Ok(()) => true,
                Err(error) => {
                    refused.get_or_insert(error);
                    false
                }
            })
            .collect();
        let written = node.set_all(&fitting, expiry, limit).await;
        refused.map_or(written, Err)
    }

    async fn delete_placed(&self, key: &str, placement: Placement<'_>, mode: DeleteMode) -> Result<bool, StoreError> {
        self.nodes[self.index_of(key, placement)].delete(key, mode).await
    }

    async fn touch_placed(
        &self,
        key: &str,
        placement: Placement<'_>,
        expiry: Expiry,
    ) -> Result<Option<u64>, StoreError> {
        self.node_for(placement.route_key(key)).touch(key, expiry).await
    }

    async fn stats(&self) -> Vec<ServerStats> {
        futures_util::future::join_all(self.nodes.iter().map(ServerNode::stats)).await
    }

    fn health(&self) -> Vec<ServerHealth> {
        self.nodes.iter().map(ServerNode::health).collect()
    }

    fn server_of(&self, key: &str) -> String {
        self.node_for(key).addr.clone()
    }

    fn server_count(&self) -> usize {
        self.nodes.len()
    }

    fn server_name(&self, index: usize) -> String {
        self.nodes[index % self.nodes.len()].addr.clone()
    }

    /// The smallest of the servers' limits (each read from the server), so that a value of this size fits
    /// wherever its key lives.
    fn max_item_bytes(&self) -> usize {
        self.nodes.iter().map(ServerNode::item_limit).min().unwrap_or(0)
    }

    /// The smallest server's memory, once every server's is known: a partial answer could overstate it.
    fn memory_bytes(&self) -> Option<u64> {
        self.nodes.iter().map(ServerNode::memory_limit).collect::<Option<Vec<u64>>>()?.into_iter().min()
    }

    fn is_remote(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_matches_the_documented_limits() {
        let config = MemcachedConfig::default();
        assert_eq!(config.connect_timeout, Duration::from_millis(50));
        assert_eq!(config.io_timeout, Duration::from_millis(100));
        assert_eq!(config.down_backoff, Duration::from_secs(2));
        assert_eq!(config.max_item_bytes, None, "each server's own limit");
    }

    #[tokio::test]
    async fn unresolvable_servers_are_named() {
        let config = MemcachedConfig { servers: vec!["no-such-host.invalid:11211".to_owned()], ..Default::default() };
        match MemcachedStore::connect(config).await {
            Err(StoreError::Server { server, .. }) => {
                assert_eq!(server, "no-such-host.invalid:11211")
            }
            other => panic!("expected a resolution error, got {other:?}"),
        }
        let duplicated =
            MemcachedConfig { servers: vec!["127.0.0.1:1".into(), "127.0.0.1:1".into()], ..Default::default() };
        assert!(matches!(MemcachedStore::connect(duplicated).await, Err(StoreError::Server { .. })));
        let none = MemcachedConfig { servers: Vec::new(), ..Default::default() };
        assert!(matches!(MemcachedStore::connect(none).await, Err(StoreError::Server { .. })));
    }

    #[tokio::test]
    async fn a_down_server_does_not_fail_connect() {
        // Port 1 on loopback refuses connections; connecting must still succeed (dialling is lazy).
        let config = MemcachedConfig { servers: vec!["127.0.0.1:1".to_owned()], ..Default::default() };
        let store = MemcachedStore::connect(config).await.expect("connect does not dial");
        assert_eq!(store.servers(), ["127.0.0.1:1".to_owned()]);
        assert!(store.health()[0].up);
    }

    #[tokio::test]
    async fn a_slow_bulk_read_fails_alone_and_leaves_the_server_up() {
        use crate::store::{GetRequest, Store};
        // A server that accepts connections and never answers: every read times out.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let _held = std::thread::spawn(move || {
            let connections: Vec<_> = listener.incoming().take(8).collect();
            std::thread::sleep(Duration::from_secs(5));
            drop(connections);
        });
        let config = MemcachedConfig {
            servers: vec![addr],
            io_timeout: Duration::from_millis(50),
            bulk_timeout: Duration::from_millis(80),
            ..Default::default()
        };
        let store = MemcachedStore::connect(config).await.unwrap();
        let results = store.get_many(&[GetRequest::bulk("etagd2:default:c:x:0")]).await;
        assert!(matches!(results[0], Err(StoreError::Timeout { timeout, .. }) if timeout == Duration::from_millis(80)));
        assert!(store.health()[0].up, "a bulk read running long does not mark the server down");
        let results = store.get_many(&[GetRequest::plain("etagd2:default:u:x")]).await;
        assert!(matches!(results[0], Err(StoreError::Timeout { .. })));
        assert!(!store.health()[0].up, "the small reads every request makes still do");
    }
}
