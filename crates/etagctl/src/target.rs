//! Which cache a command acts on: Memcached directly (the library's `Cache` over `MemcachedStore`, so the key
//! schema and invalidation code are the sidecar's own) or a running sidecar's admin API.

use std::sync::Arc;
use std::time::Duration;

use clap::ArgMatches;
use clap::parser::ValueSource;
use etagd_client::cache::{Cache, CacheConfig};
use etagd_client::key::Namespace;
use etagd_client::store::Store;
use etagd_client::store::authenticated::{AuthenticatedStore, EntryKey};
use etagd_client::store::memcached::{MemcachedConfig, MemcachedStore};

use crate::admin::AdminClient;
use crate::cli::GlobalArgs;
use crate::error::CliError;

/// The cache a command acts on.
#[derive(Debug)]
pub(crate) enum Target {
    /// Memcached, through the library.
    Direct(Cache),
    /// A sidecar's admin API.
    Admin(AdminClient),
}

/// Which of the two the options ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Direct,
    Admin,
}

impl Target {
    /// Builds the target the options name. No I/O: Memcached connections are dialled at the first operation.
    pub(crate) async fn from_options(global: &GlobalArgs, matches: &ArgMatches) -> Result<Self, CliError> {
        let servers: Vec<String> =
            global.memcached.iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
        let admin = global.admin.as_deref().map(str::trim).filter(|a| !a.is_empty());
        let source = |id: &str| matches.value_source(id);
        match choose_mode(!servers.is_empty(), source("memcached"), admin.is_some(), source("admin"))? {
            Mode::Direct => {
                let namespace = Namespace::new(global.namespace.trim())?;
                Ok(Self::Direct(
                    connect(servers, namespace, global.prefix_depth, global.entry_key.as_deref(), global.timeout)
                        .await?,
                ))
            }
            Mode::Admin => {
                if source("namespace") == Some(ValueSource::CommandLine) {
                    eprintln!("note: --namespace is ignored with --admin: the sidecar acts on its own namespace");
                }
                let token = global.admin_token.clone().filter(|t| !t.is_empty());
                let admin = admin.expect("admin mode is chosen only when --admin is given");
                Ok(Self::Admin(AdminClient::new(admin, token, global.timeout)?))
            }
        }
    }
}

/// Decides between Memcached and the admin API. A flag typed on the command line beats one taken from the
/// environment, so an exported `ETAGD_MEMCACHED` does not get in the way of a one-off `--admin`; both from the
/// same place is ambiguous.
fn choose_mode(
    memcached: bool,
    memcached_source: Option<ValueSource>,
    admin: bool,
    admin_source: Option<ValueSource>,
) -> Result<Mode, CliError> {
    let typed = |source: Option<ValueSource>| source == Some(ValueSource::CommandLine);
    match (memcached, admin) {
        (false, false) => Err(CliError::Usage(
            "say which cache: pass --memcached HOST:PORT (or set ETAGD_MEMCACHED), or --admin URL of a running \
             sidecar (or set ETAGCTL_ADMIN)"
                .to_owned(),
        )),
        (true, false) => Ok(Mode::Direct),
        (false, true) => Ok(Mode::Admin),
        (true, true) => match (typed(memcached_source), typed(admin_source)) {
            (true, false) => Ok(Mode::Direct),
            (false, true) => Ok(Mode::Admin),
            _ => Err(CliError::Usage(
                "both --memcached and --admin are given (flags or ETAGD_MEMCACHED/ETAGCTL_ADMIN): pass only one"
                    .to_owned(),
            )),
        },
    }
}

/// The per-exchange limits derived from the `--timeout` budget: a quarter to dial, half for the answer, so a
/// server that accepts and never answers is given up on at three quarters of the budget. A failed server is
/// then marked down and every later operation on it fails at once, so a command stays within about one budget.
pub(crate) fn split_timeout(budget: Duration) -> (Duration, Duration) {
    let floor = Duration::from_millis(10);
    ((budget / 4).max(floor), (budget / 2).max(floor))
}

async fn connect(
    servers: Vec<String>,
    namespace: Namespace,
    prefix_depth: u8,
    entry_key: Option<&str>,
    timeout: Duration,
) -> Result<Cache, CliError> {
    let entry_key = entry_key.map(EntryKey::new).transpose().map_err(|error| CliError::Usage(error.to_string()))?;
    for server in &servers {
        check_address(server)?;
    }
    let (connect_timeout, io_timeout) = split_timeout(timeout);
    let config = MemcachedConfig { servers, connect_timeout, io_timeout, max_idle: 4, ..MemcachedConfig::default() };
    let store = MemcachedStore::connect(config).await.map_err(|error| CliError::Failed(error.to_string()))?;
    // A one-shot command reads each body at most once and remembers nothing between runs.
    let config =
        CacheConfig { namespace, prefix_depth, body_cache_bytes: 0, hint_capacity: 16, ..CacheConfig::default() };
    let store: Arc<dyn Store> = Arc::new(store);
    let store = match entry_key {
        Some(key) => Arc::new(AuthenticatedStore::new(store, key)),
        None => store,
    };
    Ok(Cache::new(store, config))
}

/// Rejects what cannot be a `host:port` before anything is dialled, so a typo is a usage error.
fn check_address(server: &str) -> Result<(), CliError> {
    let valid = server.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    if valid {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "memcached address {server:?} is invalid: write it as host:port, e.g. 127.0.0.1:11211"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_the_mode() {
        use ValueSource::{CommandLine as Cl, EnvVariable as Env};
        let check = |m: bool, ms: Option<ValueSource>, a: bool, r#as: Option<ValueSource>, expected: Option<Mode>| {
            assert_eq!(choose_mode(m, ms, a, r#as).ok(), expected, "{m} {ms:?} {a} {as:?}");
        };
        check(false, None, false, None, None);
        check(true, Some(Cl), false, None, Some(Mode::Direct));
        check(true, Some(Env), false, None, Some(Mode::Direct));
        check(false, None, true, Some(Env), Some(Mode::Admin));
        check(true, Some(Env), true, Some(Cl), Some(Mode::Admin));
        check(true, Some(Cl), true, Some(Env), Some(Mode::Direct));
        check(true, Some(Cl), true, Some(Cl), None);
        check(true, Some(Env), true, Some(Env), None);
    }

    #[test]
    fn checks_addresses() {
        let check = |address: &str, ok: bool| assert_eq!(check_address(address).is_ok(), ok, "{address}");
        check("127.0.0.1:11211", true);
        check("memcached-0.memcached:11211", true);
        check("[::1]:11211", true);
        check("127.0.0.1", false);
        check(":11211", false);
        check("host:0", false);
        check("host:99999", false);
        check("host:port", false);
        check("my host:1", false);
    }

    #[test]
    fn splits_the_budget() {
        let check = |budget_ms: u64, expected: (u64, u64)| {
            let (connect, io) = split_timeout(Duration::from_millis(budget_ms));
            assert_eq!((connect.as_millis() as u64, io.as_millis() as u64), expected, "{budget_ms}");
        };
        check(2_000, (500, 1_000));
        check(100, (25, 50));
        check(1, (10, 10));
    }
}
