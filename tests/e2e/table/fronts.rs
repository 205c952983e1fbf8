//! The two ends of a case: the origin it runs against ([`Upstream`]: the scriptable axum origin, or the raw
//! HTTP/1.1 one) and the front its requests go through ([`Front`]: a sidecar, or the tower layer served on
//! loopback in front of a service that forwards to the origin over HTTP).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request, Response};
use bytes::Bytes;
use etagd_client::cache::{Cache, CacheConfig};
use etagd_client::key::{Namespace, ResourceKey};
use etagd_client::layer::EtagCacheLayer;
use etagd_client::store::memcached::{MemcachedConfig, MemcachedStore};
use etagd_testkit::{Memcached, unique_namespace};

use super::raw_origin::RawOrigin;
use super::{Case, Layer, Serve};
use crate::support::{self, Fleet, HOST, Origin, Reply, Route};

/// The sidecar front's name in reports.
pub(super) const SIDECAR: &str = "sidecar";
/// The layer front's name in reports.
pub(super) const LAYER: &str = "layer";

/// The origin of one case on one front.
pub(super) enum Upstream {
    Axum(Origin),
    Raw(RawOrigin),
}

fn route(serve: &Serve) -> Route {
    assert!(serve.interim.is_empty(), "{}: interim responses need the raw origin", serve.path);
    let mut route = Route::new().status(serve.status).revalidates();
    for (name, value) in serve.headers {
        route = route.header(name, value);
    }
    if let Some(body) = serve.body {
        route = route.body(move |_| Bytes::from_static(body.as_bytes()));
    }
    if let Some(header) = serve.echo {
        route = route.body(move |ask| {
            let value = ask.headers.get(header).and_then(|v| v.to_str().ok()).unwrap_or("none");
            Bytes::from(format!("{} {value}", ask.path))
        });
    }
    route
}

impl Upstream {
    /// Starts the case's origin with its routes.
    pub(super) async fn start(case: &'static Case) -> Upstream {
        if case.raw_origin {
            return Upstream::Raw(RawOrigin::start(case.routes).await);
        }
        let origin = Origin::start().await;
        for serve in case.routes {
            origin.route(serve.path, route(serve));
        }
        Upstream::Axum(origin)
    }

    pub(super) fn url(&self) -> &str {
        match self {
            Upstream::Axum(origin) => &origin.url,
            Upstream::Raw(origin) => &origin.url,
        }
    }

    /// Requests `path` has received.
    pub(super) fn count(&self, path: &str) -> usize {
        match self {
            Upstream::Axum(origin) => origin.count(path),
            Upstream::Raw(origin) => origin.count(path),
        }
    }

    /// The headers of the last request for `path` (empty for the raw origin, which does not keep them).
    pub(super) fn last_headers(&self, path: &str) -> http::HeaderMap {
        match self {
            Upstream::Axum(origin) => origin.last_headers(path),
            Upstream::Raw(_) => http::HeaderMap::new(),
        }
    }

    fn axum(&mut self) -> &mut Origin {
        match self {
            Upstream::Axum(origin) => origin,
            Upstream::Raw(_) => panic!("the raw origin cannot change its script"),
        }
    }

    pub(super) fn route(&mut self, serve: &Serve) {
        self.axum().route(serve.path, route(serve));
    }

    pub(super) fn fail(&mut self, failing: bool) {
        self.axum().fail(failing);
    }

    pub(super) async fn stop(&mut self) {
        self.axum().stop().await;
    }
}

/// Where a case's requests go.
pub(super) enum Front {
    Sidecar { replica: support::Replica, config: Option<std::path::PathBuf> },
    Layer { url: String, client: reqwest::Client, cache: Cache, task: tokio::task::JoinHandle<()> },
}

impl Front {
    /// Starts `front` (`SIDECAR` or `LAYER`) for `case` in front of `upstream`, in a fresh namespace.
    pub(super) async fn start(case: &Case, front: &str, upstream: &Upstream, memcached: &Memcached) -> Front {
        if front == SIDECAR {
            let fleet = Fleet::for_url(upstream.url(), &[memcached]);
            if case.sidecar_toml.is_empty() {
                return Front::Sidecar { replica: fleet.replica(&[]).await, config: None };
            }
            let path = std::env::temp_dir().join(format!("etagd-case-{}.toml", unique_namespace()));
            std::fs::write(&path, case.sidecar_toml).expect("write the case's TOML file");
            let replica = fleet.replica(&["--config", path.to_str().expect("a UTF-8 temp path")]).await;
            return Front::Sidecar { replica, config: Some(path) };
        }
        let layer = layer(memcached).await;
        let layer = match case.layer {
            Layer::With(with) => with(layer),
            Layer::Same => layer,
            Layer::Skip(why) => panic!("the layer cannot run this case: {why}"),
        };
        let cache = layer.cache().clone();
        let origin_url = upstream.url().to_owned();
        let client = support::http_client();
        let forward = tower::service_fn(move |request: Request<Body>| {
            let (origin_url, client) = (origin_url.clone(), client.clone());
            async move { Ok::<_, Infallible>(forward(&client, &origin_url, request).await) }
        });
        let app = Router::new().fallback_service(forward).layer(layer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the layer's app on loopback");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Front::Layer { url, client: support::http_client(), cache, task }
    }

    /// Sends one request with `Host: app.test` and checks what every response keeps.
    pub(super) async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        match self {
            Front::Sidecar { replica, .. } => replica.request(method, path, headers).await,
            Front::Layer { url, client, .. } => {
                let mut all = vec![("host", HOST)];
                all.extend_from_slice(headers);
                let reply = support::send(client, method, &format!("{url}{path}"), &all, None).await;
                support::check_invariants(method, path, &reply);
                reply
            }
        }
    }

    /// Waits (bounded) until this front's cache holds a fresh entry for `path`.
    pub(super) async fn settle(&self, path: &str) {
        let cache = match self {
            Front::Sidecar { replica, .. } => replica.cache(),
            Front::Layer { cache, .. } => cache,
        };
        let resource = ResourceKey::from_url(&support::url(path)).expect("a valid URL");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let inspection = cache.inspect(&resource, &http::HeaderMap::new()).await.expect("memcached answers");
            if inspection.entry.is_some_and(|entry| entry.state == "fresh") {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{path} was not refreshed within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(super) async fn shutdown(self) {
        match self {
            Front::Sidecar { replica, config } => {
                replica.shutdown().await;
                if let Some(path) = config {
                    let _ = std::fs::remove_file(path);
                }
            }
            Front::Layer { task, .. } => task.abort(),
        }
    }
}

/// The layer with the settings that match the sidecar's defaults, in a fresh namespace.
async fn layer(memcached: &Memcached) -> EtagCacheLayer {
    let store = MemcachedStore::connect(MemcachedConfig {
        servers: vec![memcached.addr()],
        connect_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_secs(2),
        ..MemcachedConfig::default()
    })
    .await
    .expect("memcached client");
    let namespace = Namespace::new(&unique_namespace()).expect("valid namespace");
    let cache = Cache::new(Arc::new(store), CacheConfig { namespace, ..CacheConfig::default() });
    // The sidecar keeps no answer without freshness; the layer's default is until invalidated.
    EtagCacheLayer::new(cache).ttl(Duration::ZERO)
}

/// The wrapped service: the request, as received, to the origin over HTTP.
async fn forward(client: &reqwest::Client, origin: &str, request: Request<Body>) -> Response<Body> {
    let (parts, _) = request.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |t| t.as_str());
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).expect("valid method");
    let mut outgoing = client.request(method, format!("{origin}{target}"));
    for (name, value) in &parts.headers {
        outgoing = outgoing.header(name.as_str(), value.as_bytes());
    }
    let answer = outgoing.send().await.expect("the test origin answers");
    let mut response = Response::new(Body::empty());
    *response.status_mut() = answer.status();
    for (name, value) in answer.headers() {
        let name = HeaderName::from_bytes(name.as_str().as_bytes()).expect("valid name");
        response.headers_mut().append(name, HeaderValue::from_bytes(value.as_bytes()).expect("valid value"));
    }
    *response.body_mut() = Body::from(answer.bytes().await.expect("the test origin's body"));
    response
}
