//! smbd's heap: kept warm while helpers serve a share connection, given back once it is
//! quiet.
//!
//! smbd allocates a buffer for each read and write (up to 8 MiB). glibc serves a block of
//! 128 KiB or more with its own mmap at first; once such a block is freed it raises its
//! mmap threshold to that block's size and its trim threshold to twice that, so later
//! buffers come from the heap, and the heap's free top is given back to the kernel whenever
//! it exceeds the trim threshold. With two 8 MiB requests in flight (smbclient's window)
//! the free top crosses twice 8 MiB again and again: the heap shrinks and grows back, and
//! every page of a regrown buffer faults in fresh, zeroed (on a virtual machine that hands
//! freed memory back to its host, over 1 us a page: 3 ms an 8 MiB buffer). A plain share
//! pays those faults in its I/O threads. For what a helper serves, smbd's main thread
//! copies between the helper's buffer and smbd's, and would take the faults where every
//! other request of the connection waits. For a cached read served in smbd, the kernel's
//! copy takes them there too, but a warm heap would keep two 8 MiB buffers per busy
//! connection, about twice what a plain share's peak holds. So from the first request a
//! helper serves, the module keeps large blocks on the heap and the heap's top in place
//! (`Tuning::Warm`: fixed thresholds above the largest SMB2 request), and how much stays
//! after a burst then depends on how requests overlapped: up to twice the largest. Once
//! the pool has seen no request for `QUIET`, it gives back what is free (`malloc_trim`),
//! once per burst, and lets the heap shrink again as glibc would (`Tuning::Cold`): an idle
//! connection holds what smbd needs, one served in smbd alone holds what a plain share's
//! would, and one whose helpers are busy keeps its warm heap.

use crate::abi::ffi;
use std::cell::Cell;
use std::ffi::c_void;
use std::ptr;
use std::time::{Duration, Instant};

/// How long a pool must see no request before the heap is trimmed.
pub const QUIET: Duration = Duration::from_secs(1);

/// Blocks up to this size come from the heap: every SMB2 request buffer (8 MiB of data and
/// its headers) does.
const MMAP_THRESHOLD: libc::c_int = 16 << 20;
/// The heap's free top is given back past this while warm.
const WARM_TRIM_THRESHOLD: libc::c_int = 64 << 20;
/// ... and past this once cold again: where glibc's own threshold settles after freeing
/// an 8 MiB request buffer (twice its size), which it no longer moves once set by hand.
const COLD_TRIM_THRESHOLD: libc::c_int = 17 << 20;

/// glibc's thresholds for smbd's process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tuning {
    Warm,
    Cold,
}

thread_local! {
    /// Whether the process's heap is tuned warm: one process may hold several pools (one
    /// per share of the connection), all on smbd's main thread, and glibc's thresholds are
    /// the process's.
    static WARM: Cell<bool> = const { Cell::new(false) };
}

fn tune_malloc(tuning: Tuning) {
    let trim = match tuning {
        Tuning::Warm => WARM_TRIM_THRESHOLD,
        Tuning::Cold => COLD_TRIM_THRESHOLD,
    };
    // SAFETY: mallopt only changes the allocator's tuning; glibc serialises it with
    // allocations of other threads.
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, trim) == 1
    };
    if !ok {
        tracing::debug!(?tuning, "mallopt refused: smbd's heap keeps its thresholds");
    }
}

/// Trims the heap of smbd's process when the pool that owns it falls quiet.
pub struct HeapTrim {
    state: Box<State>,
}

/// Reached from the timer's callback through a raw pointer: it lives in a `Box` whose
/// address does not change, and the timer is freed before it.
struct State {
    ev: *mut ffi::tevent_context,
    /// The pending timer, null when none is.
    timer: Cell<*mut ffi::tevent_timer>,
    last_request: Cell<Instant>,
    /// A request came since the last trim.
    pending: Cell<bool>,
    quiet: Duration,
    trim: fn(),
    tune: fn(Tuning),
}

impl HeapTrim {
    /// Trims with `malloc_trim` on smbd's loop `ev`, and tunes glibc's thresholds.
    pub fn new(ev: *mut ffi::tevent_context) -> HeapTrim {
        HeapTrim::with(ev, QUIET, trim_malloc, tune_malloc)
    }

    fn with(
        ev: *mut ffi::tevent_context,
        quiet: Duration,
        trim: fn(),
        tune: fn(Tuning),
    ) -> HeapTrim {
        HeapTrim {
            state: Box::new(State {
                ev,
                timer: Cell::new(ptr::null_mut()),
                last_request: Cell::new(Instant::now()),
                pending: Cell::new(false),
                quiet,
                trim,
                tune,
            }),
        }
    }

    /// A request arrived: the heap is trimmed `QUIET` after the last one.
    pub fn note_request(&self) {
        let s = &*self.state;
        s.last_request.set(Instant::now());
        s.pending.set(true);
        if s.timer.get().is_null() {
            s.arm(s.quiet);
        }
    }

    /// A request goes to a helper: the heap stays warm until the next trim.
    pub fn keep_warm(&self) {
        if !WARM.with(|w| w.replace(true)) {
            (self.state.tune)(Tuning::Warm);
        }
    }
}

impl State {
    fn arm(&self, after: Duration) {
        let private = self as *const State as *mut c_void;
        // SAFETY: `ev` is the pool's event context; the timer has no talloc parent and is
        // freed by tevent once it fired, or by `HeapTrim`'s drop before `self` goes.
        let te = unsafe {
            ffi::aio_fork_add_timer(
                self.ev,
                ptr::null_mut(),
                after.as_micros() as u64,
                Some(fired),
                private,
            )
        };
        self.timer.set(te);
    }

    fn on_timer(&self) {
        // tevent frees a timer once its handler returns.
        self.timer.set(ptr::null_mut());
        let idle = self.last_request.get().elapsed();
        if idle < self.quiet {
            self.arm(self.quiet - idle);
        } else if self.pending.replace(false) {
            if WARM.with(|w| w.replace(false)) {
                (self.tune)(Tuning::Cold);
            }
            (self.trim)();
        }
    }
}

impl Drop for HeapTrim {
    fn drop(&mut self) {
        let te = self.state.timer.get();
        if !te.is_null() {
            // SAFETY: our timer, not fired yet (a fired one is nulled in its handler).
            unsafe { ffi::aio_fork_talloc_free(te as *mut c_void) };
        }
    }
}

fn trim_malloc() {
    // SAFETY: malloc_trim only returns free memory of the process's arenas.
    unsafe { libc::malloc_trim(0) };
}

unsafe extern "C" fn fired(
    _ev: *mut ffi::tevent_context,
    _te: *mut ffi::tevent_timer,
    _now: ffi::timeval,
    private: *mut c_void,
) {
    crate::abi::guard::guard((), || {
        // SAFETY: `private` is the State of a live HeapTrim (its drop frees the timer).
        let state = unsafe { &*(private as *const State) };
        state.on_timer();
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::Loop;

    thread_local! {
        static TRIMS: Cell<usize> = const { Cell::new(0) };
    }

    fn count() {
        TRIMS.with(|t| t.set(t.get() + 1));
    }

    fn trims() -> usize {
        TRIMS.with(Cell::get)
    }

    thread_local! {
        static TUNINGS: std::cell::RefCell<Vec<Tuning>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    fn note_tuning(t: Tuning) {
        TUNINGS.with(|v| v.borrow_mut().push(t));
    }

    fn tunings() -> Vec<Tuning> {
        TUNINGS.with(|v| v.borrow().clone())
    }

    const QUIET: Duration = Duration::from_millis(60);

    #[test]
    fn trims_once_after_a_burst_falls_quiet() {
        let lp = Loop::new();
        let trim = HeapTrim::with(lp.ev, QUIET, count, note_tuning);
        lp.run_for(QUIET * 2);
        assert_eq!(trims(), 0, "no request, nothing to trim");
        for _ in 0..5 {
            trim.note_request();
            lp.run_for(QUIET / 3);
        }
        assert_eq!(trims(), 0, "requests kept coming");
        lp.run_for(QUIET * 2);
        assert_eq!(trims(), 1, "quiet after the burst");
        lp.run_for(QUIET * 2);
        assert_eq!(trims(), 1, "once per burst");
        trim.note_request();
        lp.run_for(QUIET * 2);
        assert_eq!(trims(), 2, "the next burst");
    }

    #[test]
    fn a_dropped_trimmer_leaves_no_timer_behind() {
        let lp = Loop::new();
        let before = trims();
        let trim = HeapTrim::with(lp.ev, QUIET, count, note_tuning);
        trim.note_request();
        drop(trim);
        lp.run_for(QUIET * 2);
        assert_eq!(trims(), before);
    }

    #[test]
    fn warm_from_the_first_helper_request_until_the_trim() {
        let lp = Loop::new();
        let trim = HeapTrim::with(lp.ev, QUIET, count, note_tuning);
        trim.note_request();
        lp.run_for(QUIET * 2);
        assert_eq!(
            tunings(),
            [],
            "requests served in smbd leave glibc's own thresholds"
        );
        for _ in 0..3 {
            trim.note_request();
            trim.keep_warm();
        }
        assert_eq!(tunings(), [Tuning::Warm], "warmed once for the burst");
        lp.run_for(QUIET * 2);
        assert_eq!(
            tunings(),
            [Tuning::Warm, Tuning::Cold],
            "cold again at the trim"
        );
        trim.note_request();
        lp.run_for(QUIET * 2);
        assert_eq!(tunings().len(), 2, "a burst in smbd alone leaves it cold");
    }
}
