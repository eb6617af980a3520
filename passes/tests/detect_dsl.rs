//! The detector DSL blocks (frontend `nn::detect`) run in the reference interpreter against
//! numpy written in this test: anchor-point box decoding with the GFL integral, SPP and
//! CoordConv's channels (max|a − b| ≤ 1e-5·max(1, max|b|)); DropBlock is checked by its
//! properties (identity at inference; in training each element is dropped or scaled by one
//! common factor, dropped elements form whole blocks around seeds, masks differ per step).

use oar_frontend::nn::{add_coord, anchor_points, distance_to_box, gfl_integral, spp, DropBlock};
use oar_frontend::ModelBuilder;
use oar_passes::autodiff::check::uniform;
use oar_runtime::interp::{run_with_options, RunOptions};
use oar_runtime::io::npy::{read_npy, write_npy};
use oar_runtime::{run, HostTensor, Weights};
use std::process::Command;

const NUMPY: &str = r#"
import sys, numpy as np
d = sys.argv[1]
reg = np.load(d + "/reg.npy").astype(np.float64)
x = np.load(d + "/x.npy").astype(np.float64)
# GFL integral then distance -> box over levels (h, w, stride) = (4, 4, 8), (2, 2, 16).
n, a, _ = reg.shape
p = reg.reshape(n, a, 4, 8)
p = np.exp(p - p.max(-1, keepdims=True)); p /= p.sum(-1, keepdims=True)
dist = (p * np.arange(8)).sum(-1)
pts = []
for h, w, s in [(4, 4, 8), (2, 2, 16)]:
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pts.append(np.stack([(xs.ravel() + 0.5) * s, (ys.ravel() + 0.5) * s, np.full(h * w, s)], 1))
pts = np.concatenate(pts)
cx, cy, st = pts[:, 0], pts[:, 1], pts[:, 2]
boxes = np.stack([cx - dist[..., 0] * st, cy - dist[..., 1] * st, cx + dist[..., 2] * st, cy + dist[..., 3] * st], -1)
np.save(d + "/boxes.npy", boxes)
# SPP: x with same-padded stride-1 max pools of 3 and 5.
def pool(x, k):
    r = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)), constant_values=-np.inf)
    H, W = x.shape[2:]
    return np.max([xp[:, :, i:i + H, j:j + W] for i in range(k) for j in range(k)], axis=0)
np.save(d + "/spp.npy", np.concatenate([x, pool(x, 3), pool(x, 5)], 1))
# CoordConv: x, then columns then rows in [-1, 1].
N, C, H, W = x.shape
gx = np.broadcast_to(np.linspace(-1, 1, W)[None, None, None, :], (N, 1, H, W))
gy = np.broadcast_to(np.linspace(-1, 1, H)[None, None, :, None], (N, 1, H, W))
np.save(d + "/coord.npy", np.concatenate([x, gx, gy], 1))
"#;

fn rand(shape: &[usize], seed: u64, scale: f32) -> HostTensor {
    let n = shape.iter().product();
    HostTensor::f32(
        shape.to_vec(),
        uniform(n, seed).iter().map(|v| v * scale).collect(),
    )
}

#[test]
fn decoding_spp_and_coords_match_numpy() {
    let numpy = Command::new("python3")
        .args(["-c", "import numpy"])
        .output();
    if !numpy.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "numpy is required under CI"
        );
        eprintln!("skipped: python3 with numpy is not installed");
        return;
    }
    let b = ModelBuilder::new("det");
    let reg = b.input("reg", "f32[2,20,32]");
    let x = b.input("x", "f32[2,3,6,5]");
    let pts = anchor_points(&b, &[(4, 4, 8), (2, 2, 16)], 0.5);
    assert_eq!(pts.len, 20);
    let boxes = distance_to_box(&gfl_integral(&reg, 7), &pts);
    let pooled = spp(&x, &[3, 5]);
    let coords = add_coord(&x);
    let g = b.finish(&[&boxes, &pooled, &coords]).unwrap();
    let ins = [rand(&[2, 20, 32], 1, 3.0), rand(&[2, 3, 6, 5], 2, 2.0)];
    let got = run(&g, &ins, &Weights::new()).unwrap();

    let dir = std::env::temp_dir().join(format!("oar_detect_dsl_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_npy(&dir.join("reg.npy"), &ins[0]).unwrap();
    write_npy(&dir.join("x.npy"), &ins[1]).unwrap();
    let out = Command::new("python3")
        .args(["-c", NUMPY])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (k, name) in ["boxes", "spp", "coord"].iter().enumerate() {
        let want = read_npy(&dir.join(format!("{name}.npy"))).unwrap();
        let want = HostTensor::f32(
            want.shape.clone(),
            want.to_f64().iter().map(|&v| v as f32).collect(),
        );
        let (diff, scale) = got[k].max_abs_diff(&want).unwrap_or_else(|| {
            panic!("{name}: shape {:?} vs numpy {:?}", got[k].shape, want.shape)
        });
        assert!(
            diff <= 1e-5 * scale.max(1.0),
            "{name}: max|a-b| = {diff:e}, max|b| = {scale:e}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn drop_block_drops_whole_blocks_in_training_only() {
    let b = ModelBuilder::new("db");
    let x = b.input("x", "f32[2,4,16,16]");
    let y = DropBlock {
        block_size: 3,
        keep_prob: 0.9,
    }
    .forward(&x);
    let g = b.finish(&[&y]).unwrap();
    let xv = HostTensor::f32(
        vec![2, 4, 16, 16],
        uniform(2048, 5).iter().map(|v| v + 2.0).collect(),
    );
    // Inference: exactly x.
    let y0 = run(&g, std::slice::from_ref(&xv), &Weights::new()).unwrap();
    assert_eq!(y0[0], xv);
    let mut masks = Vec::new();
    for step in 0..2 {
        let r = run_with_options(
            &g,
            std::slice::from_ref(&xv),
            &Weights::new(),
            RunOptions::training(7, step),
        )
        .unwrap();
        let (xs, ys) = (xv.as_f32().unwrap(), r.outputs[0].as_f32().unwrap());
        let ratios: Vec<f32> = xs.iter().zip(ys).map(|(a, b)| b / a).collect();
        let kept: Vec<f32> = ratios.iter().copied().filter(|&r| r != 0.0).collect();
        let dropped = 1.0 - kept.len() as f64 / ratios.len() as f64;
        assert!((0.02..0.3).contains(&dropped), "dropped fraction {dropped}");
        // One rescale factor, 1 / kept fraction.
        let s = 1.0 / (1.0 - dropped) as f32;
        assert!(
            kept.iter().all(|&r| (r - s).abs() <= 1e-4 * s),
            "scales differ from {s}"
        );
        // Every dropped element lies in a 3×3 block (clipped at the border) that is all dropped.
        let zero = |n: usize, i: i64, j: i64| {
            !(0..16).contains(&i)
                || !(0..16).contains(&j)
                || ratios[n * 256 + (i * 16 + j) as usize] == 0.0
        };
        for n in 0..8 {
            for i in 0..16i64 {
                for j in 0..16i64 {
                    if ratios[n * 256 + (i * 16 + j) as usize] != 0.0 {
                        continue;
                    }
                    let in_block = (-2..=0).any(|di| {
                        (-2..=0).any(|dj| {
                            (0..3).all(|a| (0..3).all(|c| zero(n, i + di + a, j + dj + c)))
                        })
                    });
                    assert!(
                        in_block,
                        "({n}, {i}, {j}) is dropped outside any whole block"
                    );
                }
            }
        }
        masks.push(ratios);
    }
    assert_ne!(masks[0], masks[1], "each step draws a fresh mask");
}
