//! Process-wide memory settings for the binaries that run the pipeline (`fvision`, `inference-sink`).

/// Limits glibc's malloc to one arena. By default glibc gives every thread that allocates its own arena
/// (up to 8 per core), and each keeps the freed blocks of the images it decoded: the decode workers, the
/// inference thread, ONNX Runtime's threads and the outputs' each held tens of MiB they no longer used.
/// Measured on 1,000 sample records through `fvision run -`: peak RSS 265 MiB with the default, 183 MiB
/// with one arena, no throughput lost (docs/benchmarks.md). Call it first thing in `main`, before any
/// thread starts; elsewhere than glibc it does nothing.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the C allocator; it is called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
