//! [`EtagCache`]: the service the layer wraps around an inner service. It only adapts: the request runs through
//! the [`Exchange`] with the inner service as its [`Upstream`].

use std::fmt;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower::{BoxError, Service, ServiceExt};

use super::{EtagCacheLayer, ResponseBody, ResponseFuture};
use crate::body::Body;
use crate::cache::Cache;
use crate::exchange::{Exchange, Upstream};

/// The service built by [`EtagCacheLayer`]: answers GET and HEAD from the shared cache and fills it from the
/// inner service, like the sidecar does for a whole application.
///
/// The inner service must be `Clone` (every axum service is): a clone answers each request the exchange sends,
/// including background refreshes of stale entries. Request bodies must be `Default` (axum's are): the
/// exchange sends empty ones when it revalidates. See the [module docs](crate::layer) for an example.
#[derive(Clone, Debug)]
pub struct EtagCache<S> {
    inner: S,
    exchange: Exchange,
}

impl<S> EtagCache<S> {
    /// Wraps `inner` with the default settings of [`EtagCacheLayer::new`].
    pub fn new(inner: S, cache: Cache) -> Self {
        tower::Layer::layer(&EtagCacheLayer::new(cache), inner)
    }

    pub(crate) fn from_exchange(inner: S, exchange: Exchange) -> Self {
        Self { inner, exchange }
    }

    /// A layer wrapping services with this cache; configure it with the [`EtagCacheLayer`] builder methods.
    pub fn layer(cache: Cache) -> EtagCacheLayer {
        EtagCacheLayer::new(cache)
    }

    /// The cache engine (share it with code that invalidates outside a request).
    pub fn cache(&self) -> &Cache {
        self.exchange.cache()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, ResBody> Service<Request<B>> for EtagCache<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: fmt::Display + Send + 'static,
    B: Default + Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The service that was polled ready answers this request's first call; clones answer the rest.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let exchange = self.exchange.clone();
        ResponseFuture::new(Box::pin(async move {
            let context = exchange.context(None);
            exchange.run(request, context, ServiceUpstream::new(ready)).await.response
        }))
    }
}

/// The inner service as the exchange's [`Upstream`].
#[derive(Clone, Debug)]
pub struct ServiceUpstream<S>(S);

impl<S> ServiceUpstream<S> {
    /// Wraps a service.
    pub fn new(service: S) -> Self {
        Self(service)
    }
}

impl<S, B, ResBody> Upstream<B> for ServiceUpstream<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: fmt::Display + Send + 'static,
    B: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Error = S::Error;

    async fn send(self, request: Request<B>) -> Result<Response<Body>, Self::Error> {
        let response = self.0.oneshot(request).await?;
        Ok(response.map(Body::stream))
    }
}
