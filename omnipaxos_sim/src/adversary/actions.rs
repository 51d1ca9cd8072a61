//! The scheduler's actions on replicas (leaders, appends, crashes, compaction, hostile
//! messages) and the checks after every step.

use std::convert::Infallible;

use omnipaxos_core::{ballot_leader_election::Ballot, util::NodeId};
use omnipaxos_storage::crash_storage::CrashKeep;
use rand::{seq::SliceRandom, Rng};

use super::{
    entry,
    hostile::{hostile_message, HostileTarget},
    world::{Action, Source, World, CONFIG_ID},
    AdvReplica,
};
use crate::{
    invariants::Violation,
    storage::{ArmedFailure, CrashedDisk, DiskLoss, SimStorage, StorageKind},
};
use omnipaxos_storage::persistent_storage::{sim_fs::CrashVariant, PersistentStorageConfig};

/// Highest priority of an adversarial handle_leader ballot: `u32::MAX` is reserved for the
/// hostile peers' ballot no leader uses ([`super::hostile::reserved_ballot`]).
const PRIORITY_MAX: u32 = u32::MAX - 1;

impl World {
    // ---- leaders ----------------------------------------------------------------------

    /// handle_leader with an adversarial ballot at a subset of the live nodes.
    pub(super) fn announce_leader(&mut self) -> Result<(), Violation> {
        let ballot = self.adversarial_ballot();
        let up = self.up_pids();
        let targets: Vec<NodeId> = match self.rng.gen_range(0..4) {
            0 => up,
            1 => up.into_iter().filter(|&p| p == ballot.pid).collect(),
            2 => up.into_iter().filter(|_| self.rng.gen_bool(0.5)).collect(),
            _ => up.into_iter().filter(|&p| p == ballot.pid || self.rng.gen_bool(0.5)).collect(),
        };
        let targets = match targets.is_empty() {
            true => self.up_pids().into_iter().filter(|&p| p == ballot.pid).collect(),
            false => targets,
        };
        self.led.push(ballot);
        if ballot.config_id == CONFIG_ID {
            self.ceiling = self.ceiling.max(ballot);
        }
        self.trace(|| format!("handle_leader {ballot} (c{}) at {targets:?}", ballot.config_id));
        for pid in targets {
            self.call(pid, "handle_leader", |r| r.handle_leader(ballot))?;
        }
        Ok(())
    }

    /// Any ballot: the next round, the current one, lower ones, a random one, a stale one
    /// announced again, now and then one of another configuration or near `u32::MAX`.
    fn adversarial_ballot(&mut self) -> Ballot {
        if !self.led.is_empty() && self.rng.gen_bool(0.15) {
            return self.led[self.rng.gen_range(0..self.led.len())];
        }
        let top = self.ceiling.n;
        let n = match self.rng.gen_range(0..100) {
            0..=44 => top.saturating_add(1),
            45..=59 => top,
            60..=69 => top.saturating_sub(self.rng.gen_range(1..=3)),
            70..=91 => self.rng.gen_range(0..=top.saturating_add(2)),
            _ if self.profile.extreme_rounds => u32::MAX - self.rng.gen_range(0..=2),
            _ => top.saturating_add(self.rng.gen_range(1..=3)),
        };
        let priority = match self.rng.gen_range(0..20) {
            0..=13 => 0,
            14..=18 => self.rng.gen_range(1..=3),
            _ => self.rng.gen_range(0..=PRIORITY_MAX),
        };
        let owner = *self.profile.pids.choose(&mut self.rng).expect("members");
        let config_id = if self.rng.gen_bool(0.03) { CONFIG_ID + 1 } else { CONFIG_ID };
        Ballot::with(config_id, n, priority, owner)
    }

    // ---- proposals --------------------------------------------------------------------

    /// Appends a new unique value at `pid`.
    pub(super) fn append(&mut self, pid: NodeId) -> Result<(), Violation> {
        let value = self.next_value;
        self.next_value += 1;
        let id = self.call(pid, "append", |r| r.append(entry(pid, value)))?;
        if let Some(id) = id {
            self.checker.note_appended(id, value);
            self.trace(|| format!("append v{value} at {pid} -> {id}"));
        }
        Ok(())
    }

    pub(super) fn reconnected(&mut self, pid: NodeId) -> Result<(), Violation> {
        let peers: Vec<NodeId> = self.profile.pids.iter().copied().filter(|&p| p != pid).collect();
        let Some(&peer) = peers.choose(&mut self.rng) else { return Ok(()) };
        self.trace(|| format!("reconnected {pid} to {peer}"));
        self.call(pid, "reconnected", |r| {
            r.reconnected(peer);
            Ok::<(), Infallible>(())
        })
        .map(|_| ())
    }

    pub(super) fn fail_recovery(&mut self, pid: NodeId) -> Result<(), Violation> {
        self.trace(|| format!("fail_recovery {pid}"));
        self.call(pid, "fail_recovery", |r| {
            r.fail_recovery();
            Ok::<(), Infallible>(())
        })
        .map(|_| ())
    }

    /// Trim (only a leader may) or snapshot, to the decided index or a random index below it.
    pub(super) fn compact(&mut self, pid: NodeId, action: Action) -> Result<(), Violation> {
        let Some(replica) = self.nodes[&pid].replica.as_ref() else { return Ok(()) };
        let (compacted, decided) = (replica.get_compacted_idx(), replica.get_decided_idx());
        let idx = match decided > compacted && self.rng.gen_bool(0.5) {
            true => Some(self.rng.gen_range(compacted + 1..=decided)),
            false => None,
        };
        let local_only = self.rng.gen_bool(0.5);
        let done = match action {
            Action::Trim => self.call(pid, "trim", |r| r.trim(idx))?,
            _ => self.call(pid, "snapshot", |r| r.snapshot(idx, local_only))?,
        };
        if done.is_some() {
            self.trace(|| format!("{} at {pid} to {idx:?}", action.name()));
        }
        Ok(())
    }

    pub(super) fn reconfigure(&mut self, pid: NodeId) -> Result<(), Violation> {
        let next = self.next_configs.choose(&mut self.rng).expect("two").clone();
        let shown = format!("c{} {:?}", next.configuration_id, next.nodes);
        if self.call(pid, "reconfigure", |r| r.reconfigure(next, None))?.is_some() {
            self.trace(|| format!("reconfigure at {pid} to {shown}"));
        }
        Ok(())
    }

    // ---- faults -----------------------------------------------------------------------

    pub(super) fn crash_one(&mut self) -> Result<(), Violation> {
        let up = self.up_pids();
        let Some(&pid) = up.choose(&mut self.rng) else { return Ok(()) };
        self.crash(pid, "crash");
        if self.rng.gen_bool(0.5) {
            self.restart(pid)?;
        }
        Ok(())
    }

    /// The process dies: its disk keeps none, all or a prefix of the unflushed writes
    /// (crashable), or loses, tears or flips unsynced bytes (persistent).
    pub(super) fn crash(&mut self, pid: NodeId, why: &str) {
        let node = self.nodes.get_mut(&pid).expect("a member");
        let Some(replica) = node.replica.take() else { return };
        let storage = replica.storage();
        let unflushed = storage.unflushed_calls();
        let loss = match storage.interrupted() {
            Some(loss) => loss,
            None => match storage.kind() {
                StorageKind::Crashable => DiskLoss::Calls(match self.rng.gen_range(0..3) {
                    0 => CrashKeep::Nothing,
                    1 => CrashKeep::All,
                    _ => CrashKeep::Prefix(self.rng.gen_range(0..=unflushed)),
                }),
                StorageKind::Persistent => DiskLoss::draw_bytes(&mut self.rng, true),
            },
        };
        node.disk = Some(storage.crash_disk(loss));
        node.armed = false;
        node.last_error = None;
        self.checker.note_crashed(pid);
        self.trace(|| format!("{why} {pid} keeping {loss} of {unflushed} unflushed writes"));
    }

    pub(super) fn restart_one(&mut self) -> Result<(), Violation> {
        let down: Vec<NodeId> =
            self.nodes.iter().filter(|(_, n)| n.replica.is_none()).map(|(&p, _)| p).collect();
        match down.choose(&mut self.rng) {
            Some(&pid) => self.restart(pid),
            None => Ok(()),
        }
    }

    /// A new process opens the disk the crash left and creates the replica over it (the
    /// replica recovers by itself when the disk holds a promise).
    pub(super) fn restart(&mut self, pid: NodeId) -> Result<(), Violation> {
        let node = self.nodes.get_mut(&pid).expect("a member");
        let Some(disk) = node.disk.take() else { return Ok(()) };
        let storage =
            disk.recover().map_err(|e| self.violation("replicas_restart", format!("node {pid}: {e}")))?;
        self.open_replica(pid, storage)?;
        self.restarted_at.insert(pid, self.archive.len());
        let promise = self.nodes[&pid].replica.as_ref().map(|r| r.get_promise()).unwrap_or_default();
        self.trace(|| format!("restart {pid} (promise {promise})"));
        Ok(())
    }

    /// Creates `pid`'s replica over `storage`.
    pub(super) fn open_replica(&mut self, pid: NodeId, storage: SimStorage) -> Result<(), Violation> {
        let config = self.nodes[&pid].config.clone();
        match super::guard(|| AdvReplica::try_with(config, storage)) {
            Ok(Ok(replica)) => {
                self.nodes.get_mut(&pid).expect("a member").replica = Some(replica);
                Ok(())
            }
            Ok(Err(e)) => {
                Err(self.violation("replicas_restart", format!("node {pid}: try_with failed: {e}")))
            }
            Err(panic) => {
                Err(self.violation("no_panic_on_input", format!("node {pid} panicked in try_with: {panic}")))
            }
        }
    }

    /// Arms a failure of a later write or flush (fail-stop); persistent disks may instead die
    /// inside the next flush.
    pub(super) fn arm_disk_failure(&mut self, pid: NodeId) -> Result<(), Violation> {
        let failure = match self.rng.gen_range(0..3) {
            0 if self.config.storage == StorageKind::Persistent => {
                ArmedFailure::CrashInFlush { seed: self.rng.gen() }
            }
            0 | 1 => ArmedFailure::Write(self.rng.gen_range(0..4)),
            _ => ArmedFailure::Flush(self.rng.gen_range(0..3)),
        };
        let node = self.nodes.get_mut(&pid).expect("a member");
        let Some(replica) = node.replica.as_ref() else { return Ok(()) };
        replica.storage().arm(Some(failure));
        node.armed = true;
        self.trace(|| format!("disk of {pid} armed: {failure:?}"));
        Ok(())
    }

    /// Delivers one hostile message (see [`super::hostile`]) to `pid`.
    pub(super) fn inject_hostile(&mut self, pid: NodeId) -> Result<(), Violation> {
        let receiver_promise = self.nodes[&pid].replica.as_ref().map(|r| r.get_promise()).unwrap_or_default();
        let target =
            HostileTarget { config_id: CONFIG_ID, pids: &self.profile.pids, receiver: pid, receiver_promise };
        let (kind, message) = hostile_message(&mut self.rng, target);
        *self.actions.entry(kind.name()).or_default() += 1;
        self.hostile.push((pid, message));
        self.deliver(Source::Hostile(self.hostile.len() - 1), kind.name())
    }

    /// Would a process of `pid` start over a disk that is not its own? A copy of another live
    /// node's disk, or of `pid`'s own disk opened for another configuration, is opened as
    /// `pid`'s: the storage or the core must refuse it (issue 8, finding 6). The experiment
    /// runs on a copy and changes nothing in the run.
    pub(super) fn open_foreign_disk(&mut self, pid: NodeId) -> Result<(), Violation> {
        let others: Vec<NodeId> = self.up_pids().into_iter().filter(|&p| p != pid).collect();
        let source = match others.choose(&mut self.rng) {
            Some(&other) if self.rng.gen_bool(0.7) => other,
            _ => pid,
        };
        let mut config = self.nodes[&pid].config.clone();
        if source == pid {
            config.set_configuration_id(CONFIG_ID + 1);
        }
        let what = match source == pid {
            true => format!(
                "node {pid}'s disk of configuration {CONFIG_ID} opened for configuration {}",
                CONFIG_ID + 1
            ),
            false => format!("node {source}'s disk opened as node {pid}'s"),
        };
        let Some(storage) = self.nodes[&source].replica.as_ref().map(|r| r.storage()) else { return Ok(()) };
        let copy = match storage.kind() {
            StorageKind::Crashable => storage.crash_disk(DiskLoss::Calls(CrashKeep::All)),
            StorageKind::Persistent => {
                let loss = DiskLoss::Bytes { variant: CrashVariant::LoseUnsynced, seed: 0 };
                match storage.crash_disk(loss) {
                    CrashedDisk::Persistent { fs, config: disk } => CrashedDisk::Persistent {
                        fs,
                        config: PersistentStorageConfig {
                            node_id: pid,
                            configuration_id: config.configuration_id(),
                            ..disk
                        },
                    },
                    crashable => crashable,
                }
            }
        };
        let storage = match copy.recover() {
            Ok(storage) => storage,
            Err(e) => {
                self.trace(|| format!("foreign disk: {what}: refused by the storage: {e}"));
                return Ok(());
            }
        };
        match super::guard(|| AdvReplica::try_with(config, storage)) {
            Ok(Err(e)) => {
                self.trace(|| format!("foreign disk: {what}: refused: {e}"));
                Ok(())
            }
            Ok(Ok(replica)) => {
                let detail = format!("{what}: a replica started over it (promise {})", replica.get_promise());
                self.trace(|| format!("foreign disk: {detail}"));
                self.tolerate(self.violation("foreign_storage_is_refused", detail))
            }
            Err(panic) => {
                let detail = format!("node {pid} panicked in try_with over {what}: {panic}");
                self.tolerate(self.violation("no_panic_on_input", detail))
            }
        }
    }

    // ---- after every step -------------------------------------------------------------

    /// Crashes replicas that stopped after an injected disk failure, then checks every live
    /// replica.
    pub(super) fn after_step(&mut self) -> Result<(), Violation> {
        for pid in self.up_pids() {
            let node = &self.nodes[&pid];
            if !node.replica.as_ref().is_some_and(|r| r.is_stopped()) {
                continue;
            }
            if !node.armed {
                let error = node.last_error.clone().unwrap_or_default();
                let detail = format!("node {pid} stopped without an injected disk failure: {error}");
                return Err(self.violation("storage_calls_are_valid", detail));
            }
            self.crash(pid, "fail-stop");
        }
        for pid in self.up_pids() {
            if let Err(v) = self.check_node(pid) {
                self.tolerate(v)?;
            }
        }
        Ok(())
    }

    /// The core's own invariants, then the checker's, then the outcomes of this step.
    fn check_node(&mut self, pid: NodeId) -> Result<(), Violation> {
        let step = self.step;
        let World { nodes, checker, trace, outcomes, ceiling, config, .. } = self;
        let Some(replica) = nodes.get_mut(&pid).and_then(|n| n.replica.as_mut()) else { return Ok(()) };
        if let Err(panic) = super::guard(|| replica.check_invariants()) {
            let detail = format!("node {pid}: check_invariants: {panic}");
            return Err(Violation { tick: step, property: "core_invariants_hold", detail });
        }
        outcomes.clear();
        if let Err(panic) = super::guard(|| replica.take_proposal_outcomes(outcomes)) {
            let detail = format!("node {pid} panicked in take_proposal_outcomes: {panic}");
            return Err(Violation { tick: step, property: "no_panic_on_input", detail });
        }
        let print = config.trace_print;
        let mut push = |line: String| {
            if let Some(trace) = trace.as_mut() {
                let line = format!("s={step} {line}");
                if print {
                    println!("{line}");
                } else {
                    trace.push(line);
                }
            }
        };
        checker.check_replica(pid, replica, &mut push)?;
        for (id, outcome) in outcomes.iter() {
            push(format!("node {pid} outcome {id} {outcome:?}"));
        }
        checker.check_outcomes(pid, replica.get_decided_idx(), outcomes)?;
        let promise = replica.get_promise();
        if promise.config_id == CONFIG_ID {
            *ceiling = (*ceiling).max(promise);
        }
        Ok(())
    }
}
