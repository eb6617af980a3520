//! MobileNetV3 (Howard et al., 2019, "Searching for MobileNetV3") Large and Small, as
//! PaddleClas builds them (`legendary_models/mobilenet_v3.py`): inverted residual blocks
//! (1×1 expand, depthwise k×k, optional squeeze-and-excitation, 1×1 project), ReLU or
//! H-Swish, a 1×1 conv after global pooling and a classifier. PAFNet-Lite's backbone.
//! Parameter names follow PaddleClas (`conv.conv.weight`, `blocks.3.mid_se.conv1.bias`,
//! `last_second_conv.bn._mean`, `last_conv.weight`, `fc.weight`), so its state dict loads
//! by name.
//!
//! Three details differ between the paper and PaddleClas, which the zoo follows: PaddleClas
//! gives every block an expand convolution (the paper skips it where the expanded width
//! equals the input's: the first block of each size), Small's last conv is 1280 wide (the
//! paper's is 1024), and the squeeze-and-excitation width is `channels / 4` (the paper
//! rounds it to a multiple of 8; kept as PaddleClas's). `MobileNetV3Config::paper` selects
//! the first two.

use crate::lcnet::make_divisible;
use crate::picodet::ConvBn;
use oar_frontend::nn::{Conv2dConfig, Initializer, LinearConfig, SeBlockConfig};
use oar_frontend::{BuildError, ModelBuilder, Tensor};
use oar_ir::op::DropoutMode;
use oar_ir::Graph;

/// One block: kernel, expanded width, output width, squeeze-and-excitation, H-Swish (else
/// ReLU), stride.
type Block = (u64, u64, u64, bool, bool, u64);

const LARGE: [Block; 15] = [
    (3, 16, 16, false, false, 1),
    (3, 64, 24, false, false, 2),
    (3, 72, 24, false, false, 1),
    (5, 72, 40, true, false, 2),
    (5, 120, 40, true, false, 1),
    (5, 120, 40, true, false, 1),
    (3, 240, 80, false, true, 2),
    (3, 200, 80, false, true, 1),
    (3, 184, 80, false, true, 1),
    (3, 184, 80, false, true, 1),
    (3, 480, 112, true, true, 1),
    (3, 672, 112, true, true, 1),
    (5, 672, 160, true, true, 2),
    (5, 960, 160, true, true, 1),
    (5, 960, 160, true, true, 1),
];

const SMALL: [Block; 11] = [
    (3, 16, 16, true, false, 2),
    (3, 72, 24, false, false, 2),
    (3, 88, 24, false, false, 1),
    (5, 96, 40, true, true, 2),
    (5, 240, 40, true, true, 1),
    (5, 240, 40, true, true, 1),
    (5, 120, 48, true, true, 1),
    (5, 144, 48, true, true, 1),
    (5, 288, 96, true, true, 2),
    (5, 576, 96, true, true, 1),
    (5, 576, 96, true, true, 1),
];

/// The paper's Table 3 (ImageNet, 224×224) at width 1.0: zoo name, parameters (M),
/// multiply-adds (M), for `MobileNetV3Config::paper`. Its 0.75 rows (4.0 M / 155 M and
/// 2.0 M / 44 M) are not reproduced by scaling every layer as PaddleClas and torchvision do
/// (3.91 M / 144 M and 2.01 M / 42.7 M): the paper does not say which layers it left wide.
pub const PAPER_TABLE: [(&str, f64, f64); 2] = [
    ("mobilenetv3_large_x1_0", 5.4, 219.0),
    ("mobilenetv3_small_x1_0", 2.5, 56.0),
];

/// Large or Small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MobileNetV3Size {
    Large,
    Small,
}

/// A MobileNetV3 variant.
#[derive(Debug, Clone)]
pub struct MobileNetV3Config {
    pub size: MobileNetV3Size,
    /// Width multiplier: PaddleClas has 0.35, 0.5, 0.75, 1.0 and 1.25.
    pub scale: f64,
    pub class_num: u64,
    /// Input height and width.
    pub image_size: u64,
    /// Width of the 1×1 conv after pooling (not scaled): 1280 (PaddleClas; the paper's Small
    /// has 1024).
    pub class_expand: u64,
    pub dropout: f64,
    /// Every block has an expand conv (PaddleClas); else only where it widens (the paper).
    pub expand_always: bool,
}

impl MobileNetV3Config {
    /// PaddleClas's configuration (ImageNet, 224×224).
    pub fn new(size: MobileNetV3Size, scale: f64) -> Self {
        MobileNetV3Config {
            size,
            scale,
            class_num: 1000,
            image_size: 224,
            class_expand: 1280,
            dropout: 0.2,
            expand_always: true,
        }
    }

    /// The paper's configuration: PaddleClas's, with Small's last conv 1024 wide and no
    /// expand conv that would not widen.
    pub fn paper(size: MobileNetV3Size, scale: f64) -> Self {
        let class_expand = match size {
            MobileNetV3Size::Large => 1280,
            MobileNetV3Size::Small => 1024,
        };
        MobileNetV3Config {
            class_expand,
            expand_always: false,
            ..Self::new(size, scale)
        }
    }

    /// The zoo name's configuration (`mobilenetv3_small_x0_5` → Small, 0.5).
    pub fn from_name(name: &str) -> Option<Self> {
        let rest = name.strip_prefix("mobilenetv3_")?;
        let (size, scale) = rest.split_once("_x")?;
        let size = match size {
            "large" => MobileNetV3Size::Large,
            "small" => MobileNetV3Size::Small,
            _ => return None,
        };
        let scale: f64 = scale.replace('_', ".").parse().ok()?;
        [0.35, 0.5, 0.75, 1.0, 1.25]
            .contains(&scale)
            .then(|| Self::new(size, scale))
    }

    fn blocks(&self) -> &'static [Block] {
        match self.size {
            MobileNetV3Size::Large => &LARGE,
            MobileNetV3Size::Small => &SMALL,
        }
    }

    /// Width of the conv before pooling, unscaled: 960 (Large) or 576 (Small).
    fn class_squeeze(&self) -> u64 {
        match self.size {
            MobileNetV3Size::Large => 960,
            MobileNetV3Size::Small => 576,
        }
    }

    fn ch(&self, c: u64) -> u64 {
        make_divisible(c as f64 * self.scale)
    }

    /// Builds the classifier: input `x: f32[N,3,S,S]`, output logits `f32[N,classes]`.
    pub fn build(&self, name: &str) -> Result<Graph, BuildError> {
        let b = ModelBuilder::new(name);
        let x = b.input("x", &format!("f32[N,3,{0},{0}]", self.image_size));
        let h = self.features(&b, &x);
        let squeeze = self.ch(self.class_squeeze());
        let last_in = self.ch(self.blocks()[self.blocks().len() - 1].2);
        let h = conv_bn(&b, "last_second_conv", (last_in, squeeze, 1, 1, 1))
            .forward(&h)
            .hardswish();
        let last = Conv2dConfig::new(squeeze, self.class_expand, 1)
            .bias(false)
            .init(&b, "last_conv");
        let h = last
            .forward(&h.global_avg_pool())
            .hardswish()
            // PaddleClas: Dropout(p, mode="downscale_in_infer"), a 1 − p scale at inference.
            .dropout_with(self.dropout, DropoutMode::DownscaleInInfer)
            .flatten(1);
        let logits = LinearConfig::new(self.class_expand, self.class_num)
            .init(&b, "fc")
            .forward(&h);
        b.finish(&[&logits])
    }

    /// The stem and the inverted-residual blocks (stride 32), before the last 1×1 conv.
    pub fn features(&self, b: &ModelBuilder, x: &Tensor) -> Tensor {
        let mut cin = self.ch(16);
        let mut h = conv_bn(b, "conv", (3, cin, 3, 2, 1)).forward(x).hardswish();
        for (i, &(k, exp, c, se, hswish, s)) in self.blocks().iter().enumerate() {
            let (mid, cout) = (self.ch(exp), self.ch(c));
            h = b.scope(format!("blocks.{i}"), || {
                let act = |t: Tensor| if hswish { t.hardswish() } else { t.relu() };
                let e = if self.expand_always || mid != cin {
                    act(conv_bn(b, "expand_conv", (cin, mid, 1, 1, 1)).forward(&h))
                } else {
                    h.clone()
                };
                let d = act(conv_bn(b, "bottleneck_conv", (mid, mid, k, s, mid)).forward(&e));
                let d = if se {
                    // PaddleClas's SEModule gates with hardsigmoid(slope 0.2, offset 0.5),
                    // not Paddle's default slope of 1/6.
                    let m = SeBlockConfig::new(mid).init(b, "mid_se");
                    let g = m.conv1.forward(&d.global_avg_pool()).relu();
                    &d * &m.conv2.forward(&g).hardsigmoid(0.2, 0.5)
                } else {
                    d
                };
                let out = conv_bn(b, "linear_conv", (mid, cout, 1, 1, 1)).forward(&d);
                if s == 1 && cin == cout {
                    &h + &out
                } else {
                    out
                }
            });
            cin = cout;
        }
        h
    }
}

/// PaddleClas's `ConvBNLayer`: `<name>.conv.weight` (no bias), `<name>.bn.*`.
fn conv_bn(b: &ModelBuilder, name: &str, dims: (u64, u64, u64, u64, u64)) -> ConvBn {
    ConvBn::new(b, name, ("conv", "bn"), dims, Initializer::KaimingNormal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        let c = MobileNetV3Config::from_name("mobilenetv3_small_x0_35").unwrap();
        assert_eq!((c.size, c.scale), (MobileNetV3Size::Small, 0.35));
        assert!(MobileNetV3Config::from_name("mobilenetv3_large_x0_6").is_none());
        assert!(MobileNetV3Config::from_name("mobilenetv3_medium_x1_0").is_none());
    }

    /// The paper's Small differs from PaddleClas's in the last conv, 256 channels narrower
    /// (×576 in, ×1000 out), and the first block's expand conv (16×16 + batch norm).
    #[test]
    fn paper_small_differs_in_the_last_conv_and_first_expand() {
        let bind = std::collections::BTreeMap::from([("N".to_string(), 1)]);
        let count = |c: MobileNetV3Config| {
            oar_ir::stats::graph_stats(&c.build("m").unwrap(), &bind).param_elements
        };
        let paddle = count(MobileNetV3Config::new(MobileNetV3Size::Small, 1.0));
        let paper = count(MobileNetV3Config::paper(MobileNetV3Size::Small, 1.0));
        assert_eq!(paddle - paper, 256 * 576 + 256 * 1000 + 16 * 16 + 4 * 16);
    }
}
