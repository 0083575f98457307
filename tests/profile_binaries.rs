//! The module's profile layouts (`aio_fork::PROFILE_LAYOUTS`, from each release's
//! smbprofile.h) against the *binaries* of every Samba release there is one of here: the
//! host's 4.17, and the root file systems of `scripts/testing/samba-rootfs.sh` (4.22.6,
//! 4.22.11, 4.24.7, 4.25.1, whose source is not published: the nearest is master).
//!
//! Read with `objdump`, without running anything:
//! - libsmbd-base's `set_profile_level` stores `config.do_count`/`do_times` as one 16-bit
//!   word at `smbprofile_state + config offset`, and for level 3 clears
//!   `profile_p->values`: `add $<values offset>,%rdi`, `mov $<sizeof values>,%e?x`, then
//!   a call to an explicit bzero/memset;
//! - smbstatus prints every counter field with `d_printf("%-59s%20ju\n",
//!   "<counter>_<field>:", stats.values.<counter>_stats.<field>)`: the field's name is a
//!   string in .rodata, its value a load `mov <offset>(%base),%reg` just before. In the
//!   whole-profile dump `stats` is on the stack (offsets relative to the first field,
//!   `connect_count`); from 4.23 the per-share dump reads through a pointer to the share's
//!   `struct profile_stats` (offsets from the struct's start).
//!
//! Each must match the layout the module uses for that release; at run time the module
//! also checks the profile's magic (tests/profile_counters.rs runs it).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use aio_fork::{ProfileLayout, PROFILE_LAYOUTS};

const ROOT_RELEASES: &[&str] = &["4.22.6", "4.22.11", "4.24.7", "4.25.1"];
/// The counters the module writes: each must be found in every binary.
const ASYNC_COUNTERS: [&str; 3] = [
    "syscall_asys_pread",
    "syscall_asys_pwrite",
    "syscall_asys_fsync",
];

/// One release's files.
struct Release {
    /// `smbd -V` without "Version ", e.g. "4.25.1-Debian-4.25.1+dfsg-1".
    version: String,
    library: PathBuf,
    smbstatus: PathBuf,
}

fn release_in(root: &Path, version: &str) -> Release {
    let dir = root.join("usr/lib/x86_64-linux-gnu/samba");
    let library = [
        "libsmbd-base-samba4.so.0",
        "libsmbd-base-private-samba.so.0",
    ]
    .iter()
    .map(|n| dir.join(n))
    .find(|p| p.exists())
    .unwrap_or_else(|| panic!("no libsmbd-base library in {}", dir.display()));
    Release {
        version: version.trim().trim_start_matches("Version ").to_string(),
        library,
        smbstatus: root.join("usr/bin/smbstatus"),
    }
}

fn host_release() -> Release {
    let out = Command::new("smbd")
        .arg("-V")
        .output()
        .expect("smbd -V (apt-get install samba)");
    release_in(Path::new("/"), &String::from_utf8_lossy(&out.stdout))
}

fn root_release(release: &str) -> Release {
    let (root, stamp) = common::samba_root::built(release);
    release_in(&root, &stamp)
}

/// The layout for a release: the newest whose first release is not after it.
fn layout_for(version: &str) -> &'static ProfileLayout {
    let release = |v: &str| -> (u32, u32) {
        let mut parts = v.split(['.', '-']).map(|p| p.parse().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    };
    PROFILE_LAYOUTS
        .iter()
        .rev()
        .find(|l| release(l.name) <= release(version))
        .unwrap_or_else(|| panic!("no profile layout for Samba {version}"))
}

fn objdump(args: &[&str], file: &Path) -> String {
    let out = Command::new("objdump")
        .args(args)
        .arg(file)
        .output()
        .expect("objdump (apt-get install binutils)");
    assert!(out.status.success(), "objdump {args:?} {}", file.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The instructions of function `name` in a disassembly (`<name@@VERSION>:` header).
fn function<'a>(disassembly: &'a str, name: &str) -> Vec<&'a str> {
    let mut lines = disassembly.lines();
    let header = format!("<{name}@@");
    let found = lines.any(|l| l.contains(&header) && l.ends_with(">:"));
    assert!(found, "no function {name} in the disassembly");
    lines.take_while(|l| !l.is_empty()).collect()
}

/// `mov    %ax,0x18(%rbx)` → "%ax", "0x18(%rbx)".
fn instruction(line: &str) -> Option<(&str, &str, &str)> {
    let insn = line.split('\t').nth(1)?.split('#').next()?.trim();
    let (mnemonic, operands) = insn.split_once(char::is_whitespace)?;
    let (src, dst) = operands.trim().rsplit_once(',')?;
    Some((mnemonic, src, dst))
}

/// `0x18(%rbx)` → 0x18, `(%rbx)` → 0, `-0x8(%rbp)` → -8; `None` if not base-only memory.
fn displacement(operand: &str) -> Option<(i64, &str)> {
    let (disp, rest) = operand.split_once('(')?;
    let base = rest.strip_suffix(')')?;
    if base.contains(',') || base == "%rip" {
        return None;
    }
    let value = match disp {
        "" => 0,
        d if d.starts_with("-0x") => -i64::from_str_radix(&d[3..], 16).ok()?,
        d => i64::from_str_radix(d.strip_prefix("0x")?, 16).ok()?,
    };
    Some((value, base))
}

fn immediate(operand: &str) -> Option<i64> {
    i64::from_str_radix(operand.strip_prefix("$0x")?, 16).ok()
}

/// What `set_profile_level` shows: (config offset, values offset, sizeof values).
fn set_profile_level(library: &Path) -> (Vec<i64>, Option<i64>, Option<i64>) {
    let text = objdump(&["-d", "--no-show-raw-insn"], library);
    let body = function(&text, "set_profile_level");
    let mut config = Vec::new();
    for line in &body {
        let Some((mnemonic, src, dst)) = instruction(line) else {
            continue;
        };
        let word = matches!(src, "%ax" | "%bx" | "%cx" | "%dx" | "%si" | "%di")
            || (src.ends_with('w') && src.starts_with("%r"))
            || mnemonic == "movw";
        if mnemonic.starts_with("mov") && word {
            if let Some((off, _)) = displacement(dst) {
                if !config.contains(&off) {
                    config.push(off);
                }
            }
        }
    }
    let clear = body
        .iter()
        .position(|l| l.contains("call") && (l.contains("bzero") || l.contains("memset")));
    let (mut values, mut size) = (None, None);
    if let Some(at) = clear {
        let size_reg = if body[at].contains("bzero") {
            "%esi"
        } else {
            "%edx"
        };
        for line in body[at.saturating_sub(10)..at].iter() {
            match instruction(line) {
                Some(("add", src, "%rdi")) => values = immediate(src),
                Some(("mov", src, dst)) if dst == size_reg => size = immediate(src),
                _ => {}
            }
        }
    }
    (config, values, size)
}

/// smbstatus's .rodata: (start address, bytes), from `objdump -s` lines
/// ` 15000 01000200 25735c25 735c2578 5c25780a  ....%s\%s\%x\%x.`.
fn rodata(smbstatus: &Path) -> (u64, Vec<u8>) {
    let text = objdump(&["-s", "-j", ".rodata"], smbstatus);
    let mut start = None;
    let mut bytes = Vec::new();
    for line in text.lines().filter(|l| l.starts_with(' ')) {
        let Some((addr, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        start.get_or_insert(addr);
        // Four groups of 8 hex digits (fewer on the last line), then the ASCII column.
        for group in rest[..rest.len().min(35)].split_whitespace() {
            for pair in group.as_bytes().chunks(2) {
                let pair = std::str::from_utf8(pair).expect("ASCII");
                bytes.push(u8::from_str_radix(pair, 16).expect("hex byte"));
            }
        }
    }
    (start.expect("smbstatus has a .rodata section"), bytes)
}

fn c_string(rodata: &(u64, Vec<u8>), addr: u64) -> Option<String> {
    let at = addr.checked_sub(rodata.0)? as usize;
    let rest = rodata.1.get(at..)?;
    let end = rest.iter().position(|b| *b == 0)?;
    String::from_utf8(rest[..end].to_vec()).ok()
}

/// Per base register: every printed field → the displacement its value is loaded from.
fn printed_fields(smbstatus: &Path) -> BTreeMap<String, BTreeMap<String, i64>> {
    let strings = rodata(smbstatus);
    let text = objdump(&["-d", "--no-show-raw-insn"], smbstatus);
    let lines: Vec<&str> = text.lines().collect();
    let mut by_base: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.contains("lea ") || !line.contains("(%rip)") {
            continue;
        }
        let Some(target) = line
            .split('#')
            .nth(1)
            .and_then(|c| c.split_whitespace().next())
            .and_then(|a| u64::from_str_radix(a, 16).ok())
        else {
            continue;
        };
        let Some(name) =
            c_string(&strings, target).and_then(|s| s.strip_suffix(':').map(String::from))
        else {
            continue;
        };
        // The value: the nearest load from memory since the previous call. A stack load
        // made while arguments were pushed (`add $n,%rsp` after it) reads n bytes further.
        let mut popped = 0;
        for prev in lines[i.saturating_sub(12)..i].iter().rev() {
            if prev.contains("call") {
                break;
            }
            match instruction(prev) {
                Some(("add", src, "%rsp")) => popped += immediate(src).unwrap_or(0),
                Some(("mov", src, dst)) if dst.starts_with('%') => {
                    if let Some((off, base)) = displacement(src) {
                        let off = if base == "%rsp" { off - popped } else { off };
                        by_base
                            .entry(base.to_string())
                            .or_default()
                            .entry(name.clone())
                            .or_insert(off);
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    by_base
}

fn check(release: &Release) -> Vec<String> {
    let layout = layout_for(&release.version);
    let v = &release.version;
    let mut problems = Vec::new();

    let (config, values, size) = set_profile_level(&release.library);
    let values_size = (layout.size() - layout.values_offset()) as i64;
    println!(
        "{v}: layout {}: set_profile_level stores config at {config:?} (layout {}), clears \
         {size:?} bytes at profile_p+{values:?} (layout {values_size} at +{})",
        layout.name,
        layout.config_offset(),
        layout.values_offset()
    );
    if config != [layout.config_offset() as i64] {
        problems.push(format!(
            "{v}: smbprofile_state.config at {config:?}, layout {} says {}",
            layout.name,
            layout.config_offset()
        ));
    }
    if values != Some(layout.values_offset() as i64) || size != Some(values_size) {
        problems.push(format!(
            "{v}: profile_p->values is {size:?} bytes at +{values:?}, layout {} says \
             {values_size} at +{}",
            layout.name,
            layout.values_offset()
        ));
    }

    let ours: BTreeMap<String, i64> = layout
        .field_offsets()
        .into_iter()
        .map(|(n, o)| (n, o as i64))
        .collect();
    let printed = printed_fields(&release.smbstatus);
    let mut per_share_seen = false;
    let mut whole_seen = false;
    for (base, fields) in &printed {
        let known: Vec<(&String, &i64)> = fields
            .iter()
            .filter(|(n, _)| ours.contains_key(*n))
            .collect();
        if known.len() < 20 {
            continue; // not a profile dump
        }
        // The whole-profile dump reads a struct on the stack (offsets from its first
        // counter); a share's dump reads one through a pointer (offsets from its start).
        let stack = base == "%rsp";
        let origin = if stack {
            whole_seen = true;
            match fields.get("connect_count") {
                Some(first) => first - ours["connect_count"],
                None => {
                    problems.push(format!("{v}: smbstatus prints no connect_count"));
                    continue;
                }
            }
        } else {
            per_share_seen = true;
            0
        };
        let mut wrong = Vec::new();
        for (name, off) in &known {
            if **off - origin != ours[*name] {
                wrong.push(format!(
                    "{name} at {:#x}, layout {:#x}",
                    **off - origin,
                    ours[*name]
                ));
            }
        }
        for counter in ASYNC_COUNTERS {
            for field in ["count", "time", "idle", "bytes"] {
                let name = format!("{counter}_{field}");
                if !fields.contains_key(&name) {
                    wrong.push(format!("{name} not found"));
                }
            }
        }
        println!(
            "{v}: smbstatus ({}, base {base}): {} of the layout's {} fields printed, {} at \
             the layout's offsets",
            if stack {
                "whole profile"
            } else {
                "per-share dump"
            },
            known.len(),
            ours.len(),
            known.len() - wrong.iter().filter(|w| !w.ends_with("not found")).count()
        );
        for w in wrong {
            problems.push(format!("{v}: smbstatus (base {base}): {w}"));
        }
    }
    if !whole_seen {
        problems.push(format!("{v}: no whole-profile dump found in smbstatus"));
    }
    if layout.per_share != per_share_seen {
        problems.push(format!(
            "{v}: smbstatus has a per-share dump: {per_share_seen}, layout {} per_share: {}",
            layout.name, layout.per_share
        ));
    }
    problems
}

#[test]
fn layouts_match_every_release_binary() {
    let mut releases = vec![host_release()];
    releases.extend(ROOT_RELEASES.iter().map(|r| root_release(r)));
    let problems: Vec<String> = releases.iter().flat_map(check).collect();
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn operand_parsing() {
    assert_eq!(displacement("0x18(%rbx)"), Some((0x18, "%rbx")));
    assert_eq!(displacement("(%rbp)"), Some((0, "%rbp")));
    assert_eq!(displacement("-0x8(%rbp)"), Some((-8, "%rbp")));
    assert_eq!(displacement("0x10(%rip)"), None);
    assert_eq!(displacement("0x8(%rax,%rbx,8)"), None);
    assert_eq!(
        instruction("   4778b:\tmov    %ax,0x18(%rbx)"),
        Some(("mov", "%ax", "0x18(%rbx)"))
    );
    let rodata = (0x100, b"ab\0disconnect_count:\0".to_vec());
    assert_eq!(c_string(&rodata, 0x100).as_deref(), Some("ab"));
    assert_eq!(c_string(&rodata, 0x106).as_deref(), Some("connect_count:"));
    assert_eq!(layout_for("4.22.11-Debian").name, "4.19");
    assert_eq!(layout_for("4.17.12-Debian").name, "4.17");
    assert_eq!(layout_for("4.25.1-Debian").name, "4.25");
}
