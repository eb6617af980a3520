//! `oar train ernie-3.0-…` on the Python documentation corpus (`scripts/text_setup.py`), with
//! a tiny ERNIE (1 layer, hidden 32) and a slice of the corpus: the validation MLM loss falls
//! from about ln(vocab), the log carries tokens/s and token-level evaluation, and a resumed
//! run repeats the uninterrupted run's losses and weights bit for bit (dropout on).
//! Skips with a message when the corpus is missing.

mod cli_util;

use cli_util::{fails, log_lines, ok, text_corpus};
use std::path::{Path, PathBuf};

/// The ERNIE the tests train: the zoo's first 3.0 configuration, whatever its exact name.
const MODEL: &str = "ernie-3.0-tiny";

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("oar-text-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A tiny masked-LM run on 6 documents of each split: vocabulary 300, seq 32, batch 4.
fn args(data: &Path, vocab: &Path, steps: u64, extra: &[String]) -> Vec<String> {
    let mut a: Vec<String> = [
        "train",
        MODEL,
        "--data",
        &s(data),
        "--vocab",
        &s(vocab),
        "--vocab-size",
        "300",
        "--max-docs",
        "6",
        "--seq",
        "32",
        "--batch",
        "4",
        "--layers",
        "1",
        "--hidden",
        "32",
        "--heads",
        "2",
        "--ffn",
        "64",
        "--lr",
        "0.01",
        "--warmup",
        "4",
        "--clip-norm",
        "1.0",
        "--eval-sequences",
        "16",
        "--seed",
        "3",
        "--steps",
        &steps.to_string(),
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    a.extend_from_slice(extra);
    a
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn ernie_masked_lm_lowers_the_validation_loss() {
    let Some(data) = text_corpus() else { return };
    let d = scratch("learn");
    let (vocab, log) = (d.join("vocab.txt"), d.join("run.jsonl"));
    let extra = strings(&["--eval-every", "15", "--log", &s(&log)]);
    let out = ok(&args(&data, &vocab, 90, &extra));
    assert!(out.contains("trained 90 steps"), "{out}");
    let pieces = std::fs::read_to_string(&vocab).expect("the vocabulary was written");
    assert_eq!(pieces.lines().count(), 300);
    assert!(pieces.starts_with("[PAD]\n[CLS]\n[SEP]\n[MASK]\n[UNK]\n"));

    let steps = log_lines(&log, "step");
    assert_eq!(steps.len(), 90);
    assert!(steps[0]["tokens_per_sec"].as_f64().unwrap() > 0.0);
    // Before any update the model guesses uniformly: the loss is about ln(300) = 5.70.
    let first = steps[0]["loss"].as_f64().unwrap();
    assert!((first - 300f64.ln()).abs() < 0.5, "first loss {first}");

    let evals: Vec<f64> = log_lines(&log, "eval")
        .iter()
        .map(|v| {
            assert!(v["tokens"].as_u64().unwrap() > 16, "scored positions: {v}");
            v["eval_loss"].as_f64().unwrap()
        })
        .collect();
    assert_eq!(evals.len(), 6, "{evals:?}");
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&evals[3..]) < mean(&evals[..3]) && evals[5] < first - 0.4,
        "validation MLM loss {evals:?} (step 1 training loss {first})"
    );
}

#[test]
fn a_resumed_masked_lm_run_repeats_the_losses_bit_for_bit() {
    let Some(data) = text_corpus() else { return };
    let d = scratch("resume");
    let vocab = d.join("vocab.txt");
    let run = |steps: u64, root: &str, more: &[&str]| {
        let mut extra = strings(&[
            "--eval-every",
            "6",
            "--save",
            &s(&d.join(root)),
            "--save-every",
            "6",
            "--keep",
            "0",
            "--log",
            &s(&d.join(format!("{root}.jsonl"))),
        ]);
        extra.extend(strings(more));
        args(&data, &vocab, steps, &extra)
    };
    ok(&run(12, "full", &[]));
    ok(&run(6, "part", &[]));
    let out = ok(&run(12, "part", &["--resume", &s(&d.join("part"))]));
    assert!(out.contains("trained 12 steps (6 in this run"), "{out}");
    let losses = |name: &str| -> Vec<(u64, f64)> {
        log_lines(&d.join(name), "step")
            .iter()
            .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
            .collect()
    };
    assert_eq!(losses("full.jsonl"), losses("part.jsonl"));
    let evals = |name: &str| log_lines(&d.join(name), "eval");
    let loss = |v: &serde_json::Value| v["eval_loss"].as_f64().unwrap();
    let (a, b) = (evals("full.jsonl"), evals("part.jsonl"));
    assert_eq!(
        a.iter().map(loss).collect::<Vec<_>>(),
        b.iter().map(loss).collect::<Vec<_>>()
    );
    let w = |root: &str| {
        std::fs::read(
            d.join(root)
                .join("step-00000012/shard-00000-of-00001.safetensors"),
        )
    };
    assert!(
        w("full").unwrap() == w("part").unwrap(),
        "final weights differ"
    );
    assert!(
        d.join("part/vocab.txt").is_file(),
        "the vocabulary is kept with the run"
    );

    // Another sequence length is another data stream: refused.
    let mut other = run(18, "part", &["--resume", &s(&d.join("part"))]);
    let k = other.iter().position(|a| a == "--seq").unwrap();
    other[k + 1] = "16".into();
    let e = fails(&other);
    assert!(
        e.contains("cannot resume") && e.contains("--seq 16 (the checkpoint has 32)"),
        "{e}"
    );
}

#[test]
fn an_image_directory_is_not_a_text_corpus() {
    let d = scratch("not-text");
    let e = fails(&strings(&[
        "train",
        MODEL,
        "--data",
        &s(&d),
        "--steps",
        "1",
    ]));
    assert!(
        e.contains("text corpus") && e.contains("text_setup.py"),
        "{e}"
    );
}
