//! STUB: being written.
pub use crate::config::SequencePaxosConfig;
