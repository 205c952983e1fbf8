//! The inbound side: turns each client connection's requests into runs of the library's exchange
//! (`etagd_client::exchange`), with the app as the upstream. Transport only: every caching rule lives in the
//! library, shared with the tower layer.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use etagd_client::body::Body;
use etagd_client::exchange::{self, Exchange, InformationalHook};

use crate::metrics::Metrics;
use crate::origin::Origin;

/// The proxy: shared by every connection.
#[derive(Debug)]
pub struct Proxy {
    exchange: Exchange,
    origin: Origin,
    informational: InformationalHook,
}

impl Proxy {
    /// Creates the proxy.
    pub fn new(exchange: Exchange, origin: Origin, metrics: Arc<Metrics>) -> Self {
        // hyper's server cannot relay a 1xx of the origin's to the client, so they are counted, not forwarded.
        let informational = InformationalHook::new(move |status, _| metrics.informational(status));
        Self { exchange, origin, informational }
    }

    /// Handles one request; never fails (an origin that does not answer becomes a 502).
    pub async fn handle(&self, request: Request<Incoming>, peer: Option<SocketAddr>) -> Response<Body> {
        let mut context = self.exchange.context(peer);
        context.informational = Some(self.informational.clone());
        let request = request.map(Body::stream);
        match self.exchange.run(request, context, self.origin.clone()).await.response {
            Ok(response) => response,
            Err(_) => exchange::origin_unavailable(),
        }
    }
}
