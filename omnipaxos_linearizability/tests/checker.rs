//! The linearizability checker on hand-made histories: it must accept the legal ones and reject
//! stale reads, lost writes, reads of values never written, and effects of failed operations.

use omnipaxos_linearizability::{check, HistoryOp, Op, OpResult, Outcome, Value, Verdict};

/// An operation of `client` called at `call` and returning `result` at `at`.
fn ok(client: u32, op: Op, call: u64, at: u64, result: OpResult) -> HistoryOp {
    HistoryOp { client, op, call, outcome: Outcome::Ok { result, at } }
}

fn timed_out(client: u32, op: Op, call: u64) -> HistoryOp {
    HistoryOp { client, op, call, outcome: Outcome::Indeterminate }
}

fn failed(client: u32, op: Op, call: u64) -> HistoryOp {
    HistoryOp { client, op, call, outcome: Outcome::Failed }
}

fn put(value: Value) -> Op {
    Op::Put { key: 1, value }
}

const GET: Op = Op::Get { key: 1 };

fn read(value: Option<Value>) -> OpResult {
    OpResult::Read(value)
}

fn assert_linearizable(history: &[HistoryOp]) {
    assert_eq!(check(history), Verdict::Linearizable, "{history:#?}");
}

fn assert_rejected(history: &[HistoryOp]) {
    match check(history) {
        Verdict::NotLinearizable(counterexample) => assert_eq!(counterexample.key, 1),
        other => panic!("expected a rejection, got {other:?} for {history:#?}"),
    }
}

#[test]
fn sequential_history_is_linearizable() {
    assert_linearizable(&[
        ok(0, GET, 1, 2, read(None)),
        ok(0, put(10), 3, 4, OpResult::Done),
        ok(1, GET, 5, 6, read(Some(10))),
        ok(1, Op::Cas { key: 1, expected: Some(10), new: 11 }, 7, 8, OpResult::Swapped(true)),
        ok(0, Op::Cas { key: 1, expected: Some(10), new: 12 }, 9, 10, OpResult::Swapped(false)),
        ok(0, Op::Delete { key: 1 }, 11, 12, OpResult::Done),
        ok(1, GET, 13, 14, read(None)),
    ]);
}

#[test]
fn concurrent_operations_may_take_effect_in_either_order() {
    // Both reads overlap both writes: any order of the writes explains them.
    assert_linearizable(&[
        ok(0, put(1), 1, 10, OpResult::Done),
        ok(1, put(2), 2, 11, OpResult::Done),
        ok(2, GET, 3, 12, read(Some(2))),
        ok(3, GET, 4, 13, read(Some(1))),
    ]);
}

#[test]
fn stale_read_is_rejected() {
    // put(2) completed before the read started, yet the read saw the older value.
    assert_rejected(&[
        ok(0, put(1), 1, 2, OpResult::Done),
        ok(0, put(2), 3, 4, OpResult::Done),
        ok(1, GET, 5, 6, read(Some(1))),
    ]);
}

#[test]
fn lost_write_is_rejected() {
    // An acknowledged write vanished: a later read sees the state before it.
    assert_rejected(&[ok(0, put(7), 1, 2, OpResult::Done), ok(1, GET, 3, 4, read(None))]);
}

#[test]
fn read_of_a_value_never_written_is_rejected() {
    assert_rejected(&[ok(0, put(7), 1, 2, OpResult::Done), ok(1, GET, 3, 4, read(Some(99)))]);
}

#[test]
fn effect_of_a_failed_operation_is_rejected() {
    // A refused operation was definitely not executed, so nobody may read its value.
    assert_rejected(&[failed(0, put(5), 1), ok(1, GET, 3, 4, read(Some(5)))]);
}

#[test]
fn indeterminate_write_may_or_may_not_take_effect() {
    assert_linearizable(&[timed_out(0, put(5), 1), ok(1, GET, 3, 4, read(Some(5)))]);
    assert_linearizable(&[timed_out(0, put(5), 1), ok(1, GET, 3, 4, read(None))]);
    // Even long after the timeout: it may take effect at any time after its call.
    assert_linearizable(&[
        timed_out(0, put(5), 1),
        ok(1, GET, 3, 4, read(None)),
        ok(1, GET, 50, 51, read(Some(5))),
    ]);
}

#[test]
fn indeterminate_write_cannot_take_effect_before_its_call() {
    assert_rejected(&[ok(1, GET, 1, 2, read(Some(5))), timed_out(0, put(5), 3)]);
}

#[test]
fn indeterminate_write_takes_effect_at_most_once() {
    // Once 5 was overwritten by 6, seeing 5 again would need the put(5) twice.
    assert_rejected(&[
        timed_out(0, put(5), 1),
        ok(1, GET, 3, 4, read(Some(5))),
        ok(1, put(6), 5, 6, OpResult::Done),
        ok(1, GET, 7, 8, read(Some(5))),
    ]);
}

#[test]
fn compare_and_swap_results_must_match_the_state() {
    let cas = Op::Cas { key: 1, expected: Some(1), new: 2 };
    assert_rejected(&[ok(0, put(1), 1, 2, OpResult::Done), ok(0, cas, 3, 4, OpResult::Swapped(false))]);
    assert_linearizable(&[ok(0, put(1), 1, 2, OpResult::Done), ok(0, cas, 3, 4, OpResult::Swapped(true))]);
    // An indeterminate compare-and-swap may have swapped.
    assert_linearizable(&[
        ok(0, put(1), 1, 2, OpResult::Done),
        timed_out(0, cas, 3),
        ok(1, GET, 10, 11, read(Some(2))),
    ]);
}

#[test]
fn keys_are_checked_independently() {
    let other_key_write = ok(2, Op::Put { key: 2, value: 9 }, 1, 2, OpResult::Done);
    let stale = [
        ok(0, put(1), 1, 2, OpResult::Done),
        ok(0, put(2), 3, 4, OpResult::Done),
        ok(1, GET, 5, 6, read(Some(1))),
    ];
    let mut history = vec![other_key_write];
    history.extend(stale);
    assert_rejected(&history);
}

/// Many concurrent clients with timeouts: the memoized search stays fast and finds the order.
#[test]
fn long_concurrent_history_is_checked_quickly() {
    let mut history = Vec::new();
    let mut time = 0;
    let mut last = None;
    for round in 0..200u64 {
        let value = round + 1;
        // Five overlapping operations per round: a write, two reads of the old or new value, and
        // two writes that time out and never show up.
        let start = time + 1;
        history.push(ok(0, put(value), start, start + 5, OpResult::Done));
        history.push(ok(1, GET, start + 1, start + 6, read(last)));
        history.push(ok(2, GET, start + 2, start + 7, read(Some(value))));
        history.push(timed_out(3, put(10_000 + value), start + 3));
        history.push(timed_out(4, put(20_000 + value), start + 4));
        last = Some(value);
        time = start + 8;
    }
    assert_linearizable(&history);
}

/// A read of a value a completed write had overwritten before the read was called is found
/// without a search (and named as such); an overwrite that overlaps the read, or whose own
/// write is only indeterminate, is no proof and is left to the search, which accepts it.
#[test]
fn a_stale_read_is_named_without_a_search_and_only_when_it_is_certain() {
    let stale = [
        ok(0, put(10), 1, 2, OpResult::Done),
        ok(1, put(11), 3, 4, OpResult::Done),
        ok(2, GET, 5, 6, read(Some(10))),
    ];
    match check(&stale) {
        Verdict::NotLinearizable(counterexample) => {
            let found = counterexample.stale.expect("named as a stale read");
            assert_eq!((found.read, found.write, found.overwrite), (2, 0, 1));
            assert!(counterexample.to_string().contains("stale read c2 get k1"), "{counterexample}");
        }
        other => panic!("expected a stale read, got {other:?}"),
    }
    // The overwrite returns after the read was called: the read may come first.
    assert_linearizable(&[
        ok(0, put(10), 1, 2, OpResult::Done),
        ok(1, put(11), 3, 6, OpResult::Done),
        ok(2, GET, 5, 7, read(Some(10))),
    ]);
    // The write of the value read is indeterminate: it may take effect after the overwrite.
    assert_linearizable(&[
        timed_out(0, put(10), 1),
        ok(1, put(11), 3, 4, OpResult::Done),
        ok(2, GET, 5, 6, read(Some(10))),
    ]);
}
