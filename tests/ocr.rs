//! `oar ocr` end to end with the PP-OCRv4 ONNX weights that ship in rapidocr-onnxruntime,
//! on text images rendered by `scripts/ocr_setup.py` (Pillow, DejaVu fonts): character
//! accuracy and line recall against the ground truth, and agreement with rapidocr's own
//! pipeline on the same images (its results are written by the set-up script). Skips with a
//! message when the models or the images are missing; under CI=true that is a failure.

mod common;

use oar::runtime::vision::geometry::convex_iou;
use oar::runtime::vision::Image;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Fraction of lines where oar's text is identical to rapidocr's and the boxes overlap
/// with IoU ≥ 0.5. Measured 1.0 on the 30 set-up images (docs/ocr.md); a line whose
/// rendering sits on a decision boundary (a digit's crop differing by one resampled pixel)
/// may flip, so one in twenty may disagree.
const MIN_AGREEMENT: f64 = 0.95;

fn missing(what: &str) {
    let msg = format!("SKIP: {what}");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg} (CI=true: the set-up scripts must provide it)");
    }
    eprintln!("{msg}");
}

fn data_dir() -> Option<PathBuf> {
    let d = std::env::var_os("OAR_OCR_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/data/ocr"));
    if !d.join("truth.json").is_file() {
        missing(&format!(
            "{} has no truth.json (run `python3 scripts/ocr_setup.py`)",
            d.display()
        ));
        return None;
    }
    Some(d)
}

/// The three models' flags, or None (after saying why).
fn model_flags() -> Option<Vec<String>> {
    let dir = common::onnx_dir().map(|d| d.join("models"));
    let mut flags = Vec::new();
    for (flag, file) in [
        ("--det", "ppocrv4_det.onnx"),
        ("--cls", "ppocr_mobile_v2_cls.onnx"),
        ("--rec", "ppocrv4_rec.onnx"),
    ] {
        match dir.as_ref().map(|d| d.join(file)).filter(|p| p.is_file()) {
            Some(p) => flags.extend([flag.to_string(), p.display().to_string()]),
            None => {
                missing(&format!(
                    "{file} is missing (run `python3 scripts/onnx_setup.py`)"
                ));
                return None;
            }
        }
    }
    Some(flags)
}

fn oar_ocr(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oar"))
        .arg("ocr")
        .args(args)
        .output()
        .expect("run oar")
}

fn quad(v: &Value) -> Vec<[f64; 2]> {
    v.as_array()
        .expect("box")
        .iter()
        .map(|p| [p[0].as_f64().unwrap(), p[1].as_f64().unwrap()])
        .collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut prev = row[0];
        row[0] = i;
        for j in 1..=b.len() {
            let cur = row[j];
            row[j] = (prev + (a[i - 1] != b[j - 1]) as usize)
                .min(row[j] + 1)
                .min(row[j - 1] + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// (character accuracy, line recall) of `found` (image → lines) against the truth: each
/// true line is matched with the found line of highest IoU; unmatched lines (IoU < 0.5)
/// count as read as "".
fn score(truth: &[Value], found: &dyn Fn(&str) -> Vec<Value>) -> (f64, f64, usize) {
    let (mut chars, mut errors, mut lines, mut hit) = (0usize, 0usize, 0usize, 0usize);
    for t in truth {
        let lines_found = found(t["image"].as_str().unwrap());
        for gt in t["lines"].as_array().unwrap() {
            let want = gt["text"].as_str().unwrap();
            let gq = quad(&gt["box"]);
            let best = lines_found
                .iter()
                .map(|l| (convex_iou(&gq, &quad(&l["box"])), l))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let got = match best {
                Some((iou, l)) if iou >= 0.5 => {
                    hit += 1;
                    l["text"].as_str().unwrap().to_string()
                }
                _ => String::new(),
            };
            let e = edit_distance(want, &got);
            if e > 0 {
                eprintln!("  {}: `{want}` read as `{got}`", t["image"]);
            }
            errors += e;
            chars += want.chars().count();
            lines += 1;
        }
    }
    (
        1.0 - errors as f64 / chars as f64,
        hit as f64 / lines as f64,
        lines,
    )
}

#[test]
fn ocr_reads_rendered_text_and_agrees_with_rapidocr() {
    let (Some(dir), Some(mut args)) = (data_dir(), model_flags()) else {
        return;
    };
    let truth: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap();
    args.push("--json".into());
    for t in &truth {
        args.push(dir.join(t["image"].as_str().unwrap()).display().to_string());
    }
    let out = oar_ocr(&args);
    assert!(
        out.status.success(),
        "oar ocr failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours: Vec<Value> = serde_json::from_slice(&out.stdout).expect("--json output");
    assert_eq!(ours.len(), truth.len());
    let lines_of = |res: &[Value], name: &str| -> Vec<Value> {
        res.iter()
            .find(|r| Path::new(r["image"].as_str().unwrap()).file_name().unwrap() == name)
            .map(|r| r["lines"].as_array().unwrap().clone())
            .unwrap_or_default()
    };
    let (acc, recall, n) = score(&truth, &|name| lines_of(&ours, name));
    eprintln!("oar ocr: character accuracy {acc:.4}, line recall {recall:.4} over {n} lines");
    assert!(acc >= 0.95, "character accuracy {acc:.4} < 0.95");
    assert!(recall >= 0.95, "line recall {recall:.4} < 0.95");

    let peer_file = dir.join("rapidocr.json");
    if !peer_file.is_file() {
        missing(
            "rapidocr.json is missing (scripts/ocr_setup.py installs rapidocr-onnxruntime 1.4.4)",
        );
        return;
    }
    let peer: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(peer_file).unwrap()).unwrap();
    let (pacc, precall, _) = score(&truth, &|name| lines_of(&peer, name));
    eprintln!("rapidocr: character accuracy {pacc:.4}, line recall {precall:.4}");
    // Agreement: every rapidocr line has an oar line with the same text and IoU ≥ 0.5.
    let (mut same, mut total, mut ious) = (0usize, 0usize, Vec::new());
    for t in &truth {
        let name = t["image"].as_str().unwrap();
        let mine = lines_of(&ours, name);
        for l in lines_of(&peer, name) {
            total += 1;
            let q = quad(&l["box"]);
            let best = mine
                .iter()
                .map(|m| (convex_iou(&q, &quad(&m["box"])), m))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((iou, m)) = best {
                ious.push(iou);
                if iou >= 0.5 && m["text"] == l["text"] {
                    same += 1;
                    continue;
                }
                eprintln!(
                    "  {name}: rapidocr `{}`, oar `{}` (IoU {iou:.2})",
                    l["text"], m["text"]
                );
            }
        }
    }
    let agreement = same as f64 / total.max(1) as f64;
    let mean_iou = ious.iter().sum::<f64>() / ious.len().max(1) as f64;
    eprintln!("agreement with rapidocr: {same}/{total} = {agreement:.4} lines; mean box IoU {mean_iou:.3}");
    assert!(
        agreement >= MIN_AGREEMENT,
        "agreement {agreement:.4} < {MIN_AGREEMENT}"
    );
}

/// Replaces the run's scratch folder in error messages, so snapshots are stable.
fn stderr_of(out: &Output, dir: &Path) -> String {
    String::from_utf8_lossy(&out.stderr).replace(&dir.display().to_string(), "$DIR")
}

/// A PNG whose header says 0×0 (encoders refuse to write one), CRC recomputed.
fn zero_by_zero_png() -> Vec<u8> {
    let mut png = Image::filled(1, 1, [255; 3]).encode_png().unwrap();
    // IHDR data starts at byte 16 (8 signature + 4 length + 4 type): width, height
    png[16..24].fill(0);
    let crc = png[12..29].iter().fold(!0u32, |mut c, &b| {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
        c
    });
    png[29..33].copy_from_slice(&(!crc).to_be_bytes());
    png
}

#[test]
fn bad_images_get_clear_errors() {
    let dir = common::scratch("ocr-bad");
    std::fs::write(dir.join("notes.png"), "this is text, not a PNG").unwrap();
    std::fs::write(dir.join("empty.png"), zero_by_zero_png()).unwrap();
    std::fs::write(
        dir.join("dot.png"),
        Image::filled(1, 1, [0; 3]).encode_png().unwrap(),
    )
    .unwrap();
    let mut report = String::new();
    for name in ["missing.png", "notes.png", "empty.png", "dot.png"] {
        let out = oar_ocr(&[dir.join(name).display().to_string()]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = stderr_of(&out, &dir);
        assert!(!err.contains("panicked"), "{err}");
        report += &format!("$ oar ocr {name}\n{err}\n");
    }
    // A model path that is not there is named with the flag it came from.
    let img = dir.join("ok.png");
    std::fs::write(&img, Image::filled(64, 64, [255; 3]).encode_png().unwrap()).unwrap();
    let out = oar_ocr(&[
        img.display().to_string(),
        "--det".into(),
        dir.join("det.onnx").display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    report += &format!("$ oar ocr ok.png --det det.onnx\n{}", stderr_of(&out, &dir));
    insta::assert_snapshot!(report);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_image_without_text_says_so_and_succeeds() {
    let Some(args) = model_flags() else {
        return;
    };
    let dir = common::scratch("ocr-blank");
    let img = dir.join("blank.png");
    std::fs::write(
        &img,
        Image::filled(320, 240, [255; 3]).encode_png().unwrap(),
    )
    .unwrap();
    let mut a = args.clone();
    a.push(img.display().to_string());
    let out = oar_ocr(&a);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).replace(&dir.display().to_string(), "$DIR");
    assert_eq!(text, "$DIR/blank.png: no text found\n");
    std::fs::remove_dir_all(&dir).ok();
}
