//! The per-server log file of Ballot Leader Election (`log_file_path`).
//!
//! In a test binary of its own: `tracing` caches, per call site, whether any subscriber is
//! interested, and other tests creating and dropping subscribers on other threads of the same
//! process can race with that cache.

use omnipaxos_core::ballot_leader_election::{
    BLEConfig, BLEMessage, BallotLeaderElection, HeartbeatMsg, HeartbeatRequest,
};

const CONFIG_ID: u32 = 1;

fn config(pid: u64, cluster_size: u64, priority: u32) -> BLEConfig {
    let mut c = BLEConfig::default();
    c.set_configuration_id(CONFIG_ID);
    c.set_pid(pid);
    c.set_peers((1..=cluster_size).filter(|&p| p != pid).collect());
    c.set_priority(priority);
    c.set_hb_delay(3);
    c
}

#[test]
fn log_file_records_dropped_messages() {
    let directory = std::env::temp_dir().join(format!("omnipaxos_ble_log_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    let path = directory.join("ble_1.log");
    let mut c = config(1, 3, 0);
    c.set_log_file_path(&path);
    let mut node = BallotLeaderElection::with(c);
    let msg = HeartbeatMsg::Request(HeartbeatRequest { round: 1 });
    node.handle(BLEMessage { from: 9, to: 1, config_id: CONFIG_ID, msg });
    let log = std::fs::read_to_string(&path).expect("the log file exists");
    let _ = std::fs::remove_dir_all(&directory);
    let line = log.lines().find(|l| l.contains("9->1 HbRequest r=1"));
    let line = line.unwrap_or_else(|| panic!("no line about the foreign message in:\n{log}"));
    assert!(line.starts_with("pid=1 ") && line.contains("outside the configuration"), "{line}");
}
