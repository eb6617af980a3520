//! ArcMargin (ArcFace; Deng et al., 2019), the metric-learning head PP-ShiTu trains its
//! extractor with, as PaddleClas's `ArcMargin` + `CELoss`: embeddings and class weights are
//! L2-normalised, `cos θ = f̂ · Ŵ`; the labelled class gets the additive angular margin,
//! `cos(θ + m)` (with PaddleClas's fallback `cos θ − sin(π − m)·m` once `θ + m` passes π),
//! every logit is scaled by `s`, then softmax cross-entropy. The class weights are a
//! parameter of the step (`head.arcmargin.weight`, `[D, C]`, Xavier-normal), not of the
//! inference model, which ends at the embedding.

use super::emit::Emit;
use super::loss::softmax_cross_entropy;
use super::TrainError;
use oar_ir::dist::ReduceOp;
use oar_ir::op::{BinaryOp, Init, Literal, MatMulAttrs, Op, ParamAttrs};
use oar_ir::{DType, Dim, TensorType, ValueRef};

/// The class-weight parameter's name.
pub const WEIGHT: &str = "head.arcmargin.weight";

/// Appends the ArcMargin loss of `features` `f32[N, D]` against `labels` `i64[N]` over
/// `classes` classes; returns `(loss, s·cos θ)` — the second, the margin-free logits, is what
/// the step reports as its logits (accuracy of the cosine classifier).
pub fn arc_margin(
    e: &mut Emit,
    features: ValueRef,
    labels: ValueRef,
    classes: u64,
    margin: f64,
    scale: f64,
) -> Result<(ValueRef, ValueRef), TrainError> {
    let ft = e.ty(features)?;
    let dims = ft.shape.as_static().unwrap_or_default();
    let (n, d) = match (ft.dtype, dims.as_slice()) {
        (DType::F32, &[n, d]) => (n, d),
        _ => {
            return Err(TrainError::LossOperand {
                what: "embedding".into(),
                want: "f32[N, D] (the model's first output)".into(),
                found: ft.to_string(),
            })
        }
    };
    let yt = e.ty(labels)?;
    if !yt.dtype.is_int() || yt.shape.as_static() != Some(vec![n]) {
        return Err(TrainError::LossOperand {
            what: "labels".into(),
            want: format!("class ids i64[{n}]"),
            found: yt.to_string(),
        });
    }
    if classes < 2 || !(0.0..std::f64::consts::FRAC_PI_2).contains(&margin) || scale <= 0.0 {
        return Err(TrainError::Config {
            message: format!(
                "ArcMargin needs ≥ 2 classes, 0 ≤ margin < π/2 and a positive scale; got \
                 {classes} classes, margin {margin}, scale {scale}"
            ),
        });
    }
    let wt = TensorType::new(DType::F32, vec![Dim::Static(d), Dim::Static(classes)]);
    let std = (2.0 / (d + classes) as f64).sqrt();
    let w = e.graph_mut().add_node_typed(
        Op::Param(ParamAttrs {
            name: WEIGHT.into(),
            init: Some(Init::Normal { mean: 0.0, std }),
        }),
        vec![],
        vec![wt],
        Some(WEIGHT.into()),
    )?;
    let f_hat = l2_normalise(e, features, 1)?;
    let w_hat = l2_normalise(e, w.into(), 0)?;
    let cos = e.op(
        Op::MatMul(MatMulAttrs {
            transpose_a: false,
            transpose_b: false,
        }),
        vec![f_hat, w_hat],
        "cos",
    )?;
    // sin θ = sqrt(1 − cos² + 1e-6), PaddleClas's guard against sqrt(0)'s gradient.
    let cos2 = e.mul(cos, cos)?;
    let sin = e.rsub(1.0 + 1e-6, cos2)?;
    let sin = e.sqrt(sin)?;
    let a = e.scale(cos, margin.cos())?;
    let b = e.scale(sin, margin.sin())?;
    let phi = e.sub(a, b)?;
    let th = e.scalar((std::f64::consts::PI - margin).cos())?;
    let past = e.binary(BinaryOp::Greater, cos, th)?;
    let fallback = e.offset(cos, -(std::f64::consts::PI - margin).sin() * margin)?;
    let phi = e.select(past, phi, fallback)?;
    // One-hot of the labels: labels[:, None] == [0, 1, …, C−1].
    let ids = e.graph_mut().add_node_typed(
        Op::Constant(Literal::Ints((0..classes as i64).collect())),
        vec![],
        vec![TensorType::new(yt.dtype, vec![Dim::Static(classes)])],
        Some("loss.arcmargin.class_ids".into()),
    )?;
    let col = e.op(Op::Unsqueeze { axes: vec![1] }, vec![labels], "labels")?;
    let onehot = e.binary(BinaryOp::Equal, col, ids.into())?;
    let target = e.select(onehot, phi, cos)?;
    let logits = e.scale(target, scale)?;
    let loss = softmax_cross_entropy(e, logits, labels, 0.0)?;
    let plain = e.scale(cos, scale)?;
    Ok((loss, plain))
}

/// `v / ‖v‖` along `axis` (kept), the norm floored at 1e-12.
fn l2_normalise(e: &mut Emit, v: ValueRef, axis: i64) -> Result<ValueRef, TrainError> {
    let sq = e.mul(v, v)?;
    let ss = e.reduce(ReduceOp::Sum, sq, vec![axis], true)?;
    let norm = e.sqrt(ss)?;
    let eps = e.scalar(1e-12)?;
    let norm = e.max(norm, eps)?;
    e.div(v, norm)
}

#[cfg(test)]
mod tests {
    use crate::training::{append_loss, build_train_step, LossKind, Optimizer, TrainConfig};
    use oar_frontend::nn::LinearConfig;
    use oar_frontend::ModelBuilder;
    use oar_runtime::{init::init_weights, HostTensor};

    fn cfg() -> TrainConfig {
        let mut c = TrainConfig::new(Optimizer::Sgd {
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        });
        c.loss = LossKind::ArcMargin {
            classes: 3,
            margin: 0.2,
            scale: 30.0,
        };
        c
    }

    /// The loss the graph computes equals PaddleClas's formula written out in f64 on random
    /// embeddings and class weights; and the step differentiates.
    #[test]
    fn arc_margin_matches_the_formula() {
        let b = ModelBuilder::new("emb");
        let x = b.input("x", "f32[4,6]");
        let y = LinearConfig::new(6, 5).init(&b, "fc").forward(&x);
        let model = b.finish(&[&y]).unwrap();
        let lg = append_loss(&model, &cfg()).unwrap();
        let mut g = lg.graph.clone();
        g.set_outputs(vec![lg.loss, lg.logits]);
        let w = init_weights(&g, 3).unwrap();
        let xs: Vec<f32> = (0..24)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let labels = vec![0i64, 2, 1, 2];
        let out = oar_runtime::run(
            &g,
            &[
                HostTensor::f32(vec![4, 6], xs.clone()),
                HostTensor::i64(vec![4], labels.clone()),
            ],
            &w,
        )
        .unwrap();
        let f = |name: &str| -> Vec<f64> {
            w[name]
                .as_f32()
                .unwrap()
                .iter()
                .map(|&v| v as f64)
                .collect()
        };
        let (fw, fb, hw) = (f("fc.weight"), f("fc.bias"), f(super::WEIGHT));
        let (m, s) = (0.2f64, 30.0f64);
        let mut want = 0.0;
        for (r, &label) in labels.iter().enumerate() {
            let e: Vec<f64> = (0..5)
                .map(|j| {
                    fb[j]
                        + (0..6)
                            .map(|k| xs[r * 6 + k] as f64 * fw[k * 5 + j])
                            .sum::<f64>()
                })
                .collect();
            let en = e.iter().map(|v| v * v).sum::<f64>().sqrt();
            let logits: Vec<f64> = (0..3)
                .map(|c| {
                    let wn = (0..5).map(|k| hw[k * 3 + c].powi(2)).sum::<f64>().sqrt();
                    let cos = (0..5).map(|k| e[k] / en * hw[k * 3 + c] / wn).sum::<f64>();
                    let t = if c as i64 == label {
                        let phi = cos * m.cos() - (1.0 - cos * cos + 1e-6).sqrt() * m.sin();
                        if cos > (std::f64::consts::PI - m).cos() {
                            phi
                        } else {
                            cos - (std::f64::consts::PI - m).sin() * m
                        }
                    } else {
                        cos
                    };
                    s * t
                })
                .collect();
            let mx = logits.iter().cloned().fold(f64::MIN, f64::max);
            let lse = mx + logits.iter().map(|l| (l - mx).exp()).sum::<f64>().ln();
            want += (lse - logits[label as usize]) / 4.0;
        }
        let got = out[0].as_f32().unwrap()[0] as f64;
        assert!(
            (got - want).abs() <= 1e-4 * want.abs().max(1.0),
            "{got} vs {want}"
        );
        assert_eq!(out[1].shape, [4, 3]);
        let step = build_train_step(&model, &cfg()).unwrap();
        assert!(step.unused_params.is_empty(), "{:?}", step.unused_params);
    }

    /// The gradients of PP-ShiTu's training path — an FC, the neck's training-form batch
    /// norm over `[N, E, 1, 1]`, then ArcMargin — match finite differences (f64), so slow
    /// ArcMargin training on the digits is not a wrong gradient (docs/shitu.md).
    #[test]
    fn arc_margin_gradients_match_finite_differences() {
        use oar_frontend::nn::BatchNorm2dConfig;
        let b = ModelBuilder::new("emb");
        let x = b.input("x", "f32[6,4]");
        let fc = LinearConfig::new(4, 5).init(&b, "fc");
        let bn = BatchNorm2dConfig::new(5).init(&b, "bn");
        let y = bn.forward(&fc.forward(&x).unsqueeze(&[2, 3])).flatten(1);
        let model = b.finish(&[&y]).unwrap();
        let lg = append_loss(&model, &cfg()).unwrap();
        let mut g = lg.graph.clone();
        g.set_outputs(vec![lg.loss]);
        crate::training::batch_norm_training_form(&mut g, 0.9).unwrap();
        g.state.clear();
        let w = init_weights(&g, 5).unwrap();
        let xs: Vec<f32> = (0..24)
            .map(|i| ((i * 29 % 13) as f32 - 6.0) / 4.0)
            .collect();
        let inputs = [
            HostTensor::f32(vec![6, 4], xs),
            HostTensor::i64(vec![6], vec![0, 1, 2, 2, 1, 0]),
        ];
        let r = crate::autodiff::check::check_gradients(
            &g,
            &inputs,
            &w,
            &crate::autodiff::check::GradCheck::default(),
        );
        let compared = r.unwrap_or_else(|e| panic!("{e}"));
        assert!(!compared.is_empty());
    }

    #[test]
    fn arc_margin_refuses_bad_operands() {
        let b = ModelBuilder::new("emb");
        let x = b.input("x", "f32[4,2,3]");
        let model = b.finish(&[&x.relu()]).unwrap();
        let e = append_loss(&model, &cfg()).unwrap_err().to_string();
        assert!(e.contains("f32[N, D]"), "{e}");
        let b = ModelBuilder::new("emb");
        let x = b.input("x", "f32[4,3]");
        let model = b.finish(&[&x.relu()]).unwrap();
        let mut c = cfg();
        c.loss = LossKind::ArcMargin {
            classes: 1,
            margin: 0.2,
            scale: 30.0,
        };
        let e = append_loss(&model, &c).unwrap_err().to_string();
        assert!(e.contains("≥ 2 classes"), "{e}");
    }
}
