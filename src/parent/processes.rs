//! The bound on the module's processes (zygotes and helpers) in one smbd process, across
//! all its share connections: each process holds a slot while it lives.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Slots taken from one bound.
#[derive(Default)]
pub struct Counter(AtomicUsize);

/// The module's processes of this smbd process.
pub static PROCESSES: Counter = Counter::new();

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicUsize::new(0))
    }

    /// A slot if fewer than `limit` are taken.
    pub fn take(&'static self, limit: usize) -> Option<Slot> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self))
    }

    /// Slots taken now.
    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// A place for one process under the bound; given back when dropped.
pub struct Slot(&'static Counter);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stop_at_the_limit_and_come_back() {
        static C: Counter = Counter::new();
        let a = C.take(2).unwrap();
        let b = C.take(2).unwrap();
        assert!(C.take(2).is_none());
        drop(a);
        assert_eq!(C.live(), 1);
        assert!(C.take(2).is_some());
        drop(b);
        assert_eq!(C.live(), 0);
    }
}
