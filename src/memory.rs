//! Returning freed heap to the system.
//!
//! glibc's malloc gives memory back only from the top of each arena; the holes that decoding
//! a page of a list leaves (a page of pods is megabytes of JSON) stay resident. After the
//! caches' initial lists and then every half minute, `malloc_trim(0)` releases every whole
//! free page (glibc ≥ 2.8 `madvise`s them away), so the resident size follows the live heap.
//! Elsewhere (musl, other systems) this does nothing.

use std::time::Duration;

/// How often the heap is trimmed after the first time.
pub const TRIM_PERIOD: Duration = Duration::from_secs(30);

/// Releases free heap pages now.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and shrinks malloc's own free lists; it takes the arena
    // locks itself and touches no memory the program owns.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trims now and then every [`TRIM_PERIOD`] until dropped.
pub fn spawn_trimmer() -> Trimmer {
    Trimmer(tokio::spawn(async {
        let mut tick = tokio::time::interval(TRIM_PERIOD);
        loop {
            tick.tick().await;
            trim();
        }
    }))
}

/// The trimming task; stops when dropped.
pub struct Trimmer(tokio::task::JoinHandle<()>);

impl Drop for Trimmer {
    fn drop(&mut self) {
        self.0.abort();
    }
}
