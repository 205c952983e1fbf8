//! The Memcached store: the [`Store`] verbs over one or more real servers, speaking the meta protocol through
//! `memcache::exp::AsyncMetaClient`.
//!
//! This module owns routing (rendezvous hashing over the configured addresses, so every process puts a key on
//! the same server), per-server failure tracking (a server that fails is skipped for a back-off, then probed
//! once), the mapping between memcached's lease/stale flags and [`GetOutcome`], and the raw `stats` command.
//!
//! Design choices:
//! - One `AsyncMetaClient` per server rather than one multi-server client: the store must know which server a
//!   key lives on to mark that server down and to report it, and the crate's own router is not observable.
//! - A down server's keys are never remapped onto the others: when it came back, those copies would be stale
//!   (an invalidation sent meanwhile would have gone to the wrong server). Its keys fail fast instead, and the
//!   caller goes to the origin.
//! - Reads of one call are grouped per server, each group sent as one pipelined batch (`run_many`), the
//!   groups concurrently. `ServerNode` holds everything one server needs, so a layer that coalesces
//!   concurrent reads into one write per server can live beside it later.
//! - memcached hands the refresh token of a soft-deleted item to whichever reader comes first, plain or not
//!   (1.6 `mg`: a stale item without a sent token answers `W` to any read). The store's contract gives it to
//!   the first *leased* reader, so a plain read that receives `W` hands it straight back by re-invalidating
//!   the item under its CAS (`md <key> C<cas> I T<remaining>`), as `memcache::exp`'s own high-level reads do.
//!   A leased read racing that give-back sees `Busy` once; the next one wins.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use memcache::exp::{
    AsyncMetaClient, Delete, Get, GetResult, GetStatus, LeaseState, MAX_KEY_LENGTH, Meta, MutationStatus, Rendezvous,
    Router, Set, Ttl, ValueState,
};
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{
    DeleteMode, Expiry, GetOutcome, GetRequest, Item, Lease, ServerHealth, ServerStats, SetCondition, SetOutcome,
    Store, StoreError,
};

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
    /// The largest value accepted for one item (default 1 MiB, memcached's default `-I`). memcached's own
    /// limit counts the key and about 50 bytes of header too; a value it refuses is reported as
    /// [`StoreError::TooLarge`] as well.
    pub max_item_bytes: usize,
    /// Idle connections kept per server (default 16).
    pub max_idle: usize,
    /// Coalesce the reads of concurrent callers into one pipelined write per server (default on). Off, each
    /// call's reads go out on their own; kept as a switch so the gain can be measured side by side.
    pub batch: bool,
}

impl Default for MemcachedConfig {
    fn default() -> Self {
        Self {
            servers: vec!["127.0.0.1:11211".to_owned()],
            connect_timeout: Duration::from_millis(50),
            io_timeout: Duration::from_millis(100),
            down_backoff: Duration::from_secs(2),
            max_item_bytes: 1024 * 1024,
            max_idle: 16,
            batch: true,
        }
    }
}

/// The [`Store`] over real Memcached servers. Cheap to share behind an `Arc`; every clone of the underlying
/// clients shares their connection pools.
pub struct MemcachedStore {
    nodes: Vec<ServerNode>,
    /// The configured addresses, in configuration order: the identities the router hashes.
    ids: Vec<String>,
    router: Rendezvous,
    max_item_bytes: usize,
}

impl std::fmt::Debug for MemcachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedStore").field("servers", &self.ids).finish_non_exhaustive()
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
            let client = AsyncMetaClient::builder()
                .connect_timeout(Some(config.connect_timeout))
                .io_timeout(Some(config.io_timeout))
                .max_idle(config.max_idle)
                .connect_async(addr.as_str())
                .await
                .map_err(|error| StoreError::Server {
                    server: addr.clone(),
                    detail: format!("cannot resolve the address ({error}); write it as host:port"),
                })?;
            nodes.push(ServerNode::new(addr.clone(), client, &config));
        }
        Ok(MemcachedStore {
            nodes,
            ids: config.servers.clone(),
            router: Rendezvous::new(),
            max_item_bytes: config.max_item_bytes,
        })
    }

    /// The configured server addresses, in configuration order.
    pub fn servers(&self) -> &[String] {
        &self.ids
    }

    fn node_for(&self, key: &str) -> &ServerNode {
        &self.nodes[self.router.route(key.as_bytes(), &self.ids)]
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
            groups[self.router.route(request.key.as_bytes(), &self.ids)].push(index);
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

    async fn set(
        &self,
        key: &str,
        value: Bytes,
        expiry: Expiry,
        condition: SetCondition,
    ) -> Result<SetOutcome, StoreError> {
        super::check_size(key, &value, self.max_item_bytes)?;
        self.node_for(key).set(key, &value, expiry, condition, self.max_item_bytes).await
    }

    async fn delete(&self, key: &str, mode: DeleteMode) -> Result<bool, StoreError> {
        self.node_for(key).delete(key, mode).await
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

    fn max_item_bytes(&self) -> usize {
        self.max_item_bytes
    }

    fn is_remote(&self) -> bool {
        true
    }
}

/// Whether `key` is a key memcached accepts as is: 1 to 250 printable ASCII bytes, no spaces. Keys built by
/// the key schema always are; anything else is a bug, reported per key instead of failing a whole batch.
/// The embedded store applies the same rule so that both stores fail the same way.
pub(crate) fn check_key(key: &str) -> Result<(), String> {
    if !key.is_empty() && key.len() <= MAX_KEY_LENGTH && key.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(format!(
            "key {key:?} is not a valid memcached key (1-{MAX_KEY_LENGTH} printable ASCII bytes); \
             build keys with etagd_client::key"
        ))
    }
}

/// The TTL to send for an expiry. `Ttl::secs` turns anything above 30 days into the absolute time the
/// protocol requires.
fn wire_ttl(expiry: Expiry) -> Ttl {
    match expiry {
        Expiry::Never => Ttl::NEVER,
        Expiry::Secs(secs) => Ttl::secs(secs.max(1)),
    }
}

/// Whole seconds of a grace period, rounded up, at least one (a zero TTL would mean "never" to the server).
fn grace_secs(grace: Duration) -> u32 {
    let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

/// What one server's failure tracking knows.
#[derive(Debug, Default)]
struct NodeState {
    /// Set while the server is marked down: until then its keys fail fast; after it, one probe goes through.
    down_until: Option<Instant>,
    /// A probe request is in flight; others keep failing fast until it settles.
    probing: bool,
    last_error: Option<String>,
}

/// The most reads one coalesced batch carries; more wait for the next write.
const MAX_BATCH: usize = 512;

/// How a coalesced batch failed as a whole.
#[derive(Debug)]
enum BatchFailure {
    /// The exchange did not finish within the deadline.
    Timeout,
    /// The client refused the batch before writing it.
    Rejected(String),
}

/// One read's answer; the error is shared because merged reads hand the same answer to several callers.
type GetAnswer = Result<GetResult, Arc<memcache::exp::Error>>;

type GetsReply = Result<Vec<GetAnswer>, BatchFailure>;

/// One caller's reads, waiting to join a batch.
struct Job {
    operations: Vec<Get>,
    reply: oneshot::Sender<GetsReply>,
}

/// Starts the task that coalesces concurrent reads for one server. It takes everything queued, sends it as one
/// pipelined `run_many`, hands each caller its slice, and repeats: one batch in flight per server, so the
/// next batch fills up while this one is on the wire. Under load many requests share one write and one read
/// system call; idle, a lone read goes out at once. The deadline stops a stuck server from holding the queue;
/// callers also wait with their own deadline, so none waits past it.
fn spawn_batcher(addr: String, client: AsyncMetaClient, deadline: Duration) -> mpsc::UnboundedSender<Job> {
    let (sender, mut receiver) = mpsc::unbounded_channel::<Job>();
    tokio::spawn(async move {
        let mut jobs: Vec<Job> = Vec::new();
        while let Some(first) = receiver.recv().await {
            let mut count = first.operations.len();
            jobs.push(first);
            while count < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(job) => {
                        count += job.operations.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            // Identical plain reads (the namespace counter and tag counters, which many requests ask for at
            // once) go out once per batch and every caller gets the answer; each caller's read still happens
            // after it asked. Leased reads (heads) are never merged: exactly one caller may win a lease, and every
            // request still reads its own validator.
            let mut unique: Vec<Get> = Vec::with_capacity(count);
            let mut slot_of: Vec<usize> = Vec::with_capacity(count);
            let mut plain: HashMap<Vec<u8>, usize> = HashMap::new();
            let mut sizes = Vec::with_capacity(jobs.len());
            for job in &mut jobs {
                sizes.push(job.operations.len());
                for operation in job.operations.drain(..) {
                    if operation.lease_ttl.is_none() {
                        if let Some(&slot) = plain.get(&operation.key) {
                            if unique[slot] == operation {
                                slot_of.push(slot);
                                continue;
                            }
                        }
                        plain.insert(operation.key.clone(), unique.len());
                    }
                    slot_of.push(unique.len());
                    unique.push(operation);
                }
            }
            match tokio::time::timeout(deadline, client.run_many(unique)).await {
                Ok(Ok(results)) => {
                    let mut readers = vec![0usize; results.len()];
                    for &slot in &slot_of {
                        readers[slot] += 1;
                    }
                    let mut results: Vec<Option<GetAnswer>> =
                        results.into_iter().map(|r| Some(r.map_err(Arc::new))).collect();
                    // The last reader of a slot takes the answer; only merged reads are copied.
                    let mut answer = |slot: usize| {
                        readers[slot] -= 1;
                        if readers[slot] == 0 {
                            results[slot].take().expect("each slot is taken once, by its last reader")
                        } else {
                            results[slot].clone().expect("a slot is present until its last reader")
                        }
                    };
                    let mut slots = slot_of.into_iter();
                    for (job, size) in jobs.drain(..).zip(sizes) {
                        let answers = slots.by_ref().take(size).map(&mut answer).collect();
                        let _ = job.reply.send(Ok(answers));
                    }
                }
                Ok(Err(error)) => {
                    let detail = error.to_string();
                    for job in jobs.drain(..) {
                        let _ = job.reply.send(Err(BatchFailure::Rejected(detail.clone())));
                    }
                }
                Err(_elapsed) => {
                    tracing::debug!(server = %addr, reads = count, "coalesced batch timed out");
                    for job in jobs.drain(..) {
                        let _ = job.reply.send(Err(BatchFailure::Timeout));
                    }
                }
            }
        }
    });
    sender
}

/// One server: its connection pool and its failure tracking.
struct ServerNode {
    addr: String,
    client: AsyncMetaClient,
    /// The read coalescer, when batching is on.
    batcher: Option<mpsc::UnboundedSender<Job>>,
    state: Mutex<NodeState>,
    connect_timeout: Duration,
    io_timeout: Duration,
    down_backoff: Duration,
}

/// Permission to run one exchange on a server. Settling it records the transport outcome; dropping it
/// unsettled (the caller's future was cancelled, or nothing was sent) leaves the state as it was, except that
/// an unsettled probe frees the probe slot so the next request probes again.
struct Pass<'a> {
    node: &'a ServerNode,
    probe: bool,
    settled: bool,
}

impl Pass<'_> {
    /// The server answered: it is up.
    fn succeeded(mut self) {
        self.settled = true;
        let mut state = self.node.state.lock();
        if state.down_until.take().is_some() {
            tracing::info!(server = %self.node.addr, "memcached is answering again; its keys are cached again");
        }
        state.probing = false;
    }

    /// The exchange failed in transport: mark the server down for the back-off.
    fn failed(mut self, error: &StoreError) {
        self.settled = true;
        let mut state = self.node.state.lock();
        if state.down_until.is_none() || self.probe {
            tracing::warn!(
                server = %self.node.addr,
                error = %error,
                backoff = ?self.node.down_backoff,
                "memcached marked down; its keys go to the origin until it answers again"
            );
        }
        state.down_until = Some(Instant::now() + self.node.down_backoff);
        state.probing = false;
        state.last_error = Some(error.to_string());
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.probe && !self.settled {
            self.node.state.lock().probing = false;
        }
    }
}

/// What a plain read must hand back: the refresh token of a stale item it was given without asking.
struct GiveBack {
    key: String,
    cas: u64,
    ttl: Option<i64>,
}

impl ServerNode {
    fn new(addr: String, client: AsyncMetaClient, config: &MemcachedConfig) -> ServerNode {
        let deadline = config.connect_timeout + config.io_timeout;
        let batcher = config.batch.then(|| spawn_batcher(addr.clone(), client.clone(), deadline));
        ServerNode {
            addr,
            client,
            batcher,
            state: Mutex::new(NodeState::default()),
            connect_timeout: config.connect_timeout,
            io_timeout: config.io_timeout,
            down_backoff: config.down_backoff,
        }
    }

    /// The outer bound on one exchange: dialling plus the exchange itself. The client enforces both limits on
    /// its own; this bound also covers its one redial of a dead pooled connection.
    fn deadline(&self) -> Duration {
        self.connect_timeout + self.io_timeout
    }

    /// Lets a request through, or fails it at once while the server is marked down.
    fn admit(&self) -> Result<Pass<'_>, StoreError> {
        let mut state = self.state.lock();
        let Some(until) = state.down_until else {
            return Ok(Pass { node: self, probe: false, settled: false });
        };
        let now = Instant::now();
        if now < until || state.probing {
            return Err(StoreError::ServerDown {
                server: self.addr.clone(),
                retry_in: until.saturating_duration_since(now),
            });
        }
        state.probing = true;
        Ok(Pass { node: self, probe: true, settled: false })
    }

    fn timeout_error(&self) -> StoreError {
        StoreError::Timeout { server: self.addr.clone(), timeout: self.io_timeout }
    }

    /// Maps a client error to a store error, and says whether it is a transport failure (which marks the
    /// server down) rather than an answer the server gave.
    fn convert(&self, error: &memcache::exp::Error) -> (StoreError, bool) {
        use memcache::exp::Error;
        match error {
            Error::Timeout { .. } => (self.timeout_error(), true),
            Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => (self.timeout_error(), true),
            // Written but not answered as expected: classified by what went wrong underneath (a SERVER_ERROR
            // reply also arrives this way), reported with the full message.
            Error::Ambiguous { source, .. } => match self.convert(source) {
                (timeout @ StoreError::Timeout { .. }, transport) => (timeout, transport),
                (_, transport) => {
                    (StoreError::Server { server: self.addr.clone(), detail: error.to_string() }, transport)
                }
            },
            // A malformed answer poisons the connection: treat the server as failing.
            Error::Io(_) | Error::Protocol(_) => {
                (StoreError::Server { server: self.addr.clone(), detail: error.to_string() }, true)
            }
            // SERVER_ERROR, CLIENT_ERROR and usage errors are answers about one request, not about the server.
            _ => (StoreError::Server { server: self.addr.clone(), detail: error.to_string() }, false),
        }
    }

    /// Reads a batch of keys living on this server as one pipelined exchange. One result per request, in
    /// order.
    async fn get_batch(&self, requests: &[&GetRequest]) -> Vec<Result<GetOutcome, StoreError>> {
        let mut outputs: Vec<Option<Result<GetOutcome, StoreError>>> = requests.iter().map(|_| None).collect();
        let mut sent: Vec<usize> = Vec::with_capacity(requests.len());
        let mut operations: Vec<Get> = Vec::with_capacity(requests.len());
        for (position, request) in requests.iter().enumerate() {
            if let Err(detail) = check_key(&request.key) {
                outputs[position] = Some(Err(StoreError::Server { server: self.addr.clone(), detail }));
                continue;
            }
            // Always ask for the CAS: a hit's CAS is reported, and a lease winner writes with it. A plain read
            // also asks for the remaining TTL, needed to hand back a refresh token it did not ask for.
            let operation = match request.lease_secs {
                Some(secs) => Get::new(&request.key).meta(Meta::NONE.cas()).lease_ttl(secs.max(1)),
                None => Get::new(&request.key).meta(Meta::NONE.cas().ttl()),
            };
            sent.push(position);
            operations.push(operation);
        }
        if !operations.is_empty() {
            let results = self.exchange_gets(operations).await;
            let mut give_backs = Vec::new();
            for (position, result) in sent.into_iter().zip(results) {
                outputs[position] = Some(result.map(|read| {
                    let (outcome, give_back) = get_outcome(read, requests[position].lease_secs.is_some());
                    give_backs.extend(give_back);
                    outcome
                }));
            }
            if !give_backs.is_empty() {
                self.give_back(give_backs).await;
            }
        }
        outputs.into_iter().map(|output| output.expect("every request was answered or rejected")).collect()
    }

    /// Sends the reads as one batch and maps errors; one result per operation, in order.
    async fn exchange_gets(&self, operations: Vec<Get>) -> Vec<Result<GetResult, StoreError>> {
        let count = operations.len();
        let pass = match self.admit() {
            Ok(pass) => pass,
            Err(down) => {
                let retry_in = match down {
                    StoreError::ServerDown { retry_in, .. } => retry_in,
                    _ => Duration::ZERO,
                };
                return (0..count)
                    .map(|_| Err(StoreError::ServerDown { server: self.addr.clone(), retry_in }))
                    .collect();
            }
        };
        match self.run_gets(operations).await {
            Err(BatchFailure::Timeout) => {
                pass.failed(&self.timeout_error());
                (0..count).map(|_| Err(self.timeout_error())).collect()
            }
            Err(BatchFailure::Rejected(detail)) => {
                // Validation failed before anything was written (keys were checked, so this is a bug here).
                drop(pass);
                (0..count)
                    .map(|_| Err(StoreError::Server { server: self.addr.clone(), detail: detail.clone() }))
                    .collect()
            }
            Ok(results) => {
                let mut transport_failure: Option<StoreError> = None;
                let mapped: Vec<Result<GetResult, StoreError>> = results
                    .into_iter()
                    .map(|result| {
                        result.map_err(|error| {
                            let (converted, transport) = self.convert(&error);
                            if transport && transport_failure.is_none() {
                                transport_failure = Some(self.convert(&error).0);
                            }
                            converted
                        })
                    })
                    .collect();
                match transport_failure {
                    Some(error) => pass.failed(&error),
                    None => pass.succeeded(),
                }
                mapped
            }
        }
    }

    /// Runs reads through the coalescer (or directly when batching is off), bounded by the deadline either way.
    async fn run_gets(&self, operations: Vec<Get>) -> GetsReply {
        let Some(batcher) = &self.batcher else {
            return match tokio::time::timeout(self.deadline(), self.client.run_many(operations)).await {
                Ok(Ok(results)) => Ok(results.into_iter().map(|r| r.map_err(Arc::new)).collect()),
                Ok(Err(error)) => Err(BatchFailure::Rejected(error.to_string())),
                Err(_elapsed) => Err(BatchFailure::Timeout),
            };
        };
        let (reply, answer) = oneshot::channel();
        if batcher.send(Job { operations, reply }).is_err() {
            return Err(BatchFailure::Rejected("the batching task stopped".to_owned()));
        }
        match tokio::time::timeout(self.deadline(), answer).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_closed)) => Err(BatchFailure::Rejected("the batching task stopped".to_owned())),
            Err(_elapsed) => Err(BatchFailure::Timeout),
        }
    }

    /// Re-invalidates stale items whose refresh token a plain read received, so the next leased reader wins
    /// it. Best effort: if it fails, the item simply stays stale until its grace period ends.
    async fn give_back(&self, give_backs: Vec<GiveBack>) {
        let operations: Vec<Delete> = give_backs
            .iter()
            .map(|give_back| {
                let operation = Delete::new(&give_back.key).compare_cas(give_back.cas).invalidate();
                match give_back.ttl {
                    // -1 means no expiry: keep it by sending no T.
                    Some(ttl) if ttl >= 0 => {
                        operation.stale_for(Ttl::secs(u32::try_from(ttl.max(1)).unwrap_or(u32::MAX)))
                    }
                    _ => operation,
                }
            })
            .collect();
        match tokio::time::timeout(self.deadline(), self.client.run_many(operations)).await {
            Ok(Ok(results)) => {
                for (give_back, result) in give_backs.iter().zip(results) {
                    if let Err(error) = result {
                        tracing::debug!(server = %self.addr, key = %give_back.key, %error, "refresh token not handed back");
                    }
                }
            }
            Ok(Err(error)) => {
                tracing::debug!(server = %self.addr, %error, "refresh tokens not handed back")
            }
            Err(_elapsed) => {
                tracing::debug!(server = %self.addr, "refresh tokens not handed back: timed out")
            }
        }
    }

    async fn set(
        &self,
        key: &str,
        value: &[u8],
        expiry: Expiry,
        condition: SetCondition,
        max_item_bytes: usize,
    ) -> Result<SetOutcome, StoreError> {
        check_key(key).map_err(|detail| StoreError::Server { server: self.addr.clone(), detail })?;
        if value.is_empty() {
            // memcached's lease placeholders are zero-byte items, and reads fold zero-byte items into misses.
            return Err(StoreError::Server {
                server: self.addr.clone(),
                detail: format!("refusing to store an empty value under {key}: zero-byte items are lease placeholders"),
            });
        }
        let mut operation = Set::new(key, value).ttl(wire_ttl(expiry));
        operation = match condition {
            SetCondition::Always => operation,
            SetCondition::Add => operation.add(),
            SetCondition::Cas(cas) => operation.compare_cas(cas),
        };
        let pass = self.admit()?;
        let result = match tokio::time::timeout(self.deadline(), self.client.run(operation)).await {
            Err(_elapsed) => {
                pass.failed(&self.timeout_error());
                return Err(self.timeout_error());
            }
            Ok(result) => result,
        };
        match result {
            Ok(mutation) => {
                pass.succeeded();
                Ok(match mutation.status {
                    MutationStatus::Applied => SetOutcome::Stored,
                    _ => SetOutcome::NotStored,
                })
            }
            Err(error) if refused_as_too_large(&error) => {
                pass.succeeded();
                Err(StoreError::TooLarge { key: key.to_owned(), size: value.len(), limit: max_item_bytes })
            }
            Err(error) => Err(self.settle_failure(pass, &error)),
        }
    }

    async fn delete(&self, key: &str, mode: DeleteMode) -> Result<bool, StoreError> {
        check_key(key).map_err(|detail| StoreError::Server { server: self.addr.clone(), detail })?;
        let operation = match mode {
            DeleteMode::Hard => Delete::new(key),
            DeleteMode::IfCas { cas } => Delete::new(key).compare_cas(cas),
            // `md <key> I T<grace>`: keep the value, flag it stale, hand one reader a refresh token.
            DeleteMode::Stale { grace } => Delete::new(key).invalidate().stale_for(Ttl::secs(grace_secs(grace))),
        };
        let pass = self.admit()?;
        match tokio::time::timeout(self.deadline(), self.client.run(operation)).await {
            Err(_elapsed) => {
                pass.failed(&self.timeout_error());
                Err(self.timeout_error())
            }
            Ok(Ok(mutation)) => {
                pass.succeeded();
                Ok(mutation.status == MutationStatus::Applied)
            }
            Ok(Err(error)) => Err(self.settle_failure(pass, &error)),
        }
    }

    /// Converts an error from one request and records it against the server when it is a transport failure.
    fn settle_failure(&self, pass: Pass<'_>, error: &memcache::exp::Error) -> StoreError {
        let (converted, transport) = self.convert(error);
        if transport {
            pass.failed(&converted);
        } else {
            pass.succeeded();
        }
        converted
    }

    /// `stats` over a short-lived connection: the meta protocol has no statistics verb.
    async fn stats(&self) -> ServerStats {
        let raw = tokio::time::timeout(self.deadline(), raw_stats(&self.addr, self.connect_timeout)).await;
        let raw = match raw {
            Ok(Ok(raw)) => raw,
            Ok(Err(error)) => return unreachable_stats(&self.addr, error),
            Err(_elapsed) => {
                return unreachable_stats(&self.addr, format!("no answer to stats within {:?}", self.deadline()));
            }
        };
        let number = |name: &str| raw.get(name).and_then(|value| value.parse::<u64>().ok());
        ServerStats {
            server: self.addr.clone(),
            reachable: true,
            error: None,
            version: raw.get("version").cloned(),
            items: number("curr_items"),
            bytes: number("bytes"),
            limit_bytes: number("limit_maxbytes"),
            get_hits: number("get_hits"),
            get_misses: number("get_misses"),
            cmd_get: number("cmd_get"),
            evictions: number("evictions"),
        }
    }

    fn health(&self) -> ServerHealth {
        let state = self.state.lock();
        ServerHealth { server: self.addr.clone(), up: state.down_until.is_none(), last_error: state.last_error.clone() }
    }
}

/// Whether memcached refused a value as larger than its item limit (`SERVER_ERROR object too large for
/// cache`), which the client reports directly or, since the request was written, wrapped as ambiguous.
fn refused_as_too_large(error: &memcache::exp::Error) -> bool {
    use memcache::exp::Error;
    match error {
        Error::Server(message) => message.contains("too large"),
        Error::Ambiguous { source, .. } => refused_as_too_large(source),
        _ => false,
    }
}

fn unreachable_stats(addr: &str, error: String) -> ServerStats {
    ServerStats { server: addr.to_owned(), reachable: false, error: Some(error), ..ServerStats::default() }
}

/// Sends `stats` and reads `STAT <name> <value>` lines up to `END`.
async fn raw_stats(addr: &str, connect_timeout: Duration) -> Result<HashMap<String, String>, String> {
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_elapsed| format!("connect timed out after {connect_timeout:?}"))?
        .map_err(|error| format!("connect failed: {error}"))?;
    let mut reader = BufReader::new(stream);
    reader.get_mut().write_all(b"stats\r\n").await.map_err(|error| format!("write failed: {error}"))?;
    let mut stats = HashMap::new();
    let mut line = String::new();
    loop {
        line.clear();
        let read = reader.read_line(&mut line).await.map_err(|error| format!("read failed: {error}"))?;
        if read == 0 {
            return Err("connection closed before END".to_owned());
        }
        match parse_stat_line(&line) {
            StatLine::End => return Ok(stats),
            StatLine::Stat(name, value) => {
                stats.insert(name.to_owned(), value.to_owned());
            }
            StatLine::Error(message) => return Err(format!("server answered {message:?}")),
            StatLine::Other => {}
        }
    }
}

/// One line of a `stats` answer.
#[derive(Debug, PartialEq, Eq)]
enum StatLine<'a> {
    Stat(&'a str, &'a str),
    End,
    Error(&'a str),
    Other,
}

fn parse_stat_line(line: &str) -> StatLine<'_> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line == "END" {
        return StatLine::End;
    }
    if line == "ERROR" || line.starts_with("SERVER_ERROR") || line.starts_with("CLIENT_ERROR") {
        return StatLine::Error(line);
    }
    let mut fields = line.splitn(3, ' ');
    match (fields.next(), fields.next(), fields.next()) {
        (Some("STAT"), Some(name), Some(value)) => StatLine::Stat(name, value),
        _ => StatLine::Other,
    }
}

/// Maps one read's result to the store's outcome, plus a refresh token to hand back when a plain read
/// received one.
///
/// Zero-byte items are lease placeholders (the store never writes empty values), so any zero-byte item reads
/// as a miss, keeping its lease state.
fn get_outcome(read: GetResult, leased: bool) -> (GetOutcome, Option<GiveBack>) {
    let cas = read.item.cas.unwrap_or(0);
    let mut give_back = None;
    let lease = match read.lease_state {
        LeaseState::Granted if !leased => {
            give_back =
                Some(GiveBack { key: String::from_utf8_lossy(&read.key).into_owned(), cas, ttl: read.item.ttl });
            Lease::None
        }
        LeaseState::Granted => Lease::Won { cas },
        LeaseState::Busy => Lease::Busy,
        _ => Lease::None,
    };
    let outcome = match read.status {
        GetStatus::Hit => match read.value {
            Some(value) if !value.is_empty() => GetOutcome::Hit(Item {
                value: Bytes::from(value),
                cas,
                stale: read.value_state == ValueState::Stale,
                lease,
            }),
            _ => GetOutcome::Miss { lease },
        },
        // A placeholder another caller is filling, seen by a plain read.
        GetStatus::Pending => GetOutcome::Miss { lease: Lease::Busy },
        _ => GetOutcome::Miss { lease },
    };
    (outcome, give_back)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_memcached_rules() {
        fn check(key: &str, ok: bool) {
            assert_eq!(check_key(key).is_ok(), ok, "{key:?}");
        }
        check("ns:h:abc", true);
        check(&"k".repeat(250), true);
        check(&"k".repeat(251), false);
        check("", false);
        check("has space", false);
        check("tab\tkey", false);
        check("caf\u{e9}", false);
    }

    #[test]
    fn expiries_and_grace_periods_map_to_wire_ttls() {
        fn check(expiry: Expiry, expected: Ttl) {
            assert_eq!(wire_ttl(expiry), expected, "{expiry:?}");
        }
        check(Expiry::Never, Ttl::NEVER);
        check(Expiry::Secs(60), Ttl::secs(60));
        check(Expiry::Secs(0), Ttl::secs(1));
        for (grace, secs) in [(0, 1), (1, 1), (999, 1), (1000, 1), (1001, 2), (30_000, 30)] {
            assert_eq!(grace_secs(Duration::from_millis(grace)), secs, "{grace} ms");
        }
    }

    #[test]
    fn stat_lines_parse() {
        fn check(line: &str, expected: StatLine<'_>) {
            assert_eq!(parse_stat_line(line), expected, "{line:?}");
        }
        check("STAT curr_items 3\r\n", StatLine::Stat("curr_items", "3"));
        check("STAT version 1.6.18\r\n", StatLine::Stat("version", "1.6.18"));
        check("STAT rusage_user 0.1 0.2\r\n", StatLine::Stat("rusage_user", "0.1 0.2"));
        check("END\r\n", StatLine::End);
        check("ERROR\r\n", StatLine::Error("ERROR"));
        check("SERVER_ERROR busy\r\n", StatLine::Error("SERVER_ERROR busy"));
        check("garbage\r\n", StatLine::Other);
    }

    #[test]
    fn default_config_matches_the_documented_limits() {
        let config = MemcachedConfig::default();
        assert_eq!(config.connect_timeout, Duration::from_millis(50));
        assert_eq!(config.io_timeout, Duration::from_millis(100));
        assert_eq!(config.down_backoff, Duration::from_secs(2));
        assert_eq!(config.max_item_bytes, 1 << 20);
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
    async fn client_errors_map_to_store_errors() {
        use memcache::exp::Error;
        use std::io;

        #[derive(Debug, PartialEq)]
        enum Kind {
            Timeout,
            Server,
        }
        let config = MemcachedConfig { servers: vec!["127.0.0.1:1".to_owned()], ..Default::default() };
        let store = MemcachedStore::connect(config).await.expect("connect does not dial");
        let node = &store.nodes[0];
        let check = |error: Error, kind: Kind, transport: bool| {
            let (converted, was_transport) = node.convert(&error);
            let actual = match &converted {
                StoreError::Timeout { server, .. } | StoreError::Server { server, .. } => {
                    assert_eq!(server, "127.0.0.1:1");
                    if matches!(converted, StoreError::Timeout { .. }) { Kind::Timeout } else { Kind::Server }
                }
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!((actual, was_transport), (kind, transport), "{error}");
        };
        let ambiguous = |source: Error| Error::Ambiguous { key: b"k".to_vec(), source: Box::new(source) };
        check(Error::Timeout { key: b"k".to_vec() }, Kind::Timeout, true);
        check(Error::Io(io::Error::from(io::ErrorKind::TimedOut)), Kind::Timeout, true);
        check(Error::Io(io::Error::from(io::ErrorKind::ConnectionRefused)), Kind::Server, true);
        check(Error::Protocol("garbage".into()), Kind::Server, true);
        check(ambiguous(Error::Timeout { key: b"k".to_vec() }), Kind::Timeout, true);
        check(ambiguous(Error::Io(io::Error::from(io::ErrorKind::ConnectionReset))), Kind::Server, true);
        check(ambiguous(Error::Server("out of memory".into())), Kind::Server, false);
        check(Error::Server("out of memory".into()), Kind::Server, false);
        check(Error::Rejected("bad data chunk".into()), Kind::Server, false);
        check(Error::Usage("key exceeds 250 bytes on the wire"), Kind::Server, false);
        assert!(refused_as_too_large(&ambiguous(Error::Server("object too large for cache".into()))));
        assert!(refused_as_too_large(&Error::Server("object too large for cache".into())));
        assert!(!refused_as_too_large(&Error::Server("out of memory".into())));
    }

    #[tokio::test]
    async fn a_down_server_does_not_fail_connect() {
        // Port 1 on loopback refuses connections; connecting must still succeed (dialling is lazy).
        let config = MemcachedConfig { servers: vec!["127.0.0.1:1".to_owned()], ..Default::default() };
        let store = MemcachedStore::connect(config).await.expect("connect does not dial");
        assert_eq!(store.servers(), ["127.0.0.1:1".to_owned()]);
        assert!(store.health()[0].up);
    }
}
