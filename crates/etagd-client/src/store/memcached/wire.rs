//! Wire mapping: the store's verbs as meta-protocol requests (`mg`, `ms`, `md` with their flags) and the
//! answers back as [`GetOutcome`], [`SetOutcome`] and `bool`, including memcached's lease and stale flags.
//!
//! memcached hands the refresh token of a soft-deleted item to whichever reader comes first, plain or not (1.6
//! `mg`: a stale item without a sent token answers `W` to any read). The store's contract gives it to the first
//! *leased* reader, so a plain read that receives `W` hands it straight back by re-invalidating the item under
//! its CAS (`md <key> C<cas> I T<remaining>`), as `memcache::exp`'s own high-level reads do. A leased read
//! racing that give-back sees `Busy` once; the next one wins.

use std::time::Duration;

use bytes::Bytes;
use memcache::exp::{Delete, Get, GetStatus, MAX_KEY_LENGTH, Meta, MutationStatus, Set, Ttl};

use super::coalescer::batch_failure;
use super::reads::{Answer, ReadFailure, ReadKind, Reads};
use super::routing::ServerNode;
use crate::store::{DeleteMode, Expiry, GetOutcome, GetRequest, Item, Lease, SetCondition, SetOutcome, StoreError};

/// Whether `key` is a key memcached accepts as is: 1 to 250 printable ASCII bytes, no spaces. Keys built by
/// the key schema always are; anything else is a bug, reported per key instead of failing a whole batch.
/// The embedded store applies the same rule so that both stores fail the same way.
pub(crate) fn check_key(key: &str) -> Result<(), String> {
    if !key.is_empty() && key.len() <= MAX_KEY_LENGTH && key.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(format!(
            "key {key:?} is not a valid memcached key (1-{MAX_KEY_LENGTH} printable ASCII bytes); \
             build keys with etagd_client::key"
        ))
    }
}

/// The TTL to send for an expiry. `Ttl::secs` turns anything above 30 days into the absolute time the
/// protocol requires.
fn wire_ttl(expiry: Expiry) -> Ttl {
    match expiry {
        Expiry::Never => Ttl::NEVER,
        Expiry::Secs(secs) => Ttl::secs(secs.max(1)),
    }
}

/// Whole seconds of a grace period, rounded up, at least one (a zero TTL would mean "never" to the server).
fn grace_secs(grace: Duration) -> u32 {
    let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

/// What a plain read must hand back: the refresh token of a stale item it was given without asking.
struct GiveBack {
    key: String,
    cas: u64,
    ttl: Option<i64>,
}

impl ServerNode {
    /// Reads a batch of keys living on this server as one pipelined exchange. One result per request, in
    /// order.
    pub(super) async fn get_batch(&self, requests: &[&GetRequest]) -> Vec<Result<GetOutcome, StoreError>> {
        let mut rejected: Vec<(usize, String)> = Vec::new();
        let mut reads = Reads::with_capacity(requests.len());
        for (position, request) in requests.iter().enumerate() {
            if let Err(detail) = check_key(&request.key) {
                rejected.push((position, detail));
                continue;
            }
            // Always ask for the CAS: a hit's CAS is reported, and a lease winner writes with it. A plain read
            // also asks for the remaining TTL, needed to hand back a refresh token it did not ask for.
            let kind = match request.lease_secs {
                Some(secs) => ReadKind::Leased(secs),
                None if request.presence_only => ReadKind::Presence,
                None => ReadKind::Plain,
            };
            reads.push(&request.key, kind);
        }
        let mut answers = if reads.is_empty() {
            Vec::new()
        } else {
            // Large values bypass the coalescer (a batch of one caller's reads either way).
            let bulk = requests.iter().any(|request| request.bulk);
            self.exchange_gets(reads, bulk).await
        }
        .into_iter();
        let mut rejected = rejected.into_iter().peekable();
        let mut give_backs = Vec::new();
        let mut outputs = Vec::with_capacity(requests.len());
        for (position, request) in requests.iter().enumerate() {
            if rejected.peek().is_some_and(|(at, _)| *at == position) {
                let (_, detail) = rejected.next().expect("peeked");
                outputs.push(Err(StoreError::Server { server: self.addr.clone(), detail }));
                continue;
            }
            let answer = answers.next().expect("one answer per read sent");
            outputs.push(answer.map(|answer| {
                let (outcome, give_back) = get_outcome(answer, request);
                give_backs.extend(give_back);
                outcome
            }));
        }
        if !give_backs.is_empty() {
            self.give_back(give_backs).await;
        }
        outputs
    }

    /// Sends the reads as one batch, settles the server's health from the outcome and maps failures; one
    /// result per read, in order.
    pub(super) async fn exchange_gets(&self, reads: Reads, bulk: bool) -> Vec<Result<Answer, StoreError>> {
        let count = reads.len();
        let pass = match self.admit() {
            Ok(pass) => pass,
            Err(down) => {
                let retry_in = match down {
                    StoreError::ServerDown { retry_in, .. } => retry_in,
                    _ => Duration::ZERO,
                };
                return (0..count)
                    .map(|_| Err(StoreError::ServerDown { server: self.addr.clone(), retry_in }))
                    .collect();
            }
        };
        let results = match self.run_gets(reads, bulk).await {
            Ok(results) => results,
            Err(failure) => vec![Err(batch_failure(&failure)); count],
        };
        let mut transport_failure: Option<StoreError> = None;
        let mapped = results
            .into_iter()
            .map(|result| {
                result.map_err(|failure| {
                    let (error, transport) = self.read_failure(&failure, bulk);
                    if transport && transport_failure.is_none() {
                        transport_failure = Some(self.read_failure(&failure, bulk).0);
                    }
                    error
                })
            })
            .collect();
        match transport_failure {
            // A bulk read that runs long says the server is busy moving megabytes, not that it is gone.
            Some(StoreError::Timeout { .. }) if bulk => drop(pass),
            Some(error) => pass.failed(&error),
            None => pass.succeeded(),
        }
        mapped
    }

    /// A failed read as a store error, and whether it is a transport failure (which marks the server down)
    /// rather than an answer the server gave.
    fn read_failure(&self, failure: &ReadFailure, bulk: bool) -> (StoreError, bool) {
        match failure {
            ReadFailure::Timeout if bulk => (self.bulk_timeout_error(), true),
            ReadFailure::Timeout => (self.timeout_error(), true),
            ReadFailure::Transport(detail) => {
                (StoreError::Server { server: self.addr.clone(), detail: detail.clone() }, true)
            }
            ReadFailure::Refused(detail) => {
                (StoreError::Server { server: self.addr.clone(), detail: detail.clone() }, false)
            }
        }
    }

    /// it. Best effort: if it fails, the item simply stays stale until its grace period ends.
    async fn give_back(&self, give_backs: Vec<GiveBack>) {
        let operations: Vec<Delete> = give_backs
            .iter()
            .map(|give_back| {
                let operation = Delete::new(&give_back.key).compare_cas(give_back.cas).invalidate();
                match give_back.ttl {
                    // -1 means no expiry: keep it by sending no T.
                    Some(ttl) if ttl >= 0 => {
                        operation.stale_for(Ttl::secs(u32::try_from(ttl.max(1)).unwrap_or(u32::MAX)))
                    }
                    _ => operation,
                }
            })
            .collect();
        match tokio::time::timeout(self.deadline(), self.client.run_many(operations)).await {
            Ok(Ok(results)) => {
                for (give_back, result) in give_backs.iter().zip(results) {
                    if let Err(error) = result {
                        tracing::debug!(server = %self.addr, key = %give_back.key, %error, "refresh token not handed back");
                    }
                }
            }
            Ok(Err(error)) => {
                tracing::debug!(server = %self.addr, %error, "refresh tokens not handed back")
            }
            Err(_elapsed) => {
                tracing::debug!(server = %self.addr, "refresh tokens not handed back: timed out")
            }
        }
    }

    pub(super) async fn set(
        &self,
        key: &str,
        value: &[u8],
        expiry: Expiry,
        condition: SetCondition,
        max_item_bytes: usize,
    ) -> Result<SetOutcome, StoreError> {
        check_key(key).map_err(|detail| StoreError::Server { server: self.addr.clone(), detail })?;
        if value.is_empty() {
            // memcached's lease placeholders are zero-byte items, and reads fold zero-byte items into misses.
            return Err(StoreError::Server {
                server: self.addr.clone(),
                detail: format!("refusing to store an empty value under {key}: zero-byte items are lease placeholders"),
            });
        }
        let mut operation = Set::new(key, value).ttl(wire_ttl(expiry));
        operation = match condition {
            SetCondition::Always => operation,
            SetCondition::Add => operation.add(),
            SetCondition::Cas(cas) => operation.compare_cas(cas),
        };
        let pass = self.admit()?;
        let result = match tokio::time::timeout(self.deadline(), self.client.run(operation)).await {
            Err(_elapsed) => {
                pass.failed(&self.timeout_error());
                return Err(self.timeout_error());
            }
            Ok(result) => result,
        };
        match result {
            Ok(mutation) => {
                pass.succeeded();
                Ok(match mutation.status {
                    MutationStatus::Applied => SetOutcome::Stored,
                    _ => SetOutcome::NotStored,
                })
            }
            Err(error) if refused_as_too_large(&error) => {
                pass.succeeded();
                Err(StoreError::TooLarge { key: key.to_owned(), size: value.len(), limit: max_item_bytes })
            }
            Err(error) => Err(self.settle_failure(pass, &error)),
        }
    }

    /// Unconditional sets of several items as one pipelined exchange on one connection; every item is
    /// attempted, the first failure is returned.
    pub(super) async fn set_all(
        &self,
        items: &[(String, Bytes)],
        expiry: Expiry,
        max_item_bytes: usize,
    ) -> Result<(), StoreError> {
        for (key, value) in items {
            check_key(key).map_err(|detail| StoreError::Server { server: self.addr.clone(), detail })?;
            if value.is_empty() {
                return Err(StoreError::Server {
                    server: self.addr.clone(),
                    detail: format!(
                        "refusing to store an empty value under {key}: zero-byte items are lease placeholders"
                    ),
                });
            }
        }
        let operations: Vec<Set> =
            items.iter().map(|(key, value)| Set::new(key, value).ttl(wire_ttl(expiry))).collect();
        let pass = self.admit()?;
        let results = match tokio::time::timeout(self.deadline(), self.client.run_many(operations)).await {
            Err(_elapsed) => {
                pass.failed(&self.timeout_error());
                return Err(self.timeout_error());
            }
            Ok(Err(error)) => return Err(self.settle_failure(pass, &error)),
            Ok(Ok(results)) => results,
        };
        let mut outcome = Ok(());
        let mut transport: Option<StoreError> = None;
        for ((key, value), result) in items.iter().zip(results) {
            let Err(error) = result else { continue };
            let converted = if refused_as_too_large(&error) {
                StoreError::TooLarge { key: key.clone(), size: value.len(), limit: max_item_bytes }
            } else {
                let (converted, is_transport) = self.convert(&error);
                if is_transport && transport.is_none() {
                    transport = Some(self.convert(&error).0);
                }
                converted
            };
            if outcome.is_ok() {
                outcome = Err(converted);
            }
        }
        match transport {
            Some(error) => pass.failed(&error),
            None => pass.succeeded(),
        }
        outcome
    }

    /// `mg <key> c T<ttl>`: a new expiry for the item, placeholder or not; its CAS (`None`: no item).
    pub(super) async fn touch(&self, key: &str, expiry: Expiry) -> Result<Option<u64>, StoreError> {
        check_key(key).map_err(|detail| StoreError::Server { server: self.addr.clone(), detail })?;
        let operation = Get::new(key).meta(Meta::NONE.cas()).touch(wire_ttl(expiry));
        let pass = self.admit()?;
        match tokio::time::timeout(self.deadline(), self.client.run(operation)).await {
            Err(_elapsed) => {
                pass.failed(&self.timeout_error());
                Err(self.timeout_error())
            }
            Ok(Ok(read)) => {
                pass.succeeded();
                Ok(match read.status {
                    GetStatus::Miss => None,
                    _ => Some(read.item.cas.unwrap_or(0)),
                })
            }
            Ok(Err(error)) => Err(self.settle_failure(pass, &error)),
        }
    }

    pub(super) async fn delete(&self, key: &str, mode: DeleteMode) -> Result<bool, StoreError> {
        check_key(key).map_err(|detail| StoreError::Server { server: self.addr.clone(), detail })?;
        let operation = match mode {
            DeleteMode::Hard => Delete::new(key),
            DeleteMode::IfCas { cas } => Delete::new(key).compare_cas(cas),
            // `md <key> I T<grace>`: keep the value, flag it stale, hand one reader a refresh token.
            DeleteMode::Stale { grace } => Delete::new(key).invalidate().stale_for(Ttl::secs(grace_secs(grace))),
        };
        let pass = self.admit()?;
        match tokio::time::timeout(self.deadline(), self.client.run(operation)).await {
            Err(_elapsed) => {
                pass.failed(&self.timeout_error());
                Err(self.timeout_error())
            }
            Ok(Ok(mutation)) => {
                pass.succeeded();
                Ok(mutation.status == MutationStatus::Applied)
            }
            Ok(Err(error)) => Err(self.settle_failure(pass, &error)),
        }
    }
}

/// Whether memcached refused a value as larger than its item limit (`SERVER_ERROR object too large for
/// cache`), which the client reports directly or, since the request was written, wrapped as ambiguous.
pub(super) fn refused_as_too_large(error: &memcache::exp::Error) -> bool {
    use memcache::exp::Error;
    match error {
        Error::Server(message) => message.contains("too large"),
        Error::Ambiguous { source, .. } => refused_as_too_large(source),
        _ => false,
    }
}

/// Maps one read's answer to the store's outcome, plus a refresh token to hand back when a plain read
/// received one.
///
/// Zero-byte items are lease placeholders (the store never writes empty values): a zero-byte item carrying a
/// lease flag is a placeholder, this reader's own when it asked for a lease (it fills) and another's otherwise
/// (busy); any other zero-byte item also reads as a miss.
///
/// A presence-only read asked for no value: its hit is an item with an empty value (such reads are never
/// leased, and only of items that are never placeholders: body chunks).
fn get_outcome(answer: Answer, request: &GetRequest) -> (GetOutcome, Option<GiveBack>) {
    let leased = request.lease_secs.is_some();
    if !answer.found {
        return (GetOutcome::Miss { lease: Lease::None }, None);
    }
    let cas = answer.cas;
    let placeholder =
        !answer.stale && answer.value.as_ref().is_some_and(Bytes::is_empty) && (answer.won || answer.busy);
    if placeholder && !leased {
        // A placeholder another caller is filling, seen by a plain read.
        return (GetOutcome::Miss { lease: Lease::Busy }, None);
    }
    let mut give_back = None;
    let lease = if answer.won && !leased {
        give_back = Some(GiveBack { key: request.key.clone(), cas, ttl: answer.ttl });
        Lease::None
    } else if answer.won {
        Lease::Won { cas }
    } else if answer.busy {
        Lease::Busy
    } else {
        Lease::None
    };
    let outcome = match answer.value {
        _ if request.presence_only => GetOutcome::Hit(Item { value: Bytes::new(), cas, stale: answer.stale, lease }),
        Some(value) if !value.is_empty() => GetOutcome::Hit(Item { value, cas, stale: answer.stale, lease }),
        _ => GetOutcome::Miss { lease },
    };
    (outcome, give_back)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_memcached_rules() {
        fn check(key: &str, ok: bool) {
            assert_eq!(check_key(key).is_ok(), ok, "{key:?}");
        }
        check("ns:h:abc", true);
        check(&"k".repeat(250), true);
        check(&"k".repeat(251), false);
        check("", false);
        check("has space", false);
        check("tab\tkey", false);
        check("caf\u{e9}", false);
    }

    #[test]
    fn expiries_and_grace_periods_map_to_wire_ttls() {
        fn check(expiry: Expiry, expected: Ttl) {
            assert_eq!(wire_ttl(expiry), expected, "{expiry:?}");
        }
        check(Expiry::Never, Ttl::NEVER);
        check(Expiry::Secs(60), Ttl::secs(60));
        check(Expiry::Secs(0), Ttl::secs(1));
        for (grace, secs) in [(0, 1), (1, 1), (999, 1), (1000, 1), (1001, 2), (30_000, 30)] {
            assert_eq!(grace_secs(Duration::from_millis(grace)), secs, "{grace} ms");
        }
    }
}
