//! The story, one function per step. Each step prints what happened and checks what it
//! promises; the first broken promise ends the demo with a [`DemoError`].

use std::collections::BTreeMap;

use omnipaxos_core::{
    sequence_paxos::ProposalOutcome,
    util::{NodeId, ProposalId},
};

use crate::{
    cluster::{Cluster, CONFIGURATION_ID, HB_DELAY_TICKS, RESEND_MESSAGE_TICKS},
    error::DemoError,
    kv::{apply, show_log, show_map, KeyValue, KvMap},
};

/// The replicas of the demo.
pub const PIDS: [NodeId; 3] = [1, 2, 3];
/// Most ticks an election may take before the demo gives up.
const ELECTION_TICKS_MAX: u64 = 200;
/// Most ticks deciding proposals or catching up may take before the demo gives up.
const PROGRESS_TICKS_MAX: u64 = 200;

/// What the demo observed, for the summary and for tests.
#[derive(Debug)]
pub struct Report {
    /// Every replica's key-value map at the end.
    pub maps: BTreeMap<NodeId, KvMap>,
    pub first_election_ticks: u64,
    pub reelection_ticks: u64,
    pub catch_up_ticks: u64,
    pub total_ticks: u64,
}

/// A proposal the demo made and waits for.
struct Pending {
    id: ProposalId,
    at: NodeId,
    entry: KeyValue,
}

struct Demo<'a> {
    cluster: Cluster,
    say: &'a mut dyn FnMut(&str),
}

/// Runs the whole story, printing each line through `say`.
pub fn run(say: &mut dyn FnMut(&str)) -> Result<Report, DemoError> {
    let mut demo = Demo { cluster: Cluster::new(&PIDS)?, say };
    demo.introduce();
    let first_election_ticks = demo.elect_first_leader()?;
    let leader = demo.write_at_follower_and_leader()?;
    let reelection_ticks = demo.crash_leader(leader)?;
    demo.write_while_down(leader)?;
    let catch_up_ticks = demo.restart(leader)?;
    demo.write_at_restarted(leader)?;
    let maps = demo.check_final_maps()?;
    let report = Report {
        maps,
        first_election_ticks,
        reelection_ticks,
        catch_up_ticks,
        total_ticks: demo.cluster.now(),
    };
    demo.summarize(&report);
    Ok(report)
}

impl Demo<'_> {
    fn say(&mut self, line: impl AsRef<str>) {
        (self.say)(line.as_ref());
    }

    /// A line that starts with the current tick.
    fn at_tick(&mut self, text: impl AsRef<str>) {
        let line = format!("tick {}: {}", self.cluster.now(), text.as_ref());
        self.say(line);
    }

    fn introduce(&mut self) {
        self.say("kv_store: the tutorial's replicated key-value store, three replicas in one process");
        self.say(format!(
            "  configuration {CONFIGURATION_ID}, replicas {PIDS:?}, heartbeat round {HB_DELAY_TICKS} ticks, \
             resend after {RESEND_MESSAGE_TICKS} ticks"
        ));
        self.say(
            "  each replica: OmniPaxos<KeyValue, (), CrashableStorage> (unflushed writes die in a crash)",
        );
        self.say("  network: one FIFO queue, delivered within the tick; time is ticks, nothing else");
    }

    /// Step 1: ticks until every replica follows one leader that is ready.
    fn elect_first_leader(&mut self) -> Result<u64, DemoError> {
        self.say("\n== 1. Elect a leader ==");
        self.at_tick(format!("replicas {:?} start with empty disks; nobody leads", self.cluster.live_pids()));
        let ticks =
            self.cluster.run_until("a first leader", ELECTION_TICKS_MAX, |c| c.agreed_leader().is_some())?;
        self.report_leader(ticks, "from start");
        Ok(ticks)
    }

    fn current_leader(&self) -> NodeId {
        self.cluster.agreed_leader().expect("the caller waited for an agreed leader")
    }

    fn report_leader(&mut self, ticks: u64, since: &str) {
        let leader = self.current_leader();
        let ballot = self.cluster.replica(leader).get_promise();
        let followers: Vec<NodeId> = self.cluster.live_pids().into_iter().filter(|p| *p != leader).collect();
        self.at_tick(format!(
            "replica {leader} is leader (ballot {ballot}), followed by {followers:?}; {} {since}",
            plural(ticks, "tick")
        ));
    }

    /// Step 2: a=1 at a follower (forwarded to the leader) and b=2 at the leader.
    fn write_at_follower_and_leader(&mut self) -> Result<NodeId, DemoError> {
        let leader = self.current_leader();
        let follower = self.cluster.live_pids().into_iter().find(|p| *p != leader).expect("three replicas");
        self.say(format!("\n== 2. Write a=1 at follower {follower} and b=2 at leader {leader} =="));
        let a = self.append(follower, KeyValue::new("a", 1), "a follower: it forwards to the leader")?;
        let b = self.append(leader, KeyValue::new("b", 2), "the leader")?;
        self.wait_decided(&[a, b])?;
        self.show_replicas()?;
        Ok(leader)
    }

    /// Step 3: the leader crashes; the other two elect a new one.
    fn crash_leader(&mut self, leader: NodeId) -> Result<u64, DemoError> {
        self.say(format!("\n== 3. Crash leader {leader} =="));
        let crash = self.cluster.crash(leader);
        self.at_tick(format!(
            "replica {leader} crashes: {} unflushed storage writes and {} in-flight messages are lost; \
             it no longer ticks, sends or receives",
            crash.unflushed_writes_lost, crash.messages_lost
        ));
        let ticks =
            self.cluster.run_until("a new leader", ELECTION_TICKS_MAX, |c| c.agreed_leader().is_some())?;
        self.report_leader(ticks, "after the crash");
        Ok(ticks)
    }

    /// Step 4: c=3 at a surviving replica while the old leader is down.
    fn write_while_down(&mut self, crashed: NodeId) -> Result<(), DemoError> {
        let survivor = self.cluster.live_pids()[0];
        self.say(format!("\n== 4. Write c=3 at replica {survivor} while replica {crashed} is down =="));
        let c = self.append(survivor, KeyValue::new("c", 3), "a survivor")?;
        self.wait_decided(&[c])?;
        self.show_replicas()
    }

    /// Step 5: the crashed replica restarts from its disk, keeps its promise and catches up.
    fn restart(&mut self, pid: NodeId) -> Result<u64, DemoError> {
        self.say(format!("\n== 5. Restart replica {pid} from its disk =="));
        let durable_promise = self.cluster.durable_promise(pid)?;
        let lost = self.cluster.messages_lost_to(pid);
        self.at_tick(format!(
            "while replica {pid} was down, {} sent to it were lost",
            plural(lost, "message")
        ));
        self.cluster.restart(pid)?;
        let (promise, decided) = (self.cluster.replica(pid).get_promise(), self.cluster.decided_log(pid)?);
        self.at_tick(format!(
            "replica {pid} restarts with OmniPaxos::with(config, disk): promise {promise}, decided {}",
            show_log(&decided)
        ));
        if promise != durable_promise {
            return Err(DemoError::PromiseChanged { pid, before: durable_promise, after: promise });
        }
        self.check_prefix_of_others(pid, &decided)?;
        let leader = self.current_leader_of_others(pid);
        let ballot = self.cluster.replica(leader).get_promise();
        self.at_tick(format!(
            "replica {pid} keeps its durable promise {promise} (the others moved on to {ballot}) and recovers"
        ));
        let ticks = self.cluster.run_until("the restarted replica to catch up", PROGRESS_TICKS_MAX, |c| {
            c.agreed_leader().is_some() && c.decided_everywhere()
        })?;
        let leader = self.current_leader();
        self.at_tick(format!(
            "replica {pid} caught up in {} and follows replica {leader}",
            plural(ticks, "tick")
        ));
        self.show_replicas()?;
        Ok(ticks)
    }

    /// What a restarted replica reads as decided must be decided, in the same order, by the
    /// replicas that never crashed: recovery loses no decided entry and invents none.
    fn check_prefix_of_others(&self, pid: NodeId, decided: &[KeyValue]) -> Result<(), DemoError> {
        let reference = self.cluster.live_pids().into_iter().find(|p| *p != pid).expect("three replicas");
        let expected = self.cluster.decided_log(reference)?;
        if !expected.starts_with(decided) {
            return Err(DemoError::Diverged { pid, log: decided.to_vec(), reference, expected });
        }
        Ok(())
    }

    /// The leader the replicas other than `pid` follow (they agreed on one before `pid` restarted).
    fn current_leader_of_others(&self, pid: NodeId) -> NodeId {
        let other = self.cluster.live_pids().into_iter().find(|p| *p != pid).expect("three replicas");
        let (leader, _) = self.cluster.replica(other).get_current_leader().expect("a leader was elected");
        leader
    }

    /// Step 6: d=4 at the restarted replica.
    fn write_at_restarted(&mut self, pid: NodeId) -> Result<(), DemoError> {
        self.say(format!("\n== 6. Write d=4 at the restarted replica {pid} =="));
        let d = self.append(pid, KeyValue::new("d", 4), "the restarted replica")?;
        self.wait_decided(&[d])?;
        self.show_replicas()
    }

    fn append(&mut self, at: NodeId, entry: KeyValue, role: &str) -> Result<Pending, DemoError> {
        let id = self.cluster.append(at, entry.clone())?;
        self.at_tick(format!("replica {at} ({role}) appends {entry}: proposal {id}"));
        Ok(Pending { id, at, entry })
    }

    /// Runs until every proposal in `pending` settled and every replica decided as much as
    /// the others, then says where each proposal was decided.
    fn wait_decided(&mut self, pending: &[Pending]) -> Result<(), DemoError> {
        let ids: Vec<ProposalId> = pending.iter().map(|p| p.id).collect();
        self.cluster.run_until("the proposals to be decided everywhere", PROGRESS_TICKS_MAX, |c| {
            ids.iter().all(|id| c.outcome(*id).is_some()) && c.decided_everywhere()
        })?;
        for p in pending {
            let (outcome, tick) = self.cluster.outcome(p.id).expect("waited for every outcome");
            match outcome {
                ProposalOutcome::Decided(idx) => self.say(format!(
                    "tick {tick}: proposal {} ({}, appended at replica {}) decided at log index {idx}",
                    p.id, p.entry, p.at
                )),
                ProposalOutcome::Dropped(reason) => {
                    return Err(DemoError::Dropped { id: p.id, entry: p.entry.clone(), reason })
                }
            }
        }
        Ok(())
    }

    /// Prints every live replica's decided log and map, and checks they are all the same.
    fn show_replicas(&mut self) -> Result<(), DemoError> {
        let pids = self.cluster.live_pids();
        let reference = pids[0];
        let expected = self.cluster.decided_log(reference)?;
        for pid in pids {
            let log = self.cluster.decided_log(pid)?;
            self.say(format!(
                "  replica {pid}: decided {} -> map {}",
                show_log(&log),
                show_map(&apply(&log))
            ));
            if log != expected {
                return Err(DemoError::Diverged { pid, log, reference, expected });
            }
        }
        Ok(())
    }

    /// Every replica must end with the map of the four writes.
    fn check_final_maps(&mut self) -> Result<BTreeMap<NodeId, KvMap>, DemoError> {
        let mut maps = BTreeMap::new();
        for pid in self.cluster.live_pids() {
            maps.insert(pid, apply(&self.cluster.decided_log(pid)?));
        }
        check_maps(&maps, &expected_final_map())?;
        Ok(maps)
    }

    fn summarize(&mut self, report: &Report) {
        let map = report.maps.values().next().map(show_map).unwrap_or_default();
        self.say(format!(
            "\nOK: all {} replicas hold {map} after {} (first election {}, re-election {} after the crash, \
             restarted replica caught up in {})",
            report.maps.len(),
            plural(report.total_ticks, "tick"),
            plural(report.first_election_ticks, "tick"),
            plural(report.reelection_ticks, "tick"),
            plural(report.catch_up_ticks, "tick")
        ));
    }
}

/// `1 tick`, `2 ticks`.
fn plural(count: u64, noun: &str) -> String {
    if count == 1 {
        format!("{count} {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// The map the four writes a=1, b=2, c=3, d=4 build.
pub fn expected_final_map() -> KvMap {
    [("a", 1), ("b", 2), ("c", 3), ("d", 4)].into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Checks that every replica in `PIDS` has exactly `expected`.
pub fn check_maps(maps: &BTreeMap<NodeId, KvMap>, expected: &KvMap) -> Result<(), DemoError> {
    for pid in PIDS {
        let found = maps.get(&pid).cloned().unwrap_or_default();
        if &found != expected {
            return Err(DemoError::WrongFinalMap { pid, found, expected: expected.clone() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the demo, returning its report and the lines it printed.
    fn run_collecting() -> (Report, Vec<String>) {
        let mut lines = Vec::new();
        let report = run(&mut |line| lines.push(line.to_string())).expect("the demo succeeds");
        (report, lines)
    }

    #[test]
    fn every_replica_ends_with_the_same_map_of_all_four_writes() {
        let (report, lines) = run_collecting();
        assert_eq!(report.maps.keys().copied().collect::<Vec<_>>(), PIDS.to_vec());
        for (pid, map) in &report.maps {
            assert_eq!(map, &expected_final_map(), "replica {pid}");
        }
        assert!(report.first_election_ticks > 0, "an election needs at least one heartbeat round");
        assert!(report.reelection_ticks > 0);
        assert!(report.total_ticks >= report.first_election_ticks + report.reelection_ticks);
        let story = lines.join("\n");
        for expected in
            ["is leader (ballot", "crashes:", "keeps its durable promise", "caught up", "OK: all 3"]
        {
            assert!(story.contains(expected), "the story lacks {expected:?}:\n{story}");
        }
        assert_eq!(story.matches("decided at log index").count(), 4, "{story}");
    }

    #[test]
    fn every_run_tells_the_same_story() {
        let (first_report, first) = run_collecting();
        let (second_report, second) = run_collecting();
        assert_eq!(first, second);
        assert_eq!(first_report.total_ticks, second_report.total_ticks);
    }

    #[test]
    fn check_maps_rejects_a_replica_that_differs_or_is_missing() {
        let good: BTreeMap<NodeId, KvMap> = PIDS.iter().map(|&pid| (pid, expected_final_map())).collect();
        check_maps(&good, &expected_final_map()).expect("identical maps pass");

        let mut stale = good.clone();
        stale.get_mut(&2).expect("replica 2").remove("d");
        let error = check_maps(&stale, &expected_final_map()).expect_err("a missing write fails");
        assert!(matches!(error, DemoError::WrongFinalMap { pid: 2, .. }), "{error}");

        let mut missing = good;
        missing.remove(&3);
        let error = check_maps(&missing, &expected_final_map()).expect_err("a missing replica fails");
        assert!(matches!(error, DemoError::WrongFinalMap { pid: 3, .. }), "{error}");
    }
}
