//! The etagd sidecar: a reverse proxy in front of one app replica that shares its HTTP cache, validators
//! included, with every other replica through Memcached.
//!
//! - [`config`]: flags, environment and TOML, validated once;
//! - [`proxy`]: the inbound transport: client connections into runs of the library's exchange;
//! - [`origin`]: the outbound transport: the app as the exchange's upstream;
//! - [`admin`]: the admin port;
//! - [`metrics`]: Prometheus metrics.
//!
//! [`start`] builds everything and binds; `main.rs` only adds the runtime, logging and signals. Tests call
//! [`start`] with ports set to 0 and read the bound addresses from [`Running`].

pub mod admin;
pub mod config;
pub mod metrics;
pub mod origin;
pub mod proxy;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use etagd_client::cache::{Cache, CacheConfig};
use etagd_client::exchange::Exchange;
use etagd_client::store::Store;
use etagd_client::store::memcached::{MemcachedConfig, MemcachedStore};
use etagd_client::store::memory::MemoryStore;

use crate::config::Config;

/// A started sidecar.
#[derive(Debug)]
pub struct Running {
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// Where the admin port listens.
    pub admin_addr: SocketAddr,
    /// The engine (tests read its counters).
    pub cache: Cache,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (up to the drain timeout), and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Builds the store the config names: Memcached servers, or the embedded store.
pub async fn build_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if config.memcached.is_empty() {
        tracing::warn!(
            "no --memcached given: using the embedded in-process store; validators are NOT shared with other replicas"
        );
        let item_limit = config.max_body_bytes + (64 << 10);
        return Ok(Arc::new(MemoryStore::new(config.embedded_bytes).with_max_item_bytes(item_limit)));
    }
    let store = MemcachedStore::connect(MemcachedConfig {
        servers: config.memcached.clone(),
        connect_timeout: config.memcached_connect_timeout,
        io_timeout: config.memcached_timeout,
        down_backoff: config.memcached_backoff,
        batch: config.memcached_batch,
        ..MemcachedConfig::default()
    })
    .await
    .context("cannot set up the Memcached client (check --memcached)")?;
    Ok(Arc::new(store))
}

/// Builds the engine, binds both ports and serves until [`Running::shutdown`].
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let config = Arc::new(config);
    let store = build_store(&config).await?;
    let shared_store = store.is_remote();
    let cache = Cache::new(
        store,
        CacheConfig {
            namespace: config.namespace.clone(),
            validator: config.validator,
            fill_lease: config.fill_lease,
            fill_wait: config.fill_wait,
            body_cache_bytes: config.body_cache_bytes,
            ..CacheConfig::default()
        },
    );
    let metrics = metrics::Metrics::new(cache.clone());
    let readiness = Arc::new(admin::Readiness::default());
    let proxy_listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", config.admin_listen))?;
    let proxy_addr = proxy_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let (shutdown, watch_shutdown) = watch::channel(false);

    let exchange = Exchange::new(cache.clone(), config.exchange()).with_observer(metrics.clone());
    let origin = origin::Origin::new(&config.upstream, config.origin_timeout);
    let proxy = Arc::new(proxy::Proxy::new(exchange, origin, metrics.clone()));
    let proxy_task = tokio::spawn(serve_proxy(proxy_listener, proxy, watch_shutdown.clone(), config.drain_timeout));
    let admin = admin::router(admin::AdminState {
        cache: cache.clone(),
        metrics,
        readiness: readiness.clone(),
        token: config.admin_token.clone(),
        shared_store,
        exchange: Arc::new(config.exchange()),
    });
    let mut admin_shutdown = watch_shutdown;
    let admin_task = tokio::spawn(async move {
        let stop = async move {
            let _ = admin_shutdown.wait_for(|stop| *stop).await;
        };
        if let Err(error) = axum::serve(admin_listener, admin).with_graceful_shutdown(stop).await {
            tracing::error!(%error, "admin server failed");
        }
    });
    readiness.set_ready();
    tracing::info!(%proxy_addr, %admin_addr, upstream = %config.upstream, "etagd ready");
    Ok(Running { proxy_addr, admin_addr, cache, shutdown, tasks: vec![proxy_task, admin_task] })
}

async fn serve_proxy(
    listener: TcpListener,
    proxy: Arc<proxy::Proxy>,
    mut shutdown: watch::Receiver<bool>,
    drain: std::time::Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off briefly instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let proxy = proxy.clone();
                let service = service_fn(move |request| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(proxy.handle(request, Some(peer)).await) }
                });
                let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("drain timeout passed with requests still in flight");
    }
}
