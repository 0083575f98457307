//! Where each Samba release keeps its profile counters: `struct profile_stats` and
//! `struct smbprofile_global_state` of source3/include/smbprofile.h.
//!
//! The counter lists are the releases' own `SMBPROFILE_STATS_ALL_SECTIONS`, copied verbatim
//! into `samba-headers/profile/` (`extract.sh` there); the struct around them is described
//! per layout below. From a list this file computes every counter's offset and the
//! "magic" smbd stamps on its profile (`profile_setup`/`smbprofile_magic`: SHA-1 over a
//! zeroed `struct profile_stats` and the counters' names, first 8 bytes little-endian).
//! The module only writes into a profile whose magic is that of a layout known here, so
//! a changed struct (a counter added, moved or resized) never gets a write at a guessed
//! offset.

use crate::abi::sha1;

/// The five shapes of a counter (`SMBPROFILE_STATS_<KIND>(name)`), each a `struct
/// smbprofile_stats_<kind>` of u64 fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Count,
    Time,
    Basic,
    Bytes,
    IoBytes,
}

/// One counter of `struct profile_stats`: `values.<name>_stats` at `offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    pub name: String,
    pub kind: Kind,
    /// Byte offset in `struct profile_stats`.
    pub offset: usize,
}

/// A release's profile layout.
pub struct Layout {
    /// The first release with this layout ("4.17").
    pub name: &'static str,
    /// The releases that have it, for messages ("4.17-4.18").
    pub releases: &'static str,
    /// The release's `SMBPROFILE_STATS_ALL_SECTIONS`.
    list: &'static str,
    /// 4.23+: `bool summary_record` after `magic`, so `values` starts at 16, not 8.
    summary_record: bool,
    /// 4.23+: `struct smbprofile_stats_iobytes` gained `failed_count` and `buckets[10]`.
    iobytes_histogram: bool,
    /// 4.23+: `smbprofile_state.internal` gained `sconn` (config moves from 24 to 32), and
    /// per-share profiles exist (`smbprofile_persvc_get`, `smbd profiling share`).
    pub per_share: bool,
}

/// Every layout the build knows, oldest first.
pub const LAYOUTS: [Layout; 5] = [
    Layout {
        name: "4.17",
        releases: "4.17-4.18",
        list: include_str!("../../samba-headers/profile/stats-4.17.txt"),
        summary_record: false,
        iobytes_histogram: false,
        per_share: false,
    },
    Layout {
        name: "4.19",
        releases: "4.19-4.22",
        list: include_str!("../../samba-headers/profile/stats-4.19.txt"),
        summary_record: false,
        iobytes_histogram: false,
        per_share: false,
    },
    Layout {
        name: "4.23",
        releases: "4.23",
        list: include_str!("../../samba-headers/profile/stats-4.23.txt"),
        summary_record: true,
        iobytes_histogram: true,
        per_share: true,
    },
    Layout {
        name: "4.24",
        releases: "4.24",
        list: include_str!("../../samba-headers/profile/stats-4.24.txt"),
        summary_record: true,
        iobytes_histogram: true,
        per_share: true,
    },
    Layout {
        name: "4.25",
        releases: "4.25",
        list: include_str!("../../samba-headers/profile/stats-4.25.txt"),
        summary_record: true,
        iobytes_histogram: true,
        per_share: true,
    },
];

/// One entry of a list, in order: a section header or a counter.
enum Item<'a> {
    Section { name: &'a str, display: &'a str },
    Counter { name: &'a str, kind: Kind },
}

/// The items of `SMBPROFILE_STATS_ALL_SECTIONS` text.
fn items(list: &str) -> Vec<Item<'_>> {
    list.lines()
        .filter_map(|line| {
            let line = line.trim().trim_end_matches('\\').trim();
            let rest = line.strip_prefix("SMBPROFILE_STATS_")?;
            let (macro_name, args) = rest.split_once('(')?;
            let args = args.strip_suffix(')')?;
            let kind = match macro_name {
                "SECTION_START" => {
                    let (name, display) = args.split_once(',')?;
                    return Some(Item::Section {
                        name: name.trim(),
                        display: display.trim(),
                    });
                }
                "COUNT" => Kind::Count,
                "TIME" => Kind::Time,
                "BASIC" => Kind::Basic,
                "BYTES" => Kind::Bytes,
                "IOBYTES" => Kind::IoBytes,
                _ => return None,
            };
            Some(Item::Counter {
                name: args.trim(),
                kind,
            })
        })
        .collect()
}

impl Layout {
    /// The u64 fields of a counter of `kind`, in struct order, as `smbstatus -P` names
    /// them (`buckets` is an array of 10).
    pub fn fields(&self, kind: Kind) -> &'static [&'static str] {
        match kind {
            Kind::Count => &["count"],
            Kind::Time => &["time"],
            Kind::Basic => &["count", "time"],
            Kind::Bytes => &["count", "time", "idle", "bytes"],
            Kind::IoBytes if self.iobytes_histogram => &[
                "count",
                "failed_count",
                "time",
                "buckets",
                "idle",
                "inbytes",
                "outbytes",
            ],
            Kind::IoBytes => &["count", "time", "idle", "inbytes", "outbytes"],
        }
    }

    fn size_of(&self, kind: Kind) -> usize {
        self.fields(kind)
            .iter()
            .map(|f| if *f == "buckets" { 10 * 8 } else { 8 })
            .sum()
    }

    /// Offset of `values` in `struct profile_stats`.
    pub fn values_offset(&self) -> usize {
        if self.summary_record {
            16
        } else {
            8
        }
    }

    /// Every counter, at its offset in `struct profile_stats`.
    pub fn counters(&self) -> Vec<Counter> {
        let mut offset = self.values_offset();
        let mut out = Vec::new();
        for item in items(self.list) {
            if let Item::Counter { name, kind } = item {
                out.push(Counter {
                    name: name.to_string(),
                    kind,
                    offset,
                });
                offset += self.size_of(kind);
            }
        }
        out
    }

    /// `sizeof(struct profile_stats)`: every member is u64-sized and aligned.
    pub fn size(&self) -> usize {
        self.counters()
            .last()
            .map_or(self.values_offset(), |c| c.offset + self.size_of(c.kind))
    }

    /// The counter `<name>_stats`, if the layout has it.
    pub fn counter(&self, name: &str) -> Option<Counter> {
        self.counters().into_iter().find(|c| c.name == name)
    }

    /// The magic smbd computes for this layout: SHA-1 over a zeroed `struct profile_stats`,
    /// then per section `name+"display"` and per field `name+field` (the IOBYTES
    /// histogram fields are not named), first 8 bytes little-endian (the next 8 if those
    /// are zero).
    pub fn magic(&self) -> u64 {
        let zeros = vec![0u8; self.size()];
        let mut names = Vec::new();
        for item in items(self.list) {
            match item {
                Item::Section { name, display } => names.push(format!("{name}+{display}")),
                Item::Counter { name, kind } => {
                    for field in self.fields(kind) {
                        if !matches!(*field, "failed_count" | "buckets") {
                            names.push(format!("{name}+{field}"));
                        }
                    }
                }
            }
        }
        let mut parts: Vec<&[u8]> = vec![&zeros];
        parts.extend(names.iter().map(|n| n.as_bytes()));
        let d = sha1::digest(&parts);
        let first = u64::from_le_bytes(d[0..8].try_into().unwrap());
        if first != 0 {
            first
        } else {
            u64::from_le_bytes(d[8..16].try_into().unwrap())
        }
    }

    /// Every u64 field but the IOBYTES histograms, named as `smbstatus -P` prints it
    /// (`syscall_asys_pread_count`), at its offset in `struct profile_stats`.
    pub fn field_offsets(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for counter in self.counters() {
            let mut offset = counter.offset;
            for field in self.fields(counter.kind) {
                if *field == "buckets" {
                    offset += 10 * 8;
                    continue;
                }
                out.push((format!("{}_{field}", counter.name), offset));
                offset += 8;
            }
        }
        out
    }

    /// Offset of `config.do_count` in `smbprofile_state` (`do_times` follows it): after
    /// `internal`'s three pointers (db, ev, te), four from 4.23 (sconn).
    pub fn config_offset(&self) -> usize {
        if self.per_share {
            32
        } else {
            24
        }
    }

    /// Offset of `stats.global` in `smbprofile_state` (where `profile_p` points).
    pub fn global_offset(&self) -> usize {
        self.config_offset() + 8
    }
}

/// Offset of `internal.ev` in `smbprofile_state` (every layout).
pub const STATE_EV_OFFSET: usize = 8;
/// Offset of `internal.te` in `smbprofile_state` (every layout).
pub const STATE_TE_OFFSET: usize = 16;

/// The known layout whose magic is `magic`.
pub fn by_magic(magic: u64) -> Option<&'static Layout> {
    LAYOUTS.iter().find(|l| l.magic() == magic)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// The known layout named `name` ("4.24").
    pub fn by_name(name: &str) -> Option<&'static Layout> {
        LAYOUTS.iter().find(|l| l.name == name)
    }

    #[test]
    fn lists_parse_whole() {
        for layout in &LAYOUTS {
            let counters = layout.counters();
            assert!(counters.len() > 150, "{}: {}", layout.name, counters.len());
            assert_eq!(counters[0].name, "connect");
            assert_eq!(counters.last().unwrap().name, "smb2_break");
            for name in [
                "syscall_asys_pread",
                "syscall_asys_pwrite",
                "syscall_asys_fsync",
            ] {
                assert_eq!(
                    layout.counter(name).map(|c| c.kind),
                    Some(Kind::Bytes),
                    "{} {name}",
                    layout.name
                );
            }
        }
    }

    /// Offsets worked out by hand from each release's smbprofile.h; the sizes are those
    /// `set_profile_level` clears (`ZERO_STRUCT(profile_p->values)`) in Debian's binaries
    /// (4.17.12: 0xdd8 bytes at +8; 4.25.1: 0x14b8 at +16).
    #[test]
    fn offsets_of_the_async_counters() {
        let at = |layout: &str, name: &str| by_name(layout).unwrap().counter(name).unwrap().offset;
        // 4.17: values at 8; global section 120 bytes; 12 BASIC syscalls (192), pread (32).
        assert_eq!(at("4.17", "syscall_asys_pread"), 8 + 120 + 192 + 32);
        assert_eq!(at("4.17", "syscall_asys_pwrite"), 8 + 120 + 192 + 32 + 64);
        // + pwrite, asys_pwrite, lseek, sendfile, recvfile, renameat.
        assert_eq!(
            at("4.17", "syscall_asys_fsync"),
            at("4.17", "syscall_asys_pwrite") + 32 + 16 + 32 + 32 + 16
        );
        // 4.19: seekdir and telldir (BASIC) gone.
        assert_eq!(
            at("4.19", "syscall_asys_pread"),
            at("4.17", "syscall_asys_pread") - 32
        );
        // 4.23: values at 16; num_sessions/tcons/files and the authentication section.
        assert_eq!(
            at("4.23", "syscall_asys_pread"),
            at("4.19", "syscall_asys_pread") + 8 + 40
        );
        // 4.24: syscall_rename_stream (BASIC) before asys_fsync only.
        assert_eq!(
            at("4.24", "syscall_asys_pwrite"),
            at("4.23", "syscall_asys_pwrite")
        );
        assert_eq!(
            at("4.24", "syscall_asys_fsync"),
            at("4.23", "syscall_asys_fsync") + 16
        );
        // 4.25: the changes come after the async counters.
        assert_eq!(
            at("4.25", "syscall_asys_fsync"),
            at("4.24", "syscall_asys_fsync")
        );
        assert_eq!(by_name("4.17").unwrap().size(), 8 + 0xdd8);
        assert_eq!(by_name("4.25").unwrap().size(), 16 + 0x14b8);
    }

    /// The magics Debian's smbd stamped on its profile (4.17.12, 4.22.6 and 4.22.11,
    /// 4.24.8, 4.25.1: logged by the module, which found each layout by it).
    #[test]
    fn magics_of_real_smbds() {
        let magic = |name: &str| by_name(name).unwrap().magic();
        assert_eq!(magic("4.17"), 0x488d_9dd5_08d8_a280);
        assert_eq!(magic("4.19"), 0x1ef4_4200_60d7_6662);
        assert_eq!(magic("4.24"), 0x8f2a_d693_d9de_e87f);
        assert_eq!(magic("4.25"), 0xe306_389c_30b4_02d2);
    }

    #[test]
    fn magics_differ_per_layout() {
        let magics: Vec<u64> = LAYOUTS.iter().map(Layout::magic).collect();
        for (i, m) in magics.iter().enumerate() {
            assert_eq!(magics.iter().filter(|x| *x == m).count(), 1, "{i}");
            assert_eq!(by_magic(*m).unwrap().name, LAYOUTS[i].name);
        }
        assert!(by_magic(0).is_none());
    }

    #[test]
    fn smbprofile_state_offsets() {
        assert_eq!(by_name("4.17").unwrap().config_offset(), 24);
        assert_eq!(by_name("4.17").unwrap().global_offset(), 32);
        assert_eq!(by_name("4.25").unwrap().config_offset(), 32);
        assert_eq!(by_name("4.25").unwrap().global_offset(), 40);
    }
}
