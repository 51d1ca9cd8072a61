//! STUB: being written.
#[derive(Clone, Debug, Default)]
pub struct SequencePaxosConfig {}
#[derive(Clone, Debug, Default)]
pub struct BLEConfig {}
#[derive(Clone, Debug, Default)]
pub struct OmniPaxosConfig {}
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("x")]
    X,
}
