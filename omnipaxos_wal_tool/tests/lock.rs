//! One writer per data directory, across processes: while a child process holds a storage open,
//! every open from this process and from other processes fails with `Locked` naming the
//! child's pid (100 % of attempts), and `omnipaxos_wal_tool verify` works beside it and says a
//! writer is live. When the child closes (or is killed: the kernel drops its lock), the next
//! open succeeds.
//!
//! No sleeps: the test waits for the child's lines, each wait bounded; every child is killed
//! by a guard if the test fails.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{self, Receiver},
    time::Duration,
};

use omnipaxos_core::storage::Storage;
use omnipaxos_storage::persistent_storage::{
    fs::LockState, OpenError, OpenMode, PersistentStorage, PersistentStorageConfig,
};

const CHILD: &str = env!("CARGO_BIN_EXE_omnipaxos_crash_child");
const TOOL: &str = env!("CARGO_BIN_EXE_omnipaxos_wal_tool");
/// Bound on waiting for one line of a child (a child that never answers is a failure).
const LINE_TIMEOUT: Duration = Duration::from_secs(60);
/// In-process open attempts while the child holds the lock.
const ATTEMPTS: usize = 100;
/// Other processes that try to open while the child holds the lock.
const OTHER_PROCESSES: usize = 5;

/// A child holding the storage open; killed (and reaped) on drop.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Holder {
    fn start(dir: &Path) -> Holder {
        let mut child = Command::new(CHILD)
            .arg("hold")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the holder");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Holder { child, stdin, lines }
    }

    fn next_line(&self) -> String {
        self.lines.recv_timeout(LINE_TIMEOUT).expect("the holder answers in time")
    }

    /// Closing stdin tells the child to close the storage and exit.
    fn release(&mut self) {
        drop(self.stdin.take());
        assert_eq!(self.next_line(), "closed");
        assert!(self.child.wait().expect("wait").success());
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &Path) -> PersistentStorageConfig {
    PersistentStorageConfig::new(dir, 1, 1).mode(OpenMode::Restart).segment_size_bytes(16 << 10)
}

/// Every open attempt, here and in other processes, is refused with the holder's pid.
fn assert_locked_everywhere(dir: &Path, holder_pid: u32) {
    for attempt in 0..ATTEMPTS {
        match PersistentStorage::<u64, ()>::open(&config(dir)) {
            Err(OpenError::Locked { path, holder_pid: pid }) => {
                assert_eq!((path.as_path(), pid), (dir, Some(holder_pid)), "attempt {attempt}");
            }
            other => panic!("attempt {attempt}: expected Locked, got {:?}", other.err()),
        }
    }
    for process in 0..OTHER_PROCESSES {
        let output = Command::new(CHILD).arg("try").arg(dir).output().expect("run a second writer");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(stdout.trim(), format!("locked {holder_pid}"), "process {process}");
    }
}

#[test]
fn a_second_writer_is_refused_in_every_attempt_and_the_tool_works_beside_the_first() {
    let root = tempfile::tempdir().expect("temporary directory");
    let dir = root.path().join("node1");
    let mut holder = Holder::start(&dir);
    let line = holder.next_line();
    let holder_pid: u32 =
        line.strip_prefix("holding ").and_then(|pid| pid.parse().ok()).expect("holding <pid>");
    assert_eq!(holder_pid, holder.child.id());
    assert_locked_everywhere(&dir, holder_pid);

    let read_only =
        PersistentStorage::<u64, ()>::open_read_only(&config(&dir)).expect("read beside the writer");
    assert_eq!(read_only.writer, LockState::Held { holder_pid: Some(holder_pid) });
    assert_eq!(read_only.state.log_end(), 1);
    let output = Command::new(TOOL).arg("verify").arg(&dir).output().expect("run the tool");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!("writer: live (pid {holder_pid})")), "{stdout}");

    holder.release();
    let reopened = PersistentStorage::<u64, ()>::open(&config(&dir)).expect("open after the holder closed");
    assert!(reopened.open_report().previous_session_closed);
    assert_eq!(reopened.get_log_end().expect("read"), 1);
    drop(reopened);
    let output = Command::new(TOOL).arg("verify").arg(&dir).output().expect("run the tool");
    assert!(String::from_utf8_lossy(&output.stdout).contains("writer: none"));
}

#[test]
fn a_killed_writer_leaves_no_lock_behind() {
    let root = tempfile::tempdir().expect("temporary directory");
    let dir = root.path().join("node1");
    let mut holder = Holder::start(&dir);
    let holder_pid: u32 =
        holder.next_line().strip_prefix("holding ").and_then(|pid| pid.parse().ok()).expect("holding <pid>");
    assert_locked_everywhere(&dir, holder_pid);
    holder.child.kill().expect("SIGKILL the holder");
    holder.child.wait().expect("reap the holder");
    // The lock file still names the dead holder, but the kernel released its lock.
    let reopened = PersistentStorage::<u64, ()>::open(&config(&dir)).expect("open after the kill");
    assert!(!reopened.open_report().previous_session_closed, "a kill is not a close");
    assert_eq!(reopened.get_log_end().expect("read"), 1);
}
