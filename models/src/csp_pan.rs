//! CSP-PAN, PP-PicoDet's neck (Yu et al., 2021, §3.2): 1×1 convs bring every backbone level
//! to one width, a top-down path (nearest 2× upsample, concat, CSP block) and a bottom-up
//! path (depthwise 5×5 stride-2 downsample, concat, CSP block), every CSP block built from
//! depthwise-separable 5×5 convs, and an extra P6 level: the sum of two stride-2
//! depthwise-separable convs, one on the unified C5 and one on the bottom-up P5. Layer for layer
//! PaddleDetection's `ppdet/modeling/necks/csp_pan.py` (`CSPPAN` with `use_depthwise=True`,
//! `act=hard_swish`, `num_features=4`), parameter names included (`neck.conv_t.convs.0.conv.weight`,
//! `neck.top_down_blocks.0.blocks.0.conv2.dwconv.weight`, …).

use crate::picodet::ConvBn;
use oar_frontend::nn::Initializer;
use oar_frontend::{ModelBuilder, Tensor};
use oar_ir::op::{CoordMode, ResizeMode};
use oar_ir::Dim;

/// csp_pan.py initialises its convs with `KaimingUniform` (U(±√(6/fan_in))); the DSL's
/// Kaiming normal has the same variance.
const INIT: Initializer = Initializer::KaimingNormal;

/// The neck's settings (PaddleDetection's `CSPPAN` arguments).
#[derive(Debug, Clone, PartialEq)]
pub struct CspPanConfig {
    /// Width of every output level: 96 (S), 128 (M), 160 (L).
    pub out_channels: u64,
    /// Kernel of the depthwise convs: 5.
    pub kernel: u64,
    /// Bottlenecks per CSP block: 1.
    pub num_csp_blocks: usize,
}

impl CspPanConfig {
    pub fn new(out_channels: u64) -> Self {
        CspPanConfig {
            out_channels,
            kernel: 5,
            num_csp_blocks: 1,
        }
    }

    /// The neck on the backbone's C3, C4, C5 (`in_channels` wide); returns P3 … P6 (strides
    /// 8 … 64), each `out_channels` wide. Registers parameters under the caller's scope.
    pub fn forward(&self, b: &ModelBuilder, feats: &[Tensor], in_channels: &[u64]) -> Vec<Tensor> {
        let c = self.out_channels;
        let inputs: Vec<Tensor> = b.scope("conv_t.convs", || {
            feats
                .iter()
                .zip(in_channels)
                .enumerate()
                .map(|(i, (f, &cin))| {
                    self.conv_bn(b, &i.to_string(), cin, c, 1)
                        .forward(f)
                        .hardswish()
                })
                .collect()
        });
        let levels = inputs.len();

        // Top-down: upsample the coarser result, concatenate with the finer input.
        let mut inner = vec![inputs[levels - 1].clone()];
        for idx in (1..levels).rev() {
            let up = upsample2x(&inner[0]);
            let cat = b.concat(&[&up, &inputs[idx - 1]], 1);
            let block = format!("top_down_blocks.{}", levels - 1 - idx);
            let out = b.scope(block, || self.csp_layer(b, &cat, 2 * c, c));
            inner.insert(0, out);
        }

        // Bottom-up: downsample the finer result, concatenate with the top-down level.
        let mut outs = vec![inner[0].clone()];
        for (idx, high) in inner.iter().enumerate().skip(1) {
            let i = idx - 1;
            let down = b.scope(format!("downsamples.{i}"), || {
                self.dp_module(b, outs.last().expect("outs starts non-empty"), 2)
            });
            let cat = b.concat(&[&down, high], 1);
            let out = b.scope(format!("bottom_up_blocks.{i}"), || {
                self.csp_layer(b, &cat, 2 * c, c)
            });
            outs.push(out);
        }

        // P6 from the unified C5 and the bottom-up P5.
        let top = b.scope("first_top_conv", || {
            self.dp_module(b, &inputs[levels - 1], 2)
        });
        let top2 = b.scope("second_top_conv", || {
            self.dp_module(b, outs.last().expect("outs is non-empty"), 2)
        });
        outs.push(&top + &top2);
        outs
    }

    fn conv_bn(&self, b: &ModelBuilder, name: &str, cin: u64, cout: u64, k: u64) -> ConvBn {
        ConvBn::new(b, name, ("conv", "bn"), (cin, cout, k, 1, 1), INIT)
    }

    /// `DPModule`: depthwise k×k (stride `stride`) + BN + H-Swish, 1×1 + BN + H-Swish.
    fn dp_module(&self, b: &ModelBuilder, x: &Tensor, stride: u64) -> Tensor {
        let c = self.out_channels_of(b, x);
        let dw = ConvBn::bare(b, ("dwconv", "bn1"), (c, c, self.kernel, stride, c), INIT);
        let pw = ConvBn::bare(b, ("pwconv", "bn2"), (c, c, 1, 1, 1), INIT);
        pw.forward(&dw.forward(x).hardswish()).hardswish()
    }

    fn out_channels_of(&self, b: &ModelBuilder, x: &Tensor) -> u64 {
        b.type_of(x)
            .and_then(|t| t.shape.0.get(1).and_then(|d| d.as_static()))
            .unwrap_or(self.out_channels)
    }

    /// `CSPLayer` (expand ratio 0.5, no identity): a 1×1 main path through the bottlenecks
    /// and a 1×1 short path, concatenated and fused by a 1×1.
    fn csp_layer(&self, b: &ModelBuilder, x: &Tensor, cin: u64, cout: u64) -> Tensor {
        let mid = cout / 2;
        let short = self
            .conv_bn(b, "short_conv", cin, mid, 1)
            .forward(x)
            .hardswish();
        let mut main = self
            .conv_bn(b, "main_conv", cin, mid, 1)
            .forward(x)
            .hardswish();
        for i in 0..self.num_csp_blocks {
            // `DarknetBottleneck` (expansion 1.0, no identity): 1×1, then depthwise-separable.
            main = b.scope(format!("blocks.{i}"), || {
                let h = self
                    .conv_bn(b, "conv1", mid, mid, 1)
                    .forward(&main)
                    .hardswish();
                b.scope("conv2", || self.dp_module(b, &h, 1))
            });
        }
        let cat = b.concat(&[&main, &short], 1);
        self.conv_bn(b, "final_conv", 2 * mid, cout, 1)
            .forward(&cat)
            .hardswish()
    }
}

/// `nn.Upsample(scale_factor=2, mode="nearest")`: Paddle's nearest takes `floor(o / 2)`, the
/// IR's `asymmetric` coordinate mode.
fn upsample2x(x: &Tensor) -> Tensor {
    let two = Dim::Static(2);
    x.resize(
        ResizeMode::Nearest,
        CoordMode::Asymmetric,
        [x.dim(2).mul(&two), x.dim(3).mul(&two)],
    )
}
