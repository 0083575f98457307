//! The credentials a request runs with: those of smbd's thread in `*_send`.

use std::io;

/// Room for the supplementary groups of most users: one `getgroups` call per request
/// reads them; a user in more groups costs two more.
const USUAL_GROUPS: usize = 32;

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
        let mut groups = vec![0; USUAL_GROUPS];
        loop {
            // SAFETY: getgroups writes at most groups.len() ids into the buffer.
            let got = unsafe { libc::getgroups(groups.len() as i32, groups.as_mut_ptr()) };
            if got >= 0 {
                groups.truncate(got as usize);
                break;
            }
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EINVAL) {
                return Err(error);
            }
            // More groups than room: ask how many, then read again.
            // SAFETY: a size query, no buffer.
            let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            groups.resize(n as usize, 0);
        }
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

    /// A thread in more groups than the first read has room for gets all of them.
    #[test]
    fn more_groups_than_usual_are_all_read() {
        // SAFETY: geteuid takes no arguments.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let many: Vec<u32> = (0..3 * USUAL_GROUPS as u32)
            .map(|g| 70_000 + g * 3)
            .collect();
        let seen = std::thread::spawn(move || {
            // SAFETY: sets this thread's groups only (raw syscall, not glibc's broadcast).
            let r = unsafe { libc::syscall(libc::SYS_setgroups, many.len(), many.as_ptr()) };
            assert_eq!(r, 0);
            (Credentials::of_this_thread().unwrap().groups, many)
        })
        .join()
        .unwrap();
        assert_eq!(seen.0, seen.1);
    }
}
