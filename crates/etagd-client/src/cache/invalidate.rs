//! Invalidation by URL, by tag, by path prefix and of the whole namespace: one store write per target, whatever
//! it covers.
//!
//! - A URL: its head record is deleted (hard) or soft-deleted with a grace period (`md <key> I T<grace>`); every
//!   Vary variant goes with it, because variants are only reachable through a head whose URL generation they
//!   recorded.
//! - A path prefix is the tag every entry under it carries (`key::PathPrefix`), so it is invalidated as a tag.
//! - A tag, or the namespace: its generation counter gets a new random value (see `generation`) in the copy on
//!   every server, since readers check the copy beside their head record; soft invalidation keeps each server's
//!   previous value servable, stale, until the grace period ends.
//!
//! Once [`Cache::invalidate`] returns a complete report, no reader anywhere gets an old entry: readers check the
//! live counters on every lookup. A target that could not be written on some server is reported with that
//! server, and the report is incomplete: a namespace bump on the other servers does not cover the entries whose
//! head lives on the one that missed it.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use super::{Cache, bump};
use crate::generation::Generation;
use crate::key::{KeyError, PathPrefix, ResourceKey};
use crate::store::{DeleteMode, Expiry, GetOutcome, GetRequest, Placement, SetCondition, SetOutcome, StoreError};

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
    /// Path prefixes as clients see them (`http://host/api/`): every entry under each, on that host only. Each
    /// is one tag invalidation of the prefix tag entries carry (`key::PathPrefix`), so a prefix must end in `/`
    /// and be at most [`CacheConfig::prefix_depth`](super::CacheConfig::prefix_depth) segments deep.
    /// Left out of the JSON when empty, so an `etagctl` that knows prefixes still talks to an older sidecar.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
    /// Everything in the namespace.
    #[serde(default)]
    pub all: bool,
    /// Soft invalidation: old entries may still be served, stale, for this many seconds while one caller
    /// refreshes each. Absent or 0: hard.
    #[serde(default)]
    pub grace_s: Option<u64>,
}

impl Invalidation {
    /// Whether it names nothing.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty() && self.tags.is_empty() && self.prefixes.is_empty() && !self.all
    }

    fn grace(&self) -> Option<Duration> {
        self.grace_s.filter(|&s| s > 0).map(Duration::from_secs)
    }
}

/// The outcome for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetReport {
    /// `url`, `tag`, `prefix` or `all`.
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
    /// Every target landed, directly, through a fence or through the escalation.
    pub complete: bool,
    /// Servers that missed a write and were fenced on the others: every replica treats them as down until one
    /// repairs them (bumps their namespace copy). The write is covered, but it did fail (207 from the admin API).
    #[serde(default)]
    pub fenced: Vec<String>,
}

impl Cache {
    /// Invalidates URLs, tags, path prefixes and/or the namespace. A malformed URL or prefix, or a prefix deeper
    /// than the configured depth, fails the whole call before anything is written.
    pub async fn invalidate(&self, invalidation: &Invalidation) -> Result<InvalidationReport, KeyError> {
        let resources =
            invalidation.urls.iter().map(|url| ResourceKey::from_url(url)).collect::<Result<Vec<_>, _>>()?;
        let depth = self.config().prefix_depth;
        let prefixes =
            invalidation.prefixes.iter().map(|url| PathPrefix::parse(url, depth)).collect::<Result<Vec<_>, _>>()?;
        let grace = invalidation.grace();
        let url_writes = resources.iter().zip(&invalidation.urls).map(|(resource, url)| async move {
            let key = self.config().namespace.head_key(resource);
            let mode = grace.map_or(DeleteMode::Hard, |grace| DeleteMode::Stale { grace });
            let result = self.store().delete(&key, mode).await;
            self.report("url", url, &key, result.as_ref().map(|_| ()).map_err(|e| e.to_string()), result.ok())
        });
        // A prefix is the tag its entries carry: the same counter write on every server, the same fences.
        let tag_targets = invalidation.tags.iter().map(|tag| ("tag", tag.clone(), tag.clone()));
        let prefix_targets = prefixes.iter().map(|prefix| ("prefix", prefix.url(), prefix.tag()));
        let counters: Vec<(&'static str, String, String)> = tag_targets.chain(prefix_targets).collect();
        let tag_writes = counters.iter().map(|(kind, name, tag)| async move {
            let key = self.config().namespace.tag_generation_key(tag);
            self.bump_everywhere(kind, name, &key, grace).await
        });
        let (mut targets, tags) = futures_util::join!(join_all(url_writes), join_all(tag_writes));
        // While a rolling upgrade is bridged, the older release's names are invalidated too (`bridge.rs`).
        let named: Vec<(&ResourceKey, &str)> =
            resources.iter().zip(invalidation.urls.iter().map(String::as_str)).collect();
        let mode = grace.map_or(DeleteMode::Hard, |grace| DeleteMode::Stale { grace });
        let bridged = self.bridge_mirror(&named, &invalidation.tags, invalidation.all, mode).await;
        let bridged_ok = bridged.iter().all(|row| row.ok);
        targets.extend(bridged);
        let store = self.store();
        let count = store.server_count().max(1);
        let index_of = |server: &str| (0..count).find(|&index| store.server_name(index) == server);
        // The servers that missed a write, by position; a failure no server explains is never fenced.
        let mut missed: BTreeSet<Option<usize>> =
            targets.iter().filter(|target| !target.ok).map(|target| index_of(&target.server)).collect();
        for (report, servers) in tags {
            missed.extend(servers.into_iter().map(Some));
            targets.push(report);
        }
        if invalidation.all {
            let key = self.config().namespace.all_generation_key();
            let all_grace = if missed.is_empty() { grace } else { None };
            let (report, servers) = self.bump_everywhere("all", "", &key, all_grace).await;
            missed.extend(servers.into_iter().map(Some));
            targets.push(report);
        }
        // Each server that missed a write is fenced on the others, so no replica trusts it until it is repaired.
        let mut fenced = Vec::new();
        let mut unfenced = false;
        for server in missed {
            match server {
                Some(index) if count >= 2 && self.write_fence(index).await => fenced.push(store.server_name(index)),
                _ => unfenced = true,
            }
        }
        let mut escalated_to_all = false;
        if unfenced && !invalidation.all {
            // No fence could be written: the namespace bump on the servers that answer is all that is left.
            let key = self.config().namespace.all_generation_key();
            let (report, _) = self.bump_everywhere("all", "", &key, None).await;
            escalated_to_all = report.ok;
            targets.push(report);
            if escalated_to_all {
                tracing::warn!("an invalidation target could not be written; invalidated the whole namespace instead");
            }
        }
        let complete = (!unfenced || escalated_to_all) && bridged_ok;
        Ok(InvalidationReport { targets, grace_s: grace.map(|g| g.as_secs()), escalated_to_all, complete, fenced })
    }

    pub(super) fn report(
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

    /// Bumps a counter's copy on every server (in parallel) and reports the target once: it landed when every
    /// copy did; otherwise `server` and `error` name the servers that missed it.
    async fn bump_everywhere(
        &self,
        kind: &'static str,
        name: &str,
        key: &str,
        grace: Option<Duration>,
    ) -> (TargetReport, Vec<usize>) {
        let store = self.store();
        let servers = store.server_count().max(1);
        let results = join_all((0..servers).map(|server| self.bump_generation(key, server, grace))).await;
        let failures: Vec<(usize, StoreError)> =
            results.into_iter().enumerate().filter_map(|(server, result)| result.err().map(|e| (server, e))).collect();
        let ok = failures.is_empty();
        if ok {
            bump(&self.inner.counters.invalidations);
        } else {
            bump(&self.inner.counters.invalidation_failures);
        }
        let server = if ok {
            if servers == 1 { store.server_name(0) } else { format!("all {servers} servers") }
        } else {
            failures.iter().map(|(server, _)| store.server_name(*server)).collect::<Vec<_>>().join(",")
        };
        let error = (!ok).then(|| failures.iter().map(|(_, error)| error.to_string()).collect::<Vec<_>>().join("; "));
        let missed = failures.iter().map(|(server, _)| *server).collect();
        (TargetReport { kind, name: name.to_owned(), server, ok, existed: None, error }, missed)
    }

    /// A hard invalidation of one counter copy: one blind write of a new value where `placement` says.
    pub(super) async fn bump_hard(&self, key: &str, placement: Placement<'_>) -> Result<SetOutcome, StoreError> {
        let next = Generation::invalidated(None, self.now_ms(), None);
        self.store().set_placed(key, placement, next.encode(), Expiry::Never, SetCondition::Always).await
    }

    /// Bumps the copy of a counter on one server. A hard invalidation is one blind write; a soft one reads that
    /// server's own previous value (to keep it servable for the grace period) and writes back under the CAS it
    /// read, so that a hard invalidation landing in between is never overwritten.
    pub(super) async fn bump_generation(
        &self,
        key: &str,
        server: usize,
        grace: Option<Duration>,
    ) -> Result<(), StoreError> {
        let placement = Placement::Server(server);
        let hard = || self.bump_hard(key, placement);
        let Some(grace) = grace else {
            return hard().await.map(|_| ());
        };
        for _ in 0..SOFT_ATTEMPTS {
            let read = GetRequest::plain(key).on_server(server);
            let (current, condition) = match self.store().get_many(&[read]).await.pop().expect("one result")? {
                GetOutcome::Hit(item) => (Generation::decode(&item.value), SetCondition::Cas(item.cas)),
                GetOutcome::Miss { .. } => (None, SetCondition::Add),
            };
            let next = Generation::invalidated(current.as_ref(), self.now_ms(), Some(grace));
            if self.store().set_placed(key, placement, next.encode(), Expiry::Never, condition).await?
                == SetOutcome::Stored
            {
                return Ok(());
            }
        }
        // Contended throughout: invalidate hard rather than not at all (stricter than asked, never staler).
        tracing::debug!(key, server, "soft invalidation kept racing other writers; invalidated hard instead");
        hard().await.map(|_| ())
    }
}

/// How often a soft invalidation re-reads a counter another writer changed under it before going hard.
const SOFT_ATTEMPTS: usize = 4;
