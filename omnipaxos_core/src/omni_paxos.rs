//! The combined facade: Sequence Paxos and Ballot Leader Election behind one message type,
//! one `tick` and one `take_outgoing_messages`, for users who do not want to wire the two.
//!
//! ```text
//!   tick() ──► BLE round ──(elected ballot)──► SequencePaxos::handle_leader
//!          └─► SequencePaxos::tick (batch flush, resend)
//!   handle_incoming(Message::BLE | Message::SequencePaxos) ──► the component it names
//!   take_outgoing_messages(buf) ──► flush storage, then Paxos messages, then BLE messages
//! ```

use std::{fmt::Debug, ops::RangeBounds};

use crate::{
    ballot::Ballot,
    ballot_leader_election::{BLEMessage, BallotLeaderElection},
    config::OmniPaxosConfig,
    errors::{CompactionErr, ProposeErr, ReadErr, ReplicaError},
    messages::{Message, PaxosMessage},
    sequence_paxos::{CreateError, ProposalOutcome, ReadConsistency, ReadId, ReadOutcome, SequencePaxos},
    storage::{ClusterConfig, Snapshot, StopSign, Storage},
    util::{LogEntry, LogIndex, NodeId, ProposalId},
};

/// A replica with its own leader election. See the module docs.
pub struct OmniPaxos<T, S, B> {
    sequence_paxos: SequencePaxos<T, S, B>,
    ble: BallotLeaderElection,
    paxos_buffer: Vec<PaxosMessage<T, S>>,
    ble_buffer: Vec<BLEMessage>,
}

impl<T, S, B> OmniPaxos<T, S, B>
where
    T: Clone + Debug,
    S: Snapshot<T>,
    B: Storage<T, S>,
{
    /// Creates a replica; see [`OmniPaxos::try_with`].
    ///
    /// # Panics
    /// If the configuration is invalid or the storage fails.
    pub fn with(config: OmniPaxosConfig, storage: B) -> Self {
        match Self::try_with(config, storage) {
            Ok(op) => op,
            Err(e) => panic!("cannot create OmniPaxos: {e}"),
        }
    }

    /// Creates a replica over `storage`, which may hold state from an earlier run: then the
    /// replica recovers (its persisted promise stays in force and its leader election starts in
    /// the recovery round).
    pub fn try_with(config: OmniPaxosConfig, storage: B) -> Result<Self, CreateError> {
        config.validate()?;
        let sequence_paxos = SequencePaxos::try_with(config.sequence_paxos, storage)?;
        let mut ble = BallotLeaderElection::try_with(config.ble)?;
        let promise = sequence_paxos.get_promise();
        if !promise.is_initial() {
            ble.recover(promise);
        }
        Ok(OmniPaxos { sequence_paxos, ble, paxos_buffer: Vec::new(), ble_buffer: Vec::new() })
    }

    /// Advances logical time by one tick for both components.
    pub fn tick(&mut self) -> Result<(), ReplicaError> {
        if self.sequence_paxos.is_learner() {
            // A learner takes no part in leader election (it could never lead).
            return self.sequence_paxos.tick();
        }
        let sp = &self.sequence_paxos;
        self.ble.set_paxos_state(sp.get_promise(), sp.is_accepting_leader());
        if let Some(leader) = self.ble.tick() {
            self.sequence_paxos.handle_leader(leader)?;
        }
        self.sequence_paxos.tick()
    }

    /// Handles one incoming message of either component.
    pub fn handle_incoming(&mut self, message: Message<T, S>) -> Result<(), ReplicaError> {
        match message {
            Message::SequencePaxos(m) => self.sequence_paxos.handle(m),
            Message::BLE(m) => {
                if !self.sequence_paxos.is_learner() {
                    self.ble.handle(m);
                }
                Ok(())
            }
        }
    }

    /// Flushes storage, then appends every queued message to `buffer` (reusing its capacity).
    /// This is the durability point: call it after every batch of inputs and send the result.
    pub fn take_outgoing_messages(&mut self, buffer: &mut Vec<Message<T, S>>) -> Result<(), ReplicaError> {
        self.sequence_paxos.take_outgoing_messages(&mut self.paxos_buffer)?;
        self.ble.take_outgoing_messages(&mut self.ble_buffer);
        buffer.reserve(self.paxos_buffer.len() + self.ble_buffer.len());
        buffer.extend(self.paxos_buffer.drain(..).map(Message::SequencePaxos));
        buffer.extend(self.ble_buffer.drain(..).map(Message::BLE));
        Ok(())
    }

    /// Writes and flushes everything held in memory only; see [`SequencePaxos::persist_all`].
    pub fn persist_all(&mut self) -> Result<(), ReplicaError> {
        self.sequence_paxos.persist_all()
    }

    /// Appends an entry; see [`SequencePaxos::append`].
    pub fn append(&mut self, entry: T) -> Result<ProposalId, ProposeErr<T>> {
        self.sequence_paxos.append(entry)
    }

    /// Moves the outcomes of this replica's proposals into `buffer`.
    pub fn take_proposal_outcomes(&mut self, buffer: &mut Vec<(ProposalId, ProposalOutcome)>) {
        self.sequence_paxos.take_proposal_outcomes(buffer);
    }

    /// Requests a linearizable read without a log write; see [`SequencePaxos::read_index`].
    pub fn read_index(&mut self) -> Result<ReadId, ReadErr> {
        self.sequence_paxos.read_index()
    }

    /// Ends this leader's read lease now; see [`SequencePaxos::expire_read_lease`].
    pub fn expire_read_lease(&mut self) {
        self.sequence_paxos.expire_read_lease();
    }

    /// A read with a choice of consistency; see [`SequencePaxos::read_index_with`].
    pub fn read_index_with(&mut self, consistency: ReadConsistency) -> Result<ReadId, ReadErr> {
        self.sequence_paxos.read_index_with(consistency)
    }

    /// Moves the outcomes of this replica's reads into `buffer`.
    pub fn take_read_outcomes(&mut self, buffer: &mut Vec<(ReadId, ReadOutcome)>) {
        self.sequence_paxos.take_read_outcomes(buffer);
    }

    /// True if this replica leads and is in its accept phase (it can decide entries); see
    /// [`SequencePaxos::is_accepting_leader`].
    pub fn is_accepting_leader(&self) -> bool {
        self.sequence_paxos.is_accepting_leader()
    }

    /// Proposes the end of this configuration; see [`SequencePaxos::reconfigure`].
    pub fn reconfigure(
        &mut self,
        next: ClusterConfig,
        metadata: Option<Vec<u8>>,
    ) -> Result<(), ProposeErr<T>> {
        self.sequence_paxos.reconfigure(next, metadata)
    }

    /// The decided StopSign, once this configuration is over.
    pub fn is_reconfigured(&self) -> Option<StopSign> {
        self.sequence_paxos.is_reconfigured()
    }

    /// The entry at `idx`; see [`SequencePaxos::read`].
    pub fn read(&self, idx: LogIndex) -> Option<LogEntry<T, S>> {
        self.sequence_paxos.read(idx)
    }

    /// The entries in `range`; see [`SequencePaxos::read_entries`].
    pub fn read_entries<R: RangeBounds<LogIndex>>(&self, range: R) -> Option<Vec<LogEntry<T, S>>> {
        self.sequence_paxos.read_entries(range)
    }

    /// The decided entries from `from_idx` on; see [`SequencePaxos::read_decided_suffix`].
    pub fn read_decided_suffix(&self, from_idx: LogIndex) -> Option<Vec<LogEntry<T, S>>> {
        self.sequence_paxos.read_decided_suffix(from_idx)
    }

    /// Length of the decided prefix.
    pub fn get_decided_idx(&self) -> LogIndex {
        self.sequence_paxos.get_decided_idx()
    }

    /// Entries below this index are compacted.
    pub fn get_compacted_idx(&self) -> LogIndex {
        self.sequence_paxos.get_compacted_idx()
    }

    /// The promised ballot.
    pub fn get_promise(&self) -> Ballot {
        self.sequence_paxos.get_promise()
    }

    /// The leader this replica follows and whether it looks ready to this replica: for the
    /// leader itself, that it is in its accept phase and still reaches a quorum; for a follower,
    /// that it hears a leader that reaches its quorum. A leader that lost its quorum reports
    /// `false`, so clients go elsewhere.
    ///
    /// Unlike the reference design's `get_current_leader` (the leader's pid as Ballot Leader
    /// Election last saw it, with no readiness), this is the owner of this replica's *promise*
    /// (the leader Sequence Paxos follows), plus readiness; a replica that restarted holding
    /// its own ballot knows no leader until one prepares it. Use
    /// [`is_accepting_leader`](Self::is_accepting_leader) to ask whether this replica leads.
    pub fn get_current_leader(&self) -> Option<(NodeId, bool)> {
        let leader = self.sequence_paxos.get_current_leader()?;
        let ready = if leader == self.sequence_paxos.pid() {
            self.sequence_paxos.is_accepting_leader() && self.ble.is_quorum_connected()
        } else {
            self.ble.is_happy()
        };
        Some((leader, ready))
    }

    /// Compacts the log on every replica; see [`SequencePaxos::trim`].
    pub fn trim(&mut self, trim_idx: Option<LogIndex>) -> Result<(), CompactionErr> {
        self.sequence_paxos.trim(trim_idx)
    }

    /// Snapshots the decided prefix; see [`SequencePaxos::snapshot`].
    pub fn snapshot(&mut self, compact_idx: Option<LogIndex>, local_only: bool) -> Result<(), CompactionErr> {
        self.sequence_paxos.snapshot(compact_idx, local_only)
    }

    /// A peer's connection was re-established; see [`SequencePaxos::reconnected`].
    pub fn reconnected(&mut self, pid: NodeId) {
        self.sequence_paxos.reconnected(pid);
    }

    /// Changes this replica's leader priority; see [`BallotLeaderElection::set_priority`].
    pub fn set_priority(&mut self, priority: u32) {
        self.ble.set_priority(priority);
    }

    /// Takes the storage back (e.g. to close it cleanly); the replica is gone.
    pub fn into_storage(self) -> B {
        self.sequence_paxos.into_storage()
    }

    /// The Sequence Paxos component.
    pub fn sequence_paxos(&self) -> &SequencePaxos<T, S, B> {
        &self.sequence_paxos
    }

    /// The leader election component.
    pub fn ballot_leader_election(&self) -> &BallotLeaderElection {
        &self.ble
    }

    /// Checks the replica's invariants (panics on a violation: a bug in this crate).
    pub fn check_invariants(&self) {
        self.sequence_paxos.check_invariants();
    }
}
