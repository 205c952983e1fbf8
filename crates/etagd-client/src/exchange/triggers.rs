//! Invalidation as a side effect of origin answers, for every replica at once: unsafe methods (RFC 9111
//! section 4.4) and the `Etagd-Invalidate` response header.

use http::HeaderMap;
use http::header::{CONTENT_LOCATION, LOCATION};

use super::log::Trigger;
use super::policy;
use super::{Answer, Outcome, Run, Sent, Upstream};
use crate::cache::Invalidation;
use crate::headers::{self, ETAGD_INVALIDATE};

impl<B, U> Run<B, U>
where
    B: Default + Send + 'static,
    U: Upstream<B>,
{
    /// POST, PUT, PATCH, DELETE, ...: forwarded with their body; a success invalidates the target and the URLs
    /// the answer names in `Location` / `Content-Location` on the same host.
    pub(super) async fn unsafe_method(&mut self) -> Answer<U::Error> {
        self.report.outcome = Outcome::Method;
        let headers = self.outbound_headers();
        let request = self.request(self.parts.method.clone(), headers);
        let response = match self.send(request).await? {
            Sent::Answered(response) => response,
            Sent::Held(hold) => return Ok(self.held(hold)),
        };
        let status = response.status();
        let invalidates = self.exchange.config().triggers.unsafe_methods
            && !policy::is_safe(&self.parts.method)
            && (status.is_success() || status.is_redirection());
        if let (true, Some(key)) = (invalidates, self.key.as_ref()) {
            let mut urls = vec![key.url()];
            for name in [LOCATION, CONTENT_LOCATION] {
                let named = response.headers().get(name).and_then(|v| v.to_str().ok()).and_then(|v| key.resolve(v));
                let named = named.map(|target| self.exchange.config().storage_key(target));
                if let Some(url) = named.map(|target| target.url()) {
                    if !urls.contains(&url) {
                        urls.push(url);
                    }
                }
            }
            self.invalidate(Invalidation { urls, ..Default::default() }, Trigger::UnsafeMethod).await;
        }
        Ok(self.relay(response).await)
    }

    /// Applies and removes an origin answer's `Etagd-Invalidate` (the header is meant for caches only).
    pub(super) async fn apply_invalidate_header(&mut self, headers: &mut HeaderMap) {
        let tags = headers::tags_in(headers, ETAGD_INVALIDATE);
        headers.remove(ETAGD_INVALIDATE);
        if self.exchange.config().triggers.invalidate_header && !tags.is_empty() {
            self.invalidate(Invalidation { tags, ..Default::default() }, Trigger::Header).await;
        }
    }

    async fn invalidate(&mut self, invalidation: Invalidation, trigger: Trigger) {
        self.report.invalidations.push(trigger);
        // A server this misses is fenced on the others (see `cache/fence.rs`): no namespace flush per POST.
        let exchange = self.exchange.clone();
        match exchange.cache().invalidate(&invalidation).await {
            Ok(report) if !report.complete => {
                tracing::warn!(?report, "invalidation did not reach every Memcached server");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "invalidation skipped"),
        }
    }
}
