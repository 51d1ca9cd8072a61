//! The leader role: collect promises, adopt the most up-to-date log, synchronise followers,
//! replicate entries and decide.

use std::fmt::Debug;

use crate::{
    ballot::Ballot,
    errors::CompactionErr,
    messages::{
        AcceptDecide, AcceptStopSign, AcceptSync, Accepted, Compaction, Decide, LogSync, PaxosMsg, Prepare,
        Promise, ProposalForward,
    },
    storage::{Snapshot, StopSign, Storage, StorageError, StorageOp},
    util::{LogIndex, NodeId, Proposal},
};

use super::{
    context::Context,
    proposals::ForwardFilter,
    reads::{ReadRounds, Requester},
};
use crate::messages::{ReadAsk, ReadReply, ReadRound};
use crate::sequence_paxos::reads::{ReadConsistency, ReadFailure, ReadId, ReadOutcome};

/// What a peer reported in its Promise (or what the leader knows of its own log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PromiseMeta {
    pub(crate) n_accepted: Ballot,
    pub(crate) accepted_idx: LogIndex,
    pub(crate) decided_idx: LogIndex,
}

impl PromiseMeta {
    /// The order in which logs are preferred: later round first, then longer log.
    fn rank(&self) -> (Ballot, LogIndex) {
        (self.n_accepted, self.accepted_idx)
    }
}

/// The leader's view of one peer.
#[derive(Clone, Debug)]
enum PeerState {
    /// No Promise for this ballot yet: the peer gets Prepare (again) on resend.
    NotPromised,
    /// Promised; `synced` once the AcceptSync was sent.
    Promised { meta: PromiseMeta, synced: bool },
    /// The peer promised a higher ballot: nothing more is sent to it.
    PromisedHigher,
}

#[derive(Clone, Debug)]
struct Progress {
    state: PeerState,
    /// The peer's log is durable up to here in this ballot (0 until its first Accepted).
    accepted_idx: LogIndex,
    /// Position in the outgoing queue of an unsent AcceptDecide to extend instead of adding one.
    pending_accept: Option<usize>,
    /// The decided index last sent to the peer.
    decided_sent: LogIndex,
    /// The peer's decided index as it last reported it (lags by up to one round trip).
    decided_reported: LogIndex,
    /// One past the highest log index of a proposal this peer forwarded: once decided, the peer
    /// gets the decision at once (its proposer waits for the outcome).
    forwarded_until: LogIndex,
    /// The leader's log was sent to the peer up to here in this session. Below the leader's log
    /// end, the peer is catching up: it gets the rest in chunks of at most `max_sync_entries`,
    /// each once the previous one is acknowledged, and no new batch until it caught up.
    sent_until: LogIndex,
}

impl Progress {
    fn new() -> Self {
        Progress {
            state: PeerState::NotPromised,
            accepted_idx: 0,
            pending_accept: None,
            decided_sent: 0,
            decided_reported: 0,
            forwarded_until: 0,
            sent_until: 0,
        }
    }

    fn is_synced(&self) -> bool {
        matches!(self.state, PeerState::Promised { synced: true, .. })
    }
}

/// The leader's per-peer state, sorted by id. A vector, not a map: clusters are small and the
/// hot path (deciding, sending) walks all peers, which a vector does fastest. Peers are found by
/// id, never by `pid - 1` (non-contiguous ids broke the reference implementation).
#[derive(Clone, Debug)]
struct PeerTable(Vec<(NodeId, Progress)>);

impl FromIterator<(NodeId, Progress)> for PeerTable {
    fn from_iter<I: IntoIterator<Item = (NodeId, Progress)>>(iter: I) -> Self {
        let mut peers: Vec<(NodeId, Progress)> = iter.into_iter().collect();
        peers.sort_unstable_by_key(|(id, _)| *id);
        PeerTable(peers)
    }
}

impl PeerTable {
    fn get(&self, id: &NodeId) -> Option<&Progress> {
        self.0.iter().find(|(p, _)| p == id).map(|(_, progress)| progress)
    }

    fn get_mut(&mut self, id: &NodeId) -> Option<&mut Progress> {
        self.0.iter_mut().find(|(p, _)| p == id).map(|(_, progress)| progress)
    }

    fn iter(&self) -> impl Iterator<Item = (&NodeId, &Progress)> {
        self.0.iter().map(|(id, progress)| (id, progress))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (&NodeId, &mut Progress)> {
        self.0.iter_mut().map(|(id, progress)| (&*id, progress))
    }

    fn values(&self) -> impl Iterator<Item = &Progress> {
        self.0.iter().map(|(_, progress)| progress)
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Progress> {
        self.0.iter_mut().map(|(_, progress)| progress)
    }
}

/// The Prepare phase's data: promises so far and what waits for the accept phase.
struct PrepareRound<T, S> {
    /// The best log promised so far and its owner. Ties keep the earlier one (own first).
    max: (PromiseMeta, NodeId),
    max_sync: Option<LogSync<T, S>>,
    /// The highest decided index among the promises.
    max_decided: LogIndex,
    buffered: Vec<Proposal<T>>,
    buffered_stopsign: Option<StopSign>,
}

enum LeaderPhase<T, S> {
    Prepare(Box<PrepareRound<T, S>>),
    /// Entries proposed but not yet written (at most `batch_size`).
    Accept {
        batch: Vec<Proposal<T>>,
    },
}

/// The leader's state. Invariant: `n == promise` of the replica while it leads.
pub(crate) struct Leader<T, S> {
    pub(crate) n: Ballot,
    phase: LeaderPhase<T, S>,
    peers: PeerTable,
    /// The log adopted at the end of the Prepare phase: its round and accepted index. A peer that
    /// promised with the same round holds a prefix of it.
    adopted: PromiseMeta,
    filter: ForwardFilter,
    /// The leader's own log is durable up to here. Invariant: `<= accepted_idx`.
    durable_accepted_idx: LogIndex,
    decide_pending: bool,
    /// Reused by `maybe_decide` so deciding allocates nothing.
    accepted_scratch: Vec<LogIndex>,
    /// The batch holds proposals forwarded by followers.
    batch_has_forwards: bool,
    /// Read rounds and the read lease.
    reads: ReadRounds,
    /// The accepted index of the log adopted at the end of the Prepare phase (`MAX` before):
    /// reads are answered only once the decided index reaches it.
    adopted_end: LogIndex,
    /// With leases: nothing is decided before this tick, when every lease a promising peer may
    /// have confirmed to an earlier leader has ended.
    lease_wait_until: u64,
}

impl<T: Clone + Debug, S: Snapshot<T>> Leader<T, S> {
    /// Starts the Prepare phase for ballot `n` (already persisted as the promise) and sends
    /// Prepare to every peer. `waiting` are proposals to propose once the accept phase starts.
    pub(crate) fn start<B: Storage<T, S>>(
        ctx: &mut Context<T, S, B>,
        n: Ballot,
        waiting: Vec<Proposal<T>>,
        stopsign: Option<StopSign>,
    ) -> Result<Self, StorageError> {
        assert_eq!(ctx.state.promise, n, "the leader's ballot is persisted before Prepare");
        let own = PromiseMeta {
            n_accepted: ctx.state.accepted_round,
            accepted_idx: ctx.state.accepted_idx(),
            decided_idx: ctx.state.decided_idx,
        };
        let round = PrepareRound {
            max: (own, ctx.pid),
            max_sync: None,
            max_decided: own.decided_idx,
            buffered: waiting,
            buffered_stopsign: stopsign,
        };
        let mut leader = Leader {
            n,
            phase: LeaderPhase::Prepare(Box::new(round)),
            peers: ctx.peers.iter().map(|&p| (p, Progress::new())).collect(),
            adopted: own,
            filter: ForwardFilter::default(),
            durable_accepted_idx: 0,
            decide_pending: false,
            accepted_scratch: Vec::with_capacity(ctx.peers.len() + 1),
            batch_has_forwards: false,
            reads: ReadRounds::default(),
            adopted_end: LogIndex::MAX,
            lease_wait_until: ctx.now.saturating_add(ctx.lease_wait_ticks()),
        };
        for peer in ctx.peers.clone() {
            leader.send_prepare(ctx, peer);
        }
        leader.maybe_finish_prepare(ctx)?;
        Ok(leader)
    }

    pub(crate) fn peer_accepted_indices(&self) -> Vec<(NodeId, LogIndex)> {
        self.peers.iter().map(|(&id, p)| (id, p.accepted_idx)).collect()
    }

    pub(crate) fn is_accepting(&self) -> bool {
        matches!(self.phase, LeaderPhase::Accept { .. })
    }

    /// True if a StopSign waits for the end of the Prepare phase.
    pub(crate) fn has_buffered_stopsign(&self) -> bool {
        matches!(&self.phase, LeaderPhase::Prepare(round) if round.buffered_stopsign.is_some())
    }

    /// Proposals held in memory, not yet in the log.
    pub(crate) fn pending_count(&self) -> usize {
        match &self.phase {
            LeaderPhase::Prepare(round) => round.buffered.len(),
            LeaderPhase::Accept { batch } => batch.len(),
        }
    }

    /// Own proposals held in memory; handed back when this replica stops leading.
    pub(crate) fn take_pending(&mut self) -> (Vec<Proposal<T>>, Option<StopSign>) {
        match &mut self.phase {
            LeaderPhase::Prepare(round) => {
                (std::mem::take(&mut round.buffered), round.buffered_stopsign.take())
            }
            LeaderPhase::Accept { batch } => (std::mem::take(batch), None),
        }
    }

    /// Sends Prepare to a peer.
    fn send_prepare<B: Storage<T, S>>(&mut self, ctx: &mut Context<T, S, B>, to: NodeId) {
        if self.peers.get(&to).is_none() {
            return;
        }
        let prepare = Prepare {
            n: self.n,
            decided_idx: ctx.state.decided_idx,
            n_accepted: ctx.state.accepted_round,
            accepted_idx: ctx.state.accepted_idx(),
        };
        ctx.send(to, PaxosMsg::Prepare(prepare));
    }

    /// A new proposal: buffered while preparing, batched while accepting.
    pub(crate) fn propose<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        proposal: Proposal<T>,
    ) -> Result<(), StorageError> {
        match &mut self.phase {
            LeaderPhase::Prepare(round) => {
                round.buffered.push(proposal);
                Ok(())
            }
            LeaderPhase::Accept { batch } => {
                // Written and sent at the next take_outgoing_messages (nothing could leave
                // earlier anyway): all proposals between two calls become one write and one
                // AcceptDecide per follower.
                if !ctx.ledger.is_own(&proposal.id) {
                    self.filter.note_held(&proposal.id);
                    self.batch_has_forwards = true;
                }
                batch.push(proposal);
                Ok(())
            }
        }
    }

    /// Runs before the storage flush of `take_outgoing_messages`: writes and sends the batch if
    /// it holds at least `batch_size` proposals (smaller ones wait for the flush timer).
    pub(crate) fn before_flush<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
    ) -> Result<(), StorageError> {
        match &self.phase {
            LeaderPhase::Accept { batch } if batch.len() >= ctx.batch_size => self.flush_batch(ctx),
            _ => Ok(()),
        }
    }

    /// Writes the batch to the log and sends it to every synchronised follower.
    pub(crate) fn flush_batch<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
    ) -> Result<(), StorageError> {
        let LeaderPhase::Accept { batch } = &mut self.phase else {
            return Ok(());
        };
        if batch.is_empty() {
            return Ok(());
        }
        let entries = std::mem::take(batch);
        let log_end = ctx.state.log_end;
        if std::mem::take(&mut self.batch_has_forwards) {
            let first_idx = ctx.state.log_end;
            for (offset, p) in entries.iter().enumerate() {
                if let Some(progress) = self.peers.get_mut(&p.id.node) {
                    progress.forwarded_until =
                        progress.forwarded_until.max(first_idx + offset as LogIndex + 1);
                }
            }
        }
        for i in 0..self.peers.0.len() {
            let (peer, progress) = &self.peers.0[i];
            // A peer still catching up gets these with its later chunks.
            if progress.is_synced() && progress.sent_until == log_end {
                self.send_accept_decide(ctx, *peer, &entries);
            }
        }
        ctx.append_entries(entries)
    }

    /// Sends `entries`, which go at the leader's log end, to `to`, extending an unsent
    /// AcceptDecide if there is one.
    fn send_accept_decide<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        to: NodeId,
        entries: &[Proposal<T>],
    ) {
        let decided_idx = ctx.state.decided_idx;
        let start_idx = ctx.state.log_end;
        let Some(progress) = self.peers.get_mut(&to) else { return };
        progress.sent_until = progress.sent_until.max(start_idx + entries.len() as LogIndex);
        if let Some(i) = progress.pending_accept {
            if let Some(PaxosMsg::AcceptDecide(acc)) = ctx.outgoing.get_mut(i).map(|m| &mut m.msg) {
                if acc.start_idx + acc.entries.len() as LogIndex == start_idx {
                    acc.entries.extend_from_slice(entries);
                    acc.decided_idx = decided_idx;
                    progress.decided_sent = decided_idx;
                    return;
                }
            }
        }
        progress.pending_accept = Some(ctx.outgoing.len());
        progress.decided_sent = decided_idx;
        let msg = AcceptDecide { n: self.n, start_idx, decided_idx, entries: entries.to_vec() };
        ctx.send(to, PaxosMsg::AcceptDecide(msg));
    }

    /// Proposes the StopSign: it goes after every entry proposed before it.
    pub(crate) fn propose_stopsign<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        ss: StopSign,
    ) -> Result<(), StorageError> {
        if let LeaderPhase::Prepare(round) = &mut self.phase {
            round.buffered_stopsign = Some(ss);
            return Ok(());
        }
        if ctx.state.stopsign.is_some() {
            return Ok(());
        }
        self.flush_batch(ctx)?;
        ctx.write([StorageOp::SetStopSign(Some(ss.clone()))])?;
        // Peers still catching up get it after their last chunk.
        let log_end = ctx.state.log_end;
        let peers: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.is_synced() && p.sent_until == log_end)
            .map(|(&id, _)| id)
            .collect();
        for peer in peers {
            self.send_accept_stopsign(ctx, peer, ss.clone());
        }
        Ok(())
    }

    fn send_accept_stopsign<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        to: NodeId,
        ss: StopSign,
    ) {
        let Some(progress) = self.peers.get_mut(&to) else { return };
        progress.pending_accept = None;
        let log_end = ctx.state.log_end;
        ctx.send(to, PaxosMsg::AcceptStopSign(AcceptStopSign { n: self.n, log_end, ss: Box::new(ss) }));
    }

    /// Phase 1b arrives: record it; with a read quorum, adopt the best log and start accepting.
    pub(crate) fn handle_promise<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        from: NodeId,
        prom: Promise<T, S>,
    ) -> Result<(), StorageError> {
        if prom.n != self.n {
            return Ok(());
        }
        let meta = PromiseMeta {
            n_accepted: prom.n_accepted,
            accepted_idx: prom.accepted_idx,
            decided_idx: prom.decided_idx,
        };
        let Some(progress) = self.peers.get_mut(&from) else { return Ok(()) };
        match &mut self.phase {
            LeaderPhase::Prepare(round) => {
                self.lease_wait_until =
                    self.lease_wait_until.max(ctx.now.saturating_add(prom.lease_wait_ticks));
                progress.state = PeerState::Promised { meta, synced: false };
                round.max_decided = round.max_decided.max(meta.decided_idx);
                if meta.rank() > round.max.0.rank() {
                    round.max = (meta, from);
                    round.max_sync = prom.log_sync.map(|sync| *sync);
                }
                self.maybe_finish_prepare(ctx)
            }
            LeaderPhase::Accept { .. } => {
                progress.state = PeerState::Promised { meta, synced: false };
                self.send_accept_sync(ctx, from)
            }
        }
    }

    fn promised_count(&self) -> usize {
        1 + self.peers.values().filter(|p| matches!(p.state, PeerState::Promised { .. })).count()
    }

    /// Ends the Prepare phase once a read quorum (self included) has promised.
    fn maybe_finish_prepare<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
    ) -> Result<(), StorageError> {
        if !matches!(self.phase, LeaderPhase::Prepare(_)) || !ctx.quorum.is_read_quorum(self.promised_count())
        {
            return Ok(());
        }
        let LeaderPhase::Prepare(round) =
            std::mem::replace(&mut self.phase, LeaderPhase::Accept { batch: Vec::new() })
        else {
            unreachable!("checked above");
        };
        let mut round = round;
        if !self.adopt_max_log(ctx, round.max, round.max_sync.take(), round.max_decided)? {
            // The best promise could not be adopted: prepare everyone again.
            self.restart_prepare(ctx, *round);
            return Ok(());
        }
        self.adopted_end = ctx.state.accepted_idx();
        self.propose_buffered(ctx, round.buffered, round.buffered_stopsign)?;
        tracing::info!(pid = ctx.pid, n = %self.n, accepted_idx = ctx.state.accepted_idx(), "leader accepts");
        let promised: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p.state, PeerState::Promised { .. }))
            .map(|(&id, _)| id)
            .collect();
        for peer in promised {
            self.send_accept_sync(ctx, peer)?;
        }
        Ok(())
    }

    /// Starts the Prepare phase over, keeping what waits for the accept phase.
    fn restart_prepare<B: Storage<T, S>>(&mut self, ctx: &mut Context<T, S, B>, round: PrepareRound<T, S>) {
        let own = PromiseMeta {
            n_accepted: ctx.state.accepted_round,
            accepted_idx: ctx.state.accepted_idx(),
            decided_idx: ctx.state.decided_idx,
        };
        self.phase = LeaderPhase::Prepare(Box::new(PrepareRound {
            max: (own, ctx.pid),
            max_sync: None,
            max_decided: own.decided_idx,
            ..round
        }));
        for peer in ctx.peers.clone() {
            if let Some(progress) = self.peers.get_mut(&peer) {
                progress.state = PeerState::NotPromised;
            }
            self.send_prepare(ctx, peer);
        }
    }

    /// Makes the leader's log the most up-to-date promised log, in one atomic write. Returns
    /// false if that log could not be adopted.
    fn adopt_max_log<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        max: (PromiseMeta, NodeId),
        max_sync: Option<LogSync<T, S>>,
        max_decided: LogIndex,
    ) -> Result<bool, StorageError> {
        self.adopted = max.0;
        match max_sync {
            Some(sync) if max.1 != ctx.pid => return ctx.apply_log_sync(sync, self.n, max_decided),
            _ => {
                let decided = max_decided.min(ctx.state.accepted_idx()).max(ctx.state.decided_idx);
                if max_decided > ctx.state.accepted_idx() {
                    tracing::error!(
                        pid = ctx.pid,
                        max_decided,
                        "a promise's decided index exceeds the adopted log"
                    );
                }
                ctx.write([StorageOp::SetAcceptedRound(self.n), StorageOp::SetDecidedIdx(decided)])?;
                ctx.observe_decided();
            }
        }
        Ok(true)
    }

    /// Appends what was proposed during the Prepare phase, unless the log is sealed.
    fn propose_buffered<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        buffered: Vec<Proposal<T>>,
        stopsign: Option<StopSign>,
    ) -> Result<(), StorageError> {
        if ctx.state.stopsign.is_some() {
            for p in buffered {
                if ctx.ledger.is_own(&p.id) {
                    ctx.ledger.record_waiting(p);
                }
            }
            // Settle them now if the StopSign is already decided (nothing else will).
            ctx.observe_decided();
            return Ok(());
        }
        // Own proposals still waiting after the adoption are not in the log: propose them too.
        let mut fresh = Vec::with_capacity(buffered.len());
        for p in buffered.into_iter().chain(ctx.ledger.take_waiting()) {
            if !self.filter.is_duplicate(&p.id) {
                self.filter.note_held(&p.id);
                fresh.push(p);
            }
        }
        ctx.append_entries(fresh)?;
        if let Some(ss) = stopsign {
            ctx.write([StorageOp::SetStopSign(Some(ss))])?;
        }
        Ok(())
    }

    /// Synchronises a promised peer's log with the leader's.
    fn send_accept_sync<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        to: NodeId,
    ) -> Result<(), StorageError> {
        let Some(progress) = self.peers.get(&to) else { return Ok(()) };
        let PeerState::Promised { meta, .. } = progress.state else { return Ok(()) };
        let valid_idx = valid_prefix(meta, self.n, self.adopted);
        let mut log_sync = ctx.create_log_sync(valid_idx)?;
        // A long way behind: the first chunk now, the rest once it is acknowledged. The sync
        // always carries the whole log adopted in the Prepare phase: a replica whose accepted
        // round is ours must hold all of it (a later leader ranks its log by that round), so
        // only entries this leader appended itself may follow in chunks.
        let adopted_part = self.adopted_end.saturating_sub(log_sync.sync_idx) as usize;
        let keep = if mutated!(ctx, SyncSplitsAdoptedLog) {
            ctx.max_sync_entries
        } else {
            ctx.max_sync_entries.max(adopted_part)
        };
        if log_sync.suffix.len() > keep {
            log_sync.suffix.truncate(keep);
            log_sync.stopsign = None;
        }
        let sent_until = log_sync.sync_idx + log_sync.suffix.len() as LogIndex;
        let decided_idx = ctx.state.decided_idx;
        let progress = self.peers.get_mut(&to).expect("checked above");
        progress.sent_until = sent_until;
        progress.state = PeerState::Promised { meta, synced: true };
        progress.accepted_idx = 0;
        progress.decided_reported = 0;
        progress.pending_accept = None;
        progress.decided_sent = decided_idx;
        let log_sync = Box::new(log_sync);
        let adopted_end = self.adopted_end;
        ctx.send(to, PaxosMsg::AcceptSync(AcceptSync { n: self.n, decided_idx, adopted_end, log_sync }));
        Ok(())
    }

    /// Phase 2b arrives: the peer's log is durable up to `accepted_idx`.
    pub(crate) fn handle_accepted<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        from: NodeId,
        acc: Accepted,
    ) -> Result<(), StorageError> {
        if acc.n != self.n || !self.is_accepting() {
            return Ok(());
        }
        let Some(progress) = self.peers.get_mut(&from) else { return Ok(()) };
        if !progress.is_synced() {
            return Ok(());
        }
        if acc.accepted_idx > ctx.state.accepted_idx() {
            tracing::warn!(
                pid = ctx.pid,
                from,
                accepted_idx = acc.accepted_idx,
                "Accepted beyond the leader's log dropped"
            );
            return Ok(());
        }
        progress.accepted_idx = progress.accepted_idx.max(acc.accepted_idx);
        progress.decided_reported = progress.decided_reported.max(acc.decided_idx);
        let chunk_acknowledged = progress.accepted_idx >= progress.sent_until;
        if chunk_acknowledged && progress.sent_until < ctx.state.log_end {
            self.send_next_chunk(ctx, from)?;
        }
        self.maybe_decide(ctx)
    }

    /// Sends a catching-up peer the next chunk of the log, from where it was sent up to, and the
    /// StopSign after the last chunk.
    fn send_next_chunk<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        to: NodeId,
    ) -> Result<(), StorageError> {
        let Some(progress) = self.peers.get(&to) else { return Ok(()) };
        let from = progress.sent_until.max(ctx.state.compacted_idx);
        let end = ctx.state.log_end.min(from.saturating_add(ctx.max_sync_entries as LogIndex));
        if from < progress.sent_until || from >= end {
            return Ok(());
        }
        let entries = ctx.read_entries(from, end)?;
        let decided_idx = ctx.state.decided_idx;
        let progress = self.peers.get_mut(&to).expect("checked above");
        progress.sent_until = end;
        progress.pending_accept = None;
        progress.decided_sent = decided_idx;
        ctx.send(
            to,
            PaxosMsg::AcceptDecide(AcceptDecide { n: self.n, start_idx: from, decided_idx, entries }),
        );
        if end == ctx.state.log_end {
            if let Some(ss) = ctx.state.stopsign.clone() {
                self.send_accept_stopsign(ctx, to, ss);
            }
        }
        Ok(())
    }

    /// Decides the longest prefix that a write quorum (the leader's durable log included) has
    /// accepted in this ballot.
    fn maybe_decide<B: Storage<T, S>>(&mut self, ctx: &mut Context<T, S, B>) -> Result<(), StorageError> {
        if ctx.now < self.lease_wait_until && !mutated!(ctx, LeaseWithoutWait) {
            // An earlier leader may still answer reads under its lease: deciding anything now
            // could contradict one (see `reads`).
            return Ok(());
        }
        let accepted = &mut self.accepted_scratch;
        accepted.clear();
        accepted.extend(self.peers.values().filter(|p| p.is_synced()).map(|p| p.accepted_idx));
        accepted.push(self.durable_accepted_idx);
        // The write quorum's smallest index: the (write)-th largest. A selection, not a sort.
        let Some(nth) = accepted.len().checked_sub(ctx.quorum.write) else { return Ok(()) };
        let chosen = *accepted.select_nth_unstable(nth).1;
        if chosen > ctx.state.decided_idx {
            ctx.set_decided_idx(chosen);
            self.decide_pending = true;
        }
        Ok(())
    }

    /// Runs after a storage flush: the leader's own log now counts towards the write quorum,
    /// and new decisions go out (on an unsent AcceptDecide if there is one, else as Decide).
    pub(crate) fn after_flush<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
    ) -> Result<(), StorageError> {
        if !self.is_accepting() {
            return Ok(());
        }
        let durable = ctx.state.accepted_idx();
        if durable > self.durable_accepted_idx {
            self.durable_accepted_idx = durable;
            self.maybe_decide(ctx)?;
        }
        if !self.decide_pending {
            return Ok(());
        }
        self.send_decisions(ctx);
        Ok(())
    }

    /// Sends the decided index to every follower that has not been sent it: on an unsent
    /// AcceptDecide if there is one, else as a Decide (unless decisions only piggyback, in which
    /// case the tick sends them: see [`Self::send_pending_decisions`]).
    fn send_decisions<B: Storage<T, S>>(&mut self, ctx: &mut Context<T, S, B>) {
        self.send_decisions_with(ctx, !ctx.piggyback_decide);
    }

    /// True if a decided index waits to ride on the next AcceptDecide.
    pub(crate) fn holds_decisions(&self) -> bool {
        self.decide_pending
    }

    /// Runs at every tick, and at a `take_outgoing_messages` with no input since the last one:
    /// decisions still held back go out as Decide.
    pub(crate) fn send_pending_decisions<B: Storage<T, S>>(&mut self, ctx: &mut Context<T, S, B>) {
        if self.decide_pending {
            self.send_decisions_with(ctx, true);
        }
    }

    fn send_decisions_with<B: Storage<T, S>>(&mut self, ctx: &mut Context<T, S, B>, standalone: bool) {
        self.decide_pending = false;
        let decided_idx = ctx.state.decided_idx;
        for (&pid, progress) in self.peers.iter_mut() {
            if !progress.is_synced() || progress.decided_sent >= decided_idx {
                continue;
            }
            let pending = progress.pending_accept.and_then(|i| ctx.outgoing.get_mut(i));
            if let Some(PaxosMsg::AcceptDecide(acc)) = pending.map(|m| &mut m.msg) {
                acc.decided_idx = decided_idx;
                progress.decided_sent = decided_idx;
            } else if standalone || progress.forwarded_until > progress.decided_sent {
                // Held decisions go now; and a follower whose own proposals were decided hears
                // it at once (its proposer waits for the outcome).
                progress.decided_sent = decided_idx;
                ctx.send(pid, PaxosMsg::Decide(Decide { n: self.n, decided_idx }));
            } else {
                self.decide_pending = true;
            }
        }
    }

    /// Runs at every tick: once the wait for earlier leases is over, decide what waited.
    /// A read round unanswered for a resend timeout is started again.
    pub(crate) fn on_tick<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
    ) -> Result<(), StorageError> {
        self.maybe_restart_read_round(ctx);
        for id in self.reads.take_expired(ctx.now, ctx.read_timeout_ticks) {
            ctx.reads.settle_one(id, ReadOutcome::Failed(ReadFailure::TimedOut));
        }
        if self.is_accepting() && ctx.now == self.lease_wait_until {
            self.maybe_decide(ctx)?;
        }
        Ok(())
    }

    /// True if reads can be confirmed: accepting, the adopted log decided, no earlier lease
    /// possibly running.
    fn can_serve_reads<B>(&self, ctx: &Context<T, S, B>) -> bool {
        self.is_accepting() && ctx.state.decided_idx >= self.adopted_end && ctx.now >= self.lease_wait_until
    }

    /// Takes this replica's reads that wait in its read book (issued before it led): answered
    /// at once from the lease, or queued for the next round.
    pub(crate) fn absorb_local_reads<B: Storage<T, S>>(&mut self, ctx: &mut Context<T, S, B>) {
        if !ctx.reads.has_waiting() {
            return;
        }
        for (id, issued_at, consistency) in ctx.reads.take_for_leader() {
            self.local_read(ctx, id, issued_at, consistency);
        }
    }

    /// A read of this replica: answered at once under the lease, else queued for a round.
    pub(crate) fn local_read<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        id: ReadId,
        issued_at: u64,
        consistency: ReadConsistency,
    ) {
        if self.answers_without_round(ctx, consistency == ReadConsistency::LeaseIfHeld) {
            ctx.reads.settle_one(id, ReadOutcome::Ready(ctx.state.decided_idx));
        } else {
            self.reads.queue(Requester::Local(id, issued_at));
        }
    }

    /// Ends the read lease now, also the one the round in flight would grant (see
    /// `SequencePaxos::expire_read_lease`).
    pub(crate) fn expire_read_lease<B>(&mut self, ctx: &Context<T, S, B>) {
        self.reads.expire_lease(!mutated!(ctx, LeaseFromPausedRound));
    }

    /// This role ends: its own reads fail (the caller may read again at the new leader).
    pub(crate) fn fail_local_reads<B: Storage<T, S>>(&mut self, ctx: &mut Context<T, S, B>) {
        for id in self.reads.take_local() {
            ctx.reads.settle_one(id, ReadOutcome::Failed(ReadFailure::LeaderChanged));
        }
    }

    /// True if a read may be answered now with the decided index, without a round: under a
    /// valid lease if the read allows it (or, as a deliberate bug for mutation tests, always).
    fn answers_without_round<B>(&self, ctx: &Context<T, S, B>, allow_lease: bool) -> bool {
        let lease = allow_lease
            && ctx.lease.is_some()
            && self.reads.lease_valid(ctx.now)
            && self.can_serve_reads(ctx);
        lease || (mutated!(ctx, ReadWithoutQuorum) && self.is_accepting())
    }

    /// A learner asks for decided entries from `from_idx`: send the next batch of them.
    pub(crate) fn handle_learner_request<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        from: NodeId,
        request: crate::messages::LearnerRequest,
    ) -> Result<(), StorageError> {
        if !self.is_accepting() || self.peers.get(&from).is_none() {
            return Ok(());
        }
        let decided_end = ctx.state.decided_idx.min(ctx.state.log_end);
        let from_idx = request.from_idx.min(decided_end);
        let to = decided_end.min(from_idx.saturating_add(super::learner::LEARNER_BATCH_ENTRIES));
        let log_sync = ctx.create_decided_sync(from_idx, to)?;
        let sync = crate::messages::LearnerSync { n: self.n, decided_idx: ctx.state.decided_idx, log_sync };
        ctx.send(from, PaxosMsg::LearnerSync(Box::new(sync)));
        Ok(())
    }

    /// A follower's ReadRequest.
    pub(crate) fn handle_read_request<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        from: NodeId,
        request: ReadAsk,
    ) {
        if request.n != self.n || self.peers.get(&from).is_none() {
            return;
        }
        if self.answers_without_round(ctx, request.allow_lease) {
            let read_idx = ctx.state.decided_idx;
            let reply = ReadReply { n: self.n, round: request.round, read_idx, decided_idx: read_idx };
            ctx.send(from, PaxosMsg::ReadReply(reply));
        } else {
            self.reads.queue(Requester::Remote(from, request.round));
        }
    }

    /// Starts a read round if reads wait (or the lease needs renewing) and reads can be
    /// confirmed now: every peer is asked whether it still promises our ballot.
    pub(crate) fn maybe_start_read_round<B: Storage<T, S>>(&mut self, ctx: &mut Context<T, S, B>) {
        if !self.reads.round_due(ctx.now, ctx.lease) || !self.can_serve_reads(ctx) {
            return;
        }
        let round = self.reads.start(ctx.now, ctx.state.decided_idx, ctx.lease);
        for peer in ctx.peers.clone() {
            ctx.send(peer, PaxosMsg::ReadConfirm(ReadRound { n: self.n, round }));
        }
        self.handle_read_confirmed(ctx, 0, ReadRound { n: self.n, round });
    }

    /// A peer confirmed a read round (`from == 0`: the leader itself, to complete a round a
    /// single node confirms).
    pub(crate) fn handle_read_confirmed<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        from: NodeId,
        confirmed: ReadRound,
    ) {
        if confirmed.n != self.n {
            return;
        }
        let Some(answer) = self.reads.confirm(from, confirmed.round, ctx.quorum.write, ctx.lease) else {
            return;
        };
        debug_assert!(answer.read_idx <= ctx.state.decided_idx);
        for requester in answer.requesters {
            match requester {
                Requester::Local(id, _) => ctx.reads.settle_one(id, ReadOutcome::Ready(answer.read_idx)),
                Requester::Remote(peer, round) => {
                    let decided_idx = ctx.state.decided_idx;
                    let reply = ReadReply { n: self.n, round, read_idx: answer.read_idx, decided_idx };
                    ctx.send(peer, PaxosMsg::ReadReply(reply));
                }
            }
        }
    }

    /// A read round unanswered for a resend timeout is started again (its messages may be lost).
    fn maybe_restart_read_round<B>(&mut self, ctx: &Context<T, S, B>) {
        if let Some((_, started_at)) = self.reads.in_flight_since() {
            if ctx.now >= started_at.saturating_add(ctx.resend_ticks) {
                self.reads.abandon_in_flight();
            }
        }
    }

    pub(crate) fn messages_taken(&mut self) {
        for progress in self.peers.values_mut() {
            progress.pending_accept = None;
        }
    }

    /// A follower lost messages or restarted: prepare it again.
    pub(crate) fn handle_prepare_req<B: Storage<T, S>>(&mut self, ctx: &mut Context<T, S, B>, from: NodeId) {
        let Some(progress) = self.peers.get_mut(&from) else { return };
        progress.state = PeerState::NotPromised;
        progress.pending_accept = None;
        self.send_prepare(ctx, from);
    }

    /// The connection to `pid` was re-established: messages may be lost, prepare it again.
    pub(crate) fn reconnected<B: Storage<T, S>>(&mut self, ctx: &mut Context<T, S, B>, pid: NodeId) {
        self.handle_prepare_req(ctx, pid);
    }

    /// The peer promised a higher ballot: stop sending to it.
    pub(crate) fn handle_not_accepted(&mut self, from: NodeId) {
        if let Some(progress) = self.peers.get_mut(&from) {
            progress.state = PeerState::PromisedHigher;
        }
    }

    /// Proposals forwarded by a follower: append those not already in the log.
    pub(crate) fn handle_forward<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        fwd: ProposalForward<T>,
    ) -> Result<(), StorageError> {
        // Forwards come only from followers synchronised in this ballot, so never during the
        // Prepare phase; anything else is a stray copy (see `maybe_forward_proposals`).
        let accepts = self.is_accepting() || mutated!(ctx, ForwardUnsynced);
        if ctx.state.stopsign.is_some() || fwd.n != self.n || !accepts {
            return Ok(());
        }
        if let Some(first) = fwd.proposals.first() {
            self.filter.note_settled_below(first.id.node, first.id.incarnation, fwd.settled_below);
        }
        for p in fwd.proposals {
            if self.filter.is_duplicate(&p.id) {
                continue;
            }
            if self.pending_count() >= ctx.buffer_size {
                tracing::warn!(
                    pid = ctx.pid,
                    "forwarded proposal dropped: buffer full; the proposer retries"
                );
                continue;
            }
            self.propose(ctx, p)?;
        }
        Ok(())
    }

    /// Periodic resend: Prepare to peers that have not promised; a probe to followers that lag
    /// (an empty AcceptDecide at the leader's log end: if entries before it were lost, the
    /// follower sees the gap and asks to be synchronised again; otherwise it answers with
    /// Accepted).
    pub(crate) fn resend<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
    ) -> Result<(), StorageError> {
        let not_promised: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p.state, PeerState::NotPromised))
            .map(|(&id, _)| id)
            .collect();
        for peer in not_promised {
            self.send_prepare(ctx, peer);
        }
        if !self.is_accepting() {
            return Ok(());
        }
        let accepted_idx = ctx.state.accepted_idx();
        let decided_idx = ctx.state.decided_idx;
        let lagging: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.is_synced() && (p.accepted_idx < accepted_idx || p.decided_reported < decided_idx)
            })
            .map(|(&id, _)| id)
            .collect();
        let stopsign = ctx.state.stopsign.clone();
        for peer in lagging {
            let log_end = ctx.state.log_end;
            if let Some(progress) = self.peers.get_mut(&peer) {
                if progress.sent_until < log_end {
                    // Catching up and a chunk went unacknowledged: send again from what it has.
                    progress.sent_until = progress.accepted_idx.min(progress.sent_until);
                    self.send_next_chunk(ctx, peer)?;
                    continue;
                }
            }
            // The probe names the leader's log end and decided index; a StopSign the peer has
            // not acknowledged is sent again after it.
            self.send_accept_decide(ctx, peer, &[]);
            let acknowledged = self.peers.get(&peer).map_or(0, |p| p.accepted_idx);
            if let Some(ss) = stopsign.clone().filter(|_| acknowledged < accepted_idx) {
                self.send_accept_stopsign(ctx, peer, ss);
            }
        }
        Ok(())
    }

    /// Trims the log on every replica up to `trim_idx` (default: as far as allowed).
    pub(crate) fn trim<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        trim_idx: Option<LogIndex>,
    ) -> Result<(), CompactionErr> {
        let all_accepted = self
            .peers
            .values()
            .map(|p| if p.is_synced() { p.accepted_idx } else { 0 })
            .min()
            .unwrap_or(LogIndex::MAX);
        let bound = ctx.state.decided_idx.min(ctx.state.log_end).min(all_accepted);
        let idx = trim_idx.unwrap_or(bound);
        if idx > bound {
            return Err(CompactionErr::NotAllDecided(bound));
        }
        if idx < ctx.state.compacted_idx {
            return Err(CompactionErr::TrimmedIndex(idx));
        }
        if idx == ctx.state.compacted_idx {
            return Ok(());
        }
        ctx.write([StorageOp::SetSnapshot(None), StorageOp::Trim(idx)])?;
        // A follower trims only what it knows decided: send the decision first.
        self.decide_pending = true;
        self.send_decisions_with(ctx, true);
        for peer in ctx.peers.clone() {
            ctx.send(peer, PaxosMsg::Compaction(Compaction::Trim(idx)));
        }
        Ok(())
    }

    /// Checks the leader's invariants against the replica's state.
    pub(crate) fn check_invariants<B>(&self, ctx: &Context<T, S, B>) {
        assert_eq!(self.n, ctx.state.promise, "a leader's ballot is its promise");
        assert!(self.durable_accepted_idx <= ctx.state.accepted_idx(), "durable beyond accepted");
        if self.is_accepting() {
            assert_eq!(ctx.state.accepted_round, self.n, "an accepting leader's log is of its own round");
        }
        for progress in self.peers.values() {
            assert!(
                progress.accepted_idx <= ctx.state.accepted_idx(),
                "a peer accepted beyond the leader's log"
            );
        }
    }
}

/// How much of a promised peer's log already equals the leader's: the AcceptSync sends
/// everything after it.
/// - synchronised in the current round: its whole log (a prefix of the leader's);
/// - of the same round as the log the leader adopted: the shorter of the two (both are prefixes
///   of that round's log);
/// - otherwise: only its decided prefix can be trusted.
pub(crate) fn valid_prefix(peer: PromiseMeta, current: Ballot, adopted: PromiseMeta) -> LogIndex {
    if peer.n_accepted == current {
        peer.accepted_idx
    } else if peer.n_accepted == adopted.n_accepted {
        peer.accepted_idx.min(adopted.accepted_idx)
    } else {
        peer.decided_idx
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A log is a list of `(round it was first written in, value)`.
    type Log = Vec<(u32, u32)>;

    fn ballot(n: u32) -> Ballot {
        Ballot::with(1, n, 0, 1)
    }

    /// A history: a decided prefix shared by all, then per round a leader log that extends the
    /// log adopted from an earlier round; peers hold prefixes of some round's log.
    fn history() -> impl Strategy<Value = (Log, Vec<Log>, Vec<(usize, usize, usize)>)> {
        (1usize..4, 1usize..5, proptest::collection::vec((0usize..8, 0usize..6), 1..5))
            .prop_flat_map(|(decided_len, rounds, extensions)| {
                let peers = proptest::collection::vec((0..rounds, 0usize..12, 0usize..=decided_len), 1..6);
                (Just(decided_len), Just(rounds), Just(extensions), peers)
            })
            .prop_map(|(decided_len, rounds, extensions, peers)| {
                let decided: Log = (0..decided_len as u32).map(|v| (0, v)).collect();
                let mut round_logs: Vec<Log> = Vec::new();
                for r in 0..rounds {
                    let (base_pick, extra) = extensions[r % extensions.len()];
                    let mut log = if r == 0 {
                        decided.clone()
                    } else {
                        let base: &Log = &round_logs[base_pick % r];
                        base.clone()
                    };
                    log.extend((0..extra as u32).map(|v| (r as u32 + 1, 1000 * (r as u32 + 1) + v)));
                    round_logs.push(log);
                }
                (decided, round_logs, peers)
            })
    }

    proptest! {
        // Deterministic: a fixed seed and no regression files.
        #![proptest_config(ProptestConfig {
            cases: 512,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Whatever the peer holds, its prefix up to `valid_prefix` equals the new leader's log,
        /// and it never reaches below the peer's decided entries.
        #[test]
        fn valid_prefix_never_keeps_an_entry_the_leader_does_not_hold((decided, round_logs, peers) in history()) {
            let current = ballot(round_logs.len() as u32 + 1);
            // Each peer holds a prefix (at least the decided part it knows) of one round's log.
            let held: Vec<(u32, Log, usize)> = peers
                .iter()
                .map(|&(round, len, peer_decided)| {
                    let log = &round_logs[round];
                    let len = len.clamp(decided.len().min(log.len()), log.len());
                    (round as u32 + 1, log[..len].to_vec(), peer_decided.min(len))
                })
                .collect();
            // The leader adopts the best promised log: latest round, then longest.
            let best = held.iter().max_by_key(|(r, log, _)| (*r, log.len())).expect("one peer");
            let leader_log = best.1.clone();
            let adopted = PromiseMeta {
                n_accepted: ballot(best.0),
                accepted_idx: leader_log.len() as LogIndex,
                decided_idx: 0,
            };
            for (round, log, peer_decided) in &held {
                let meta = PromiseMeta {
                    n_accepted: ballot(*round),
                    accepted_idx: log.len() as LogIndex,
                    decided_idx: *peer_decided as LogIndex,
                };
                let valid = valid_prefix(meta, current, adopted) as usize;
                prop_assert!(valid >= *peer_decided, "the sync would truncate decided entries");
                prop_assert!(valid <= log.len() && valid <= leader_log.len());
                prop_assert_eq!(&log[..valid], &leader_log[..valid]);
            }
        }
    }
}
