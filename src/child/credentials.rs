//! Taking the request's user for good.
//!
//! smbd starts the program from the thread that serves a request: that thread's effective
//! uid, gid and groups are the user's, while root stays in its real or saved ids (Samba
//! switches per-thread credentials and keeps a way back). The program makes the effective
//! ids its real, saved and file-system ids too. With no root id left the kernel clears the
//! permitted and effective capabilities; the inheritable set is cleared here. What remains
//! is exactly what the kernel would apply to smbd's own thread for this user: permissions,
//! set-id clearing on write, quotas and reserved blocks. A request smbd serves as root
//! (e.g. `admin users`) keeps root, as smbd's thread has it.

use super::sys::cvt;
use std::mem::zeroed;

const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The ids this process has: (real, effective, saved) uid and gid.
pub fn ids() -> ([libc::uid_t; 3], [libc::gid_t; 3]) {
    let (mut u, mut g) = ([0; 3], [0; 3]);
    // SAFETY: getresuid/getresgid write three ids each into stack arrays.
    unsafe {
        let [ru, eu, su] = &mut u;
        libc::getresuid(ru, eu, su);
        let [rg, eg, sg] = &mut g;
        libc::getresgid(rg, eg, sg);
    }
    (u, g)
}

/// Whether the process holds any permitted or effective capability.
pub fn has_capabilities() -> bool {
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget fills two CapData for version 3.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    r != 0 || data.iter().any(|d| d.permitted != 0 || d.effective != 0)
}

/// Makes the effective uid and gid the only ones; drops every capability unless that
/// uid is root. `Err(errno)` if any step fails or does not hold afterwards.
pub fn become_effective_user() -> Result<(), libc::c_int> {
    let ([_, uid, _], [_, gid, _]) = ids();
    // Raw syscalls: glibc's wrappers would signal other threads (there are none here,
    // but nothing is gained by the machinery).
    // SAFETY: credential syscalls on this process, with ids it already holds.
    unsafe {
        cvt(libc::syscall(libc::SYS_setresgid, gid, gid, gid))?;
        cvt(libc::syscall(libc::SYS_setresuid, uid, uid, uid))?;
    }
    if uid != 0 {
        clear_capabilities()?;
    }
    let (u, g) = ids();
    let all_ours = u.iter().all(|&x| x == uid) && g.iter().all(|&x| x == gid);
    if !all_ours || (uid != 0 && has_capabilities()) {
        return Err(libc::EPERM);
    }
    Ok(())
}

fn clear_capabilities() -> Result<(), libc::c_int> {
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset with all sets empty only lowers what the process holds.
    let data: [CapData; 2] = unsafe { zeroed() };
    cvt(unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) }).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};

    /// In a child that holds root in its real and saved uid and a user in its effective
    /// ids (as smbd's thread does), taking the user leaves no way back to root.
    #[test]
    fn a_thread_acting_as_a_user_becomes_that_user_for_good() {
        // SAFETY: the child makes raw syscalls only and leaves with _exit.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => unsafe {
                if libc::geteuid() != 0 {
                    libc::_exit(10); // needs root to set up the smbd-like state
                }
                if libc::syscall(libc::SYS_setresgid, 0, 4321, 0) != 0
                    || libc::syscall(libc::SYS_setresuid, 0, 4321, 0) != 0
                {
                    libc::_exit(11);
                }
                if become_effective_user().is_err() {
                    libc::_exit(12);
                }
                let (u, g) = ids();
                if u != [4321; 3] || g != [4321; 3] || has_capabilities() {
                    libc::_exit(13);
                }
                // No way back: both must fail now.
                if libc::syscall(libc::SYS_setresuid, 0, 0, 0) == 0 || libc::setuid(0) == 0 {
                    libc::_exit(14);
                }
                libc::_exit(0);
            },
            ForkResult::Parent { child } => {
                assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
            }
        }
    }
}
