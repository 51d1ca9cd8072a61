//! Mutation checks: does the simulator find a bug that we know is there?
//!
//! ```text
//!   --mutation NAME ─► every replica's config (set_mutation) ─► the core runs with one fixed
//!                      bug switched back on (feature `mutations` of omnipaxos_core)
//!   --expect-violation ─► the batch succeeds iff some seed reports a violation
//! ```
//!
//! A checker that never fires is no evidence, so CI runs each mutation with a seed budget and
//! requires a violation. Without the feature [`Mutation`] has no variants: the option exists but
//! every name is refused, and the rest of the simulator needs no `cfg`.

#[cfg(feature = "mutations")]
pub use omnipaxos_core::mutation::Mutation;

/// No mutation exists without the `mutations` feature.
#[cfg(not(feature = "mutations"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mutation {}

#[cfg(not(feature = "mutations"))]
impl Mutation {
    /// Every mutation: none without the feature.
    pub const ALL: [Mutation; 0] = [];

    /// The name used on command lines.
    pub fn name(self) -> &'static str {
        match self {}
    }

    /// The mutation named `name`: none without the feature.
    pub fn from_name(_name: &str) -> Option<Mutation> {
        None
    }
}

/// Parses a command-line mutation name.
pub fn parse(name: &str) -> Result<Mutation, String> {
    if !cfg!(feature = "mutations") {
        return Err("mutations need a build with `--features mutations`".into());
    }
    Mutation::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Mutation::ALL.iter().map(|m| m.name()).collect();
        format!("unknown mutation `{name}`; one of: {}", names.join(", "))
    })
}
