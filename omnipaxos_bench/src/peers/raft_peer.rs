//! tikv's `raft` crate 0.7: `RawNode` over `MemStorage`.
//!
//! Each `Ready` is persisted (snapshot, entries, hard state) before any of its messages is
//! handed to the loop, as the crate's documentation requires for `persisted_messages` (its
//! leader `messages` could leave earlier; we are stricter, like every other library here).
//! Committed entries are taken and counted, then `advance` and `advance_apply`.
//!
//! Configuration: `election_tick = 10`, `heartbeat_tick = 1`, `max_inflight_msgs = 4096`,
//! `max_size_per_msg = NO_LIMIT` (0 would mean one entry per message), `batch_append = true`;
//! commit is broadcast at once (`skip_bcast_commit = false`, the default). Node index 0 becomes
//! leader through `campaign()`; no ticks are needed afterwards.

use raft::{eraftpb::Message, storage::MemStorage, Config, RawNode, NO_LIMIT};

use crate::harness::Node;

/// One replica of raft 0.7.
pub struct RaftNode {
    raw: RawNode<MemStorage>,
    storage: MemStorage,
    /// Committed entries handed out by `Ready`s (what a user would apply).
    applied_entries: u64,
}

impl RaftNode {
    /// Committed entries taken from `Ready`s so far.
    pub fn applied_entries(&self) -> u64 {
        self.applied_entries
    }

    /// Persists the `Ready`, then sends its messages, applies, and advances.
    fn handle_ready(&mut self, out: &mut Vec<Message>) {
        let mut ready = self.raw.ready();
        {
            let mut store = self.storage.wl();
            if !ready.snapshot().is_empty() {
                store.apply_snapshot(ready.snapshot().clone()).expect("apply snapshot");
            }
            if !ready.entries().is_empty() {
                store.append(ready.entries()).expect("append entries");
            }
            if let Some(hard_state) = ready.hs() {
                store.set_hardstate(hard_state.clone());
            }
        }
        // Everything in this Ready is durable now.
        out.extend(ready.take_messages());
        out.extend(ready.take_persisted_messages());
        self.applied_entries += ready.take_committed_entries().len() as u64;
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.storage.wl().mut_hard_state().set_commit(commit);
        }
        out.extend(light.take_messages());
        self.applied_entries += light.take_committed_entries().len() as u64;
        self.raw.advance_apply();
    }
}

impl Node for RaftNode {
    type Message = Message;

    fn build_cluster(n: usize) -> Vec<Self> {
        let voters: Vec<u64> = (1..=n as u64).collect();
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        voters
            .iter()
            .map(|&id| {
                let config = Config {
                    id,
                    election_tick: 10,
                    heartbeat_tick: 1,
                    max_inflight_msgs: 4096,
                    max_size_per_msg: NO_LIMIT,
                    batch_append: true,
                    ..Config::default()
                };
                let storage = MemStorage::new_with_conf_state((voters.clone(), vec![]));
                let raw = RawNode::new(&config, storage.clone(), &logger).expect("raft configuration");
                RaftNode { raw, storage, applied_entries: 0 }
            })
            .collect()
    }

    fn elect_first(cluster: &mut [Self]) {
        cluster[0].raw.campaign().expect("campaign");
    }

    fn propose(&mut self, value: u64) {
        self.raw.propose(Vec::new(), value.to_le_bytes().to_vec()).expect("propose");
    }

    fn step(&mut self, message: Self::Message) {
        self.raw.step(message).expect("step");
    }

    fn drain(&mut self, out: &mut Vec<Self::Message>) {
        if self.raw.has_ready() {
            self.handle_ready(out);
        }
    }

    fn receiver_index(message: &Self::Message) -> usize {
        (message.to - 1) as usize
    }

    fn decided_idx(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }
}
