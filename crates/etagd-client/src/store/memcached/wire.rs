//! Wire mapping: the store's verbs as meta-protocol requests (`mg`, `ms`, `md` with their flags) and the
//! answers back as [`GetOutcome`], [`SetOutcome`] and `bool`, including memcached's lease and stale flags.
//!
//! memcached hands the refresh token of a soft-deleted item to whichever reader comes first, plain or not (1.6
//! `mg`: a stale item without a sent token answers `W` to any read). The store's contract gives it to the first
//! *leased* reader, so a plain read that receives `W` hands it straight back by re-invalidating the item under
//! its CAS (`md <key> C<cas> I T<remaining>`). A leased read
//! racing that give-back sees `Busy` once; the next one wins.

use std::time::Duration;

use bytes::Bytes;
use memcache::exp::MAX_KEY_LENGTH;

use super::coalescer::{Route, batch_failure};
use super::protocol::{Answer, Commands, DeleteFlags, Failure, Outcome, ReadKind};
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
        let mut reads = Commands::with_capacity(requests.len());
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
            reads.read(&request.key, kind);
        }
        let mut answers = if reads.is_empty() {
            Vec::new()
        } else {
            // Large values bypass the coalescer (a batch of one caller's reads either way).
            let route = if requests.iter().any(|request| request.bulk) { Route::Bulk } else { Route::Coalesced };
            match self.exchange(reads, route).await {
                Ok(answers) => answers,
                Err(down) => return requests.iter().map(|_| Err(self.down_error(&down))).collect(),
            }
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
            let bulk = request.bulk;
            outputs.push(answer.map_err(|failure| self.store_error(&failure, bulk)).map(|answer| {
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

    /// Sends the commands as one batch by `route` and settles the server's health from the outcome: a
    /// transport failure marks it down, an answer (even an error answer) says it is up. One result per command,
    /// in order; `Err` ([`StoreError::ServerDown`]) when the server is marked down and nothing was sent.
    pub(super) async fn exchange(&self, commands: Commands, route: Route) -> Result<Vec<Outcome>, StoreError> {
        let count = commands.len();
        let pass = self.admit()?;
        let bulk = route == Route::Bulk;
        let results = match self.run(commands, route).await {
            Ok(results) => results,
            Err(failure) => vec![Err(batch_failure(&failure)); count],
        };
        match results.iter().find_map(|result| result.as_ref().err().filter(|failure| failure.is_transport())) {
            // A bulk read that runs long says the server is busy moving megabytes, not that it is gone.
            Some(Failure::Timeout) if bulk => drop(pass),
            Some(failure) => pass.failed(&self.store_error(failure, bulk)),
            None => pass.succeeded(),
        }
        Ok(results)
    }

    /// A failed command as a store error.
    fn store_error(&self, failure: &Failure, bulk: bool) -> StoreError {
        match failure {
            Failure::Timeout if bulk => self.bulk_timeout_error(),
            Failure::Timeout => self.timeout_error(),
            Failure::Transport(detail) | Failure::Refused(detail) => {
                StoreError::Server { server: self.addr.clone(), detail: detail.clone() }
            }
        }
    }

    /// The same refusal for another command of the batch (a store error is not `Clone`).
    fn down_error(&self, down: &StoreError) -> StoreError {
        match down {
            StoreError::ServerDown { retry_in, .. } => {
                StoreError::ServerDown { server: self.addr.clone(), retry_in: *retry_in }
            }
            other => StoreError::Server { server: self.addr.clone(), detail: other.to_string() },
        }
    }

    /// Sends writes: small ones through the coalescer, large ones on a connection of their own.
    async fn write(&self, commands: Commands) -> Result<Vec<Outcome>, StoreError> {
        let route = Route::for_write(&commands);
        self.exchange(commands, route).await
    }

    /// Sends one write and returns its answer.
    async fn write_one(&self, commands: Commands) -> Result<Outcome, StoreError> {
        Ok(self.write(commands).await?.pop().expect("one answer per command"))
    }

    /// Hands refresh tokens a plain read received back to memcached, so that a leased reader can still win
    /// them. Best effort: if it fails, the item simply stays stale until its grace period ends.
    async fn give_back(&self, give_backs: Vec<GiveBack>) {
        let mut deletes = Commands::with_capacity(give_backs.len());
        for give_back in &give_backs {
            // -1 means no expiry: keep it by sending no T.
            let stale_secs =
                give_back.ttl.filter(|ttl| *ttl >= 0).map(|ttl| u32::try_from(ttl.max(1)).unwrap_or(u32::MAX));
            deletes.delete(&give_back.key, DeleteFlags { cas: Some(give_back.cas), invalidate: true, stale_secs });
        }
        match self.write(deletes).await {
            Ok(results) => {
                for (give_back, result) in give_backs.iter().zip(results) {
                    if let Err(failure) = result {
                        tracing::debug!(server = %self.addr, key = %give_back.key, ?failure, "refresh token not handed back");
                    }
                }
            }
            Err(error) => tracing::debug!(server = %self.addr, %error, "refresh tokens not handed back"),
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
        self.check_value(key, value)?;
        let mut commands = Commands::with_capacity(1);
        commands.set(key, value, expiry, condition);
        match self.write_one(commands).await? {
            Ok(answer) if answer.applied() => Ok(SetOutcome::Stored),
            Ok(_) => Ok(SetOutcome::NotStored),
            Err(failure) if failure.too_large() => {
                Err(StoreError::TooLarge { key: key.to_owned(), size: value.len(), limit: max_item_bytes })
            }
            Err(failure) => Err(self.store_error(&failure, false)),
        }
    }

    /// Unconditional sets of several items as one pipelined exchange; every item is attempted, the first
    /// failure is returned.
    pub(super) async fn set_all(
        &self,
        items: &[(String, Bytes)],
        expiry: Expiry,
        max_item_bytes: usize,
    ) -> Result<(), StoreError> {
        let mut commands = Commands::with_capacity(items.len());
        for (key, value) in items {
            self.check_value(key, value)?;
            commands.set(key, value, expiry, SetCondition::Always);
        }
        let mut outcome = Ok(());
        for ((key, value), answer) in items.iter().zip(self.write(commands).await?) {
            let error = match answer {
                Ok(answer) if answer.applied() => continue,
                Ok(answer) => StoreError::Server {
                    server: self.addr.clone(),
                    detail: format!("memcached did not store {key} ({:?})", answer.code),
                },
                Err(failure) if failure.too_large() => {
                    StoreError::TooLarge { key: key.clone(), size: value.len(), limit: max_item_bytes }
                }
                Err(failure) => self.store_error(&failure, false),
            };
            if outcome.is_ok() {
                outcome = Err(error);
            }
        }
        outcome
    }

    /// A key memcached accepts and a value that is not empty: memcached's lease placeholders are zero-byte
    /// items, and reads fold zero-byte items into misses.
    fn check_value(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        check_key(key).map_err(|detail| StoreError::Server { server: self.addr.clone(), detail })?;
        if value.is_empty() {
            return Err(StoreError::Server {
                server: self.addr.clone(),
                detail: format!("refusing to store an empty value under {key}: zero-byte items are lease placeholders"),
            });
        }
        Ok(())
    }

    /// `mg <key> c T<ttl>`: a new expiry for the item, placeholder or not; its CAS (`None`: no item).
    pub(super) async fn touch(&self, key: &str, expiry: Expiry) -> Result<Option<u64>, StoreError> {
        check_key(key).map_err(|detail| StoreError::Server { server: self.addr.clone(), detail })?;
        let mut commands = Commands::with_capacity(1);
        commands.touch(key, expiry);
        match self.write_one(commands).await? {
            Ok(answer) => Ok(answer.applied().then_some(answer.cas)),
            Err(failure) => Err(self.store_error(&failure, false)),
        }
    }

    pub(super) async fn delete(&self, key: &str, mode: DeleteMode) -> Result<bool, StoreError> {
        check_key(key).map_err(|detail| StoreError::Server { server: self.addr.clone(), detail })?;
        let flags = match mode {
            DeleteMode::Hard => DeleteFlags::default(),
            DeleteMode::IfCas { cas } => DeleteFlags { cas: Some(cas), ..DeleteFlags::default() },
            // `md <key> I T<grace>`: keep the value, flag it stale, hand one reader a refresh token.
            DeleteMode::Stale { grace } => {
                DeleteFlags { invalidate: true, stale_secs: Some(grace_secs(grace)), ..DeleteFlags::default() }
            }
        };
        let mut commands = Commands::with_capacity(1);
        commands.delete(key, flags);
        match self.write_one(commands).await? {
            Ok(answer) => Ok(answer.applied()),
            Err(failure) => Err(self.store_error(&failure, false)),
        }
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
    if !answer.applied() {
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
        use super::super::protocol::wire_ttl;
        assert_eq!(wire_ttl(Expiry::Never), 0, "no expiry");
        assert_eq!(wire_ttl(Expiry::Secs(60)), 60);
        assert_eq!(wire_ttl(Expiry::Secs(0)), 1, "never zero, which would mean none");
        for (grace, secs) in [(0, 1), (1, 1), (999, 1), (1000, 1), (1001, 2), (30_000, 30)] {
            assert_eq!(grace_secs(Duration::from_millis(grace)), secs, "{grace} ms");
        }
    }
}
