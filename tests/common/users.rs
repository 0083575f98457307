//! Extra users for a test: Unix accounts that exist only inside the test's mount
//! namespace, and their SMB passwords in the test smbd's private passdb.
//!
//! [`add_unix_users`] copies `/etc/passwd` and `/etc/group`, appends the users (each
//! with a group of its own, at ids free in both files) and bind-mounts the copies over
//! the originals — in the test's private mount namespace, so the host never sees them.
//! With [`samba_root`] in use, the root file system's files get the same users, as
//! its smbd reads those. [`add_smb_user`] then puts the user in the smbd's passdb.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::smbd::Smbd;
use super::{run, samba_root, tools};

/// Where ids of test users start (above Debian's dynamic user ranges' common uses).
const FIRST_ID: u32 = 42_000;

/// A user made by [`add_unix_users`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub password: String,
    pub uid: u32,
    pub gid: u32,
}

impl User {
    /// `-U` argument for clients.
    pub fn credentials(&self) -> String {
        format!("{}%{}", self.name, self.password)
    }
}

/// Adds Unix users `names`; each gets an SMB password of its own (`<Name>-Pw-1`) for
/// [`add_smb_user`].
/// Only inside [`super::namespace::run_in_namespace`]: it bind-mounts over /etc/passwd.
pub fn add_unix_users(workdir: &Path, names: &[&str]) -> Vec<User> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    assert_eq!(
        pid, 1,
        "add_unix_users bind-mounts over /etc/passwd: only inside the test's namespace \
         (run_in_namespace), where the test is PID 1"
    );
    let etc_dirs: Vec<PathBuf> = std::iter::once(PathBuf::from("/etc"))
        .chain(samba_root::root().map(|r| r.join("etc")))
        .collect();
    let mut used_uids = BTreeSet::new();
    let mut used_gids = BTreeSet::new();
    for etc in &etc_dirs {
        used_uids.extend(ids_in(&etc.join("passwd"), 2));
        used_gids.extend(ids_in(&etc.join("group"), 2));
        used_gids.extend(ids_in(&etc.join("passwd"), 3));
    }
    let mut next = FIRST_ID;
    let users: Vec<User> = names
        .iter()
        .map(|name| {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
                "user name {name:?}: lowercase letters and digits only"
            );
            while used_uids.contains(&next) || used_gids.contains(&next) {
                next += 1;
            }
            let id = next;
            next += 1;
            let mut password = name.to_string();
            password[..1].make_ascii_uppercase();
            User {
                name: name.to_string(),
                password: format!("{password}-Pw-1"),
                uid: id,
                gid: id,
            }
        })
        .collect();
    for (i, etc) in etc_dirs.iter().enumerate() {
        let copies = workdir.join(format!("etc-users-{i}"));
        fs::create_dir_all(&copies).expect("create dir for passwd copies");
        append_and_bind(&etc.join("passwd"), &copies.join("passwd"), &users, |u| {
            format!(
                "{}:x:{}:{}:aio_fork test user:/nonexistent:/usr/sbin/nologin\n",
                u.name, u.uid, u.gid
            )
        });
        append_and_bind(&etc.join("group"), &copies.join("group"), &users, |u| {
            format!("{}:x:{}:\n", u.name, u.gid)
        });
    }
    for user in &users {
        check_resolves(user);
    }
    users
}

/// Numeric field `field` (0-based) of every line of a passwd-style file.
fn ids_in(path: &Path, field: usize) -> Vec<u32> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(':').nth(field)?.parse().ok())
        .collect()
}

fn append_and_bind(original: &Path, copy: &Path, users: &[User], line: impl Fn(&User) -> String) {
    let mut text =
        fs::read_to_string(original).unwrap_or_else(|e| panic!("read {}: {e}", original.display()));
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for user in users {
        text.push_str(&line(user));
    }
    fs::write(copy, text).unwrap_or_else(|e| panic!("write {}: {e}", copy.display()));
    let out = run::run(
        tools::command("mount")
            .arg("--bind")
            .arg(copy)
            .arg(original),
        Duration::from_secs(30),
    );
    assert!(
        out.success(),
        "bind mount of {} over {} failed:\n{}",
        copy.display(),
        original.display(),
        out.describe()
    );
}

/// The host's name service must now know the user (a name-service cache daemon would
/// answer from the host's files instead: then smbd could not become the user).
fn check_resolves(user: &User) {
    let name = std::ffi::CString::new(user.name.as_str()).expect("user name");
    // SAFETY: getpwnam returns NULL or a pointer to static storage, read at once; the
    // test's threads do not call getpwnam concurrently here.
    let uid = unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        (!pw.is_null()).then(|| (*pw).pw_uid)
    };
    assert_eq!(
        uid,
        Some(user.uid),
        "user {} does not resolve to uid {} after the bind mount over /etc/passwd \
         (is a name-service cache such as nscd answering from the host's files?)",
        user.name,
        user.uid
    );
}

/// Adds `user` to the running smbd's passdb (smbd reads it at each login).
pub fn add_smb_user(smbd: &Smbd, user: &User) {
    let input = format!("{0}\n{0}\n", user.password);
    let out = run::run_with_input(
        samba_root::command("smbpasswd")
            .arg("-c")
            .arg(&smbd.conf)
            .args(["-s", "-a", &user.name]),
        Duration::from_secs(30),
        input.as_bytes(),
    );
    assert!(
        out.success(),
        "smbpasswd -a {} failed:\n{}",
        user.name,
        out.describe()
    );
}

/// The groups of `name` as the system gives them (`id -G`): what smbd's token holds for a
/// Unix user of a standalone server.
pub fn groups_of(name: &str) -> std::collections::BTreeSet<u32> {
    let out = super::run::run(
        super::tools::command("id").args(["-G", name]),
        std::time::Duration::from_secs(10),
    );
    assert!(out.success(), "id -G {name}:\n{}", out.describe());
    out.stdout
        .split_whitespace()
        .map(|g| g.parse().expect("numeric group"))
        .collect()
}
