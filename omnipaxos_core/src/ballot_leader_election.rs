//! STUB: being written.
use serde::{Deserialize, Serialize};

pub use crate::ballot::Ballot;
pub use crate::config::BLEConfig;
use crate::util::{ConfigurationId, NodeId};

/// A BLE message with its envelope.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BLEMessage {
    pub from: NodeId,
    pub to: NodeId,
    pub config_id: ConfigurationId,
    pub msg: HeartbeatMsg,
}
impl std::fmt::Display for BLEMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}->{} {:?}", self.from, self.to, self.msg)
    }
}
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum HeartbeatMsg {
    Request(HeartbeatRequest),
    Reply(HeartbeatReply),
}
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub round: u32,
}
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub round: u32,
    pub ballot: Ballot,
    pub leader: Ballot,
    pub happy: bool,
}
