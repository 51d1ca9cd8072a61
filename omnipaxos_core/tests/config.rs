//! Loading and validating configurations through the public API: HOCON as in the tutorial,
//! TOML, setters, and one bad input for every `ConfigError` variant.

use std::{collections::BTreeSet, error::Error, path::Path};

use hocon::{Hocon, HoconLoader};
use omnipaxos_core::{
    ballot_leader_election::BLEConfig,
    config::{validate_cluster_config, ConfigError},
    sequence_paxos::{ReadLease, SequencePaxosConfig},
    storage::ClusterConfig,
    util::{FlexibleQuorum, Quorum},
    OmniPaxosConfig,
};

/// The tutorial's file, loaded the tutorial's way.
const TUTORIAL_FILE: &str = "tests/config/node2.conf";
/// Every key of both halves plus an application key.
const FULL_HOCON_FILE: &str = "tests/config/full.conf";
/// The same values as `FULL_HOCON_FILE`, in TOML.
const FULL_TOML_FILE: &str = "tests/config/omnipaxos.toml";

fn hocon_file(path: &str) -> Hocon {
    HoconLoader::new().load_file(path).expect("file loads").hocon().expect("valid HOCON")
}

fn hocon_text(text: &str) -> Hocon {
    HoconLoader::new().load_str(text).expect("text loads").hocon().expect("valid HOCON")
}

/// A valid three-server configuration to break one field at a time.
fn three_servers() -> SequencePaxosConfig {
    let mut config = SequencePaxosConfig::default();
    config.set_configuration_id(1);
    config.set_pid(2);
    config.set_peers(vec![3, 1]);
    config
}

/// The Sequence Paxos half of `full.conf` and `omnipaxos.toml`, built with setters.
fn full_sequence_paxos() -> SequencePaxosConfig {
    let mut config = SequencePaxosConfig::default();
    config.set_configuration_id(4);
    config.set_pid(2);
    config.set_peers(vec![1, 3, 4, 5]);
    config.set_log_file_path("/sequencepaxos/logs/node2.log");
    config.set_buffer_size(5000);
    config.set_batch_size(10);
    config.set_flush_batch_tick_timeout(3);
    config.set_resend_message_tick_timeout(40);
    config.set_leader_priority(7);
    config.set_flexible_quorum(Some(FlexibleQuorum { read_quorum_size: 4, write_quorum_size: 2 }));
    config
}

/// The election half of `full.conf` and `omnipaxos.toml`, built with setters.
fn full_ble() -> BLEConfig {
    let mut config = BLEConfig::default();
    config.set_configuration_id(4);
    config.set_pid(2);
    config.set_peers(vec![1, 3, 4, 5]);
    config.set_log_file_path("/sequencepaxos/logs/node2.log");
    config.set_priority(7);
    config.set_hb_delay(25);
    config.set_initial_delay(5);
    config.set_buffer_size(64);
    config.set_flexible_quorum(Some(FlexibleQuorum { read_quorum_size: 4, write_quorum_size: 2 }));
    config
}

#[test]
fn tutorial_hocon_file_gives_config_id_pid_and_log_path() {
    let raw_cfg = hocon_file(TUTORIAL_FILE);
    let config = SequencePaxosConfig::with_hocon(&raw_cfg);
    assert_eq!(config.configuration_id(), 1);
    assert_eq!(config.pid(), 2);
    assert_eq!(config.log_file_path(), Some(Path::new("/sequencepaxos/logs")));
    assert_eq!(config.peers(), &[] as &[u64]);
    assert_eq!(config.buffer_size(), 100_000);
    assert_eq!(config.batch_size(), 1);
    assert_eq!(config.flush_batch_tick_timeout(), 5);
    assert_eq!(config.resend_message_tick_timeout(), 20);
    assert_eq!(config.leader_priority(), 0);
    assert_eq!(config.flexible_quorum(), None);
    config.validate().expect("a single-server cluster is valid");
}

#[test]
fn hocon_string_gives_peers_and_flexible_quorum() {
    let raw_cfg = hocon_text(
        r#"{ config_id: 3, pid: 5, peers: [9, 1, 7, 2], read_quorum_size: 4, write_quorum_size: 2 }"#,
    );
    let config = SequencePaxosConfig::try_with_hocon(&raw_cfg).expect("loads");
    assert_eq!(config.peers(), &[9, 1, 7, 2]);
    assert_eq!(config.nodes(), vec![1, 2, 5, 7, 9]);
    assert_eq!(config.quorum(), Quorum { read: 4, write: 2 });
    assert_eq!(config.log_file_path(), None);
    let expected_cluster = ClusterConfig {
        configuration_id: 3,
        nodes: vec![1, 2, 5, 7, 9],
        flexible_quorum: Some(FlexibleQuorum { read_quorum_size: 4, write_quorum_size: 2 }),
    };
    assert_eq!(config.cluster_config(), expected_cluster);
    config.validate().expect("4 + 2 > 5 intersects");
}

#[test]
fn full_hocon_file_sets_every_key_of_both_halves() {
    let raw_cfg = hocon_file(FULL_HOCON_FILE);
    assert_eq!(SequencePaxosConfig::with_hocon(&raw_cfg), full_sequence_paxos());
    assert_eq!(BLEConfig::with_hocon(&raw_cfg), full_ble());
    let combined = OmniPaxosConfig::with_hocon(&raw_cfg);
    assert_eq!(combined.sequence_paxos, full_sequence_paxos());
    assert_eq!(combined.ble, full_ble());
    combined.validate().expect("the full configuration is valid");
}

#[test]
fn hocon_ignores_unknown_keys_and_keys_of_the_other_half() {
    // `hb_delay` has the wrong type, but Sequence Paxos does not read it.
    let raw_cfg = hocon_text(r#"{ config_id: 1, pid: 1, hb_delay: "soon", http: { port: 80 } }"#);
    let config = SequencePaxosConfig::try_with_hocon(&raw_cfg).expect("loads");
    assert_eq!(config.pid(), 1);
    let error = BLEConfig::try_with_hocon(&raw_cfg).expect_err("the election reads hb_delay");
    assert!(matches!(error, ConfigError::WrongType { key: "hb_delay", .. }), "{error:?}");
}

#[test]
fn hocon_null_means_absent_and_numeric_strings_convert() {
    // hocon 0.9 reads a `null` just before the closing brace as the string "null", so the
    // nulls here are followed by another key.
    let raw_cfg = hocon_text(r#"{ peers: null, batch_size: null, config_id: "6", pid: 4 }"#);
    let config = SequencePaxosConfig::try_with_hocon(&raw_cfg).expect("loads");
    assert_eq!(config.configuration_id(), 6);
    assert_eq!(config.peers(), &[] as &[u64]);
    assert_eq!(config.batch_size(), 1);
}

#[test]
fn hocon_wrong_types_name_the_key() {
    let cases = [
        (r#"{ config_id: 4294967296, pid: 1 }"#, "config_id"),
        (r#"{ config_id: 1, pid: -1 }"#, "pid"),
        (r#"{ config_id: 1, pid: 1.5 }"#, "pid"),
        (r#"{ config_id: 1, pid: 1, peers: 3 }"#, "peers"),
        (r#"{ config_id: 1, pid: 1, peers: [2, -3] }"#, "peers"),
        (r#"{ config_id: 1, pid: 1, log_file_path: [1] }"#, "log_file_path"),
        (r#"{ config_id: 1, pid: 1, buffer_size: { a: 1 } }"#, "buffer_size"),
        (r#"{ config_id: 1, pid: 1, leader_priority: true }"#, "leader_priority"),
    ];
    for (text, expected_key) in cases {
        let error = SequencePaxosConfig::try_with_hocon(&hocon_text(text)).expect_err(text);
        assert!(
            matches!(error, ConfigError::WrongType { key, .. } if key == expected_key),
            "{text}: {error:?}"
        );
        assert!(error.to_string().contains(&format!("`{expected_key}`")), "{error}");
    }
}

#[test]
#[should_panic(expected = "required key `pid` is missing")]
fn with_hocon_panics_with_the_error_message() {
    SequencePaxosConfig::with_hocon(&hocon_text("{ config_id: 1 }"));
}

#[test]
fn ble_defaults_and_initial_delay_follow_hb_delay() {
    let mut config = BLEConfig::default();
    assert_eq!((config.hb_delay(), config.initial_delay(), config.buffer_size()), (10, 10, 1000));
    config.set_hb_delay(30);
    assert_eq!(config.initial_delay(), 30, "unset initial delay is the heartbeat delay");
    config.set_initial_delay(4);
    assert_eq!((config.hb_delay(), config.initial_delay()), (30, 4));
}

#[test]
fn ble_hocon_accepts_leader_priority_as_alias_and_prefers_priority() {
    let alias = hocon_text("{ config_id: 1, pid: 1, leader_priority: 3 }");
    assert_eq!(BLEConfig::try_with_hocon(&alias).expect("loads").priority(), 3);
    let both = hocon_text("{ config_id: 1, pid: 1, leader_priority: 3, priority: 8 }");
    assert_eq!(BLEConfig::try_with_hocon(&both).expect("loads").priority(), 8);
}

#[test]
fn omnipaxos_config_new_derives_the_shared_fields() {
    let mut sequence_paxos = three_servers();
    sequence_paxos.set_leader_priority(5);
    sequence_paxos.set_log_file_path("logs/node2.log");
    let quorum = FlexibleQuorum { read_quorum_size: 2, write_quorum_size: 2 };
    sequence_paxos.set_flexible_quorum(Some(quorum));
    let mut combined = OmniPaxosConfig::new(sequence_paxos);
    combined.set_hb_delay(42);
    let ble = &combined.ble;
    assert_eq!((ble.configuration_id(), ble.pid(), ble.peers()), (1, 2, &[3, 1][..]));
    assert_eq!((ble.priority(), ble.flexible_quorum()), (5, Some(quorum)));
    assert_eq!(ble.log_file_path(), Some(Path::new("logs/node2.log")));
    assert_eq!((ble.hb_delay(), ble.buffer_size()), (42, 1000));
    assert_eq!(ble.nodes(), vec![1, 2, 3]);
    assert_eq!(ble.quorum(), Quorum { read: 2, write: 2 });
    combined.validate().expect("derived halves agree");
}

#[test]
fn majority_quorum_when_no_flexible_quorum() {
    let mut config = three_servers();
    assert_eq!(config.quorum(), Quorum { read: 2, write: 2 });
    config.set_peers(vec![1, 3, 4]);
    assert_eq!(config.quorum(), Quorum { read: 3, write: 3 });
}

#[test]
fn toml_round_trips_sequence_paxos() {
    let text = r#"
        config_id = 4
        pid = 2
        peers = [1, 3, 4, 5]
        log_file_path = "/sequencepaxos/logs/node2.log"
        buffer_size = 5000
        batch_size = 10
        flush_batch_tick_timeout = 3
        resend_message_tick_timeout = 40
        leader_priority = 7
        read_quorum_size = 4
        write_quorum_size = 2
    "#;
    assert_eq!(SequencePaxosConfig::from_toml_str(text).expect("parses"), full_sequence_paxos());
    let with_ble_key = format!("{text}\nhb_delay = 25\n");
    let error = SequencePaxosConfig::from_toml_str(&with_ble_key).expect_err("unknown key");
    assert!(matches!(error, ConfigError::Toml(_)), "{error:?}");
    assert!(error.to_string().contains("hb_delay"), "{error}");
}

#[test]
fn toml_round_trips_ble() {
    let text = r#"
        config_id = 4
        pid = 2
        peers = [1, 3, 4, 5]
        log_file_path = "/sequencepaxos/logs/node2.log"
        priority = 7
        hb_delay = 25
        initial_delay = 5
        ble_buffer_size = 64
        read_quorum_size = 4
        write_quorum_size = 2
    "#;
    assert_eq!(BLEConfig::from_toml_str(text).expect("parses"), full_ble());
    let alias = text.replace("priority = 7", "leader_priority = 7");
    assert_eq!(BLEConfig::from_toml_str(&alias).expect("parses"), full_ble());
    let with_sequence_paxos_key = format!("{text}\nbatch_size = 10\n");
    let error = BLEConfig::from_toml_str(&with_sequence_paxos_key).expect_err("unknown key");
    assert!(error.to_string().contains("batch_size"), "{error}");
}

#[test]
fn toml_file_round_trips_omnipaxos_config() {
    let combined = OmniPaxosConfig::from_toml_file(FULL_TOML_FILE).expect("reads and parses");
    assert_eq!(combined.sequence_paxos, full_sequence_paxos());
    assert_eq!(combined.ble, full_ble());
    combined.validate().expect("valid");
    let sequence_paxos_only = SequencePaxosConfig::from_toml_file(FULL_TOML_FILE);
    assert!(matches!(sequence_paxos_only, Err(ConfigError::Toml(_))), "BLE keys are unknown here");
    let text = std::fs::read_to_string(FULL_TOML_FILE).expect("readable");
    let typo = text.replace("buffer_size = 5000", "bufer_size = 5000");
    let error = OmniPaxosConfig::from_toml_str(&typo).expect_err("a typo is an error");
    assert!(error.to_string().contains("bufer_size"), "{error}");
}

#[test]
fn toml_requires_config_id_and_pid_and_rejects_negative_numbers() {
    let missing = SequencePaxosConfig::from_toml_str("config_id = 1");
    assert!(matches!(missing, Err(ConfigError::MissingKey("pid"))), "{missing:?}");
    let missing = BLEConfig::from_toml_str("pid = 1");
    assert!(matches!(missing, Err(ConfigError::MissingKey("config_id"))), "{missing:?}");
    let negative = OmniPaxosConfig::from_toml_str("config_id = 1\npid = -2");
    assert!(matches!(negative, Err(ConfigError::Toml(_))), "{negative:?}");
}

#[test]
fn every_shared_field_mismatch_is_named() {
    let base = || OmniPaxosConfig::new(three_servers());
    let mut cases: Vec<(OmniPaxosConfig, &str)> = Vec::new();
    let mut changed = base();
    changed.ble.set_configuration_id(9);
    cases.push((changed, "configuration_id"));
    let mut changed = base();
    changed.ble.set_pid(4);
    changed.ble.set_peers(vec![1, 3]);
    cases.push((changed, "pid"));
    let mut changed = base();
    changed.ble.set_peers(vec![1, 4]);
    cases.push((changed, "peers"));
    let mut changed = base();
    changed.ble.set_priority(1);
    cases.push((changed, "leader_priority"));
    let mut changed = base();
    changed.ble.set_flexible_quorum(Some(FlexibleQuorum { read_quorum_size: 3, write_quorum_size: 1 }));
    cases.push((changed, "flexible_quorum"));
    let mut changed = base();
    changed.ble.set_log_file_path("elsewhere.log");
    cases.push((changed, "log_file_path"));
    for (config, expected_field) in cases {
        let error = config.validate().expect_err(expected_field);
        assert!(
            matches!(error, ConfigError::SharedFieldMismatch { field } if field == expected_field),
            "{expected_field}: {error:?}"
        );
    }
    let mut reordered = base();
    reordered.ble.set_peers(vec![1, 3]);
    reordered.validate().expect("peer order does not matter");
}

/// The variant's name, by an exhaustive match: a new variant does not compile here until
/// it is added, and `ALL_VARIANTS` then fails the coverage test until it has a bad input.
fn variant_name(error: &ConfigError) -> &'static str {
    match error {
        ConfigError::MissingKey(_) => "MissingKey",
        ConfigError::WrongType { .. } => "WrongType",
        ConfigError::IncompleteFlexibleQuorum { .. } => "IncompleteFlexibleQuorum",
        ConfigError::ReadFile { .. } => "ReadFile",
        ConfigError::Toml(_) => "Toml",
        ConfigError::LogFile { .. } => "LogFile",
        ConfigError::UnsetConfigurationId => "UnsetConfigurationId",
        ConfigError::UnsetPid => "UnsetPid",
        ConfigError::ZeroNodeId => "ZeroNodeId",
        ConfigError::PidAmongPeers(_) => "PidAmongPeers",
        ConfigError::DuplicateNode(_) => "DuplicateNode",
        ConfigError::NoNodes => "NoNodes",
        ConfigError::ZeroBufferSize => "ZeroBufferSize",
        ConfigError::ZeroBatchSize => "ZeroBatchSize",
        ConfigError::ZeroFlushBatchTickTimeout => "ZeroFlushBatchTickTimeout",
        ConfigError::ZeroResendMessageTickTimeout => "ZeroResendMessageTickTimeout",
        ConfigError::BatchLargerThanBuffer { .. } => "BatchLargerThanBuffer",
        ConfigError::TimeoutTooLarge { .. } => "TimeoutTooLarge",
        ConfigError::ZeroReadTimeout => "ZeroReadTimeout",
        ConfigError::ZeroMaxSyncEntries => "ZeroMaxSyncEntries",
        ConfigError::ZeroReadLease => "ZeroReadLease",
        ConfigError::ClockDriftTooLarge(_) => "ClockDriftTooLarge",
        ConfigError::ZeroHeartbeatDelay => "ZeroHeartbeatDelay",
        ConfigError::ZeroInitialDelay => "ZeroInitialDelay",
        ConfigError::ZeroBleBufferSize => "ZeroBleBufferSize",
        ConfigError::ReadQuorumOutOfRange { .. } => "ReadQuorumOutOfRange",
        ConfigError::WriteQuorumOutOfRange { .. } => "WriteQuorumOutOfRange",
        ConfigError::QuorumsDoNotIntersect { .. } => "QuorumsDoNotIntersect",
        ConfigError::SharedFieldMismatch { .. } => "SharedFieldMismatch",
    }
}

/// Every variant, for the coverage test.
const ALL_VARIANTS: [&str; 29] = [
    "MissingKey",
    "WrongType",
    "IncompleteFlexibleQuorum",
    "ReadFile",
    "Toml",
    "LogFile",
    "UnsetConfigurationId",
    "UnsetPid",
    "ZeroNodeId",
    "PidAmongPeers",
    "DuplicateNode",
    "NoNodes",
    "ZeroBufferSize",
    "ZeroBatchSize",
    "ZeroFlushBatchTickTimeout",
    "ZeroResendMessageTickTimeout",
    "BatchLargerThanBuffer",
    "TimeoutTooLarge",
    "ZeroReadTimeout",
    "ZeroMaxSyncEntries",
    "ZeroReadLease",
    "ClockDriftTooLarge",
    "ZeroHeartbeatDelay",
    "ZeroInitialDelay",
    "ZeroBleBufferSize",
    "ReadQuorumOutOfRange",
    "WriteQuorumOutOfRange",
    "QuorumsDoNotIntersect",
    "SharedFieldMismatch",
];

/// A Sequence Paxos configuration error after `change` is applied to `three_servers()`.
fn sequence_paxos_error(change: impl FnOnce(&mut SequencePaxosConfig)) -> ConfigError {
    let mut config = three_servers();
    change(&mut config);
    config.validate().expect_err("the change makes the configuration invalid")
}

/// A BLE configuration error after `change` is applied to a valid three-server one.
fn ble_error(change: impl FnOnce(&mut BLEConfig)) -> ConfigError {
    let mut config = OmniPaxosConfig::new(three_servers()).ble;
    change(&mut config);
    config.validate().expect_err("the change makes the configuration invalid")
}

fn flexible(read_quorum_size: usize, write_quorum_size: usize) -> Option<FlexibleQuorum> {
    Some(FlexibleQuorum { read_quorum_size, write_quorum_size })
}

/// Loading errors: one bad input each, with a word its message must contain.
fn loading_errors() -> Vec<(ConfigError, &'static str)> {
    let load = |text| SequencePaxosConfig::try_with_hocon(&hocon_text(text)).expect_err(text);
    vec![
        (load("{ pid: 2 }"), "`config_id` is missing"),
        (load("{ config_id: 1, pid: -2 }"), "`pid` must be a non-negative integer"),
        (load("{ config_id: 1, pid: 2, read_quorum_size: 2 }"), "`write_quorum_size` is missing"),
        (load("{ config_id: 1, pid: 2, write_quorum_size: 2 }"), "`read_quorum_size` is missing"),
        (
            SequencePaxosConfig::from_toml_file("tests/config/no_such_file.toml").expect_err("absent"),
            "no_such_file.toml",
        ),
        (
            SequencePaxosConfig::from_toml_str("config_id = 1\npid = 2\nbufer_size = 3").expect_err("typo"),
            "bufer_size",
        ),
    ]
}

/// Validation errors of Sequence Paxos and cluster configurations.
fn sequence_paxos_errors() -> Vec<(ConfigError, &'static str)> {
    let empty_cluster = ClusterConfig { configuration_id: 2, nodes: vec![], flexible_quorum: None };
    vec![
        (sequence_paxos_error(|c| c.set_configuration_id(0)), "configuration id is 0"),
        (sequence_paxos_error(|c| c.set_pid(0)), "pid is 0"),
        (sequence_paxos_error(|c| c.set_peers(vec![1, 0])), "node id is 0"),
        (sequence_paxos_error(|c| c.set_peers(vec![1, 2])), "pid 2 is listed in `peers`"),
        (sequence_paxos_error(|c| c.set_peers(vec![3, 1, 3])), "node 3 is listed twice"),
        (validate_cluster_config(&empty_cluster).expect_err("empty"), "no nodes"),
        (sequence_paxos_error(|c| c.set_buffer_size(0)), "`buffer_size` is 0"),
        (sequence_paxos_error(|c| c.set_batch_size(0)), "`batch_size` is 0"),
        (sequence_paxos_error(|c| c.set_flush_batch_tick_timeout(0)), "`flush_batch_tick_timeout` is 0"),
        (
            sequence_paxos_error(|c| c.set_resend_message_tick_timeout(0)),
            "`resend_message_tick_timeout` is 0",
        ),
        (sequence_paxos_error(|c| c.set_read_timeout_ticks(0)), "`read_timeout_ticks` is 0"),
        (sequence_paxos_error(|c| c.set_max_sync_entries(0)), "`max_sync_entries` is 0"),
        (
            sequence_paxos_error(|c| {
                c.set_read_lease(Some(ReadLease { lease_ticks: 0, max_clock_drift_percent: 5 }))
            }),
            "`read_lease_ticks` is 0",
        ),
        (
            sequence_paxos_error(|c| {
                c.set_read_lease(Some(ReadLease { lease_ticks: 10, max_clock_drift_percent: 51 }))
            }),
            "`max_clock_drift_percent` is 51",
        ),
        (
            sequence_paxos_error(|c| c.set_resend_message_tick_timeout(u64::MAX)),
            "`resend_message_tick_timeout` is 18446744073709551615 ticks; it must be at most 4294967295",
        ),
        (
            sequence_paxos_error(|c| {
                c.set_buffer_size(4);
                c.set_batch_size(5);
            }),
            "`batch_size` 5 is larger than `buffer_size` 4",
        ),
        (sequence_paxos_error(|c| c.set_flexible_quorum(flexible(0, 3))), "`read_quorum_size` 0"),
        (sequence_paxos_error(|c| c.set_flexible_quorum(flexible(4, 3))), "`read_quorum_size` 4"),
        (sequence_paxos_error(|c| c.set_flexible_quorum(flexible(3, 0))), "`write_quorum_size` 0"),
        (sequence_paxos_error(|c| c.set_flexible_quorum(flexible(2, 4))), "`write_quorum_size` 4"),
        (sequence_paxos_error(|c| c.set_flexible_quorum(flexible(2, 1))), "read 2 + write 1 must exceed 3"),
    ]
}

/// Validation errors of the election and of the combined configuration.
fn ble_and_combined_errors() -> Vec<(ConfigError, &'static str)> {
    let mut mismatched = OmniPaxosConfig::new(three_servers());
    mismatched.ble.set_priority(3);
    vec![
        (ble_error(|c| c.set_hb_delay(0)), "`hb_delay` is 0"),
        (ble_error(|c| c.set_initial_delay(0)), "`initial_delay` is 0"),
        (ble_error(|c| c.set_hb_delay(u64::MAX)), "`hb_delay` is 18446744073709551615 ticks"),
        (ble_error(|c| c.set_initial_delay(1 << 40)), "`initial_delay` is 1099511627776 ticks"),
        (ble_error(|c| c.set_buffer_size(0)), "`ble_buffer_size` is 0"),
        (ble_error(|c| c.set_configuration_id(0)), "configuration id is 0"),
        (ble_error(|c| c.set_peers(vec![1, 1])), "node 1 is listed twice"),
        (ble_error(|c| c.set_flexible_quorum(flexible(1, 2))), "read 1 + write 2 must exceed 3"),
        (mismatched.validate().expect_err("priorities differ"), "disagree on `leader_priority`"),
    ]
}

/// `LogFile`, built as the replica builds it when its log file cannot be opened (the unit
/// tests in `src/config.rs` produce it from a real file system failure).
fn log_file_error() -> (ConfigError, &'static str) {
    let error = ConfigError::LogFile {
        path: "/logs/node1.log".into(),
        source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    };
    (error, "cannot open log file \"/logs/node1.log\"")
}

fn all_produced_errors() -> Vec<(ConfigError, &'static str)> {
    let mut errors = loading_errors();
    errors.push(log_file_error());
    errors.extend(sequence_paxos_errors());
    errors.extend(ble_and_combined_errors());
    errors
}

#[test]
fn every_error_variant_is_produced_and_its_message_names_the_problem() {
    let mut produced = BTreeSet::new();
    for (error, expected_text) in all_produced_errors() {
        let message = error.to_string();
        assert!(message.contains(expected_text), "{message:?} lacks {expected_text:?}");
        produced.insert(variant_name(&error));
    }
    let all: BTreeSet<&str> = ALL_VARIANTS.into_iter().collect();
    assert_eq!(produced, all, "variants without a bad input in this test");
}

#[test]
fn error_source_chains_terminate_and_never_return_self() {
    for (error, _) in all_produced_errors() {
        let mut current: &dyn Error = &error;
        for _ in 0..4 {
            let Some(source) = current.source() else {
                break;
            };
            assert!(!source.is::<ConfigError>(), "{error:?} has a ConfigError as source");
            current = source;
        }
        assert!(current.source().is_none(), "{error:?} has a source chain deeper than 4");
    }
}

#[test]
fn only_errors_with_an_inner_error_have_a_source() {
    let read = SequencePaxosConfig::from_toml_file("tests/config/no_such_file.toml").expect_err("absent");
    let source = read.source().expect("ReadFile has the io::Error");
    let io_error = source.downcast_ref::<std::io::Error>().expect("an io::Error");
    assert_eq!(io_error.kind(), std::io::ErrorKind::NotFound);
    let toml = BLEConfig::from_toml_str("config_id = [").expect_err("malformed");
    assert!(toml.source().is_some(), "Toml has the parser error");
    for (error, _) in sequence_paxos_errors() {
        assert!(error.source().is_none(), "{error:?}");
    }
    let (log_file, _) = log_file_error();
    let inner = log_file.source().expect("LogFile has the io::Error");
    assert!(inner.downcast_ref::<std::io::Error>().is_some());
}
