//! Which VFS interface the running smbd speaks, and the function table for it.
//!
//! smbd refuses a module registered with another interface version than its own, and the
//! table's shape changed at interface 49 (two directory slots removed), 52 (a stream slot
//! added before fsync, two later slots removed) and 53 (a slot added right after
//! disconnect, which moves every slot the module fills but connect/disconnect). One build
//! carries one table per shape and picks by `samba_version_string()` at load time.

use super::{guarded, ops};
use crate::abi::ffi;
use std::ffi::c_void;

/// Built inside a Samba source tree (see build.rs): that tree's release, its interface,
/// and a table generated from its own vfs.h, which wins over the built-in one for it.
#[cfg(aio_fork_tree)]
mod tree {
    pub const RELEASE: &str = env!("AIO_FORK_TREE_RELEASE");
    pub fn interface() -> i32 {
        env!("AIO_FORK_TREE_INTERFACE")
            .parse()
            .expect("build.rs writes a number")
    }
}

/// VFS interface version of a Samba release "major.minor[.patch…]", if known.
pub fn interface_for_version(version: &str) -> Option<i32> {
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    #[cfg(aio_fork_tree)]
    if format!("{major}.{minor}") == tree::RELEASE {
        return Some(tree::interface());
    }
    match (major, minor) {
        (4, 17) => Some(47),
        (4, 18) => Some(48),
        (4, 19..=21) => Some(49),
        (4, 22) => Some(50),
        (4, 23) => Some(51),
        (4, 24) => Some(52),
        (4, 25) => Some(53),
        _ => None,
    }
}

/// The releases this build knows, for messages about one it does not.
pub const KNOWN_RELEASES: &str = "4.17 to 4.25";

/// The one log line for a Samba release without a table here: names it and the range.
pub fn unknown_release_message(version: &str) -> String {
    #[cfg(aio_fork_tree)]
    let known = format!("{KNOWN_RELEASES} and {}", tree::RELEASE);
    #[cfg(not(aio_fork_tree))]
    let known = KNOWN_RELEASES;
    format!(
        "aio_fork cannot load into Samba {version}: this build knows the VFS interfaces of \
         Samba {known} only"
    )
}

/// The function table for `interface`, with a lifetime of the process (smbd keeps the
/// pointer). Slots the module does not fill stay NULL: smbd passes those calls on.
pub fn table_for(interface: i32) -> Option<*const c_void> {
    #[cfg(aio_fork_tree)]
    if interface == tree::interface() {
        return Some(Box::leak(Box::new(table_tree())) as *const _ as *const c_void);
    }
    match interface {
        47 | 48 => Some(Box::leak(Box::new(table_v47())) as *const _ as *const c_void),
        49..=51 => Some(Box::leak(Box::new(table_v49())) as *const _ as *const c_void),
        52 => Some(Box::leak(Box::new(table_v52())) as *const _ as *const c_void),
        53 => Some(Box::leak(Box::new(table_v53())) as *const _ as *const c_void),
        _ => None,
    }
}

/// Every slot the module fills, by its name in `struct vfs_fn_pointers` (as listed in
/// `samba-headers/filled-slots.txt`), with the function it holds.
macro_rules! filled {
    ($each:ident, $arg:tt) => {
        $each!($arg;
            connect_fn: ops::connect,
            disconnect_fn: ops::disconnect,
            pread_send_fn: ops::pread_send,
            pread_recv_fn: ops::pread_recv,
            pwrite_send_fn: ops::pwrite_send,
            pwrite_recv_fn: ops::pwrite_recv,
            fsync_send_fn: ops::fsync_send,
            fsync_recv_fn: ops::fsync_recv,
            close_fn: guarded::close,
            pread_fn: guarded::pread,
            pwrite_fn: guarded::pwrite,
            fchmod_fn: guarded::fchmod,
            fchown_fn: guarded::fchown,
            fntimes_fn: guarded::fntimes,
            ftruncate_fn: guarded::ftruncate,
            fallocate_fn: guarded::fallocate,
            fdopendir_fn: guarded::fdopendir,
            fget_dos_attributes_fn: guarded::fget_dos_attributes,
            fset_dos_attributes_fn: guarded::fset_dos_attributes,
            fgetxattr_fn: guarded::fgetxattr,
            flistxattr_fn: guarded::flistxattr,
            fremovexattr_fn: guarded::fremovexattr,
            fsetxattr_fn: guarded::fsetxattr,
            openat_fn: guarded::openat,
            mkdirat_fn: guarded::mkdirat,
            unlinkat_fn: guarded::unlinkat,
            fstatat_fn: guarded::fstatat,
            symlinkat_fn: guarded::symlinkat,
            linkat_fn: guarded::linkat,
            mknodat_fn: guarded::mknodat,
            stat_fn: guarded::stat,
            lstat_fn: guarded::lstat
        )
    };
}

macro_rules! set_slots {
    ($t:ident; $($slot:ident: $f:path),*) => { $($t.$slot = Some($f);)* };
}

macro_rules! list_functions {
    (_; $($slot:ident: $f:path),*) => { vec![$((stringify!($slot), $f as *const () as usize)),*] };
}

macro_rules! fill_table {
    ($ty:ty) => {{
        // SAFETY: the table is a struct of nullable pointers; all-zero means "all NULL".
        let mut t: $ty = unsafe { std::mem::zeroed() };
        filled!(set_slots, t);
        t
    }};
}

/// The name and address of each function the module puts in its tables.
fn filled_functions() -> Vec<(&'static str, usize)> {
    filled!(list_functions, _)
}

fn table_v47() -> ffi::vfs_fn_pointers_v47 {
    fill_table!(ffi::vfs_fn_pointers_v47)
}

fn table_v49() -> ffi::vfs_fn_pointers_v49 {
    fill_table!(ffi::vfs_fn_pointers_v49)
}

fn table_v52() -> ffi::vfs_fn_pointers_v52 {
    fill_table!(ffi::vfs_fn_pointers_v52)
}

fn table_v53() -> ffi::vfs_fn_pointers_v53 {
    fill_table!(ffi::vfs_fn_pointers_v53)
}

#[cfg(aio_fork_tree)]
fn table_tree() -> ffi::vfs_fn_pointers_tree {
    fill_table!(ffi::vfs_fn_pointers_tree)
}

/// Each slot the module fills in the table smbd gets for `interface`, by name (as in
/// `samba-headers/filled-slots.txt`) and index; and the table's slot count. Read from the
/// very table `table_for` hands out, so tests can hold it against smbd's headers and
/// binaries.
pub fn filled_slots(interface: i32) -> Option<(Vec<(&'static str, usize)>, usize)> {
    #[cfg(aio_fork_tree)]
    if interface == tree::interface() {
        return Some(slot_positions(&table_tree()));
    }
    builtin_filled_slots(interface)
}

/// `filled_slots` of the tables in `samba-headers/`, whatever tree the build is in.
fn builtin_filled_slots(interface: i32) -> Option<(Vec<(&'static str, usize)>, usize)> {
    match interface {
        47 | 48 => Some(slot_positions(&table_v47())),
        49..=51 => Some(slot_positions(&table_v49())),
        52 => Some(slot_positions(&table_v52())),
        53 => Some(slot_positions(&table_v53())),
        _ => None,
    }
}

/// Where each filled function sits in table `t` (`usize::MAX`: nowhere).
fn slot_positions<T>(t: &T) -> (Vec<(&'static str, usize)>, usize) {
    let n = std::mem::size_of::<T>() / std::mem::size_of::<usize>();
    // SAFETY: the tables are structs of pointer-sized, nullable function pointers.
    let words = unsafe { std::slice::from_raw_parts(t as *const T as *const usize, n) };
    let slots = filled_functions()
        .into_iter()
        .map(|(name, f)| {
            (
                name,
                words.iter().position(|&w| w == f).unwrap_or(usize::MAX),
            )
        })
        .collect();
    (slots, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_releases_map_to_their_interface() {
        assert_eq!(interface_for_version("4.17.12-Debian"), Some(47));
        assert_eq!(interface_for_version("4.18.0"), Some(48));
        assert_eq!(interface_for_version("4.19.5"), Some(49));
        assert_eq!(interface_for_version("4.21.1-SerNet"), Some(49));
        assert_eq!(
            interface_for_version("4.22.6-Debian-4.22.6+dfsg-0+deb12u1"),
            Some(50)
        );
        assert_eq!(
            interface_for_version("4.22.11-Debian-4.22.11+dfsg-0+deb13u1"),
            Some(50)
        );
        assert_eq!(interface_for_version("4.23.0"), Some(51));
        assert_eq!(
            interface_for_version("4.24.7-Debian-4.24.7+dfsg-1~bpo13+1"),
            Some(52)
        );
        assert_eq!(
            interface_for_version("4.25.1-Debian-4.25.1+dfsg-1"),
            Some(53)
        );
        assert_eq!(interface_for_version("4.25.0pre1-GIT-abc"), Some(53));
    }

    #[test]
    fn every_known_interface_has_a_table() {
        for interface in 47..=53 {
            assert!(table_for(interface).is_some(), "interface {interface}");
        }
        assert!(table_for(46).is_none());
        assert!(table_for(54).is_none());
    }

    #[test]
    fn unknown_releases_are_refused() {
        assert_eq!(interface_for_version("4.16.11"), None);
        assert_eq!(interface_for_version("4.26.0"), None);
        assert_eq!(interface_for_version("4.26.0pre1-GIT"), None);
        assert_eq!(interface_for_version("5.0"), None);
        assert_eq!(interface_for_version("garbage"), None);
        assert_eq!(interface_for_version(""), None);
    }

    #[cfg(aio_fork_tree)]
    #[test]
    fn tree_table_matches_the_builtin_one_of_its_interface() {
        // Built in a tree of a release samba-headers/ knows, both tables must agree.
        let interface = tree::interface();
        let ours = filled_slots(interface).expect("the tree's table");
        println!("tree {} interface {interface}: {ours:?}", tree::RELEASE);
        assert!(ours.0.iter().all(|&i| i < ours.1), "{ours:?}");
        if let Some(builtin) = builtin_filled_slots(interface) {
            assert_eq!(ours, builtin);
        }
    }

    #[cfg(not(aio_fork_tree))]
    #[test]
    fn unknown_release_is_named_with_the_known_range() {
        let line = unknown_release_message("4.26.0-Debian");
        assert_eq!(
            line,
            "aio_fork cannot load into Samba 4.26.0-Debian: this build knows the VFS \
             interfaces of Samba 4.17 to 4.25 only"
        );
    }

    #[test]
    fn debian_package_breaks_the_first_unknown_release() {
        // Cargo.toml's package.metadata.deb must keep apt from upgrading Samba to a
        // release this build refuses.
        let first_unknown = (17..100)
            .find(|minor| interface_for_version(&format!("4.{minor}.0")).is_none())
            .expect("some release is unknown");
        let want = format!("breaks = \"samba (>= 2:4.{first_unknown}~)\"");
        assert!(
            include_str!("../../Cargo.toml").contains(&want),
            "Cargo.toml should declare {want}"
        );
    }

    #[test]
    fn tables_have_the_slot_counts_of_their_interface() {
        let ptr = std::mem::size_of::<*const c_void>();
        assert_eq!(std::mem::size_of::<ffi::vfs_fn_pointers_v47>(), 100 * ptr);
        assert_eq!(std::mem::size_of::<ffi::vfs_fn_pointers_v49>(), 98 * ptr);
        assert_eq!(std::mem::size_of::<ffi::vfs_fn_pointers_v52>(), 97 * ptr);
        assert_eq!(std::mem::size_of::<ffi::vfs_fn_pointers_v53>(), 97 * ptr);
    }

    #[test]
    fn our_slots_sit_where_samba_expects_them() {
        // Each filled slot at the index its name has in that interface's slot list (from
        // Samba's struct vfs_fn_pointers), every other slot NULL.
        for (interface, list) in [
            (47, include_str!("../../samba-headers/slots-v47.txt")),
            (49, include_str!("../../samba-headers/slots-v49.txt")),
            (51, include_str!("../../samba-headers/slots-v49.txt")),
            (52, include_str!("../../samba-headers/slots-v52.txt")),
            (53, include_str!("../../samba-headers/slots-v53.txt")),
        ] {
            let names: Vec<&str> = list.lines().filter(|l| !l.is_empty()).collect();
            let (filled, size) = filled_slots(interface).unwrap();
            assert_eq!(size, names.len(), "interface {interface}");
            for (name, index) in &filled {
                assert_eq!(
                    names.iter().position(|n| n == name),
                    Some(*index),
                    "interface {interface}: {name}"
                );
            }
        }
        let t47 = table_v47();
        let set = slot_words(&t47).iter().filter(|&&w| w != 0).count();
        assert_eq!(set, filled_functions().len());
        // The connect/disconnect and async I/O slots, as Samba 4.17 numbers them.
        let (filled, _) = filled_slots(47).unwrap();
        let io: Vec<usize> = filled[..8].iter().map(|(_, i)| *i).collect();
        assert_eq!(io, vec![0, 1, 22, 23, 25, 26, 31, 32]);
    }

    #[test]
    fn the_filled_slots_are_those_the_headers_type() {
        let listed: Vec<&str> = include_str!("../../samba-headers/filled-slots.txt")
            .lines()
            .filter(|l| !l.is_empty())
            .collect();
        let ours: Vec<&str> = filled_functions().iter().map(|(n, _)| *n).collect();
        assert_eq!(ours, listed);
    }

    fn slot_words<T>(t: &T) -> Vec<usize> {
        let n = std::mem::size_of::<T>() / std::mem::size_of::<usize>();
        // SAFETY: the tables are arrays of pointer-sized slots.
        unsafe { std::slice::from_raw_parts(t as *const T as *const usize, n) }.to_vec()
    }
}
