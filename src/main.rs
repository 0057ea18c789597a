//! The `larder` binary: everything lives in the library; see [`larder::cli`].

fn main() -> std::process::ExitCode {
    keep_large_blocks_mapped();
    larder::cli::main()
}

/// glibc's malloc serves blocks of 128 KiB and more with their own mappings, given back when
/// freed, but by default it raises that threshold to the largest such block ever freed (a
/// 512 KiB read chunk, say) and from then on carves those blocks out of per-thread heaps that
/// fragment: under write traffic the 5-minute soak grew from 30 to 400 MiB. Fixing the
/// threshold keeps it flat at 30 MiB (ARCHITECTURE.md, "Memory").
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_large_blocks_mapped() {
    // SAFETY: mallopt only sets allocator parameters; called first thing, before any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_large_blocks_mapped() {}
