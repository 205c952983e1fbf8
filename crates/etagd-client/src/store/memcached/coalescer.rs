//! The read coalescer: concurrent callers' reads for one server go out as one pipelined write, one batch in
//! flight per server, with identical plain reads sent once. A lease won by a caller that gave up before the
//! answer came is released at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use memcache::exp::{AsyncMetaClient, Delete, Get, GetResult, GetStatus, LeaseState, ValueState};
use tokio::sync::{mpsc, oneshot};

use super::routing::ServerNode;

/// The most reads one coalesced batch carries; more wait for the next write.
const MAX_BATCH: usize = 512;

/// How a coalesced batch failed as a whole.
#[derive(Debug)]
pub(super) enum BatchFailure {
    /// The exchange did not finish within the deadline.
    Timeout,
    /// The client refused the batch before writing it.
    Rejected(String),
}

/// One read's answer; the error is shared because merged reads hand the same answer to several callers.
pub(super) type GetAnswer = Result<GetResult, Arc<memcache::exp::Error>>;

pub(super) type GetsReply = Result<Vec<GetAnswer>, BatchFailure>;

/// One caller's reads, waiting to join a batch.
pub(super) struct Job {
    operations: Vec<Get>,
    reply: oneshot::Sender<GetsReply>,
}

/// Starts the task that coalesces concurrent reads for one server. It takes everything queued, sends it as one
/// pipelined `run_many`, hands each caller its slice, and repeats: one batch in flight per server, so the
/// next batch fills up while this one is on the wire. Under load many requests share one write and one read
/// system call; idle, a lone read goes out at once. The deadline stops a stuck server from holding the queue;
/// callers also wait with their own deadline, so none waits past it.
pub(super) fn spawn_batcher(addr: String, client: AsyncMetaClient, deadline: Duration) -> mpsc::UnboundedSender<Job> {
    let (sender, mut receiver) = mpsc::unbounded_channel::<Job>();
    tokio::spawn(async move {
        let mut jobs: Vec<Job> = Vec::new();
        while let Some(first) = receiver.recv().await {
            let mut count = first.operations.len();
            jobs.push(first);
            while count < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(job) => {
                        count += job.operations.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            let mut sizes = Vec::with_capacity(jobs.len());
            let mut all: Vec<Get> = Vec::with_capacity(count);
            for job in &mut jobs {
                sizes.push(job.operations.len());
                all.append(&mut job.operations);
            }
            let (unique, slot_of) = merge_plain_reads(all);
            match tokio::time::timeout(deadline, client.run_many(unique)).await {
                Ok(Ok(results)) => {
                    let mut readers = vec![0usize; results.len()];
                    for &slot in &slot_of {
                        readers[slot] += 1;
                    }
                    let mut results: Vec<Option<GetAnswer>> =
                        results.into_iter().map(|r| Some(r.map_err(Arc::new))).collect();
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
                    for (job, size) in jobs.drain(..).zip(sizes) {
                        let answers = slots.by_ref().take(size).map(&mut answer).collect();
                        if let Err(Ok(answers)) = job.reply.send(Ok(answers)) {
                            // The caller gave up (its deadline passed while this batch waited its turn, or its
                            // request was cancelled): nobody will fill what it won.
                            orphans.extend(orphaned_leases(answers));
                        }
                    }
                    if !orphans.is_empty() {
                        tokio::spawn(release_orphans(addr.clone(), client.clone(), orphans, deadline));
                    }
                }
                Ok(Err(error)) => {
                    let detail = error.to_string();
                    for job in jobs.drain(..) {
                        let _ = job.reply.send(Err(BatchFailure::Rejected(detail.clone())));
                    }
                }
                Err(_elapsed) => {
                    tracing::debug!(server = %addr, reads = count, "coalesced batch timed out");
                    for job in jobs.drain(..) {
                        let _ = job.reply.send(Err(BatchFailure::Timeout));
                    }
                }
            }
        }
    });
    sender
}

/// Identical plain reads (the namespace counter and tag counters, which many requests ask for at once) go out
/// once per batch and every caller gets the answer; each caller's read still happens after it asked. Leased
/// reads (heads) are never merged: exactly one caller may win a lease, and every request still reads its own
/// validator. Returns the reads to send and, for each read asked for, the position of its answer. Keys are
/// compared in place (no copy per read), since a batch carries a few counters many times over.
fn merge_plain_reads(all: Vec<Get>) -> (Vec<Get>, Vec<usize>) {
    let mut slot_of: Vec<usize> = Vec::with_capacity(all.len());
    let mut keep: Vec<bool> = Vec::with_capacity(all.len());
    {
        let mut first: HashMap<&[u8], usize> = HashMap::new();
        let mut kept = 0usize;
        // Positions in `all` of the kept reads, to compare a candidate duplicate in full.
        let mut kept_at: Vec<usize> = Vec::with_capacity(all.len());
        for (at, operation) in all.iter().enumerate() {
            if operation.lease_ttl.is_none() {
                if let Some(&slot) = first.get(operation.key.as_slice()) {
                    if all[kept_at[slot]] == *operation {
                        slot_of.push(slot);
                        keep.push(false);
                        continue;
                    }
                }
                first.entry(operation.key.as_slice()).or_insert(kept);
            }
            slot_of.push(kept);
            keep.push(true);
            kept_at.push(at);
            kept += 1;
        }
    }
    let unique = all.into_iter().zip(keep).filter_map(|(operation, keep)| keep.then_some(operation)).collect();
    (unique, slot_of)
}

/// The leases among answers nobody received: a placeholder this read created (`md <key> C<cas>` deletes it)
/// or the refresh token of a stale item (`md <key> C<cas> I` hands it back, keeping the item's expiry).
fn orphaned_leases(answers: Vec<GetAnswer>) -> Vec<Delete> {
    answers
        .into_iter()
        .filter_map(Result::ok)
        .filter(|read| read.lease_state == LeaseState::Granted)
        .filter_map(|read| {
            let cas = read.item.cas?;
            let release = Delete::new(&read.key).compare_cas(cas);
            Some(if read.status == GetStatus::Hit && read.value_state == ValueState::Stale {
                release.invalidate()
            } else {
                release
            })
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
    /// bulk reads on their own client, bounded by the bulk limit.
    pub(super) async fn run_gets(&self, operations: Vec<Get>, bulk: bool) -> GetsReply {
        if bulk {
            let deadline = self.connect_timeout + self.bulk_timeout;
            return match tokio::time::timeout(deadline, self.bulk_client.run_many(operations)).await {
                Ok(Ok(results)) => Ok(results.into_iter().map(|r| r.map_err(Arc::new)).collect()),
                Ok(Err(error)) => Err(BatchFailure::Rejected(error.to_string())),
                Err(_elapsed) => Err(BatchFailure::Timeout),
            };
        }
        let Some(batcher) = self.batcher.as_ref() else {
            return match tokio::time::timeout(self.deadline(), self.client.run_many(operations)).await {
                Ok(Ok(results)) => Ok(results.into_iter().map(|r| r.map_err(Arc::new)).collect()),
                Ok(Err(error)) => Err(BatchFailure::Rejected(error.to_string())),
                Err(_elapsed) => Err(BatchFailure::Timeout),
            };
        };
        let (reply, answer) = oneshot::channel();
        if batcher.send(Job { operations, reply }).is_err() {
            return Err(BatchFailure::Rejected("the batching task stopped".to_owned()));
        }
        match tokio::time::timeout(self.deadline(), answer).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_closed)) => Err(BatchFailure::Rejected("the batching task stopped".to_owned())),
            Err(_elapsed) => Err(BatchFailure::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_plain_reads_are_sent_once_and_leased_reads_never_merged() {
        let counter = || Get::new("etagd2:ns:g:all");
        let head = || Get::new("etagd2:ns:u:1").lease_ttl(5);
        let reads = vec![
            head(),
            counter(),
            head(),
            counter(),
            Get::new("etagd2:ns:g:all").touch(Duration::from_secs(60)),
            counter(),
        ];
        let (unique, slot_of) = merge_plain_reads(reads);
        let keys: Vec<_> =
            unique.iter().map(|get| (String::from_utf8_lossy(&get.key).into_owned(), get.lease_ttl)).collect();
        assert_eq!(
            keys,
            [
                ("etagd2:ns:u:1".to_owned(), Some(5)),
                ("etagd2:ns:g:all".to_owned(), None),
                ("etagd2:ns:u:1".to_owned(), Some(5)),
                // Same key, different read (it touches): sent on its own.
                ("etagd2:ns:g:all".to_owned(), None),
            ]
        );
        assert_eq!(slot_of, [0, 1, 2, 1, 3, 1], "every read asked for has an answer, merged ones share it");
    }
}
