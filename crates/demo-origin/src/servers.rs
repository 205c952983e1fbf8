//! The seed's server inventory: the list behind `GET /api/servers`, kept in memory, with `POST` appending to it.
//!
//! The serialized list is rebuilt on every write, so the (deliberately slow) view spends its time only in the
//! simulated delay, and each replica of the demo keeps its own list: that is the point of a shared cache in front.

use std::sync::{PoisonError, RwLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::payload::SplitMix64;

/// How many servers the inventory starts with (about 16 KB of JSON).
const INITIAL_SERVERS: u64 = 50;

const ROLES: &[&str] = &["web", "worker", "db", "cache", "queue", "search"];
const REGIONS: &[&str] = &["eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-south-1"];
const STATUSES: &[&str] = &["active", "active", "active", "draining", "maintenance"];
const OSES: &[&str] = &["debian-12", "debian-11", "ubuntu-22.04", "ubuntu-24.04"];
const TEAMS: &[&str] = &["team-payments", "team-search", "team-platform", "team-checkout", "team-identity"];
const CORES: &[u32] = &[2, 4, 8, 16, 32];
const MEMORY_MB: &[u32] = &[4096, 8192, 16384, 32768, 65536];
const DISK_GB: &[u32] = &[50, 100, 250, 500, 1000];

/// One server of the inventory, as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Server {
    pub(crate) id: u64,
    pub(crate) hostname: String,
    pub(crate) ip: String,
    pub(crate) role: String,
    pub(crate) region: String,
    pub(crate) status: String,
    pub(crate) os: String,
    pub(crate) cpu_cores: u32,
    pub(crate) memory_mb: u32,
    pub(crate) disk_gb: u32,
    pub(crate) load_avg: [f64; 3],
    pub(crate) uptime_s: u64,
    pub(crate) build: String,
    pub(crate) owner: String,
    pub(crate) last_seen: String,
}

impl Server {
    /// A plausible server whose every field comes from `rng`.
    pub(crate) fn generate(id: u64, rng: &mut SplitMix64) -> Self {
        let role = *rng.pick(ROLES);
        let region = *rng.pick(REGIONS);
        let load = |rng: &mut SplitMix64| {
            #[allow(clippy::cast_precision_loss, reason = "the value is below 400")]
            let hundredths = rng.below(400) as f64;
            hundredths / 100.0
        };
        Self {
            id,
            hostname: format!("{role}-{:03}.{region}.internal", rng.below(1000)),
            ip: format!("10.{}.{}.{}", rng.below(256), rng.below(256), 1 + rng.below(254)),
            role: role.to_owned(),
            region: region.to_owned(),
            status: (*rng.pick(STATUSES)).to_owned(),
            os: (*rng.pick(OSES)).to_owned(),
            cpu_cores: *rng.pick(CORES),
            memory_mb: *rng.pick(MEMORY_MB),
            disk_gb: *rng.pick(DISK_GB),
            load_avg: [load(rng), load(rng), load(rng)],
            uptime_s: rng.below(10_000_000),
            build: format!("{:08x}", rng.next_u64() >> 32),
            owner: (*rng.pick(TEAMS)).to_owned(),
            last_seen: format!(
                "2024-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                1 + rng.below(12),
                1 + rng.below(28),
                rng.below(24),
                rng.below(60),
                rng.below(60)
            ),
        }
    }
}

/// The body of `POST /api/servers`: every field is optional and generated when absent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewServer {
    hostname: Option<String>,
    ip: Option<String>,
    role: Option<String>,
    region: Option<String>,
    status: Option<String>,
    owner: Option<String>,
}

/// The in-memory list and its serialized form, kept in step under one lock.
#[derive(Debug)]
pub(crate) struct Inventory {
    state: RwLock<State>,
}

#[derive(Debug)]
struct State {
    servers: Vec<Server>,
    body: Bytes,
    rng: SplitMix64,
}

impl Inventory {
    /// The starting inventory, identical on every replica.
    pub(crate) fn new() -> Self {
        let mut rng = SplitMix64::new(0x0073_6572_7665_7273);
        let servers: Vec<Server> = (1..=INITIAL_SERVERS).map(|id| Server::generate(id, &mut rng)).collect();
        let body = serialize(&servers);
        Self { state: RwLock::new(State { servers, body, rng }) }
    }

    /// The list as JSON.
    pub(crate) fn body(&self) -> Bytes {
        // Writers cannot panic between the push and the re-serialization, so even a poisoned lock holds a whole list.
        self.state.read().unwrap_or_else(PoisonError::into_inner).body.clone()
    }

    /// Appends a server built from `new` (missing fields generated) and returns it.
    pub(crate) fn add(&self, new: NewServer) -> Server {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let id = state.servers.last().map_or(1, |last| last.id + 1);
        let mut server = Server::generate(id, &mut state.rng);
        let NewServer { hostname, ip, role, region, status, owner } = new;
        server.hostname = hostname.unwrap_or(server.hostname);
        server.ip = ip.unwrap_or(server.ip);
        server.role = role.unwrap_or(server.role);
        server.region = region.unwrap_or(server.region);
        server.status = status.unwrap_or(server.status);
        server.owner = owner.unwrap_or(server.owner);
        state.servers.push(server.clone());
        state.body = serialize(&state.servers);
        server
    }
}

fn serialize(servers: &[Server]) -> Bytes {
    Bytes::from(serde_json::to_vec(servers).expect("serializing plain structs cannot fail"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str, expected_hostname: Option<&str>) {
        let inventory = Inventory::new();
        let new: NewServer = if body.is_empty() {
            NewServer::default()
        } else {
            serde_json::from_str(body).expect("test bodies are valid")
        };
        let added = inventory.add(new);
        let listed: Vec<Server> = serde_json::from_slice(&inventory.body()).expect("the list is valid JSON");
        assert_eq!(listed.len(), usize::try_from(INITIAL_SERVERS).expect("small") + 1, "{body}");
        assert_eq!(listed.last(), Some(&added), "{body}");
        assert_eq!(added.id, INITIAL_SERVERS + 1, "{body}");
        if let Some(hostname) = expected_hostname {
            assert_eq!(added.hostname, hostname, "{body}");
        }
    }

    #[test]
    fn add_appends_and_updates_the_body() {
        check("", None);
        check("{}", None);
        check(r#"{"hostname":"web-999.test","status":"active"}"#, Some("web-999.test"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<NewServer>(r#"{"hostnme":"typo"}"#).is_err());
    }
}
