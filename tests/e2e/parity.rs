//! Parity: the sidecar and the tower layer are two fronts of one exchange. One table of request/response cases
//! runs through both, against the same origin and the same memcached (a namespace each), and every case must
//! give both the same status, validator, `Cache-Status` and stored/not-stored outcome.

use std::convert::Infallible;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request, Response};
use etagd_client::cache::{Cache, CacheConfig};
use etagd_client::key::Namespace;
use etagd_client::layer::EtagCacheLayer;
use etagd_client::store::memcached::{MemcachedConfig, MemcachedStore};
use etagd_testkit::{Memcached, unique_namespace};

use crate::support::{self, Fleet, HOST, Origin, Reply, Route, guard};

/// One step of a case: a request and what both fronts must answer.
struct Step {
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    status: u16,
    cache_status: &'static str,
    /// Requests this step sends to the origin.
    origin_calls: usize,
}

const fn get(
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    status: u16,
    cache_status: &'static str,
    origin_calls: usize,
) -> Step {
    Step { method: "GET", path, headers, status, cache_status, origin_calls }
}

struct Case {
    name: &'static str,
    /// The origin's routes: path and response headers.
    routes: &'static [(&'static str, &'static [(&'static str, &'static str)])],
    steps: &'static [Step],
}

const FRESH: &[(&str, &str)] = &[("cache-control", "max-age=60")];

const CASES: &[Case] = &[
    // RFC 9111 section 4.2: a fresh response answers without the origin.
    Case {
        name: "fresh",
        routes: &[("/fresh", FRESH)],
        steps: &[
            get("/fresh", &[], 200, "etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60", 1),
            get("/fresh", &[], 200, "etagd; hit; ttl=60", 0),
        ],
    },
    // RFC 9111 sections 4.2.3 and 4.3: stored already stale (Age above max-age), so the next use revalidates;
    // the origin's 304 refreshes the stored response (section 4.3.4).
    Case {
        name: "stale, 304 from origin",
        routes: &[("/stale", &[("cache-control", "max-age=60"), ("age", "100"), ("etag", "\"o1\"")])],
        steps: &[
            get("/stale", &[], 200, "etagd; fwd=uri-miss; fwd-status=200; stored; ttl=-40", 1),
            get("/stale", &[], 200, "etagd; fwd=stale; fwd-status=304; stored; ttl=-40", 1),
        ],
    },
    // RFC 9110 section 12.5.5 / RFC 9111 section 4.1: each Vary variant is its own entry.
    Case {
        name: "vary",
        routes: &[("/vary", &[("cache-control", "max-age=60"), ("vary", "accept-language")])],
        steps: &[
            get("/vary", &[("accept-language", "de")], 200, "etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60", 1),
            get("/vary", &[("accept-language", "fr")], 200, "etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60", 1),
            get("/vary", &[("accept-language", "de")], 200, "etagd; hit; ttl=60", 0),
        ],
    },
    // RFC 9111 section 3: no-store is never stored, and marks the resource hit-for-pass.
    Case {
        name: "no-store",
        routes: &[("/no-store", &[("cache-control", "no-store")])],
        steps: &[
            get("/no-store", &[], 200, "etagd; fwd=uri-miss; fwd-status=200; detail=no-store", 1),
            get("/no-store", &[], 200, "etagd; fwd=bypass; fwd-status=200; detail=hit-for-pass-no-store", 1),
        ],
    },
    // RFC 9111 section 5.2.2.7: private responses are not stored by a shared cache.
    Case {
        name: "private",
        routes: &[("/private", &[("cache-control", "private, max-age=60")])],
        steps: &[get("/private", &[], 200, "etagd; fwd=uri-miss; fwd-status=200; detail=private", 1)],
    },
    // RFC 9111 section 3.5: not shared without public/s-maxage, and the refusal leaves no pass marker.
    Case {
        name: "authorization",
        routes: &[("/auth", FRESH)],
        steps: &[
            get(
                "/auth",
                &[("authorization", "Bearer x")],
                200,
                "etagd; fwd=uri-miss; fwd-status=200; detail=authorization",
                1,
            ),
            get("/auth", &[], 200, "etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60", 1),
        ],
    },
    // A response setting a cookie is never shared.
    Case {
        name: "set-cookie",
        routes: &[("/cookie", &[("cache-control", "max-age=60"), ("set-cookie", "s=1")])],
        steps: &[
            get("/cookie", &[], 200, "etagd; fwd=uri-miss; fwd-status=200; detail=set-cookie", 1),
            get("/cookie", &[], 200, "etagd; fwd=bypass; fwd-status=200; detail=hit-for-pass-set-cookie", 1),
        ],
    },
    // RFC 9111 section 4.4: a successful unsafe method invalidates its target.
    Case {
        name: "unsafe method",
        routes: &[("/items", FRESH)],
        steps: &[
            get("/items", &[], 200, "etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60", 1),
            Step {
                method: "POST",
                path: "/items",
                headers: &[],
                status: 200,
                cache_status: "etagd; fwd=method; fwd-status=200",
                origin_calls: 1,
            },
            get("/items", &[], 200, "etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60", 1),
        ],
    },
    // RFC 9110 section 14: a range is answered from the stored whole representation, on the fill too.
    Case {
        name: "range",
        routes: &[("/ranged", FRESH)],
        steps: &[
            get("/ranged", &[("range", "bytes=0-3")], 206, "etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60", 1),
            get("/ranged", &[("range", "bytes=-2")], 206, "etagd; hit; ttl=60", 0),
        ],
    },
    // A forwarded scheme in odd case from a client that is not a trusted proxy changes nothing.
    Case {
        name: "forwarded scheme in odd case",
        routes: &[("/scheme", FRESH)],
        steps: &[
            get("/scheme", &[], 200, "etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60", 1),
            get("/scheme", &[("x-forwarded-proto", "HTTPS")], 200, "etagd; hit; ttl=60", 0),
        ],
    },
    // RFC 3986 section 6.2.2.2: a percent-encoded unreserved character names the same resource.
    Case {
        name: "percent-encoded path",
        routes: &[("/api/x", FRESH), ("/%61pi/x", FRESH)],
        steps: &[
            get("/api/x", &[], 200, "etagd; fwd=uri-miss; fwd-status=200; stored; ttl=60", 1),
            get("/%61pi/x", &[], 200, "etagd; hit; ttl=60", 0),
        ],
    },
];

/// Where a case's requests go.
enum Front {
    Sidecar(support::Replica),
    Layer { url: String, client: reqwest::Client },
}

impl Front {
    fn name(&self) -> &'static str {
        match self {
            Front::Sidecar(_) => "sidecar",
            Front::Layer { .. } => "layer",
        }
    }

    async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        match self {
            Front::Sidecar(replica) => replica.request(method, path, headers).await,
            Front::Layer { url, client } => {
                let mut all = vec![("host", HOST)];
                all.extend_from_slice(headers);
                let reply = support::send(client, method, &format!("{url}{path}"), &all, None).await;
                support::check_invariants(method, path, &reply);
                reply
            }
        }
    }
}

/// The layer in front of a service that forwards to the test origin over HTTP, served on loopback.
async fn layer_front(origin: &Origin, memcached: &Memcached) -> Front {
    let store = MemcachedStore::connect(MemcachedConfig {
        servers: vec![memcached.addr()],
        connect_timeout: std::time::Duration::from_secs(2),
        io_timeout: std::time::Duration::from_secs(2),
        ..MemcachedConfig::default()
    })
    .await
    .expect("memcached client");
    let namespace = Namespace::new(&unique_namespace()).expect("valid namespace");
    let cache = Cache::new(std::sync::Arc::new(store), CacheConfig { namespace, ..CacheConfig::default() });
    // Same settings as the sidecar's defaults: answers without freshness are not kept.
    let layer = EtagCacheLayer::new(cache).ttl(std::time::Duration::ZERO);
    let origin_url = origin.url.clone();
    let client = support::http_client();
    let forward = tower::service_fn(move |request: Request<Body>| {
        let (origin_url, client) = (origin_url.clone(), client.clone());
        async move { Ok::<_, Infallible>(forward(&client, &origin_url, request).await) }
    });
    let app = Router::new().fallback_service(forward).layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the layer's app on loopback");
    let url = format!("http://{}", listener.local_addr().expect("bound"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Front::Layer { url, client: support::http_client() }
}

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

/// What one step saw, reduced to what must agree between the fronts.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    cache_status: String,
    etag: Option<String>,
    origin_calls: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_fronts_answer_every_case_alike() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        for case in CASES {
            for (path, headers) in case.routes {
                let mut route = Route::new().revalidates();
                for (name, value) in *headers {
                    route = route.header(name, value);
                }
                origin.route(path, route);
            }
        }
        let fleet = Fleet::new(&origin, &[&memcached]);
        let fronts = [Front::Sidecar(fleet.replica(&[]).await), layer_front(&origin, &memcached).await];
        for case in CASES {
            let mut seen: Vec<Vec<Seen>> = Vec::new();
            for front in &fronts {
                let mut steps = Vec::new();
                for step in case.steps {
                    let before = origin.count(step.path);
                    let reply = front.request(step.method, step.path, step.headers).await;
                    let fresh_origin_etag =
                        case.routes.iter().any(|(_, headers)| headers.iter().any(|(n, _)| *n == "etag"));
                    steps.push(Seen {
                        status: reply.status,
                        cache_status: reply.cache_status(),
                        // Minted tags differ per fill; the origin's own must come through unchanged.
                        etag: if fresh_origin_etag { Some(reply.etag()) } else { None },
                        origin_calls: origin.count(step.path) - before,
                    });
                    let expected = Seen {
                        status: step.status,
                        cache_status: step.cache_status.to_owned(),
                        etag: fresh_origin_etag.then(|| "\"o1\"".to_owned()),
                        origin_calls: step.origin_calls,
                    };
                    assert_eq!(
                        steps.last(),
                        Some(&expected),
                        "{} via {}: {} {}",
                        case.name,
                        front.name(),
                        step.method,
                        step.path
                    );
                }
                seen.push(steps);
            }
            assert_eq!(seen[0], seen[1], "{}: the sidecar and the layer disagree", case.name);
        }
        if let [Front::Sidecar(replica), _] = fronts {
            replica.shutdown().await;
        }
    })
    .await;
}
