//! Integration-test harness: a private smbd with the module under test, inside a
//! throw-away Linux namespace, driven by smbclient and smbtorture.
//!
//! Layout:
//! - [`namespace`]: re-runs a test inside `unshare --net --mount --pid` and bind-mounts
//!   there a copy of Samba's vfs directory holding the module under test (as
//!   `aio_fork.so` or another name) and its helper program (the host is untouched).
//! - [`module`]: finds the module file and tells whether it is Samba's C module.
//! - [`smbd`]: writes an smb.conf, adds the user, starts and stops smbd.
//! - [`client`]: one-shot `smbclient -c`, and a long-lived interactive session.
//! - [`torture`]: runs an smbtorture suite under a deadline and parses its results;
//!   [`expected`]: the files of expected outcomes its results are held against.
//! - [`procs`]: finds helper processes in /proc.
//! - [`faults`]: kills helpers at random, watches /proc for zombies and RSS, reaps
//!   orphans (the test is the namespace's init), checks smbd's log for crashes.
//! - [`stats`]: parses the module's `aio_fork stats ...` log lines.
//! - [`data`]: pseudo-random files and byte-for-byte comparison.
//! - [`held`]: what a process holds of the kinds the module opens (pidfds, sockets, buffers).
//! - [`images`]: loop-mounted file systems (ext4, XFS) for shares.
//! - [`guest`]: inside a user-mode Linux guest: device-mapper disks, the kernel's SMB
//!   client, smbd threads in uninterruptible sleep.
//! - [`setid`]: a user's write into a root-owned set-id file, as on a plain share.
//! - [`users`]: extra Unix users (namespace-private /etc/passwd) and SMB users.
//! - [`python`]: clients on Samba's Python bindings (odd requests, concurrency).
//! - [`cluster`]: a two-node clustered Samba (two ctdbd, two smbd) on one machine.
//! - [`samba_root`]: optionally, smbd from another Samba release's root file system.
//! - [`run`], [`tools`]: running external programs with deadlines; locating them.

// Each test binary compiles this module but uses only part of it.
#![allow(dead_code)]

pub mod client;
pub mod cluster;
pub mod data;
pub mod expected;
pub mod faults;
pub mod guest;
pub mod held;
pub mod images;
pub mod module;
pub mod namespace;
pub mod procs;
pub mod python;
pub mod run;
pub mod samba_root;
pub mod setid;
pub mod smbd;
pub mod stats;
pub mod tools;
pub mod torture;
pub mod users;
