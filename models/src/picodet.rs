//! PP-PicoDet (Yu et al., 2021, "PP-PicoDet: A Better Real-Time Object Detector on Mobile
//! Devices"), the paper's version (PaddleDetection's `configs/picodet/legacy_model`, 2021.10):
//! the ESNet backbone ([`crate::esnet`]), the CSP-PAN neck with an extra P6 level
//! ([`crate::csp_pan`]) and PicoHead, a GFL-style head whose classification and regression
//! branches share one tower per level (`share_cls_reg`) of depthwise 5×5 + 1×1 convs, ending in
//! one 1×1 conv per level that gives the 80 class logits and the 4 × (reg_max + 1) = 32
//! distribution logits of the box sides.
//!
//! The graph stops at the raw head outputs, as PaddleDetection's export with
//! `export_post_process=False`: per level (strides 8, 16, 32, 64) the class scores after the
//! sigmoid, `f32[N, H·W, 80]`, then per level the box-side distribution logits,
//! `f32[N, H·W, 32]`. The distribution integral, box decoding and NMS come after the graph.

use crate::csp_pan::CspPanConfig;
use crate::esnet::EsNetConfig;
use oar_frontend::nn::{BatchNorm2d, BatchNorm2dConfig, Conv2d, Conv2dConfig, Initializer};
use oar_frontend::{BuildError, ModelBuilder, Tensor};
use oar_ir::op::{ConvAttrs, Init, ReshapeDim};
use oar_ir::Graph;

/// The paper's Table (PaddleDetection legacy model zoo, 2021.10): zoo name, parameters (M)
/// and FLOPs (G) at the input size in the name. Parameters are the trainable ones (batch-norm
/// running statistics excluded, as `paddle.Model.summary` counts them); FLOPs are two per
/// multiply-accumulate over `paddle.flops`'s MACs (convs, batch norms and pooling).
pub const PAPER_TABLE: [(&str, f64, f64); 7] = [
    ("picodet_s_320", 0.99, 0.73),
    ("picodet_s_416", 0.99, 1.24),
    ("picodet_m_320", 2.15, 1.48),
    ("picodet_m_416", 2.15, 2.50),
    ("picodet_l_320", 3.30, 2.23),
    ("picodet_l_416", 3.30, 3.76),
    ("picodet_l_640", 3.30, 8.91),
];

/// A PP-PicoDet variant.
#[derive(Debug, Clone, PartialEq)]
pub struct PicoDetConfig {
    pub backbone: EsNetConfig,
    pub neck: CspPanConfig,
    /// Depthwise + pointwise pairs in each level's head tower: 2 (S), 4 (M, L).
    pub head_convs: usize,
    pub num_classes: u64,
    /// The box-side distribution has `reg_max + 1` bins.
    pub reg_max: u64,
    /// Input height and width (a multiple of 32).
    pub image_size: u64,
}

/// The strides of the head's levels (P3 … P6).
pub const FPN_STRIDES: [u64; 4] = [8, 16, 32, 64];

impl PicoDetConfig {
    /// PicoDet-S: ESNet 0.75×, neck and head 96 wide, 2 tower pairs (`picodet_s_320_coco.yml`).
    pub fn s(image_size: u64) -> Self {
        PicoDetConfig {
            backbone: EsNetConfig {
                scale: 0.75,
                channel_ratio: [
                    0.875, 0.5, 0.5, 0.5, 0.625, 0.5, 0.625, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5,
                ],
            },
            neck: CspPanConfig::new(96),
            head_convs: 2,
            num_classes: 80,
            reg_max: 7,
            image_size,
        }
    }

    /// PicoDet-M: ESNet 1.0×, 128 wide, 4 tower pairs (`_base_/picodet_esnet.yml`).
    pub fn m(image_size: u64) -> Self {
        PicoDetConfig {
            backbone: EsNetConfig {
                scale: 1.0,
                channel_ratio: LARGE_RATIOS,
            },
            neck: CspPanConfig::new(128),
            head_convs: 4,
            ..Self::s(image_size)
        }
    }

    /// PicoDet-L: ESNet 1.25×, 160 wide, 4 tower pairs (`picodet_l_640_coco.yml`).
    pub fn l(image_size: u64) -> Self {
        PicoDetConfig {
            backbone: EsNetConfig {
                scale: 1.25,
                channel_ratio: LARGE_RATIOS,
            },
            neck: CspPanConfig::new(160),
            ..Self::m(image_size)
        }
    }

    /// The configuration behind a zoo name (`picodet_s_320`, `picodet_l_640`, …).
    pub fn from_name(name: &str) -> Option<Self> {
        let rest = name.strip_prefix("picodet_")?;
        let (size, px) = rest.split_once('_')?;
        let px: u64 = px.parse().ok().filter(|p| p % 32 == 0 && *p > 0)?;
        match size {
            "s" => Some(Self::s(px)),
            "m" => Some(Self::m(px)),
            "l" => Some(Self::l(px)),
            _ => None,
        }
    }

    /// Builds the inference graph: input `image: f32[N,3,S,S]`; outputs the four levels' class
    /// scores, then the four levels' distribution logits (see the module docs).
    pub fn build(&self, name: &str) -> Result<Graph, BuildError> {
        let b = ModelBuilder::new(name);
        let image = b.input("image", &format!("f32[N,3,{0},{0}]", self.image_size));
        let feats = b.scope("backbone", || self.backbone.forward(&b, &image));
        let in_channels = self.backbone.stage_channels();
        let levels = b.scope("neck", || self.neck.forward(&b, &feats, &in_channels));
        let (scores, boxes): (Vec<Tensor>, Vec<Tensor>) = b.scope("head", || {
            levels
                .iter()
                .enumerate()
                .map(|(i, p)| self.head_level(&b, i, p))
                .unzip()
        });
        let outputs: Vec<&Tensor> = scores.iter().chain(&boxes).collect();
        b.finish(&outputs)
    }

    /// One level of PicoHead: the shared tower (`conv_feat.cls_conv_{dw,pw}{level}.{i}`, each
    /// conv + BN + H-Swish), then `head_cls{level}` split into class logits (→ sigmoid) and
    /// distribution logits, both laid out `[N, H·W, C]`.
    fn head_level(&self, b: &ModelBuilder, level: usize, x: &Tensor) -> (Tensor, Tensor) {
        let c = self.neck.out_channels;
        // PicoFeat's ConvNormLayer initialiser.
        let tower_init = Initializer::Normal {
            mean: 0.0,
            std: 0.01,
        };
        let mut h = x.clone();
        b.scope("conv_feat", || {
            for i in 0..self.head_convs {
                let dw = ConvBn::new(
                    b,
                    &format!("cls_conv_dw{level}.{i}"),
                    ("conv", "norm"),
                    (c, c, 5, 1, c),
                    tower_init,
                );
                h = dw.forward(&h).hardswish();
                let pw = ConvBn::new(
                    b,
                    &format!("cls_conv_pw{level}.{i}"),
                    ("conv", "norm"),
                    (c, c, 1, 1, 1),
                    tower_init,
                );
                h = pw.forward(&h).hardswish();
            }
        });
        let dist = 4 * (self.reg_max + 1);
        let out = self.num_classes + dist;
        // Normal(0, 0.01) weights and the prior-probability bias −log((1 − 0.01) / 0.01).
        let head = b.scope(format!("head_cls{level}"), || Conv2d {
            weight: b.param(
                "weight",
                &[out, c, 1, 1],
                Init::Normal {
                    mean: 0.0,
                    std: 0.01,
                },
            ),
            bias: Some(b.param("bias", &[out], Init::Constant(-(99.0f64).ln()))),
            attrs: ConvAttrs {
                stride: [1; 2],
                padding: [0; 4],
                dilation: [1; 2],
                groups: 1,
            },
        });
        let logits = head.forward(&h);
        let parts = logits.split(1, &[self.num_classes, dist]);
        (per_location(&parts[0].sigmoid()), per_location(&parts[1]))
    }
}

/// ESNet's searched ratios for the 1.0× and 1.25× widths (`_base_/picodet_esnet.yml`).
const LARGE_RATIOS: [f64; 13] = [
    0.875, 0.5, 1.0, 0.625, 0.5, 0.75, 0.625, 0.625, 0.5, 0.625, 1.0, 0.625, 0.75,
];

/// `[N, C, H, W]` → `[N, H·W, C]`, PicoHead's deploy layout.
fn per_location(x: &Tensor) -> Tensor {
    let hw = x.dim(2).mul(&x.dim(3));
    x.reshape(vec![
        ReshapeDim::Dim(x.dim(0)),
        ReshapeDim::Dim(x.dim(1)),
        ReshapeDim::Dim(hw),
    ])
    .transpose(&[0, 2, 1])
}

/// Conv (no bias) + inference batch norm, registered as `<conv>.weight` and `<bn>.*` — the
/// layer every PaddleDetection block of PicoDet is built from, under its several names.
pub(crate) struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBn {
    /// Registers under `scope`: `scope.<names.0>.weight`, `scope.<names.1>.{weight,bias,_mean,_variance}`.
    /// `dims` are (in, out, kernel, stride, groups); padding is `(kernel − 1) / 2`.
    pub(crate) fn new(
        b: &ModelBuilder,
        scope: &str,
        names: (&str, &str),
        dims: (u64, u64, u64, u64, u64),
        init: Initializer,
    ) -> ConvBn {
        b.scope(scope, || Self::bare(b, names, dims, init))
    }

    /// As [`ConvBn::new`] in the current scope.
    pub(crate) fn bare(
        b: &ModelBuilder,
        names: (&str, &str),
        (cin, cout, k, stride, groups): (u64, u64, u64, u64, u64),
        init: Initializer,
    ) -> ConvBn {
        let conv = Conv2dConfig {
            init,
            ..Conv2dConfig::new(cin, cout, k)
                .stride(stride)
                .groups(groups)
                .padding((k - 1) / 2)
                .bias(false)
        };
        ConvBn {
            conv: conv.init(b, names.0),
            bn: BatchNorm2dConfig::new(cout).init(b, names.1),
        }
    }

    /// ESNet's (ShuffleNetV2's) `ConvBNLayer`: `<name>._conv`, `<name>._batch_norm`, Kaiming
    /// normal weights.
    pub(crate) fn esnet(
        b: &ModelBuilder,
        name: &str,
        cin: u64,
        cout: u64,
        k: u64,
        stride: u64,
        groups: u64,
    ) -> ConvBn {
        let dims = (cin, cout, k, stride, groups);
        Self::new(
            b,
            name,
            ("_conv", "_batch_norm"),
            dims,
            Initializer::KaimingNormal,
        )
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        self.bn.forward(&self.conv.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_to_the_paper_configs() {
        assert_eq!(
            PicoDetConfig::from_name("picodet_s_320"),
            Some(PicoDetConfig::s(320))
        );
        assert_eq!(
            PicoDetConfig::from_name("picodet_l_640"),
            Some(PicoDetConfig::l(640))
        );
        assert_eq!(PicoDetConfig::from_name("picodet_m_100"), None);
        assert_eq!(PicoDetConfig::from_name("picodet_x_320"), None);
        assert_eq!(PicoDetConfig::l(640).head_convs, 4);
        assert_eq!(
            PicoDetConfig::l(640).backbone.stage_channels(),
            [160, 320, 640]
        );
    }
}
