//! Invalidation by URL, by tag and of the whole namespace: one store write per target, whatever it covers.
//!
//! - A URL: its head record is deleted (hard) or soft-deleted with a grace period (`md <key> I T<grace>`); every
//!   Vary variant goes with it, because variants are only reachable through a head whose URL generation they
//!   recorded.
//! - A tag, or the namespace: its generation counter gets a new random value (see `generation`); soft
//!   invalidation keeps the previous value servable, stale, until the grace period ends.
//!
//! Once [`Cache::invalidate`] returns, no reader anywhere gets an old entry: readers check the live counters on
//! every lookup. A target that could not be written (its server is down) is reported, and the namespace counter
//! is bumped instead, so the affected entries miss rather than serve stale (fail towards a miss).

use std::time::Duration;

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use super::{Cache, bump};
use crate::generation::Generation;
use crate::key::{KeyError, ResourceKey};
use crate::store::{DeleteMode, Expiry, GetOutcome, GetRequest, SetCondition, SetOutcome, StoreError};

/// What to invalidate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invalidation {
    /// Absolute URLs as clients see them (`http://host/path?q`); every variant of each.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Tags (from `Surrogate-Key` or route rules).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Everything in the namespace.
    #[serde(default)]
    pub all: bool,
    /// Soft invalidation: old entries may still be served, stale, for this many seconds while one caller
    /// refreshes each. Absent or 0: hard.
    #[serde(default)]
    pub grace_s: Option<u64>,
    /// The caller bounds the escalation itself: a target that cannot be written is reported, and the namespace
    /// is not invalidated here (the exchange's triggers escalate at most once per window, so an outage of one
    /// server does not flush everything on every anonymous POST).
    #[serde(skip)]
    pub defer_escalation: bool,
}

impl Invalidation {
    /// Whether it names nothing.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty() && self.tags.is_empty() && !self.all
    }

    fn grace(&self) -> Option<Duration> {
        self.grace_s.filter(|&s| s > 0).map(Duration::from_secs)
    }
}

/// The outcome for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetReport {
    /// `url`, `tag` or `all`.
    pub kind: &'static str,
    /// The URL or tag (empty for `all`).
    pub name: String,
    /// The server holding the written item.
    pub server: String,
    /// Whether the write landed.
    pub ok: bool,
    /// For URLs: whether anything was stored.
    pub existed: Option<bool>,
    /// Why it failed.
    pub error: Option<String>,
}

/// The outcome of an invalidation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvalidationReport {
    /// One row per target.
    pub targets: Vec<TargetReport>,
    /// Hard or soft.
    pub grace_s: Option<u64>,
    /// Some target failed, so the whole namespace was invalidated instead.
    pub escalated_to_all: bool,
    /// Every target landed (directly or through the escalation).
    pub complete: bool,
}

impl Cache {
    /// Invalidates URLs, tags and/or the namespace. A malformed URL fails the whole call before anything is
    /// written.
    pub async fn invalidate(&self, invalidation: &Invalidation) -> Result<InvalidationReport, KeyError> {
        let resources =
            invalidation.urls.iter().map(|url| ResourceKey::from_url(url)).collect::<Result<Vec<_>, _>>()?;
        let grace = invalidation.grace();
        let url_writes = resources.iter().zip(&invalidation.urls).map(|(resource, url)| async move {
            let key = self.config().namespace.head_key(resource);
            let mode = grace.map_or(DeleteMode::Hard, |grace| DeleteMode::Stale { grace });
            let result = self.store().delete(&key, mode).await;
            self.report("url", url, &key, result.as_ref().map(|_| ()).map_err(|e| e.to_string()), result.ok())
        });
        let tag_writes = invalidation.tags.iter().map(|tag| async move {
            let key = self.config().namespace.tag_generation_key(tag);
            let result = self.bump_generation(&key, grace).await.map_err(|e| e.to_string());
            self.report("tag", tag, &key, result, None)
        });
        let (mut targets, tags) = futures_util::join!(join_all(url_writes), join_all(tag_writes));
        targets.extend(tags);
        let failed = targets.iter().any(|target| !target.ok);
        let mut escalated_to_all = false;
        if invalidation.all || (failed && !invalidation.defer_escalation) {
            let key = self.config().namespace.all_generation_key();
            // An escalation is always hard: the failed targets' entries must not be served at all.
            let all_grace = if invalidation.all && !failed { grace } else { None };
            let result = self.bump_generation(&key, all_grace).await.map_err(|e| e.to_string());
            let landed = result.is_ok();
            targets.push(self.report("all", "", &key, result, None));
            escalated_to_all = failed && landed;
            if escalated_to_all {
                tracing::warn!("an invalidation target could not be written; invalidated the whole namespace instead");
            }
        }
        let all_ok = targets.iter().filter(|t| t.kind == "all").all(|t| t.ok);
        let complete = if escalated_to_all { true } else { !failed && all_ok };
        Ok(InvalidationReport { targets, grace_s: grace.map(|g| g.as_secs()), escalated_to_all, complete })
    }

    fn report(
        &self,
        kind: &'static str,
        name: &str,
        key: &str,
        result: Result<(), String>,
        existed: Option<bool>,
    ) -> TargetReport {
        match &result {
            Ok(()) => bump(&self.inner.counters.invalidations),
            Err(_) => bump(&self.inner.counters.invalidation_failures),
        }
        TargetReport {
            kind,
            name: name.to_owned(),
            server: self.store().server_of(key),
            ok: result.is_ok(),
            existed,
            error: result.err(),
        }
    }

    async fn bump_generation(&self, key: &str, grace: Option<Duration>) -> Result<(), StoreError> {
        let Some(grace) = grace else {
            // A hard invalidation is a single blind write: whatever was there, the new value supersedes it.
            let next = Generation::invalidated(None, self.now_ms(), None);
            return self.store().set(key, next.encode(), Expiry::Never, SetCondition::Always).await.map(|_| ());
        };
        // A soft one reads the counter and writes it back under the CAS it read, so that a hard invalidation
        // landing in between is never overwritten (its old value would then be servable in grace again).
        for _ in 0..SOFT_ATTEMPTS {
            let read = self.store().get_many(&[GetRequest::plain(key)]).await.pop().expect("one result")?;
            let (current, condition) = match read {
                GetOutcome::Hit(item) => (Generation::decode(&item.value), SetCondition::Cas(item.cas)),
                GetOutcome::Miss { .. } => (None, SetCondition::Add),
            };
            let next = Generation::invalidated(current.as_ref(), self.now_ms(), Some(grace));
            if self.store().set(key, next.encode(), Expiry::Never, condition).await? == SetOutcome::Stored {
                return Ok(());
            }
        }
        // Contended throughout: invalidate hard rather than not at all (stricter than asked, never staler).
        tracing::debug!(key, "soft invalidation kept racing other writers; invalidated hard instead");
        let next = Generation::invalidated(None, self.now_ms(), None);
        self.store().set(key, next.encode(), Expiry::Never, SetCondition::Always).await.map(|_| ())
    }
}

/// How often a soft invalidation re-reads a counter another writer changed under it before going hard.
const SOFT_ATTEMPTS: usize = 4;
