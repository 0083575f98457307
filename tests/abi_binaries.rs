//! The module's VFS tables against the *binaries* of every Samba release there is one of
//! here: the host's 4.17, and the smbd of each root file system of `scripts/testing/samba-rootfs.sh`
//! (4.22.6, 4.22.11, 4.24.7, 4.25.1). Headers can be misread; the compiled smbd is what
//! calls the module.
//!
//! How: each exported `smb_vfs_call_<slot>` of libsmbd-base dispatches through the
//! handle's table, `handle->fns` (offset 0x20 of `vfs_handle_struct`):
//!
//!     mov 0x20(%rdi),%rax      ; handle->fns
//!     mov 0xb0(%rax),%rax      ; fns->pread_send_fn  (slot 22 in 4.17)
//!
//! `objdump -d` of the library gives, per function, the offsets it reads from the register
//! that holds `fns`. For the slots the module fills, the offsets must be the module's slot
//! index × 8 as `vfs_table` builds the table for that release's interface; the `_send`
//! functions also read the matching `_recv` slot (they store it in their request state),
//! which checks the recv slots. Every other slot of our slot list that has an exported
//! `smb_vfs_call_*` must sit at its index too, and the last slot
//! (`freaddir_attr_fn`) fixes the table size.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use aio_fork::{filled_slots, interface_for_version};

/// Releases with a root file system (arguments of samba-rootfs.sh).
const ROOT_RELEASES: &[&str] = &["4.22.6", "4.22.11", "4.24.7", "4.25.1"];
const LAST_SLOT: &str = "freaddir_attr_fn";

/// One release's smbd library, and its version string (`smbd -V` without "Version ").
struct Binary {
    version: String,
    library: PathBuf,
}

fn host_binary() -> Binary {
    let out = Command::new("smbd")
        .arg("-V")
        .output()
        .expect("smbd -V (apt-get install samba)");
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Binary {
        version: version
            .strip_prefix("Version ")
            .unwrap_or(&version)
            .to_string(),
        library: find_library(Path::new("/")),
    }
}

fn root_binary(release: &str) -> Binary {
    let (root, stamp) = common::samba_root::built(release);
    let version = stamp.trim();
    Binary {
        version: version
            .strip_prefix("Version ")
            .unwrap_or(version)
            .to_string(),
        library: find_library(&root),
    }
}

/// libsmbd-base: `libsmbd-base-samba4.so.0` up to 4.17, `libsmbd-base-private-samba.so.0`
/// from 4.22 (Debian renamed Samba's private libraries).
fn find_library(root: &Path) -> PathBuf {
    let dir = root.join("usr/lib/x86_64-linux-gnu/samba");
    for name in [
        "libsmbd-base-samba4.so.0",
        "libsmbd-base-private-samba.so.0",
    ] {
        let path = dir.join(name);
        if path.exists() {
            return path;
        }
    }
    panic!("no libsmbd-base library in {}", dir.display());
}

/// Per exported `smb_vfs_call_*` function (name without the prefix): the distinct offsets
/// it reads from `handle->fns`, in the order they first appear.
fn fns_offsets(library: &Path) -> BTreeMap<String, Vec<u64>> {
    let out = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(library)
        .output()
        .expect("objdump (apt-get install binutils)");
    assert!(out.status.success(), "objdump -d {}", library.display());
    parse_disassembly(&String::from_utf8_lossy(&out.stdout))
}

fn parse_disassembly(text: &str) -> BTreeMap<String, Vec<u64>> {
    let mut all = BTreeMap::new();
    let mut current: Option<(String, Vec<u64>)> = None;
    // Registers holding handle->fns at this point of the function.
    let mut fns_regs: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(name) = function_start(line) {
            if let Some((n, offs)) = current.take() {
                all.insert(n, offs);
            }
            fns_regs.clear();
            current = name
                .strip_prefix("smb_vfs_call_")
                .map(|n| (n.to_string(), Vec::new()));
            continue;
        }
        let Some((_, offsets)) = current.as_mut() else {
            continue;
        };
        let Some(insn) = line.split('\t').nth(1) else {
            continue;
        };
        let insn = insn.split('#').next().unwrap_or("").trim();
        let (mnemonic, operands) = insn.split_once(char::is_whitespace).unwrap_or((insn, ""));
        let operands = operands.trim();
        let dest = operands.rsplit(',').next().unwrap_or("");
        if mnemonic == "mov" {
            if let Some(reg) = fns_load(operands) {
                fns_regs.retain(|r| *r != reg);
                fns_regs.push(reg);
                continue;
            }
        }
        for reg in &fns_regs {
            if let Some(off) = memory_offset(operands, reg) {
                if !offsets.contains(&off) {
                    offsets.push(off);
                }
            }
        }
        // A register written with something else no longer holds fns.
        fns_regs.retain(|r| dest != format!("%{r}"));
    }
    if let Some((n, offs)) = current {
        all.insert(n, offs);
    }
    all
}

/// `0000000000098f60 <smb_vfs_call_connect@@SAMBA_4.25.1_...>:` → the symbol name.
fn function_start(line: &str) -> Option<&str> {
    let rest = line.strip_suffix(">:")?;
    let (_, name) = rest.split_once(" <")?;
    let name = name.split('@').next()?;
    Some(name)
}

/// `0x20(%rdi),%rax` (a load of `handle->fns`) → "rax". Not from the stack or rip.
fn fns_load(operands: &str) -> Option<String> {
    let (src, dest) = operands.split_once(',')?;
    let base = src.strip_prefix("0x20(%")?.strip_suffix(')')?;
    if matches!(base, "rsp" | "rip") || !base.starts_with('r') {
        return None;
    }
    let dest = dest.strip_prefix("%r")?;
    Some(format!("r{dest}"))
}

/// The displacement of a memory operand based on `%reg` alone (`0xb0(%rdx)`, `(%rdx)`).
fn memory_offset(operands: &str, reg: &str) -> Option<u64> {
    let needle = format!("(%{reg})");
    let at = operands.find(&needle)?;
    let before = &operands[..at];
    let disp = before.rsplit([',', ' ', '*']).next().unwrap_or("");
    if disp.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(disp.strip_prefix("0x")?, 16).ok()
}

fn slots_file(interface: i32) -> &'static str {
    match interface {
        47 | 48 => "slots-v47.txt",
        49..=51 => "slots-v49.txt",
        52 => "slots-v52.txt",
        53 => "slots-v53.txt",
        _ => panic!("no slot list for interface {interface}"),
    }
}

/// Checks one release; returns its problems (empty: the module's table matches smbd).
fn check(binary: &Binary) -> Vec<String> {
    let mut problems = Vec::new();
    let interface = interface_for_version(&binary.version)
        .unwrap_or_else(|| panic!("the module does not know Samba {}", binary.version));
    let (ours, size) = filled_slots(interface).expect("a table for every known interface");
    let calls = fns_offsets(&binary.library);
    assert!(
        calls.len() > 50,
        "{}: only {} smb_vfs_call_* functions found: objdump output not understood",
        binary.library.display(),
        calls.len()
    );
    let first = |name: &str| calls.get(name).and_then(|o| o.first().copied());

    let mut row = format!("{:<8} if {interface}", short(&binary.version));
    for &(slot_fn, index) in &ours {
        let slot = slot_fn.trim_end_matches("_fn");
        // recv slots: the second offset the matching send function reads.
        let theirs = match slot.strip_suffix("_recv") {
            Some(op) => calls
                .get(&format!("{op}_send"))
                .and_then(|o| o.get(1).copied()),
            None => first(slot),
        };
        let mine = index as u64 * 8;
        row.push_str(&format!(
            " {slot}={}/{mine:#x}",
            theirs.map_or("none".into(), |t| format!("{t:#x}"))
        ));
        if theirs != Some(mine) {
            problems.push(format!(
                "Samba {}: {slot}_fn: smbd reads fns offset {}, the module's table \
                 (interface {interface}) has it at {mine:#x} (slot {})",
                binary.version,
                theirs.map_or("none".into(), |t| format!("{t:#x}")),
                index
            ));
        }
    }
    let last = first(LAST_SLOT.trim_end_matches("_fn"));
    row.push_str(&format!(
        " size={}/{size}",
        last.map_or("none".into(), |o| (o / 8 + 1).to_string())
    ));
    if last.map(|o| o / 8 + 1) != Some(size as u64) {
        problems.push(format!(
            "Samba {}: smb_vfs_call_{} reads offset {last:?}: table of {size} slots expected",
            binary.version,
            LAST_SLOT.trim_end_matches("_fn")
        ));
    }

    // Every slot of our list with a dispatcher of its own sits at its index.
    let list = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("samba-headers")
            .join(slots_file(interface)),
    )
    .expect("slot list");
    let names: Vec<&str> = list.lines().filter(|l| !l.is_empty()).collect();
    if names.len() != size {
        problems.push(format!(
            "{}: {} slots, the module's table has {size}",
            slots_file(interface),
            names.len()
        ));
    }
    let mut checked = 0;
    for (index, name) in names.iter().enumerate() {
        let call = name.trim_end_matches("_fn");
        if call.ends_with("_recv") {
            continue; // read from the request state, not from fns
        }
        let Some(off) = first(call) else { continue };
        checked += 1;
        if off != index as u64 * 8 {
            problems.push(format!(
                "Samba {}: smb_vfs_call_{call} reads fns offset {off:#x}, {} puts {name} at \
                 slot {index} ({:#x})",
                binary.version,
                slots_file(interface),
                index * 8
            ));
        }
    }
    row.push_str(&format!(" slots_checked={checked}"));
    println!("{row}");
    if checked < names.len() * 3 / 4 {
        problems.push(format!(
            "Samba {}: only {checked} of {} slots have a dispatcher found in the binary",
            binary.version,
            names.len()
        ));
    }
    problems
}

fn short(version: &str) -> &str {
    version.split('-').next().unwrap_or(version)
}

#[test]
fn tables_match_every_release_binary() {
    let mut binaries = vec![host_binary()];
    binaries.extend(ROOT_RELEASES.iter().map(|r| root_binary(r)));
    println!("release  interface  slot=smbd's fns offset/module's offset ...");
    let problems: Vec<String> = binaries.iter().flat_map(check).collect();
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn disassembly_parser_reads_both_dispatch_shapes() {
    // Trimmed from 4.17.12 (plain) and 4.25.1 (profiling prologue reading 0x20(%rsp)).
    let text = "\
000000000008cb20 <smb_vfs_call_connect@@SAMBA_4.17.12_DEBIAN_SAMBA4>:
   8cb28:\tmov    (%rdi),%rdi
   8cb2b:\tmov    0x20(%rdi),%rax
   8cb2f:\tmov    (%rax),%rax
   8cb37:\tjmp    *%rax

000000000008cee0 <smb_vfs_call_pread_send@@SAMBA_4.17.12_DEBIAN_SAMBA4>:
   8cf3b:\tmov    0x20(%rbx),%rdx
   8cf3f:\tmov    0xb0(%rdx),%rax
   8cf59:\tmov    0xb8(%rdx),%rdx
   8cf60:\tmov    0x10(%rdx),%r9
   8cf6c:\tpush   0x58(%rsp)

000000000009e790 <smb_vfs_call_durable_reconnect@@SAMBA_4.25.1_PRIVATE_SAMBA>:
   9e794:\tcmpq   $0x0,0x164754(%rip)        # 202ef0 <profile_p@@X+0x58>
   9e7a7:\tmov    0x20(%rsp),%rbx
   9e7b0:\tmov    0x8(%rbx),%rax
   9e7c3:\tmov    0x20(%rdi),%rax
   9e7c7:\tmov    0x2f0(%rax),%rax

0000000000011111 <other_function>:
   11111:\tmov    0x20(%rdi),%rax
   11115:\tmov    0x30(%rax),%rax
";
    let got = parse_disassembly(text);
    assert_eq!(got.get("connect"), Some(&vec![0]));
    // After `mov 0xb8(%rdx),%rdx` the register no longer holds fns: 0x10 is not a slot.
    assert_eq!(got.get("pread_send"), Some(&vec![0xb0, 0xb8]));
    assert_eq!(got.get("durable_reconnect"), Some(&vec![0x2f0]));
    assert_eq!(got.len(), 3, "only smb_vfs_call_* functions: {got:?}");
}
