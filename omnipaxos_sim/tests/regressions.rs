//! Every seed that ever failed, replayed with its node count.
//!
//! A seed reproduces its run only as long as the core behaves the same: any change to the core
//! changes the schedule, and the seed may no longer reach the state that exposed the bug. So
//! each core bug is also reduced to a scripted schedule in `tests/core_bugs.rs` (ignored until
//! fixed); here the seeds must simply pass. A seed that fails here again is a regression, or
//! one of those open bugs reached another way: replay it with its trace,
//! `cargo run --release -p omnipaxos_sim -- --seed S --nodes N --classic-faults`.

use omnipaxos_sim::{runner, sim::SimConfig};

/// The seeds were found under the fault model from before issue 8, which only the classic
/// faults reproduce (the extended faults draw more random numbers, so every schedule changes).
fn assert_passes(runs: &[(u64, usize)]) {
    for &(seed, nodes) in runs {
        let mut config = SimConfig::new(seed, nodes);
        config.extended_faults = false;
        let report = runner::run_one(config);
        assert_eq!(report.violation, None, "seed {seed} N={nodes}");
    }
}

/// The simulator's own bug: a snapshot of a later configuration's log was applied to an empty
/// state machine instead of the state that configuration started from
/// (`applied_state_machines_agree`). Fixed in `KvState::with_snapshot`.
#[test]
fn snapshots_of_later_configurations_apply_on_their_initial_state() {
    assert_passes(&[(9, 5), (19, 5), (67, 5), (129, 5), (163, 5)]);
}

/// Core bug 1 (`tests/core_bugs.rs`, a replica with a promise above the leader's ballot is not
/// resynchronised): `replicas_converge_after_healing` with the core before commit bff164d.
#[test]
fn replica_with_a_higher_promise_before_bff164d() {
    assert_passes(&[(268, 5), (924, 5), (1175, 5), (1596, 5), (2500, 5), (1488, 3)]);
}

/// Core bug 1 at commit bff164d (and bug 2 for seed 3227: `new_operations_complete_after_healing`).
#[test]
fn replica_with_a_higher_promise_at_bff164d() {
    assert_passes(&[
        (3227, 3),
        (3637, 3),
        (3667, 3),
        (5884, 3),
        (6519, 3),
        (6808, 3),
        (3250, 5),
        (3797, 5),
        (5987, 5),
    ]);
}

/// Core bug 1 at commit 0e6a858 (the 10,000-seed soak in docs/simulator.md).
#[test]
fn replica_with_a_higher_promise_at_0e6a858() {
    assert_passes(&[
        (577, 3),
        (1628, 3),
        (1948, 3),
        (5639, 3),
        (6123, 3),
        (8810, 3),
        (1554, 5),
        (8953, 5),
        (9312, 5),
    ]);
}

/// Core bug 1 at commit 1d36117 (the 10,000-seed soak in docs/simulator.md): these still fail.
#[test]
fn replica_with_a_higher_promise_at_1d36117() {
    assert_passes(&[
        (2490, 3),
        (2696, 3),
        (4391, 3),
        (4989, 3),
        (5926, 3),
        (3784, 5),
        (5914, 5),
        (6167, 5),
        (9598, 5),
    ]);
}
