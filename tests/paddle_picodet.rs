//! oar's PP-PicoDet S/M/L against PaddleDetection's own ESNet + CSPPAN + PicoHead with shared
//! weights: the raw head outputs (sigmoid class scores and distribution logits per level) and
//! the trainable parameter count. Needs paddlepaddle and paddledet (`python3
//! scripts/paddle_setup.py`); skips with a message when they are not importable.

mod common;
mod picodet_util;

use common::{random_inputs, rel_err, scratch};
use oar::models::PicoDetConfig;
use oar::runtime::io::npy::{read_npy, write_npy};
use oar::runtime::io::weights::save_safetensors;
use oar::runtime::run;
use picodet_util::useful_weights;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// max |a − b| / max |b| per output.
const TOL: f64 = 1e-4;

fn have_paddledet() -> bool {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import importlib.util as u, paddle; assert u.find_spec('ppdet')",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "SKIP: paddle or paddledet is not importable (run `python3 scripts/paddle_setup.py`)"
        );
    }
    ok
}

fn matches_paddle(size: &str, cfg: PicoDetConfig) {
    let name = format!("picodet_{size}_{}", cfg.image_size);
    let g = cfg.build(&name).unwrap();
    let weights = useful_weights(&g, 21);
    let inputs = random_inputs(&g, &BTreeMap::from([("N".into(), 1)]), 17);
    let ours = run(&g, &inputs, &weights).expect("interpreter");

    let dir = scratch("paddle-picodet");
    let (wp, xp, out) = (
        dir.join("w.safetensors"),
        dir.join("x.npy"),
        dir.join("out"),
    );
    save_safetensors(&wp, &weights).unwrap();
    write_npy(&xp, &inputs[0]).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/paddle/picodet_run.py");
    let o = Command::new("python3")
        .arg(&script)
        .arg(size)
        .args([&wp, &xp, &out])
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "picodet_run.py {size}:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for (k, mine) in ours.iter().enumerate() {
        let theirs = read_npy(&out.join(format!("output_{k}.npy"))).unwrap();
        let e = rel_err(mine, &theirs);
        eprintln!(
            "{name} output {k} {:?}: oar vs PaddleDetection rel err {e:.2e}",
            mine.shape
        );
        assert!(e <= TOL, "{name} output {k}: rel err {e:.2e} > {TOL:e}");
    }
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("info.json")).unwrap()).unwrap();
    let b = BTreeMap::from([("N".to_string(), 1)]);
    assert_eq!(
        info["trainable_params"].as_u64().unwrap(),
        oar::models::trainable_param_elements(&g, &b),
        "{name}: trainable parameters"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn picodet_matches_paddledetection() {
    if !have_paddledet() {
        return;
    }
    // S at its paper size; M and L at a small size (the interpreter's time).
    matches_paddle("s", PicoDetConfig::s(320));
    matches_paddle("m", PicoDetConfig::m(128));
    matches_paddle("l", PicoDetConfig::l(128));
}
