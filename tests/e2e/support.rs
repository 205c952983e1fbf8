//! Shared fixtures for the end-to-end tests: a scriptable origin (an axum app on 127.0.0.1:0 that counts its
//! requests per path), etagd replicas started in process against real memcached servers, and an HTTP helper
//! that checks the invariants every proxied response must keep.
//!
//! Every proxied request carries `Host: app.test`, so both replicas of a test key the same resource the same way
//! (the Host header is part of the cache key) and admin URLs read `http://app.test/...`.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use etagd_testkit::Memcached;
use futures_util::StreamExt;
use tokio::sync::{Semaphore, oneshot};

/// The host every proxied request names.
pub(crate) const HOST: &str = "app.test";

/// How long one HTTP request may take before the test fails instead of hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a whole test may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a test body under a generous deadline so a hang fails the test instead of the run.
pub(crate) async fn guard<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test).await.expect("the test did not finish within its hang guard");
}

/// The absolute URL etagd files a path under (what the admin API takes).
pub(crate) fn url(path: &str) -> String {
    format!("http://{HOST}{path}")
}

/// What the origin knows when it builds a body.
#[derive(Debug, Clone)]
pub(crate) struct Ask {
    /// Path and query.
    pub(crate) path: String,
    /// The request's headers as the origin received them.
    pub(crate) headers: HeaderMap,
    /// How many requests this path has received, this one included.
    pub(crate) n: usize,
    /// The origin's data version when the request arrived.
    pub(crate) version: usize,
}

type BodyFn = Arc<dyn Fn(&Ask) -> Bytes + Send + Sync>;

/// How the origin answers one path.
#[derive(Clone)]
pub(crate) struct Route {
    status: u16,
    headers: Vec<(String, String)>,
    body: BodyFn,
    chunked: bool,
    delay: Duration,
    gate: Option<Arc<Semaphore>>,
    stall: Option<(usize, Arc<Semaphore>)>,
    revalidates: bool,
}

impl Route {
    /// 200 with `Cache-Control: max-age=60` and the body `<path> v<version>`.
    pub(crate) fn cacheable() -> Self {
        Route::new().header("cache-control", "max-age=60")
    }

    /// 200 with no headers of its own and the body `<path> v<version>`.
    pub(crate) fn new() -> Self {
        Route {
            status: 200,
            headers: Vec::new(),
            body: Arc::new(|ask: &Ask| Bytes::from(format!("{} v{}", ask.path, ask.version))),
            chunked: false,
            delay: Duration::ZERO,
            gate: None,
            stall: None,
            revalidates: false,
        }
    }

    /// Answers a conditional request whose `If-None-Match` names the route's `ETag` with a 304 and the route's
    /// headers (RFC 9110 section 13.1.2), as an origin that validates does.
    pub(crate) fn revalidates(mut self) -> Self {
        self.revalidates = true;
        self
    }

    /// Adds a response header.
    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Answers with this status.
    pub(crate) fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Builds the body from the request.
    pub(crate) fn body(mut self, body: impl Fn(&Ask) -> Bytes + Send + Sync + 'static) -> Self {
        self.body = Arc::new(body);
        self
    }

    /// Sends the body in chunks without `Content-Length`.
    pub(crate) fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }

    /// Sleeps this long after counting the request, before answering.
    pub(crate) fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sends the first `bytes` of the body (with its `Content-Length`, unless [`chunked`](Self::chunked)), then
    /// waits for a permit of `gate` before sending the rest: an origin stalling halfway.
    pub(crate) fn stall_after(mut self, bytes: usize, gate: Arc<Semaphore>) -> Self {
        self.stall = Some((bytes, gate));
        self
    }

    /// Waits for a permit of `gate` after counting the request and building the body (so the body reflects
    /// the data as it was when the request arrived).
    pub(crate) fn gate(mut self, gate: Arc<Semaphore>) -> Self {
        self.gate = Some(gate);
        self
    }
}

impl Default for Route {
    fn default() -> Self {
        Route::new()
    }
}

#[derive(Default)]
struct OriginState {
    routes: Mutex<HashMap<String, Route>>,
    counts: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    last_headers: Mutex<HashMap<String, HeaderMap>>,
    version: AtomicUsize,
    failing: AtomicBool,
}

impl OriginState {
    fn counter(&self, path: &str) -> Arc<AtomicUsize> {
        self.counts.lock().expect("no test panics while holding the lock").entry(path.to_owned()).or_default().clone()
    }
}

/// A running origin. Unknown paths answer with [`Route::new`].
pub(crate) struct Origin {
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    state: Arc<OriginState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Origin {
    /// Starts an origin on a free loopback port.
    pub(crate) async fn start() -> Origin {
        let state = Arc::new(OriginState { version: AtomicUsize::new(1), ..OriginState::default() });
        let shared = state.clone();
        let app = Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
            let state = shared.clone();
            async move { answer(&state, &method, &uri, headers).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the origin on loopback");
        let addr: SocketAddr = listener.local_addr().expect("a bound listener has an address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Origin { url: format!("http://{addr}"), state, stop: Some(stop), task: Some(task) }
    }

    /// Sets how `path` (path and query) is answered.
    pub(crate) fn route(&self, path: &str, route: Route) {
        self.state.routes.lock().expect("no test panics while holding the lock").insert(path.to_owned(), route);
    }

    /// How many requests `path` (path and query) has received.
    pub(crate) fn count(&self, path: &str) -> usize {
        self.state.counter(path).load(Ordering::SeqCst)
    }

    /// The headers of the last request for `path`.
    pub(crate) fn last_headers(&self, path: &str) -> HeaderMap {
        self.state
            .last_headers
            .lock()
            .expect("no test panics while holding the lock")
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// Changes the data: bodies built from now on carry the next version.
    pub(crate) fn bump_version(&self) -> usize {
        self.state.version.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// While on, every request is counted and answered 500.
    pub(crate) fn fail(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Waits (bounded) until `path` has received at least `n` requests; returns the count.
    pub(crate) async fn wait_count(&self, path: &str, n: usize) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let count = self.count(path);
            if count >= n || tokio::time::Instant::now() >= deadline {
                return count;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops listening and closes idle connections, as if the app went away.
    pub(crate) async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn answer(state: &OriginState, method: &Method, uri: &Uri, headers: HeaderMap) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    // Read before counting: once a test sees the count, the data this request renders is fixed.
    let version = state.version.load(Ordering::SeqCst);
    let n = state.counter(&path).fetch_add(1, Ordering::SeqCst) + 1;
    state.last_headers.lock().expect("no test panics while holding the lock").insert(path.clone(), headers.clone());
    if state.failing.load(Ordering::SeqCst) {
        return plain_response(500, "origin failing\n");
    }
    let route = state
        .routes
        .lock()
        .expect("no test panics while holding the lock")
        .get(&path)
        .cloned()
        .unwrap_or_else(Route::new);
    let etag = route.headers.iter().find(|(name, _)| name.eq_ignore_ascii_case("etag")).map(|(_, v)| v.clone());
    let not_modified = route.revalidates
        && etag.is_some_and(|etag| headers.get("if-none-match").is_some_and(|inm| inm.as_bytes() == etag.as_bytes()));
    let ask = Ask { path, headers, n, version };
    let body = (route.body)(&ask);
    if !route.delay.is_zero() {
        tokio::time::sleep(route.delay).await;
    }
    if let Some(gate) = &route.gate {
        let _permit = gate.acquire().await.expect("the gate is never closed");
    }
    // A HEAD answer describes the GET's body (RFC 9110 section 9.3.2), its length included.
    let head_length = (*method == Method::HEAD && !not_modified && !route.chunked).then_some(body.len());
    let stall_length =
        (route.stall.is_some() && !route.chunked && *method != Method::HEAD && !not_modified).then_some(body.len());
    let body = if *method == Method::HEAD || not_modified {
        Body::empty()
    } else if let Some((first, gate)) = route.stall.clone() {
        let (head, rest) = (body.slice(..first.min(body.len())), body.slice(first.min(body.len())..));
        let rest = async move {
            let _permit = gate.acquire().await.expect("the gate is never closed");
            Ok::<_, std::io::Error>(rest)
        };
        Body::from_stream(futures_util::stream::iter([Ok(head)]).chain(futures_util::stream::once(rest)))
    } else if route.chunked {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            body.chunks(1000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        Body::from_stream(futures_util::stream::iter(chunks))
    } else {
        Body::from(body)
    };
    let mut response = Response::new(body);
    if let Some(length) = head_length.or(stall_length) {
        response.headers_mut().insert(axum::http::header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    let status = if not_modified { 304 } else { route.status };
    *response.status_mut() = StatusCode::from_u16(status).expect("routes use valid statuses");
    for (name, value) in &route.headers {
        response.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("routes use valid header names"),
            HeaderValue::from_str(value).expect("routes use valid header values"),
        );
    }
    response
}

fn plain_response(status: u16, text: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = StatusCode::from_u16(status).expect("a valid status");
    response
}

/// A response, fully read.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// The status code.
    pub(crate) status: u16,
    /// The headers.
    pub(crate) headers: reqwest::header::HeaderMap,
    /// The body bytes.
    pub(crate) body: Bytes,
}

impl Reply {
    /// A header's value as text ("" when absent or not text).
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The body as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `ETag`.
    pub(crate) fn etag(&self) -> String {
        self.header("etag").to_owned()
    }

    /// The `Cache-Status` value.
    pub(crate) fn cache_status(&self) -> String {
        self.header("cache-status").to_owned()
    }

    /// Whether `Cache-Status` reports a hit (RFC 9211 section 2.1: the `hit` parameter), fresh or stale.
    pub(crate) fn is_hit(&self) -> bool {
        self.cache_status().split(';').skip(1).any(|param| param.trim() == "hit")
    }

    /// A hit served fresh (not stale, not in grace).
    pub(crate) fn is_fresh_hit(&self) -> bool {
        self.is_hit() && !self.cache_status().contains("stale")
    }

    /// The body parsed as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Headers a response from etagd must never carry: etagd's own input headers and hop-by-hop fields the test
/// origin sends.
const NEVER_FORWARDED: [&str; 6] =
    ["surrogate-key", "etagd-invalidate", "keep-alive", "proxy-connection", "proxy-authenticate", "x-hop"];

/// Checks what every response from the proxy must keep, whatever the test.
pub(crate) fn check_invariants(method: &str, path: &str, reply: &Reply) {
    let status = reply.cache_status();
    assert!(
        status.starts_with("etagd"),
        "{method} {path}: every response carries Cache-Status, got {:?} ({} {:?})",
        status,
        reply.status,
        reply.headers
    );
    for name in NEVER_FORWARDED {
        assert!(!reply.headers.contains_key(name), "{method} {path}: {name} reached the client: {:?}", reply.headers);
    }
    // RFC 9111 section 5.1: an answer from storage says how old it is; one the origin made for this request
    // (a fill) carries no Age of the cache's.
    if reply.is_hit() && reply.status != 304 {
        assert!(
            reply.headers.contains_key("age"),
            "{method} {path}: an answer from storage carries Age: {:?}",
            reply.headers
        );
    }
}

pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        // A redirect is an answer to check (and to store), not something to follow.
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("a plain HTTP client builds")
}

pub(crate) async fn send(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid method");
    let mut request = client.request(method.clone(), url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap_or_else(|e| panic!("{method} {url}: body: {e}"));
    Reply { status, headers, body }
}

/// One etagd sidecar started in process.
pub(crate) struct Replica {
    running: Option<etagd::Running>,
    proxy: String,
    admin: String,
    client: reqwest::Client,
}

/// Starts replicas that share a namespace (and therefore a cache) over the same memcached servers.
pub(crate) struct Fleet {
    origin_url: String,
    memcached: Vec<String>,
    namespace: String,
}

impl Fleet {
    /// A fleet in front of `origin`, on these memcached servers, in a fresh namespace.
    pub(crate) fn new(origin: &Origin, memcached: &[&Memcached]) -> Fleet {
        Fleet::for_url(&origin.url, memcached)
    }

    /// A fleet in front of the origin at `url`, on these memcached servers, in a fresh namespace.
    pub(crate) fn for_url(url: &str, memcached: &[&Memcached]) -> Fleet {
        Fleet {
            origin_url: url.to_owned(),
            memcached: memcached.iter().map(|m| m.addr()).collect(),
            namespace: etagd_testkit::unique_namespace(),
        }
    }

    /// Starts one replica with extra flags.
    pub(crate) async fn replica(&self, extra: &[&str]) -> Replica {
        let servers = self.memcached.join(",");
        let mut args = vec![
            "etagd",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--upstream",
            &self.origin_url,
            "--namespace",
            &self.namespace,
        ];
        if !servers.is_empty() {
            args.extend(["--memcached", &servers]);
        }
        // Generous timeouts: a loaded test machine must not make a live server look dead. A test passing one of
        // these flags itself replaces the default (clap refuses a flag given twice).
        for (flag, value) in
            [("--drain-timeout", "2s"), ("--memcached-timeout", "2s"), ("--memcached-connect-timeout", "2s")]
        {
            if !extra.contains(&flag) {
                args.extend([flag, value]);
            }
        }
        args.extend_from_slice(extra);
        let config = etagd::config::Config::try_parse_from(args).expect("valid etagd flags");
        let running = etagd::start(config).await.expect("etagd starts");
        Replica {
            proxy: format!("http://{}", running.proxy_addr),
            admin: format!("http://{}", running.admin_addr),
            running: Some(running),
            client: http_client(),
        }
    }

    /// The namespace the fleet's replicas share.
    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Starts two replicas with the same extra flags.
    pub(crate) async fn pair(&self, extra: &[&str]) -> (Replica, Replica) {
        (self.replica(extra).await, self.replica(extra).await)
    }
}

impl Replica {
    /// Sends a request through the proxy with `Host: app.test` and checks the invariants every response keeps.
    pub(crate) async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut all = vec![("host", HOST)];
        all.extend_from_slice(headers);
        let url = format!("{}{path}", self.proxy);
        let reply = send(&self.client, method, &url, &all, None).await;
        check_invariants(method, path, &reply);
        reply
    }

    /// A GET through the proxy naming another host than [`HOST`] (the host is part of the key).
    pub(crate) async fn get_on_host(&self, host: &str, path: &str) -> Reply {
        let url = format!("{}{path}", self.proxy);
        let reply = send(&self.client, "GET", &url, &[("host", host)], None).await;
        check_invariants("GET", path, &reply);
        reply
    }

    /// A request with a body through the proxy (any method, GET included).
    pub(crate) async fn request_with_body(&self, method: &str, path: &str, body: &str) -> Reply {
        let url = format!("{}{path}", self.proxy);
        let reply = send(&self.client, method, &url, &[("host", HOST)], Some(body.to_owned())).await;
        check_invariants(method, path, &reply);
        reply
    }

    /// A GET through the proxy.
    pub(crate) async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.request("GET", path, headers).await
    }

    /// A GET through the proxy that must answer 200; returns the reply.
    pub(crate) async fn get_ok(&self, path: &str) -> Reply {
        let reply = self.get(path, &[]).await;
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.text());
        reply
    }

    /// The proxy's base URL.
    pub(crate) fn proxy_url(&self) -> String {
        self.proxy.clone()
    }

    /// The admin port's base URL.
    pub(crate) fn admin_url(&self) -> String {
        self.admin.clone()
    }

    /// A request to the admin port.
    pub(crate) async fn admin(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
        let url = format!("{}{path}", self.admin);
        send(&self.client, method, &url, headers, body.map(str::to_owned)).await
    }

    /// `POST /invalidate` with a JSON body; the invalidation must succeed.
    pub(crate) async fn invalidate(&self, json: &str) -> serde_json::Value {
        let reply = self.admin("POST", "/invalidate", &[("content-type", "application/json")], Some(json)).await;
        assert_eq!(reply.status, 200, "invalidate {json}: {}", reply.text());
        reply.json()
    }

    /// Polls `/entries` (which takes no lease and starts no refresh) until the entry for `path` is in `state`
    /// (bounded); returns the last inspection.
    pub(crate) async fn wait_entry_state(&self, path: &str, state: &str) -> serde_json::Value {
        let query = format!("/entries?url={}", url(path));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let inspection = self.admin("GET", &query, &[], None).await.json();
            if inspection["entry"]["state"] == state || tokio::time::Instant::now() >= deadline {
                return inspection;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The engine of this replica.
    pub(crate) fn cache(&self) -> &etagd_client::cache::Cache {
        &self.running.as_ref().expect("the replica is running").cache
    }

    /// Stops the replica.
    pub(crate) async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(10), running.shutdown()).await.expect("etagd shuts down");
        }
    }
}

/// Shuts down every replica given.
pub(crate) async fn shutdown_all(replicas: impl IntoIterator<Item = Replica>) {
    for replica in replicas {
        replica.shutdown().await;
    }
}
