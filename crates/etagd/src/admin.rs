//! The admin port, separate from the proxy port (loopback by default).
//!
//! | method | path | meaning | token |
//! |---|---|---|---|
//! | GET | `/healthz` | the process is alive | no |
//! | GET | `/readyz` | listeners are bound; the body reports Memcached health (trouble does not make etagd unready: it falls back to the origin) | no |
//! | GET | `/metrics` | Prometheus text | no |
//! | POST | `/invalidate` | JSON `{"urls": [..], "tags": [..], "prefixes": [..], "all": false, "grace_s": 30}` (any subset) | yes |
//! | GET | `/entries?url=URL` | what is stored for a URL (ETag, state, age, size, tags) | yes |
//! | GET | `/stats` | per-server Memcached statistics and health | yes |
//!
//! "Token: yes" means a bearer token is required when `--admin-token` is set (it must be when the port is not on
//! loopback). Errors answer JSON `{"error": "..."}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use etagd_client::cache::{Cache, Invalidation};
use etagd_client::key::ResourceKey;

use crate::metrics::{Metrics, SourceLabel};

/// Readiness: a latch that drops once the listeners are bound.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    /// Marks the process ready.
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether it is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What the admin handlers share.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The engine.
    pub cache: Cache,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub readiness: Arc<Readiness>,
    /// Required bearer token.
    pub token: Option<String>,
    /// Whether validators are shared (false on the embedded store).
    pub shared_store: bool,
    /// The exchange's settings: URLs are named as it stores them.
    pub exchange: Arc<etagd_client::exchange::ExchangeConfig>,
}

/// An admin error, as JSON.
struct AdminError(StatusCode, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// Whether `headers` carry `Authorization: Bearer <token>`. Constant time in the token's bytes, so response
/// timing does not reveal how much of a guess was right; only the length may leak, as `subtle` compares slices
/// of unequal length as unequal at once.
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    given.is_some_and(|given| bool::from(given.as_bytes().ct_eq(token.as_bytes())))
}

fn authorize(state: &AdminState, headers: &HeaderMap) -> Result<(), AdminError> {
    let Some(token) = &state.token else { return Ok(()) };
    if bearer_matches(headers, token) {
        Ok(())
    } else {
        Err(AdminError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token: send Authorization: Bearer <ETAGD_ADMIN_TOKEN>".into(),
        ))
    }
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/invalidate", post(invalidate))
        .route("/entries", get(entries))
        .route("/stats", get(stats))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let health = state.cache.store().health();
    let body = json!({
        "ready": state.readiness.is_ready(),
        "store": if state.shared_store { "memcached" } else { "embedded" },
        "validators_shared": state.shared_store,
        "servers": health,
        "servers_down": health.iter().filter(|h| !h.up).count(),
    });
    let status = if state.readiness.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.render())
        .into_response()
}

async fn invalidate(State(state): State<AdminState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(error) = authorize(&state, &headers) {
        return error.into_response();
    }
    let mut invalidation: Invalidation = match serde_json::from_slice(&body) {
        Ok(invalidation) => invalidation,
        Err(error) => {
            let reason = format!(
                "bad JSON: {error}; send {{\"urls\": [..], \"tags\": [..], \"prefixes\": [..], \"all\": false, \
                     \"grace_s\": 0}}"
            );
            return AdminError(StatusCode::BAD_REQUEST, reason).into_response();
        }
    };
    if invalidation.is_empty() {
        return AdminError(StatusCode::BAD_REQUEST, "nothing to invalidate: name urls, tags, prefixes or all".into())
            .into_response();
    }
    // URLs are named as the exchange stores them (query parameters it ignores left out).
    for url in &mut invalidation.urls {
        match ResourceKey::from_url(url) {
            Ok(resource) => *url = state.exchange.storage_key(resource).url(),
            Err(error) => return AdminError(StatusCode::BAD_REQUEST, error.to_string()).into_response(),
        }
    }
    state.metrics.invalidations.get_or_create(&SourceLabel { source: "admin" }).inc();
    match state.cache.invalidate(&invalidation).await {
        Ok(report) => {
            let status =
                if report.complete && report.fenced.is_empty() { StatusCode::OK } else { StatusCode::MULTI_STATUS };
            (status, Json(report)).into_response()
        }
        Err(error) => AdminError(StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct EntriesQuery {
    url: Option<String>,
}

async fn entries(State(state): State<AdminState>, headers: HeaderMap, Query(query): Query<EntriesQuery>) -> Response {
    if let Err(error) = authorize(&state, &headers) {
        return error.into_response();
    }
    let Some(url) = query.url else {
        return AdminError(StatusCode::BAD_REQUEST, "name the entry: /entries?url=http://host/path".into())
            .into_response();
    };
    let resource = match ResourceKey::from_url(&url) {
        Ok(resource) => state.exchange.storage_key(resource),
        Err(error) => return AdminError(StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    };
    match state.cache.inspect(&resource, &HeaderMap::new()).await {
        Ok(inspection) => Json(inspection).into_response(),
        Err(error) => AdminError(StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
    }
}

async fn stats(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(error) = authorize(&state, &headers) {
        return error.into_response();
    }
    let servers = state.cache.store().stats().await;
    let health = state.cache.store().health();
    Json(json!({ "servers": servers, "health": health, "engine": state.cache.counters() })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_matches() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            headers
        };
        assert!(bearer_matches(&with("Bearer s3cret"), "s3cret"));
        for wrong in ["Bearer s3creT", "Bearer s3cre", "Bearer s3crets", "Bearer ", "s3cret", "Basic s3cret"] {
            assert!(!bearer_matches(&with(wrong), "s3cret"), "{wrong:?}");
        }
        assert!(!bearer_matches(&HeaderMap::new(), "s3cret"), "no header");
    }
}
