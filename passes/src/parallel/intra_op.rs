//! Intra-op sharding as a shortest path: the ops of one transformer layer form a chain, the
//! state between two ops is how the activation is laid out over the tensor-parallel group,
//! and dynamic programming picks each op's strategy (replicated, column- or row-split weights,
//! heads, or sequence sharding) plus the collectives between them for the least time. With
//! the usual costs it rediscovers Megatron's column → row pattern, and with sequence
//! parallelism allowed, Korthikanti et al.'s sequence-sharded norms.

use super::efficiency::KernelRates;
use super::spec::LayerSpec;
use crate::comm_cost::{all_reduce, ring_gather};
use oar_ir::cluster::Link;
use oar_ir::dist::{Placement, ReduceOp};
use serde::Serialize;

/// How an activation `[tokens, features]` is laid out over the tensor-parallel group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Layout {
    Replicated,
    /// Split along features (or attention heads).
    Features,
    /// Split along tokens (sequence parallelism).
    Tokens,
    /// Each rank holds a partial sum.
    Partial,
}

impl Layout {
    /// The one translation into the IR's vocabulary: the placement on the tensor-parallel
    /// mesh axis of a tensor whose token (row) dim is `tokens` and feature dim `features`.
    pub fn placement(self, tokens: usize, features: usize) -> Placement {
        match self {
            Layout::Replicated => Placement::Replicate,
            Layout::Features => Placement::Shard(features),
            Layout::Tokens => Placement::Shard(tokens),
            Layout::Partial => Placement::Partial(ReduceOp::Sum),
        }
    }
}

/// One op's choice in a layer: the layout it consumes and the one it produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OpLayout {
    /// The chain op: `norm1`, `qkv`, `attention`, `out`, `norm2`, `ffn1`, `gelu`, `ffn2`.
    pub op: &'static str,
    /// `replicated`, `column`, `row`, `heads`, `tokens`, `sharded`.
    pub strategy: &'static str,
    pub input: Layout,
    pub output: Layout,
}

impl OpLayout {
    /// Placement of a linear op's weight `[in, out]` on the tensor axis: `x·W` with `x`
    /// `[tokens, in]` in the input layout and the result `[tokens, out]` in the output
    /// layout. The weight's row dim is the contraction (an input feature), its column dim
    /// an output feature; token layouts leave it whole.
    pub fn weight(&self) -> Placement {
        match (self.input, self.output) {
            (Layout::Features, _) => Layout::Features.placement(1, 0),
            (_, Layout::Features) => Layout::Features.placement(0, 1),
            _ => Placement::Replicate,
        }
    }

    /// Placement of a linear op's bias `[out]`: split with the output features, else whole
    /// (a row-split product is reduced before its bias is added).
    pub fn bias(&self) -> Placement {
        match self.output {
            Layout::Features => Layout::Features.placement(0, 0),
            _ => Placement::Replicate,
        }
    }
}

const LAYOUTS: [Layout; 4] = [
    Layout::Replicated,
    Layout::Features,
    Layout::Tokens,
    Layout::Partial,
];

/// One op of the chain.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ChainOp {
    /// LayerNorm (or residual add + LayerNorm): needs whole features.
    Norm,
    /// `[tokens, k] × [k, n]` with trainable weights.
    Linear { k: u64, n: u64 },
    /// Attention scores, softmax, context over all tokens; splits by heads.
    Attention { head_dim: u64 },
    /// Elementwise activation.
    Pointwise,
}

/// The chosen strategy for one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerStrategy {
    /// Forward seconds of the matmuls and attention per micro-batch (backward is twice this).
    pub forward_compute: f64,
    /// Forward seconds of norms and activations (memory-bound), included in the choice.
    pub forward_elementwise: f64,
    /// Forward communication seconds per micro-batch (backward moves the same volume).
    pub forward_comm: f64,
    /// Strategy per op, in order: e.g. `qkv: column`.
    pub ops: Vec<String>,
    /// The same choices with their layouts, for writing them onto a graph (shared: every
    /// evaluation that uses this strategy keeps a handle).
    #[serde(skip)]
    pub layouts: std::sync::Arc<[OpLayout]>,
}

/// What one op costs under one input layout: its output layout, seconds, and a label.
/// `width` is the op's input feature width.
fn op_cost(
    op: ChainOp,
    input: Layout,
    t: f64,
    tokens: f64,
    width: f64,
    h: f64,
    rates: &Rates,
) -> Vec<(Layout, f64, &'static str)> {
    use Layout::*;
    let mut v = Vec::new();
    match op {
        ChainOp::Norm | ChainOp::Pointwise => {
            let bytes = 4.0 * tokens * width; // read and write bf16
            let ok = match op {
                ChainOp::Norm => matches!(input, Replicated | Tokens),
                _ => input != Partial,
            };
            if ok {
                let (share, label) = if input == Replicated {
                    (1.0, "replicated")
                } else {
                    (t, "sharded")
                };
                v.push((input, bytes / rates.bandwidth / share, label));
            }
        }
        ChainOp::Attention { head_dim } => {
            // Scores and context: 4·tokens·seq·h FLOPs, at the attention core's efficiency
            // (heads split across ranks leave each head's shape unchanged).
            let flops = 4.0 * tokens * rates.seq * h;
            let secs = rates
                .kernels
                .attention_seconds(flops, rates.seq as u64, head_dim);
            match input {
                Features => v.push((Features, secs / t, "heads")),
                Replicated => v.push((Replicated, secs, "replicated")),
                _ => {}
            }
        }
        ChainOp::Linear { k, n } => {
            // Each strategy runs a different GEMM shape per rank, priced at its own efficiency.
            let (m, tu) = (tokens as u64, (t as u64).max(1));
            let gemm = |m: u64, n: u64, k: u64| rates.kernels.gemm_seconds(m, n, k);
            match input {
                Replicated => {
                    v.push((Replicated, gemm(m, n, k), "replicated"));
                    v.push((Features, gemm(m, n / tu, k), "column"));
                }
                Features => v.push((Partial, gemm(m, n, k / tu), "row")),
                // Tokens split with whole weights: the weight gradients need an extra
                // all-reduce, charged per micro-batch.
                Tokens => v.push((
                    Tokens,
                    gemm(m / tu, n, k) + rates.weight_sync(k * n),
                    "tokens",
                )),
                Partial => {}
            }
        }
    }
    v
}

/// Launch overhead of one collective call beyond its α·log/linear latency terms.
const COLLECTIVE_LAUNCH_S: f64 = 5e-6;

/// Seconds to move an activation of `bytes` from one layout to another.
fn reshard(
    from: Layout,
    to: Layout,
    bytes: f64,
    t: u64,
    link: &Link,
    eff: f64,
    seq_par: bool,
) -> Option<f64> {
    use Layout::*;
    if to == Tokens && !seq_par {
        return None;
    }
    if from == to {
        return Some(0.0);
    }
    let launch = if from == Replicated {
        0.0
    } else {
        COLLECTIVE_LAUNCH_S
    };
    Some(
        launch
            + match (from, to) {
                (_, Partial) => return None,
                (Replicated, _) => 0.0,
                (Partial, Replicated) => all_reduce(t, bytes, link, eff),
                // Reduce-scatter.
                (Partial, Features | Tokens) => ring_gather(t, bytes, link, eff),
                (Features | Tokens, Replicated) => ring_gather(t, bytes, link, eff),
                // All-to-all: each rank keeps 1/t and exchanges (t−1)/t of its 1/t share.
                (Features, Tokens) | (Tokens, Features) => {
                    bytes / (link.bandwidth() * eff) * (t as f64 - 1.0) / (t as f64 * t as f64)
                }
                (Features, Features) | (Tokens, Tokens) => 0.0,
            },
    )
}

/// Throughput figures the chain costs need.
pub struct Rates<'a> {
    /// Achievable FLOP/s by kernel shape.
    pub kernels: &'a KernelRates,
    /// Memory bandwidth, bytes/s.
    pub bandwidth: f64,
    /// Sequence length (attention's extra factor).
    pub seq: f64,
    /// Seconds to all-reduce one weight element's gradient per micro-batch.
    pub weight_sync_per_element: f64,
}

impl Rates<'_> {
    fn weight_sync(&self, elements: u64) -> f64 {
        self.weight_sync_per_element * elements as f64
    }
}

/// The cheapest strategy for one layer over a tensor group of `t` on `link`.
///
/// The residual stream has one layout through the layer: it enters in it, each norm (the
/// residual add with its LayerNorm) consumes it, and the layer leaves in it, so the next
/// layer can start where this one ended. Replicated is plain tensor parallelism; token-
/// sharded (with sequence parallelism) is Megatron-SP. A norm in another layout would
/// leave the residual branch in the stream's layout and need a reshard the chain cannot
/// see, so the chain is solved once per stream layout and the cheaper one wins.
pub fn plan_layer(
    l: &LayerSpec,
    t: u64,
    tokens: u64,
    rates: &Rates,
    link: &Link,
    eff: f64,
    seq_par: bool,
) -> LayerStrategy {
    let (h, f) = (l.hidden, l.ffn);
    // (name, op, output feature width)
    let chain = [
        ("norm1", ChainOp::Norm, h),
        ("qkv", ChainOp::Linear { k: h, n: 3 * h }, 3 * h),
        (
            "attention",
            ChainOp::Attention {
                head_dim: h / l.heads.max(1),
            },
            h,
        ),
        ("out", ChainOp::Linear { k: h, n: h }, h),
        ("norm2", ChainOp::Norm, h),
        ("ffn1", ChainOp::Linear { k: h, n: f }, f),
        ("gelu", ChainOp::Pointwise, f),
        ("ffn2", ChainOp::Linear { k: f, n: h }, h),
    ];
    let cx = ChainCx {
        h,
        t,
        tokens,
        rates,
        link,
        eff,
        seq_par,
    };
    // The residual stream is replicated, or token-sharded with sequence parallelism.
    let streams: &[Layout] = if seq_par && t > 1 {
        &[Layout::Replicated, Layout::Tokens]
    } else {
        &[Layout::Replicated]
    };
    let mut out: Best = None;
    for &stream in streams {
        let Some(b) = plan_chain(&chain, stream, &cx) else {
            continue;
        };
        if out
            .as_ref()
            .is_none_or(|o| b.0 + b.1 + b.2 < o.0 + o.1 + o.2)
        {
            out = Some(b);
        }
    }
    let (forward_compute, forward_elementwise, forward_comm, layouts) =
        out.unwrap_or((0.0, 0.0, 0.0, vec![]));
    LayerStrategy {
        forward_compute,
        forward_elementwise,
        forward_comm,
        ops: layouts
            .iter()
            .map(|l| format!("{}: {}", l.op, l.strategy))
            .collect(),
        layouts: layouts.into(),
    }
}

/// (contraction seconds, elementwise seconds, communication seconds, choices)
type Best = Option<(f64, f64, f64, Vec<OpLayout>)>;

/// What every step of a layer's chain is priced with.
struct ChainCx<'a> {
    h: u64,
    t: u64,
    tokens: u64,
    rates: &'a Rates<'a>,
    link: &'a Link,
    eff: f64,
    seq_par: bool,
}

/// The cheapest path through `chain` (name, op, output feature width) with the residual
/// stream in `stream`: it enters and leaves so, and norms consume it.
fn plan_chain(chain: &[(&'static str, ChainOp, u64)], stream: Layout, cx: &ChainCx) -> Best {
    let &ChainCx {
        h,
        t,
        tokens,
        rates,
        link,
        eff,
        seq_par,
    } = cx;
    let act_bytes = |features: u64| 2.0 * tokens as f64 * features as f64;
    let mut best: Vec<Best> = LAYOUTS
        .iter()
        .map(|&l| (l == stream).then(|| (0.0, 0.0, 0.0, vec![])))
        .collect();
    let mut in_width = h;
    for &(name, op, out_width) in chain {
        let mut next: Vec<Best> = vec![None; LAYOUTS.len()];
        for (li, cur) in best.iter().enumerate() {
            let Some((comp, elem, comm, picks)) = cur else {
                continue;
            };
            for &want in &LAYOUTS {
                if (t == 1 && want != Layout::Replicated) || (op == ChainOp::Norm && want != stream)
                {
                    continue;
                }
                let Some(move_s) = reshard(
                    LAYOUTS[li],
                    want,
                    act_bytes(in_width),
                    t,
                    link,
                    eff,
                    seq_par,
                ) else {
                    continue;
                };
                for (out, secs, label) in op_cost(
                    op,
                    want,
                    t as f64,
                    tokens as f64,
                    in_width as f64,
                    h as f64,
                    rates,
                ) {
                    let oi = LAYOUTS.iter().position(|&x| x == out).unwrap_or(0);
                    let pointwise = matches!(op, ChainOp::Norm | ChainOp::Pointwise);
                    let (c2, e2) = if pointwise {
                        (*comp, elem + secs)
                    } else {
                        (comp + secs, *elem)
                    };
                    let m2 = comm + move_s;
                    if next[oi]
                        .as_ref()
                        .is_none_or(|b| c2 + e2 + m2 < b.0 + b.1 + b.2)
                    {
                        let mut p = picks.clone();
                        p.push(OpLayout {
                            op: name,
                            strategy: label,
                            input: want,
                            output: out,
                        });
                        next[oi] = Some((c2, e2, m2, p));
                    }
                }
            }
        }
        best = next;
        in_width = out_width;
    }
    // The residual stream leaves as it entered.
    let mut out: Best = None;
    for (li, cur) in best.iter().enumerate() {
        let Some((comp, elem, comm, picks)) = cur else {
            continue;
        };
        let Some(m) = reshard(LAYOUTS[li], stream, act_bytes(h), t, link, eff, seq_par) else {
            continue;
        };
        if out
            .as_ref()
            .is_none_or(|b| comp + elem + comm + m < b.0 + b.1 + b.2)
        {
            out = Some((*comp, *elem, comm + m, picks.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(gbs: f64) -> Link {
        Link {
            kind: "test".into(),
            bandwidth_gbs: gbs,
            latency_us: 3.0,
        }
    }

    fn rates() -> Rates<'static> {
        static KERNELS: std::sync::OnceLock<KernelRates> = std::sync::OnceLock::new();
        Rates {
            kernels: KERNELS.get_or_init(|| KernelRates::flat(200e12, 1.0)),
            bandwidth: 2e12,
            seq: 2048.0,
            weight_sync_per_element: 1e-11,
        }
    }

    #[test]
    fn rediscovers_megatron_column_then_row() {
        let l = LayerSpec {
            hidden: 12288,
            heads: 96,
            ffn: 49152,
        };
        let s = plan_layer(&l, 8, 2048, &rates(), &link(300.0), 0.8, false);
        // Two all-reduces forward, each with its launch.
        let ops: Vec<&str> = s.ops.iter().map(String::as_str).collect();
        assert_eq!(
            ops,
            [
                "norm1: replicated",
                "qkv: column",
                "attention: heads",
                "out: row",
                "norm2: replicated",
                "ffn1: column",
                "gelu: sharded",
                "ffn2: row"
            ]
        );
        // Two all-reduces of the layer's activations forward.
        let one = all_reduce(8, 2.0 * 2048.0 * 12288.0, &link(300.0), 0.8) + COLLECTIVE_LAUNCH_S;
        assert!(
            (s.forward_comm - 2.0 * one).abs() / s.forward_comm < 1e-9,
            "{} vs {}",
            s.forward_comm,
            2.0 * one
        );
    }

    #[test]
    fn sequence_parallel_shards_the_norms() {
        let l = LayerSpec {
            hidden: 4096,
            heads: 32,
            ffn: 16384,
        };
        let s = plan_layer(&l, 4, 4096, &rates(), &link(300.0), 0.8, true);
        // Megatron-SP: both norms on the token-sharded residual stream, which the layer
        // leaves as it entered (gathers before the column-parallel blocks, reduce-scatters
        // after the row-parallel ones).
        let ops: Vec<&str> = s.ops.iter().map(String::as_str).collect();
        assert_eq!(
            ops,
            [
                "norm1: sharded",
                "qkv: column",
                "attention: heads",
                "out: row",
                "norm2: sharded",
                "ffn1: column",
                "gelu: sharded",
                "ffn2: row"
            ]
        );
        let norms: Vec<Layout> = s
            .layouts
            .iter()
            .filter(|c| c.op.starts_with("norm"))
            .map(|c| c.input)
            .collect();
        assert_eq!(norms, [Layout::Tokens, Layout::Tokens]);
        // Four collectives of the layer's activations, each moving (t−1)/t of them.
        let one = ring_gather(4, 2.0 * 4096.0 * 4096.0, &link(300.0), 0.8) + COLLECTIVE_LAUNCH_S;
        assert!(
            (s.forward_comm - 4.0 * one).abs() / s.forward_comm < 1e-9,
            "{} vs {}",
            s.forward_comm,
            4.0 * one
        );
    }

    #[test]
    fn one_device_replicates_everything() {
        let l = LayerSpec {
            hidden: 256,
            heads: 4,
            ffn: 1024,
        };
        let s = plan_layer(&l, 1, 512, &rates(), &link(300.0), 0.8, false);
        assert_eq!(s.forward_comm, 0.0);
        assert!(
            s.ops.iter().all(|o| o.ends_with("replicated")),
            "{:?}",
            s.ops
        );
    }
}
