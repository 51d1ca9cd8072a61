//! Seeded random schedules: reordering, loss, duplication, partitions, crashes that lose
//! unflushed writes, and leader changes. After every step the decided logs must agree and every
//! replica's invariants must hold; at the end, after healing, every proposal whose proposer did
//! not crash must be decided exactly once.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::Cluster;
use omnipaxos_storage::crash_storage::CrashKeep;
use rand::{rngs::SmallRng, Rng, SeedableRng};

const STEPS: usize = 400;

fn run_seed(seed: u64, pids: &[u64]) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut cluster = Cluster::<()>::new(pids);
    // value -> (proposer, proposer's crash count when proposed)
    let mut proposed: BTreeMap<u64, (u64, u32)> = BTreeMap::new();
    let mut crashes: BTreeMap<u64, u32> = pids.iter().map(|&p| (p, 0)).collect();
    let mut next_value = 1;
    for _ in 0..STEPS {
        cluster.collect();
        let in_flight = cluster.in_flight();
        match rng.gen_range(0..100) {
            0..=34 if in_flight > 0 => cluster.deliver_at(rng.gen_range(0..in_flight.min(4))),
            35..=41 if in_flight > 0 => cluster.deliver_at(rng.gen_range(0..in_flight)),
            42..=46 if in_flight > 0 => cluster.lose_at(rng.gen_range(0..in_flight)),
            47..=49 if in_flight > 0 => cluster.delay_copy_at(rng.gen_range(0..in_flight)),
            50..=52 if in_flight > 0 => cluster.duplicate_at(rng.gen_range(0..in_flight)),
            53..=69 => {
                let pid = pids[rng.gen_range(0..pids.len())];
                if cluster.is_up(pid) {
                    cluster.append(pid, next_value);
                    proposed.insert(next_value, (pid, crashes[&pid]));
                    next_value += 1;
                }
            }
            70..=79 => cluster.tick_once(),
            80..=83 => {
                let pid = pids[rng.gen_range(0..pids.len())];
                if cluster.is_up(pid) {
                    cluster.elect_without_delivery(pid);
                }
            }
            84..=87 => {
                let (a, b) = (pids[rng.gen_range(0..pids.len())], pids[rng.gen_range(0..pids.len())]);
                if a != b {
                    cluster.disconnect(a, b);
                }
            }
            88..=91 => cluster.heal(),
            92..=95 => {
                let pid = pids[rng.gen_range(0..pids.len())];
                let up = pids.iter().filter(|p| cluster.is_up(**p)).count();
                if cluster.is_up(pid) && up == pids.len() {
                    let keep = match rng.gen_range(0..3) {
                        0 => CrashKeep::Nothing,
                        1 => CrashKeep::All,
                        _ => CrashKeep::Prefix(
                            rng.gen_range(0..=cluster.replica(pid).storage().unflushed_calls()),
                        ),
                    };
                    cluster.crash(pid, keep);
                    *crashes.get_mut(&pid).unwrap() += 1;
                }
            }
            96..=99 => {
                let down: Vec<u64> = pids.iter().copied().filter(|p| !cluster.is_up(*p)).collect();
                if let Some(&pid) = down.first() {
                    cluster.restart(pid);
                }
            }
            _ => {}
        }
        cluster.check_safety();
    }
    // Liveness: heal, restart everyone, elect a leader, and let time pass.
    cluster.heal();
    for &pid in pids {
        if !cluster.is_up(pid) {
            cluster.restart(pid);
        }
    }
    cluster.elect(pids[0]);
    cluster.tick(100);
    let log = cluster.decided(pids[0]);
    if let Ok(path) = std::env::var("FUZZ_TRACE") {
        std::fs::write(path, cluster.trace.join("\n")).expect("write trace");
    }
    let decided: BTreeSet<u64> = log.iter().copied().collect();
    assert_eq!(decided.len(), log.len(), "seed {seed}: a value decided twice: {log:?}");
    for &pid in pids {
        assert_eq!(cluster.decided(pid), log, "seed {seed}: replica {pid} did not converge");
    }
    for (value, (proposer, crash_count)) in &proposed {
        let proposer_survived = crashes[proposer] == *crash_count;
        if proposer_survived {
            assert!(
                decided.contains(value),
                "seed {seed}: value {value} proposed at {proposer} (never crashed since) was lost\n{}",
                cluster.trace_tail(80)
            );
        }
    }
    for value in &decided {
        assert!(proposed.contains_key(value), "seed {seed}: decided {value} was never proposed");
    }
}

/// The seeds to run: `FUZZ_SEED=n` runs one seed (and `FUZZ_TRACE=file` writes its trace);
/// `FUZZ_SEEDS=n` runs n seeds.
fn seeds(range: std::ops::Range<u64>) -> Vec<u64> {
    if let Ok(count) = std::env::var("FUZZ_SEEDS") {
        // A longer soak: `FUZZ_SEEDS=100000` runs that many seeds from the range's start.
        let count: u64 = count.parse().expect("FUZZ_SEEDS is a number");
        return (range.start..range.start + count).collect();
    }
    match std::env::var("FUZZ_SEED") {
        Ok(seed) => vec![seed.parse().expect("FUZZ_SEED is a number")]
            .into_iter()
            .filter(|s| range.contains(s))
            .collect(),
        Err(_) => range.collect(),
    }
}

#[test]
fn random_schedules_three_replicas() {
    for seed in seeds(0..300) {
        run_seed(seed, &[1, 2, 3]);
    }
}

#[test]
fn random_schedules_five_replicas() {
    for seed in seeds(1000..1150) {
        run_seed(seed, &[1, 2, 3, 4, 5]);
    }
}
