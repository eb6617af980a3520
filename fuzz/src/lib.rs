//! Helpers the fuzz targets share: how a target turns one byte string into several files
//! (ONNX external data, checkpoint directories), so that libFuzzer mutates all of them.

use std::path::{Path, PathBuf};

/// Splits `data` into named files: the input is a sequence of parts, each
/// `NAME\n` then the contents, parts separated by [`SEPARATOR`]. Names are reduced to plain
/// file names (path separators and leading dots dropped) so a target never writes outside
/// its temporary folder. Used for the multi-file formats and to write their seeds.
pub const SEPARATOR: &[u8] = b"\n--oar-fuzz-file--\n";

/// At most this many files per input: more adds nothing but time.
pub const MAX_FILES: usize = 8;

pub fn split_files(data: &[u8]) -> Vec<(String, &[u8])> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() < MAX_FILES {
        let (part, next) = match find(rest, SEPARATOR) {
            Some(at) => (&rest[..at], Some(&rest[at + SEPARATOR.len()..])),
            None => (rest, None),
        };
        let (name, body) = match part.iter().position(|&b| b == b'\n') {
            Some(nl) => (&part[..nl], &part[nl + 1..]),
            None => (part, &part[part.len()..]),
        };
        let name: String = String::from_utf8_lossy(name)
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            .collect::<String>()
            .trim_start_matches('.')
            .chars()
            .take(64)
            .collect();
        if !name.is_empty() {
            out.push((name, body));
        }
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
    out
}

/// The inverse of [`split_files`], for writing seeds.
pub fn join_files(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (name, body)) in files.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(SEPARATOR);
        }
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(body);
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A fresh, empty scratch folder for one execution (reused across executions: emptied,
/// not recreated, to keep executions fast). Per process, so parallel jobs do not collide.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oar-fuzz-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // A target that cannot create its folder has nothing to test: libFuzzer reports the panic.
    std::fs::create_dir_all(&dir).expect("cannot create the fuzz scratch folder");
    dir
}

/// Writes `files` into `dir` (names already plain).
pub fn write_files(dir: &Path, files: &[(String, &[u8])]) {
    for (name, body) in files {
        std::fs::write(dir.join(name), body).expect("cannot write a fuzz scratch file");
    }
}
