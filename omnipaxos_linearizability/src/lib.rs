//! A Wing–Gong–Lowe linearizability checker for key-value histories, partitioned per key,
//! shared by the deterministic simulator (`omnipaxos_sim`, times are event counters) and the
//! fault harness of real processes (`omnipaxos_chaos`, times are nanoseconds since the run
//! began, made unique).
//!
//! ```text
//!   history ──► split by key ──► per key: call/return events in time order (a linked list)
//!                                   └─► depth-first search: linearize a pending call whose
//!                                       model step fits, or backtrack at the first return of a
//!                                       call not yet linearized; memoize (linearized set, state)
//! ```
//!
//! Operations on different keys commute, so a history is linearizable iff each key's
//! sub-history is (P-compositionality, as in Porcupine). Lowe's memoization of
//! (set of linearized operations, model state) keeps the search polynomial on the histories
//! a simulator produces.
//!
//! Indeterminate operations (the client timed out: it may or may not have happened) have no
//! return event. The search may linearize one anywhere after its call, or never: it succeeds
//! once every *completed* operation is linearized. A failed operation (definitely not executed)
//! is left out, and so is an indeterminate read (it constrains nothing).

use std::collections::{BTreeMap, HashSet};

pub mod model;

pub use model::{show, step, ClientId, Key, Op, OpResult, Value};

/// When an operation was called and how it ended. Times are run-wide and unique: no two events
/// share a time.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HistoryOp {
    /// The client that called it.
    pub client: ClientId,
    /// The operation.
    pub op: Op,
    /// When the client sent it.
    pub call: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// How an operation ended, as its client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    /// Completed with this result at this time.
    Ok { result: OpResult, at: u64 },
    /// Definitely not executed (the replica refused it, or its log was sealed first).
    Failed,
    /// Timed out: it may or may not have taken effect, at any time after its call.
    Indeterminate,
}

/// Why a history is not linearizable: the key whose sub-history is not, and that sub-history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotLinearizable {
    /// The key.
    pub key: Key,
    /// The key's operations (failed ones and indeterminate reads left out), by call time.
    pub ops: Vec<HistoryOp>,
    /// Where the search got furthest: the completed operation (an index into `ops`) that no
    /// linearization of the operations before it could place, the usual culprit (a stale read).
    pub stuck_at: Option<usize>,
    /// A stale read found without a search, if that is how it was found.
    pub stale: Option<StaleRead>,
}

/// A read of a value that a completed operation had overwritten before the read was called:
/// values are unique, so it can never be current again. Indices into [`NotLinearizable::ops`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaleRead {
    /// The read.
    pub read: usize,
    /// The completed write of the value it read.
    pub write: usize,
    /// A completed operation that changed the value after the write returned and before the
    /// read was called.
    pub overwrite: usize,
}

/// A stale read in one key's operations (sorted by call time), if there is one: the cheap
/// check the search would take long to reach on a badly broken history. Sound: the write
/// returned before the overwrite was called, which returned before the read was called, so
/// every linearization orders them so, and the overwritten value (unique) cannot come back.
fn stale_read(ops: &[HistoryOp]) -> Option<StaleRead> {
    let returned = |op: &HistoryOp| match op.outcome {
        Outcome::Ok { at, .. } => Some(at),
        _ => None,
    };
    let changes = |op: &HistoryOp| match (op.op, op.outcome) {
        (Op::Put { .. } | Op::Delete { .. }, Outcome::Ok { .. }) => true,
        (Op::Cas { .. }, Outcome::Ok { result: OpResult::Swapped(swapped), .. }) => swapped,
        _ => false,
    };
    let written = |op: &HistoryOp| match (op.op, op.outcome) {
        (Op::Put { value, .. }, Outcome::Ok { .. }) => Some(value),
        (Op::Cas { new, .. }, Outcome::Ok { result: OpResult::Swapped(true), .. }) => Some(new),
        _ => None,
    };
    let writers: BTreeMap<Value, usize> =
        ops.iter().enumerate().filter_map(|(i, op)| written(op).map(|v| (v, i))).collect();
    for (read, op) in ops.iter().enumerate() {
        let Outcome::Ok { result: OpResult::Read(Some(value)), .. } = op.outcome else { continue };
        let Some(&write) = writers.get(&value) else { continue };
        let write_returned = returned(&ops[write]).expect("a completed write");
        let overwrite = ops.iter().position(|x| {
            changes(x) && x.call > write_returned && returned(x).is_some_and(|at| at < op.call)
        });
        if let Some(overwrite) = overwrite {
            return Some(StaleRead { read, write, overwrite });
        }
    }
    None
}

/// Operations shown before and after the one the search got stuck at.
const CONTEXT_OPS: usize = 12;

impl std::fmt::Display for NotLinearizable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(StaleRead { read, write, overwrite }) = self.stale {
            let show = |i: usize| {
                let op = &self.ops[i];
                let end = match op.outcome {
                    Outcome::Ok { result, at } => format!("{result} at {at}"),
                    _ => "?".into(),
                };
                format!("c{} {} (called at {}, {end})", op.client, op.op, op.call,)
            };
            writeln!(
                f,
                "key k{}: stale read {} — {} had overwritten the value written by {} before the read was called",
                self.key,
                show(read),
                show(overwrite),
                show(write)
            )?;
        }
        let shown = match self.stuck_at {
            Some(stuck) => {
                let op = &self.ops[stuck];
                writeln!(
                    f,
                    "key k{} has no linearization; the search got furthest up to c{} {} called at {} \
                     (marked >>); operations around it:",
                    self.key, op.client, op.op, op.call
                )?;
                stuck.saturating_sub(CONTEXT_OPS)..(stuck + CONTEXT_OPS).min(self.ops.len())
            }
            None => {
                writeln!(f, "key k{} has no linearization; its operations:", self.key)?;
                0..self.ops.len()
            }
        };
        for (i, op) in self.ops.iter().enumerate().filter(|(i, _)| shown.contains(i)) {
            let mark = if Some(i) == self.stuck_at { ">>" } else { "  " };
            let end = match op.outcome {
                Outcome::Ok { result, at } => format!("{result} at {at}"),
                Outcome::Failed => "failed".into(),
                Outcome::Indeterminate => "indeterminate".into(),
            };
            writeln!(f, "{mark}c{} {} called at {} -> {}", op.client, op.op, op.call, end)?;
        }
        Ok(())
    }
}

/// What the check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's sub-history is linearizable.
    Linearizable,
    /// This key's is not.
    NotLinearizable(NotLinearizable),
    /// The search on this key gave up after `SEARCH_STEPS_MAX` steps: no verdict.
    Inconclusive(Key),
}

/// Limit on search steps per key; the simulator's and the harness's histories need a tiny
/// fraction of it.
pub const SEARCH_STEPS_MAX: u64 = 20_000_000;

/// Checks a whole history, key by key.
pub fn check(history: &[HistoryOp]) -> Verdict {
    let mut by_key: BTreeMap<Key, Vec<HistoryOp>> = BTreeMap::new();
    for op in history {
        let indeterminate_read = matches!(op.op, Op::Get { .. }) && op.outcome == Outcome::Indeterminate;
        if op.outcome != Outcome::Failed && !indeterminate_read {
            by_key.entry(op.op.key()).or_default().push(op.clone());
        }
    }
    for (key, mut ops) in by_key {
        ops.sort_by_key(|op| op.call);
        if let Some(stale) = stale_read(&ops) {
            return Verdict::NotLinearizable(NotLinearizable {
                key,
                stuck_at: Some(stale.read),
                ops,
                stale: Some(stale),
            });
        }
        match check_key(&ops) {
            Some(Ok(())) => {}
            Some(Err(stuck_at)) => {
                return Verdict::NotLinearizable(NotLinearizable { key, ops, stuck_at, stale: None })
            }
            None => return Verdict::Inconclusive(key),
        }
    }
    Verdict::Linearizable
}

/// One event of the linked list the search walks.
#[derive(Clone, Copy, Debug)]
struct Event {
    op: usize,
    is_call: bool,
    prev: Option<usize>,
    next: Option<usize>,
    /// For a call: the index of its return event, if it has one.
    matching_return: Option<usize>,
}

/// The events in time order as a doubly linked list, with a sentinel head at index 0.
struct EventList {
    events: Vec<Event>,
}

impl EventList {
    fn new(ops: &[HistoryOp]) -> EventList {
        let mut timed: Vec<(u64, usize, bool)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            timed.push((op.call, i, true));
            if let Outcome::Ok { at, .. } = op.outcome {
                assert!(at > op.call, "an operation returns after its call");
                timed.push((at, i, false));
            }
        }
        timed.sort_unstable();
        let sentinel =
            Event { op: usize::MAX, is_call: false, prev: None, next: None, matching_return: None };
        let mut events = vec![sentinel];
        let mut return_of = vec![None; ops.len()];
        for &(_, op, is_call) in &timed {
            let index = events.len();
            if !is_call {
                return_of[op] = Some(index);
            }
            events.push(Event { op, is_call, prev: Some(index - 1), next: None, matching_return: None });
            events[index - 1].next = Some(index);
        }
        for event in events.iter_mut().skip(1) {
            if event.is_call {
                event.matching_return = return_of[event.op];
            }
        }
        EventList { events }
    }

    fn first(&self) -> Option<usize> {
        self.events[0].next
    }

    fn unlink(&mut self, index: usize) {
        let Event { prev, next, .. } = self.events[index];
        let prev = prev.expect("only the sentinel has no predecessor");
        self.events[prev].next = next;
        if let Some(next) = next {
            self.events[next].prev = Some(prev);
        }
    }

    /// Re-inserts an unlinked event where it was; undoes `unlink` in reverse order.
    fn relink(&mut self, index: usize) {
        let Event { prev, next, .. } = self.events[index];
        let prev = prev.expect("only the sentinel has no predecessor");
        self.events[prev].next = Some(index);
        if let Some(next) = next {
            self.events[next].prev = Some(index);
        }
    }

    /// Removes a call and its return (if any) from the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if let Some(ret) = self.events[call].matching_return {
            self.unlink(ret);
        }
    }

    fn unlift(&mut self, call: usize) {
        if let Some(ret) = self.events[call].matching_return {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// A set of operation indices.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(len: usize) -> Bitset {
        Bitset(vec![0; len.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// The model's step for a checked operation: the next state, or `None` if the recorded result
/// cannot come from `state` (an indeterminate operation accepts any result).
fn model_step(state: Option<Value>, op: &HistoryOp) -> Option<Option<Value>> {
    let (after, result) = step(state, &op.op);
    match op.outcome {
        Outcome::Ok { result: recorded, .. } if recorded != result => None,
        _ => Some(after),
    }
}

/// `Some(verdict)` for one key's operations sorted by call time; `None` if the search gave up.
/// A failed verdict names the completed operation whose return the deepest partial
/// linearization could not get past.
fn check_key(ops: &[HistoryOp]) -> Option<Result<(), Option<usize>>> {
    let mut list = EventList::new(ops);
    let mut completed_left = ops.iter().filter(|op| matches!(op.outcome, Outcome::Ok { .. })).count();
    let mut linearized = Bitset::new(ops.len());
    let mut cache: HashSet<(Bitset, Option<Value>)> = HashSet::new();
    // Linearized calls, with the state before each.
    let mut stack: Vec<(usize, Option<Value>)> = Vec::new();
    let mut state: Option<Value> = None;
    let mut cursor = list.first();
    let mut steps = 0u64;
    // The fewest completed operations left unlinearized when a return blocked the search.
    let mut deepest: Option<(usize, usize)> = None;
    loop {
        if completed_left == 0 {
            return Some(Ok(()));
        }
        steps += 1;
        if steps > SEARCH_STEPS_MAX {
            return None;
        }
        let event = cursor.map(|i| (i, list.events[i]));
        match event {
            Some((index, event)) if event.is_call => {
                let op = &ops[event.op];
                if let Some(next_state) = model_step(state, op) {
                    let mut candidate = linearized.clone();
                    candidate.set(event.op);
                    if cache.insert((candidate.clone(), next_state)) {
                        stack.push((index, state));
                        state = next_state;
                        linearized = candidate;
                        if event.matching_return.is_some() {
                            completed_left -= 1;
                        }
                        list.lift(index);
                        cursor = list.first();
                        continue;
                    }
                }
                cursor = event.next;
            }
            // A completed operation returns before being linearized (or the list ran out):
            // undo the last linearization and try the next call after it.
            _ => {
                if let Some((_, event)) = event {
                    if deepest.is_none_or(|(left, _)| completed_left < left) {
                        deepest = Some((completed_left, event.op));
                    }
                }
                let Some((index, previous_state)) = stack.pop() else {
                    return Some(Err(deepest.map(|(_, op)| op)));
                };
                let event = list.events[index];
                list.unlift(index);
                linearized.clear(event.op);
                if event.matching_return.is_some() {
                    completed_left += 1;
                }
                state = previous_state;
                cursor = event.next;
            }
        }
    }
}
