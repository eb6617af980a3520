//! PP-LCNet (Cui et al., 2021, "PP-LCNet: A Lightweight CPU Convolutional Neural Network"):
//! a stack of depthwise-separable convolutions with H-Swish, SE only in the last two blocks,
//! 5×5 kernels in the tail, global pooling, a 1280-wide 1×1 conv after pooling, dropout (`downscale_in_infer`: a
//! `1 - p` scale at inference) and a classifier. Layer table and parameter names follow PaddleClas `PPLCNet`.

use oar_frontend::nn::{
    Activation, BatchNorm2d, BatchNorm2dConfig, Conv2d, Conv2dConfig, LinearConfig, SeBlockConfig,
};
use oar_frontend::{BuildError, ModelBuilder, Tensor};
use oar_ir::op::DropoutMode;
use oar_ir::Graph;

/// One depthwise-separable block: (kernel, in channels, out channels, stride, SE).
type Block = (u64, u64, u64, u64, bool);

/// The blocks of each stage (`blocks2` … `blocks6`).
const NET: [&[Block]; 5] = [
    &[(3, 16, 32, 1, false)],
    &[(3, 32, 64, 2, false), (3, 64, 64, 1, false)],
    &[(3, 64, 128, 2, false), (3, 128, 128, 1, false)],
    &[
        (3, 128, 256, 2, false),
        (5, 256, 256, 1, false),
        (5, 256, 256, 1, false),
        (5, 256, 256, 1, false),
        (5, 256, 256, 1, false),
        (5, 256, 256, 1, false),
    ],
    &[(5, 256, 512, 2, true), (5, 512, 512, 1, true)],
];

/// The PP-LCNet paper's Table 2 (ImageNet, 224×224): zoo name, parameters (M) and MACs (M),
/// the MACs as `paddle.flops` counts them (batch norm and average pooling included).
pub const PAPER_TABLE: [(&str, f64, f64); 8] = [
    ("lcnet_x0_25", 1.5, 18.0),
    ("lcnet_x0_35", 1.6, 29.0),
    ("lcnet_x0_5", 1.9, 47.0),
    ("lcnet_x0_75", 2.4, 99.0),
    ("lcnet_x1_0", 3.0, 161.0),
    ("lcnet_x1_5", 4.5, 342.0),
    ("lcnet_x2_0", 6.5, 590.0),
    ("lcnet_x2_5", 9.0, 906.0),
];

/// Rounds channels to a multiple of 8 without losing more than 10% (MobileNet's rule).
pub fn make_divisible(v: f64) -> u64 {
    let divisor: f64 = 8.0;
    let mut new_v = divisor.max(((v + divisor / 2.0) / divisor).floor() * divisor);
    if new_v < 0.9 * v {
        new_v += divisor;
    }
    new_v as u64
}

/// A PP-LCNet variant.
#[derive(Debug, Clone)]
pub struct LcNetConfig {
    /// Width multiplier: 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5.
    pub scale: f64,
    pub class_num: u64,
    /// Input height and width.
    pub image_size: u64,
    pub dropout: f64,
    /// Width of the 1×1 conv after global pooling.
    pub class_expand: u64,
}

impl LcNetConfig {
    /// The paper's configuration at width `scale` (ImageNet, 224×224).
    pub fn new(scale: f64) -> Self {
        LcNetConfig {
            scale,
            class_num: 1000,
            image_size: 224,
            dropout: 0.2,
            class_expand: 1280,
        }
    }

    /// Builds the inference graph: input `x: f32[N,3,S,S]`, output logits `f32[N,classes]`.
    pub fn build(&self, name: &str) -> Result<Graph, BuildError> {
        let b = ModelBuilder::new(name);
        let x = b.input("x", &format!("f32[N,3,{0},{0}]", self.image_size));
        let feat = self.features(&b, &x);
        let logits = LinearConfig::new(self.class_expand, self.class_num)
            .init(&b, "fc")
            .forward(&feat);
        b.finish(&[&logits])
    }

    /// The backbone up to PaddleClas's `flatten_0` (the classifier's input,
    /// `f32[N, class_expand]`): where PP-ShiTu's `BackboneStopLayer` cuts it.
    fn features(&self, b: &ModelBuilder, x: &Tensor) -> Tensor {
        let ch = |c: u64| make_divisible(c as f64 * self.scale);
        let mut h = conv_bn(b, "conv1", 3, ch(16), 3, 2, 1).forward_act(x);
        for (stage, blocks) in NET.iter().enumerate() {
            for (i, &(k, cin, cout, s, se)) in blocks.iter().enumerate() {
                h = b.scope(format!("blocks{}.{i}", stage + 2), || {
                    let dw = conv_bn(b, "dw_conv", ch(cin), ch(cin), k, s, ch(cin)).forward_act(&h);
                    let dw = if se {
                        SeBlockConfig::new(ch(cin)).init(b, "se").forward(&dw)
                    } else {
                        dw
                    };
                    conv_bn(b, "pw_conv", ch(cin), ch(cout), 1, 1, 1).forward_act(&dw)
                });
            }
        }
        let pooled = h.global_avg_pool();
        let last = Conv2dConfig::new(ch(512), self.class_expand, 1)
            .bias(false)
            .init(b, "last_conv");
        last.forward(&pooled)
            .hardswish()
            // PaddleClas: Dropout(p, mode="downscale_in_infer"), a 1 - p scale at inference.
            .dropout_with(self.dropout, DropoutMode::DownscaleInInfer)
            .flatten(1)
    }
}

/// PP-ShiTu's feature extractor (Wei et al., 2021, "PP-ShiTu: A Practical Lightweight Image
/// Recognition System"): the PP-LCNet backbone cut at `flatten_0`, then an embedding neck —
/// PaddleClas's `FC` (class_expand → embedding) followed by a batch norm, as its `BNNeck`.
/// The output is the unnormalised embedding `f32[N, embedding_size]`; retrieval compares
/// embeddings by cosine. Trained with an ArcMargin head on top (the head and its margin live
/// in the loss: `oar_passes::training::LossKind::ArcMargin`).
#[derive(Debug, Clone)]
pub struct ShiTuConfig {
    /// The backbone (its `class_num` is unused: the classifier is replaced by the neck).
    pub backbone: LcNetConfig,
    /// PP-ShiTu: 512.
    pub embedding_size: u64,
}

impl ShiTuConfig {
    /// PP-ShiTu's extractor on PP-LCNet at width `scale` (the paper's is x2.5), 224×224.
    pub fn new(scale: f64) -> Self {
        ShiTuConfig {
            backbone: LcNetConfig::new(scale),
            embedding_size: 512,
        }
    }

    /// Input `x: f32[N,3,S,S]`, output `embedding: f32[N, embedding_size]`.
    pub fn build(&self, name: &str) -> Result<Graph, BuildError> {
        let b = ModelBuilder::new(name);
        let x = b.input("x", &format!("f32[N,3,{0},{0}]", self.backbone.image_size));
        let feat = self.backbone.features(&b, &x);
        let e = self.embedding_size;
        let fc = LinearConfig::new(self.backbone.class_expand, e).init(&b, "neck.fc");
        // BatchNorm1D over the embedding: a [N, E, 1, 1] view through the 2-d batch norm.
        let bn = BatchNorm2dConfig::new(e).init(&b, "neck.bn");
        let emb = bn.forward(&fc.forward(&feat).unsqueeze(&[2, 3])).flatten(1);
        b.finish(&[&emb])
    }
}

/// The extractor behind a zoo-style name: `shitu_lcnet_x2_5` → PP-LCNet x2.5 with the
/// 512-d neck (any width `lcnet_config` knows).
pub fn shitu_config(name: &str) -> Option<ShiTuConfig> {
    let scale = crate::lcnet_config(name.strip_prefix("shitu_")?)?.scale;
    Some(ShiTuConfig::new(scale))
}

/// Conv (no bias) + BatchNorm + H-Swish, PaddleClas's `ConvBNLayer`.
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBn {
    fn forward_act(&self, x: &Tensor) -> Tensor {
        Activation::HardSwish.apply(&self.bn.forward(&self.conv.forward(x)))
    }
}

fn conv_bn(
    b: &ModelBuilder,
    name: &str,
    cin: u64,
    cout: u64,
    k: u64,
    stride: u64,
    groups: u64,
) -> ConvBn {
    b.scope(name, || ConvBn {
        conv: Conv2dConfig::new(cin, cout, k)
            .stride(stride)
            .groups(groups)
            .padding((k - 1) / 2)
            .bias(false)
            .init(b, "conv"),
        bn: BatchNorm2dConfig::new(cout).init(b, "bn"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The neck replaces the classifier: a 512-d embedding; x2.5 keeps the backbone's
    /// parameters and adds 1280·512 + 512 (FC) + 4·512 (BN, statistics included).
    #[test]
    fn shitu_extractor_has_the_embedding_neck() {
        let cfg = shitu_config("shitu_lcnet_x2_5").expect("a zoo width");
        assert_eq!(cfg.backbone.scale, 2.5);
        let g = cfg.build("shitu").unwrap();
        let out = g.model_outputs()[0];
        assert_eq!(g.value_type(out).unwrap().to_string(), "f32[N,512]");
        let params = |g: &Graph| -> u64 {
            g.iter()
                .filter_map(|(_, n)| match &n.op {
                    oar_ir::Op::Param(_) => n.outputs[0].shape.numel().as_static(),
                    _ => None,
                })
                .sum()
        };
        let cls = LcNetConfig::new(2.5).build("cls").unwrap();
        let fc = 1280 * 1000 + 1000;
        assert_eq!(params(&g), params(&cls) - fc + 1280 * 512 + 512 + 4 * 512);
        assert!(shitu_config("lcnet_x2_5").is_none());
        assert!(shitu_config("shitu_lcnet_x9").is_none());
    }

    #[test]
    fn channel_rounding_matches_mobilenet() {
        assert_eq!(make_divisible(16.0 * 0.25), 8);
        assert_eq!(make_divisible(32.0 * 0.35), 16);
        assert_eq!(make_divisible(512.0 * 0.35), 176);
        assert_eq!(make_divisible(16.0 * 2.5), 40);
    }
}
