//! How the benchmark process gets memory for the ever-growing logs (glibc `mallopt`).
//!
//! Logs are never trimmed during a run, so a library's whole log is fresh memory unless the
//! allocator hands back memory an earlier run freed. By default glibc decides that with a
//! dynamic mmap threshold, so whether a run pays for page faults depends on the runs before it.
//! Both policies here remove that dependence:
//! - [`MemoryPolicy::Reuse`]: no `mmap` for allocations and no trimming of the heap, and the
//!   heap is grown and touched once up front ([`prefault_heap`]), so runs reuse memory (steady
//!   state, as in a server that trims its log): the figures measure the protocol, not the
//!   kernel.
//! - [`MemoryPolicy::Fresh`]: a fixed 128 KiB mmap threshold, so every large log is fresh memory
//!   and each run pays the kernel for every page its logs touch.

#![allow(unsafe_code)]

/// See the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryPolicy {
    Reuse,
    Fresh,
}

impl MemoryPolicy {
    pub fn name(self) -> &'static str {
        match self {
            MemoryPolicy::Reuse => "reuse",
            MemoryPolicy::Fresh => "fresh",
        }
    }
}

/// Sets the allocator up for `policy` (may be called again to switch). Returns false where it cannot (not glibc): then glibc's
/// or the platform's default applies.
pub fn apply(policy: MemoryPolicy) -> bool {
    let settings: &[(i32, i32)] = match policy {
        // A trim threshold of -1 disables trimming (mallopt(3)).
        MemoryPolicy::Reuse => &[(M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1)],
        // glibc's default M_MMAP_MAX is 65536; setting it undoes an earlier `Reuse`.
        MemoryPolicy::Fresh => {
            &[(M_MMAP_MAX, 65_536), (M_MMAP_THRESHOLD, 128 * 1024), (M_TRIM_THRESHOLD, 128 * 1024)]
        }
    };
    settings.iter().all(|&(parameter, value)| set(parameter, value))
}

/// Grows the heap by `bytes` and touches every page once, then frees it: under
/// [`MemoryPolicy::Reuse`] the memory stays with the process, so later allocations up to about
/// that size fault no pages.
pub fn prefault_heap(bytes: usize) {
    const PAGE_BYTES: usize = 4096;
    let mut block = vec![0u8; bytes];
    for i in (0..bytes).step_by(PAGE_BYTES) {
        block[i] = 1;
    }
    std::hint::black_box(&block);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
use libc::{M_MMAP_MAX, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD};
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const M_MMAP_MAX: i32 = 0;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const M_MMAP_THRESHOLD: i32 = 0;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const M_TRIM_THRESHOLD: i32 = 0;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set(parameter: i32, value: i32) -> bool {
    // SAFETY: mallopt only changes allocator tuning parameters; any value is accepted or
    // refused (return 0), never undefined behaviour.
    unsafe { libc::mallopt(parameter, value) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set(_parameter: i32, _value: i32) -> bool {
    false
}
