//! Heap trimming: hands memory that a burst freed back to the OS.
//!
//! glibc's malloc keeps freed memory in its arenas and returns it only when asked: after
//! 19,000 members join one topic (each is pushed the whole roster as text) the server
//! held over 1 GiB it no longer used. Owns one periodic check: when the arenas hold
//! [`SLACK`] more free bytes than at the last trim, `malloc_trim` returns the free
//! pages. Must not change how anything allocates; elsewhere than glibc it does nothing.

use std::time::Duration;

/// How often the arenas are looked at.
const PERIOD: Duration = Duration::from_secs(10);

/// Newly freed bytes worth a trim; below it a trim's cost (walking the arenas under
/// their locks) buys too little.
const SLACK: usize = 64 << 20;

/// Trims when the arenas hold [`SLACK`] more free bytes than after the last trim
/// (`last_free`, updated). Returns the resident bytes given back, when it trimmed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn trim_if_worth(last_free: &mut usize) -> Option<usize> {
    // SAFETY: mallinfo2 and malloc_trim only read and adjust glibc's own allocator
    // state, under its locks; they take no pointers from us.
    let free = unsafe { libc::mallinfo2() }.fordblks;
    if free < last_free.saturating_add(SLACK) {
        // Memory freed earlier and reused since lowers the mark for the next burst.
        *last_free = (*last_free).min(free);
        return None;
    }
    *last_free = free;
    let before = resident_bytes();
    // SAFETY: as above.
    unsafe { libc::malloc_trim(0) };
    Some(before.saturating_sub(resident_bytes()))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn trim_if_worth(_last_free: &mut usize) -> Option<usize> {
    None
}

/// Resident set size, from /proc (0 if unreadable).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn resident_bytes() -> usize {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<usize>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * usize::try_from(page).unwrap_or(4096)
}

/// Checks every [`PERIOD`] on the current actix system, logging what a trim returned.
pub(crate) fn trim_periodically() {
    actix::spawn(async {
        let mut last_free = 0;
        let mut ticks = actix::clock::interval(PERIOD);
        loop {
            ticks.tick().await;
            if let Some(returned) = trim_if_worth(&mut last_free) {
                log::info!("returned {} MiB of freed heap to the OS", returned >> 20);
            }
        }
    });
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn a_freed_burst_goes_back_to_the_os() {
        // 256 MiB in blocks small enough to stay in the arena (not mmapped), touched so
        // they are resident, then freed; on a thread of its own, as a worker would.
        let returned = std::thread::spawn(|| {
            let blocks: Vec<Box<[u8; 256]>> = (0..1 << 20).map(|_| Box::new([1; 256])).collect();
            drop(blocks);
            let mut last_free = 0;
            let returned = trim_if_worth(&mut last_free).expect("256 MiB freed is worth a trim");
            assert!(last_free >= SLACK);
            assert_eq!(
                trim_if_worth(&mut last_free),
                None,
                "nothing newly freed: no second trim"
            );
            returned
        })
        .join()
        .unwrap();
        assert!(returned >= 128 << 20, "returned only {returned} bytes");
    }
}
