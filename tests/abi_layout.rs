//! ABI layout test: the module's own view of Samba's structs (`samba-headers/samba_abi.h`)
//! must put every field and every VFS slot at the byte offset the real Samba headers do,
//! for each supported release (4.17 and 4.22). A wrong offset here would make smbd call
//! the wrong function or read the wrong field, so it must fail CI instead.
//!
//! How: `scripts/testing/samba-sources.sh` fetches (once, cached) Debian's Samba sources and keeps
//! `source3/include/vfs.h`. Compiling that header as is needs most of Samba, so the test
//! cuts the three struct definitions the module uses out of it (`vfs_handle_struct`,
//! `vfs_aio_state`, `vfs_fn_pointers`), keeps every member in its order, and writes each
//! function-pointer member as `void (*name)(void)`: a function pointer's size and alignment
//! do not depend on its signature, so the layout is the real one. A generated C probe
//! prints `offsetof`/`sizeof` for every member of the real structs; the same probe is
//! compiled against `samba_abi.h` (struct `vfs_fn_pointers_v47` / `_v49`) and the two
//! outputs must be equal. The generated files stay in `target/tmp/abi-probe/` to look at.
//!
//! The slots the module fills must also have the real signatures: each real declaration
//! is compiled beside our typedef of it, and the compiler must find the two function
//! pointer types compatible (`__builtin_types_compatible_p`).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use aio_fork::interface_for_version;

/// The script that fetches the real headers; named in every failure about them.
const SOURCES_SCRIPT: &str = "scripts/testing/samba-sources.sh";

/// A Samba release the module supports, and which of our tables smbd gets there.
struct Release {
    name: &'static str,
    /// Our struct for that release's `struct vfs_fn_pointers` (as `src/vfs_table.rs`
    /// picks it: interfaces 47/48 take v47, 49/50 take v49).
    ours: &'static str,
    /// The slot list our struct was generated from (`samba-headers/gen-fn-tables.sh`).
    slots_file: &'static str,
}

const RELEASES: &[Release] = &[
    Release {
        name: "4.17",
        ours: "vfs_fn_pointers_v47",
        slots_file: "slots-v47.txt",
    },
    Release {
        name: "4.22",
        ours: "vfs_fn_pointers_v49",
        slots_file: "slots-v49.txt",
    },
];

/// What the module relies on: it must exist in every release's real headers.
const HANDLE_FIELDS: &[&str] = &["next", "prev", "param", "conn", "fns", "data", "free_data"];
const AIO_STATE_FIELDS: &[&str] = &["error", "duration"];
/// The slots the module fills (one per line).
const FILLED_SLOTS: &str = include_str!("../samba-headers/filled-slots.txt");

fn filled_slots() -> Vec<&'static str> {
    FILLED_SLOTS.lines().filter(|l| !l.is_empty()).collect()
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Headers dir of each release, from the sources script (run once per test binary).
fn header_dirs() -> &'static Vec<(String, PathBuf)> {
    static DIRS: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();
    DIRS.get_or_init(|| {
        let out = Command::new(repo().join(SOURCES_SCRIPT))
            .current_dir(repo())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {SOURCES_SCRIPT}: {e}"));
        assert!(
            out.status.success(),
            "{SOURCES_SCRIPT} failed ({}): the real Samba headers are missing; run it as root \
             with network access to Debian's archive.\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(r, d)| (r.to_string(), PathBuf::from(d)))
            .collect()
    })
}

/// The real `source3/include/vfs.h` of a release.
fn real_vfs_h(release: &str) -> String {
    let (_, dir) = header_dirs()
        .iter()
        .find(|(r, _)| r == release)
        .unwrap_or_else(|| panic!("{SOURCES_SCRIPT} did not list Samba {release}"));
    let path = dir.join("source3/include/vfs.h");
    fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; re-run {SOURCES_SCRIPT} (remove {} to force a fresh fetch)",
            path.display(),
            dir.display()
        )
    })
}

/// One member of a struct: its name(s) and its declaration as the probe compiles it.
#[derive(Debug)]
struct Member {
    names: Vec<String>,
    decl: String,
}

/// The members of `struct <name> { ... }` in `header`, in order.
fn struct_members(header: &str, name: &str) -> Vec<Member> {
    let text = strip_comments(header);
    let open = format!("struct {name} {{");
    let start = text
        .find(&open)
        .unwrap_or_else(|| panic!("no `{open}` in vfs.h"))
        + open.len();
    let len = text[start..]
        .find("\n}")
        .unwrap_or_else(|| panic!("`struct {name}` not closed in vfs.h"));
    let body = &text[start..start + len];
    if let Some(line) = body.lines().find(|l| l.trim_start().starts_with('#')) {
        // Conditional members would make the layout depend on build options: a human
        // must look at it (and this extraction be taught about it).
        panic!("struct {name} in vfs.h has a preprocessor line: {line:?}");
    }
    body.split(';')
        .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|d| !d.is_empty())
        .map(|d| parse_member(&d))
        .collect()
}

fn parse_member(decl: &str) -> Member {
    // A function pointer: `ret (*name)(params)`. Its signature does not change its layout.
    if let Some(at) = decl.find("(*") {
        let rest = &decl[at + 2..];
        let name: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(!name.is_empty(), "cannot parse member `{decl}`");
        return Member {
            decl: format!("void (*{name})(void)"),
            names: vec![name],
        };
    }
    // A plain member, possibly several declarators: `struct x *next, *prev`.
    let names = decl
        .split(',')
        .map(|part| {
            part.trim()
                .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .find(|s| !s.is_empty())
                .unwrap_or_else(|| panic!("cannot parse member `{decl}`"))
                .to_string()
        })
        .collect();
    Member {
        names,
        decl: decl.to_string(),
    }
}

fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        match rest[i..].find("*/") {
            Some(j) => rest = &rest[i + j + 2..],
            None => rest = "",
        }
    }
    out.push_str(rest);
    out.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn names(members: &[Member]) -> Vec<String> {
    members.iter().flat_map(|m| m.names.clone()).collect()
}

/// The three structs of a real vfs.h.
struct RealStructs {
    handle: Vec<Member>,
    aio_state: Vec<Member>,
    fns: Vec<Member>,
}

impl RealStructs {
    fn parse(vfs_h: &str) -> Self {
        RealStructs {
            handle: struct_members(vfs_h, "vfs_handle_struct"),
            aio_state: struct_members(vfs_h, "vfs_aio_state"),
            fns: struct_members(vfs_h, "vfs_fn_pointers"),
        }
    }

    /// A header that defines the three structs with the real members in the real order.
    fn header(&self) -> String {
        let mut h = String::from(
            "/* Generated by tests/abi_layout.rs from Samba's source3/include/vfs.h. */\n\
             #include <stdint.h>\n#include <stddef.h>\n#include <sys/types.h>\n",
        );
        let defined = ["vfs_fn_pointers", "vfs_handle_struct", "vfs_aio_state"];
        let mut tags = BTreeSet::new();
        for m in self.handle.iter().chain(&self.aio_state).chain(&self.fns) {
            let mut words = m
                .decl
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            while let Some(w) = words.next() {
                if w == "struct" {
                    if let Some(tag) = words.find(|w| !w.is_empty()) {
                        if !defined.contains(&tag) {
                            tags.insert(tag.to_string());
                        }
                    }
                }
            }
        }
        for tag in tags {
            let _ = writeln!(h, "struct {tag};");
        }
        for (name, members) in [
            ("vfs_fn_pointers", &self.fns),
            ("vfs_handle_struct", &self.handle),
            ("vfs_aio_state", &self.aio_state),
        ] {
            let _ = writeln!(h, "struct {name} {{");
            for m in members {
                let _ = writeln!(h, "\t{};", m.decl);
            }
            let _ = writeln!(h, "}};");
        }
        h
    }

    /// A probe printing `<struct>.<member> <offset> <size>` for every member of the real
    /// structs, and `sizeof <struct> <size>`; `fns_struct` is the C name of the function
    /// table struct in the header the probe is compiled against.
    fn probe(&self, include: &str, fns_struct: &str) -> String {
        let mut c = format!(
            "/* Generated by tests/abi_layout.rs. */\n#include <stddef.h>\n#include <stdio.h>\n\
             #include \"{include}\"\n\
             #define FIELD(tag, s, m) printf(\"%s.%s %zu %zu\\n\", tag, #m, \
             offsetof(struct s, m), sizeof(((struct s *)0)->m))\n\
             #define SIZE(tag, s) printf(\"sizeof %s %zu\\n\", tag, sizeof(struct s))\n\
             int main(void)\n{{\n"
        );
        for (tag, s, members) in [
            ("vfs_handle_struct", "vfs_handle_struct", &self.handle),
            ("vfs_aio_state", "vfs_aio_state", &self.aio_state),
            ("vfs_fn_pointers", fns_struct, &self.fns),
        ] {
            let _ = writeln!(c, "\tSIZE(\"{tag}\", {s});");
            for name in names(members) {
                let _ = writeln!(c, "\tFIELD(\"{tag}\", {s}, {name});");
            }
        }
        c.push_str("\treturn 0;\n}\n");
        c
    }
}

/// Compiles `source` (with `-I` dirs) and runs it; returns its output.
fn compile_and_run(dir: &Path, stem: &str, source: &str, includes: &[&Path]) -> String {
    let exe = compile(dir, stem, source, includes).unwrap_or_else(|e| {
        panic!("compiling {stem}.c failed (a member missing from one side shows up here):\n{e}")
    });
    let run = Command::new(&exe).output().expect("run probe");
    assert!(run.status.success(), "{} failed", exe.display());
    String::from_utf8(run.stdout).expect("probe output is text")
}

/// Compiles `source` as `dir/stem.c`; the program, or the compiler's complaints.
fn compile(dir: &Path, stem: &str, source: &str, includes: &[&Path]) -> Result<PathBuf, String> {
    let src = dir.join(format!("{stem}.c"));
    let exe = dir.join(stem);
    fs::write(&src, source).expect("write probe source");
    let mut cc = Command::new("cc");
    cc.args(["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src);
    for inc in includes {
        cc.arg("-I").arg(inc);
    }
    let out = cc
        .output()
        .unwrap_or_else(|e| panic!("cannot run cc (apt-get install gcc): {e}"));
    if out.status.success() {
        Ok(exe)
    } else {
        Err(format!(
            "{}:\n{}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn probe_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("abi-probe")
        .join(name);
    fs::create_dir_all(&dir).expect("create probe dir");
    dir
}

/// Probe output for the real headers and for ours (from `abi_dir`, normally
/// `samba-headers/`), for one release.
fn probe_both(release: &Release, abi_dir: &Path, dir_name: &str) -> (String, String) {
    let real = RealStructs::parse(&real_vfs_h(release.name));
    let dir = probe_dir(dir_name);
    fs::write(dir.join("real_vfs_structs.h"), real.header()).expect("write header");
    let real_out = compile_and_run(
        &dir,
        "probe_real",
        &real.probe("real_vfs_structs.h", "vfs_fn_pointers"),
        &[&dir],
    );
    let ours_out = compile_and_run(
        &dir,
        "probe_ours",
        &real.probe("samba_abi.h", release.ours),
        &[abi_dir],
    );
    (real_out, ours_out)
}

/// Lines that differ, for a readable failure message.
fn differences(real: &str, ours: &str) -> String {
    let mut text = String::new();
    for (r, o) in real.lines().zip(ours.lines()) {
        if r != o {
            let _ = writeln!(text, "  samba: {r:<40} ours: {o}");
        }
    }
    text
}

fn assert_same_layout(release: &Release) {
    let (real, ours) = probe_both(release, &repo().join("samba-headers"), release.name);
    assert!(
        real == ours,
        "Samba {}: samba-headers/samba_abi.h (struct {}) does not match the real vfs.h \
         (member offset size):\n{}",
        release.name,
        release.ours,
        differences(&real, &ours)
    );
    // What the module relies on is there (and was therefore compared above).
    let real_structs = RealStructs::parse(&real_vfs_h(release.name));
    for (what, members, needed) in [
        ("vfs_handle_struct", &real_structs.handle, HANDLE_FIELDS),
        ("vfs_aio_state", &real_structs.aio_state, AIO_STATE_FIELDS),
        ("vfs_fn_pointers", &real_structs.fns, &filled_slots()[..]),
    ] {
        let have = names(members);
        for n in needed.iter() {
            assert!(
                have.iter().any(|h| h == n),
                "Samba {}: struct {what} has no member {n}, which the module uses",
                release.name
            );
        }
    }
    println!(
        "Samba {}: layout identical to struct {}:",
        release.name, release.ours
    );
    for line in real.lines().filter(|l| {
        l.starts_with("sizeof")
            || l.starts_with("vfs_handle_struct.")
            || l.starts_with("vfs_aio_state.")
            || filled_slots()
                .iter()
                .any(|s| l.starts_with(&format!("vfs_fn_pointers.{s} ")))
    }) {
        println!("  {line}");
    }
}

#[test]
fn layout_matches_samba_4_17() {
    assert_same_layout(&RELEASES[0]);
}

#[test]
fn layout_matches_samba_4_22() {
    assert_same_layout(&RELEASES[1]);
}

/// The slot lists `gen-fn-tables.sh` generates our tables from are the real ones, slot for
/// slot (the probe compares offsets by name; this names the slot that moved).
#[test]
fn slot_lists_match_the_real_headers() {
    for release in RELEASES {
        let real = names(&RealStructs::parse(&real_vfs_h(release.name)).fns);
        let file = repo().join("samba-headers").join(release.slots_file);
        let ours: Vec<String> = fs::read_to_string(&file)
            .expect("read slot list")
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(
            ours,
            real,
            "Samba {}: {} differs from the real struct vfs_fn_pointers",
            release.name,
            file.display()
        );
    }
}

/// The interface version each release's vfs.h declares is the one the module registers.
#[test]
fn interface_versions_match_the_real_headers() {
    for release in RELEASES {
        let text = real_vfs_h(release.name);
        let declared: i32 = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("#define SMB_VFS_INTERFACE_VERSION"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no SMB_VFS_INTERFACE_VERSION in {}'s vfs.h", release.name));
        assert_eq!(
            interface_for_version(&format!("{}.0", release.name)),
            Some(declared),
            "Samba {}'s vfs.h declares interface {declared}",
            release.name
        );
    }
}

/// A copy of samba-headers/ (its files) in probe directory `name`, to break on purpose.
fn headers_copy(name: &str) -> PathBuf {
    let copy = probe_dir(name);
    for entry in fs::read_dir(repo().join("samba-headers")).expect("read samba-headers") {
        let entry = entry.expect("dir entry");
        if entry.path().is_file() {
            fs::copy(entry.path(), copy.join(entry.file_name())).expect("copy header");
        }
    }
    copy
}

/// The comparison can fail: a copy of samba-headers/ with two slots swapped must differ.
#[test]
fn a_moved_slot_is_detected() {
    let release = &RELEASES[1];
    let broken = headers_copy("broken-headers");
    let table = broken.join("vfs_fn_pointers_v49.h");
    let text = fs::read_to_string(&table).expect("read table");
    let swapped = text.replacen(
        "\taio_fork_pread_fn pread_fn;\n\taio_fork_pread_send_fn pread_send_fn;\n",
        "\taio_fork_pread_send_fn pread_send_fn;\n\taio_fork_pread_fn pread_fn;\n",
        1,
    );
    assert_ne!(
        swapped,
        text,
        "test setup: slot lines not found in {}",
        table.display()
    );
    fs::write(&table, swapped).expect("write table");

    let (real, ours) = probe_both(release, &broken, "broken");
    let diff = differences(&real, &ours);
    assert!(
        diff.contains("vfs_fn_pointers.pread_send_fn") && diff.contains("vfs_fn_pointers.pread_fn"),
        "a swapped slot went unnoticed:\n{diff}"
    );
}

#[test]
fn member_parsing() {
    let m = parse_member("struct vfs_handle_struct *next, *prev");
    assert_eq!(m.names, ["next", "prev"]);
    let m =
        parse_member("struct tevent_req *(*pread_send_fn)(struct vfs_handle_struct *h, void *d)");
    assert_eq!(m.names, ["pread_send_fn"]);
    assert_eq!(m.decl, "void (*pread_send_fn)(void)");
    let m = parse_member("uint64_t duration");
    assert_eq!(m.names, ["duration"]);
    assert_eq!(strip_comments("a /* x\n y */ b // c\nd"), "a  b \nd");
}

/// The real declaration of each slot the module fills, compiled against our typedef of it
/// (`aio_fork_<slot>` in `abi_dir`/samba_abi.h): the compiler must find the types
/// compatible. Samba's typedefs map to what samba_abi.h declares (`SMB_STRUCT_STAT` is
/// `struct stat_ex`). Err: the compiler's complaints.
fn same_signatures(release: &Release, abi_dir: &Path, dir_name: &str) -> Result<usize, String> {
    let text = strip_comments(&real_vfs_h(release.name));
    let open = "struct vfs_fn_pointers {";
    let start = text.find(open).expect("struct vfs_fn_pointers") + open.len();
    let body = &text[start..start + text[start..].find("\n}").expect("closed")];
    let decls: Vec<String> = body
        .split(';')
        .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let mut c = String::from(
        "#include <dirent.h>\n#include \"samba_abi.h\"\n\
         typedef struct files_struct files_struct;\n\
         typedef struct stat_ex SMB_STRUCT_STAT;\n\
         typedef dev_t SMB_DEV_T;\n\
         struct real {\n",
    );
    let slots = filled_slots();
    for slot in &slots {
        let decl = decls
            .iter()
            .find(|d| d.contains(&format!("(*{slot})")))
            .unwrap_or_else(|| panic!("Samba {}: no declaration of {slot}", release.name));
        let _ = writeln!(c, "\t{decl};");
    }
    c.push_str("};\n");
    for slot in &slots {
        let _ = writeln!(
            c,
            "_Static_assert(__builtin_types_compatible_p(__typeof__(((struct real *)0)->{slot}), \
             aio_fork_{slot}), \"{slot}: our signature is not Samba {}'s\");",
            release.name
        );
    }
    c.push_str("int main(void) { return 0; }\n");
    compile(&probe_dir(dir_name), "signatures", &c, &[abi_dir]).map(|_| slots.len())
}

fn assert_same_signatures(release: &Release) {
    let dir = format!("signatures-{}", release.name);
    match same_signatures(release, &repo().join("samba-headers"), &dir) {
        Ok(n) => println!(
            "Samba {}: the {n} filled slots have our signatures",
            release.name
        ),
        Err(e) => panic!(
            "Samba {}: a filled slot's signature differs:\n{e}",
            release.name
        ),
    }
}

#[test]
fn filled_slots_have_the_signatures_of_samba_4_17() {
    assert_same_signatures(&RELEASES[0]);
}

#[test]
fn filled_slots_have_the_signatures_of_samba_4_22() {
    assert_same_signatures(&RELEASES[1]);
}

/// The comparison can fail: a copy of samba-headers/ with one parameter's type changed.
#[test]
fn a_wrong_signature_is_detected() {
    let broken = headers_copy("broken-signature");
    let abi = broken.join("samba_abi.h");
    let text = fs::read_to_string(&abi).expect("read samba_abi.h");
    let changed = text.replacen(
        "struct files_struct *fsp, uint32_t mode, off_t offset,",
        "struct files_struct *fsp, uint64_t mode, off_t offset,",
        1,
    );
    assert_ne!(changed, text, "test setup: fallocate's typedef not found");
    fs::write(&abi, changed).expect("write samba_abi.h");
    let found = same_signatures(&RELEASES[0], &broken, "broken-signature-probe");
    assert!(
        found
            .as_ref()
            .is_err_and(|e| e.contains("fallocate_fn: our signature")),
        "a changed fallocate signature went unnoticed: {found:?}"
    );
}
