//! What a process holds of the kinds the module opens in smbd: pidfds, memfds, unix
//! SOCK_SEQPACKET sockets (to zygotes and helpers) and helper buffer mappings; read from
//! /proc, or from a report written as the process exited (tests/programs/at_exit.c).

use std::collections::BTreeSet;
use std::fs;
use std::thread;
use std::time::{Duration, Instant};

/// How long the module may take to let go of what it holds once it should.
pub const LET_GO: Duration = Duration::from_secs(5);

/// What a process holds: its fds (number, target), its mappings, the unix socket table.
#[derive(Debug, Default)]
pub struct Held {
    pub fds: Vec<(String, String)>,
    pub maps: String,
    pub unix: String,
}

pub fn held_now(pid: u32) -> Option<Held> {
    let mut fds = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).ok()? {
        let entry = entry.ok()?;
        let target = fs::read_link(entry.path()).unwrap_or_default();
        fds.push((
            entry.file_name().to_string_lossy().into_owned(),
            target.display().to_string(),
        ));
    }
    Some(Held {
        fds,
        maps: fs::read_to_string(format!("/proc/{pid}/maps")).ok()?,
        unix: fs::read_to_string(format!("/proc/{pid}/net/unix")).ok()?,
    })
}

/// The things in `held` of the kinds the module opens: pidfds, memfds, unix SOCK_SEQPACKET
/// sockets, and helper buffer mappings.
pub fn module_things(held: &Held) -> Vec<String> {
    let seqpacket: BTreeSet<String> = held
        .unix
        .lines()
        .skip(1)
        .filter_map(|l| {
            // Num RefCount Protocol Flags Type St Inode Path
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.get(4) == Some(&"0005")).then(|| cols.get(6).map(|s| s.to_string()))?
        })
        .collect();
    let mut things = Vec::new();
    for (fd, target) in &held.fds {
        let socket = target
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'));
        if target == "anon_inode:[pidfd]" || target.starts_with("pidfd:") {
            things.push(format!("fd {fd}: pidfd"));
        } else if target.starts_with("/memfd:") {
            things.push(format!("fd {fd}: {target}"));
        } else if socket.is_some_and(|inode| seqpacket.contains(inode)) {
            things.push(format!("fd {fd}: seqpacket {target}"));
        }
    }
    things.extend(
        held.maps
            .lines()
            .filter(|l| l.contains("aio_fork_buffer"))
            .map(|l| format!("mapping {l}")),
    );
    things
}

/// The problems if connection `conn` still holds, within [`LET_GO`], more things of the
/// module's kind than `before`.
pub fn left_over(conn: u32, before: &[String], when: &str) -> Vec<String> {
    let deadline = Instant::now() + LET_GO;
    loop {
        let Some(held) = held_now(conn) else {
            return vec![format!("{when}: connection {conn} is gone")];
        };
        let things = module_things(&held);
        if things.len() <= before.len() {
            println!(
                "{when}: connection {conn} holds {} fds; of the module's kind: {things:?}",
                held.fds.len()
            );
            return Vec::new();
        }
        if Instant::now() > deadline {
            return vec![format!(
                "{when}: {LET_GO:?} later connection {conn} still holds {things:?} (after the \
                 tree connect: {before:?}); all its fds: {:?}",
                held.fds
            )];
        }
        thread::sleep(Duration::from_millis(50));
    }
}
