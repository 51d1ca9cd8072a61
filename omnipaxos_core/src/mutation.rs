//! Deliberate bugs for mutation testing of the checkers (feature `mutations`, test builds only).
//!
//! A checker that never fires is no evidence. Each variant switches one safety or robustness
//! rule of this crate off again, as it was before the fix that introduced the rule; CI runs the
//! simulators with each mutation and requires them to report a violation within a small seed
//! budget. Select one with `SequencePaxosConfig::set_mutation` / `BLEConfig::set_mutation`.

/// One deliberately reintroduced bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mutation {
    /// A log sync replaces the follower's log from the sync's start even when the log is of
    /// the sync's own round (so a delayed sync truncates acknowledged entries), and may rewrite
    /// decided entries (issue 8, finding 1).
    SyncReplacesLog,
    /// Proposals are forwarded to the highest leader ballot known, synchronised with it or not,
    /// and a leader buffers forwards during its Prepare phase (issue 8, finding 2).
    ForwardUnsynced,
    /// Outcomes beyond `buffer_size` are dropped when nobody took them yet (finding 4).
    DropOutcomes,
    /// The identity recorded in the storage is not checked at start (finding 6).
    IgnoreIdentity,
    /// Finding 3 as found: `set_priority` lowers the ballot a server already announced, and
    /// (as before the second fix, ec2b535) a follower keeps a ballot its owner abandoned.
    LowerAnnouncedBallot,
    /// Heartbeat replies with a round of `u32::MAX` are accepted; a takeover above them panics
    /// (finding 5).
    AcceptUnbeatableRounds,
    /// A leader answers reads with its decided index at once, without confirming with a quorum
    /// that it still leads (issue 11: stale reads by a deposed leader).
    ReadWithoutQuorum,
    /// With leases, a new leader decides without waiting for an earlier leader's lease to end.
    LeaseWithoutWait,
    /// A chunked synchronisation splits the log the leader adopted, so a replica can hold the
    /// leader's round with only part of that log (a later leader then adopts it and loses
    /// chosen entries).
    SyncSplitsAdoptedLog,
    /// A read whose index reaches a decided StopSign is reported `Ready` (it may miss writes
    /// of the next configuration) instead of failing as `Reconfigured`.
    ReadPastStopSign,
    /// Ballot Leader Election keeps following a leader ballot whose owner answers that it
    /// follows another leader (nobody leads with that ballot; the follower waits forever).
    KeepAbandonedLeader,
    /// `expire_read_lease` ends the current lease only: a read round in flight across a pause
    /// still grants a lease counted from its start on the stopped clock (found by the
    /// simulator's pauses: the old leader resumes, its peers' confirmations are waiting, and it
    /// answers reads from a lease the new leader already waited out).
    LeaseFromPausedRound,
}

impl Mutation {
    /// Every mutation.
    pub const ALL: [Mutation; 12] = [
        Mutation::SyncReplacesLog,
        Mutation::ForwardUnsynced,
        Mutation::DropOutcomes,
        Mutation::IgnoreIdentity,
        Mutation::LowerAnnouncedBallot,
        Mutation::AcceptUnbeatableRounds,
        Mutation::ReadWithoutQuorum,
        Mutation::LeaseWithoutWait,
        Mutation::SyncSplitsAdoptedLog,
        Mutation::ReadPastStopSign,
        Mutation::KeepAbandonedLeader,
        Mutation::LeaseFromPausedRound,
    ];

    /// The kebab-case name used on command lines.
    pub fn name(self) -> &'static str {
        match self {
            Mutation::SyncReplacesLog => "sync-replaces-log",
            Mutation::ForwardUnsynced => "forward-unsynced",
            Mutation::DropOutcomes => "drop-outcomes",
            Mutation::IgnoreIdentity => "ignore-identity",
            Mutation::LowerAnnouncedBallot => "lower-announced-ballot",
            Mutation::AcceptUnbeatableRounds => "accept-unbeatable-rounds",
            Mutation::ReadWithoutQuorum => "read-without-quorum",
            Mutation::LeaseWithoutWait => "lease-without-wait",
            Mutation::SyncSplitsAdoptedLog => "sync-splits-adopted-log",
            Mutation::ReadPastStopSign => "read-past-stopsign",
            Mutation::KeepAbandonedLeader => "keep-abandoned-leader",
            Mutation::LeaseFromPausedRound => "lease-from-paused-round",
        }
    }

    /// The mutation named `name` (see [`Mutation::name`]).
    pub fn from_name(name: &str) -> Option<Mutation> {
        Mutation::ALL.into_iter().find(|m| m.name() == name)
    }
}
