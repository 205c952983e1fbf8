//! The etagd sidecar: a reverse proxy in front of one app replica that shares its HTTP cache, validators
//! included, with every other replica through Memcached.
//!
//! - [`config`]: flags, environment and TOML, validated once;
//! - [`proxy`]: the inbound transport: client connections into runs of the library's exchange;
//! - [`origin`]: the outbound transport: the app as the exchange's upstream;
//! - [`admin`]: the admin port;
//! - [`logging`]: the buffered log writer and the access log's formatter;
//! - [`metrics`]: Prometheus metrics.
//!
//! [`start`] builds everything and binds; `main.rs` only adds the runtime, logging and signals. Tests call
//! [`start`] with ports set to 0 and read the bound addresses from [`Running`].

pub mod admin;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod origin;
pub mod proxy;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::BoxError;

use etagd_client::body::Body;
use etagd_client::cache::{Cache, CacheConfig};
use etagd_client::exchange::Exchange;
use etagd_client::reply::CACHE_STATUS;
use etagd_client::store::Store;
use etagd_client::store::authenticated::AuthenticatedStore;
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
    let store = build_backend(config).await?;
    Ok(match &config.entry_key {
        Some(key) => Arc::new(AuthenticatedStore::new(store, key.clone())),
        None => store,
    })
}

async fn build_backend(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
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
        bulk_timeout: config.memcached_bulk_timeout,
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
            bridge_from: config.bridge_from,
            prefix_depth: config.prefix_depth,
            max_object_fraction: config.max_object_fraction,
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

    let exchange = Exchange::new(cache.clone(), config.exchange())
        .with_observer(Arc::new(logging::access::Logged(metrics.clone())));
    let origin = origin::Origin::new(&config.upstream, config.origin_timeout, config.origin_body_timeout)
        .count_body_timeouts(metrics.origin_body_timeouts.clone());
    let proxy = Arc::new(proxy::Proxy::new(exchange, origin, metrics.clone()));
    let limits = Limits::from(&*config);
    let proxy_task = tokio::spawn(serve_proxy(proxy_listener, proxy, metrics.clone(), limits, watch_shutdown.clone()));
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

/// What one client may hold of the proxy: the connection hygiene flags.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read_timeout: Duration,
    max_header_bytes: usize,
    max_in_flight: usize,
    drain: Duration,
}

impl From<&Config> for Limits {
    fn from(config: &Config) -> Self {
        Self {
            header_read_timeout: config.header_read_timeout,
            max_header_bytes: config.max_header_bytes,
            max_in_flight: config.max_in_flight,
            drain: config.drain_timeout,
        }
    }
}

/// How long an overloaded sidecar asks clients to wait (RFC 9110 section 10.2.3), in seconds.
const OVERLOAD_RETRY_AFTER_S: &str = "1";

/// The answer to a request over `--max-in-flight`: 503 (RFC 9110 section 15.6.4: a temporary overload, with
/// `Retry-After` saying when to try again), sent without reading the cache or asking the origin.
fn overloaded() -> Response<Body> {
    let mut response = Response::new(Body::full(Bytes::from_static(
        b"etagd is handling as many requests as --max-in-flight allows: retry after a second, or raise \
          --max-in-flight (ETAGD_MAX_IN_FLIGHT)\n",
    )));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(RETRY_AFTER, HeaderValue::from_static(OVERLOAD_RETRY_AFTER_S));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(CACHE_STATUS, HeaderValue::from_static("etagd; fwd=bypass; detail=overloaded"));
    response
}

/// A response body that holds its request's in-flight permit until hyper has sent it (or dropped it), so a
/// streamed body counts as in flight for as long as it streams.
struct InFlight {
    body: Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for InFlight {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Either a response of a request let in, holding its permit, or an answer sent without one.
type ProxyBody = http_body_util::Either<InFlight, Body>;

async fn serve_proxy(
    listener: TcpListener,
    proxy: Arc<proxy::Proxy>,
    metrics: Arc<metrics::Metrics>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    let mut http = http1::Builder::new();
    // hyper only applies a header-read timeout with a timer; it also bounds a keep-alive connection's wait for
    // its next request.
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off briefly instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let proxy = proxy.clone();
                let metrics = metrics.clone();
                let in_flight = in_flight.clone();
                let service = service_fn(move |request| {
                    let proxy = proxy.clone();
                    let permit = in_flight.clone().try_acquire_owned();
                    let metrics = metrics.clone();
                    async move {
                        let response = match permit {
                            Ok(permit) => proxy
                                .handle(request, Some(peer))
                                .await
                                .map(|body| ProxyBody::Left(InFlight { body, _permit: permit })),
                            Err(_) => {
                                metrics.overload_refused.inc();
                                overloaded().map(ProxyBody::Right)
                            }
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let connection = http.serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("drain timeout passed with requests still in flight");
    }
}
