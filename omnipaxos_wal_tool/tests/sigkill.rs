//! A real process over the real file system is killed with SIGKILL mid-workload and restarted
//! with `fail_recovery()`: nothing it acknowledged is lost, nothing it never proposed appears,
//! and the restarted cluster goes on deciding. Between the runs `omnipaxos_wal_tool verify`
//! must accept every replica's directory.
//!
//! Deterministic apart from where the kill lands: no sleeps; the parent reads the child's
//! acknowledgements from its stdout and kills it right after the N-th one.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
};

const CHILD: &str = env!("CARGO_BIN_EXE_omnipaxos_crash_child");
const TOOL: &str = env!("CARGO_BIN_EXE_omnipaxos_wal_tool");
/// Values the child proposes at a time (`BATCH` in the child).
const BATCH: u64 = 4;
/// Values of the second run start here, so the runs' values never collide.
const SECOND_RUN_FIRST: u64 = 1_000_000;

/// What one run of the child printed.
#[derive(Debug, Default)]
struct Run {
    compacted: u64,
    /// Replica 1's decided log after recovery and synchronisation: index -> value.
    decided: BTreeMap<u64, u64>,
    /// value -> index, for every acknowledged value.
    acks: BTreeMap<u64, u64>,
    done: bool,
}

impl Run {
    fn parse(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |position: usize| -> u64 { words[position].parse().expect("a number") };
        match words.first().copied() {
            Some("compacted") => self.compacted = number(1),
            Some("decided") => assert!(self.decided.insert(number(1), number(2)).is_none(), "index twice"),
            Some("ack") => assert!(self.acks.insert(number(1), number(2)).is_none(), "value acked twice"),
            Some("done") => self.done = true,
            _ => {}
        }
    }
}

/// Runs the child; kills it with SIGKILL after `kill_after_acks` acks if given.
fn run_child(mode: &str, root: &Path, first: u64, count: u64, kill_after_acks: Option<usize>) -> Run {
    let mut child = Command::new(CHILD)
        .args([mode, root.to_str().expect("utf-8 path"), &first.to_string(), &count.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut run = Run::default();
    let mut killed = false;
    let mut line = String::new();
    // Read to the end, also after the kill: every complete line was printed, so acknowledged,
    // before the child died; a line without its newline was torn by the kill.
    loop {
        line.clear();
        if stdout.read_line(&mut line).expect("read the child's stdout") == 0 || !line.ends_with('\n') {
            break;
        }
        run.parse(line.trim_end());
        if !killed && kill_after_acks.is_some_and(|limit| run.acks.len() >= limit) {
            child.kill().expect("SIGKILL the child");
            killed = true;
        }
    }
    let status = child.wait().expect("wait for the child");
    if kill_after_acks.is_none() {
        assert!(status.success(), "the child failed: {status}");
    }
    run
}

fn verify_with_tool(dir: &Path) {
    let output = Command::new(TOOL).arg("verify").arg(dir).output().expect("run the tool");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "verify {}: {stdout}{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("OK"), "{stdout}");
}

#[test]
fn a_killed_cluster_loses_no_acknowledged_value_and_goes_on_deciding() {
    let root = tempfile::tempdir().expect("temporary directory");
    let first_run = run_child("start", root.path(), 1, 100_000, Some(450));
    assert!(first_run.acks.len() >= 450, "the child acknowledged {} values", first_run.acks.len());
    assert!(!first_run.done, "the child was killed mid-workload");
    for node in 1..=3 {
        verify_with_tool(&root.path().join(format!("node{node}")));
    }

    let second_run = run_child("restart", root.path(), SECOND_RUN_FIRST, 40, None);
    assert!(second_run.done, "the restarted cluster finished its workload");
    assert!(second_run.compacted > 0, "the first run trimmed its log");
    for (value, idx) in &first_run.acks {
        if *idx >= second_run.compacted {
            assert_eq!(second_run.decided.get(idx), Some(value), "acknowledged value {value} at {idx} lost");
        }
    }
    // The child proposes one batch at a time and prints its acks before the next batch.
    let proposed_first = first_run.acks.keys().max().copied().unwrap_or(0) + BATCH;
    for (idx, value) in &second_run.decided {
        assert!((1..=proposed_first).contains(value), "value {value} at {idx} was never proposed");
    }
    let highest_acked = first_run.acks.values().max().copied().unwrap_or(0);
    assert!(second_run.decided.keys().max().copied().unwrap_or(0) >= highest_acked, "decided log too short");
    assert_eq!(second_run.acks.len(), 40, "the restarted cluster decides new values");
    for (value, idx) in &second_run.acks {
        assert!(*value >= SECOND_RUN_FIRST && *idx > highest_acked, "new value {value} at {idx}");
    }
    for node in 1..=3 {
        verify_with_tool(&root.path().join(format!("node{node}")));
    }
}
