//! The nemesis: a seeded schedule of faults, one at a time or two combined (a network fault
//! with a process fault), each held for a few seconds and then healed, with a bounded wait for
//! the cluster to take writes again before the next one.
//!
//! | fault | what it does |
//! |---|---|
//! | `partition` | a random minority is cut off from the majority (both directions) |
//! | `quorum-loss` | the paper's scenario: only one follower (the hub) keeps links to everyone; every other link is cut, so the leader loses its quorum and only the hub can form one |
//! | `constrained-election` | the paper's scenario: one follower is first cut off while writes go on (its log falls behind), then the leader is isolated and every link not touching that follower is cut: the only node with a quorum has an outdated log |
//! | `chained` | the nodes in a chain (each linked to its neighbours only), the leader at one end |
//! | `one-way` | packets from one node to another are dropped, the other direction works |
//! | `leader-isolation` | every link of the leader is cut |
//! | `kill` | SIGKILL of a node (the leader in 2 of 3 draws), restarted when healed |
//! | `pause` | SIGSTOP of a node (the leader in 2 of 3 draws) for longer than an election timeout, then SIGCONT |
//! | `skew` | one node restarted under libfaketime at a clock rate within the lease drift bound (a slow clock on the leader, a fast one on a follower); the leadership is steered (bounded: isolating leaders) so that a slow node leads or a fast one follows, then the leader is isolated, so a lease must run out on the skewed clocks |
//! | `skew-beyond` | the same at a rate beyond the bound (lease reads may then be stale: reported apart) |
//! | `disk-full` | a node's data tmpfs is filled and held three times as long as other faults (the log asks the file system for space only when it opens a segment); space is returned when healed, and a node that stopped is restarted |

use std::{
    collections::BTreeSet,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use omnipaxos_kv::api::StatusResponse;
use rand::{rngs::SmallRng, seq::SliceRandom, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{cluster::Cluster, workload::Shared, ChaosError, NodeId};

/// A kind of fault.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    Partition,
    QuorumLoss,
    ConstrainedElection,
    Chained,
    OneWay,
    LeaderIsolation,
    Kill,
    Pause,
    Skew,
    SkewBeyond,
    DiskFull,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 11] = [
        FaultKind::Partition,
        FaultKind::QuorumLoss,
        FaultKind::ConstrainedElection,
        FaultKind::Chained,
        FaultKind::OneWay,
        FaultKind::LeaderIsolation,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Skew,
        FaultKind::SkewBeyond,
        FaultKind::DiskFull,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::QuorumLoss => "quorum-loss",
            FaultKind::ConstrainedElection => "constrained-election",
            FaultKind::Chained => "chained",
            FaultKind::OneWay => "one-way",
            FaultKind::LeaderIsolation => "leader-isolation",
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Skew => "skew",
            FaultKind::SkewBeyond => "skew-beyond",
            FaultKind::DiskFull => "disk-full",
        }
    }

    /// Faults of the network (rules), as opposed to faults of one process.
    pub fn is_network(self) -> bool {
        matches!(
            self,
            FaultKind::Partition
                | FaultKind::QuorumLoss
                | FaultKind::ConstrainedElection
                | FaultKind::Chained
                | FaultKind::OneWay
                | FaultKind::LeaderIsolation
        )
    }
}

/// One fault as it happened.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaultRecord {
    pub kind: FaultKind,
    /// Injected together with another fault (same start).
    pub combined: bool,
    pub description: String,
    /// The leader when the fault began, if one was known.
    pub leader_before: Option<NodeId>,
    /// The nodes the fault acted on (killed, paused, skewed, filled; cut off).
    pub targets: Vec<NodeId>,
    pub start_ns: u64,
    pub heal_ns: u64,
    /// When the nemesis's probe write succeeded after the heal (none: not within the bound).
    pub recovered_ns: Option<u64>,
    /// What was observed on the way (a node that exited, refused writes, ...).
    pub notes: Vec<String>,
}

/// The nemesis's settings.
#[derive(Clone, Debug)]
pub struct NemesisConfig {
    pub kinds: Vec<FaultKind>,
    pub seed: u64,
    /// Probability that a fault is combined with a second one of the other family.
    pub combine_probability: f64,
    pub quiet_ms: (u64, u64),
    pub hold_ms: (u64, u64),
    /// Clock rates used for `skew` (within the bound) and `skew-beyond`.
    pub skew_within: Vec<f64>,
    pub skew_beyond: Vec<f64>,
    /// Bound on waiting for recovery after a heal.
    pub recovery_timeout: Duration,
    /// Test hook: panic once a fault is in force this far into the run (the teardown test).
    pub panic_after_ns: Option<u64>,
}

/// The status of every running, unpaused node (each asked with a short timeout).
pub async fn statuses(cluster: &Cluster, http: &reqwest::Client) -> Vec<(NodeId, StatusResponse)> {
    let mut out = Vec::new();
    for id in cluster.ids() {
        if !cluster.is_running(id) || cluster.is_paused(id) {
            continue;
        }
        let url = format!("{}/v1/status", cluster.endpoint(id));
        if let Ok(response) = http.get(url).timeout(Duration::from_millis(500)).send().await {
            if let Ok(status) = response.json::<StatusResponse>().await {
                out.push((id, status));
            }
        }
    }
    out
}

/// The node that says it is the ready leader, if exactly one does (else the one most nodes name).
pub async fn leader(cluster: &Cluster, http: &reqwest::Client) -> Option<NodeId> {
    let all = statuses(cluster, http).await;
    if let Some((id, _)) = all.iter().find(|(_, s)| s.is_leader && s.leader_ready) {
        return Some(*id);
    }
    let mut named: Vec<NodeId> = all.iter().filter_map(|(_, s)| s.leader).collect();
    named.sort_unstable();
    named.first().copied()
}

/// Writes a probe key until one write is acknowledged or `timeout` passes; tries every node.
pub async fn probe_write(cluster: &Cluster, http: &reqwest::Client, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let ids = cluster.ids();
    let mut attempt = 0usize;
    while tokio::time::Instant::now() < deadline {
        let id = ids[attempt % ids.len()];
        attempt += 1;
        if cluster.is_running(id) && !cluster.is_paused(id) {
            let url = format!("{}/v1/kv/nemesis-probe", cluster.endpoint(id));
            let sent = http
                .put(url)
                .json(&serde_json::json!({"value": attempt.to_string()}))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if sent.is_ok_and(|r| r.status().is_success()) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Every directed link between the two groups, both ways.
fn cut_between(a: &[NodeId], b: &[NodeId]) -> BTreeSet<(NodeId, NodeId)> {
    let mut cut = BTreeSet::new();
    for &x in a {
        for &y in b {
            if x != y {
                cut.insert((x, y));
                cut.insert((y, x));
            }
        }
    }
    cut
}

/// Every link not in `kept` (undirected pairs), both ways.
fn cut_all_but(ids: &[NodeId], kept: &[(NodeId, NodeId)]) -> BTreeSet<(NodeId, NodeId)> {
    let keep = |x: NodeId, y: NodeId| kept.iter().any(|&(a, b)| (a, b) == (x, y) || (a, b) == (y, x));
    let mut cut = BTreeSet::new();
    for &x in ids {
        for &y in ids {
            if x != y && !keep(x, y) {
                cut.insert((x, y));
            }
        }
    }
    cut
}

/// The nemesis: owns the cluster while the run lasts.
pub struct Nemesis {
    config: NemesisConfig,
    rng: SmallRng,
    pub faults: Vec<FaultRecord>,
}

/// A process fault in force, to be healed.
enum ProcessFault {
    Killed(NodeId),
    Paused(NodeId),
    Skewed(NodeId),
    Filled(NodeId),
}

impl Nemesis {
    /// A nemesis with a seeded schedule.
    pub fn new(config: NemesisConfig) -> Nemesis {
        let rng = SmallRng::seed_from_u64(config.seed ^ 0x006e_656d_6573_6973);
        Nemesis { config, rng, faults: Vec::new() }
    }

    fn ms(&mut self, range: (u64, u64)) -> Duration {
        Duration::from_millis(self.rng.gen_range(range.0..=range.1.max(range.0)))
    }

    /// Injects faults until `shared.stop` or `until_ns`, then heals everything.
    pub async fn run(
        &mut self,
        cluster: &mut Cluster,
        shared: &Arc<Shared>,
        until_ns: u64,
    ) -> Result<(), ChaosError> {
        let clock = shared.clock.clone();
        while !shared.stop.load(Ordering::Relaxed) && clock.now_ns() < until_ns {
            let quiet = self.ms(self.config.quiet_ms);
            tokio::time::sleep(quiet).await;
            if shared.stop.load(Ordering::Relaxed) || clock.now_ns() >= until_ns {
                break;
            }
            self.restart_exited(cluster, None)?;
            self.restart_stopped(cluster, &shared.http).await?;
            let first =
                *self.config.kinds.choose(&mut self.rng).ok_or(ChaosError::Setup("no fault kinds".into()))?;
            let others: Vec<FaultKind> =
                self.config.kinds.iter().copied().filter(|k| k.is_network() != first.is_network()).collect();
            let second = (!others.is_empty() && self.rng.gen_bool(self.config.combine_probability))
                .then(|| *others.choose(&mut self.rng).unwrap_or(&first));
            self.inject(cluster, shared, first, second).await?;
        }
        self.heal_all(cluster, &shared.http).await
    }

    /// One fault (or two together): inject, hold, heal, wait for recovery; recorded.
    async fn inject(
        &mut self,
        cluster: &mut Cluster,
        shared: &Arc<Shared>,
        first: FaultKind,
        second: Option<FaultKind>,
    ) -> Result<(), ChaosError> {
        let clock = shared.clock.clone();
        let leader_before = leader(cluster, &shared.http).await;
        let mut records = Vec::new();
        let mut blocked = BTreeSet::new();
        let mut process = Vec::new();
        for kind in std::iter::once(first).chain(second) {
            let (description, targets, cut, fault) = self.apply(cluster, shared, kind, leader_before).await?;
            tracing::info!("fault {}: {description}", kind.name());
            blocked.extend(cut);
            process.extend(fault);
            cluster.network().set_blocked(blocked.clone())?;
            // The fault is in force from here (after a constrained election's first phase).
            let start_ns = clock.now_ns();
            if self.config.panic_after_ns.is_some_and(|after| start_ns >= after) {
                panic!("--test-panic-after-s: a deliberate panic while `{}` is in force", kind.name());
            }
            records.push(FaultRecord {
                kind,
                combined: second.is_some(),
                description,
                leader_before,
                targets,
                start_ns,
                heal_ns: 0,
                recovered_ns: None,
                notes: Vec::new(),
            });
        }
        let skewed = records
            .iter()
            .find(|r| matches!(r.kind, FaultKind::Skew | FaultKind::SkewBeyond))
            .and_then(|r| r.targets.first().map(|&t| (t, cluster.clock_rate(t))));
        let mut hold = self.ms(self.config.hold_ms);
        if records.iter().any(|r| r.kind == FaultKind::DiskFull) {
            // The log asks for space only when it opens a segment: hold long enough for that.
            hold *= 3;
        }
        // Skew: a slow clock matters on a leader (its lease lasts longer in real time), a
        // fast one on a follower (it waits out the old leader's lease too soon). Steer the
        // leadership that way (bounded), then isolate whoever leads, so that a lease must run
        // out on the skewed clocks.
        if let Some((target, rate)) = skewed {
            let deadline = tokio::time::Instant::now() + hold;
            for _ in 0..4 {
                let current = leader(cluster, &shared.http).await;
                let done = match current {
                    Some(l) => (rate < 1.0) == (l == target),
                    None => false,
                };
                if done || tokio::time::Instant::now() >= deadline {
                    break;
                }
                if let Some(l) = current {
                    let mut steer = blocked.clone();
                    steer.extend(cut_between(&[l], &cluster.ids()));
                    cluster.network().set_blocked(steer)?;
                    tokio::time::sleep(Duration::from_millis(3 * cluster.settings().election_timeout_ms()))
                        .await;
                    cluster.network().set_blocked(blocked.clone())?;
                }
                tokio::time::sleep(Duration::from_millis(2 * cluster.settings().election_timeout_ms())).await;
            }
            if let Some(current) = leader(cluster, &shared.http).await {
                let mut with_isolation = blocked.clone();
                with_isolation.extend(cut_between(&[current], &cluster.ids()));
                cluster.network().set_blocked(with_isolation)?;
                for r in
                    records.iter_mut().filter(|r| matches!(r.kind, FaultKind::Skew | FaultKind::SkewBeyond))
                {
                    r.notes.push(format!(
                        "leader {current} (clock rate {}) isolated; node {target} runs at x{rate}",
                        cluster.clock_rate(current)
                    ));
                }
            }
            tokio::time::sleep(hold).await;
        } else {
            self.hold(cluster, hold, &mut records).await;
        }
        // Heal: network first, then processes.
        cluster.network().set_blocked(BTreeSet::new())?;
        for fault in process {
            self.heal_process(cluster, &shared.http, fault, &mut records).await?;
        }
        let heal_ns = clock.now_ns();
        let recovered = probe_write(cluster, &shared.http, self.config.recovery_timeout).await;
        let recovered_ns = recovered.then(|| clock.now_ns());
        for mut record in records {
            record.heal_ns = heal_ns;
            record.recovered_ns = recovered_ns;
            if !recovered {
                record.notes.push(format!(
                    "no write acknowledged within {:?} of the heal",
                    self.config.recovery_timeout
                ));
            }
            self.faults.push(record);
        }
        Ok(())
    }

    /// Waits out the hold, noting processes that exit meanwhile (a full disk may stop one).
    async fn hold(&mut self, cluster: &mut Cluster, hold: Duration, records: &mut [FaultRecord]) {
        let deadline = tokio::time::Instant::now() + hold;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            for (id, status) in cluster.reap_exited() {
                let tail = cluster.log_tail(id, 3).replace('\n', " | ");
                for r in records.iter_mut() {
                    r.notes.push(format!("node {id} exited ({status}) during the fault: {tail}"));
                }
            }
        }
    }

    /// Applies one fault: its description, targets, links to cut, and process fault to heal.
    async fn apply(
        &mut self,
        cluster: &mut Cluster,
        shared: &Arc<Shared>,
        kind: FaultKind,
        leader: Option<NodeId>,
    ) -> Result<(String, Vec<NodeId>, BTreeSet<(NodeId, NodeId)>, Option<ProcessFault>), ChaosError> {
        let ids = cluster.ids();
        let n = ids.len();
        let mut shuffled = ids.clone();
        shuffled.shuffle(&mut self.rng);
        let leader_or_random = |rng: &mut SmallRng| match leader {
            Some(l) if rng.gen_bool(2.0 / 3.0) => l,
            _ => ids[rng.gen_range(0..n)],
        };
        let followers: Vec<NodeId> = ids.iter().copied().filter(|&i| Some(i) != leader).collect();
        let leader_id = leader.unwrap_or(shuffled[0]);
        let none = BTreeSet::new();
        Ok(match kind {
            FaultKind::Partition => {
                let minority = self.rng.gen_range(1..=(n - 1) / 2);
                let (small, large) = shuffled.split_at(minority);
                (format!("{small:?} | {large:?}"), small.to_vec(), cut_between(small, large), None)
            }
            FaultKind::QuorumLoss => {
                let hub = *followers.choose(&mut self.rng).unwrap_or(&shuffled[0]);
                let kept: Vec<(NodeId, NodeId)> = ids.iter().map(|&x| (hub, x)).collect();
                (
                    format!("only {hub} linked to all; leader was {leader:?}"),
                    vec![leader_id],
                    cut_all_but(&ids, &kept),
                    None,
                )
            }
            FaultKind::ConstrainedElection => {
                let behind = *followers.choose(&mut self.rng).unwrap_or(&shuffled[0]);
                // Phase 1: `behind` falls behind while the others take writes.
                let others: Vec<NodeId> = ids.iter().copied().filter(|&i| i != behind).collect();
                cluster.network().set_blocked(cut_between(&[behind], &others))?;
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let _ = &shared;
                // Phase 2: the leader isolated, only `behind` linked to the rest.
                let kept: Vec<(NodeId, NodeId)> =
                    ids.iter().copied().filter(|&x| x != leader_id).map(|x| (behind, x)).collect();
                let mut cut = cut_all_but(&ids, &kept);
                cut.extend(cut_between(&[leader_id], &ids));
                (
                    format!("{behind} fell behind for 1.5 s, then leader {leader_id} isolated and only {behind} linked to the rest"),
                    vec![leader_id, behind],
                    cut,
                    None,
                )
            }
            FaultKind::Chained => {
                let mut chain = vec![leader_id];
                chain.extend(shuffled.iter().copied().filter(|&i| i != leader_id));
                let kept: Vec<(NodeId, NodeId)> = chain.windows(2).map(|w| (w[0], w[1])).collect();
                (format!("chain {chain:?}"), chain.clone(), cut_all_but(&ids, &kept), None)
            }
            FaultKind::OneWay => {
                let from = shuffled[0];
                let to = shuffled[1];
                (format!("{from} -> {to} dropped"), vec![from, to], BTreeSet::from([(from, to)]), None)
            }
            FaultKind::LeaderIsolation => (
                format!("leader {leader_id} isolated"),
                vec![leader_id],
                cut_between(&[leader_id], &ids),
                None,
            ),
            FaultKind::Kill => {
                let target = leader_or_random(&mut self.rng);
                cluster.kill(target);
                let role = if Some(target) == leader { "leader" } else { "follower" };
                (format!("SIGKILL {role} {target}"), vec![target], none, Some(ProcessFault::Killed(target)))
            }
            FaultKind::Pause => {
                let target = leader_or_random(&mut self.rng);
                cluster.pause(target);
                let role = if Some(target) == leader { "leader" } else { "follower" };
                (format!("SIGSTOP {role} {target}"), vec![target], none, Some(ProcessFault::Paused(target)))
            }
            FaultKind::Skew | FaultKind::SkewBeyond => {
                let rates =
                    if kind == FaultKind::Skew { &self.config.skew_within } else { &self.config.skew_beyond };
                let rate = *rates.choose(&mut self.rng).unwrap_or(&1.0);
                // Slow: the leader; fast: a follower (see `inject`).
                let target = if rate < 1.0 {
                    leader_id
                } else {
                    *followers.choose(&mut self.rng).unwrap_or(&shuffled[0])
                };
                cluster.kill(target);
                cluster.start(target, rate)?;
                (
                    format!("node {target} restarted at clock rate x{rate}"),
                    vec![target],
                    none,
                    Some(ProcessFault::Skewed(target)),
                )
            }
            FaultKind::DiskFull => {
                let target = leader_or_random(&mut self.rng);
                let bytes = cluster.fill_disk(target)?;
                (
                    format!("data disk of node {target} filled ({} MiB written)", bytes >> 20),
                    vec![target],
                    none,
                    Some(ProcessFault::Filled(target)),
                )
            }
        })
    }

    async fn heal_process(
        &mut self,
        cluster: &mut Cluster,
        http: &reqwest::Client,
        fault: ProcessFault,
        records: &mut [FaultRecord],
    ) -> Result<(), ChaosError> {
        match fault {
            ProcessFault::Killed(id) => cluster.start(id, 1.0),
            ProcessFault::Paused(id) => {
                cluster.resume(id);
                Ok(())
            }
            ProcessFault::Skewed(id) => {
                cluster.kill(id);
                cluster.start(id, 1.0)
            }
            ProcessFault::Filled(id) => {
                // What the node said while its disk was full, before space returns.
                let before = statuses(cluster, http).await.into_iter().find(|(i, _)| *i == id);
                if let Some((_, status)) = &before {
                    if status.stopped {
                        for r in records.iter_mut() {
                            r.notes.push(format!(
                                "node {id} reported stopped (storage failed) while its disk was full"
                            ));
                        }
                    }
                }
                cluster.free_disk(id)?;
                self.restart_exited(cluster, Some(&mut *records))?;
                if before.is_some_and(|(_, s)| s.stopped) {
                    cluster.stop(id, Duration::from_secs(5)).await;
                    cluster.start(id, 1.0)?;
                    for r in records.iter_mut() {
                        r.notes.push(format!("node {id} restarted after space returned"));
                    }
                }
                Ok(())
            }
        }
    }

    /// Restarts nodes that exited by themselves (noted in `records`, or logged).
    fn restart_exited(
        &mut self,
        cluster: &mut Cluster,
        records: Option<&mut [FaultRecord]>,
    ) -> Result<(), ChaosError> {
        let exited = cluster.reap_exited();
        let mut notes = Vec::new();
        for (id, status) in exited {
            let tail = cluster.log_tail(id, 3).replace('\n', " | ");
            notes.push(format!("node {id} had exited ({status}), restarted: {tail}"));
            cluster.start(id, 1.0)?;
        }
        match records {
            Some(records) => {
                for r in records.iter_mut() {
                    r.notes.extend(notes.iter().cloned());
                }
            }
            None => {
                for note in notes {
                    tracing::warn!("{note}");
                }
            }
        }
        Ok(())
    }

    /// Restarts nodes whose replica stopped after a storage failure (the process lives on
    /// and answers `stopped`; it does not resume by itself when space returns).
    async fn restart_stopped(
        &mut self,
        cluster: &mut Cluster,
        http: &reqwest::Client,
    ) -> Result<(), ChaosError> {
        for (id, status) in statuses(cluster, http).await {
            if status.stopped {
                tracing::warn!("node {id} reports its replica stopped (storage failure): restarting it");
                if let Some(last) = self.faults.last_mut() {
                    last.notes.push(format!(
                        "node {id} found stopped (storage failure) before the next fault: restarted"
                    ));
                }
                cluster.stop(id, Duration::from_secs(5)).await;
                cluster.start(id, 1.0)?;
            }
        }
        Ok(())
    }

    /// Removes every fault: rules, pauses, skews, fillers; restarts stopped nodes.
    pub async fn heal_all(
        &mut self,
        cluster: &mut Cluster,
        http: &reqwest::Client,
    ) -> Result<(), ChaosError> {
        cluster.network().set_blocked(BTreeSet::new())?;
        for id in cluster.ids() {
            cluster.resume(id);
            cluster.free_disk(id)?;
            if (cluster.clock_rate(id) - 1.0).abs() > f64::EPSILON {
                cluster.kill(id);
            }
        }
        self.restart_exited(cluster, None)?;
        for id in cluster.ids() {
            cluster.start(id, 1.0)?;
        }
        // A node whose disk was full may have stopped after its fault was healed.
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.restart_stopped(cluster, http).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_between_groups_is_both_ways_and_only_across() {
        let cut = cut_between(&[1], &[2, 3]);
        assert_eq!(cut, BTreeSet::from([(1, 2), (2, 1), (1, 3), (3, 1)]));
    }

    #[test]
    fn the_chain_keeps_only_neighbours() {
        let cut = cut_all_but(&[1, 2, 3], &[(1, 2), (2, 3)]);
        assert_eq!(cut, BTreeSet::from([(1, 3), (3, 1)]));
    }

    #[test]
    fn quorum_loss_leaves_the_hub_linked_to_all() {
        let ids = [1, 2, 3, 4, 5];
        let kept: Vec<(NodeId, NodeId)> = ids.iter().map(|&x| (3, x)).collect();
        let cut = cut_all_but(&ids, &kept);
        assert!(cut.iter().all(|&(a, b)| a != 3 && b != 3));
        assert_eq!(cut.len(), 4 * 3);
    }
}
