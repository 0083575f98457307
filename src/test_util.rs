//! Helpers for the unit tests.

use crate::xorshift::XorShift64;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// An unlinked temporary file (read/write) holding `content`, just written, hence in the
/// page cache. Each call gets its own file, whatever other tests run at the same time.
pub fn temp_file(content: &[u8]) -> std::fs::File {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "aio_fork_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    f.write_all(content).unwrap();
    f
}

/// A temporary file of `pages` 4 KiB pages written one page per call, so that the page
/// cache holds it in single pages and a few of them can be dropped (see `drop_cached`).
pub fn temp_file_by_pages(pages: usize) -> std::fs::File {
    let mut f = temp_file(&[]);
    for i in 0..pages {
        f.write_all(&[i as u8; 4096]).unwrap();
    }
    f
}

/// Drops the cached pages of `len` bytes at `offset` of `f`, after writing them back.
pub fn drop_cached(f: &std::fs::File, offset: i64, len: i64) {
    use std::os::fd::AsRawFd;
    f.sync_all().unwrap();
    // SAFETY: advice about our own file; DONTNEED drops its clean cached pages.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
}

/// The helper program next to the test binary (`target/<profile>/aio_fork_helper`; cargo
/// builds it for the integration tests, and scripts/test.sh builds it first).
pub fn helper_program() -> std::ffi::CString {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("aio_fork_helper");
    assert!(
        path.is_file(),
        "{} missing: run `cargo build` first",
        path.display()
    );
    std::ffi::CString::new(path.into_os_string().into_encoded_bytes()).unwrap()
}

/// Slots for the unit tests' processes (the module's own bound is not under test here).
static TEST_PROCESSES: crate::parent::processes::Counter = crate::parent::processes::Counter::new();

/// A zygote holding this thread's credentials.
pub fn zygote() -> std::rc::Rc<crate::parent::zygote::Zygote> {
    let creds = crate::parent::credentials::Credentials::of_this_thread().unwrap();
    let slot = TEST_PROCESSES.take(usize::MAX).unwrap();
    std::rc::Rc::new(crate::parent::zygote::Zygote::start(&helper_program(), &creds, slot).unwrap())
}

/// `(ppid, comm)` of `pid` from /proc.
pub fn parent_of(pid: i32) -> (i32, String) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let comm = stat
        .split_once('(')
        .and_then(|(_, r)| r.rsplit_once(')'))
        .map(|(c, _)| c.to_string())
        .unwrap_or_default();
    let ppid = stat
        .rsplit(") ")
        .next()
        .and_then(|r| r.split(' ').nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(-1);
    (ppid, comm)
}

/// Whether `pid` is dead within a second: reaped, or a zombie (whose reaping is its
/// parent's business: an orphaned helper's is init's).
pub fn gone_soon(pid: i32) -> bool {
    (0..500).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(2));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.is_empty() || stat.contains(") Z ")
    })
}

/// Pages of `buf` (a mapping) that are resident.
pub fn resident_pages(buf: &mut [u8]) -> usize {
    let mut vec = vec![0u8; buf.len().div_ceil(4096)];
    // SAFETY: mincore over a live mapping, one byte per page into a vector that large.
    let r = unsafe {
        libc::mincore(
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            vec.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&b| b & 1 != 0).count()
}

/// The hostile helper program (tests/programs/hostile_helper.rs) under the name of its
/// misbehaviour: a link to it in a directory of its own (removed on drop), with its
/// `hostile.conf` (`seed`; no uid: it is hostile to everyone).
pub struct Hostile {
    pub program: std::ffi::CString,
    dir: std::path::PathBuf,
}

impl Hostile {
    pub fn new(mode: &str, seed: u64) -> Hostile {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let exe = std::env::current_exe().unwrap();
        let target = exe
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("aio_fork_hostile_helper");
        assert!(
            target.is_file(),
            "{} missing: run `cargo build` first",
            target.display()
        );
        let dir = std::env::temp_dir().join(format!(
            "aio_fork_hostile_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hostile.conf"), format!("seed={seed}\n")).unwrap();
        let link = dir.join(mode);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let program = std::ffi::CString::new(link.into_os_string().into_encoded_bytes()).unwrap();
        Hostile { program, dir }
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reproducible random numbers and bytes for the fuzz-style tests.
pub struct TestRng(XorShift64);

impl TestRng {
    /// Spreads small seeds over the state's bits.
    pub fn new(seed: u64) -> TestRng {
        TestRng(XorShift64::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.0.next() as u8).collect()
    }
}

/// A file of its own, to count the descriptors of it a test leaves open.
pub struct Marker(std::fs::File);

impl Marker {
    pub fn new() -> Marker {
        Marker(temp_file(b"marker"))
    }

    /// A new descriptor of the marker file (the caller owns it).
    pub fn dup(&self) -> std::os::fd::OwnedFd {
        use std::os::fd::AsFd;
        self.0.as_fd().try_clone_to_owned().unwrap()
    }

    /// Descriptors of this process open on the marker file, besides its own.
    pub fn open_elsewhere(&self) -> usize {
        use std::os::unix::fs::MetadataExt;
        let me = self.0.metadata().unwrap();
        let open = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::metadata(e.ok()?.path()).ok())
            .filter(|m| m.dev() == me.dev() && m.ino() == me.ino())
            .count();
        open - 1
    }
}

/// A tevent loop of our own, standing in for smbd's.
pub struct Loop {
    pub ev: *mut crate::abi::ffi::tevent_context,
}

impl Loop {
    pub fn new() -> Loop {
        // tevent registers its backends on first use without a lock (smbd is single
        // threaded); test threads must not race there.
        static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _serial = INIT.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: a fresh tevent context without parent.
        let ev = unsafe { crate::abi::ffi::tevent_context_init(std::ptr::null_mut()) };
        assert!(!ev.is_null());
        Loop { ev }
    }

    /// Runs the loop until `done()` or the deadline (then panics).
    pub fn run_until(
        &self,
        what: &str,
        limit: std::time::Duration,
        mut done: impl FnMut() -> bool,
    ) {
        let deadline = std::time::Instant::now() + limit;
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            self.turn();
        }
    }

    /// Runs the loop for `time`.
    pub fn run_for(&self, time: std::time::Duration) {
        let end = std::time::Instant::now() + time;
        while std::time::Instant::now() < end {
            self.turn();
        }
    }

    /// One turn of the loop, with a wake-up timer so that it never blocks for long.
    fn turn(&self) {
        use crate::abi::ffi;
        // SAFETY: ev is ours; the timer is freed when it fires or with the context.
        unsafe {
            ffi::aio_fork_add_timer(
                self.ev,
                self.ev as *mut std::ffi::c_void,
                5_000,
                Some(noop),
                std::ptr::null_mut(),
            );
            ffi::_tevent_loop_once(self.ev, c"unit test".as_ptr());
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        // SAFETY: the context is ours.
        unsafe { crate::abi::ffi::aio_fork_talloc_free(self.ev as *mut std::ffi::c_void) };
    }
}

unsafe extern "C" fn noop(
    _: *mut crate::abi::ffi::tevent_context,
    _: *mut crate::abi::ffi::tevent_timer,
    _: crate::abi::ffi::timeval,
    _: *mut std::ffi::c_void,
) {
}
