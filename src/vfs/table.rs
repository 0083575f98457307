//! Which VFS interface the running smbd speaks, and the function table for it.
//!
//! smbd refuses a module registered with another interface version than its own, and the
//! table's shape changed at interface 49 (two directory slots removed), 52 (a stream slot
//! added before fsync, two later slots removed) and 53 (a slot added right after
//! disconnect, which moves every slot the module fills but connect/disconnect). One build
//! carries one table per shape and picks by `samba_version_string()` at load time.

use super::ops;
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

macro_rules! fill_table {
    ($ty:ty) => {{
        // SAFETY: the table is a struct of nullable pointers; all-zero means "all NULL".
        let mut t: $ty = unsafe { std::mem::zeroed() };
        t.connect_fn = Some(ops::connect);
        t.disconnect_fn = Some(ops::disconnect);
        t.pread_send_fn = Some(ops::pread_send);
        t.pread_recv_fn = Some(ops::pread_recv);
        t.pwrite_send_fn = Some(ops::pwrite_send);
        t.pwrite_recv_fn = Some(ops::pwrite_recv);
        t.fsync_send_fn = Some(ops::fsync_send);
        t.fsync_recv_fn = Some(ops::fsync_recv);
        t
    }};
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

/// The slot index of each filled slot of the table smbd gets for `interface`, in the
/// order connect, disconnect, pread_send, pread_recv, pwrite_send, pwrite_recv,
/// fsync_send, fsync_recv; and the table's slot count. Read from the very table
/// `table_for` hands out, so tests can hold it against smbd's binaries.
pub fn filled_slots(interface: i32) -> Option<(Vec<usize>, usize)> {
    #[cfg(aio_fork_tree)]
    if interface == tree::interface() {
        return Some(slot_positions(&table_tree()));
    }
    builtin_filled_slots(interface)
}

/// `filled_slots` of the tables in `samba-headers/`, whatever tree the build is in.
fn builtin_filled_slots(interface: i32) -> Option<(Vec<usize>, usize)> {
    match interface {
        47 | 48 => Some(slot_positions(&table_v47())),
        49..=51 => Some(slot_positions(&table_v49())),
        52 => Some(slot_positions(&table_v52())),
        53 => Some(slot_positions(&table_v53())),
        _ => None,
    }
}

fn slot_positions<T>(t: &T) -> (Vec<usize>, usize) {
    let n = std::mem::size_of::<T>() / std::mem::size_of::<usize>();
    // SAFETY: the tables are structs of pointer-sized, nullable function pointers.
    let words = unsafe { std::slice::from_raw_parts(t as *const T as *const usize, n) };
    let ops: [usize; 8] = [
        ops::connect as *const () as usize,
        ops::disconnect as *const () as usize,
        ops::pread_send as *const () as usize,
        ops::pread_recv as *const () as usize,
        ops::pwrite_send as *const () as usize,
        ops::pwrite_recv as *const () as usize,
        ops::fsync_send as *const () as usize,
        ops::fsync_recv as *const () as usize,
    ];
    let slots = ops
        .iter()
        .map(|op| words.iter().position(|w| w == op).unwrap_or(usize::MAX))
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
        // Indexes from Samba 4.17's struct vfs_fn_pointers (samba-headers/slots-v47.txt),
        // shifted by the two removed directory slots for interface 49.
        let t47 = table_v47();
        let t49 = table_v49();
        let slots47 = slot_words(&t47);
        let slots49 = slot_words(&t49);
        let filled47: Vec<usize> = (0..100).filter(|&i| slots47[i] != 0).collect();
        let filled49: Vec<usize> = (0..98).filter(|&i| slots49[i] != 0).collect();
        assert_eq!(filled47, vec![0, 1, 22, 23, 25, 26, 31, 32]);
        assert_eq!(filled49, vec![0, 1, 20, 21, 23, 24, 29, 30]);
        // 52: rename_stream_fn after renameat_fn moves fsync by one. 53: open_share_root_fn
        // after disconnect_fn moves every later slot by one.
        assert_eq!(
            filled_slots(52),
            Some((vec![0, 1, 20, 21, 23, 24, 30, 31], 97))
        );
        assert_eq!(
            filled_slots(53),
            Some((vec![0, 1, 21, 22, 24, 25, 31, 32], 97))
        );
        assert_eq!(
            filled_slots(47),
            Some((vec![0, 1, 22, 23, 25, 26, 31, 32], 100))
        );
        assert_eq!(filled_slots(51), filled_slots(49));
    }

    fn slot_words<T>(t: &T) -> Vec<usize> {
        let n = std::mem::size_of::<T>() / std::mem::size_of::<usize>();
        // SAFETY: the tables are arrays of pointer-sized slots.
        unsafe { std::slice::from_raw_parts(t as *const T as *const usize, n) }.to_vec()
    }
}
