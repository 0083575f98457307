//! Reaping smbd's own children (zygotes) through pidfds, never blocking: a pidfd names one
//! process for good, so a pid reused after smbd's own SIGCHLD handling reaped ours can
//! never be signalled or waited for by mistake.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

/// Children that were ended but had not exited yet.
static PENDING: Mutex<Vec<OwnedFd>> = Mutex::new(Vec::new());

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

/// Reaps our child of `pidfd` if it has exited; else keeps it for `pending`.
pub fn reap_or_keep(pidfd: OwnedFd) {
    if !try_reap(&pidfd) {
        PENDING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pidfd);
    }
}

/// Reaps what has exited since. Cheap when nothing is pending.
pub fn pending() {
    let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    pending.retain(|fd| !try_reap(fd));
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
