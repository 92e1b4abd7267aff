//! The `gatehouse` command; see [`gatehouse::cli`].

/// jemalloc in place of glibc's malloc, which took about 7% of the proxy's CPU samples
/// in perf profiles of the `benches/load/run.sh` workload on a 2-core VM. mimalloc cut
/// CPU per request about as much but peaked about 24 MiB higher in
/// `benches/load/memory.sh`. jemalloc keeps freed pages for a decay time of seconds,
/// so `memory::release_freed_memory` purges them after each config load.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    gatehouse::cli::main()
}
