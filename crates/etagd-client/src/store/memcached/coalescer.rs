//! The read coalescer: concurrent callers' reads for one server go out as one pipelined write, one batch in
//! flight per server, with identical plain reads sent once. A lease won by a caller that gave up before the
//! answer came is released at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use memcache::exp::{AsyncMetaClient, Delete};
use tokio::sync::{mpsc, oneshot};

use super::reads::{ReadFailure, ReadKind, ReadPool, ReadResult, Reads, key_of};
use super::routing::ServerNode;

/// The most reads one coalesced batch carries; more wait for the next write.
const MAX_BATCH: usize = 512;

/// How a caller's reads failed as a whole.
#[derive(Debug)]
pub(super) enum BatchFailure {
    /// The exchange did not finish within the deadline.
    Timeout,
    /// The batching task is gone.
    Stopped,
}

pub(super) type GetsReply = Result<Vec<ReadResult>, BatchFailure>;

/// One caller's reads, waiting to join a batch.
pub(super) struct Job {
    reads: Reads,
    reply: oneshot::Sender<GetsReply>,
}

/// Starts the task that coalesces concurrent reads for one server. It takes everything queued, writes it as one
/// pipelined batch, hands each caller its answers, and repeats: one batch in flight per server, so the next
/// batch fills up while this one is on the wire. Under load many requests share one write and one read system
/// call; idle, a lone read goes out at once. The deadline stops a stuck server from holding the queue; callers
/// also wait with their own deadline, so none waits past it.
pub(super) fn spawn_batcher(
    addr: String,
    pool: Arc<ReadPool>,
    client: AsyncMetaClient,
    deadline: Duration,
) -> mpsc::UnboundedSender<Job> {
    let (sender, mut receiver) = mpsc::unbounded_channel::<Job>();
    tokio::spawn(async move {
        let mut jobs: Vec<Job> = Vec::new();
        let mut wire: Vec<u8> = Vec::new();
        while let Some(first) = receiver.recv().await {
            let mut count = first.reads.len();
            jobs.push(first);
            while count < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(job) => {
                        count += job.reads.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            wire.clear();
            let (unique, slot_of) = merge_plain_reads(&jobs, &mut wire);
            let results = match tokio::time::timeout(deadline, pool.read(&wire, unique)).await {
                Ok(results) => results,
                Err(_elapsed) => {
                    tracing::debug!(server = %addr, reads = count, "coalesced batch timed out");
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
            let mut results: Vec<Option<ReadResult>> = results.into_iter().map(Some).collect();
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
            let mut orphans = Vec::new();
            for Job { reads, reply } in jobs.drain(..) {
                let answers = slots.by_ref().take(reads.len()).map(&mut answer).collect();
                if let Err(Ok(answers)) = reply.send(Ok(answers)) {
                    // The caller gave up (its deadline passed while this batch waited its turn, or its request
                    // was cancelled): nobody will fill what it won.
                    orphans.extend(orphaned_leases(&reads, answers));
                }
            }
            if !orphans.is_empty() {
                tokio::spawn(release_orphans(addr.clone(), client.clone(), orphans, deadline));
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
    let mut slot_of: Vec<usize> = Vec::with_capacity(jobs.iter().map(|job| job.reads.len()).sum());
    let mut first: HashMap<&[u8], usize> = HashMap::new();
    let mut kept = 0usize;
    for job in jobs {
        for index in 0..job.reads.len() {
            let (line, kind) = job.reads.line(index);
            if kind == ReadKind::Plain {
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

/// The leases among answers nobody received: a placeholder this read created (`md <key> C<cas>` deletes it)
/// or the refresh token of a stale item (`md <key> C<cas> I` hands it back, keeping the item's expiry).
fn orphaned_leases(reads: &Reads, answers: Vec<ReadResult>) -> Vec<Delete> {
    answers
        .into_iter()
        .enumerate()
        .filter_map(|(index, answer)| {
            let answer = answer.ok().filter(|answer| answer.won)?;
            let release = Delete::new(key_of(reads.line(index).0)).compare_cas(answer.cas);
            Some(if answer.stale { release.invalidate() } else { release })
        })
        .collect()
}

/// Releases leases whose reader gave up, so they do not block others until they expire. Best effort: what
/// fails here still expires after the (short) fill lease.
async fn release_orphans(addr: String, client: AsyncMetaClient, releases: Vec<Delete>, deadline: Duration) {
    let count = releases.len();
    match tokio::time::timeout(deadline, client.run_many(releases)).await {
        Ok(Ok(_)) => tracing::debug!(server = %addr, count, "released leases whose readers gave up"),
        Ok(Err(error)) => tracing::debug!(server = %addr, count, %error, "orphaned leases not released"),
        Err(_elapsed) => tracing::debug!(server = %addr, count, "orphaned leases not released: timed out"),
    }
}

impl ServerNode {
    /// Runs reads through the coalescer (or directly when batching is off), bounded by the deadline either way;
    /// bulk reads on their own connections, bounded by the bulk limit.
    pub(super) async fn run_gets(&self, reads: Reads, bulk: bool) -> GetsReply {
        if bulk {
            return read_directly(&self.bulk_reads, &reads, self.connect_timeout + self.bulk_timeout).await;
        }
        let Some(batcher) = self.batcher.as_ref() else {
            return read_directly(&self.reads, &reads, self.deadline()).await;
        };
        let (reply, answer) = oneshot::channel();
        if batcher.send(Job { reads, reply }).is_err() {
            return Err(BatchFailure::Stopped);
        }
        match tokio::time::timeout(self.deadline(), answer).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_closed)) => Err(BatchFailure::Stopped),
            Err(_elapsed) => Err(BatchFailure::Timeout),
        }
    }
}

async fn read_directly(pool: &ReadPool, reads: &Reads, deadline: Duration) -> GetsReply {
    tokio::time::timeout(deadline, pool.read(reads.wire(), reads.len())).await.map_err(|_elapsed| BatchFailure::Timeout)
}

/// A read whose whole batch failed, as the failure each of its reads reports.
pub(super) fn batch_failure(failure: &BatchFailure) -> ReadFailure {
    match failure {
        BatchFailure::Timeout => ReadFailure::Timeout,
        BatchFailure::Stopped => ReadFailure::Refused("the batching task stopped".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_plain_reads_are_sent_once_and_leased_reads_never_merged() {
        let job = |reads: &[(&str, ReadKind)]| {
            let mut encoded = Reads::with_capacity(reads.len());
            for (key, kind) in reads {
                encoded.push(key, *kind);
            }
            Job { reads: encoded, reply: oneshot::channel().0 }
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
}
