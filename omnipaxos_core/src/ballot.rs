//! The ballot: the round number that orders leaders.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::util::{ConfigurationId, NodeId};

/// A leader's round. Ballots are totally ordered by `(config_id, n, priority, pid)`,
/// and equality is over the same four fields, so `Eq` and `Ord` always agree
/// (the reference implementation ordered without `config_id` but compared with it).
///
/// A ballot of a later configuration is greater than every ballot of an earlier one.
/// The default ballot (all zeros) is below every ballot a node can hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// The configuration this ballot belongs to.
    pub config_id: ConfigurationId,
    /// The round number.
    pub n: u32,
    /// Leader priority: breaks ties between equal rounds before the pid does.
    pub priority: u32,
    /// The node that owns this ballot.
    pub pid: NodeId,
}

impl Ballot {
    /// Creates a ballot.
    pub fn with(config_id: ConfigurationId, n: u32, priority: u32, pid: NodeId) -> Ballot {
        Ballot { config_id, n, priority, pid }
    }

    /// True for the default ballot, which no node ever proposes with.
    pub fn is_initial(&self) -> bool {
        *self == Ballot::default()
    }

    /// True for the promise a learner stores (see `SequencePaxosConfig::set_learner`): the
    /// largest round there is, which no leader can hold. A storage whose promise is this belongs
    /// to a replica that must restart as a learner.
    pub fn is_learner_promise(&self) -> bool {
        self.n == u32::MAX && self.priority == u32::MAX
    }
}

impl fmt::Display for Ballot {
    /// `n.priority.pid`, e.g. `3.0.2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.n, self.priority, self.pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eq_and_ord_agree() {
        let a = Ballot::with(1, 2, 0, 3);
        let b = Ballot::with(2, 2, 0, 3);
        assert_ne!(a, b);
        assert!(a < b, "a later configuration's ballot is greater");
        assert_eq!(a.cmp(&a), std::cmp::Ordering::Equal);
        let c = Ballot::with(1, 2, 1, 1);
        assert!(c > a, "priority breaks ties before pid");
        let d = Ballot::with(1, 3, 0, 1);
        assert!(d > c, "the round dominates priority");
    }
}
