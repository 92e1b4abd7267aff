//! The `gatehouse` command; see [`gatehouse::cli`].

/// mimalloc in place of glibc's malloc, because the proxy allocates and frees many small
/// buffers per request. In perf profiles of the `benches/load/run.sh` workload on a
/// 2-core VM, allocation fell from about 7% to 4% of the proxy's CPU samples, at the
/// cost of about 5 MB more resident memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    gatehouse::cli::main()
}
