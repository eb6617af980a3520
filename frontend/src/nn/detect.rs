//! Detector building blocks as compositions of existing ops: anchor-point box decoding and
//! the GFL distribution integral (PP-PicoDet / GFL heads), SPP, CoordConv's coordinate
//! channels and DropBlock (PP-YOLO). The post-processing op itself is `nms` in the IR
//! (see [`Tensor::nms`]).

use crate::builder::ModelBuilder;
use crate::tensor::Tensor;
use oar_ir::op::{DeformConvAttrs, NmsAttrs, Op, ReshapeDim};
use oar_ir::Dim;

/// The anchor points of a stack of feature maps, flattened level by level in row-major
/// order (PicoDet's order): centres `[A, 4]` as `(cx, cy, cx, cy)` and strides `[A, 1]`.
pub struct AnchorPoints {
    pub centers: Tensor,
    pub strides: Tensor,
    /// Number of points A.
    pub len: u64,
}

/// Anchor points of feature maps `(height, width, stride)`: cell `(i, j)` has its centre at
/// `((j + cell_offset)·stride, (i + cell_offset)·stride)` (PicoDet: `cell_offset = 0.5`
/// for the GFL head's points; 0 puts them on the cell corners).
pub fn anchor_points(
    b: &ModelBuilder,
    levels: &[(u64, u64, u64)],
    cell_offset: f64,
) -> AnchorPoints {
    let (mut centers, mut strides) = (Vec::new(), Vec::new());
    for &(h, w, s) in levels {
        for i in 0..h {
            for j in 0..w {
                let (cx, cy) = (
                    (j as f64 + cell_offset) * s as f64,
                    (i as f64 + cell_offset) * s as f64,
                );
                centers.extend([cx, cy, cx, cy]);
                strides.push(s as f64);
            }
        }
    }
    let len = strides.len() as u64;
    AnchorPoints {
        centers: b.constant(&[len, 4], centers),
        strides: b.constant(&[len, 1], strides),
        len,
    }
}

/// Distances `[N, A, 4]` (left, top, right, bottom, in units of the stride) from anchor
/// points to box corners: `x0 = cx − l·s`, `y0 = cy − t·s`, `x1 = cx + r·s`, `y1 = cy + b·s`.
#[track_caller]
pub fn distance_to_box(dist: &Tensor, points: &AnchorPoints) -> Tensor {
    let sign = dist.builder().constant(&[4], vec![-1.0, -1.0, 1.0, 1.0]);
    let scaled = dist.mul(&points.strides).mul(&sign);
    scaled.add(&points.centers)
}

/// GFL's distribution-to-distance integral: `reg [N, A, 4·(reg_max + 1)]` → `[N, A, 4]`,
/// each side the expectation `Σ_k softmax(reg)_k · k` over its `reg_max + 1` bins.
#[track_caller]
pub fn gfl_integral(reg: &Tensor, reg_max: u64) -> Tensor {
    let bins = reg_max + 1;
    let (n, a) = (reg.dim(0), reg.dim(1));
    let split = reg.reshape(vec![
        n.clone().into(),
        a.clone().into(),
        ReshapeDim::Dim(Dim::Static(4)),
        ReshapeDim::Dim(Dim::Static(bins)),
    ]);
    let project = reg
        .builder()
        .constant(&[bins, 1], (0..bins).map(|k| k as f64).collect());
    let d = split.softmax(-1).matmul(&project);
    d.reshape(vec![n.into(), a.into(), ReshapeDim::Dim(Dim::Static(4))])
}

/// Spatial pyramid pooling (PP-YOLO's SPP): `x` concatenated on channels with stride-1,
/// same-padded max pools of each (odd) size, e.g. `[5, 9, 13]`.
#[track_caller]
pub fn spp(x: &Tensor, sizes: &[u64]) -> Tensor {
    if let Some(&k) = sizes.iter().find(|&&k| k.is_multiple_of(2)) {
        return x.builder().fail(
            "spp",
            format!("pool size {k} is even: same padding needs odd sizes"),
        );
    }
    let pools: Vec<Tensor> = sizes.iter().map(|&k| x.max_pool(k, 1, k / 2)).collect();
    let mut all = vec![x];
    all.extend(pools.iter());
    x.builder().concat(&all, 1)
}

/// CoordConv's input (PaddleDetection `add_coord`): `x [N, C, H, W]` with two channels
/// appended, the column coordinate then the row coordinate, each spanning `[−1, 1]`
/// (`2·j/(W − 1) − 1`; a size-1 axis gives −1).
#[track_caller]
pub fn add_coord(x: &Tensor) -> Tensor {
    let b = x.builder();
    let (Some(h), Some(w)) = (x.dim(2).as_static(), x.dim(3).as_static()) else {
        return b.fail("add_coord", "needs static height and width".into());
    };
    let ramp = |len: u64| -> Vec<f64> {
        (0..len)
            .map(|i| {
                if len > 1 {
                    2.0 * i as f64 / (len - 1) as f64 - 1.0
                } else {
                    -1.0
                }
            })
            .collect()
    };
    let gx: Vec<f64> = (0..h).flat_map(|_| ramp(w)).collect();
    let gy: Vec<f64> = ramp(h)
        .into_iter()
        .flat_map(|v| std::iter::repeat_n(v, w as usize))
        .collect();
    let mut v = gx;
    v.extend(gy);
    let coords = b.constant(&[1, 2, h, w], v);
    let shape = vec![x.dim(0), Dim::Static(2), Dim::Static(h), Dim::Static(w)];
    let coords = b.apply(Op::BroadcastTo { shape }, &[&coords]);
    b.concat(&[x, &coords], 1)
}

/// DropBlock (Ghiasi et al.; PaddleDetection's `DropBlock`): in training, drops
/// `block_size × block_size` squares around seeds drawn with probability
/// `γ = (1 − keep_prob)/block² · H·W/((H − block + 1)(W − block + 1))` and rescales by the
/// kept fraction, `y = x · mask / mean(mask)`. Identity at inference.
///
/// The seeds are a dropout of ones (the step's seeded mask, as dropout draws it): in a
/// training graph a dropped element reads 0; at inference dropout is an identity, so no seed
/// falls, the mask is all ones and `y = x` exactly.
pub struct DropBlock {
    pub block_size: u64,
    pub keep_prob: f64,
}

impl DropBlock {
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let b = x.builder();
        let (Some(h), Some(w)) = (x.dim(2).as_static(), x.dim(3).as_static()) else {
            return b.fail("drop_block", "needs static height and width".into());
        };
        let bs = self.block_size;
        if bs.is_multiple_of(2) || bs > h.min(w) {
            return b.fail(
                "drop_block",
                format!("block size {bs} must be odd and fit the {h}×{w} map"),
            );
        }
        if self.keep_prob >= 1.0 {
            return x.clone();
        }
        let area = (h * w) as f64 / ((h - bs + 1) * (w - bs + 1)) as f64;
        let gamma = (1.0 - self.keep_prob) / (bs * bs) as f64 * area;
        let shape: Vec<Dim> = (0..4).map(|i| x.dim(i)).collect();
        let ones = b.apply(Op::BroadcastTo { shape }, &[&b.scalar(1.0)]);
        let seeds = ones
            .dropout(gamma)
            .less(&b.scalar(0.5))
            .cast(oar_ir::DType::F32);
        let block = seeds.max_pool(bs, 1, bs / 2);
        let mask = b.scalar(1.0).sub(&block);
        x.mul(&mask).div(&mask.reduce_mean(&[], false))
    }
}

impl Tensor {
    /// Multiclass NMS of `self` = boxes `[N, M, 4]` scored by `scores [N, C, M]`:
    /// `(dets [N, K, 6], selected [N, K, 3], count [N])` (see `oar_ir::op::NmsAttrs`).
    #[track_caller]
    pub fn nms(&self, scores: &Tensor, attrs: NmsAttrs) -> Vec<Tensor> {
        self.b.apply_multi(Op::Nms(attrs), &[self, scores])
    }

    /// Modulated deformable convolution: `self` = x, then offset, mask, weight and an
    /// optional bias (see `oar_ir::op::DeformConvAttrs`).
    #[track_caller]
    pub fn deform_conv2d(
        &self,
        offset: &Tensor,
        mask: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        attrs: DeformConvAttrs,
    ) -> Tensor {
        let mut ins = vec![self, offset, mask, weight];
        ins.extend(bias);
        self.b.apply(Op::DeformConv2d(attrs), &ins)
    }
}
