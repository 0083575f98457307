//! Samba's own profile counters (`smbd profiling level`, read by `smbstatus -P`): the
//! module adds to `syscall_asys_pread`, `_pwrite` and `_fsync` for the requests it serves,
//! as vfs_default does for its own (`SMBPROFILE_BYTES_ASYNC_START_X` ... `END_X`).
//!
//! The counters live in smbd's memory: `profile_p` points to the process's `struct
//! profile_stats` inside `smbprofile_state`, whose `config` says whether smbd counts
//! (`do_count`) and times (`do_times`); from 4.23 `smbprofile_persvc_get(snum)` gives a
//! share's own profile (`smbd profiling share = yes`). All are exported by libsmbd-base
//! and resolved here with `dlsym`; where the counters sit comes from `profile_layout`,
//! chosen by the magic smbd stamped on its profile, and checked against where `profile_p`
//! points. Anything unexpected: no counters, one log line.
//!
//! Only smbd's main thread calls into this (VFS requests start and end there), as only
//! it runs Samba's own profile macros for async requests.

use crate::abi::profile_layout::{self, Layout, STATE_EV_OFFSET, STATE_TE_OFFSET};
use std::ffi::{c_int, c_void, CString};
use std::sync::OnceLock;

/// The async counters the module adds to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    Pread,
    Pwrite,
    Fsync,
}

impl Counter {
    fn name(self) -> &'static str {
        match self {
            Counter::Pread => "syscall_asys_pread",
            Counter::Pwrite => "syscall_asys_pwrite",
            Counter::Fsync => "syscall_asys_fsync",
        }
    }
}

/// What one request adds to a `struct smbprofile_stats_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// 1 for a request, 0 for bytes alone.
    pub count: u64,
    /// Bytes asked for (as Samba counts them, not bytes moved).
    pub bytes: u64,
    /// Microseconds from send to completion, and of those the time no I/O ran (waiting
    /// for a helper or for smbd's loop); `None` when the request was not timed.
    pub times: Option<(u64, u64)>,
}

type PersvcGet = unsafe extern "C" fn(c_int) -> *mut c_void;

/// smbd's profile, resolved and checked.
pub struct Profile {
    layout: &'static Layout,
    /// `&smbprofile_state`.
    state: *mut u8,
    /// `profile_p`: the process's global profile.
    global: *mut u8,
    /// Offsets of the three counters in `struct profile_stats`.
    offsets: [usize; 3],
    /// `smbprofile_dump_schedule_timer`: arms the timer that stores the profile where
    /// smbstatus reads it (what the inline `smbprofile_dump_schedule()` calls).
    schedule_dump: unsafe extern "C" fn(),
    /// `smbprofile_persvc_get` (4.23+).
    persvc_get: Option<PersvcGet>,
}

// SAFETY: the pointers name smbd's process-global profile; only smbd's main thread uses
// them (see the module doc).
unsafe impl Send for Profile {}
// SAFETY: as above.
unsafe impl Sync for Profile {}

static PROFILE: OnceLock<Option<Profile>> = OnceLock::new();

/// smbd's profile, if `init` found one the build knows.
pub fn get() -> Option<&'static Profile> {
    PROFILE.get().and_then(Option::as_ref)
}

/// Finds smbd's profile once per process; `version` (`samba_version_string()`) is for
/// the log line when it cannot be used.
pub fn init(version: &str) {
    PROFILE.get_or_init(|| match find() {
        Ok(profile) => {
            tracing::debug!(
                layout = profile.layout.name,
                releases = profile.layout.releases,
                magic = format_args!("{:#018x}", profile.layout.magic()),
                "Samba {version}: profile counters found"
            );
            Some(profile)
        }
        Err(Missing::NoProfile(why)) => {
            tracing::debug!("Samba {version}: no profile counters ({why})");
            None
        }
        Err(Missing::Unknown(why)) => {
            tracing::warn!(
                "Samba {version}: its profile counters have a layout this build does not \
                 know ({why}): smbstatus -P will not count the reads, writes and fsyncs \
                 this module serves"
            );
            None
        }
    });
}

enum Missing {
    /// smbd keeps no profile (built without it, or not smbd).
    NoProfile(String),
    /// It keeps one the build cannot place.
    Unknown(String),
}

fn find() -> Result<Profile, Missing> {
    // SAFETY: dlsym gives the addresses of smbd's exported symbols.
    unsafe { find_with(&dlsym) }
}

/// Finds the profile through `lookup` (a symbol's address, if exported).
///
/// # Safety
/// `lookup` answers with the addresses of smbd's symbols of those names (or of objects
/// with their types, in tests).
unsafe fn find_with(lookup: &dyn Fn(&str) -> Option<*mut c_void>) -> Result<Profile, Missing> {
    let sym = |name: &str| lookup(name).ok_or_else(|| format!("smbd does not export '{name}'"));
    let profile_p = sym("profile_p").map_err(Missing::NoProfile)? as *mut *mut u8;
    let state = sym("smbprofile_state").map_err(Missing::NoProfile)? as *mut u8;
    let schedule = sym("smbprofile_dump_schedule_timer").map_err(Missing::NoProfile)?;
    // SAFETY: `profile_p` is smbd's exported `struct profile_stats *` variable.
    let global = unsafe { *profile_p };
    if global.is_null() {
        return Err(Missing::NoProfile("profile_p is not set up".into()));
    }
    // SAFETY: a set-up profile starts with its u64 magic.
    let magic = unsafe { (global as *const u64).read_unaligned() };
    let layout = profile_layout::by_magic(magic)
        .ok_or_else(|| Missing::Unknown(format!("magic {magic:#018x}")))?;
    let expected = state as usize + layout.global_offset();
    if global as usize != expected {
        return Err(Missing::Unknown(format!(
            "layout {} puts the profile at smbprofile_state+{}, profile_p is at +{}",
            layout.name,
            layout.global_offset(),
            (global as usize).wrapping_sub(state as usize)
        )));
    }
    let persvc_get = if layout.per_share {
        let f = sym("smbprofile_persvc_get").map_err(Missing::Unknown)?;
        // SAFETY: smbd's `struct profile_stats *smbprofile_persvc_get(int snum)`.
        Some(unsafe { std::mem::transmute::<*mut c_void, PersvcGet>(f) })
    } else {
        None
    };
    let offset = |c: Counter| {
        layout
            .counter(c.name())
            .map(|c| c.offset)
            .ok_or_else(|| Missing::Unknown(format!("layout {} has no {}", layout.name, c.name())))
    };
    Ok(Profile {
        layout,
        state,
        global,
        offsets: [
            offset(Counter::Pread)?,
            offset(Counter::Pwrite)?,
            offset(Counter::Fsync)?,
        ],
        // SAFETY: smbd's `void smbprofile_dump_schedule_timer(void)`.
        schedule_dump: unsafe {
            std::mem::transmute::<*mut c_void, unsafe extern "C" fn()>(schedule)
        },
        persvc_get,
    })
}

/// The address of smbd's exported `name`.
fn dlsym(name: &str) -> Option<*mut c_void> {
    let cname = CString::new(name).ok()?;
    // SAFETY: dlsym with RTLD_DEFAULT and a valid C string only reads the loader's tables.
    let ptr = unsafe { libc::dlsym(libc::RTLD_DEFAULT, cname.as_ptr()) };
    (!ptr.is_null()).then_some(ptr)
}

impl Profile {
    fn config(&self, index: usize) -> bool {
        // SAFETY: `config.do_count`/`do_times`, C bools inside smbprofile_state.
        unsafe {
            self.state
                .add(self.layout.config_offset() + index)
                .read_volatile()
                != 0
        }
    }

    /// `do_count`: smbd counts (`smbd profiling level = count` or `on`).
    pub fn counting(&self) -> bool {
        self.config(0)
    }

    /// `do_times`: smbd also times (`smbd profiling level = on`).
    pub fn timing(&self) -> bool {
        self.config(1)
    }

    /// Adds `sample` to `counter` in the process's profile and, where the release keeps
    /// one, in share `snum`'s; nothing while smbd does not count.
    pub fn add(&self, counter: Counter, snum: c_int, sample: Sample) {
        if !self.counting() {
            return;
        }
        let offset = self.offsets[counter as usize];
        // SAFETY: the counter's `struct smbprofile_stats_bytes` in the global profile.
        unsafe { add_to(self.global.add(offset), sample) };
        if let Some(persvc_get) = self.persvc_get.filter(|_| snum >= 0) {
            // SAFETY: smbd's function; NULL when the share keeps no profile of its own.
            let share = unsafe { persvc_get(snum) } as *mut u8;
            if !share.is_null() {
                // SAFETY: a `struct profile_stats` of the same layout.
                unsafe { add_to(share.add(offset), sample) };
            }
        }
        self.schedule_dump();
    }

    /// `smbprofile_dump_schedule()`: smbd stores its counters a second after a change.
    fn schedule_dump(&self) {
        // SAFETY: `internal.te` and `internal.ev`, pointers inside smbprofile_state.
        let (te, ev) = unsafe {
            (
                (self.state.add(STATE_TE_OFFSET) as *const *mut c_void).read_volatile(),
                (self.state.add(STATE_EV_OFFSET) as *const *mut c_void).read_volatile(),
            )
        };
        if te.is_null() && !ev.is_null() {
            // SAFETY: smbd's function, called as its inline wrapper does.
            unsafe { (self.schedule_dump)() };
        }
    }
}

/// `struct smbprofile_stats_bytes { count, time, idle, bytes }` at `stats`.
///
/// # Safety
/// `stats` points to such a struct in smbd's memory.
unsafe fn add_to(stats: *mut u8, sample: Sample) {
    let fields = stats as *mut u64;
    // SAFETY: the four u64 fields of the struct (the caller's contract).
    unsafe {
        let bump = |i: usize, v: u64| {
            let p = fields.add(i);
            p.write_volatile(p.read_volatile().wrapping_add(v));
        };
        bump(0, sample.count);
        if let Some((total_us, idle_us)) = sample.times {
            bump(1, total_us);
            bump(2, idle_us);
        }
        bump(3, sample.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::profile_layout::LAYOUTS;
    use std::cell::RefCell;

    thread_local! {
        static DUMPS: RefCell<u32> = const { RefCell::new(0) };
        static SHARE: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    }

    extern "C" fn count_dump() {
        DUMPS.with(|d| *d.borrow_mut() += 1);
    }

    extern "C" fn share_profile(snum: c_int) -> *mut c_void {
        if snum != 7 {
            return std::ptr::null_mut();
        }
        SHARE.with(|s| s.borrow_mut().as_mut_ptr() as *mut c_void)
    }

    /// A fake `smbprofile_state` of `layout`, with its global profile inside it.
    fn fake(layout: &'static Layout, state: &mut [u64]) -> Profile {
        let base = state.as_mut_ptr() as *mut u8;
        let at = |c: Counter| layout.counter(c.name()).unwrap().offset;
        Profile {
            layout,
            state: base,
            // SAFETY: inside the buffer.
            global: unsafe { base.add(layout.global_offset()) },
            offsets: [at(Counter::Pread), at(Counter::Pwrite), at(Counter::Fsync)],
            schedule_dump: count_dump,
            persvc_get: layout.per_share.then_some(share_profile as PersvcGet),
        }
    }

    fn words(layout: &Layout) -> usize {
        (layout.global_offset() + layout.size()) / 8
    }

    /// What `find_with` makes of a fake smbd: `state` holds the profile of `layout` at
    /// `at`, stamped with `magic`.
    fn find_fake(layout: &Layout, at: usize, magic: u64, persvc: bool) -> Result<Profile, Missing> {
        let mut state = vec![0u64; words(layout) + 2];
        state[at / 8] = magic;
        // SAFETY: `at` lies inside `state`.
        let mut profile_p = unsafe { (state.as_mut_ptr() as *mut u8).add(at) };
        let state_ptr = state.as_mut_ptr() as *mut c_void;
        let profile_p_ptr = &mut profile_p as *mut *mut u8 as *mut c_void;
        let lookup = |name: &str| match name {
            "profile_p" => Some(profile_p_ptr),
            "smbprofile_state" => Some(state_ptr),
            "smbprofile_dump_schedule_timer" => Some(count_dump as *mut c_void),
            "smbprofile_persvc_get" if persvc => Some(share_profile as *mut c_void),
            _ => None,
        };
        // SAFETY: the lookup names objects of the types smbd's symbols have; the result
        // is only inspected, never written through, once `state` is gone.
        unsafe { find_with(&lookup) }
    }

    fn why(found: Result<Profile, Missing>) -> String {
        match found {
            Ok(p) => format!("found {}", p.layout.name),
            Err(Missing::NoProfile(w)) => format!("no profile: {w}"),
            Err(Missing::Unknown(w)) => format!("unknown: {w}"),
        }
    }

    #[test]
    fn only_a_known_layout_where_it_belongs_is_used() {
        for layout in &LAYOUTS {
            let at = layout.global_offset();
            assert_eq!(
                why(find_fake(layout, at, layout.magic(), true)),
                format!("found {}", layout.name)
            );
            // A magic no layout has (a counter added, moved or resized).
            assert!(
                why(find_fake(layout, at, layout.magic() ^ 1, true)).starts_with("unknown: magic")
            );
            // profile_p not where the layout puts it inside smbprofile_state.
            assert!(
                why(find_fake(layout, at + 8, layout.magic(), true)).starts_with("unknown: layout")
            );
            // Per-share profiles without their function.
            let without = why(find_fake(layout, at, layout.magic(), false));
            if layout.per_share {
                assert!(without.contains("smbprofile_persvc_get"), "{without}");
            } else {
                assert_eq!(without, format!("found {}", layout.name));
            }
        }
        // Not set up (not smbd): no profile, nothing to say about layouts.
        let layout = &LAYOUTS[0];
        let mut state = vec![0u64; words(layout)];
        let mut profile_p: *mut u8 = std::ptr::null_mut();
        let (s, p) = (
            state.as_mut_ptr() as *mut c_void,
            &mut profile_p as *mut *mut u8 as *mut c_void,
        );
        let lookup = |name: &str| match name {
            "profile_p" => Some(p),
            "smbprofile_state" => Some(s),
            "smbprofile_dump_schedule_timer" => Some(count_dump as *mut c_void),
            _ => None,
        };
        // SAFETY: as in find_fake.
        assert!(why(unsafe { find_with(&lookup) }).starts_with("no profile"));
        // SAFETY: as in find_fake.
        assert!(why(unsafe { find_with(&|_| None) }).starts_with("no profile"));
    }

    #[test]
    fn writes_only_while_smbd_counts() {
        let layout = profile_layout::tests::by_name("4.17").unwrap();
        let mut state = vec![0u64; words(layout)];
        let profile = fake(layout, &mut state);
        let sample = Sample {
            count: 1,
            bytes: 4096,
            times: Some((10, 2)),
        };
        profile.add(Counter::Pwrite, -1, sample);
        assert!(state.iter().all(|w| *w == 0), "written while off");

        state[layout.config_offset() / 8] = 1; // do_count
        let profile = fake(layout, &mut state);
        profile.add(Counter::Pwrite, -1, sample);
        let at =
            (layout.global_offset() + layout.counter("syscall_asys_pwrite").unwrap().offset) / 8;
        assert_eq!(&state[at..at + 4], &[1, 10, 2, 4096]);
        assert_eq!(
            state.iter().filter(|w| **w != 0).count(),
            5,
            "only do_count and the counter"
        );
        // internal.ev unset: smbd cannot dump yet, so no timer is asked for.
        assert_eq!(DUMPS.with(|d| *d.borrow()), 0);
    }

    #[test]
    fn per_share_profile_and_dump_timer() {
        let layout = profile_layout::tests::by_name("4.24").unwrap();
        let mut state = vec![0u64; words(layout)];
        state[layout.config_offset() / 8] = 1;
        state[STATE_EV_OFFSET / 8] = 0x1000; // an event context: the dump can be scheduled
        SHARE.with(|s| *s.borrow_mut() = vec![0u64; layout.size() / 8]);
        let profile = fake(layout, &mut state);
        let sample = Sample {
            count: 1,
            bytes: 0,
            times: None,
        };
        profile.add(Counter::Fsync, 7, sample);
        profile.add(Counter::Fsync, 3, sample);
        let off = layout.counter("syscall_asys_fsync").unwrap().offset;
        let global = (layout.global_offset() + off) / 8;
        assert_eq!(state[global], 2);
        SHARE.with(|s| assert_eq!(s.borrow()[off / 8], 1, "share 7 only"));
        assert_eq!(DUMPS.with(|d| *d.borrow()), 2);
    }

    #[test]
    fn add_to_fills_count_time_idle_bytes() {
        let mut stats = [1u64, 2, 3, 4];
        // SAFETY: a local struct of four u64.
        unsafe {
            add_to(
                stats.as_mut_ptr() as *mut u8,
                Sample {
                    count: 1,
                    bytes: 8 << 20,
                    times: Some((900, 150)),
                },
            );
            add_to(
                stats.as_mut_ptr() as *mut u8,
                Sample {
                    count: 0,
                    bytes: 10,
                    times: None,
                },
            );
        }
        assert_eq!(stats, [2, 902, 153, 4 + (8 << 20) + 10]);
    }
}
