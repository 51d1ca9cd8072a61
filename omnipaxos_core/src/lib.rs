//! A replicated, append-only log: Sequence Paxos with Ballot Leader Election, as in the
//! Omni-Paxos paper (EuroSys'23). Sans-IO: this crate does no I/O, reads no clock and owns no
//! randomness. Messages and ticks go in; messages, decided entries and storage calls come out.
//!
//! ```text
//!            user's network                         user's loop
//!   ┌──────────────┐   handle / handle_incoming   ┌──────────────┐  tick()   ┌────────────┐
//!   │  messages in │ ───────────────────────────► │ SequencePaxos│ ◄──────── │ BLE (leader│
//!   └──────────────┘                               │  (one replica│  handle_  │  election) │
//!   ┌──────────────┐   take_outgoing_messages      │   of the log)│  leader   └────────────┘
//!   │ messages out │ ◄─────── flush, then release ─│              │
//!   └──────────────┘                               └──────┬───────┘
//!                                       write_atomically  │  flush (group commit)
//!                                                  ┌──────▼───────┐
//!                                                  │   Storage    │
//!                                                  └──────────────┘
//! ```
//!
//! Two ways to use it:
//! - [`sequence_paxos::SequencePaxos`] and [`ballot_leader_election::BallotLeaderElection`]
//!   wired by the user: pass each ballot `BallotLeaderElection::tick` returns to
//!   `SequencePaxos::handle_leader`.
//! - [`OmniPaxos`], which wires them: one message type, one `tick`, one
//!   `take_outgoing_messages`.
//!
//! The key design decision: **persist before send is structural**. Handlers never send; they
//! queue. The only way a message leaves is `take_outgoing_messages`, which first calls
//! [`storage::Storage::flush`]. So a Promise, an Accepted, or any other message can never reach
//! the network before the writes it depends on are durable, and one flush covers every message
//! handled since the previous call (group commit). A leader counts its own log towards a quorum
//! only after that flush, so nothing reads as decided before it is durable on a quorum, a
//! single-node cluster included.
//!
//! Every `append` returns a [`util::ProposalId`]; the id travels with the entry, and
//! `take_proposal_outcomes` tells the proposer where its entry was decided (or why it was
//! dropped). Proposals forwarded by followers are retried until they reach the log, and the
//! leader drops copies, so a lost forward is never silently lost and never decided twice.
//!
//! ```
//! use omnipaxos_core::sequence_paxos::{SequencePaxos, SequencePaxosConfig};
//! use omnipaxos_core::ballot_leader_election::Ballot;
//! use omnipaxos_storage::memory_storage::MemoryStorage;
//!
//! let mut config = SequencePaxosConfig::default();
//! config.set_configuration_id(1);
//! config.set_pid(1);
//! let mut sp = SequencePaxos::with(config, MemoryStorage::<u64, ()>::default());
//! sp.handle_leader(Ballot::with(1, 1, 0, 1)).unwrap(); // a single-node cluster elects itself
//! let mut outgoing = Vec::new();
//! sp.take_outgoing_messages(&mut outgoing).unwrap();
//! sp.append(7).unwrap();
//! sp.take_outgoing_messages(&mut outgoing).unwrap(); // the flush makes it durable: decided
//! assert_eq!(sp.get_decided_idx(), 1);
//!
//! // A linearizable read, without writing to the log: the leader confirms that it still leads
//! // (here a single node confirms itself) and names the index the read must see.
//! use omnipaxos_core::sequence_paxos::ReadOutcome;
//! let read = sp.read_index().unwrap();
//! sp.take_outgoing_messages(&mut outgoing).unwrap();
//! let mut reads = Vec::new();
//! sp.take_read_outcomes(&mut reads);
//! assert_eq!(reads, vec![(read, ReadOutcome::Ready(1))]); // apply up to index 1, then read
//! ```

/// True if the mutation `$name` (a [`mutation::Mutation`] variant) is in force in `$holder`
/// (a struct with a `mutation` field); always false without the `mutations` feature.
macro_rules! mutated {
    ($holder:expr, $name:ident) => {{
        #[cfg(feature = "mutations")]
        let on = $holder.mutation == Some(crate::mutation::Mutation::$name);
        #[cfg(not(feature = "mutations"))]
        let on = {
            let _ = &$holder;
            false
        };
        on
    }};
}

mod ballot;
pub mod ballot_leader_election;
pub mod config;
pub mod errors;
pub mod messages;
#[cfg(feature = "mutations")]
pub mod mutation;
pub mod omni_paxos;
pub mod sequence_paxos;
pub mod storage;
pub mod util;

pub use config::OmniPaxosConfig;
pub use omni_paxos::OmniPaxos;
