//! The adversarial mode: bare `SequencePaxos` replicas driven by a seeded scheduler that
//! chooses every input, leaders included. Where the facade simulator ([`crate::sim`]) asks
//! "does a realistic deployment stay safe?", this mode asks "is Sequence Paxos safe for *any*
//! message delay and *any* sequence of leader ballots?", as Paxos must be.
//!
//! ```text
//!   seed ──► SmallRng ──► Profile (pids, buffer/batch sizes, piggyback, action weights)
//!                 │
//!                 ▼ one action per step
//!   deliver / drop / duplicate an in-flight message ── replay ANY archived message (also
//!   across restarts) ── handle_leader(adversarial ballot) at a subset ── append ── tick ──
//!   take_outgoing_messages (flush, then send: the only way into the network and archive) ──
//!   crash (keep none / all / a prefix of unflushed writes) ── restart ── fail_recovery ──
//!   reconnected ── trim ── snapshot ── reconfigure ── disk failure ── hostile message
//!                 │
//!                 ▼ after every step (checker.rs)
//!   agreement, exactly_once, outcomes, no panic (every core call under catch_unwind)
//!                 │
//!                 ▼ at the end (calm.rs)
//!   calm phase: no faults, reliable delivery, a fresh ballot above every promise at every
//!   node; all replicas converge and new proposals are decided and reported (liveness)
//! ```
//!
//! Key decision: **the scheduler, not Ballot Leader Election, decides who leads and when**,
//! and the network keeps an archive of every message ever sent and may replay any of them at
//! any later time to its original receiver. Both are inputs a real deployment can produce
//! (a leader election with a different timing; a message queued before a peer restarted and
//! sent after it reconnected), so the core must be safe under all of them; the facade
//! simulator never produces them.
//!
//! Entries are [`crate::kv::Command`]s (`put k0 = value`, the value unique in the run) so that
//! the simulator's disk ([`crate::storage::SimStorage`], crashable or persistent) and its
//! snapshot type serve unchanged.

mod actions;
pub mod batch;
mod calm;
pub mod checker;
pub mod hostile;
mod world;

use std::{cell::RefCell, collections::BTreeMap, panic::AssertUnwindSafe, sync::Once};

use omnipaxos_core::{messages::PaxosMessage, sequence_paxos::SequencePaxos, util::NodeId};

use crate::{
    invariants::Violation,
    kv::{Command, KvSnapshot, Op, RequestId},
    mutation::Mutation,
    storage::{SimStorage, StorageKind},
};
pub use world::Profile;

/// The entry type of the adversarial mode.
pub type Entry = Command;
/// A message between replicas.
pub type AdvMessage = PaxosMessage<Entry, KvSnapshot>;
/// A replica as this mode runs it.
pub type AdvReplica = SequencePaxos<Entry, KvSnapshot, SimStorage>;

/// The entry that carries `value`, appended at `node`.
pub fn entry(node: NodeId, value: u64) -> Entry {
    Command { request: RequestId { client: node as u32, seq: value }, op: Op::Put { key: 0, value } }
}

/// The unique value an entry carries.
pub fn value_of(entry: &Entry) -> u64 {
    match entry.op {
        Op::Put { value, .. } => value,
        _ => u64::MAX,
    }
}

/// Everything one run depends on besides the seed's random choices.
#[derive(Clone, Debug)]
pub struct AdversaryConfig {
    /// The seed of every random choice.
    pub seed: u64,
    /// Replicas (3 or 5 in the command line's defaults).
    pub nodes: usize,
    /// The replicas' disks.
    pub storage: StorageKind,
    /// Steps of the adversarial phase (one action each).
    pub steps: u64,
    /// Ticks of the calm phase within which the replicas must converge.
    pub calm_ticks_max: u64,
    /// Record a readable trace, one line per event.
    pub trace: bool,
    /// Print trace lines as they happen instead of keeping them.
    pub trace_print: bool,
    /// Properties whose violations are recorded (the first of each) without ending the run;
    /// a tolerated panic crashes the node that panicked, as a real panic would.
    pub tolerate: Vec<String>,
    /// A core bug switched back on in every replica (`--mutation`, feature `mutations`).
    pub mutation: Option<Mutation>,
}

impl AdversaryConfig {
    /// The defaults for `seed` with `nodes` replicas.
    pub fn new(seed: u64, nodes: usize) -> AdversaryConfig {
        AdversaryConfig {
            seed,
            nodes,
            storage: StorageKind::Crashable,
            steps: 1000,
            calm_ticks_max: 400,
            trace: false,
            trace_print: false,
            tolerate: Vec::new(),
            mutation: None,
        }
    }
}

/// What the calm phase found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Not run: a safety violation ended the run first.
    NotRun,
    /// Every replica converged and every calm-phase proposal was decided and reported.
    Converged {
        /// Ticks of the calm phase it took.
        ticks: u64,
    },
    /// No ballot above every promise exists for a live node (rounds near `u32::MAX`).
    BallotsExhausted,
    /// The replicas did not converge in time (the violation says how they stood).
    Failed,
}

/// What one run found and did.
#[derive(Clone, Debug)]
pub struct AdversaryReport {
    /// The seed.
    pub seed: u64,
    /// Replicas.
    pub nodes: usize,
    /// The seed's profile, one line.
    pub profile: String,
    /// The violation that ended the run, if any.
    pub violation: Option<Violation>,
    /// The first violation of each tolerated property, in the order seen.
    pub tolerated: Vec<Violation>,
    /// The calm phase's result.
    pub liveness: Liveness,
    /// Steps taken (both phases).
    pub steps: u64,
    /// Actions taken, by name.
    pub actions: BTreeMap<&'static str, u64>,
    /// Log positions decided.
    pub decided: usize,
    /// The trace, if asked for.
    pub trace: Vec<String>,
}

/// Runs one seed to the end.
pub fn run(config: AdversaryConfig) -> AdversaryReport {
    install_panic_capture();
    world::World::new(config).run()
}

thread_local! {
    /// Set while a core call runs under [`guard`]: its panic message is kept, not printed.
    static CAPTURING: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

static PANIC_HOOK: Once = Once::new();

/// Installs, once per process, a panic hook that records the message of a panic inside
/// [`guard`] and leaves every other panic to the previous hook (test failures still print).
pub fn install_panic_capture() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let captured = CAPTURING.with(|c| match c.borrow_mut().as_mut() {
                Some(slot) => {
                    *slot = Some(info.to_string());
                    true
                }
                None => false,
            });
            if !captured {
                previous(info);
            }
        }));
    });
}

/// Runs one core call; a panic comes back as its message instead of unwinding further.
pub fn guard<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    CAPTURING.with(|c| *c.borrow_mut() = Some(None));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    let message = CAPTURING.with(|c| c.borrow_mut().take()).flatten();
    result.map_err(|payload| {
        let message = message.unwrap_or_else(|| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into())
        });
        message.replace('\n', " ")
    })
}
