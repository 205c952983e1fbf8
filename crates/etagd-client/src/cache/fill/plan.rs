//! What a fill will replace (the CAS values its writes are conditional on) and what it holds (the lease or lock
//! it must release if it does not commit).

use crate::entry::VaryIndex;
use crate::key::Digest;
use crate::store::SetCondition;

/// What a fill will replace and what it holds.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// CAS of the head record seen at lookup; `None` when there was none (write with `Add`).
    pub(super) head_cas: Option<u64>,
    /// The live Vary index, when the head is one that need not be rewritten.
    pub(super) index: Option<VaryIndex>,
    /// The variant slot the lookup selected, and the CAS of its item or placeholder.
    pub(super) variant: Option<(Digest, Option<u64>)>,
    /// What this fill holds and must release if it does not commit.
    pub(super) held: Held,
}

/// The coordination a fill holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Held {
    /// Nothing: an uncoordinated fill.
    Nothing,
    /// The head's lease placeholder, by its CAS.
    HeadPlaceholder(u64),
    /// A Vary variant's lease placeholder, by its CAS.
    VariantPlaceholder(u64),
    /// A refresh lock, by its key.
    Lock(String),
}

impl Plan {
    pub(crate) fn head(cas: Option<u64>, leased: bool) -> Self {
        let held = match (cas, leased) {
            (Some(cas), true) => Held::HeadPlaceholder(cas),
            _ => Held::Nothing,
        };
        Self { head_cas: cas, index: None, variant: None, held }
    }

    pub(crate) fn variant(head_cas: u64, index: Option<VaryIndex>, digest: Digest) -> Self {
        Self { head_cas: Some(head_cas), index, variant: Some((digest, None)), held: Held::Nothing }
    }

    pub(crate) fn variant_lease(&mut self, cas: u64) {
        self.variant_cas(cas);
        self.held = Held::VariantPlaceholder(cas);
    }

    pub(crate) fn variant_cas(&mut self, cas: u64) {
        if let Some((_, slot)) = &mut self.variant {
            *slot = Some(cas);
        }
    }

    pub(crate) fn lock(&mut self, key: String) {
        self.held = Held::Lock(key);
    }

    pub(super) fn head_condition(&self) -> SetCondition {
        self.head_cas.map_or(SetCondition::Add, SetCondition::Cas)
    }
}
