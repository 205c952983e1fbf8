//! Fills answered before their commit. Streaming fills: the client that won the lease gets the origin's bytes
//! as they arrive, while a task of the fill's own reads them on, compresses them off the request path and
//! commits (the head last, with CAS, as any fill); used for bodies larger than one store item (`fill.rs`
//! decides). A smaller body is read whole first and then answered at once (`answer_then_store`), its commit
//! (and, above 4 KiB, its coding) left to the same task: the client waits for the origin and at most a small
//! body's inline gzip, not for the sets. Both hold the fill's lease until the commit lands, so other requests
//! wait for it.
//!
//! The task owns the origin body and the fill, so a client that disconnects mid-fill does not abort storing a
//! body etagd decided to store: only the forwarding stops. Frames go to the client through an unbounded
//! channel, but each is a shared slice of what the fill keeps for storing anyway, so the channel adds no memory
//! beyond the body (bounded by the size limit). A body that turns out larger than the limit is given up (the
//! resource marked hit-for-pass, as when its size is announced) and the rest of it handed to the client's body
//! as is, streaming with the client's own back-pressure. While the body arrives the fill reports progress
//! ([`Fill::report_progress`]), so waiters on other replicas keep waiting for it past `--fill-wait`.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::Method;
use http::response::Parts;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tower::BoxError;

use super::fill::give_up;
use super::{Answer, Exchange, Filled, Outcome, Run, Upstream};
use crate::body::Body;
use crate::cache::Fill;
use crate::cacheability::{Freshness, NoStoreReason};
use crate::encoding::{self, Coding};
use crate::etag::EntityTag;
use crate::reply;

/// What the fill's task hands the client's body.
enum Piece {
    /// The next bytes.
    Data(Bytes),
    /// The rest of the origin body, to stream as it is (the fill gave the body up).
    Rest(Body),
    /// The origin body failed: the client's body fails too, so its connection is aborted.
    Failed(BoxError),
    /// Every byte was sent.
    End,
}

/// Whether a request may get a streamed fill: a plain GET. A range, a conditional request or a HEAD is answered
/// from the stored response once it is whole, as before.
pub(super) fn streams(method: &Method, request: &http::HeaderMap) -> bool {
    use http::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, RANGE};
    *method == Method::GET
        && [RANGE, IF_RANGE, IF_NONE_MATCH, IF_MODIFIED_SINCE].iter().all(|h| !request.contains_key(h))
}

/// What a fill's task needs to store a body its client already has or is getting, owned, so it outlives the
/// client's request: it produces the codings off the request path and commits.
struct Commit {
    exchange: Exchange,
    fill: Fill,
    parts: Parts,
    freshness: Freshness,
    tags: Vec<String>,
    /// Whether codings may be stored (the answer already varies on `Accept-Encoding` then).
    compressing: bool,
    /// The codings, when they were made before the answer (a small body's).
    codings: Option<Vec<(String, Bytes)>>,
}

/// Commits of fills answered before them, running or waiting. Past this, a fill commits before its client is
/// answered: misses faster than the commits can store them (a cache-busting query string, a cold start under
/// load) would otherwise queue bodies in memory without bound, and the answer rate would overstate what is
/// being cached. The client then waits for its commit, which slows the sender down.
pub(super) const QUEUED_COMMITS: usize = 64;

impl Commit {
    async fn run(self, bytes: Bytes) {
        let compression = &self.exchange.config().compression;
        let codings = if let Some(codings) = self.codings {
            codings
        } else if self.compressing
            && compression.applies(&self.parts.headers, bytes.len())
            && !compression.identity_only(bytes.len())
        {
            self.exchange.compress(&bytes, |policy, body| policy.encode_at_fill(body)).await
        } else {
            Vec::new()
        };
        let mut parts = self.parts;
        if !codings.is_empty() {
            reply::vary_on_accept_encoding(&mut parts.headers);
        }
        let prepared = reply::prepare_fill(&parts, bytes, self.freshness, self.tags, codings);
        if let Err(error) = self.fill.commit(prepared).await {
            tracing::debug!(%error, "a fill answered before its commit was not stored");
        }
    }
}

/// What a streaming fill's task needs besides the commit.
struct Streamed {
    commit: Commit,
    limit: usize,
    refreshing: bool,
    pieces: mpsc::UnboundedSender<Piece>,
}

impl<B, U> Run<B, U>
where
    B: Default + Send + 'static,
    U: Upstream<B>,
{
    /// Answers with the origin's body as it arrives while a task of its own stores it under `fill`, whose
    /// validator (`etag`) was chosen before the body arrived. `body` may start with frames already read.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stream_fill(
        &mut self,
        parts: Parts,
        body: Body,
        mut fill: Fill,
        etag: &EntityTag,
        freshness: Freshness,
        tags: Vec<String>,
        limit: usize,
        outcome: fn(Filled) -> Outcome,
        refreshing: bool,
    ) -> Answer<U::Error> {
        let config = self.exchange.config();
        // Whether codings will be stored is known only once the body is whole; the answer varies on
        // Accept-Encoding as soon as they may be (a downstream cache keying on it for nothing costs nothing).
        // The stored entry gets `Vary` as a buffered fill's would: only when codings were stored.
        let mut head = reply::streamed_head(&parts, etag, freshness.initial_age_s);
        let declared: Option<u64> =
            head.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
        let compression = &config.compression;
        // An announced length above the compression limit is known now to be stored as identity only.
        let identity_only = declared.is_some_and(|len| {
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            compression.applies(&parts.headers, len) && compression.identity_only(len)
        });
        let compressing = !identity_only && compression.applies(&parts.headers, limit);
        if compressing {
            reply::vary_on_accept_encoding(head.headers_mut());
        }
        self.report.ttl = reply::ttl_left(freshness.fresh_for_s, freshness.initial_age_s);
        let (sender, receiver) = mpsc::unbounded_channel();
        let progress = fill.report_progress();
        let commit =
            Commit { exchange: self.exchange.clone(), fill, parts, freshness, tags, compressing, codings: None };
        let streamed = Streamed { commit, limit, refreshing, pieces: sender };
        tokio::spawn(streamed.run(body, progress));
        self.report.outcome = outcome(Filled::Streamed { identity_only });

        Ok(head.map(|()| Body::stream(Tee { pieces: receiver, rest: None, done: false, remaining: declared })))
    }
}

impl<B, U> Run<B, U>
where
    B: Default + Send + 'static,
    U: Upstream<B>,
{
    /// Answers a plain GET with a whole body (within one store item) at once, identity as it came, while a task
    /// of the fill's own produces the codings and commits. The fill keeps its lease until the commit lands, so
    /// a request meanwhile waits for it (as for any fill in flight) and then gets every stored coding; the one
    /// fill per key and the CAS commit are the buffered fill's. With [`QUEUED_COMMITS`] commits already queued
    /// the commit runs first and the client waits for it. `identity_only`: compressible, but above the
    /// compression limit.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn answer_then_store(
        &mut self,
        parts: Parts,
        bytes: Bytes,
        mut fill: Fill,
        freshness: Freshness,
        tags: Vec<String>,
        outcome: fn(Filled) -> Outcome,
        compressing: bool,
        identity_only: bool,
    ) -> http::Response<Body> {
        let origin = parts.headers.get(http::header::ETAG).and_then(|v| v.to_str().ok()).and_then(EntityTag::parse);
        let etag = fill.validator_for_body(origin.as_ref(), &bytes);
        let mut head = reply::streamed_head(&parts, &etag, freshness.initial_age_s);
        // A small body's coding costs microseconds inline (`compress.rs`): made now, the filling client gets the
        // representation it asks for, under the tag every later client of that coding gets, instead of
        // identity. A larger body is answered identity at once and compressed by the commit.
        let codings = (compressing && bytes.len() <= super::compress::INLINE_BYTES)
            .then(|| self.exchange.compress_inline(&bytes, |policy, body| policy.encode_at_fill(body)));
        let chosen = codings.as_ref().and_then(|codings| {
            let stored = |coding: Coding| codings.iter().any(|(name, _)| name == coding.as_str());
            encoding::negotiate_among(&self.parts.headers, stored)
        });
        let answer = match (chosen, &codings) {
            (Some(coding), Some(codings)) => {
                let (_, coded) = codings.iter().find(|(name, _)| name == coding.as_str()).expect("negotiated");
                reply::stamp_fill_coding(head.headers_mut(), &etag, coding);
                coded.clone()
            }
            _ => bytes.clone(),
        };
        head.headers_mut().insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(answer.len()));
        if compressing {
            reply::vary_on_accept_encoding(head.headers_mut());
        }
        self.report.outcome = outcome(if identity_only { Filled::IdentityOnly } else { Filled::Stored });
        self.report.ttl = reply::ttl_left(freshness.fresh_for_s, freshness.initial_age_s);
        self.report.stored_bytes = bytes.len() as u64;
        let commit = Commit { exchange: self.exchange.clone(), fill, parts, freshness, tags, compressing, codings };
        match self.exchange.inner.queued_commits.clone().try_acquire_owned() {
            Ok(queued) => {
                let bytes = bytes.clone();
                tokio::spawn(async move {
                    commit.run(bytes).await;
                    drop(queued);
                });
            }
            Err(_full) => commit.run(bytes).await,
        }
        head.map(|()| Body::full(answer))
    }
}

impl Streamed {
    async fn run(self, mut body: Body, progress: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>) {
        let mut received = BytesMut::new();
        let mut client = true;
        loop {
            match body.frame().await {
                None => break,
                Some(Err(error)) => {
                    // Dropping the fill releases it: the failure may be transient.
                    let _ = self.pieces.send(Piece::Failed(error));
                    return;
                }
                Some(Ok(frame)) => {
                    let data = match frame.into_data() {
                        Ok(data) => data,
                        Err(trailers) => {
                            // Trailers cannot be replayed from the store: the body is given up, the client gets it.
                            let pieces = self.give_up(NoStoreReason::Trailers).await;
                            let _ = pieces.send(Piece::Rest(Body::resume([trailers].into(), body.boxed_unsync())));
                            return;
                        }
                    };
                    if received.len() + data.len() > self.limit {
                        let pieces = self.give_up(NoStoreReason::TooLarge).await;
                        if client {
                            let _ = pieces.send(Piece::Data(data));
                            let _ = pieces.send(Piece::Rest(body));
                        }
                        return;
                    }
                    if let Some(progress) = &progress {
                        progress.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    received.extend_from_slice(&data);
                    // A client gone away stops being fed; the fill goes on.
                    client = client && self.pieces.send(Piece::Data(data)).is_ok();
                }
            }
        }
        let _ = self.pieces.send(Piece::End);
        drop(self.pieces);
        self.commit.run(received.freeze()).await;
    }

    /// Gives the fill up as a refused answer would be (`policy`), and returns the client's channel.
    async fn give_up(self, reason: NoStoreReason) -> mpsc::UnboundedSender<Piece> {
        let commit = self.commit;
        let server_error_pass = commit.exchange.config().server_error_pass;
        give_up(commit.fill, reason, commit.parts.status, self.refreshing, server_error_pass).await;
        self.pieces
    }
}

/// The client's body of a streamed fill.
struct Tee {
    pieces: mpsc::UnboundedReceiver<Piece>,
    rest: Option<Body>,
    done: bool,
    /// Bytes still to come, when the origin announced its length.
    remaining: Option<u64>,
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(rest) = &mut self.rest {
                return Pin::new(rest).poll_frame(cx);
            }
            if self.done {
                return Poll::Ready(None);
            }
            let piece = match self.pieces.poll_recv(cx) {
                Poll::Ready(piece) => piece,
                Poll::Pending => return Poll::Pending,
            };
            match piece {
                Some(Piece::Data(data)) => {
                    self.remaining = self.remaining.map(|left| left.saturating_sub(data.len() as u64));
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Piece::Rest(body)) => self.rest = Some(body),
                Some(Piece::Failed(error)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(error)));
                }
                Some(Piece::End) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                None => {
                    // The task ended without saying the body did (it panicked): never end a body short quietly.
                    self.done = true;
                    return Poll::Ready(Some(Err("the fill stopped before the body ended".into())));
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.rest, self.remaining) {
            (None, Some(left)) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(pieces: Vec<Piece>) -> Result<Bytes, String> {
        let (sender, receiver) = mpsc::unbounded_channel();
        for piece in pieces {
            sender.send(piece).expect("open");
        }
        drop(sender);
        let tee = Tee { pieces: receiver, rest: None, done: false, remaining: None };
        tee.collect().await.map(|collected| collected.to_bytes()).map_err(|error| error.to_string())
    }

    fn data(text: &'static str) -> Piece {
        Piece::Data(Bytes::from_static(text.as_bytes()))
    }

    /// The client's body ends only when the fill says every byte was sent; a task that stopped without saying
    /// so (or an origin error) fails the body, so the connection is aborted instead of a short body looking
    /// whole.
    #[tokio::test]
    async fn the_clients_body_ends_only_when_the_fill_says_so() {
        assert_eq!(collect(vec![data("ab"), data("c"), Piece::End]).await.unwrap(), "abc");
        assert!(collect(vec![data("ab")]).await.is_err(), "closed without End");
        assert!(collect(vec![data("ab"), Piece::Failed("origin reset".into())]).await.is_err());
        let rest = Piece::Rest(Body::full(Bytes::from_static(b"rest")));
        assert_eq!(collect(vec![data("ab"), rest]).await.unwrap(), "abrest", "the rest streams as it is");
    }
}
