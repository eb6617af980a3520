//! The per-op facts on `Op` agree with each other and with `family()`.

use oar_ir::op::{all_op_names, op_from_attrs, BinaryOp, CommGroup, LoadTime, Op};
use oar_ir::{DType, ExecMode, ReduceOp};

/// One op per text name that builds from default attributes, plus the ones that need some.
fn sample_ops() -> Vec<Op> {
    let mut ops: Vec<Op> = all_op_names()
        .into_iter()
        .filter_map(|n| op_from_attrs(n, vec![], &[]).ok())
        .collect();
    let group = CommGroup {
        mesh: "m".into(),
        axis: 0,
    };
    ops.extend([
        Op::Param(oar_ir::op::ParamAttrs {
            name: "w".into(),
            init: None,
        }),
        Op::Reshape { shape: vec![] },
        Op::Squeeze { axes: vec![0] },
        Op::Unsqueeze { axes: vec![0] },
        Op::AllReduce {
            op: ReduceOp::Sum,
            group: group.clone(),
        },
        Op::AllGather {
            axis: 0,
            group: group.clone(),
        },
        Op::Broadcast { root: 0, group },
        Op::Send { peer: 1 },
        Op::Recv { peer: 0 },
        Op::Fused { func: "f".into() },
    ]);
    ops
}

#[test]
fn facts_agree_with_families() {
    let ops = sample_ops();
    assert!(ops.len() >= 45, "only {} sample ops", ops.len());
    for op in &ops {
        let fam = op.family();
        let name = op.name();
        assert_eq!(op.is_elementwise(), fam == "elementwise", "{name}");
        assert_eq!(op.is_collective(), fam == "collective", "{name}");
        assert_eq!(
            op.has_effects(),
            fam == "collective" || fam == "p2p",
            "{name}"
        );
        if op.is_view() {
            assert_eq!(fam, "shape", "{name}");
        }
        if op.is_contraction() {
            assert!(fam == "contraction" || fam == "fused", "{name}");
        }
        if op.is_weight() {
            assert!(op.is_source(), "{name}");
        }
        assert_eq!(op.is_free(), op.is_source() || op.is_view(), "{name}");
        // Nothing with effects is computed ahead of run time.
        if op.has_effects() {
            assert_eq!(
                op.load_time(ExecMode::Inference),
                LoadTime::Unknown,
                "{name}"
            );
        }
    }
    let mut views: Vec<&str> = ops
        .iter()
        .filter(|o| o.is_view())
        .map(|o| o.name())
        .collect();
    views.sort();
    views.dedup();
    assert_eq!(views, ["flatten", "reshape", "squeeze", "unsqueeze"]);
}

#[test]
fn differentiability() {
    for b in BinaryOp::ALL {
        assert_eq!(Op::Binary(b).differentiable(), !b.is_comparison(), "{b:?}");
    }
    assert!(!Op::Shape.differentiable());
    assert!(!Op::Cast { to: DType::I64 }.differentiable());
    assert!(Op::Cast { to: DType::F16 }.differentiable());
    assert!(Op::Input.differentiable());
    assert!(!Op::Constant(oar_ir::op::Literal::Floats(vec![1.0])).differentiable());
}

#[test]
fn parameters_are_load_time_constants_only_at_inference() {
    let p = Op::Param(oar_ir::op::ParamAttrs {
        name: "w".into(),
        init: None,
    });
    assert_eq!(p.load_time(ExecMode::Inference), LoadTime::Known);
    assert_eq!(p.load_time(ExecMode::Training), LoadTime::Unknown);
    let d = Op::Dropout {
        p: 0.1,
        mode: oar_ir::op::DropoutMode::UpscaleInTrain,
        mask_of: None,
    };
    assert_eq!(d.load_time(ExecMode::Inference), LoadTime::IfInputsKnown);
    assert_eq!(d.load_time(ExecMode::Training), LoadTime::Unknown);
}
