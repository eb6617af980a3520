//! Gradient accumulation: k micro-batches accumulated and applied once equal one step on the
//! whole batch. The model is least squares `y = x·W` with a mean loss, whose gradient the
//! test computes in f64 (`2/(N·M)·xᵀ(xW − y)`) and feeds as a graph input, so no gradient
//! rules are needed. Tolerance: 1e-5 relative (values below 0.1: 1e-6 absolute).

use oar_ir::op::{Init, Op, ParamAttrs};
use oar_ir::{ExecMode, Graph, TensorType, ValueRef};
use oar_passes::training::optim::insert_optimizer;
use oar_passes::training::{OptimConfig, Optimizer};
use oar_runtime::interp::{train_step, RunOptions};
use oar_runtime::{HostTensor, Weights};
use training_common::Rng;

mod training_common;

const D: usize = 4;
const M: usize = 2;
const BATCH: usize = 6;
const K: usize = 3;

fn graph(accumulate: u32) -> Graph {
    let mut g = Graph::new("acc");
    g.mode = ExecMode::Training;
    let grad = g.add_input("grad", TensorType::f32(&[D as u64, M as u64]));
    let op = Op::Param(ParamAttrs {
        name: "w".into(),
        init: Some(Init::Constant(0.0)),
    });
    let w = g
        .add_node_typed(
            op,
            vec![],
            vec![TensorType::f32(&[D as u64, M as u64])],
            None,
        )
        .unwrap();
    g.set_outputs(vec![ValueRef::from(w)]);
    let mut cfg = OptimConfig::new(Optimizer::Sgd {
        momentum: 0.9,
        nesterov: true,
        weight_decay: 0.01,
    });
    cfg.accumulate = accumulate;
    cfg.clip_global_norm = Some(1.0);
    insert_optimizer(&mut g, &[("w".into(), grad)], &cfg).unwrap();
    oar_ir::verify(&g).unwrap();
    g
}

/// The mean-squared-error gradient over rows `rows` of the data, at `w`.
fn grad(x: &[f64], y: &[f64], w: &[f64], rows: std::ops::Range<usize>) -> Vec<f64> {
    let n = rows.len() as f64;
    let mut g = vec![0.0; D * M];
    for r in rows {
        for j in 0..M {
            let pred: f64 = (0..D).map(|i| x[r * D + i] * w[i * M + j]).sum();
            let res = pred - y[r * M + j];
            for i in 0..D {
                g[i * M + j] += 2.0 / (n * M as f64) * x[r * D + i] * res;
            }
        }
    }
    g
}

fn t(v: &[f64], shape: Vec<usize>) -> HostTensor {
    HostTensor::f32(shape, v.iter().map(|&a| a as f32).collect())
}

fn s(v: f64) -> HostTensor {
    HostTensor::f32(vec![], vec![v as f32])
}

fn data(n: usize, seed: u64) -> Vec<f64> {
    Rng(seed).vec(n, 1.0)
}

fn close(a: &[f64], b: &[f64], what: &str) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * y.abs().max(0.1),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

#[test]
fn accumulating_micro_batches_equals_one_big_batch() {
    let acc = graph(K as u32);
    let big = graph(1);
    let names: Vec<&str> = acc
        .inputs()
        .iter()
        .map(|&i| acc.node(i).name.as_str())
        .collect();
    assert_eq!(names, ["grad", "lr", "step", "apply"]);
    let w0 = data(D * M, 3);
    let zeros = vec![0.0; D * M];
    let init = |with_acc: bool| {
        let mut w = Weights::new();
        w.insert("w".into(), t(&w0, vec![D, M]));
        w.insert("w.velocity".into(), t(&zeros, vec![D, M]));
        if with_acc {
            w.insert("w.grad_acc".into(), t(&zeros, vec![D, M]));
        }
        w
    };
    let (mut wa, mut wb) = (init(true), init(false));
    let opts = RunOptions::training(0, 0);
    for step in 1..=3u64 {
        let x = data(BATCH * D, 100 + step);
        let y = data(BATCH * M, 200 + step);
        let lr = 0.1 / step as f64;
        let w_now = wb["w"].to_f64();
        let before = wa.clone();
        let per = BATCH / K;
        let mut sum = vec![0.0; D * M];
        for k in 0..K {
            let gk = grad(&x, &y, &wa["w"].to_f64(), k * per..(k + 1) * per);
            let apply = if k + 1 == K { 1.0 } else { 0.0 };
            let ins = [t(&gk, vec![D, M]), s(lr), s(step as f64), s(apply)];
            train_step(&acc, &ins, &mut wa, opts).unwrap();
            if apply == 0.0 {
                // Parameters and optimizer state wait; the accumulator holds the sum.
                assert_eq!(wa["w"], before["w"]);
                assert_eq!(wa["w.velocity"], before["w.velocity"]);
                sum.iter_mut().zip(&gk).for_each(|(a, b)| *a += b);
                close(&wa["w.grad_acc"].to_f64(), &sum, "accumulator");
            }
        }
        assert!(
            wa["w.grad_acc"].to_f64().iter().all(|&v| v == 0.0),
            "cleared"
        );
        let g = grad(&x, &y, &w_now, 0..BATCH);
        let ins = [t(&g, vec![D, M]), s(lr), s(step as f64)];
        train_step(&big, &ins, &mut wb, opts).unwrap();
        close(
            &wa["w"].to_f64(),
            &wb["w"].to_f64(),
            &format!("w, step {step}"),
        );
        close(
            &wa["w.velocity"].to_f64(),
            &wb["w.velocity"].to_f64(),
            &format!("velocity, step {step}"),
        );
    }
    // The model moved: the comparison above is not between two unchanged weights.
    assert!(wb["w"].max_abs_diff(&t(&w0, vec![D, M])).unwrap().0 > 1e-3);
}

#[test]
fn zero_accumulation_is_refused() {
    let mut g = Graph::new("acc");
    let grad = g.add_input("grad", TensorType::f32(&[2]));
    let mut cfg = OptimConfig::new("sgd".parse().unwrap());
    cfg.accumulate = 0;
    let err = insert_optimizer(&mut g, &[("w".into(), grad)], &cfg).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid training configuration: accumulate = 0 is out of range"
    );
}
