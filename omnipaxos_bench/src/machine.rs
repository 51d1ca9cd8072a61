//! What machine a result came from: core count, CPU model, date, compiler.

use std::time::{SystemTime, UNIX_EPOCH};

/// The facts printed with every result.
#[derive(Clone, Debug)]
pub struct MachineInfo {
    pub cores: usize,
    pub cpu_model: String,
    /// `cpu family` and `model` from /proc/cpuinfo (tells CPU generations apart under a VM).
    pub cpu_family_model: String,
    pub hypervisor: Option<String>,
    /// UTC, `YYYY-MM-DD HH:MM`.
    pub date_utc: String,
    pub rustc: String,
    /// Which source was measured: a git commit, `+ uncommitted changes` if the core or storage
    /// differ from it; `OMNIPAXOS_BENCH_REVISION` overrides (for a tree without `.git`).
    pub source_revision: String,
}

impl MachineInfo {
    pub fn detect() -> MachineInfo {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|line| line.split(':').next().is_some_and(|key| key.trim() == name))
                .and_then(|line| line.split_once(':'))
                .map(|(_, value)| value.trim().to_string())
        };
        let cpu_family_model = match (field("cpu family"), field("model")) {
            (Some(family), Some(model)) => format!("family {family}, model {model}"),
            _ => "unknown".to_string(),
        };
        let hypervisor = field("flags")
            .filter(|flags| flags.split_whitespace().any(|f| f == "hypervisor"))
            .map(|_| "yes (virtual machine)".to_string());
        MachineInfo {
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu_model: field("model name").unwrap_or_else(|| "unknown".to_string()),
            cpu_family_model,
            hypervisor,
            date_utc: utc_now(),
            rustc: rustc_version(),
            source_revision: source_revision(),
        }
    }

    /// One line for a terminal or a document.
    pub fn summary(&self) -> String {
        let vm = if self.hypervisor.is_some() { ", virtual machine" } else { "" };
        format!(
            "{} cores, {} ({}){vm}; {}; {} UTC; source {}",
            self.cores,
            self.cpu_model,
            self.cpu_family_model,
            self.rustc,
            self.date_utc,
            self.source_revision
        )
    }
}

/// The 1-, 5- and 15-minute load averages from `/proc/loadavg` (`None` where it does not exist).
/// On this 2-core machine a load above 2 means runnable work waits for a core: wall-clock
/// figures then include waiting.
pub fn load_average() -> Option<[f64; 3]> {
    parse_load_average(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

fn parse_load_average(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    Some([fields.next()?.ok()?, fields.next()?.ok()?, fields.next()?.ok()?])
}

fn source_revision() -> String {
    if let Ok(revision) = std::env::var("OMNIPAXOS_BENCH_REVISION") {
        return revision;
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8(out.stdout).ok())
    };
    let Some(commit) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".to_string();
    };
    let changed = git(&[
        "--no-optional-locks",
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "omnipaxos_core",
        "omnipaxos_storage",
    ])
    .is_some_and(|s| !s.trim().is_empty());
    let suffix = if changed { " + uncommitted changes in omnipaxos_core/omnipaxos_storage" } else { "" };
    format!("commit {}{suffix}", commit.trim())
}

fn rustc_version() -> String {
    std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string()))
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "rustc (version unknown)".to_string())
}

fn utc_now() -> String {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let minute_of_day = (seconds % 86_400) / 60;
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}", minute_of_day / 60, minute_of_day % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::{civil_from_days, parse_load_average};

    #[test]
    fn load_averages_are_the_first_three_fields() {
        assert_eq!(parse_load_average("3.00 3.68 4.22 2/411 12345\n"), Some([3.0, 3.68, 4.22]));
        assert_eq!(parse_load_average("3.00 x"), None);
    }

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
