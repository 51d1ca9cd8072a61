//! The replicated key-value state machine: commands, results, the state itself and its snapshot.
//!
//! Every value written is unique in a run (the simulator numbers them), so any read tells exactly
//! which write it saw; that is what makes the linearizability check of [`crate::linearizability`]
//! cheap and its counterexamples short.

use std::collections::BTreeMap;

use omnipaxos_core::storage::Snapshot;
use serde::{Deserialize, Serialize};

pub use omnipaxos_linearizability::model::{show, step, ClientId, Key, Op, OpResult, Value};

/// Identifies one client request for the whole run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// The client that issued it.
    pub client: ClientId,
    /// The client's request counter.
    pub seq: u64,
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c{}#{}", self.client, self.seq)
    }
}

/// One log entry: a client's operation and who asked for it. Serializable: the persistent
/// storage writes it to its log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The request, unique in the run.
    pub request: RequestId,
    /// The operation.
    pub op: Op,
}

/// The key-value state with an order-independent digest, so replicas compare states in O(1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvState {
    map: BTreeMap<Key, Value>,
    /// Wrapping sum of `mix(key, value)` over the map.
    digest: u64,
}

impl KvState {
    /// Applies one operation and returns its result.
    pub fn apply(&mut self, op: &Op) -> OpResult {
        let key = op.key();
        let before = self.map.get(&key).copied();
        let (after, result) = step(before, op);
        if before != after {
            if let Some(v) = before {
                self.digest = self.digest.wrapping_sub(mix(key, v));
                self.map.remove(&key);
            }
            if let Some(v) = after {
                self.digest = self.digest.wrapping_add(mix(key, v));
                self.map.insert(key, v);
            }
        }
        result
    }

    /// The state after a snapshot of a log whose first entry was applied to `self`.
    pub fn with_snapshot(&self, snapshot: &KvSnapshot) -> KvState {
        let mut state = self.clone();
        for (&key, effect) in &snapshot.effects {
            let before = state.map.get(&key).copied();
            let after = effect.apply(before);
            if let Some(v) = before {
                state.digest = state.digest.wrapping_sub(mix(key, v));
                state.map.remove(&key);
            }
            if let Some(v) = after {
                state.digest = state.digest.wrapping_add(mix(key, v));
                state.map.insert(key, v);
            }
        }
        state
    }

    /// A digest of the state: equal states have equal digests.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// The value of `key`.
    pub fn get(&self, key: Key) -> Option<Value> {
        self.map.get(&key).copied()
    }
}

/// splitmix64 of the pair: spreads small keys and values over 64 bits.
fn mix(key: Key, value: Value) -> u64 {
    let mut z = value.wrapping_add(u64::from(key).wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_add(1);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What a run of operations does to one key, as a function of the value before it.
///
/// Puts and deletes make the result constant; compare-and-swaps map some values to others and
/// leave the rest alone. Functions of this shape compose into the same shape, which lets a
/// snapshot of a log *segment* (a delta, knowing nothing of the state before it) be exact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyEffect {
    /// The key ends with this value, whatever it held before.
    Set(Option<Value>),
    /// The key's value `v` becomes `table[v]` if listed, else stays `v`.
    Map(BTreeMap<Option<Value>, Option<Value>>),
}

impl KeyEffect {
    fn of_op(op: &Op) -> Option<KeyEffect> {
        match *op {
            Op::Put { value, .. } => Some(KeyEffect::Set(Some(value))),
            Op::Delete { .. } => Some(KeyEffect::Set(None)),
            Op::Cas { expected, new, .. } => Some(KeyEffect::Map(BTreeMap::from([(expected, Some(new))]))),
            Op::Get { .. } => None,
        }
    }

    /// The value after this effect, given the value before.
    pub fn apply(&self, before: Option<Value>) -> Option<Value> {
        match self {
            KeyEffect::Set(v) => *v,
            KeyEffect::Map(table) => table.get(&before).copied().unwrap_or(before),
        }
    }

    /// This effect followed by `next`.
    fn then(&self, next: &KeyEffect) -> KeyEffect {
        match (self, next) {
            (_, KeyEffect::Set(v)) => KeyEffect::Set(*v),
            (KeyEffect::Set(v), _) => KeyEffect::Set(next.apply(*v)),
            (KeyEffect::Map(first), KeyEffect::Map(second)) => {
                let mut table: BTreeMap<Option<Value>, Option<Value>> =
                    first.iter().map(|(&from, &to)| (from, next.apply(to))).collect();
                for (&from, &to) in second {
                    table.entry(from).or_insert(to);
                }
                table.retain(|from, to| from != to);
                KeyEffect::Map(table)
            }
        }
    }
}

/// The snapshot of a log segment: per key, the effect of the segment's operations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvSnapshot {
    /// Keys the segment changes (or may change); others are untouched.
    pub effects: BTreeMap<Key, KeyEffect>,
}

impl Snapshot<Command> for KvSnapshot {
    fn create(entries: &[Command]) -> Self {
        let mut snapshot = KvSnapshot::default();
        for command in entries {
            if let Some(effect) = KeyEffect::of_op(&command.op) {
                snapshot.push(command.op.key(), &effect);
            }
        }
        snapshot
    }

    fn merge(&mut self, delta: Self) {
        for (key, effect) in delta.effects {
            self.push(key, &effect);
        }
    }

    fn use_snapshots() -> bool {
        true
    }
}

impl KvSnapshot {
    fn push(&mut self, key: Key, effect: &KeyEffect) {
        let combined = match self.effects.get(&key) {
            Some(existing) => existing.then(effect),
            None => effect.clone(),
        };
        self.effects.insert(key, combined);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(op: Op) -> Command {
        Command { request: RequestId { client: 0, seq: 0 }, op }
    }

    /// A snapshot built in pieces and merged equals the state from applying every operation.
    #[test]
    fn merged_delta_snapshots_equal_applying_every_operation() {
        let ops = [
            Op::Cas { key: 1, expected: None, new: 10 },
            Op::Put { key: 2, value: 20 },
            Op::Cas { key: 1, expected: Some(10), new: 11 },
            Op::Cas { key: 2, expected: Some(99), new: 21 },
            Op::Delete { key: 2 },
            Op::Cas { key: 2, expected: None, new: 22 },
            Op::Get { key: 3 },
            Op::Cas { key: 3, expected: Some(5), new: 6 },
        ];
        let commands: Vec<Command> = ops.iter().map(|&op| command(op)).collect();
        let mut expected = KvState::default();
        for op in &ops {
            expected.apply(op);
        }
        for split in 0..=commands.len() {
            let mut snapshot = KvSnapshot::create(&commands[..split]);
            snapshot.merge(KvSnapshot::create(&commands[split..]));
            assert_eq!(KvState::default().with_snapshot(&snapshot), expected, "split at {split}");
        }
        assert_eq!(expected.get(1), Some(11));
        assert_eq!(expected.get(2), Some(22));
        assert_eq!(expected.get(3), None);
    }

    /// A later configuration's log starts from the previous one's final state.
    #[test]
    fn a_snapshot_applies_on_top_of_the_state_its_log_started_from() {
        let mut base = KvState::default();
        base.apply(&Op::Put { key: 1, value: 10 });
        base.apply(&Op::Put { key: 2, value: 20 });
        let ops = [Op::Cas { key: 1, expected: Some(10), new: 11 }, Op::Delete { key: 2 }];
        let commands: Vec<Command> = ops.iter().map(|&op| command(op)).collect();
        let mut expected = base.clone();
        for op in &ops {
            expected.apply(op);
        }
        assert_eq!(base.with_snapshot(&KvSnapshot::create(&commands)), expected);
    }

    #[test]
    fn digest_tracks_the_contents_not_the_history() {
        let mut a = KvState::default();
        a.apply(&Op::Put { key: 1, value: 5 });
        a.apply(&Op::Put { key: 2, value: 6 });
        let mut b = KvState::default();
        b.apply(&Op::Put { key: 2, value: 6 });
        b.apply(&Op::Put { key: 1, value: 7 });
        assert_ne!(a.digest(), b.digest());
        b.apply(&Op::Cas { key: 1, expected: Some(7), new: 5 });
        assert_eq!(a.digest(), b.digest());
        assert_eq!(b.apply(&Op::Get { key: 1 }), OpResult::Read(Some(5)));
    }
}
