//! STUB: being written.
pub struct OmniPaxos {}
