//! Tables for the terminal and the Markdown section of `docs/benchmarks.md`, and the issue's
//! targets checked against the results.

use std::fmt::Write as _;

use crate::{
    machine::MachineInfo,
    suite::{Library, SuiteResults, Workload},
};

/// The heading of the section this benchmark owns in `docs/benchmarks.md`.
pub const SECTION_HEADING: &str = "## Core throughput: side by side with omnipaxos 0.2.4 and raft 0.7";

/// The title of `docs/benchmarks.md` when this benchmark creates the file.
pub const DOCUMENT_TITLE: &str = "# Benchmarks";

/// One target of issue #5 and whether the results meet it.
#[derive(Clone, Debug)]
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    /// `None` if the workload was not run.
    pub met: Option<bool>,
}

/// `12.3 M` style.
pub fn format_rate(entries_per_s: f64) -> String {
    if entries_per_s >= 1e6 {
        format!("{:.2} M", entries_per_s / 1e6)
    } else {
        format!("{:.0} k", entries_per_s / 1e3)
    }
}

fn format_ratio(value: f64) -> String {
    if value >= 10.0 {
        format!("{value:.1}×")
    } else {
        format!("{value:.2}×")
    }
}

/// Checks the issue's targets (medians; ratios are medians of per-repetition ratios).
pub fn check_targets(results: &SuiteResults) -> Vec<TargetCheck> {
    let mut checks = Vec::new();
    let ours = |n, batch| results.get(Library::Ours, Workload { cluster_size: n, batch });
    let rate_target = |checks: &mut Vec<TargetCheck>, n: usize, minimum: f64| {
        let m = ours(n, 1000);
        checks.push(TargetCheck {
            target: format!("n = {n}, B = 1000: ≥ {:.0} M entries/s", minimum / 1e6),
            measured: m.map_or("not run".into(), |m| format_rate(m.entries_per_s().median)),
            met: m.map(|m| m.entries_per_s().median >= minimum),
        });
    };
    rate_target(&mut checks, 3, 20e6);
    for (peer, minimum) in [(Library::OmniPaxos, 1.3), (Library::Raft, 10.0)] {
        let ratio = results.paired_speedup(peer, Workload { cluster_size: 3, batch: 1000 });
        checks.push(TargetCheck {
            target: format!("n = 3, B = 1000: ≥ {minimum}× {}", peer.name()),
            measured: ratio.map_or("not run".into(), |r| format_ratio(r.median)),
            met: ratio.map(|r| r.median >= minimum),
        });
    }
    rate_target(&mut checks, 5, 13e6);
    for library in [Library::Ours, Library::OursPiggyback] {
        let latency = results.get(library, Workload { cluster_size: 3, batch: 1 });
        let who = if library == Library::Ours { "" } else { " (piggyback_decide)" };
        checks.push(TargetCheck {
            target: format!("n = 3, B = 1: ≤ 500 ns per entry{who}"),
            measured: latency.map_or("not run".into(), |m| format!("{:.0} ns", m.ns_per_entry())),
            met: latency.map(|m| m.ns_per_entry() <= 500.0),
        });
        checks.push(TargetCheck {
            target: format!("n = 3, B = 1: ≤ 4 messages per decided entry{who}"),
            measured: latency.map_or("not run".into(), |m| format!("{:.2}", m.messages_per_entry())),
            met: latency.map(|m| m.messages_per_entry() <= 4.0),
        });
    }
    for n in [3, 5] {
        let m = ours(n, 1000);
        checks.push(TargetCheck {
            target: format!("n = {n}, B = 1000: < 1 heap allocation per entry"),
            measured: m.map_or("not run".into(), |m| format!("{:.3}", m.allocations_per_entry())),
            met: m.map(|m| m.allocations_per_entry() < 1.0),
        });
        let share = results.paired_speedup(Library::Null, Workload { cluster_size: n, batch: 1000 });
        checks.push(TargetCheck {
            target: format!("n = {n}, B = 1000: ≥ 50% of the null protocol's entries/s"),
            measured: share.map_or("not run".into(), |s| format!("{:.0}%", 100.0 * s.median)),
            met: share.map(|s| s.median >= 0.5),
        });
    }
    checks
}

fn met_word(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "—",
    }
}

/// The results as plain-text tables for the terminal; `fresh` is the optional second pass with
/// fresh memory.
pub fn text_report(results: &SuiteResults, fresh: Option<&SuiteResults>, machine: &MachineInfo) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "machine: {}", machine.summary());
    for pass in std::iter::once(results).chain(fresh) {
        let _ = writeln!(
            out,
            "\nmemory policy {}: {} repetitions, about {:.2} s of CPU time per run; median (min-max); \
             rates per CPU-second of the benchmark thread, wall-clock rate beside",
            pass.options.memory_policy.name(),
            pass.options.repetitions,
            pass.options.run_duration.as_secs_f64()
        );
        write_text_table(&mut out, pass);
    }
    let _ = writeln!(out, "\ntargets (issue #5): reuse | fresh");
    for (check, fresh_check) in paired_checks(results, fresh) {
        let fresh_part = fresh_check
            .filter(|c| c.met.is_some())
            .map_or(String::new(), |c| format!(" | {} {}", met_word(c.met), c.measured));
        let _ =
            writeln!(out, "  {:<55} {} {}{fresh_part}", check.target, met_word(check.met), check.measured);
    }
    out
}

/// Each target checked on the main results, with the same target checked on the fresh pass.
fn paired_checks(
    results: &SuiteResults,
    fresh: Option<&SuiteResults>,
) -> Vec<(TargetCheck, Option<TargetCheck>)> {
    let fresh_checks = fresh.map(check_targets);
    check_targets(results)
        .into_iter()
        .enumerate()
        .map(|(i, check)| (check, fresh_checks.as_ref().and_then(|f| f.get(i).cloned())))
        .collect()
}

fn write_text_table(out: &mut String, results: &SuiteResults) {
    let header = [
        "entries/CPU-s med (min-max)",
        "ns/entry",
        "wall e/s",
        "msgs/entry",
        "allocs/entry",
        "faults/entry",
        "kernel",
        "ours / it",
    ];
    let _ = writeln!(
        out,
        "{:>2} {:>5}  {:<22} {:>28} {:>9} {:>10} {:>10} {:>12} {:>12} {:>7} {:>10}",
        "n",
        "B",
        "library",
        header[0],
        header[1],
        header[2],
        header[3],
        header[4],
        header[5],
        header[6],
        header[7]
    );
    for workload in results.workloads() {
        for library in Library::ALL {
            let Some(m) = results.get(library, workload) else { continue };
            let rate = m.entries_per_s();
            let spread = format!(
                "{} ({} - {})",
                format_rate(rate.median),
                format_rate(rate.min),
                format_rate(rate.max)
            );
            let ratio = match library {
                Library::Ours => "-".to_string(),
                peer => results.paired_speedup(peer, workload).map_or("-".into(), |r| format_ratio(r.median)),
            };
            let _ = writeln!(
                out,
                "{:>2} {:>5}  {:<22} {:>28} {:>9.1} {:>10} {:>10.3} {:>12.3} {:>12.4} {:>6.0}% {:>10}",
                workload.cluster_size,
                workload.batch,
                library.name(),
                spread,
                m.ns_per_entry(),
                format_rate(m.entries_per_wall_s().median),
                m.messages_per_entry(),
                m.allocations_per_entry(),
                m.page_faults_per_entry(),
                100.0 * m.system_share(),
                ratio
            );
        }
    }
}

/// How to regenerate the section; written into it.
pub struct Provenance<'a> {
    pub command: &'a str,
    pub chart_file_name: &'a str,
    pub smoke: bool,
}

/// The Markdown section, from its heading to its end.
pub fn markdown_section(
    results: &SuiteResults,
    fresh: Option<&SuiteResults>,
    machine: &MachineInfo,
    provenance: &Provenance,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{SECTION_HEADING}\n");
    if provenance.smoke {
        let _ = writeln!(
            s,
            "**Smoke run: a tiny workload to check the benchmark runs; the numbers mean nothing.**\n"
        );
    }
    let _ = writeln!(s, "Regenerate this section and the chart (from the workspace root):\n");
    let _ = writeln!(s, "```sh\n{}\n```\n", provenance.command);
    let _ = writeln!(
        s,
        "Measured {} UTC at {} on {} cores, {} ({}){}; {}. {} repetitions (after {} discarded) of about \
         {:.2} s of CPU time (at most {} M entries) per library and workload, the libraries \
         interleaved; medians with (min–max). Memory policy `{}`, and a separate pass with `fresh` \
         (see below).\n",
        machine.date_utc,
        machine.source_revision,
        machine.cores,
        machine.cpu_model,
        machine.cpu_family_model,
        if machine.hypervisor.is_some() { ", a virtual machine shared with other work" } else { "" },
        machine.rustc,
        results.options.repetitions,
        results.options.warmup_repetitions,
        results.options.run_duration.as_secs_f64(),
        results.options.max_entries_per_run as f64 / 1e6,
        results.options.memory_policy.name()
    );
    write_method(&mut s);
    write_results_table(&mut s, results, "### Results (memory policy `reuse`)");
    write_ratio_table(&mut s, results);
    if let Some(fresh) = fresh {
        write_results_table(&mut s, fresh, "### B = 1000 with fresh memory (policy `fresh`)");
        write_ratio_table(&mut s, fresh);
    }
    let _ = writeln!(s, "### Targets (issue #5)\n");
    let _ = writeln!(
        s,
        "Medians; throughput ratios are medians of per-repetition ratios.\n\n\
         | Target | Steady state (`reuse`) | | Fresh memory (`fresh`) | |\n|---|---|---|---|---|"
    );
    for (check, fresh_check) in paired_checks(results, fresh) {
        let (fresh_measured, fresh_met) = match fresh_check.filter(|c| c.met.is_some()) {
            Some(c) => (c.measured, met_word(c.met)),
            None => ("not run".to_string(), "—"),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            check.target,
            check.measured,
            met_word(check.met),
            fresh_measured,
            fresh_met
        );
    }
    let _ = writeln!(s, "\n![Entries per second by library and workload]({})\n", provenance.chart_file_name);
    write_caveats(&mut s);
    s
}

fn write_method(s: &mut String) {
    let text = "\
### How it is measured

- **One process, one thread, one loop.** Every library implements one `Node` trait (propose,
  step, drain, receiver, decided index) and runs through the same delivery loop. A *flush*
  proposes B 8-byte entries at the leader, then delivers in rounds until the cluster is quiet:
  each round drains every node (its durability point) and delivers everything drained. All n
  nodes share one core; entries/s counts entries decided at the leader.
- **Ours:** `SequencePaxos` over `MemoryStorage`, default configuration; leader chosen by
  `handle_leader(Ballot::with(1, 1, 0, 1))` on every node (Ballot Leader Election adds nothing
  to a throughput run and is not used). Batching is the library's own: entries appended between
  two `take_outgoing_messages` calls are one write and one AcceptDecide per follower; the
  decided index rides on the next AcceptDecide, or goes as a Decide when none is pending at take
  time. The leader drains `take_proposal_outcomes` after every flush, as a user would. Each log
  slot carries a 24-byte proposal id next to the 8-byte entry.
- **Ours, `piggyback_decide`:** the same with `set_piggyback_decide(true)`, the one setting
  changed: a decided index only rides on the next AcceptDecide (or goes out at the next tick,
  which this harness never gives), so followers learn decisions one flush later and a flush
  costs 2(n−1) messages.
- **omnipaxos 0.2.4:** `OmniPaxos` over its `MemoryStorage`, default `ServerConfig`
  (`batch_size = 1`); leader chosen by `try_become_leader()`; decided index read with
  `get_decided_idx`.
- **raft 0.7:** `RawNode` over `MemStorage` (protobuf codec), `max_size_per_msg = NO_LIMIT`,
  `max_inflight_msgs = 4096`, `batch_append = true`, commit broadcast on (the default); leader
  by `campaign()`. Every `Ready` is persisted (entries, hard state) before any of its messages
  is sent; committed entries are taken and counted, then `advance` and `advance_apply`.
- **Null protocol:** the leader copies new entries into one message per follower, followers
  append and ack their log length, the leader counts a majority. No ballots, ids, storage
  calls or failure handling: the floor of this harness.
- **Time:** the benchmark thread's CPU time (user + system, `getrusage(RUSAGE_THREAD)`), not
  wall-clock time: the machine is shared, and CPU time leaves out the time other processes held
  the core. On a quiet machine the two agree; the wall-clock rate is reported beside.
- **Counted:** messages delivered per decided entry; heap allocations (calls to `alloc`,
  `alloc_zeroed` and `realloc`, by a counting global allocator) per decided entry; minor page
  faults per decided entry. Building the cluster, electing and a 10% warm-up are not measured.
- **Memory:** logs are never trimmed, so every library keeps its whole log in memory. The main
  pass uses policy `reuse`: the allocator never returns memory to the kernel and a discarded
  warm-up repetition grows the heap first, so runs reuse memory (steady state, as in a server
  that trims its log) and measure the protocol rather than the kernel; the process touches
  1.5 GiB of heap once up front for that. A separate pass (run first, before the heap grows)
  repeats B = 1000 with policy `fresh`: every large log is fresh memory, and each first touch of a
  4 KiB page costs about 1.5–3 µs on this VM, i.e. n × (bytes per log slot) / 4096 faults per
  entry (the page-fault column shows what a run paid). Without either policy, glibc's dynamic
  mmap threshold makes a run's page faults depend on the runs before it.
- Built with `lto = true`, `codegen-units = 1` (profile `release-lto`).
";
    s.push_str(text);
    s.push('\n');
}

fn write_results_table(s: &mut String, results: &SuiteResults, heading: &str) {
    let _ = writeln!(s, "{heading}\n");
    let _ = writeln!(
        s,
        "Entries/s and ns/entry are per CPU-second of the benchmark thread; the wall-clock rate is \
         beside them. \"Kernel\" is the share of that CPU time spent in the kernel, mostly \
         page faults of fresh log memory.\n"
    );
    let _ = writeln!(
        s,
        "| n | B | Library | Entries/s median (min–max) | ns/entry | Wall-clock entries/s | Msgs/entry | \
         Allocs/entry | Page faults/entry | Kernel |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for workload in results.workloads() {
        for library in Library::ALL {
            let Some(m) = results.get(library, workload) else { continue };
            let rate = m.entries_per_s();
            let name = if library == Library::Ours {
                format!("**{}**", library.name())
            } else {
                library.name().into()
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} ({}–{}) | {:.1} | {} | {:.3} | {:.3} | {:.4} | {:.0}% |",
                workload.cluster_size,
                workload.batch,
                name,
                format_rate(rate.median),
                format_rate(rate.min),
                format_rate(rate.max),
                m.ns_per_entry(),
                format_rate(m.entries_per_wall_s().median),
                m.messages_per_entry(),
                m.allocations_per_entry(),
                m.page_faults_per_entry(),
                100.0 * m.system_share()
            );
        }
    }
    s.push('\n');
}

fn write_ratio_table(s: &mut String, results: &SuiteResults) {
    let _ = writeln!(
        s,
        "Ours relative to each peer. Entries/s ratios are per repetition (ours and the peer ran back \
         to back): median (min–max). Message and allocation columns are ours ÷ theirs per entry \
         (below 1 is better).\n"
    );
    let _ = writeln!(
        s,
        "| n | B | ÷ omnipaxos entries/s | ÷ raft entries/s | share of null entries/s | Msgs ÷ omnipaxos / raft / null | Allocs ÷ omnipaxos / raft / null |\n\
         |---|---|---|---|---|---|---|"
    );
    for workload in results.workloads() {
        let Some(ours) = results.get(Library::Ours, workload) else { continue };
        let speedup = |peer| {
            results.paired_speedup(peer, workload).map_or("—".to_string(), |r| {
                format!("{} ({}–{})", format_ratio(r.median), format_ratio(r.min), format_ratio(r.max))
            })
        };
        let null_share = results.paired_speedup(Library::Null, workload).map_or("—".to_string(), |r| {
            format!("{:.0}% ({:.0}–{:.0}%)", 100.0 * r.median, 100.0 * r.min, 100.0 * r.max)
        });
        let per_entry = |f: &dyn Fn(&crate::suite::Measurement) -> f64| {
            [Library::OmniPaxos, Library::Raft, Library::Null]
                .iter()
                .map(|&peer| {
                    results.get(peer, workload).map_or("—".to_string(), |m| {
                        let theirs = f(m);
                        if theirs == 0.0 {
                            "—".to_string()
                        } else {
                            format!("{:.2}", f(ours) / theirs)
                        }
                    })
                })
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            workload.cluster_size,
            workload.batch,
            speedup(Library::OmniPaxos),
            speedup(Library::Raft),
            null_share,
            per_entry(&|m| m.messages_per_entry()),
            per_entry(&|m| m.allocations_per_entry())
        );
    }
    s.push('\n');
}

fn write_caveats(s: &mut String) {
    let text = "\
### Caveats

- The machine is a 2-core VM shared with other work: runs vary by tens of percent; compare
  ratios from the same run, not figures across runs.
- Serialization is not measured (omnipaxos and ours move Rust values; raft's messages are
  protobuf structs but are not encoded either). Raft hands committed entries out in each
  `Ready` (a copy); ours and omnipaxos are only asked for their decided index.
- Raft at B = 1 pays one `Vec<u8>` per proposal by its API (`propose(context, data)`).
- Runs are capped at 2 M entries (memory), so the fastest libraries run for well under the
  0.25 s target; the null protocol's runs last a few milliseconds and vary the most.
- Profile one workload with `valgrind --tool=callgrind target/release-lto/omnipaxos_bench
  --only ours --cluster-size 3 --batch 1000 --entries 1000000` (also `ours-piggyback`,
  `omnipaxos`, `raft`, `null`; `--memory fresh` for fresh pages).
";
    s.push_str(text);
}

/// Replaces this benchmark's section in `existing` (from its heading to the next `## ` heading
/// or the end), or appends it; with no existing document, a new one with a title.
pub fn replace_section(existing: Option<&str>, section: &str) -> String {
    replace_named_section(existing, SECTION_HEADING, section)
}

/// Replaces the section headed `heading` in `existing` (from the heading to the next `## `
/// heading or the end), or appends it; with no existing document, a new one with a title.
pub fn replace_named_section(existing: Option<&str>, heading: &str, section: &str) -> String {
    let section = section.trim_end_matches('\n');
    let Some(existing) = existing else {
        return format!("{DOCUMENT_TITLE}\n\n{section}\n");
    };
    let lines: Vec<&str> = existing.lines().collect();
    let Some(start) = lines.iter().position(|l| l.trim_end() == heading) else {
        let body = existing.trim_end_matches('\n');
        return format!("{body}\n\n{section}\n");
    };
    let end = lines[start + 1..].iter().position(|l| l.starts_with("## ")).map(|i| start + 1 + i);
    let mut out = String::new();
    for line in &lines[..start] {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(section);
    out.push('\n');
    if let Some(end) = end {
        out.push('\n');
        for line in &lines[end..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "## Core throughput: side by side with omnipaxos 0.2.4 and raft 0.7\n\nnew\n";

    #[test]
    fn a_new_document_gets_a_title_and_the_section() {
        assert_eq!(replace_section(None, OURS), format!("# Benchmarks\n\n{OURS}"));
    }

    #[test]
    fn only_our_section_is_replaced() {
        let before = "# Benchmarks\n\n## Durable storage (omnipaxos_storage)\n\ntheirs\n\n\
                      ## Core throughput: side by side with omnipaxos 0.2.4 and raft 0.7\n\nold\nold\n\n\
                      ## Later\n\nkept\n";
        let after = replace_section(Some(before), OURS);
        assert_eq!(
            after,
            "# Benchmarks\n\n## Durable storage (omnipaxos_storage)\n\ntheirs\n\n\
             ## Core throughput: side by side with omnipaxos 0.2.4 and raft 0.7\n\nnew\n\n## Later\n\nkept\n"
        );
    }

    #[test]
    fn a_document_without_our_section_gets_it_appended() {
        let before = "# Benchmarks\n\n## Durable storage (omnipaxos_storage)\n\ntheirs\n";
        let after = replace_section(Some(before), OURS);
        assert_eq!(after, format!("{before}\n{OURS}"));
    }

    #[test]
    fn our_section_at_the_end_is_replaced_to_the_end() {
        let before = format!("# Benchmarks\n\n{}\n\nold\n", SECTION_HEADING);
        assert_eq!(replace_section(Some(&before), OURS), format!("# Benchmarks\n\n{OURS}"));
    }
}
