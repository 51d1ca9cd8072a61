//! The replicated state machine: the key-value map with revisions, and the client sessions
//! that make writes exactly-once. [`KvState::apply`] is a pure function of the state and the
//! command: every node applies the same log and gets the same state and answers, so nothing in
//! here may depend on configuration, clocks or randomness. Its limits are therefore constants.
//!
//! [`KvSnapshot`] is the core's snapshot type: the core builds it from decided entries when a
//! node compacts its log, and sends it to a node that fell behind the compacted prefix.

use std::collections::{BTreeMap, BTreeSet};

use omnipaxos_core::storage::Snapshot;
use serde::{Deserialize, Serialize};

use crate::command::{
    CasAction, Command, Compare, EventKind, Op, Revision, SessionRef, WatchEvent, WriteResult,
};

/// Largest size of the key space (keys, values and [`KEY_OVERHEAD_BYTES`] per key); a write
/// that would grow it beyond is refused with `QuotaExceeded`. It bounds the snapshot, which
/// travels in one frame (the server sets the frame limit above it). A constant because every
/// node must refuse the same writes.
pub const STATE_QUOTA_BYTES: u64 = 256 << 20;
/// What one key costs in the quota beyond its key and value bytes (revisions, map node).
pub const KEY_OVERHEAD_BYTES: u64 = 64;
/// At most this many client sessions are remembered; a new session beyond it evicts the one
/// used longest ago (by log index).
pub const MAX_SESSIONS: usize = 100_000;
/// A session not used for this many log entries expires (checked as entries are applied).
pub const SESSION_EXPIRY_ENTRIES: u64 = 10_000_000;

/// One key's value and revisions (etcd's model).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The value.
    pub value: String,
    /// The revision that created the key (since it last did not exist).
    pub create_revision: Revision,
    /// The revision of its last change.
    pub mod_revision: Revision,
    /// Changes since creation (1 after the creating put).
    pub version: u64,
}

/// What the state machine remembers of one client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    /// The last request applied.
    seq: u64,
    /// Its answer, given again to a retry.
    result: WriteResult,
    /// The log index of the last request (for expiry and eviction).
    last_index: u64,
}

/// The key-value map after applying the log prefix `[0, applied)`.
///
/// Invariants: `data_bytes` is the quota size of `data`; `session_order` holds exactly
/// `(last_index, client_id)` of every session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    applied: u64,
    data: BTreeMap<String, KeyRecord>,
    data_bytes: u64,
    sessions: BTreeMap<u64, Session>,
    session_order: BTreeSet<(u64, u64)>,
}

impl KvState {
    /// Entries applied: the state reflects the log prefix `[0, applied)`; also the cluster's
    /// revision.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The record of `key`.
    pub fn get(&self, key: &str) -> Option<&KeyRecord> {
        self.data.get(key)
    }

    /// Keys starting with `prefix` and not below `start`, in order, at most `limit`; and
    /// whether more exist.
    pub fn list(&self, prefix: &str, start: &str, limit: usize) -> (Vec<(&String, &KeyRecord)>, bool) {
        let from = if start > prefix { start } else { prefix };
        let mut range =
            self.data.range::<str, _>((std::ops::Bound::Included(from), std::ops::Bound::Unbounded));
        let mut items = Vec::new();
        for (key, record) in range.by_ref() {
            if !key.starts_with(prefix) {
                return (items, false);
            }
            if items.len() == limit {
                return (items, true);
            }
            items.push((key, record));
        }
        (items, false)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True if there are no keys.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The quota size of the key space.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Sessions remembered.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The answer the state machine remembers for `session`, if it is the session's last.
    pub fn remembered(&self, session: SessionRef) -> Option<&WriteResult> {
        self.sessions.get(&session.client_id).filter(|s| s.seq == session.seq).map(|s| &s.result)
    }

    /// The last sequence number of a client, if its session is remembered.
    pub fn last_seq(&self, client_id: u64) -> Option<u64> {
        self.sessions.get(&client_id).map(|s| s.seq)
    }

    /// Applies the command at log index `self.applied()`; returns its answer and pushes the
    /// changes it made to `events`.
    pub fn apply(&mut self, command: &Command, events: &mut Vec<WatchEvent>) -> WriteResult {
        let index = self.applied;
        self.applied += 1;
        self.expire_sessions(index);
        let session = command.session;
        if session.client_id == 0 {
            return self.execute(&command.op, index + 1, events);
        }
        match self.sessions.get(&session.client_id) {
            Some(known) if session.seq == known.seq => return known.result.clone(),
            Some(known) if session.seq < known.seq => {
                return WriteResult::StaleSequence { last_seq: known.seq };
            }
            Some(_) => {}
            None if session.seq > 1 => return WriteResult::SessionExpired,
            None => {}
        }
        let result = self.execute(&command.op, index + 1, events);
        self.remember(session, result.clone(), index);
        result
    }

    fn execute(&mut self, op: &Op, revision: Revision, events: &mut Vec<WatchEvent>) -> WriteResult {
        match op {
            Op::Put { key, value } => match self.put(key, value, revision, events) {
                Ok(()) => WriteResult::Put { revision },
                Err(QuotaExceeded) => WriteResult::QuotaExceeded,
            },
            Op::Delete { key } => {
                let deleted = self.delete(key, revision, events);
                WriteResult::Delete { revision, deleted }
            }
            Op::Cas { key, compare, then } => {
                let current = self.data.get(key.as_str());
                let holds = match compare {
                    Compare::Value(expected) => current.is_some_and(|record| &record.value == expected),
                    Compare::Revision(expected) => {
                        current.map_or(0, |record| record.mod_revision) == *expected
                    }
                };
                let current_revision = current.map_or(0, |record| record.mod_revision);
                if !holds {
                    return WriteResult::Cas { succeeded: false, revision, mod_revision: current_revision };
                }
                match then {
                    CasAction::Put(value) => match self.put(key, value, revision, events) {
                        Ok(()) => WriteResult::Cas { succeeded: true, revision, mod_revision: revision },
                        Err(QuotaExceeded) => WriteResult::QuotaExceeded,
                    },
                    CasAction::Delete => {
                        self.delete(key, revision, events);
                        WriteResult::Cas { succeeded: true, revision, mod_revision: 0 }
                    }
                }
            }
        }
    }

    fn put(
        &mut self,
        key: &str,
        value: &str,
        revision: Revision,
        events: &mut Vec<WatchEvent>,
    ) -> Result<(), QuotaExceeded> {
        // One lookup for both the quota check and the change (keys share long prefixes, so
        // each comparison on the way down costs a memcmp).
        let record = self.data.get_mut(key);
        let old_bytes = record.as_ref().map_or(0, |record| record_bytes(key, &record.value));
        let new_bytes = record_bytes(key, value);
        let total = self.data_bytes - old_bytes + new_bytes;
        if new_bytes > old_bytes && total > STATE_QUOTA_BYTES {
            return Err(QuotaExceeded);
        }
        self.data_bytes = total;
        match record {
            Some(record) => {
                record.value.clear();
                record.value.push_str(value);
                record.mod_revision = revision;
                record.version += 1;
            }
            None => {
                let record = KeyRecord {
                    value: value.to_string(),
                    create_revision: revision,
                    mod_revision: revision,
                    version: 1,
                };
                self.data.insert(key.to_string(), record);
            }
        }
        events.push(WatchEvent {
            revision,
            kind: EventKind::Put,
            key: key.to_string(),
            value: Some(value.to_string()),
        });
        Ok(())
    }

    fn delete(&mut self, key: &str, revision: Revision, events: &mut Vec<WatchEvent>) -> bool {
        let Some(record) = self.data.remove(key) else { return false };
        self.data_bytes -= record_bytes(key, &record.value);
        events.push(WatchEvent { revision, kind: EventKind::Delete, key: key.to_string(), value: None });
        true
    }

    fn remember(&mut self, session: SessionRef, result: WriteResult, index: u64) {
        let client = session.client_id;
        if let Some(old) = self.sessions.get(&client) {
            self.session_order.remove(&(old.last_index, client));
        } else if self.sessions.len() >= MAX_SESSIONS {
            if let Some((_, evicted)) = self.session_order.pop_first() {
                self.sessions.remove(&evicted);
            }
        }
        self.sessions.insert(client, Session { seq: session.seq, result, last_index: index });
        self.session_order.insert((index, client));
    }

    fn expire_sessions(&mut self, index: u64) {
        while let Some(&(last_index, client)) = self.session_order.first() {
            if last_index.saturating_add(SESSION_EXPIRY_ENTRIES) > index {
                break;
            }
            self.session_order.pop_first();
            self.sessions.remove(&client);
        }
    }

    /// Checks the invariants (for tests).
    pub fn check_invariants(&self) {
        let bytes: u64 = self.data.iter().map(|(key, record)| record_bytes(key, &record.value)).sum();
        assert_eq!(bytes, self.data_bytes, "data_bytes is the quota size of the map");
        assert_eq!(self.sessions.len(), self.session_order.len());
        for (client, session) in &self.sessions {
            assert!(self.session_order.contains(&(session.last_index, *client)));
        }
        assert!(self.sessions.len() <= MAX_SESSIONS);
    }
}

struct QuotaExceeded;

fn record_bytes(key: &str, value: &str) -> u64 {
    (key.len() + value.len()) as u64 + KEY_OVERHEAD_BYTES
}

/// The core's snapshot of the key-value log: the state after the commands it covers.
///
/// The core builds a snapshot with `create(entries)` and extends one with `merge(delta)`, both
/// from entries alone. A key-value delta cannot be computed without the state before it (a CAS
/// depends on the current value), so `create` keeps the commands unapplied (`pending`) and
/// `merge` applies them to the state it extends. A snapshot the core created from index 0 (the
/// first compaction) is "empty state + pending commands from 0", which [`KvSnapshot::into_state`]
/// applies; every later one is a plain state. Deterministic like [`KvState::apply`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvSnapshot {
    state: KvState,
    pending: Vec<Command>,
}

impl KvSnapshot {
    /// A snapshot of `state` (no pending commands).
    pub fn of(state: KvState) -> Self {
        KvSnapshot { state, pending: Vec::new() }
    }

    /// The state after every command the snapshot covers.
    pub fn into_state(mut self) -> KvState {
        self.materialize();
        self.state
    }

    /// Entries the snapshot covers.
    pub fn covers(&self) -> u64 {
        self.state.applied + self.pending.len() as u64
    }

    fn materialize(&mut self) {
        let mut discard = Vec::new();
        for command in std::mem::take(&mut self.pending) {
            self.state.apply(&command, &mut discard);
            discard.clear();
        }
    }
}

impl Snapshot<Command> for KvSnapshot {
    fn create(entries: &[Command]) -> Self {
        KvSnapshot { state: KvState::default(), pending: entries.to_vec() }
    }

    fn merge(&mut self, delta: Self) {
        // The core merges only deltas it created from the entries right after `self`.
        if delta.state.applied != 0 {
            tracing::error!(
                covers = delta.covers(),
                "merging a snapshot that is not a delta; its state is ignored"
            );
        }
        self.materialize();
        let mut discard = Vec::new();
        for command in &delta.pending {
            self.state.apply(command, &mut discard);
            discard.clear();
        }
    }

    fn use_snapshots() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(client_id: u64, seq: u64, op: Op) -> Command {
        Command { session: SessionRef { client_id, seq }, op }
    }

    fn put(key: &str, value: &str) -> Op {
        Op::Put { key: key.into(), value: value.into() }
    }

    fn apply(state: &mut KvState, command: Command) -> WriteResult {
        let mut events = Vec::new();
        let result = state.apply(&command, &mut events);
        state.check_invariants();
        result
    }

    #[test]
    fn revisions_count_log_entries_and_keys_carry_their_last_change() {
        let mut state = KvState::default();
        assert_eq!(apply(&mut state, cmd(0, 1, put("a", "1"))), WriteResult::Put { revision: 1 });
        assert_eq!(apply(&mut state, cmd(0, 2, put("b", "2"))), WriteResult::Put { revision: 2 });
        assert_eq!(apply(&mut state, cmd(0, 3, put("a", "3"))), WriteResult::Put { revision: 3 });
        let a = state.get("a").unwrap();
        assert_eq!((a.value.as_str(), a.create_revision, a.mod_revision, a.version), ("3", 1, 3, 2));
        assert_eq!(
            apply(&mut state, cmd(0, 4, Op::Delete { key: "a".into() })),
            WriteResult::Delete { revision: 4, deleted: true }
        );
        assert_eq!(
            apply(&mut state, cmd(0, 5, Op::Delete { key: "a".into() })),
            WriteResult::Delete { revision: 5, deleted: false }
        );
        assert_eq!(apply(&mut state, cmd(0, 6, put("a", "x"))), WriteResult::Put { revision: 6 });
        assert_eq!(state.get("a").unwrap().create_revision, 6, "recreated");
        assert_eq!(state.applied(), 6);
    }

    #[test]
    fn compare_and_swap_on_value_and_on_revision() {
        let mut state = KvState::default();
        let cas = |compare, then| Op::Cas { key: "k".into(), compare, then };
        let absent = cas(Compare::Revision(0), CasAction::Put("v1".into()));
        assert_eq!(
            apply(&mut state, cmd(0, 1, absent.clone())),
            WriteResult::Cas { succeeded: true, revision: 1, mod_revision: 1 }
        );
        assert_eq!(
            apply(&mut state, cmd(0, 2, absent)),
            WriteResult::Cas { succeeded: false, revision: 2, mod_revision: 1 },
            "no longer absent"
        );
        let on_value = cas(Compare::Value("v1".into()), CasAction::Put("v2".into()));
        assert_eq!(
            apply(&mut state, cmd(0, 3, on_value.clone())),
            WriteResult::Cas { succeeded: true, revision: 3, mod_revision: 3 }
        );
        assert!(matches!(apply(&mut state, cmd(0, 4, on_value)), WriteResult::Cas { succeeded: false, .. }));
        let delete = cas(Compare::Revision(3), CasAction::Delete);
        assert_eq!(
            apply(&mut state, cmd(0, 5, delete)),
            WriteResult::Cas { succeeded: true, revision: 5, mod_revision: 0 }
        );
        assert!(state.get("k").is_none());
    }

    #[test]
    fn a_retried_request_is_applied_once_and_gets_the_original_answer() {
        let mut state = KvState::default();
        let first = apply(&mut state, cmd(7, 1, put("k", "a")));
        assert_eq!(apply(&mut state, cmd(9, 1, put("k", "b"))), WriteResult::Put { revision: 2 });
        assert_eq!(
            apply(&mut state, cmd(7, 1, put("k", "a"))),
            first,
            "the duplicate gets the original answer"
        );
        assert_eq!(state.get("k").unwrap().value, "b", "and is not applied again");
        assert_eq!(apply(&mut state, cmd(7, 2, put("k", "c"))), WriteResult::Put { revision: 4 });
        assert_eq!(apply(&mut state, cmd(7, 1, put("k", "a"))), WriteResult::StaleSequence { last_seq: 2 });
        assert_eq!(apply(&mut state, cmd(8, 5, put("k", "d"))), WriteResult::SessionExpired);
        assert_eq!(state.get("k").unwrap().value, "c");
    }

    #[test]
    fn sessions_are_bounded_and_expire_by_log_index() {
        let mut state = KvState::default();
        let mut events = Vec::new();
        for client in 1..=(MAX_SESSIONS as u64 + 10) {
            state.apply(&cmd(client, 1, put("k", "v")), &mut events);
        }
        state.check_invariants();
        assert_eq!(state.session_count(), MAX_SESSIONS);
        assert_eq!(state.last_seq(1), None, "the oldest were evicted");
        assert_eq!(state.last_seq(MAX_SESSIONS as u64 + 10), Some(1));
        // Expiry: pretend the log moved far ahead.
        state.applied += SESSION_EXPIRY_ENTRIES;
        apply(&mut state, cmd(0, 1, put("k", "w")));
        assert_eq!(state.session_count(), 0);
    }

    #[test]
    fn the_quota_refuses_growth_but_not_shrinking() {
        let mut state = KvState::default();
        let big = "x".repeat(64 << 20);
        for i in 0..3 {
            assert!(matches!(
                apply(&mut state, cmd(0, 1, put(&format!("k{i}"), &big))),
                WriteResult::Put { .. }
            ));
        }
        assert_eq!(apply(&mut state, cmd(0, 1, put("k3", &big))), WriteResult::QuotaExceeded);
        assert!(state.get("k3").is_none());
        assert!(matches!(apply(&mut state, cmd(0, 1, put("k0", "small"))), WriteResult::Put { .. }));
        assert!(matches!(apply(&mut state, cmd(0, 1, put("k3", &big))), WriteResult::Put { .. }));
    }

    #[test]
    fn snapshots_built_from_entries_equal_the_applied_state() {
        let commands: Vec<Command> = (0..300u64)
            .map(|i| {
                let key = format!("k{}", i % 17);
                let op = match i % 5 {
                    0 => Op::Delete { key },
                    1 => Op::Cas {
                        key,
                        compare: Compare::Value(format!("v{}", i - 1)),
                        then: CasAction::Put(format!("c{i}")),
                    },
                    _ => put(&key, &format!("v{i}")),
                };
                cmd(i % 4 + 1, i / 4 + 1, op)
            })
            .collect();
        let mut state = KvState::default();
        for command in &commands {
            apply(&mut state, command.clone());
        }
        // As the core does it: create from [0, 100), then merge deltas of later entries.
        let mut snapshot = KvSnapshot::create(&commands[..100]);
        snapshot.merge(KvSnapshot::create(&commands[100..250]));
        snapshot.merge(KvSnapshot::create(&commands[250..]));
        assert_eq!(snapshot.covers(), 300);
        assert_eq!(snapshot.clone().into_state(), state);
        // A lazy first snapshot also materializes to the same state.
        assert_eq!(KvSnapshot::create(&commands).into_state(), state);
    }

    #[test]
    fn list_by_prefix_with_a_limit() {
        let mut state = KvState::default();
        for key in ["a", "b/1", "b/2", "b/3", "c"] {
            apply(&mut state, cmd(0, 1, put(key, "v")));
        }
        let (items, more) = state.list("b/", "", 2);
        assert_eq!(items.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["b/1", "b/2"]);
        assert!(more);
        let (items, more) = state.list("b/", "", 3);
        assert_eq!((items.len(), more), (3, false));
        let (items, _) = state.list("", "", 100);
        assert_eq!(items.len(), 5);
        let (items, more) = state.list("b/", "b/2", 100);
        assert_eq!(items.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["b/2", "b/3"]);
        assert!(!more);
    }
}
