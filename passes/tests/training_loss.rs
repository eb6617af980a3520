//! Loss builders run by the interpreter against f64 references written here from the
//! textbook definitions (softmax computed directly, not via log_softmax). Tolerance 1e-5
//! relative (the graph computes in f32).

use oar_ir::{DType, Dim, Graph, TensorType};
use oar_passes::training::loss::{
    distillation, masked_cross_entropy, mean_squared_error, softmax_cross_entropy, IGNORE_INDEX,
};
use oar_passes::training::{Emit, SoftLoss};
use oar_runtime::{run, HostTensor, Weights};
use training_common::Rng;

mod training_common;

fn data(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    Rng(seed).vec(n, scale)
}

fn t(v: &[f64], shape: &[usize]) -> HostTensor {
    HostTensor::f32(shape.to_vec(), v.iter().map(|&a| a as f32).collect())
}

fn softmax(row: &[f64], temp: f64) -> Vec<f64> {
    let mx = row.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = row.iter().map(|x| ((x - mx) / temp).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

fn close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-5 * want.abs().max(1e-3),
        "{what}: {got} vs {want}"
    );
}

/// Runs a one-output graph built by `f` over inputs of the given types.
fn eval(
    inputs: &[(&str, TensorType)],
    values: Vec<HostTensor>,
    f: impl FnOnce(&mut Emit, &[oar_ir::ValueRef]) -> oar_ir::ValueRef,
) -> f64 {
    let mut g = Graph::new("loss");
    let vs: Vec<_> = inputs
        .iter()
        .map(|(n, ty)| g.add_input(*n, ty.clone()))
        .collect();
    let mut e = Emit::new(&mut g, "loss");
    let l = f(&mut e, &vs);
    g.set_outputs(vec![l]);
    assert_eq!(g.value_type(l).unwrap().rank(), 0);
    let out = run(&g, &values, &Weights::new()).unwrap();
    out[0].to_f64()[0]
}

#[test]
fn cross_entropy_with_and_without_label_smoothing() {
    // Token-level logits [B, T, C] with labels [B, T].
    let (b, s, c) = (2usize, 3usize, 5usize);
    let logits = data(b * s * c, 5, 3.0);
    let labels: Vec<i64> = (0..b * s).map(|i| ((i * 7 + 3) % c) as i64).collect();
    let lt = TensorType::f32(&[b as u64, s as u64, c as u64]);
    let yt = TensorType::new(
        DType::I64,
        vec![Dim::Static(b as u64), Dim::Static(s as u64)],
    );
    for eps in [0.0, 0.1] {
        let got = eval(
            &[("logits", lt.clone()), ("labels", yt.clone())],
            vec![
                t(&logits, &[b, s, c]),
                HostTensor::i64(vec![b, s], labels.clone()),
            ],
            |e, v| softmax_cross_entropy(e, v[0], v[1], eps).unwrap(),
        );
        let mut want = 0.0;
        for r in 0..b * s {
            let p = softmax(&logits[r * c..(r + 1) * c], 1.0);
            for (k, pk) in p.iter().enumerate() {
                let target = eps / c as f64
                    + if k as i64 == labels[r] {
                        1.0 - eps
                    } else {
                        0.0
                    };
                want -= target * pk.ln();
            }
        }
        close(
            got,
            want / (b * s) as f64,
            &format!("cross-entropy, ε = {eps}"),
        );
    }
}

#[test]
fn masked_cross_entropy_scores_only_labelled_positions() {
    let (b, s, v) = (2usize, 5usize, 7usize);
    let logits = data(b * s * v, 11, 3.0);
    let lt = TensorType::f32(&[b as u64, s as u64, v as u64]);
    let yt = TensorType::new(
        DType::I64,
        vec![Dim::Static(b as u64), Dim::Static(s as u64)],
    );
    // Three scored positions; every other label is ignored. All ignored gives 0.
    let mut labels = vec![IGNORE_INDEX; b * s];
    for (r, id) in [(1usize, 4i64), (4, 0), (8, 6)] {
        labels[r] = id;
    }
    for labels in [labels, vec![IGNORE_INDEX; b * s]] {
        let got = eval(
            &[("logits", lt.clone()), ("labels", yt.clone())],
            vec![
                t(&logits, &[b, s, v]),
                HostTensor::i64(vec![b, s], labels.clone()),
            ],
            |e, x| masked_cross_entropy(e, x[0], x[1]).unwrap(),
        );
        let (mut sum, mut n) = (0.0, 0usize);
        for (r, &y) in labels.iter().enumerate() {
            if y != IGNORE_INDEX {
                sum -= softmax(&logits[r * v..(r + 1) * v], 1.0)[y as usize].ln();
                n += 1;
            }
        }
        close(
            got,
            sum / n.max(1) as f64,
            &format!("masked CE, {n} scored"),
        );
    }
}

#[test]
fn cross_entropy_rejects_labels_of_the_wrong_shape() {
    let mut g = Graph::new("loss");
    let l = g.add_input("logits", TensorType::f32(&[4, 3]));
    let y = g.add_input("labels", TensorType::new(DType::I64, vec![Dim::Static(3)]));
    let mut e = Emit::new(&mut g, "loss");
    let err = softmax_cross_entropy(&mut e, l, y, 0.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "loss: the labels must be class ids i64[4], found i64[3]"
    );
}

#[test]
fn mean_squared_error_matches() {
    let a = data(12, 6, 2.0);
    let b = data(12, 7, 2.0);
    let ty = TensorType::f32(&[3, 4]);
    let got = eval(
        &[("a", ty.clone()), ("b", ty)],
        vec![t(&a, &[3, 4]), t(&b, &[3, 4])],
        |e, v| mean_squared_error(e, v[0], v[1]).unwrap(),
    );
    let want = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / 12.0;
    close(got, want, "mse");
}

#[test]
fn distillation_losses_scale_by_t_squared() {
    let (n, c) = (4usize, 6usize);
    let s = data(n * c, 8, 4.0);
    let tch = data(n * c, 9, 4.0);
    let ty = TensorType::f32(&[n as u64, c as u64]);
    for temp in [1.0, 2.5] {
        for kind in [SoftLoss::Kl, SoftLoss::SoftCrossEntropy, SoftLoss::Js] {
            let got = eval(
                &[("student", ty.clone()), ("teacher", ty.clone())],
                vec![t(&s, &[n, c]), t(&tch, &[n, c])],
                |e, v| distillation(e, v[0], v[1], temp, kind).unwrap(),
            );
            let mut want = 0.0;
            for r in 0..n {
                let ps = softmax(&s[r * c..(r + 1) * c], temp);
                let pt = softmax(&tch[r * c..(r + 1) * c], temp);
                for k in 0..c {
                    want += match kind {
                        SoftLoss::Kl => pt[k] * (pt[k].ln() - ps[k].ln()),
                        SoftLoss::SoftCrossEntropy => -pt[k] * ps[k].ln(),
                        SoftLoss::Js => {
                            let m = 0.5 * (pt[k] + ps[k]);
                            0.5 * (pt[k] * (pt[k] / m).ln() + ps[k] * (ps[k] / m).ln())
                        }
                    };
                }
            }
            close(
                got,
                want / n as f64 * temp * temp,
                &format!("{kind:?}, T = {temp}"),
            );
        }
    }
}
