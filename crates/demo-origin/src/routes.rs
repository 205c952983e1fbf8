//! The HTTP routes of the demo origin and the state they share.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/bytes/{n}` | `n` opaque bytes (at most 8 MiB), `ETag: "b<n>"`, `Cache-Control: public, max-age=3600`; 304 on a matching `If-None-Match` |
//! | GET | `/b2k.json`, `/b64k.json` | the same answers as `/bytes/2048` and `/bytes/65536`: the two paths the benchmark's ceiling stand-in (`limit`) serves, so its bodies are byte for byte the others' |
//! | GET | `/json/{n}` | a JSON array of about `n` bytes, `Cache-Control: public, max-age=3600`, no `ETag` (the cache mints one) |
//! | GET | `/stream/{n}?ms=&pieces=` | the `/json/{n}` body sent chunked in pieces spread over `ms` milliseconds (see `stream.rs`) |
//! | GET | `/api/servers` | the server inventory after `--delay-ms`, `Surrogate-Key: servers`, `Cache-Control: public, s-maxage=3600`, no `ETag` |
//! | POST | `/api/servers` | appends a server (JSON body, or generated when the body is empty); 201 with `Location: /api/servers` |
//! | GET | `/healthz` | `ok` |
//!
//! Every response carries `X-Served-By` when `--name` is set.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

use crate::conditional::none_match;
use crate::payload::{JsonBodies, MAX_BODY, opaque_bytes};
use crate::servers::{Inventory, NewServer};

pub(crate) const PUBLIC_HOUR: HeaderValue = HeaderValue::from_static("public, max-age=3600");
const SHARED_HOUR: HeaderValue = HeaderValue::from_static("public, s-maxage=3600");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");
pub(crate) const JSON: HeaderValue = HeaderValue::from_static("application/json");
const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
const X_SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");

/// Sizes built at start-up: the ones the benchmark asks for most. The 8 MiB body of `hit-8m` and the streamed miss
/// is built on its first request instead (the harness's warm-up asks for it before timing anything), so that a
/// debug build used by the tests still starts within a second or two.
const PREBUILT_JSON_SIZES: &[usize] = &[2048, 65536];

/// What the handlers share: pre-built bodies, the inventory and the simulated view time.
#[derive(Debug)]
pub(crate) struct AppState {
    bytes: Bytes,
    json: JsonBodies,
    inventory: Inventory,
    delay: Duration,
}

impl AppState {
    /// Builds every body up front so that no benchmark request pays for it.
    pub(crate) fn new(delay: Duration) -> Self {
        Self {
            bytes: opaque_bytes(),
            json: JsonBodies::prebuilt(PREBUILT_JSON_SIZES),
            inventory: Inventory::new(),
            delay,
        }
    }

    /// The JSON body of about `n` bytes (callers bound `n` by [`MAX_BODY`]).
    pub(crate) fn json(&self, n: usize) -> Bytes {
        self.json.get(n)
    }
}

/// The router, with `X-Served-By: <name>` on every response when a name is given.
pub(crate) fn app(state: Arc<AppState>, name: Option<HeaderValue>) -> Router {
    let router = Router::new()
        .route("/bytes/{n}", get(bytes))
        .route("/b2k.json", get(|state: State<Arc<AppState>>, headers: HeaderMap| bytes(state, Path(2048), headers)))
        .route("/b64k.json", get(|state: State<Arc<AppState>>, headers: HeaderMap| bytes(state, Path(65536), headers)))
        .route("/json/{n}", get(json))
        .route("/stream/{n}", get(crate::stream::stream))
        .route("/api/servers", get(list_servers).post(create_server))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state);
    match name {
        // Without a name the layer is left out, so the benchmark's origin pays nothing for it.
        None => router,
        Some(name) => router.layer(axum::middleware::map_response(move |mut response: Response| {
            let name = name.clone();
            async move {
                response.headers_mut().insert(X_SERVED_BY, name);
                response
            }
        })),
    }
}

pub(crate) fn too_large(n: usize) -> Response {
    (StatusCode::BAD_REQUEST, format!("{n} bytes is more than the {MAX_BODY} this demo serves\n")).into_response()
}

async fn bytes(State(state): State<Arc<AppState>>, Path(n): Path<usize>, headers: HeaderMap) -> Response {
    if n > MAX_BODY {
        return too_large(n);
    }
    let etag = HeaderValue::try_from(format!("\"b{n}\"")).expect("a quoted decimal is a valid header value");
    let cache_headers = [(ETAG, etag.clone()), (CACHE_CONTROL, PUBLIC_HOUR)];
    // RFC 9110 s13.2.2: If-None-Match is evaluated before anything else this route does; a match on a GET
    // is answered 304 with the validator and caching headers the 200 would have carried (RFC 9110 s15.4.5).
    let matched = headers
        .get(IF_NONE_MATCH)
        .is_some_and(|field| none_match(field.as_bytes(), etag.to_str().expect("built from ASCII above")));
    if matched {
        return (StatusCode::NOT_MODIFIED, cache_headers).into_response();
    }
    (cache_headers, [(CONTENT_TYPE, OCTET_STREAM)], state.bytes.slice(..n)).into_response()
}

async fn json(State(state): State<Arc<AppState>>, Path(n): Path<usize>) -> Response {
    if n > MAX_BODY {
        return too_large(n);
    }
    ([(CACHE_CONTROL, PUBLIC_HOUR), (CONTENT_TYPE, JSON)], state.json.get(n)).into_response()
}

async fn list_servers(State(state): State<Arc<AppState>>) -> Response {
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    let headers =
        [(CACHE_CONTROL, SHARED_HOUR), (CONTENT_TYPE, JSON), (SURROGATE_KEY, HeaderValue::from_static("servers"))];
    (headers, state.inventory.body()).into_response()
}

async fn create_server(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let new = if body.iter().all(u8::is_ascii_whitespace) {
        NewServer::default()
    } else {
        match serde_json::from_slice::<NewServer>(&body) {
            Ok(new) => new,
            Err(error) => {
                let message = format!(
                    "the body is not a server: {error}; send a JSON object with any of hostname, ip, role, region, \
                     status, owner, or an empty body for a generated one\n"
                );
                return (StatusCode::BAD_REQUEST, message).into_response();
            }
        }
    };
    let server = state.inventory.add(new);
    let body = serde_json::to_vec(&server).expect("serializing a plain struct cannot fail");
    let headers =
        [(LOCATION, HeaderValue::from_static("/api/servers")), (CONTENT_TYPE, JSON), (CACHE_CONTROL, NO_STORE)];
    (StatusCode::CREATED, headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::{Method, Request};
    use tower::ServiceExt;

    use super::*;

    /// What a test expects back: status, selected headers (None = absent), body length.
    struct Expect<'a> {
        status: u16,
        headers: &'a [(&'a str, Option<&'a str>)],
        body_len: Option<usize>,
    }

    async fn check(
        router: &Router,
        method: Method,
        uri: &str,
        request_headers: &[(&str, &str)],
        body: &str,
        expect: Expect<'_>,
    ) -> Bytes {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in request_headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Body::from(body.to_owned())).expect("test requests are valid");
        let response = router.clone().oneshot(request).await.expect("the router is infallible");
        assert_eq!(response.status().as_u16(), expect.status, "{uri}");
        for (name, value) in expect.headers {
            let got = response.headers().get(*name).map(|v| v.to_str().expect("ascii"));
            assert_eq!(got, *value, "{uri}: {name}");
        }
        let body = to_bytes(response.into_body(), usize::MAX).await.expect("bodies are in memory");
        if let Some(len) = expect.body_len {
            assert_eq!(body.len(), len, "{uri}");
        }
        body
    }

    fn router(name: Option<&'static str>) -> Router {
        app(Arc::new(AppState::new(Duration::ZERO)), name.map(HeaderValue::from_static))
    }

    #[tokio::test]
    async fn routes_answer_as_documented() {
        let r = router(None);
        let etag = Some("\"b2048\"");
        let public = Some("public, max-age=3600");
        let bytes_headers = [("etag", etag), ("cache-control", public), ("x-served-by", None)];
        check(
            &r,
            Method::GET,
            "/bytes/2048",
            &[],
            "",
            Expect { status: 200, headers: &bytes_headers, body_len: Some(2048) },
        )
        .await;
        check(
            &r,
            Method::GET,
            "/bytes/0",
            &[],
            "",
            Expect { status: 200, headers: &[("etag", Some("\"b0\""))], body_len: Some(0) },
        )
        .await;
        let not_modified = [("etag", etag), ("cache-control", public)];
        check(
            &r,
            Method::GET,
            "/bytes/2048",
            &[("if-none-match", "\"b2048\"")],
            "",
            Expect { status: 304, headers: &not_modified, body_len: Some(0) },
        )
        .await;
        check(
            &r,
            Method::GET,
            "/bytes/2048",
            &[("if-none-match", "\"b1\"")],
            "",
            Expect { status: 200, headers: &[], body_len: Some(2048) },
        )
        .await;
        check(&r, Method::GET, "/bytes/8388609", &[], "", Expect { status: 400, headers: &[], body_len: None }).await;
        check(&r, Method::GET, "/bytes/abc", &[], "", Expect { status: 400, headers: &[], body_len: None }).await;
        let json_headers = [("etag", None), ("cache-control", public), ("content-type", Some("application/json"))];
        check(&r, Method::GET, "/json/65536", &[], "", Expect { status: 200, headers: &json_headers, body_len: None })
            .await;
        for (alias, len) in [("/b2k.json", 2048), ("/b64k.json", 65536)] {
            let etag = format!("\"b{len}\"");
            let alias_headers = [("etag", Some(etag.as_str())), ("cache-control", public)];
            let body =
                check(&r, Method::GET, alias, &[], "", Expect { status: 200, headers: &alias_headers, body_len: None })
                    .await;
            let same = check(
                &r,
                Method::GET,
                &format!("/bytes/{len}"),
                &[],
                "",
                Expect { status: 200, headers: &[], body_len: Some(len) },
            )
            .await;
            assert_eq!(body, same, "{alias}");
        }
        check(&r, Method::GET, "/healthz", &[], "", Expect { status: 200, headers: &[], body_len: Some(3) }).await;
        check(&r, Method::GET, "/nope", &[], "", Expect { status: 404, headers: &[], body_len: None }).await;
    }

    #[tokio::test]
    async fn post_appends_to_the_inventory() {
        let r = router(Some("app-1"));
        let list_headers = [
            ("surrogate-key", Some("servers")),
            ("cache-control", Some("public, s-maxage=3600")),
            ("etag", None),
            ("x-served-by", Some("app-1")),
        ];
        let before = check(
            &r,
            Method::GET,
            "/api/servers",
            &[],
            "",
            Expect { status: 200, headers: &list_headers, body_len: None },
        )
        .await;
        let created = [("location", Some("/api/servers")), ("x-served-by", Some("app-1"))];
        check(&r, Method::POST, "/api/servers", &[], "", Expect { status: 201, headers: &created, body_len: None })
            .await;
        check(
            &r,
            Method::POST,
            "/api/servers",
            &[],
            r#"{"hostname":"web-1.test"}"#,
            Expect { status: 201, headers: &created, body_len: None },
        )
        .await;
        check(&r, Method::POST, "/api/servers", &[], "{not json", Expect { status: 400, headers: &[], body_len: None })
            .await;
        let after = check(
            &r,
            Method::GET,
            "/api/servers",
            &[],
            "",
            Expect { status: 200, headers: &list_headers, body_len: None },
        )
        .await;
        let count = |body: &Bytes| serde_json::from_slice::<Vec<serde_json::Value>>(body).expect("valid JSON").len();
        assert_eq!(count(&after), count(&before) + 2);
        assert!(String::from_utf8_lossy(&after).contains("web-1.test"));
    }
}
