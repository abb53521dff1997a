//! glibc's allocator, told to keep fewer arenas.
//!
//! glibc gives threads that allocate at the same time arenas of their own (up to 8 per core)
//! and keeps what is freed in each for reuse by that arena. The pipeline allocates decoded
//! tiles (192 KiB each), chips and tensors on tokio's many blocking threads and frees them on
//! others, so freed memory piles up in arenas no thread reuses soon. Two arenas cut peak memory
//! by about a third at no cost in time (docs/PERFORMANCE.md, "Two malloc arenas").

/// Arenas glibc may use (`M_ARENA_MAX`).
pub const ARENAS: i32 = 2;

/// Sets `M_ARENA_MAX` to [`ARENAS`] unless the environment already chose
/// (`MALLOC_ARENA_MAX`, which glibc reads itself). Call before any other thread starts:
/// arenas already made stay. Does nothing on other C libraries.
pub fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only reads its two integer arguments; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}
