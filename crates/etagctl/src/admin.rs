//! The client side of a sidecar's admin API:
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `POST /invalidate` | `{"urls":[..],"tags":[..],"all":bool,"grace_s":n}` | the `InvalidationReport` |
//! | `GET /entries?url=URL` | | the `Inspection` |
//! | `GET /stats` | | `{"servers":[ServerStats..],"health":[ServerHealth..]}` |
//!
//! Every request carries `Authorization: Bearer <token>` when a token is given. 401 and 403 mean the token was
//! refused; 400 carries `{"error": "..."}` naming the bad input.

use std::error::Error as _;
use std::time::Duration;

use etagd_client::cache::Invalidation;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::Value;
use url::Url;

use crate::error::CliError;

/// A sidecar's admin API.
#[derive(Debug)]
pub(crate) struct AdminClient {
    base: Url,
    token: Option<String>,
    http: Client,
    timeout: Duration,
}

impl AdminClient {
    /// Checks the base URL and prepares the HTTP client (no I/O).
    pub(crate) fn new(base: &str, token: Option<String>, timeout: Duration) -> Result<Self, CliError> {
        let bad = |reason: &str| {
            CliError::Usage(format!(
                "admin URL {base:?} is invalid: {reason} (write it as http://HOST:PORT, e.g. http://127.0.0.1:9091)"
            ))
        };
        let mut parsed = Url::parse(base).map_err(|error| bad(&error.to_string()))?;
        match parsed.scheme() {
            "http" => {}
            // Built without TLS: the admin listener is meant for loopback or a private network.
            "https" => {
                return Err(bad("https is not supported; use the sidecar's plain http admin listener"));
            }
            _ => return Err(bad("the scheme must be http")),
        }
        if parsed.host_str().is_none() || parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("give only the scheme, host, port and an optional path prefix"));
        }
        // Routes are joined onto the base, so the base path must end with a slash to keep any prefix.
        if !parsed.path().ends_with('/') {
            let path = format!("{}/", parsed.path());
            parsed.set_path(&path);
        }
        let http = Client::builder()
            .connect_timeout(timeout / 2)
            .timeout(timeout)
            .build()
            .map_err(|error| CliError::Failed(format!("cannot set up the HTTP client: {error}")))?;
        Ok(Self { base: parsed, token, http, timeout })
    }

    /// The URL of one route.
    pub(crate) fn route(&self, route: &str) -> Url {
        self.base.join(route).expect("a relative route joins onto an http base URL")
    }

    /// `POST /invalidate`.
    pub(crate) async fn invalidate(&self, invalidation: &Invalidation) -> Result<Value, CliError> {
        let url = self.route("invalidate");
        self.send(self.http.post(url).json(invalidation), "invalidate").await
    }

    /// `GET /entries?url=...`.
    pub(crate) async fn entries(&self, resource_url: &str) -> Result<Value, CliError> {
        let mut url = self.route("entries");
        url.query_pairs_mut().append_pair("url", resource_url);
        self.send(self.http.get(url), "entries").await
    }

    /// `GET /stats`.
    pub(crate) async fn stats(&self) -> Result<Value, CliError> {
        let url = self.route("stats");
        self.send(self.http.get(url), "stats").await
    }

    async fn send(&self, request: RequestBuilder, route: &str) -> Result<Value, CliError> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.map_err(|error| self.transport(&error))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|error| self.transport(&error))?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        let said = || {
            json.as_ref()
                .and_then(|json| json.get("error"))
                .and_then(Value::as_str)
                .map_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(), str::to_owned)
        };
        match status {
            status if status.is_success() => json.ok_or_else(|| {
                CliError::Failed(format!(
                    "the admin API answered /{route} with something other than JSON: check --admin is the \
                     sidecar's admin address"
                ))
            }),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(CliError::TokenRefused),
            StatusCode::BAD_REQUEST => Err(CliError::Usage(format!("the admin API rejected the request: {}", said()))),
            StatusCode::NOT_FOUND => Err(CliError::Failed(format!(
                "the admin API at {} has no /{route} route: check --admin is the sidecar's admin address, not its \
                 proxy port",
                self.base
            ))),
            status => Err(CliError::Failed(format!("the admin API answered {status} to /{route}: {}", said()))),
        }
    }

    fn transport(&self, error: &reqwest::Error) -> CliError {
        if error.is_timeout() {
            return CliError::Failed(format!(
                "the admin API at {} did not answer within {}: check the sidecar is healthy or raise --timeout",
                self.base,
                crate::duration::show(self.timeout)
            ));
        }
        // reqwest's own message is generic; the cause (connection refused, no route) is further down the chain.
        let mut causes = Vec::new();
        let mut source = error.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !causes.contains(&text) {
                causes.push(text);
            }
            source = cause.source();
        }
        let cause = causes.last().cloned().unwrap_or_else(|| error.to_string());
        CliError::Failed(format!(
            "the admin API at {} is unreachable ({cause}): check the sidecar is running and --admin is its admin \
             address",
            self.base
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_base_urls_and_joins_routes() {
        let check = |base: &str, expected: Option<&str>| {
            let client = AdminClient::new(base, None, Duration::from_secs(1));
            assert_eq!(client.ok().map(|c| c.route("stats").to_string()).as_deref(), expected, "{base}");
        };
        check("http://127.0.0.1:9091", Some("http://127.0.0.1:9091/stats"));
        check("http://127.0.0.1:9091/", Some("http://127.0.0.1:9091/stats"));
        check("http://host/etagd", Some("http://host/etagd/stats"));
        check("http://host/etagd/", Some("http://host/etagd/stats"));
        check("https://host", None);
        check("127.0.0.1:9091", None);
        check("http://host/?x=1", None);
        check("not a url", None);
    }
}
