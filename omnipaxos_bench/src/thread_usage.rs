//! CPU time and page faults of the calling thread, from `getrusage(RUSAGE_THREAD)`.
//!
//! The machine is shared: wall-clock time includes time other processes held the core. The
//! thread's own CPU time (user + system) does not, and its system part shows what the kernel
//! spent on the thread, mostly page faults of fresh log memory.

#![allow(unsafe_code)]

use std::time::Duration;

/// A reading of the thread's resource usage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadUsage {
    pub user: Duration,
    pub system: Duration,
    /// Page faults served without I/O (fresh or reclaimed pages).
    pub minor_faults: u64,
}

impl ThreadUsage {
    /// The calling thread's usage so far (all zero where `RUSAGE_THREAD` does not exist).
    pub fn now() -> ThreadUsage {
        read()
    }

    /// Usage between `earlier` and `self`.
    pub fn since(&self, earlier: &ThreadUsage) -> ThreadUsage {
        ThreadUsage {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
            minor_faults: self.minor_faults.saturating_sub(earlier.minor_faults),
        }
    }

    pub fn cpu(&self) -> Duration {
        self.user + self.system
    }
}

#[cfg(target_os = "linux")]
fn read() -> ThreadUsage {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable `rusage`; getrusage writes only into it.
    let status = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    if status != 0 {
        return ThreadUsage::default();
    }
    // SAFETY: getrusage returned 0, so it filled the struct (and it was zeroed before anyway).
    let usage = unsafe { usage.assume_init() };
    let duration = |tv: libc::timeval| {
        Duration::from_secs(tv.tv_sec.max(0) as u64) + Duration::from_micros(tv.tv_usec.max(0) as u64)
    };
    ThreadUsage {
        user: duration(usage.ru_utime),
        system: duration(usage.ru_stime),
        minor_faults: usage.ru_minflt.max(0) as u64,
    }
}

#[cfg(not(target_os = "linux"))]
fn read() -> ThreadUsage {
    ThreadUsage::default()
}

#[cfg(test)]
mod tests {
    use super::ThreadUsage;

    #[test]
    fn usage_never_runs_backwards() {
        let before = ThreadUsage::now();
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = ThreadUsage::now();
        assert!(after.cpu() >= before.cpu());
        assert!(after.minor_faults >= before.minor_faults);
    }
}
