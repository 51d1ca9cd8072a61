//! The steady-state runs' memory: freed memory stays with the process and is reused (glibc
//! `mallopt`), so in-process runs measure the protocol, not the kernel.
//!
//! Logs are never trimmed during a run, so a library's whole log is fresh memory unless the
//! allocator hands back memory an earlier run freed. By default glibc decides that with a
//! dynamic mmap threshold, so whether an in-process run pays for page faults would depend on
//! the runs before it. [`keep_freed_memory`] removes that dependence for the steady-state pass:
//! no `mmap` for allocations and no trimming of the heap, and the heap is grown and touched once
//! up front ([`prefault_heap`]), as in a server that trims its log and reuses the memory.
//!
//! The headline runs do none of this: each is a process of its own with the allocator's
//! default settings (see `fresh_process`).

#![allow(unsafe_code)]

/// Makes the allocator keep and reuse freed memory: no `mmap` for allocations, no trimming of
/// the heap. Returns false where it cannot (not glibc): then the platform's default applies.
pub fn keep_freed_memory() -> bool {
    // A trim threshold of -1 disables trimming (mallopt(3)).
    [(M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1)].iter().all(|&(parameter, value)| set(parameter, value))
}

/// Grows the heap by `bytes` and touches every page once, then frees it: after
/// [`keep_freed_memory`] the memory stays with the process, so later allocations up to about
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
use libc::{M_MMAP_MAX, M_TRIM_THRESHOLD};
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const M_MMAP_MAX: i32 = 0;
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
