//! Role transitions and the handlers that can change the role.

use std::fmt::Debug;

use super::{
    follower::{Follower, FollowerPhase},
    leader::Leader,
    Role, SequencePaxos,
};
use crate::{
    ballot::Ballot,
    errors::CompactionErr,
    messages::{AcceptSync, Compaction, LogSync, PaxosMsg, Prepare, PrepareReq, Promise, ProposalForward},
    storage::{Snapshot, StopSign, Storage, StorageError, StorageOp},
    util::{LogIndex, NodeId},
};

impl<T, S, B> SequencePaxos<T, S, B>
where
    T: Clone + Debug,
    S: Snapshot<T>,
    B: Storage<T, S>,
{
    /// The only way to become leader: persist the ballot as the promise, then Prepare.
    pub(super) fn become_leader(&mut self, n: Ballot) -> Result<(), StorageError> {
        assert_eq!(n.pid, self.ctx.pid, "only an own ballot makes this replica leader");
        assert!(n > self.ctx.state.promise, "a leader's ballot exceeds every earlier promise");
        // Own proposals waiting in the ledger stay there: they are proposed once the Prepare
        // phase has adopted a log, and only if that log does not already hold them.
        // Other nodes' forwarded proposals held by an earlier leadership are dropped: their
        // proposers forward them again once synchronised, and only they can tell whether the
        // adopted log already holds them.
        let (held, mut stopsign) = self.take_role_pending();
        for p in held {
            if self.ctx.ledger.is_own(&p.id) {
                self.ctx.ledger.record_waiting(p);
            }
        }
        stopsign = stopsign.or_else(|| self.pending_stopsign.take());
        self.ctx.write([StorageOp::SetPromise(n)])?;
        tracing::info!(pid = self.ctx.pid, n = %n, "becomes leader (Prepare)");
        let leader = Leader::start(&mut self.ctx, n, Vec::new(), stopsign)?;
        self.role = Role::Leader(leader);
        Ok(())
    }

    /// The only way to become follower. A leader's own pending proposals go back to the ledger
    /// (they will be forwarded to the new leader); other nodes' forwarded ones are dropped here
    /// because their proposers retry them.
    pub(super) fn become_follower(&mut self, phase: FollowerPhase) {
        if let Role::Follower(follower) = &mut self.role {
            follower.phase = phase;
            return;
        }
        if let Role::Leader(leader) = &mut self.role {
            leader.fail_local_reads(&mut self.ctx);
        }
        let (waiting, stopsign) = self.take_role_pending();
        for p in waiting {
            if self.ctx.ledger.is_own(&p.id) {
                self.ctx.ledger.record_waiting(p);
            }
        }
        if self.ctx.state.stopsign.is_none() {
            self.pending_stopsign = self.pending_stopsign.take().or(stopsign);
        }
        tracing::info!(pid = self.ctx.pid, phase = ?phase, "becomes follower");
        self.role = Role::Follower(Follower::new(phase));
    }

    fn take_role_pending(&mut self) -> (Vec<crate::util::Proposal<T>>, Option<StopSign>) {
        match &mut self.role {
            Role::Leader(leader) => leader.take_pending(),
            Role::Follower(_) => (Vec::new(), None),
        }
    }

    /// Phase 1a: promise the ballot unless a higher one was promised, and send the part of the
    /// log the leader may lack. A delayed or replayed copy of a Prepare already answered is
    /// answered again: promising the same ballot twice changes nothing durable.
    pub(super) fn handle_prepare(&mut self, from: NodeId, prep: Prepare) -> Result<(), StorageError> {
        if self.is_learner() {
            // A learner never promises; a Prepare tells it who may lead: ask it for entries.
            if prep.n.pid == from {
                self.ask_for_decided_entries(Some(from));
            }
            return Ok(());
        }
        let promise = self.ctx.state.promise;
        if prep.n < promise || prep.n.pid != from {
            self.ctx.send(from, PaxosMsg::NotAccepted(crate::messages::NotAccepted { n: promise }));
            return Ok(());
        }
        if prep.n == promise && matches!(self.role, Role::Leader(_)) {
            return Ok(());
        }
        self.become_follower(FollowerPhase::Prepare);
        if prep.n > self.leader {
            self.leader = prep.n;
        }
        if prep.n > promise {
            self.ctx.write([StorageOp::SetPromise(prep.n)])?;
        }
        let log_sync = self.promise_log_sync(&prep)?;
        let state = &self.ctx.state;
        let promise_msg = Promise {
            n: prep.n,
            n_accepted: state.accepted_round,
            decided_idx: state.decided_idx,
            accepted_idx: state.accepted_idx(),
            log_sync,
            lease_wait_ticks: self.ctx.lease_wait_ticks(),
        };
        if let Role::Follower(follower) = &mut self.role {
            follower.cached_promise = Some(promise_msg.clone());
        }
        self.ctx.send(from, PaxosMsg::Promise(promise_msg));
        Ok(())
    }

    /// What the Promise carries: the entries after the leader's decided index if this log is of a
    /// later round, the entries after the leader's log end if it is of the same round and longer;
    /// nothing if it is of the leader's own round (a prefix of the leader's log).
    fn promise_log_sync(&mut self, prep: &Prepare) -> Result<Option<Box<LogSync<T, S>>>, StorageError> {
        let state = &self.ctx.state;
        if state.accepted_round == prep.n {
            Ok(None)
        } else if state.accepted_round > prep.n_accepted {
            self.ctx.create_log_sync(prep.decided_idx).map(|sync| Some(Box::new(sync)))
        } else if state.accepted_round == prep.n_accepted && state.accepted_idx() > prep.accepted_idx {
            self.ctx.create_log_sync(prep.accepted_idx).map(|sync| Some(Box::new(sync)))
        } else {
            Ok(None)
        }
    }

    /// The leader's synchronisation: adopt its log (see `Context::apply_log_sync` for why any
    /// copy of a sync of our promised ballot is safe to apply), reply Accepted.
    pub(super) fn handle_accept_sync(
        &mut self,
        from: NodeId,
        sync: AcceptSync<T, S>,
    ) -> Result<(), StorageError> {
        let promise = self.ctx.state.promise;
        if sync.n.pid != from {
            tracing::warn!(pid = self.ctx.pid, from, ballot = %sync.n, "AcceptSync sent by another node than its ballot's owner ignored");
            return Ok(());
        }
        if sync.n < promise {
            self.ctx.send(from, PaxosMsg::NotAccepted(crate::messages::NotAccepted { n: promise }));
            return Ok(());
        }
        if sync.n > promise || !matches!(self.role, Role::Follower(_)) {
            tracing::debug!(pid = self.ctx.pid, "AcceptSync ignored: its ballot is not our promise");
            return Ok(());
        }
        if !self.ctx.apply_log_sync(*sync.log_sync, sync.n, sync.decided_idx)? {
            return Ok(());
        }
        self.adopted_end = Some((sync.n, sync.adopted_end));
        if self.ctx.state.stopsign.is_some() {
            self.pending_stopsign = None;
        }
        if let Role::Follower(follower) = &mut self.role {
            follower.start_accepting();
            follower.reply_accepted(&mut self.ctx, from, sync.n);
        }
        self.maybe_forward_proposals();
        self.maybe_forward_stopsign();
        Ok(())
    }

    pub(super) fn handle_prepare_req(&mut self, from: NodeId, req: PrepareReq) -> Result<(), StorageError> {
        if let Role::Leader(leader) = &mut self.role {
            if req.n <= leader.n {
                leader.handle_prepare_req(&mut self.ctx, from);
            } else if req.n.pid == from {
                // The requester recovers holding its own ballot as its promise: it is not
                // leading with it, and it refuses us until a higher ballot prepares it.
                self.maybe_outbid_phantom_promise(req.n)?;
            }
        }
        Ok(())
    }

    pub(super) fn handle_not_accepted(&mut self, from: NodeId, n: Ballot) -> Result<(), StorageError> {
        if let Role::Leader(leader) = &mut self.role {
            if n > leader.n {
                leader.handle_not_accepted(from);
            }
        }
        Ok(())
    }

    /// A recovering peer holds a ballot of its own above ours as its promise (it took over and
    /// crashed before its Prepare arrived) and no leader ever announced that ballot to us.
    /// Nobody leads with it, yet the peer refuses us until a higher ballot prepares it: the
    /// leader outbids it, once, with its own priority. Only a PrepareReq carrying the
    /// requester's own ballot triggers this, never a NotAccepted: a NotAccepted may come from
    /// a follower of a real, higher leader we cannot hear, and outbidding that leader would
    /// start a ballot war under partial connectivity.
    fn maybe_outbid_phantom_promise(&mut self, n: Ballot) -> Result<(), StorageError> {
        let Role::Leader(leader) = &self.role else { return Ok(()) };
        if n <= self.leader || n <= leader.n || n.config_id != self.ctx.config_id {
            return Ok(());
        }
        let ballot = Ballot::with(self.ctx.config_id, n.n.saturating_add(1), leader.n.priority, self.ctx.pid);
        if ballot <= n || ballot <= self.ctx.state.promise {
            // Rounds are exhausted (a ballot of round u32::MAX): nothing can outbid it.
            tracing::warn!(pid = self.ctx.pid, phantom = %n, "cannot outbid a promise of the largest round");
            return Ok(());
        }
        tracing::info!(pid = self.ctx.pid, phantom = %n, ballot = %ballot, "outbidding a promise no leader announced");
        self.leader = ballot;
        self.become_leader(ballot)
    }

    pub(super) fn handle_proposal_forward(
        &mut self,
        from: NodeId,
        fwd: ProposalForward<T>,
    ) -> Result<(), StorageError> {
        match &mut self.role {
            Role::Leader(leader) => {
                if fwd.proposals.iter().any(|p| p.id.node != from) {
                    tracing::warn!(
                        pid = self.ctx.pid,
                        from,
                        "forward with proposals of another node dropped"
                    );
                    return Ok(());
                }
                leader.handle_forward(&mut self.ctx, fwd)
            }
            Role::Follower(_) => {
                tracing::debug!(
                    pid = self.ctx.pid,
                    from,
                    "forward dropped: not the leader; the proposer retries"
                );
                Ok(())
            }
        }
    }

    pub(super) fn handle_forward_stopsign(&mut self, ss: StopSign) -> Result<(), StorageError> {
        match &mut self.role {
            Role::Leader(leader) if self.ctx.state.stopsign.is_none() => {
                leader.propose_stopsign(&mut self.ctx, ss)
            }
            _ => Ok(()),
        }
    }

    pub(super) fn handle_compaction(&mut self, from: NodeId, c: Compaction) -> Result<(), StorageError> {
        match c {
            Compaction::Trim(idx) => {
                let state = &self.ctx.state;
                let from_leader = matches!(self.role, Role::Follower(_)) && state.promise.pid == from;
                if from_leader && idx > state.compacted_idx && idx <= state.decided_idx.min(state.log_end) {
                    self.ctx.write([StorageOp::SetSnapshot(None), StorageOp::Trim(idx)])?;
                } else {
                    tracing::debug!(pid = self.ctx.pid, from, idx, "trim request not applicable here");
                }
                Ok(())
            }
            Compaction::Snapshot(idx) => match self.snapshot_local(idx) {
                Ok(_) => Ok(()),
                Err(CompactionErr::Storage(e)) => Err(e),
                Err(e) => {
                    tracing::debug!(pid = self.ctx.pid, from, error = %e, "snapshot request not applicable here");
                    Ok(())
                }
            },
        }
    }

    /// Replaces the decided prefix up to `idx` with a snapshot; returns the index used.
    pub(super) fn snapshot_local(&mut self, idx: Option<LogIndex>) -> Result<LogIndex, CompactionErr> {
        if !S::use_snapshots() {
            return Err(CompactionErr::SnapshotsDisabled);
        }
        let state = &self.ctx.state;
        let decided_end = state.decided_idx.min(state.log_end);
        let idx = idx.unwrap_or(decided_end);
        if idx > decided_end {
            return Err(CompactionErr::UndecidedIndex(idx));
        }
        if idx <= state.compacted_idx {
            return Err(CompactionErr::TrimmedIndex(idx));
        }
        let compacted_idx = state.compacted_idx;
        let existing = self.ctx.storage.get_snapshot()?;
        if existing.is_none() && compacted_idx > 0 {
            // The prefix was trimmed without a snapshot: a snapshot from here would be partial.
            return Err(CompactionErr::TrimmedIndex(compacted_idx));
        }
        let entries: Vec<T> =
            self.ctx.read_entries(compacted_idx, idx)?.into_iter().map(|p| p.entry).collect();
        let delta = S::create(&entries);
        let snapshot = match existing {
            Some(mut s) => {
                s.merge(delta);
                s
            }
            None => delta,
        };
        self.ctx.write([StorageOp::SetSnapshot(Some(snapshot)), StorageOp::Trim(idx)])?;
        Ok(idx)
    }

    /// Periodic resend of what may have been lost.
    pub(super) fn resend(&mut self) -> Result<(), StorageError> {
        if self.is_learner() {
            // The leader that answered last, unless the last request went unanswered (it may
            // have been deposed): then every peer, and the leader answers.
            let unanswered = self.learner.asked_at > self.learner.answered_at;
            let leader = self.learner.leader.map(|b| b.pid).filter(|_| !unanswered);
            self.ask_for_decided_entries(leader);
            return Ok(());
        }
        let n = self.ctx.state.promise;
        match &mut self.role {
            Role::Leader(leader) => leader.resend(&mut self.ctx)?,
            Role::Follower(follower) => match follower.phase {
                FollowerPhase::Prepare => {
                    if let Some(promise) = follower.cached_promise.clone() {
                        self.ctx.send(n.pid, PaxosMsg::Promise(promise));
                    }
                }
                FollowerPhase::Recover => {
                    for peer in self.ctx.peers.clone() {
                        self.ctx.send(peer, PaxosMsg::PrepareReq(PrepareReq { n }));
                    }
                }
                FollowerPhase::Idle | FollowerPhase::Accept => {}
            },
        }
        self.maybe_forward_proposals();
        self.maybe_forward_stopsign();
        Ok(())
    }

    /// Forwards waiting own proposals to the leader this replica is synchronised with: the
    /// owner of its promise, once its log was synchronised in that ballot (durable state, so
    /// also right after a restart). New proposals go at once, unanswered ones again after a
    /// resend timeout.
    ///
    /// Why only then: our log then holds everything the leader adopted in its Prepare phase, so a
    /// proposal still waiting here is not in that part of the leader's log, and the leader's
    /// filter covers the part it appended itself. So the leader never appends a proposal its log
    /// already holds, whatever earlier leaders (this replica included) did with it and however
    /// late the forward arrives (ARCHITECTURE.md, "exactly once").
    pub(super) fn maybe_forward_proposals(&mut self) {
        let Role::Follower(_) = &self.role else { return };
        let state = &self.ctx.state;
        let (leader, synced) = if mutated!(self.ctx, ForwardUnsynced) {
            (self.leader, !self.leader.is_initial() && self.leader.pid != self.ctx.pid)
        } else {
            let leader = state.promise;
            (leader, !leader.is_initial() && state.accepted_round == leader && leader.pid != self.ctx.pid)
        };
        // Our log must hold the whole log the leader adopted (a sync may come in chunks).
        let covers_adopted = mutated!(self.ctx, ForwardUnsynced)
            || matches!(self.adopted_end, Some((b, end)) if b == leader && state.accepted_idx() >= end);
        let synced = synced && covers_adopted;
        if !synced || !self.ctx.peers.contains(&leader.pid) || state.stopsign.is_some() {
            return;
        }
        let proposals = self.ctx.ledger.due_for_forward(leader, self.ctx.now, self.ctx.resend_ticks);
        if proposals.is_empty() {
            return;
        }
        let settled_below = self.ctx.ledger.settled_below();
        self.ctx.send(
            leader.pid,
            PaxosMsg::ProposalForward(ProposalForward { n: leader, proposals, settled_below }),
        );
    }

    /// A learner asks `leader` (or, with none known, every peer) for decided entries.
    pub(super) fn ask_for_decided_entries(&mut self, leader: Option<NodeId>) {
        let from_idx = self.ctx.state.decided_idx;
        let request = crate::messages::LearnerRequest { from_idx };
        match leader {
            Some(pid) => self.ctx.send(pid, PaxosMsg::LearnerRequest(request)),
            None => {
                for peer in self.ctx.peers.clone() {
                    self.ctx.send(peer, PaxosMsg::LearnerRequest(request));
                }
            }
        }
        self.learner.asked_at = Some(self.ctx.now);
    }

    /// Decided entries for this learner: append what it lacks, and ask for more at once while
    /// the leader has decided further.
    pub(super) fn handle_learner_sync(
        &mut self,
        from: NodeId,
        sync: crate::messages::LearnerSync<T, S>,
    ) -> Result<(), StorageError> {
        if !self.is_learner() || sync.n.pid != from || sync.n.config_id != self.ctx.config_id {
            return Ok(());
        }
        if self.learner.leader.is_none_or(|known| sync.n >= known) {
            self.learner.leader = Some(sync.n);
        }
        self.learner.answered_at = Some(self.ctx.now);
        let before = self.ctx.state.decided_idx;
        let decided = self.ctx.apply_decided_sync(sync.log_sync)?;
        // More to learn: ask for the next batch at once if this one helped; a batch that did not
        // (a gap, a stale or replayed sync) waits for the resend timeout, so a learner that
        // cannot be helped does not trade requests and replies as fast as the network goes.
        if decided > before && decided < sync.decided_idx && self.ctx.state.stopsign.is_none() {
            self.ask_for_decided_entries(Some(from));
        }
        Ok(())
    }

    /// A leader asks whether we still promise its ballot (a read round): yes if we do.
    pub(super) fn handle_read_confirm(&mut self, from: NodeId, round: crate::messages::ReadRound) {
        if round.n.pid != from || round.n != self.ctx.state.promise {
            return;
        }
        if self.ctx.lease.is_some() {
            self.ctx.lease_confirmed_at = Some(self.ctx.now);
        }
        self.ctx.send(from, PaxosMsg::ReadConfirmed(round));
    }

    /// Asks the leader this replica is synchronised with for a read index for the reads that
    /// need one (new ones, and ones unanswered for a resend timeout).
    pub(super) fn maybe_ask_read_index(&mut self) {
        if !self.ctx.reads.has_waiting() {
            return;
        }
        let state = &self.ctx.state;
        let (leader, known) = match self.learner.leader {
            // A learner asks the leader that sends it decided entries.
            Some(leader) if self.is_learner() => (leader, true),
            _ => {
                let leader = state.promise;
                let synced =
                    !leader.is_initial() && state.accepted_round == leader && leader.pid != self.ctx.pid;
                (leader, synced)
            }
        };
        if !known || !self.ctx.peers.contains(&leader.pid) {
            return;
        }
        if let Some((round, allow_lease)) = self.ctx.reads.ask(leader, self.ctx.now, self.ctx.resend_ticks) {
            let ask = crate::messages::ReadAsk { n: leader, round, allow_lease };
            self.ctx.send(leader.pid, PaxosMsg::ReadRequest(ask));
        }
    }

    /// Forwards a pending StopSign to the leader this replica is synchronised with (as
    /// proposals, see `maybe_forward_proposals`) until it shows up in the log.
    pub(super) fn maybe_forward_stopsign(&mut self) {
        if self.ctx.state.stopsign.is_some() {
            self.pending_stopsign = None;
            return;
        }
        let state = &self.ctx.state;
        let leader = state.promise;
        let synced = !leader.is_initial() && state.accepted_round == leader && leader.pid != self.ctx.pid;
        if !matches!(self.role, Role::Follower(_)) || !synced {
            return;
        }
        if let Some(ss) = self.pending_stopsign.clone() {
            self.ctx.send(leader.pid, PaxosMsg::ForwardStopSign(Box::new(ss)));
        }
    }
}
