//! ESNet (Enhanced ShuffleNet), the PP-PicoDet paper's backbone (Yu et al., 2021, §3.1):
//! ShuffleNetV2 units with squeeze-and-excitation on the transformed branch, a depthwise +
//! pointwise "ghost"-style merge after each downsampling unit, H-Swish, and per-unit channel
//! ratios found by the paper's architecture search. Layer for layer PaddleDetection's
//! `ppdet/modeling/backbones/esnet.py` (parameter names included: `backbone._conv1._conv.weight`,
//! `backbone.2_1._se.conv1.bias`, …).

use crate::picodet::ConvBn;
use oar_frontend::nn::SeBlockConfig;
use oar_frontend::{ModelBuilder, Tensor};
use oar_ir::op::ReshapeDim;

/// Units per stage (strides 8, 16, 32).
const STAGE_REPEATS: [usize; 3] = [3, 7, 3];

/// Rounds to a multiple of `divisor` (at least `divisor`) without losing more than 10%:
/// PaddleDetection's `make_divisible` in esnet.py, whose default divisor is 16.
pub fn make_divisible(v: f64, divisor: u64) -> u64 {
    let d = divisor as f64;
    let mut new_v = d.max(((v + d / 2.0) as u64 / divisor * divisor) as f64);
    if new_v < 0.9 * v {
        new_v += d;
    }
    new_v as u64
}

/// An ESNet width.
#[derive(Debug, Clone, PartialEq)]
pub struct EsNetConfig {
    /// Width multiplier: 0.75 (PicoDet-S), 1.0 (M), 1.25 (L).
    pub scale: f64,
    /// The searched mid-channel ratio of each of the 13 units.
    pub channel_ratio: [f64; 13],
}

impl EsNetConfig {
    /// Output channels of stages 2, 3 and 4 (the C3, C4, C5 features).
    pub fn stage_channels(&self) -> [u64; 3] {
        [128.0, 256.0, 512.0].map(|c| make_divisible(c * self.scale, 16))
    }

    /// The backbone on `image`; returns the C3, C4, C5 features (strides 8, 16, 32). Registers
    /// parameters under the caller's scope (PaddleDetection's `backbone.`).
    pub fn forward(&self, b: &ModelBuilder, image: &Tensor) -> Vec<Tensor> {
        let stage_out = self.stage_channels();
        let stem = 24;
        let mut y = ConvBn::esnet(b, "_conv1", 3, stem, 3, 2, 1)
            .forward(image)
            .hardswish()
            .max_pool(3, 2, 1);
        let mut feats = Vec::new();
        let mut unit = 0;
        let mut cin = stem;
        for (stage, &repeats) in STAGE_REPEATS.iter().enumerate() {
            let cout = stage_out[stage];
            for i in 0..repeats {
                // `int(channels * ratio)` before rounding, as esnet.py does.
                let mid = make_divisible((cout as f64 * self.channel_ratio[unit]).floor(), 8);
                let name = format!("{}_{}", stage + 2, i + 1);
                y = b.scope(name, || {
                    if i == 0 {
                        downsample_unit(b, &y, cin, mid, cout)
                    } else {
                        shuffle_unit(b, &y, mid, cout)
                    }
                });
                unit += 1;
            }
            cin = cout;
            feats.push(y.clone());
        }
        feats
    }
}

/// `InvertedResidualDS`: a stride-2 unit with two branches (depthwise → 1×1; 1×1 →
/// depthwise → SE → 1×1), concatenated and merged by a depthwise 3×3 + 1×1 with H-Swish.
fn downsample_unit(b: &ModelBuilder, x: &Tensor, cin: u64, mid: u64, cout: u64) -> Tensor {
    let x1 = ConvBn::esnet(b, "_conv_dw_1", cin, cin, 3, 2, cin).forward(x);
    let x1 = ConvBn::esnet(b, "_conv_linear_1", cin, cout / 2, 1, 1, 1)
        .forward(&x1)
        .hardswish();
    let half = mid / 2;
    let x2 = ConvBn::esnet(b, "_conv_pw_2", cin, half, 1, 1, 1)
        .forward(x)
        .hardswish();
    let x2 = ConvBn::esnet(b, "_conv_dw_2", half, half, 3, 2, half).forward(&x2);
    let x2 = SeBlockConfig::new(half).init(b, "_se").forward(&x2);
    let x2 = ConvBn::esnet(b, "_conv_linear_2", half, cout / 2, 1, 1, 1)
        .forward(&x2)
        .hardswish();
    let out = b.concat(&[&x1, &x2], 1);
    let out = ConvBn::esnet(b, "_conv_dw_mv1", cout, cout, 3, 1, cout)
        .forward(&out)
        .hardswish();
    ConvBn::esnet(b, "_conv_pw_mv1", cout, cout, 1, 1, 1)
        .forward(&out)
        .hardswish()
}

/// `InvertedResidual`: split the channels in half, transform the second half (1×1 →
/// depthwise, both kept and concatenated → SE → 1×1), concatenate and shuffle.
fn shuffle_unit(b: &ModelBuilder, x: &Tensor, mid: u64, cout: u64) -> Tensor {
    let half_in = cout / 2;
    let parts = x.split(1, &[half_in, half_in]);
    let (x1, x2) = (&parts[0], &parts[1]);
    let half = mid / 2;
    let x2 = ConvBn::esnet(b, "_conv_pw", half_in, half, 1, 1, 1)
        .forward(x2)
        .hardswish();
    let x3 = ConvBn::esnet(b, "_conv_dw", half, half, 3, 1, half).forward(&x2);
    let x3 = b.concat(&[&x2, &x3], 1);
    let x3 = SeBlockConfig::new(2 * half).init(b, "_se").forward(&x3);
    let x3 = ConvBn::esnet(b, "_conv_linear", 2 * half, cout / 2, 1, 1, 1)
        .forward(&x3)
        .hardswish();
    channel_shuffle(&b.concat(&[x1, &x3], 1), 2)
}

/// ShuffleNet's channel shuffle: `[N, g, C/g, H, W]` → swap the group axes → `[N, C, H, W]`.
pub fn channel_shuffle(x: &Tensor, groups: u64) -> Tensor {
    let (n, c, h, w) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
    // Channels are static in every ESNet; were they not, `Infer` would still size the split.
    let per_group = c
        .as_static()
        .map_or(ReshapeDim::Infer, |c| ReshapeDim::from((c / groups) as i64));
    let grouped = x.reshape(vec![
        ReshapeDim::Dim(n.clone()),
        ReshapeDim::from(groups as i64),
        per_group,
        ReshapeDim::Dim(h.clone()),
        ReshapeDim::Dim(w.clone()),
    ]);
    grouped.transpose(&[0, 2, 1, 3, 4]).reshape(vec![
        ReshapeDim::Dim(n),
        ReshapeDim::Dim(c),
        ReshapeDim::Dim(h),
        ReshapeDim::Dim(w),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_esnet_py() {
        // Stage widths of S/M/L and two searched mid widths of PicoDet-S (checked against
        // PaddleDetection 2.6's state dict: backbone.2_1._conv_pw_2 has 44 = 88 / 2 outputs).
        assert_eq!(make_divisible(128.0 * 0.75, 16), 96);
        assert_eq!(make_divisible(512.0 * 1.25, 16), 640);
        assert_eq!(make_divisible((96.0f64 * 0.875).floor(), 8), 88);
        assert_eq!(make_divisible((96.0f64 * 0.5).floor(), 8), 48);
    }
}
