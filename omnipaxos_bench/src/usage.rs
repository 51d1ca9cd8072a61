//! CPU time, page faults and peak memory from `getrusage`: of the calling thread (the in-process
//! steady-state runs) or of the whole process (the fresh-process runs).
//!
//! The machine is shared: wall-clock time includes time other processes held the core. The
//! thread's own CPU time (user + system) does not, and its system part shows what the kernel
//! spent on the thread, mostly page faults of fresh log memory.

#![allow(unsafe_code)]

use std::time::Duration;

/// A reading of resource usage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub user: Duration,
    pub system: Duration,
    /// Page faults served without I/O (fresh or reclaimed pages).
    pub minor_faults: u64,
    /// Peak resident set size in KiB (`ru_maxrss`): of the process even in a thread reading,
    /// since Linux keeps it per process. A high-water mark, never a difference.
    pub max_rss_kib: u64,
}

impl Usage {
    /// The calling thread's usage so far (all zero where `RUSAGE_THREAD` does not exist).
    pub fn thread() -> Usage {
        read(Who::Thread)
    }

    /// The whole process's usage so far (all zero where `getrusage` does not exist).
    pub fn process() -> Usage {
        read(Who::Process)
    }

    /// Usage between `earlier` and `self`; the peak RSS stays `self`'s (a high-water mark).
    pub fn since(&self, earlier: &Usage) -> Usage {
        Usage {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
            minor_faults: self.minor_faults.saturating_sub(earlier.minor_faults),
            max_rss_kib: self.max_rss_kib,
        }
    }

    pub fn cpu(&self) -> Duration {
        self.user + self.system
    }
}

#[derive(Clone, Copy)]
enum Who {
    Thread,
    Process,
}

#[cfg(target_os = "linux")]
fn read(who: Who) -> Usage {
    let who = match who {
        Who::Thread => libc::RUSAGE_THREAD,
        Who::Process => libc::RUSAGE_SELF,
    };
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable `rusage`; getrusage writes only into it.
    let status = unsafe { libc::getrusage(who, usage.as_mut_ptr()) };
    if status != 0 {
        return Usage::default();
    }
    // SAFETY: getrusage returned 0, so it filled the struct (and it was zeroed before anyway).
    let usage = unsafe { usage.assume_init() };
    let duration = |tv: libc::timeval| {
        Duration::from_secs(tv.tv_sec.max(0) as u64) + Duration::from_micros(tv.tv_usec.max(0) as u64)
    };
    Usage {
        user: duration(usage.ru_utime),
        system: duration(usage.ru_stime),
        minor_faults: usage.ru_minflt.max(0) as u64,
        // Linux reports ru_maxrss in KiB.
        max_rss_kib: usage.ru_maxrss.max(0) as u64,
    }
}

#[cfg(not(target_os = "linux"))]
fn read(_who: Who) -> Usage {
    Usage::default()
}

#[cfg(test)]
mod tests {
    use super::Usage;

    #[test]
    fn usage_never_runs_backwards() {
        for read in [Usage::thread, Usage::process] {
            let before = read();
            let mut x = 0u64;
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
            let after = read();
            assert!(after.cpu() >= before.cpu());
            assert!(after.minor_faults >= before.minor_faults);
            assert!(after.max_rss_kib >= before.max_rss_kib);
        }
    }

    #[test]
    fn touching_fresh_memory_raises_the_process_peak_rss() {
        let before = Usage::process();
        let block = vec![1u8; 64 << 20];
        std::hint::black_box(&block);
        let after = Usage::process();
        // The peak is at least the current RSS, which holds the whole block now.
        assert!(after.max_rss_kib >= 64 << 10, "{before:?} -> {after:?}");
        assert!(after.minor_faults > before.minor_faults);
    }
}
