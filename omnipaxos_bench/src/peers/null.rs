//! The null protocol: the least work any leader-based replication does on this harness.
//!
//! The leader appends proposals to its log; at each drain it copies the new entries into one
//! Append per follower; a follower appends them and acks its log length (one ack per drain);
//! the leader counts a majority of log lengths (its own included) as decided. No ballots, no
//! persistence calls, no ids, no failure handling: a floor, not a protocol.

use crate::harness::Node;

/// The largest cluster the null protocol counts a majority for without allocating.
pub const MAX_CLUSTER_SIZE: usize = 16;

/// The null protocol's messages.
#[derive(Debug)]
pub enum NullMessage {
    /// Entries for the follower's log end.
    Append { to: usize, entries: Vec<u64> },
    /// The follower's log length.
    Ack { from: usize, to: usize, log_len: u64 },
}

/// One node of the null protocol; index 0 leads.
pub struct NullNode {
    index: usize,
    cluster_size: usize,
    log: Vec<u64>,
    /// Leader: entries below this were sent to every follower.
    sent_len: usize,
    /// Leader: each node's acknowledged log length (own entry unused).
    acked_len: Vec<u64>,
    decided_idx: u64,
    /// Follower: an ack to send at the next drain.
    pending_ack: Option<usize>,
}

impl NullNode {
    fn is_leader(&self) -> bool {
        self.index == 0
    }

    /// The highest log length a majority (the leader included) holds.
    fn majority_len(&self) -> u64 {
        let mut buffer = [0u64; MAX_CLUSTER_SIZE];
        let lengths = &mut buffer[..self.cluster_size];
        lengths.copy_from_slice(&self.acked_len);
        lengths[self.index] = self.log.len() as u64;
        lengths.sort_unstable_by(|a, b| b.cmp(a));
        lengths[self.cluster_size / 2]
    }
}

impl Node for NullNode {
    type Message = NullMessage;

    const FOLLOWERS_LEARN_DECISIONS: bool = false;

    fn build_cluster(n: usize) -> Vec<Self> {
        assert!(n <= MAX_CLUSTER_SIZE, "the null protocol supports at most {MAX_CLUSTER_SIZE} nodes");
        (0..n)
            .map(|index| NullNode {
                index,
                cluster_size: n,
                log: Vec::new(),
                sent_len: 0,
                acked_len: vec![0; n],
                decided_idx: 0,
                pending_ack: None,
            })
            .collect()
    }

    fn elect_first(_cluster: &mut [Self]) {}

    fn propose(&mut self, value: u64) {
        debug_assert!(self.is_leader());
        self.log.push(value);
    }

    fn step(&mut self, message: Self::Message) {
        match message {
            NullMessage::Append { entries, .. } => {
                self.log.extend_from_slice(&entries);
                self.pending_ack = Some(self.log.len());
            }
            NullMessage::Ack { from, log_len, .. } => {
                self.acked_len[from] = self.acked_len[from].max(log_len);
                self.decided_idx = self.decided_idx.max(self.majority_len());
            }
        }
    }

    fn drain(&mut self, out: &mut Vec<Self::Message>) {
        if self.is_leader() {
            if self.sent_len < self.log.len() {
                let new = &self.log[self.sent_len..];
                for to in (0..self.cluster_size).filter(|&i| i != self.index) {
                    out.push(NullMessage::Append { to, entries: new.to_vec() });
                }
                self.sent_len = self.log.len();
            }
            if self.cluster_size == 1 {
                self.decided_idx = self.log.len() as u64;
            }
        } else if let Some(log_len) = self.pending_ack.take() {
            out.push(NullMessage::Ack { from: self.index, to: 0, log_len: log_len as u64 });
        }
    }

    fn receiver_index(message: &Self::Message) -> usize {
        match message {
            NullMessage::Append { to, .. } | NullMessage::Ack { to, .. } => *to,
        }
    }

    fn decided_idx(&self) -> u64 {
        self.decided_idx
    }
}
