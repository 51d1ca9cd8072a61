//! `log_file_path` of Sequence Paxos: each replica logs to its own file.
//!
//! In a test binary of its own: `tracing` caches, per call site, whether any subscriber is
//! interested, and subscribers created and dropped by parallel tests can race with that cache.

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    messages::{PaxosMessage, PaxosMsg, PrepareReq},
    sequence_paxos::{SequencePaxos, SequencePaxosConfig},
};
use omnipaxos_storage::memory_storage::MemoryStorage;

#[test]
fn each_replica_logs_to_its_own_file() {
    let directory = std::env::temp_dir().join(format!("omnipaxos_sp_log_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    let path = directory.join("node2.log");
    let mut config = SequencePaxosConfig::default();
    config.set_configuration_id(1);
    config.set_pid(2);
    config.set_peers(vec![1, 3]);
    config.set_log_file_path(&path);
    let mut replica = SequencePaxos::with(config, MemoryStorage::<u64, ()>::default());
    replica.handle_leader(Ballot::with(1, 1, 0, 2)).expect("handle_leader");
    let foreign = PaxosMessage {
        from: 9,
        to: 2,
        config_id: 1,
        msg: PaxosMsg::PrepareReq(PrepareReq { n: Ballot::default() }),
    };
    replica.handle(foreign).expect("a message from an unknown node is dropped, not an error");
    let log = std::fs::read_to_string(&path).expect("the log file exists");
    let _ = std::fs::remove_dir_all(&directory);
    assert!(log.lines().all(|l| l.starts_with("pid=2 ")), "every line names the replica:\n{log}");
    assert!(log.contains("becomes leader"), "the leadership change is logged:\n{log}");
    assert!(log.contains("9->2 PrepareReq"), "the dropped message is logged:\n{log}");
}
