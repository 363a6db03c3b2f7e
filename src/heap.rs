//! Keeps the heap's free memory from counting in nodelet's RSS. glibc keeps what a burst once
//! took (30 pods started at once, each container with thousands of Service variables; a full
//! proxy sync) in its free lists, where it stays resident until `malloc_trim` hands the free
//! pages back: in the agent benchmark that was 60 of its 110 MB. So large blocks get their own
//! mappings (returned on free), and a pass every few seconds trims when enough lies free.

use std::time::Duration;

/// How often the free heap is looked at.
pub const PERIOD: Duration = Duration::from_secs(5);
/// Free heap below this is left for the next allocations rather than trimmed.
pub const TRIM_ABOVE_BYTES: usize = 2 << 20;
/// Allocations this large are mapped on their own and unmapped when freed. A fixed value also
/// stops glibc from raising the threshold (and the trim threshold with it) after the first large
/// free, which is what kept bursts resident.
const MMAP_THRESHOLD_BYTES: i32 = 256 << 10;
/// The heap's top is given back by free() itself once this much lies unused above the last block.
const TRIM_THRESHOLD_BYTES: i32 = 1 << 20;

/// Whether a pass with this much free heap trims it (pure).
pub fn should_trim(free_bytes: usize) -> bool {
    free_bytes >= TRIM_ABOVE_BYTES
}

/// Sets the allocator's thresholds and caps its arenas. Call first thing in main, before any
/// other thread exists.
pub fn configure() {
    // glibc gives each thread that allocates an arena of its own (up to 8 per core); nodelet's
    // threads mostly wait, and every arena keeps what it once held: two keep the heap small.
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
    }
}

/// Free bytes in malloc's arenas (mapped blocks not included: they are returned on free).
fn free_bytes() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's totals.
    unsafe { libc::mallinfo2() }.fordblks
}

/// Returns the free heap pages to the system.
fn trim() {
    // SAFETY: malloc_trim only releases free memory; it takes the arenas' locks itself.
    unsafe { libc::malloc_trim(0) };
}

/// Trims the heap whenever enough of it lies free; runs for the life of the process.
pub async fn run() {
    loop {
        tokio::time::sleep(PERIOD).await;
        let _ = tokio::task::spawn_blocking(|| {
            let free = free_bytes();
            if should_trim(free) {
                trim();
                tracing::debug!(free_before = free, free_after = free_bytes(), "returned free heap memory to the system");
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_free_heap_worth_it_is_trimmed() {
        assert!(!should_trim(0));
        assert!(!should_trim(TRIM_ABOVE_BYTES - 1));
        assert!(should_trim(TRIM_ABOVE_BYTES));
    }

    #[test]
    fn a_trim_leaves_the_heap_usable() {
        let blocks: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 64 << 10]).collect();
        drop(blocks);
        trim();
        let again = vec![7u8; 1 << 20];
        assert_eq!(again.iter().map(|&b| b as usize).sum::<usize>(), 7 << 20);
        let _ = free_bytes();
    }
}
