//! Handing memory that the allocator keeps after it was freed back to the system.

/// Asks glibc's allocator to return the free pages of all its arenas to the system.
///
/// Parsing a config takes several times the memory the built gateway keeps: with the
/// 10,000 routes of `benches/load/memory.sh`, heaptrack showed a peak heap of 44 MB
/// against 13 MB kept. glibc returns freed memory on its own only from the top of a
/// heap, and the gateway's allocations sit among the freed ones, so without this
/// call the process stays near the parse's peak. The call walks and locks every arena for a few milliseconds, so it
/// belongs after a load or reload, not on a request path.
///
/// It reaches only memory that glibc's `malloc` manages, which is the Rust heap while
/// the binary uses the system allocator.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_freed_memory() {
    // SAFETY: malloc_trim takes no pointers and changes only glibc's own free lists,
    // under the arena locks that every other allocator call takes too.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Does nothing: other C libraries have no `malloc_trim`, and their allocators return
/// freed memory on their own or not at all.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_freed_memory() {}
