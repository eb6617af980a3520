//! PP-PicoDet through the real binary: `oar models --json` against the paper's table,
//! PicoDet-S at 320 compiled through LLVM against the interpreter, and its ONNX export in
//! onnxruntime. Weights are redrawn at a useful scale (Kaiming-uniform convs, batch norms with
//! non-trivial statistics): PicoDet's own initialisers (N(0, 0.01) head convs, identity batch
//! norms) make the inference outputs near-constant, which would hide a wrong backbone.

mod common;
mod picodet_util;

use common::{have_onnxruntime, onnxruntime_run, random_inputs, rel_err, scratch};
use oar::runtime::io::npy::{read_npy, write_npy};
use oar::runtime::io::weights::save_safetensors;
use oar::runtime::{run, HostTensor};
use picodet_util::useful_weights;
use std::collections::BTreeMap;
use std::process::Command;

const TOL: f64 = 1e-4;

fn oar(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_oar"))
        .args(args)
        .output()
        .expect("the oar binary runs");
    assert!(
        out.status.success(),
        "oar {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn std_dev(t: &HostTensor) -> f64 {
    let v = t.to_f64();
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
}

#[test]
fn models_json_lists_picodet_within_the_paper_table() {
    let j: serde_json::Value = serde_json::from_str(&oar(&["models", "--json"])).unwrap();
    for (name, params, gflops) in oar::models::picodet::PAPER_TABLE {
        let row = j
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from oar models --json"));
        assert_eq!(row["family"], "PP-PicoDet");
        let p = row["trainable_params"].as_f64().unwrap() / 1e6;
        // The paper's FLOPs are two per multiply-accumulate over paddle.flops's MACs.
        let f = 2.0 * row["macs"].as_f64().unwrap() / 1e9;
        assert!(
            ((p - params) / params).abs() <= 0.01,
            "{name}: {p}M params vs {params}M"
        );
        assert!(
            ((f - gflops) / gflops).abs() <= 0.03,
            "{name}: {f}G FLOPs vs {gflops}G"
        );
        // `params` also counts the batch norms' running statistics.
        assert!(row["params"].as_f64().unwrap() > row["trainable_params"].as_f64().unwrap());
    }
}

#[test]
fn picodet_s_320_compiles_and_matches_the_interpreter() {
    let name = "picodet_s_320";
    let dir = scratch("picodet-exe");
    let g = oar::load_graph(name).unwrap();
    let weights = useful_weights(&g, 3);
    let wp = dir.join("w.safetensors");
    save_safetensors(&wp, &weights).unwrap();
    let exe = dir.join("picodet");
    oar(&[
        "compile",
        name,
        "--weights",
        wp.to_str().unwrap(),
        "-o",
        exe.to_str().unwrap(),
    ]);
    let inputs = random_inputs(&g, &BTreeMap::from([("N".into(), 1)]), 9);
    let want = run(&g, &inputs, &weights).expect("interpreter");
    let xp = dir.join("image.npy");
    write_npy(&xp, &inputs[0]).unwrap();
    let mut cmd = Command::new(&exe);
    cmd.args(["--threads", "2", "--input"]).arg(&xp);
    let outs: Vec<_> = (0..want.len())
        .map(|k| dir.join(format!("y{k}.npy")))
        .collect();
    for p in &outs {
        cmd.arg("-o").arg(p);
    }
    let st = cmd.output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert_eq!(want.len(), 8);
    for (k, (p, w)) in outs.iter().zip(&want).enumerate() {
        // The comparison means something only if the outputs vary.
        assert!(
            std_dev(w) > 1e-3,
            "output {k} is near-constant (std {:.2e})",
            std_dev(w)
        );
        let e = rel_err(&read_npy(p).unwrap(), w);
        eprintln!(
            "{name} output {k} {:?}: compiled vs interpreter rel err {e:.2e}",
            w.shape
        );
        assert!(e <= TOL, "{name} output {k}: rel err {e:.2e} > {TOL:e}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn picodet_s_onnx_export_runs_in_onnxruntime() {
    let name = "picodet_s_320";
    let g = oar::load_graph(name).unwrap();
    let weights = useful_weights(&g, 5);
    let dir = scratch("picodet-onnx");
    let path = dir.join(format!("{name}.onnx"));
    let bytes = oar::onnx_io::export_with_weights(&g, &weights).expect("export");
    std::fs::write(&path, bytes).unwrap();
    let inputs = random_inputs(&g, &BTreeMap::from([("N".into(), 2)]), 13);
    let ours = run(&g, &inputs, &weights).expect("interpreter");

    // Back through oar's importer.
    let shapes = BTreeMap::from([("image".to_string(), vec![2, 3, 320, 320])]);
    let back = oar::load_model(path.to_str().unwrap(), &shapes).expect("re-import");
    let again = run(&back.graph, &inputs, &back.weights.unwrap()).expect("re-imported runs");
    for (k, (a, b)) in again.iter().zip(&ours).enumerate() {
        assert!(
            rel_err(a, b) <= 1e-6,
            "output {k}: the re-imported graph differs"
        );
    }

    if !have_onnxruntime() {
        eprintln!("SKIP: onnxruntime is not installed (python3 scripts/onnx_setup.py)");
        return;
    }
    let theirs = onnxruntime_run(&path, &inputs);
    assert_eq!(theirs.len(), ours.len());
    for (k, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        let e = rel_err(a, b);
        eprintln!(
            "{name} output {k} {:?}: interpreter vs onnxruntime rel err {e:.2e}",
            b.shape
        );
        assert!(e <= TOL, "{name} output {k}: rel err {e:.2e} > {TOL:e}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
