//! The one thing the exchange needs from a front: a way to send a request to the origin.

use std::fmt;
use std::future::Future;

use http::{Request, Response};

use crate::body::Body;

/// Where the exchange sends what the cache cannot answer: the app behind the sidecar (an HTTP client), or the
/// service the tower layer wraps.
///
/// `send` takes the upstream by value so that the future it returns owns what it needs; the exchange clones the
/// upstream for each request it sends (a background refresh outlives the client's request). Requests carry the
/// client's target in origin form (`/path?query`); the upstream adds its own authority. An
/// [`InformationalHook`](super::InformationalHook) in the request's extensions wants the origin's 1xx answers.
pub trait Upstream<B>: Clone + Send + 'static {
    /// Why the upstream could not answer. The exchange answers from a stale entry when `stale-if-error` allows,
    /// else hands the error back to the front.
    type Error: fmt::Display + Send + 'static;

    /// Sends one request and returns the response head with a streaming body.
    fn send(self, request: Request<B>) -> impl Future<Output = Result<Response<Body>, Self::Error>> + Send;
}
