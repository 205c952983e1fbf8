//! The outbound side: the app as the exchange's [`Upstream`], over pooled keep-alive connections.
//!
//! Two deadlines bound what the origin can hold: `--origin-timeout` for its response headers, and
//! `--origin-body-timeout` for each wait on its body ([`IdleTimeout`]), so an origin that stalls mid-body cannot
//! hold a fill's lease, a client or a connection for ever.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use prometheus_client::metrics::counter::Counter;
use tokio::time::{Instant, Sleep};
use tower::BoxError;

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
    /// The origin's body sent no frame within the body timeout.
    #[error("origin body sent nothing for {0:?} (--origin-body-timeout)")]
    BodyTimeout(Duration),
}

/// The client to the app. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct Origin {
    client: Client<HttpConnector, Body>,
    authority: http::uri::Authority,
    timeout: Duration,
    body_timeout: Duration,
    body_timeouts: Counter,
}

impl Origin {
    /// A client for `upstream` (scheme and authority only): `timeout` for the response headers, `body_timeout`
    /// for each wait on a frame of the body.
    pub fn new(upstream: &Uri, timeout: Duration, body_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout.min(Duration::from_secs(5))));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        let authority = upstream.authority().expect("config validated the upstream authority").clone();
        Self { client, authority, timeout, body_timeout, body_timeouts: Counter::default() }
    }

    /// Counts the bodies cut by the body timeout in `counter`.
    #[must_use]
    pub fn count_body_timeouts(mut self, counter: Counter) -> Self {
        self.body_timeouts = counter;
        self
    }
}

/// An origin body that fails with [`OriginError::BodyTimeout`] when a wait for its next frame lasts longer than
/// the timeout. The clock runs only while the body is polled and has nothing to give: a slow client reading
/// the stream (backpressure) is not the origin's stall.
#[derive(Debug)]
pub struct IdleTimeout<B> {
    inner: B,
    timeout: Duration,
    /// The deadline of the current wait, set when a poll finds the body between frames.
    sleep: Pin<Box<Sleep>>,
    /// Whether `sleep` is armed for the current wait.
    waiting: bool,
    done: bool,
    timeouts: Counter,
}

impl<B> IdleTimeout<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, timeout: Duration, timeouts: Counter) -> Self {
        let sleep = Box::pin(tokio::time::sleep(timeout));
        Self { inner, timeout, sleep, waiting: false, done: false, timeouts }
    }
}

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if !this.waiting {
            this.sleep.as_mut().reset(Instant::now() + this.timeout);
            this.waiting = true;
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                if frame.is_none() {
                    this.done = true;
                }
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.done = true;
                    this.timeouts.inc();
                    tracing::warn!(timeout = ?this.timeout, "origin body stalled: cut (--origin-body-timeout)");
                    Poll::Ready(Some(Err(OriginError::BodyTimeout(this.timeout).into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
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
            Ok(Ok(response)) => {
                let (timeout, counter) = (self.body_timeout, self.body_timeouts.clone());
                Ok(response.map(|body| Body::stream(IdleTimeout::new(body, timeout, counter))))
            }
            Ok(Err(error)) => Err(OriginError::Request(error.to_string())),
            Err(_) => Err(OriginError::Timeout(self.timeout)),
        }
    }
}
