//! The outbound side: forwarding requests to the app over pooled keep-alive connections, and reading its
//! answers with a size limit so large bodies stream instead of being held in memory.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HOST, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use etagd_client::headers::strip_hop_by_hop;

/// Errors carried by proxied bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response the sidecar handles.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A streamed body.
pub fn stream(body: Incoming) -> ProxyBody {
    body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()
}

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

/// The client to the app.
#[derive(Debug, Clone)]
pub struct Origin {
    client: Client<HttpConnector, ProxyBody>,
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

    /// Sends a request. `headers` are the client's, already stripped of hop-by-hop headers and with forwarding
    /// headers set.
    pub async fn send(
        &self,
        method: http::Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: ProxyBody,
    ) -> Result<Response<Incoming>, OriginError> {
        let uri = Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| OriginError::Request(e.to_string()))?;
        let mut request =
            Request::builder().method(method).uri(uri).body(body).map_err(|e| OriginError::Request(e.to_string()))?;
        *request.headers_mut() = headers;
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(OriginError::Request(error.to_string())),
            Err(_) => Err(OriginError::Timeout(self.timeout)),
        }
    }
}

/// Prepares client request headers for the origin (RFC 9110 section 7.6): hop-by-hop headers removed, the
/// client's `Host` kept (the app sees the host its clients asked for), `X-Forwarded-For` appended,
/// `X-Forwarded-Proto` and `X-Forwarded-Host` set when absent.
pub fn forward_headers(mut headers: HeaderMap, peer: Option<SocketAddr>, scheme: &str) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    if let Some(peer) = peer {
        let xff = HeaderName::from_static("x-forwarded-for");
        let value = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
            Some(existing) => format!("{existing}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(xff, value);
        }
    }
    let proto = HeaderName::from_static("x-forwarded-proto");
    if !headers.contains_key(&proto) {
        headers.insert(proto, HeaderValue::from_str(scheme).unwrap_or(HeaderValue::from_static("http")));
    }
    let forwarded_host = HeaderName::from_static("x-forwarded-host");
    if !headers.contains_key(&forwarded_host) {
        if let Some(host) = headers.get(HOST).cloned() {
            headers.insert(forwarded_host, host);
        }
    }
    headers
}

/// A response body read up to a limit.
pub enum Buffered {
    /// The whole body, within the limit.
    Complete(Bytes),
    /// Over the limit: what was read, and the rest still streaming.
    TooLarge(ProxyBody),
}

/// Reads a body up to `limit` bytes. Past it, returns a body that replays what was read and streams the rest,
/// so nothing is lost and memory stays bounded.
pub async fn buffer(body: Incoming, limit: usize) -> Result<Buffered, hyper::Error> {
    let mut body = body;
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Ok(data) = frame.into_data() {
            buffer.extend_from_slice(&data);
            if buffer.len() > limit {
                let head =
                    futures_util::stream::once(
                        async move { Ok::<_, BoxError>(hyper::body::Frame::data(buffer.freeze())) },
                    );
                let rest = http_body_util::BodyStream::new(body).map_err_into_box();
                let chained = futures_util::StreamExt::chain(head, rest);
                return Ok(Buffered::TooLarge(http_body_util::StreamBody::new(chained).boxed_unsync()));
            }
        }
    }
    Ok(Buffered::Complete(buffer.freeze()))
}

trait MapErrIntoBox {
    fn map_err_into_box(self) -> impl futures_util::Stream<Item = Result<hyper::body::Frame<Bytes>, BoxError>> + Send;
}

impl MapErrIntoBox for http_body_util::BodyStream<Incoming> {
    fn map_err_into_box(self) -> impl futures_util::Stream<Item = Result<hyper::body::Frame<Bytes>, BoxError>> + Send {
        futures_util::StreamExt::map(self, |frame| frame.map_err(|e| Box::new(e) as BoxError))
    }
}
