//! `lobster`: see [`lobster_master::cli`].

/// mimalloc rather than glibc's malloc: at thousands of slaves the master allocates and frees
/// a few small buffers per message (decoded intervals, names, acknowledgements), and glibc's
/// free lists (`malloc_consolidate`, `unlink_chunk`) were about a tenth of its core
/// (docs/reliability.md, "The control plane at scale").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    lobster_master::cli::main()
}
