//! The credentials a request runs with: those of smbd's thread in `*_send`.

use std::io;

/// The effective uid, gid and supplementary groups of a thread. Helpers serve only the
/// requests whose credentials equal the ones they were started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Sorted, without duplicates.
    pub groups: Vec<u32>,
}

impl Credentials {
    /// The calling thread's (Linux keeps credentials per thread; Samba switches them per
    /// thread with raw syscalls, and these calls read the calling thread's).
    pub fn of_this_thread() -> io::Result<Credentials> {
        // SAFETY: geteuid/getegid take no arguments.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        // SAFETY: a size query (no buffer) then a read into a buffer of that size.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut groups = vec![0; n as usize];
        let got = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        groups.truncate(got as usize);
        groups.sort_unstable();
        groups.dedup();
        Ok(Credentials { uid, gid, groups })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_threads_credentials_are_read_per_thread() {
        let main = Credentials::of_this_thread().unwrap();
        // SAFETY: geteuid takes no arguments.
        assert_eq!(main.uid, unsafe { libc::geteuid() });
        if main.uid != 0 {
            return;
        }
        // A thread that switched only itself (raw syscall, as Samba does) is seen so,
        // and the other threads are not.
        let other = std::thread::spawn(|| {
            // SAFETY: changes this thread's ids only (raw syscall, not glibc's broadcast).
            unsafe { libc::syscall(libc::SYS_setresuid, 0, 4321, 0) };
            let c = Credentials::of_this_thread().unwrap();
            // SAFETY: back to root for the rest of the test process.
            unsafe { libc::syscall(libc::SYS_setresuid, 0, 0, 0) };
            c
        })
        .join()
        .unwrap();
        assert_eq!(other.uid, 4321);
        assert_eq!(Credentials::of_this_thread().unwrap(), main);
    }
}
