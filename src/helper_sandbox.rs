//! The helper's sandbox: `no_new_privs` and a seccomp allow-list of the few syscalls its
//! loop makes. Anything else (open, exec, socket, kill, ...) fails with EPERM, so a helper
//! that were made to misbehave could still only read and write the descriptors smbd hands
//! it. The filter is a constant: installing it allocates nothing (we are after fork()).

use libc::sock_filter;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

// Offsets in struct seccomp_data.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

const fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// What the helper loop calls (see helper_main): socket I/O, file I/O on passed fds (write:
/// appends),
/// close, the erratic-mode sleep, the clock, and exiting.
#[cfg(target_arch = "x86_64")]
const ALLOWED: [libc::c_long; 17] = [
    libc::SYS_recvmsg,
    libc::SYS_write,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_close,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_gettimeofday,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_rt_sigreturn,
    libc::SYS_restart_syscall,
];
#[cfg(target_arch = "aarch64")]
const ALLOWED: [libc::c_long; 16] = [
    libc::SYS_recvmsg,
    libc::SYS_write,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_close,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_rt_sigreturn,
    libc::SYS_restart_syscall,
];

const FILTER_LEN: usize = 4 + 2 * ALLOWED.len() + 1;

/// check arch (kill on a foreign one), load the syscall number, one jeq+ret per allowed
/// syscall, and EPERM for everything else.
const FILTER: [sock_filter; FILTER_LEN] = build_filter();

const fn build_filter() -> [sock_filter; FILTER_LEN] {
    let mut f = [stmt(0, 0); FILTER_LEN];
    f[0] = stmt(LD_W_ABS, ARCH_OFFSET);
    f[1] = jump(JEQ_K, AUDIT_ARCH, 1, 0);
    f[2] = stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS);
    f[3] = stmt(LD_W_ABS, NR_OFFSET);
    let mut i = 0;
    while i < ALLOWED.len() {
        f[4 + 2 * i] = jump(JEQ_K, ALLOWED[i] as u32, 0, 1);
        f[5 + 2 * i] = stmt(RET_K, libc::SECCOMP_RET_ALLOW);
        i += 1;
    }
    f[FILTER_LEN - 1] = stmt(
        RET_K,
        libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32 & libc::SECCOMP_RET_DATA),
    );
    f
}

/// Confines the calling process. Returns false if the kernel refused (then the helper runs
/// unconfined, as the C module's helpers always do).
///
/// # Safety
/// Async-signal-safe (two prctl calls on constant data); irreversible for this process.
pub unsafe fn enter() -> bool {
    let prog = libc::sock_fprog {
        len: FILTER_LEN as u16,
        filter: FILTER.as_ptr() as *mut sock_filter,
    };
    libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
        && libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        ) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    use std::os::fd::AsRawFd;

    /// Runs `f` in a forked, sandboxed child; returns the child's exit code.
    fn in_sandbox(f: fn(libc::c_int) -> i32, fd: libc::c_int) -> i32 {
        // SAFETY: the child only makes raw syscalls and exits with _exit.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => unsafe {
                if !enter() {
                    libc::_exit(100);
                }
                libc::_exit(f(fd));
            },
            ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
                WaitStatus::Exited(_, code) => code,
                other => panic!("sandboxed child ended with {other:?}"),
            },
        }
    }

    /// The child's exit code for a call that must be refused: 0 if it failed with EPERM.
    fn refused_with_eperm(result: i64) -> i32 {
        if result < 0 && errno() == libc::EPERM {
            0
        } else {
            1
        }
    }

    fn errno() -> i32 {
        // SAFETY: reads this thread's errno.
        unsafe { *libc::__errno_location() }
    }

    #[test]
    fn sandboxed_process_can_read_a_passed_fd() {
        let file = std::fs::File::open("/proc/self/cmdline").unwrap();
        let code = in_sandbox(
            |fd| {
                let mut b = [0u8; 4];
                // SAFETY: reads into a stack buffer.
                let n = unsafe { libc::pread(fd, b.as_mut_ptr() as *mut _, 4, 0) };
                if n > 0 {
                    0
                } else {
                    1
                }
            },
            file.as_raw_fd(),
        );
        assert_eq!(code, 0);
    }

    #[test]
    fn sandboxed_process_cannot_open_files() {
        let code = in_sandbox(
            |_| {
                // SAFETY: a constant C string.
                let fd = unsafe { libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
                refused_with_eperm(fd as i64)
            },
            -1,
        );
        assert_eq!(code, 0, "open() must fail with EPERM in the sandbox");
    }

    #[test]
    fn sandboxed_process_cannot_exec() {
        let code = in_sandbox(
            |_| {
                let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null()];
                // SAFETY: NULL-terminated argument vectors of constant strings.
                let r = unsafe { libc::execve(argv[0], argv.as_ptr(), envp.as_ptr()) };
                refused_with_eperm(r as i64)
            },
            -1,
        );
        assert_eq!(code, 0, "execve() must fail with EPERM in the sandbox");
    }

    #[test]
    fn sandboxed_process_cannot_signal_others() {
        let code = in_sandbox(
            |_| {
                // SAFETY: signal 0 only checks permission.
                let r = unsafe { libc::kill(1, 0) };
                refused_with_eperm(r as i64)
            },
            -1,
        );
        assert_eq!(code, 0);
    }
}
