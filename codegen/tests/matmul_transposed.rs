//! Matrix products with transposed operands through the LLVM backend against the
//! interpreter, on random non-zero inputs at odd sizes: the blocked GEMM reads a transposed
//! A or B in place through its packing (no transposed copy), batched or not, with the
//! weight operand packed once (a parameter) or per call (an input), and the narrow products
//! that fall back to a transposed copy. Bound: max |a − b| / max |b| ≤ 1e-4
//! (`common::TOL`; the GEMM sums in another order than the interpreter's loops).

mod common;

use common::random_graph::param;
use common::{rand_tensor as rand, rel_err, TOL};
use oar_codegen::jit::JitModel;
use oar_ir::op::MatMulAttrs;
use oar_ir::{Graph, Op, TensorType, ValueRef};
use oar_runtime::{run, Weights};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// The stored dims of an `rows × cols` operand with `batch` dims, transposed or not.
fn stored(batch: &[u64], rows: u64, cols: u64, t: bool) -> Vec<u64> {
    let mut d = batch.to_vec();
    d.extend(if t { [cols, rows] } else { [rows, cols] });
    d
}

/// `op(a) · op(b)` for `op(a)` m × k with batch dims `ba`, `op(b)` k × n with `bb`; `b` a
/// parameter (packed once by the compiled model) when `b_param`, else an input.
#[allow(clippy::too_many_arguments)]
fn compare(
    [m, k, n]: [u64; 3],
    ba: &[u64],
    bb: &[u64],
    ta: bool,
    tb: bool,
    a_param: bool,
    seed: u64,
) -> Result<f64, String> {
    let (ad, bd) = (stored(ba, m, k, ta), stored(bb, k, n, tb));
    let (av, bv) = (rand(&ad, seed), rand(&bd, seed + 1));
    let mut g = Graph::new("g");
    let mut w = Weights::new();
    let mut ins = Vec::new();
    let a = if a_param {
        w.insert("a".to_string(), av);
        param(&mut g, "a", &ad)
    } else {
        ins.push(av);
        g.add_input("a", TensorType::f32(&ad))
    };
    ins.push(bv);
    let b = g.add_input("b", TensorType::f32(&bd));
    let mm = MatMulAttrs {
        transpose_a: ta,
        transpose_b: tb,
    };
    let y: ValueRef = g
        .add_node(Op::MatMul(mm), vec![a, b], None)
        .map_err(|e| e.to_string())?
        .into();
    g.set_outputs(vec![y]);
    let want = run(&g, &ins, &w).map_err(|e| e.to_string())?;
    let mut model = JitModel::new(&g, &BTreeMap::new(), &w, 2).map_err(|e| e.to_string())?;
    let got = model.run(&ins).map_err(|e| e.to_string())?;
    Ok(rel_err(&got[0], &want[0]))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Unbatched, both transposes, sizes that leave partial micro-tiles and (k > 256) more
    /// than one depth panel.
    #[test]
    fn transposed_gemm_matches(m in 6u64..=70, k in 1u64..=300, n in 16u64..=75,
                               ta: bool, tb: bool, a_param: bool, seed in 0u64..1000) {
        let err = compare([m, k, n], &[], &[], ta, tb, a_param, seed);
        prop_assert!(err.as_ref().is_ok_and(|e| *e <= TOL), "{:?} m {} k {} n {}", err, m, k, n);
    }

    /// Batched (attention's `Q·Kᵀ` and `P·V` gradients), a batched A times a shared B, and
    /// a shared A times a batched B.
    #[test]
    fn batched_transposed_gemm_matches(m in 6u64..=40, k in 1u64..=70, n in 16u64..=40,
                                       batch in 1u64..=3, shared in 0u8..=2,
                                       ta: bool, tb: bool, seed in 0u64..1000) {
        let bs = [2, batch];
        let (ba, bb): (&[u64], &[u64]) = match shared {
            0 => (&bs, &bs),
            1 => (&bs, &[]),
            _ => (&[], &bs),
        };
        let err = compare([m, k, n], ba, bb, ta, tb, false, seed);
        prop_assert!(err.as_ref().is_ok_and(|e| *e <= TOL), "{:?} m {} k {} n {}", err, m, k, n);
    }

    /// Products too narrow for the blocked GEMM (fewer rows than a micro-tile, fewer
    /// columns than a panel, a single column): the GEMV kernels on a transposed copy.
    #[test]
    fn narrow_transposed_products_match(m in 1u64..=8, k in 1u64..=40, n in 1u64..=20,
                                        ta: bool, tb: bool, seed in 0u64..1000) {
        let err = compare([m, k, n], &[], &[], ta, tb, false, seed);
        prop_assert!(err.as_ref().is_ok_and(|e| *e <= TOL), "{:?} m {} k {} n {}", err, m, k, n);
    }
}

/// ERNIE's tied output head and its gradients at a reduced vocabulary: logits `H·Eᵀ`,
/// `dH = G·E`, `dE = Gᵀ·H` with H `[300, 128]`, E `[1000, 128]`.
#[test]
fn tied_head_products_match() {
    for (dims, ta, tb) in [
        ([300, 128, 1000], false, true),
        ([1000, 300, 128], true, false),
        ([128, 300, 1000], true, false),
        ([300, 1000, 128], false, true),
    ] {
        let err = compare(dims, &[], &[], ta, tb, false, 7).expect("runs");
        assert!(err <= TOL, "{dims:?} ta {ta} tb {tb}: {err:.2e}");
    }
}
