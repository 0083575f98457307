//! Reaping smbd's own children (zygotes) through pidfds, never blocking: a pidfd names one
//! process for good, so a pid reused after smbd's own SIGCHLD handling reaped ours can
//! never be signalled or waited for by mistake.
//!
//! A child that was ended but has not exited yet is kept, and its pidfd watched on smbd's
//! event loop once `watch_kept` has been called there: it is reaped, and its pidfd closed,
//! the moment it exits, not whenever the pool next wakes (a connection may stay idle for
//! hours after its last share went). Whatever is still kept when smbd's process exits is
//! closed then.

use crate::abi::ffi;
use std::cell::RefCell;
use std::ffi::c_void;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::ptr;

/// A child ended but not exited yet; `watch` is a talloc context of its own holding its
/// pidfd's event (so that the event is ours to free, whatever becomes of the loop), null
/// until watched.
struct Kept {
    pidfd: OwnedFd,
    watch: *mut c_void,
}

impl Drop for Kept {
    /// The event goes before the descriptor it watches.
    fn drop(&mut self) {
        if !self.watch.is_null() {
            // SAFETY: our own talloc context; tevent allows freeing its event at any time,
            // inside its own handler too, and after the event's loop is gone.
            unsafe { ffi::aio_fork_talloc_free(self.watch) };
        }
    }
}

thread_local! {
    /// Per thread: each thread has its own event loop (smbd runs the module on its main
    /// thread), and an event may only be touched on its loop's thread.
    static KEPT: RefCell<Vec<Kept>> = const { RefCell::new(Vec::new()) };
}

/// SIGKILLs the process of `pidfd`; false if the kernel refused (no permission).
pub fn kill(pidfd: &OwnedFd) -> bool {
    // SAFETY: pidfd_send_signal on a pidfd we own, without siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Whether the process of `pidfd` has exited (its pidfd is readable). Never waits.
pub fn has_exited(pidfd: BorrowedFd) -> bool {
    let mut pfd = [libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one pollfd on a pidfd the caller holds, no waiting.
    let n = unsafe { libc::poll(pfd.as_mut_ptr(), 1, 0) };
    n == 1 && pfd[0].revents & libc::POLLIN != 0
}

/// Reaps our child of `pidfd` if it has exited; else keeps it (see `watch_kept`).
pub fn reap_or_keep(pidfd: OwnedFd) {
    if try_reap(&pidfd) {
        return;
    }
    close_at_exit();
    KEPT.with(|kept| {
        kept.borrow_mut().push(Kept {
            pidfd,
            watch: ptr::null_mut(),
        })
    });
}

/// Reaps what has exited since. Cheap when nothing is kept.
pub fn pending() {
    KEPT.with(|kept| kept.borrow_mut().retain(|k| !try_reap(&k.pidfd)));
}

/// Watches every kept child not watched yet on `ev`, so that it is reaped when it exits.
pub fn watch_kept(ev: *mut ffi::tevent_context) {
    KEPT.with(|kept| {
        for k in kept.borrow_mut().iter_mut().filter(|k| k.watch.is_null()) {
            // SAFETY: ev is the caller's live event context; the event's talloc parent is a
            // new context of ours, freed by `Kept`; the handler needs no private data.
            unsafe {
                let mem = ffi::aio_fork_talloc_new(ptr::null());
                let fde = ffi::aio_fork_add_fd(
                    ev,
                    mem,
                    k.pidfd.as_raw_fd(),
                    ffi::TEVENT_FD_READ as u16,
                    Some(exited),
                    ptr::null_mut(),
                );
                if fde.is_null() {
                    ffi::aio_fork_talloc_free(mem);
                } else {
                    k.watch = mem;
                }
            }
        }
    });
}

/// Children kept, on this thread.
#[cfg(test)]
pub fn kept() -> usize {
    KEPT.with(|kept| kept.borrow().len())
}

unsafe extern "C" fn exited(
    _ev: *mut ffi::tevent_context,
    _fde: *mut ffi::tevent_fd,
    _flags: u16,
    _private: *mut c_void,
) {
    crate::abi::guard::guard((), pending);
}

/// Closes what is kept when the process exits (once registered, with the first child
/// kept): smbd's connection process disconnects its shares on its way out and exits
/// without running its loop again.
fn close_at_exit() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: registers a function of this library that stays loaded (smbd never
        // unloads a VFS module).
        unsafe { libc::atexit(close_kept) };
    });
}

extern "C" fn close_kept() {
    // The thread's list may be gone already (its destructor closed it) or in use (exit
    // called from within): then there is nothing to do here.
    let _ = KEPT.try_with(|kept| {
        if let Ok(mut kept) = kept.try_borrow_mut() {
            for mut k in kept.drain(..) {
                try_reap(&k.pidfd);
                // Exiting: the event is left to the loop, which is not run again.
                k.watch = ptr::null_mut();
            }
        }
    });
}

/// True once the child is reaped (by us, or already by someone else: ECHILD).
fn try_reap(pidfd: &OwnedFd) -> bool {
    // SAFETY: waitid on a pidfd we own, into a zeroed siginfo on the stack.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::__WALL,
        );
        if r < 0 {
            return std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD);
        }
        info.si_pid() != 0
    }
}
