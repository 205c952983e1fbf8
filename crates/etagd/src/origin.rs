//! The outbound side: the app as the exchange's [`Upstream`], over pooled keep-alive connections.

use std::time::Duration;

use http::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use etagd_client::body::Body;
use etagd_client::exchange::{InformationalHook, Upstream};
use etagd_client::headers::strip_hop_by_hop;

/// Why the origin could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OriginError {
    /// Connecting or exchanging failed.
    #[error("origin request failed: {0}")]
    Request(String),
    /// No response headers within the timeout.
    #[error("origin did not answer within {0:?}")]
    Timeout(Duration),
}

/// The client to the app. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct Origin {
    client: Client<HttpConnector, Body>,
    authority: http::uri::Authority,
    timeout: Duration,
}

impl Origin {
    /// A client for `upstream` (scheme and authority only).
    pub fn new(upstream: &Uri, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout.min(Duration::from_secs(5))));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        let authority = upstream.authority().expect("config validated the upstream authority").clone();
        Self { client, authority, timeout }
    }
}

impl Upstream<Body> for Origin {
    type Error = OriginError;

    /// Sends a request from the exchange to the app: its target under the app's authority, and its headers
    /// without hop-by-hop fields (RFC 9110 section 7.6.1: they belong to the client's connection, not this one).
    async fn send(self, mut request: Request<Body>) -> Result<Response<Body>, OriginError> {
        let target = request.uri().path_and_query().map_or("/", |target| target.as_str());
        let uri = Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(target)
            .build()
            .map_err(|e| OriginError::Request(e.to_string()))?;
        *request.uri_mut() = uri;
        *request.version_mut() = http::Version::HTTP_11;
        strip_hop_by_hop(request.headers_mut());
        if let Some(hook) = request.extensions().get::<InformationalHook>().cloned() {
            hyper::ext::on_informational(&mut request, move |response| {
                hook.call(response.status(), response.headers())
            });
        }
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response.map(Body::stream)),
            Ok(Err(error)) => Err(OriginError::Request(error.to_string())),
            Err(_) => Err(OriginError::Timeout(self.timeout)),
        }
    }
}
