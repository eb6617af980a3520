//! The op contract: every per-op `match` in every crate is exhaustive, and `ir/README.md`'s
//! add-an-op checklist names places that exist.
//!
//! What the wildcard check does (a documented heuristic, not a Rust parser):
//! - it reads every `.rs` file under each workspace crate's `src/` (and the root `src/`),
//!   blanks out comments, strings and char literals, and finds every `match … { … }` block;
//! - a block is a match *over ops* when one of its top-level arm patterns starts with
//!   `Op::`, `UnaryOp::` or `BinaryOp::` (optionally after `(` or `&`);
//! - such a block fails when a top-level arm pattern is a catch-all: `_` or a lowercase
//!   binding (`other`, `op`), with or without an `if` guard;
//! - `matches!(…)` naming two or more `Op::` variants is a per-op predicate written in
//!   place, and fails too: it belongs on `Op` (`ir/src/op/facts.rs`);
//! - a catch-all arm directly under a `// op-contract: pass-through` comment is allowed: a
//!   rewrite that copies every op it does not rewrite is right for any new op;
//! - files listed in `EXEMPT` are skipped, each for the reason given there.
//!
//! Matches that pick out one op (`if let Op::Reshape { .. } = …`, `let Op::X = … else`)
//! are not `match` blocks and are not checked.

use std::fs;
use std::path::{Path, PathBuf};

/// Files whose op matches are not per-op dispatch, with the reason.
const EXEMPT: &[(&str, &str)] = &[(
    "passes/src/eqsat/rules/",
    "rewrite rules: each match picks out the ops of one pattern",
)];

const CRATE_SRC_DIRS: &[&str] = &[
    "src",
    "ir/src",
    "runtime/src",
    "frontend/src",
    "models/src",
    "passes/src",
    "codegen/src",
];

const PASS_THROUGH: &str = "op-contract: pass-through";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("ir/ has a parent")
        .to_path_buf()
}

/// `src` with comments, string and char literals replaced by spaces (newlines kept), so
/// byte offsets and line numbers stay the same. Comments are kept in `comments`' lines.
fn blank_non_code(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            let end = b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p);
            blank(&mut out, i, end);
            i = end;
        } else if b[i..].starts_with(b"/*") {
            let end = src[i + 2..].find("*/").map_or(b.len(), |p| i + 2 + p + 2);
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == b'r'
            && (i == 0 || !is_word_byte(b[i - 1]))
            && matches!(b.get(i + 1), Some(b'#' | b'"'))
        {
            // A raw string r"…" or r#"…"#: ends at a quote followed by as many `#`.
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            if b.get(i + 1 + hashes) != Some(&b'"') {
                i += 1;
                continue;
            }
            let close = format!("\"{}", "#".repeat(hashes));
            let body = i + 2 + hashes;
            let end = src[body..].find(&close).map_or(b.len(), |p| body + p);
            blank(&mut out, body, end);
            i = end + close.len();
        } else if b[i] == b'"' {
            // Raw strings are rare here; ordinary strings end at an unescaped quote.
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, i + 1, j.min(b.len()));
            i = j + 1;
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '\''), not a lifetime ('a).
            let close = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..]
                    .iter()
                    .position(|&c| c == b'\'')
                    .map(|p| i + 2 + p)
            } else if b.get(i + 2) == Some(&b'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(end) => {
                    blank(&mut out, i + 1, end);
                    i = end + 1;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8(out).expect("only ASCII bytes were replaced")
}

fn line_of(s: &str, at: usize) -> usize {
    s[..at].matches('\n').count() + 1
}

/// Index of the bracket closing the one opened at `open`.
fn closing(s: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (k, &c) in s.iter().enumerate().skip(open) {
        match c {
            b'{' | b'(' | b'[' => depth += 1,
            b'}' | b')' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// The top-level arm patterns of the match body `s[from..to]`, with their offsets.
fn arm_patterns(s: &str, from: usize, to: usize) -> Vec<(usize, String)> {
    let b = s.as_bytes();
    let mut pats = Vec::new();
    let (mut depth, mut seg, mut in_body) = (0i32, from, false);
    let mut k = from;
    while k < to {
        match b[k] {
            b'{' | b'(' | b'[' => depth += 1,
            b'}' | b')' | b']' => {
                depth -= 1;
                if depth == 0 && b[k] == b'}' && in_body {
                    seg = k + 1;
                    in_body = false;
                }
            }
            b'=' if depth == 0 && !in_body && b.get(k + 1) == Some(&b'>') => {
                let raw = &s[seg..k];
                let lead = raw.len() - raw.trim_start_matches([' ', '\n', ',']).len();
                pats.push((seg + lead, raw.trim_matches([' ', '\n', ',']).to_string()));
                in_body = true;
                k += 2;
                continue;
            }
            b',' if depth == 0 && in_body => {
                seg = k + 1;
                in_body = false;
            }
            _ => {}
        }
        k += 1;
    }
    pats
}

fn names_an_op(pattern: &str) -> bool {
    let p = pattern.trim_start_matches(['(', '&', ' ']);
    ["Op::", "UnaryOp::", "BinaryOp::"]
        .iter()
        .any(|x| p.starts_with(x))
}

/// `_`, or a lowercase binding, optionally guarded.
fn is_catch_all(pattern: &str) -> bool {
    let head = pattern.split(" if ").next().unwrap_or("").trim();
    !head.is_empty()
        && head.starts_with(|c: char| c == '_' || c.is_ascii_lowercase())
        && head
            .chars()
            .all(|c| c == '_' || c.is_ascii_lowercase() || c.is_ascii_digit())
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Violations in one file's source: `line: what`.
fn violations(original: &str) -> Vec<String> {
    let s = blank_non_code(original);
    let b = s.as_bytes();
    let lines: Vec<&str> = original.lines().collect();
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(p) = s[at..].find("match") {
        let start = at + p;
        at = start + 5;
        let word = (start == 0 || !is_word_byte(b[start - 1]))
            && b.get(start + 5).is_some_and(|&c| !is_word_byte(c));
        if !word {
            continue;
        }
        let Some(open) = s[start..].find('{').map(|q| start + q) else {
            continue;
        };
        let Some(close) = closing(b, open) else {
            continue;
        };
        let pats = arm_patterns(&s, open + 1, close);
        if !pats.iter().any(|(_, p)| names_an_op(p)) {
            continue;
        }
        for (off, p) in &pats {
            if !is_catch_all(p) {
                continue;
            }
            let line = line_of(&s, *off);
            let marked = line >= 2 && lines[line - 2].contains(PASS_THROUGH);
            if !marked {
                found.push(format!(
                    "{line}: catch-all arm `{p}` in a match over ops (match at line {})",
                    line_of(&s, start)
                ));
            }
        }
    }
    let mut at = 0;
    while let Some(p) = s[at..].find("matches!(") {
        let start = at + p;
        at = start + 9;
        let Some(close) = closing(b, start + 8) else {
            continue;
        };
        let args = &s[start + 9..close];
        let variants = args
            .match_indices("Op::")
            .filter(|(k, _)| *k == 0 || !is_word_byte(args.as_bytes()[k - 1]))
            .count();
        if variants >= 2 {
            found.push(format!(
                "{}: `matches!` over {variants} ops is a per-op predicate; make it an `Op` method",
                line_of(&s, start)
            ));
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_wildcard_arm_in_any_per_op_match() {
    let root = repo_root();
    let mut files = Vec::new();
    for d in CRATE_SRC_DIRS {
        rust_files(&root.join(d), &mut files);
    }
    files.sort();
    assert!(files.len() > 50, "found only {} source files", files.len());
    let mut report = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&root)
            .expect("under the root")
            .to_string_lossy()
            .replace('\\', "/");
        if EXEMPT.iter().any(|(p, _)| rel.starts_with(p)) {
            continue;
        }
        let text = fs::read_to_string(f).expect("readable source");
        for v in violations(&text) {
            report.push(format!("{rel}:{v}"));
        }
    }
    assert!(
        report.is_empty(),
        "per-op matches must name every op (an explicit \"unsupported\" arm is fine):\n{}",
        report.join("\n")
    );
}

#[test]
fn exempt_files_exist() {
    let root = repo_root();
    for (p, why) in EXEMPT {
        assert!(root.join(p).exists(), "exempt path {p} ({why}) is gone");
    }
}

/// The bullet lines of the README's "Adding an op: the checklist" section.
fn checklist() -> Vec<String> {
    let readme = fs::read_to_string(repo_root().join("ir/README.md")).expect("ir/README.md");
    let start = readme
        .find("## Adding an op: the checklist")
        .expect("ir/README.md has the add-an-op checklist");
    let body = &readme[start + 3..];
    let end = body.find("\n## ").unwrap_or(body.len());
    let mut items: Vec<String> = Vec::new();
    for line in body[..end].lines() {
        let t = line.trim_start();
        if t.starts_with("- ") || t.starts_with(|c: char| c.is_ascii_digit()) {
            items.push(t.to_string());
        } else if let Some(last) = items.last_mut() {
            if !t.is_empty() {
                last.push(' ');
                last.push_str(t);
            }
        }
    }
    items
}

fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

#[test]
fn checklist_names_places_that_exist() {
    let root = repo_root();
    let items = checklist();
    let mut paths = 0;
    let mut missing = Vec::new();
    for item in &items {
        let mut file: Option<String> = None;
        for tok in backticked(item) {
            if tok.contains('/') && (tok.ends_with(".rs") || tok.ends_with('/')) {
                paths += 1;
                if !root.join(tok).exists() {
                    missing.push(format!("path `{tok}`"));
                }
                file = tok.ends_with(".rs").then(|| tok.to_string());
            } else if let Some(f) = &file {
                // An identifier after a file names a function (or method) in that file.
                let ident = tok.trim_end_matches("()");
                let plain = !ident.is_empty()
                    && ident.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
                    && ident.starts_with(|c: char| c.is_ascii_lowercase());
                if plain {
                    let text = fs::read_to_string(root.join(f)).unwrap_or_default();
                    let defined = ["(", "<"]
                        .iter()
                        .any(|k| text.contains(&format!("fn {ident}{k}")));
                    if !defined {
                        missing.push(format!("fn `{ident}` in `{f}`"));
                    }
                }
            }
        }
    }
    assert!(
        paths >= 15,
        "the checklist names only {paths} paths; it should name every place"
    );
    assert!(
        missing.is_empty(),
        "ir/README.md's checklist names places that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_scanner_catches_a_wildcard_and_accepts_exhaustive_matches() {
    let bad = r#"
fn f(op: &Op) -> bool {
    match op {
        Op::Input => true, // `_ =>` in a comment is ignored
        _ => false,
    }
}
fn g(u: UnaryOp) -> &'static str {
    match u {
        UnaryOp::Neg => "neg",
        other => "x",
    }
}
fn h(op: &Op) -> bool {
    matches!(op, Op::Reshape { .. } | Op::Flatten { .. })
}
"#;
    let v = violations(bad);
    assert_eq!(v.len(), 3, "{v:?}");
    assert!(v[0].starts_with("5:"), "{v:?}");
    assert!(v[1].starts_with("11:"), "{v:?}");
    assert!(v[2].starts_with("15:"), "{v:?}");

    let good = r#"
fn f(op: &Op, x: Option<u8>) -> bool {
    let s = "_ => {";
    let c = '{';
    match op {
        Op::Input | Op::Param(_) => match x {
            Some(_) => true,
            _ => false,
        },
        Op::Constant(l) if l.is_empty() => false,
        Op::Constant(_) => true,
    }
}
fn copy(op: &Op) -> Op {
    match op {
        Op::Reshape { .. } => Op::Flatten { axis: 1 },
        // op-contract: pass-through
        other => other.clone(),
    }
}
fn one(op: &Op) -> bool {
    matches!(op, Op::Input)
}
"#;
    assert_eq!(violations(good), Vec::<String>::new());
}
