//! Test data: pseudo-random files and byte-for-byte comparison of files.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

const CHUNK: usize = 1 << 20;

/// Writes `size` pseudo-random bytes (xorshift64*, from `seed`) to `path`.
/// Different seeds give different files, so a mixed-up file cannot compare equal.
pub fn write_random_file(path: &Path, size: u64, seed: u64) {
    let mut out = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    // xorshift must not start at 0.
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; CHUNK];
    let mut left = size;
    while left > 0 {
        let len = left.min(CHUNK as u64) as usize;
        for word in buf[..len].chunks_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let bytes = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            word.copy_from_slice(&bytes[..word.len()]);
        }
        out.write_all(&buf[..len]).expect("write test data");
        left -= len as u64;
    }
}

/// `Ok` if both files exist and hold the same bytes; otherwise says how they differ
/// (missing file, sizes, first differing offset).
pub fn compare_files(expected: &Path, actual: &Path) -> Result<(), String> {
    let mut a = open(expected)?;
    let mut b = open(actual)?;
    let size_a = a.metadata().map_err(|e| e.to_string())?.len();
    let size_b = b.metadata().map_err(|e| e.to_string())?.len();
    if size_a != size_b {
        return Err(format!(
            "{} has {size_b} bytes, expected {size_a} (as {})",
            actual.display(),
            expected.display()
        ));
    }
    let mut buf_a = vec![0u8; CHUNK];
    let mut buf_b = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let n = read_full(&mut a, &mut buf_a)?;
        let m = read_full(&mut b, &mut buf_b)?;
        if n != m {
            return Err(format!("{} changed size while compared", actual.display()));
        }
        if n == 0 {
            return Ok(());
        }
        if buf_a[..n] != buf_b[..n] {
            let at = (0..n).find(|&i| buf_a[i] != buf_b[i]).unwrap_or(0);
            return Err(format!(
                "{} differs from {} first at byte {}",
                actual.display(),
                expected.display(),
                offset + at as u64
            ));
        }
        offset += n as u64;
    }
}

fn open(path: &Path) -> Result<File, String> {
    File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut File, buf: &mut [u8]) -> Result<usize, String> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(filled)
}
