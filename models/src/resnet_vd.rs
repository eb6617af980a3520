//! ResNet-vd (He et al., 2019, "Bag of Tricks for Image Classification with Convolutional
//! Neural Networks", the "D" tweak; PaddleClas's `ResNet*_vd`): a deep stem of three 3×3
//! convolutions instead of one 7×7, and downsampling shortcuts that average-pool 2×2 before
//! their 1×1 convolution instead of striding it (so no activation is skipped). The backbone of
//! PP-YOLOv2 and PAFNet, and the SSLD student. Layer table and parameter names follow
//! PaddleClas `legendary_models/resnet.py` (`stem.0.conv.weight`, `blocks.3.short.bn._mean`,
//! `fc.weight`), so its state dict loads by name.

use crate::picodet::ConvBn;
use oar_frontend::nn::{Initializer, LinearConfig};
use oar_frontend::{BuildError, ModelBuilder, Tensor};
use oar_ir::op::{PoolAttrs, PoolKind};
use oar_ir::Graph;

/// PaddleClas's model-zoo table (docs/en/models/ResNet_and_vd_en.md; ImageNet, 224×224):
/// zoo name, trainable parameters (M) and GFLOPs (two per multiply-accumulate of the
/// convolutions and the classifier). The Bag-of-Tricks paper rounds ResNet-50-D to 25 M
/// parameters and 4.3 G multiply-adds. One row is corrected: the table gives ResNet34_vd
/// 7.39 G, ResNet34's 7.36 G plus 0.03, but the deep stem adds 0.48 G (as the 18-layer rows
/// show, 3.66 → 4.14); PaddleClas's own `ResNet34_vd` has 3,916 M multiply-adds (counted
/// with forward hooks on its Conv2D and Linear layers, Paddle 3.3), 7.83 G.
pub const PAPER_TABLE: [(&str, f64, f64); 4] = [
    ("resnet18_vd", 11.71, 4.14),
    ("resnet34_vd", 21.82, 7.83),
    ("resnet50_vd", 25.58, 8.67),
    ("resnet101_vd", 44.57, 16.10),
];

/// A ResNet-vd variant.
#[derive(Debug, Clone)]
pub struct ResNetVdConfig {
    /// 18, 34, 50, 101, 152 or 200.
    pub depth: u64,
    pub class_num: u64,
    /// Input height and width.
    pub image_size: u64,
}

impl ResNetVdConfig {
    /// PaddleClas's configuration at this depth (ImageNet, 224×224); `None` for a depth it
    /// does not define.
    pub fn new(depth: u64) -> Option<Self> {
        Self::blocks_per_stage(depth)?;
        Some(ResNetVdConfig {
            depth,
            class_num: 1000,
            image_size: 224,
        })
    }

    /// The zoo name's configuration (`resnet50_vd` → depth 50).
    pub fn from_name(name: &str) -> Option<Self> {
        let depth = name
            .strip_prefix("resnet")?
            .strip_suffix("_vd")?
            .parse()
            .ok()?;
        Self::new(depth)
    }

    fn blocks_per_stage(depth: u64) -> Option<[u64; 4]> {
        Some(match depth {
            18 => [2, 2, 2, 2],
            34 => [3, 4, 6, 3],
            50 => [3, 4, 6, 3],
            101 => [3, 4, 23, 3],
            152 => [3, 8, 36, 3],
            200 => [3, 12, 48, 3],
            _ => return None,
        })
    }

    /// Basic (two 3×3) blocks below 50 layers, bottlenecks (1×1, 3×3, 1×1 ×4) from 50 on.
    fn bottleneck(&self) -> bool {
        self.depth >= 50
    }

    /// Channels after global pooling: 512 for basic blocks, 2048 for bottlenecks.
    pub fn feature_channels(&self) -> u64 {
        if self.bottleneck() {
            2048
        } else {
            512
        }
    }

    /// Builds the classifier: input `x: f32[N,3,S,S]`, output logits `f32[N,classes]`.
    pub fn build(&self, name: &str) -> Result<Graph, BuildError> {
        let b = ModelBuilder::new(name);
        let x = b.input("x", &format!("f32[N,3,{0},{0}]", self.image_size));
        let stages = self.stages(&b, &x)?;
        let pooled = stages[3].global_avg_pool().flatten(1);
        let fc = LinearConfig::new(self.feature_channels(), self.class_num)
            .init(&b, "fc")
            .forward(&pooled);
        b.finish(&[&fc])
    }

    /// The four stages' outputs (strides 4, 8, 16, 32): what a detector's neck reads.
    #[track_caller]
    pub fn stages(&self, b: &ModelBuilder, x: &Tensor) -> Result<[Tensor; 4], BuildError> {
        let depths = Self::blocks_per_stage(self.depth).ok_or_else(|| BuildError {
            location: std::panic::Location::caller().to_string(),
            op: "ResNetVdConfig".into(),
            message: format!(
                "depth {}: PaddleClas's ResNet-vd has 18, 34, 50, 101, 152 or 200 layers",
                self.depth
            ),
        })?;
        let mut h = x.clone();
        for (i, (cin, cout, s)) in [(3, 32, 2), (32, 32, 1), (32, 64, 1)]
            .into_iter()
            .enumerate()
        {
            h = b
                .scope("stem", || conv_bn(b, &i.to_string(), (cin, cout, 3, s)))
                .forward(&h)
                .relu();
        }
        h = h.max_pool(3, 2, 1);
        let mult = if self.bottleneck() { 4 } else { 1 };
        let widths = [64u64, 128, 256, 512];
        let mut cin = 64;
        let mut block = 0;
        // Stages run in order (`from_fn` calls 0, 1, 2, 3), each continuing from the last.
        Ok(std::array::from_fn(|stage| {
            let w = widths[stage];
            for i in 0..depths[stage] {
                // The first stage keeps the resolution (the max pool already halved it).
                let stride = if i == 0 && stage > 0 { 2 } else { 1 };
                let first = stage == 0 && i == 0;
                h = b.scope(format!("blocks.{block}"), || {
                    self.block(b, &h, cin, w, stride, i == 0, first)
                });
                cin = w * mult;
                block += 1;
            }
            h.clone()
        }))
    }

    /// One residual block; `project` when the shortcut needs a convolution (each stage's
    /// first block), `first` for the very first block, whose shortcut does not pool.
    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        b: &ModelBuilder,
        x: &Tensor,
        cin: u64,
        width: u64,
        stride: u64,
        project: bool,
        first: bool,
    ) -> Tensor {
        let (body, cout) = if self.bottleneck() {
            let h = conv_bn(b, "conv0", (cin, width, 1, 1)).forward(x).relu();
            let h = conv_bn(b, "conv1", (width, width, 3, stride))
                .forward(&h)
                .relu();
            (
                conv_bn(b, "conv2", (width, width * 4, 1, 1)).forward(&h),
                width * 4,
            )
        } else {
            let h = conv_bn(b, "conv0", (cin, width, 3, stride))
                .forward(x)
                .relu();
            (conv_bn(b, "conv1", (width, width, 3, 1)).forward(&h), width)
        };
        let short = if !project {
            x.clone()
        } else if first {
            conv_bn(b, "short", (cin, cout, 1, stride)).forward(x)
        } else {
            // The "D" tweak: 2×2 average pool (ceil mode, padding not counted — Paddle's
            // `AvgPool2D(2, stride, padding="SAME", ceil_mode=True)` on these sizes), then an
            // unstrided 1×1 convolution.
            let pooled = x.pool(PoolAttrs {
                kind: PoolKind::Avg,
                kernel: [2, 2],
                stride: [stride; 2],
                padding: [0; 4],
                ceil_mode: true,
                count_include_pad: false,
            });
            conv_bn(b, "short", (cin, cout, 1, 1)).forward(&pooled)
        };
        (&body + &short).relu()
    }
}

/// PaddleClas's `ConvBNLayer`: `<name>.conv.weight` (no bias), `<name>.bn.*`, padding
/// `(k − 1) / 2`. `dims` are (in, out, kernel, stride).
fn conv_bn(b: &ModelBuilder, name: &str, (cin, cout, k, s): (u64, u64, u64, u64)) -> ConvBn {
    ConvBn::new(
        b,
        name,
        ("conv", "bn"),
        (cin, cout, k, s, 1),
        Initializer::KaimingNormal,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_to_depths() {
        assert_eq!(
            ResNetVdConfig::from_name("resnet50_vd").map(|c| c.depth),
            Some(50)
        );
        assert!(ResNetVdConfig::from_name("resnet51_vd").is_none());
        assert!(ResNetVdConfig::from_name("resnet50").is_none());
    }

    /// At 224 the stages are 56, 28, 14, 7 wide, with 256 … 2048 channels (bottlenecks).
    #[test]
    fn resnet50_vd_stage_shapes() {
        let cfg = ResNetVdConfig::new(50).unwrap();
        let b = ModelBuilder::new("r50");
        let x = b.input("x", "f32[N,3,224,224]");
        let outs = cfg.stages(&b, &x).unwrap();
        let dims: Vec<String> = outs
            .iter()
            .map(|t| format!("{}", t.ty().unwrap().shape))
            .collect();
        assert_eq!(
            dims,
            [
                "[N,256,56,56]",
                "[N,512,28,28]",
                "[N,1024,14,14]",
                "[N,2048,7,7]"
            ]
        );
    }
}
