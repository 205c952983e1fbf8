//! Live generations: the counter values a lookup reads (namespace, tags) and the check of an entry's recorded
//! values against them, shared by lookup and inspection.

use super::{Cache, bump};
use crate::entry::EntryMeta;
use crate::generation::{Check, Generation};
use crate::store::{GetOutcome, GetRequest};

/// Live generation values read in a lookup.
#[derive(Debug, Clone, Default)]
pub(crate) struct Live {
    pub(crate) all: Option<Generation>,
    pub(crate) tags: TagGenerations,
}

/// The live counter of each tag read (`None`: missing or unreadable). A list rather than a hash map: a lookup
/// reads a handful of tags, and hashing each name twice cost more than comparing a few.
#[derive(Debug, Clone, Default)]
pub(crate) struct TagGenerations(Vec<(String, Option<Generation>)>);

impl TagGenerations {
    /// Records a tag's counter, replacing what was recorded for it.
    pub(crate) fn insert(&mut self, tag: String, generation: Option<Generation>) {
        match self.0.iter_mut().find(|(held, _)| *held == tag) {
            Some((_, held)) => *held = generation,
            None => self.0.push((tag, generation)),
        }
    }

    /// The counter recorded for `tag`, if it was read.
    pub(crate) fn get(&self, tag: &str) -> Option<&Option<Generation>> {
        self.0.iter().find(|(held, _)| held == tag).map(|(_, generation)| generation)
    }

    /// Whether `tag` was read.
    pub(crate) fn contains_key(&self, tag: &str) -> bool {
        self.get(tag).is_some()
    }

    /// The tags read.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(tag, _)| tag)
    }
}

impl Cache {
    /// Decodes a counter read (`None`: missing or corrupt, which no entry matches).
    pub(super) fn generation_of(&self, outcome: GetOutcome) -> Option<Generation> {
        match outcome {
            GetOutcome::Hit(item) => {
                let generation = Generation::decode(&item.value);
                if generation.is_none() {
                    bump(&self.inner.counters.corrupt_items);
                }
                generation
            }
            GetOutcome::Miss { .. } => None,
        }
    }

    /// Reads the counters of tags not read yet (one round for all of them), from the copies on the server of
    /// the head record `head_key`.
    pub(super) async fn read_tags(&self, tags: &[String], head_key: &str, live: &mut Live) {
        let missing: Vec<&String> = tags.iter().filter(|tag| !live.tags.contains_key(tag)).collect();
        if missing.is_empty() {
            return;
        }
        let ns = &self.inner.config.namespace;
        let requests: Vec<GetRequest> =
            missing.iter().map(|tag| GetRequest::plain(ns.tag_generation_key(tag)).near(head_key)).collect();
        let results = self.inner.store.get_many(&requests).await;
        for (tag, result) in missing.into_iter().zip(results) {
            let generation = match result {
                Ok(outcome) => self.generation_of(outcome),
                Err(error) => {
                    self.store_error(&error);
                    None
                }
            };
            live.tags.insert(tag.clone(), generation);
        }
    }

    /// Whether an entry's recorded generations are still live.
    pub(super) fn validity(meta: &EntryMeta, live: &Live, url_generation: Option<u64>, now_ms: u64) -> Check {
        if let Some(url) = url_generation {
            if meta.generations.url != url {
                return Check::Changed;
            }
        }
        let Some(all) = &live.all else {
            return Check::Changed;
        };
        let mut result = all.check(meta.generations.all, now_ms);
        if meta.generations.tags.len() != meta.tags.len() {
            return Check::Changed;
        }
        for (tag, recorded) in meta.tags.iter().zip(&meta.generations.tags) {
            let check = match live.tags.get(tag) {
                Some(Some(generation)) => generation.check(*recorded, now_ms),
                _ => Check::Changed,
            };
            match check {
                Check::Changed => return Check::Changed,
                Check::Grace => result = Check::Grace,
                Check::Current => {}
            }
        }
        result
    }
}
