//! Handing memory that the allocator keeps after it was freed back to the system.

/// Asks jemalloc, the binary's global allocator (see `main.rs`), to return the unused
/// pages of all its arenas to the system now.
///
/// Parsing a config takes several times the memory the built gateway keeps: with the
/// 10,000 routes of `benches/load/memory.sh`, heaptrack showed a peak heap of 44 MB
/// against 13 MB kept. jemalloc returns freed pages on its own only after a decay time
/// of seconds, so without this call a freshly started or reloaded gateway reports the
/// parse's peak as resident. The call walks every arena, so it belongs after a load or
/// reload, not on a request path.
///
/// In a process whose global allocator is another one, such as the library's tests,
/// jemalloc manages no memory and the call releases nothing.
#[allow(unsafe_code)]
pub fn release_freed_memory() {
    // `MALLCTL_ARENAS_ALL` in jemalloc 5's public header: the index that names every
    // arena at once.
    const PURGE_ALL_ARENAS: &std::ffi::CStr = c"arena.4096.purge";
    // SAFETY: the name is a NUL-terminated string, and `arena.<i>.purge` takes no old
    // or new value, so every other pointer is null and the new length 0.
    let status = unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL_ARENAS.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if status != 0 {
        tracing::debug!(status, "jemalloc did not purge its arenas");
    }
}
