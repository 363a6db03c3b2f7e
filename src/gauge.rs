//! Live-stream counts: a log follower or a relayed exec/attach/port-forward connection holds a
//! task, a file or sockets, so a count that comes back to zero shows clients that left released
//! them.
//! Top-level because both the secure port (which holds them) and `metrics` (which reports them) use it.

use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Gauge(AtomicUsize);

impl Default for Gauge {
    fn default() -> Self {
        Self::new()
    }
}

impl Gauge {
    pub const fn new() -> Gauge {
        Gauge(AtomicUsize::new(0))
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// Counts one more until the returned guard is dropped (with the task that holds it).
    pub fn hold(&'static self) -> Held {
        self.0.fetch_add(1, Ordering::SeqCst);
        Held(self)
    }
}

pub struct Held(&'static Gauge);

impl Drop for Held {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Log streams being served (each a task and an open file).
pub static LOG_STREAMS: Gauge = Gauge::new();
/// Upgraded connections being relayed to the runtime's streaming server (each a task and two
/// sockets).
pub static RELAYED_STREAMS: Gauge = Gauge::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_while_held() {
        static G: Gauge = Gauge::new();
        let a = G.hold();
        let b = G.hold();
        assert_eq!(G.get(), 2);
        drop(a);
        assert_eq!(G.get(), 1);
        let task = std::thread::spawn(move || drop(b));
        task.join().unwrap();
        assert_eq!(G.get(), 0);
    }
}
