//! smbd's tevent loop as the pool uses it: a watch on each helper's socket and one timer.
//! Each owns its tevent event (freed when dropped) and wakes the pool through a `Weak`
//! reference: an event can never reach a pool that is gone, and the pool stays alive for
//! the length of a callback even if the requests it completes drop every other reference.

use super::Pool;
use crate::abi::ffi;
use crate::parent::reap;
use std::ffi::c_void;
use std::rc::Weak;
use std::time::Instant;

/// What a wake-up is for: which pool, and for a socket, which helper.
struct Wake {
    pool: Weak<Pool>,
    helper: u64,
}

/// A readable-watch on a helper's socket (or pidfd). It must be dropped while the
/// descriptor is still open: tevent takes it out of epoll by the descriptor's number, and
/// the kernel drops a closed descriptor from epoll only once nothing else refers to its
/// file; a watch freed after the close could stay in epoll and be reported, pointing to
/// freed memory (smbd aborts: "Bad talloc magic value").
pub struct FdWatch {
    fde: *mut ffi::tevent_fd,
    /// The event's private data; lives as long as the event.
    _wake: Box<Wake>,
}

impl FdWatch {
    /// Watches `fd`; `None` if tevent refused.
    pub fn new(
        ev: *mut ffi::tevent_context,
        mem: *mut c_void,
        fd: libc::c_int,
        pool: Weak<Pool>,
        helper: u64,
    ) -> Option<FdWatch> {
        let wake = Box::new(Wake { pool, helper });
        // SAFETY: ev is smbd's event context and mem a talloc context that outlives the
        // event (the pool frees it last); the private data is freed after the event.
        let fde = unsafe {
            ffi::aio_fork_add_fd(
                ev,
                mem,
                fd,
                ffi::TEVENT_FD_READ as u16,
                Some(readable),
                &*wake as *const Wake as *mut c_void,
            )
        };
        (!fde.is_null()).then_some(FdWatch { fde, _wake: wake })
    }
}

impl Drop for FdWatch {
    fn drop(&mut self) {
        // SAFETY: our event; tevent allows freeing it inside its own handler.
        unsafe { ffi::aio_fork_talloc_free(self.fde as *mut c_void) };
    }
}

/// The pool's one timer, for culling and hung-helper detection.
pub struct Timer {
    /// Null once tevent fired (and freed) it.
    te: *mut ffi::tevent_timer,
    due: Instant,
    _pool: Box<Weak<Pool>>,
}

impl Timer {
    /// Fires at `due` (plus a little slack, so that what is due has really expired).
    pub fn new(
        ev: *mut ffi::tevent_context,
        mem: *mut c_void,
        due: Instant,
        pool: Weak<Pool>,
    ) -> Option<Timer> {
        let pool = Box::new(pool);
        let usec = due.saturating_duration_since(Instant::now()).as_micros() as u64 + 10_000;
        // SAFETY: as for FdWatch::new.
        let te = unsafe {
            ffi::aio_fork_add_timer(
                ev,
                mem,
                usec,
                Some(fired),
                &*pool as *const Weak<Pool> as *mut c_void,
            )
        };
        (!te.is_null()).then_some(Timer {
            te,
            due,
            _pool: pool,
        })
    }

    pub fn due(&self) -> Instant {
        self.due
    }

    /// Drops a timer that has fired: tevent already freed its event.
    pub fn fired(mut self) {
        self.te = std::ptr::null_mut();
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if !self.te.is_null() {
            // SAFETY: our event, not fired yet.
            unsafe { ffi::aio_fork_talloc_free(self.te as *mut c_void) };
        }
    }
}

unsafe extern "C" fn readable(
    ev: *mut ffi::tevent_context,
    _fde: *mut ffi::tevent_fd,
    _flags: u16,
    private: *mut c_void,
) {
    crate::abi::guard::guard((), || {
        // SAFETY: `private` is the Wake of a live FdWatch (it is freed with the event).
        let wake = unsafe { &*(private as *const Wake) };
        let (pool, helper) = (wake.pool.upgrade(), wake.helper);
        // `wake` may be freed from here on (the helper may be removed).
        if let Some(pool) = pool {
            pool.on_readable(helper);
        }
        // A zygote let go meanwhile is reaped when it exits, not at the next wake-up.
        reap::watch_kept(ev);
    })
}

unsafe extern "C" fn fired(
    ev: *mut ffi::tevent_context,
    _te: *mut ffi::tevent_timer,
    _now: ffi::timeval,
    private: *mut c_void,
) {
    crate::abi::guard::guard((), || {
        // SAFETY: `private` is the Weak of a live Timer (it is freed after the event).
        let pool = unsafe { &*(private as *const Weak<Pool>) }.upgrade();
        if let Some(pool) = pool {
            pool.on_timer();
        }
        reap::watch_kept(ev);
    })
}
