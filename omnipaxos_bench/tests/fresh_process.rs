//! The fresh-process pass end to end: the benchmark binary, run as a child with `--only`,
//! decides the entries asked for and reports them in a line the parent reads back.

use std::path::Path;

use omnipaxos_bench::{
    fresh_process::{spawn_child, ChildError, ChildRequest},
    suite::{Library, Workload},
};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_omnipaxos_bench"))
}

#[test]
fn a_child_run_reports_its_entries_messages_faults_and_peak_rss() {
    for (library, messages_per_flush) in [(Library::Ours, 4), (Library::OmniPaxos, 6)] {
        let request =
            ChildRequest { library, workload: Workload { cluster_size: 3, batch: 100 }, entries: 2_000 };
        let sample = spawn_child(binary(), &request).expect("the child runs");
        assert_eq!(sample.decided_entries, 2_000);
        assert_eq!(sample.delivered_messages, 20 * messages_per_flush, "{library:?}");
        assert!(!sample.elapsed.is_zero());
        assert!(sample.peak_rss_kib > 0, "the child reads its peak RSS");
    }
}

#[test]
fn a_failing_child_is_an_error_with_its_message() {
    // omnipaxos 0.2.4 refuses a single-node cluster: the child panics and exits unsuccessfully.
    let request = ChildRequest {
        library: Library::OmniPaxos,
        workload: Workload { cluster_size: 1, batch: 1 },
        entries: 1,
    };
    match spawn_child(binary(), &request) {
        Err(ChildError::Failed { stderr, .. }) => assert!(!stderr.is_empty()),
        other => panic!("expected a failed child, got {other:?}"),
    }
}
