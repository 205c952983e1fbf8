//! The coalescer: concurrent callers' commands for one server (the reads of every request, the small writes of
//! fills) go out as one pipelined write, one batch in flight per server, with identical plain reads sent once. A
//! lease won by a caller that gave up before the answer came is released at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::pool::Pool;
use super::protocol::{Commands, DeleteFlags, Failure, Kind, Outcome, ReadKind, key_of};
use super::routing::ServerNode;

/// The most commands one coalesced batch carries; more wait for the next write.
const MAX_BATCH: usize = 512;
/// The most bytes of commands one caller sends through the coalescer: a larger write (a big body, a chunk)
/// goes out on a connection of its own, so that it does not hold back the answers of the reads beside it.
pub(super) const MAX_COALESCED_BYTES: usize = 16 * 1024;

/// How a caller's commands failed as a whole.
#[derive(Debug)]
pub(super) enum BatchFailure {
    /// The exchange did not finish within the deadline.
    Timeout,
    /// The batching task is gone.
    Stopped,
}

pub(super) type Reply = Result<Vec<Outcome>, BatchFailure>;

/// One caller's commands, waiting to join a batch.
pub(super) struct Job {
    commands: Commands,
    reply: oneshot::Sender<Reply>,
}

/// Starts the task that coalesces concurrent commands for one server. It takes everything queued, writes it as one
/// pipelined batch, hands each caller its answers, and repeats: one batch in flight per server, so the next
/// batch fills up while this one is on the wire. Under load many requests share one write and one read system
/// call; idle, a lone read goes out at once. The deadline stops a stuck server from holding the queue; callers
/// also wait with their own deadline, so none waits past it.
pub(super) fn spawn_batcher(addr: String, pool: Arc<Pool>, deadline: Duration) -> mpsc::UnboundedSender<Job> {
    let (sender, mut receiver) = mpsc::unbounded_channel::<Job>();
    tokio::spawn(async move {
        let mut jobs: Vec<Job> = Vec::new();
        let mut wire: Vec<u8> = Vec::new();
        while let Some(first) = receiver.recv().await {
            let mut count = first.commands.len();
            jobs.push(first);
            while count < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(job) => {
                        count += job.commands.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            wire.clear();
            let (unique, slot_of) = merge_plain_reads(&jobs, &mut wire);
            let results = match tokio::time::timeout(deadline, pool.exchange(&wire, unique)).await {
                Ok(results) => results,
                Err(_elapsed) => {
                    tracing::debug!(server = %addr, commands = count, "coalesced batch timed out");
                    for job in jobs.drain(..) {
                        let _ = job.reply.send(Err(BatchFailure::Timeout));
                    }
                    continue;
                }
            };
            let mut readers = vec![0usize; results.len()];
            for &slot in &slot_of {
                readers[slot] += 1;
            }
            let mut results: Vec<Option<Outcome>> = results.into_iter().map(Some).collect();
            // The last reader of a slot takes the answer; only merged reads are copied.
            let mut answer = |slot: usize| {
                readers[slot] -= 1;
                if readers[slot] == 0 {
                    results[slot].take().expect("each slot is taken once, by its last reader")
                } else {
                    results[slot].clone().expect("a slot is present until its last reader")
                }
            };
            let mut slots = slot_of.into_iter();
            let mut orphans = Commands::default();
            for Job { commands, reply } in jobs.drain(..) {
                let answers = slots.by_ref().take(commands.len()).map(&mut answer).collect();
                if let Err(Ok(answers)) = reply.send(Ok(answers)) {
                    // The caller gave up (its deadline passed while this batch waited its turn, or its request
                    // was cancelled): nobody will fill what it won.
                    orphaned_leases(&commands, answers, &mut orphans);
                }
            }
            if !orphans.is_empty() {
                tokio::spawn(release_orphans(addr.clone(), pool.clone(), orphans, deadline));
            }
        }
    });
    sender
}

/// Identical plain reads (the namespace counter and tag counters, which many requests ask for at once) go out
/// once per batch and every caller gets the answer; each caller's read still happens after it asked. Leased
/// reads (heads) are never merged: exactly one caller may win a lease, and every request still reads its own
/// validator. Writes the reads to send into `wire` and returns how many there are and, for each read asked for,
/// the position of its answer. Reads are compared by their command lines, in place.
fn merge_plain_reads(jobs: &[Job], wire: &mut Vec<u8>) -> (usize, Vec<usize>) {
    let mut slot_of: Vec<usize> = Vec::with_capacity(jobs.iter().map(|job| job.commands.len()).sum());
    let mut first: HashMap<&[u8], usize> = HashMap::new();
    let mut kept = 0usize;
    for job in jobs {
        for index in 0..job.commands.len() {
            let (line, kind) = job.commands.line(index);
            if kind == Kind::Read(ReadKind::Plain) {
                if let Some(&slot) = first.get(line) {
                    slot_of.push(slot);
                    continue;
                }
                first.insert(line, kept);
            }
            wire.extend_from_slice(line);
            slot_of.push(kept);
            kept += 1;
        }
    }
    (kept, slot_of)
}

/// The leases among answers nobody received, as deletes appended to `releases`: a placeholder this read
/// created (`md <key> C<cas>` deletes it) or the refresh token of a stale item (`md <key> C<cas> I` hands it
/// back, keeping the item's expiry).
fn orphaned_leases(commands: &Commands, answers: Vec<Outcome>, releases: &mut Commands) {
    for (index, answer) in answers.into_iter().enumerate() {
        let Some(answer) = answer.ok().filter(|answer| answer.won) else { continue };
        let key = std::str::from_utf8(key_of(commands.line(index).0)).unwrap_or_default();
        releases.delete(key, DeleteFlags { cas: Some(answer.cas), invalidate: answer.stale, stale_secs: None });
    }
}

/// Releases leases whose reader gave up, so they do not block others until they expire. Best effort: what
/// fails here still expires after the (short) fill lease.
async fn release_orphans(addr: String, pool: Arc<Pool>, releases: Commands, deadline: Duration) {
    let count = releases.len();
    match tokio::time::timeout(deadline, pool.exchange(releases.wire(), count)).await {
        Ok(results) => match results.iter().find_map(|result| result.as_ref().err()) {
            None => tracing::debug!(server = %addr, count, "released leases whose readers gave up"),
            Some(failure) => tracing::debug!(server = %addr, count, ?failure, "orphaned leases not released"),
        },
        Err(_elapsed) => tracing::debug!(server = %addr, count, "orphaned leases not released: timed out"),
    }
}

/// Which connections a batch of commands goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// Through the coalescer (when batching is on), joined with other callers' commands.
    Coalesced,
    /// On a connection of its own from the same pool, within the same deadline.
    Direct,
    /// On the bulk pool, within the bulk limit: reads of large values.
    Bulk,
}

impl Route {
    /// A write goes through the coalescer unless it is large.
    pub(super) fn for_write(commands: &Commands) -> Route {
        if commands.wire().len() <= MAX_COALESCED_BYTES { Route::Coalesced } else { Route::Direct }
    }
}

impl ServerNode {
    /// Runs commands by `route`, bounded by the deadline (the bulk limit for bulk reads).
    pub(super) async fn run(&self, commands: Commands, route: Route) -> Reply {
        let batcher = match (route, self.batcher.as_ref()) {
            (Route::Bulk, _) => {
                return directly(&self.bulk_pool, &commands, self.connect_timeout + self.bulk_timeout).await;
            }
            (Route::Coalesced, Some(batcher)) => batcher,
            (Route::Coalesced | Route::Direct, _) => return directly(&self.pool, &commands, self.deadline()).await,
        };
        let (reply, answer) = oneshot::channel();
        if batcher.send(Job { commands, reply }).is_err() {
            return Err(BatchFailure::Stopped);
        }
        match tokio::time::timeout(self.deadline(), answer).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_closed)) => Err(BatchFailure::Stopped),
            Err(_elapsed) => Err(BatchFailure::Timeout),
        }
    }
}

async fn directly(pool: &Pool, commands: &Commands, deadline: Duration) -> Reply {
    tokio::time::timeout(deadline, pool.exchange(commands.wire(), commands.len()))
        .await
        .map_err(|_elapsed| BatchFailure::Timeout)
}

/// A command whose whole batch failed, as the failure each command reports.
pub(super) fn batch_failure(failure: &BatchFailure) -> Failure {
    match failure {
        BatchFailure::Timeout => Failure::Timeout,
        BatchFailure::Stopped => Failure::Refused("the batching task stopped".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_plain_reads_are_sent_once_and_leased_reads_never_merged() {
        let job = |reads: &[(&str, ReadKind)]| {
            let mut commands = Commands::with_capacity(reads.len());
            for (key, kind) in reads {
                commands.read(key, *kind);
            }
            Job { commands, reply: oneshot::channel().0 }
        };
        let head = ("etagd2:ns:u:1", ReadKind::Leased(5));
        let counter = ("etagd2:ns:g:all", ReadKind::Plain);
        let jobs = [
            job(&[head, counter]),
            job(&[head, counter]),
            // Same key, another kind of read: sent on its own.
            job(&[("etagd2:ns:g:all", ReadKind::Presence), counter]),
        ];
        let mut wire = Vec::new();
        let (unique, slot_of) = merge_plain_reads(&jobs, &mut wire);
        assert_eq!(unique, 4);
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "mg etagd2:ns:u:1 v c N5\r\nmg etagd2:ns:g:all v c t\r\nmg etagd2:ns:u:1 v c N5\r\nmg etagd2:ns:g:all c t\r\n"
        );
        assert_eq!(slot_of, [0, 1, 2, 1, 3, 1], "every read asked for has an answer, merged ones share it");
    }

    #[test]
    fn writes_are_never_merged_and_keep_their_place() {
        let mut first = Commands::default();
        first.read("k", ReadKind::Plain);
        first.set("k", b"v", crate::store::Expiry::Secs(5), crate::store::SetCondition::Always);
        let mut second = Commands::default();
        second.set("k", b"v", crate::store::Expiry::Secs(5), crate::store::SetCondition::Always);
        second.read("k", ReadKind::Plain);
        let jobs = [first, second].map(|commands| Job { commands, reply: oneshot::channel().0 });
        let mut wire = Vec::new();
        let (unique, slot_of) = merge_plain_reads(&jobs, &mut wire);
        assert_eq!(unique, 3, "the same set twice is sent twice");
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "mg k v c t\r\nms k 1 T5\r\nv\r\nms k 1 T5\r\nv\r\n",
            "each caller's commands in its order; the second read shares the first"
        );
        assert_eq!(slot_of, [0, 1, 2, 0]);
    }

    #[test]
    fn leases_nobody_received_are_released_under_their_cas() {
        let mut commands = Commands::default();
        commands.read("placeholder", ReadKind::Leased(5));
        commands.read("stale", ReadKind::Plain);
        commands.read("other", ReadKind::Leased(5));
        let won = |cas, stale| Ok(super::super::protocol::Answer { cas, won: true, stale, ..Default::default() });
        let answers = vec![won(7, false), won(9, true), Ok(Default::default())];
        let mut releases = Commands::default();
        orphaned_leases(&commands, answers, &mut releases);
        assert_eq!(String::from_utf8(releases.wire().to_vec()).unwrap(), "md placeholder C7\r\nmd stale C9 I\r\n");
    }
}
