//! Conv2d, ConvTranspose2d and the squeeze-and-excitation block.

use super::{Activation, Initializer};
use crate::builder::ModelBuilder;
use crate::tensor::Tensor;
use oar_ir::op::{ConvAttrs, ConvTransposeAttrs, Init};

/// 2-d convolution, NCHW, weights OIHW.
#[derive(Debug, Clone)]
pub struct Conv2dConfig {
    pub in_channels: u64,
    pub out_channels: u64,
    pub kernel: u64,
    pub stride: u64,
    /// Symmetric padding; `None` pads `(kernel - 1) / 2` ("same" for odd kernels at stride 1).
    pub padding: Option<u64>,
    pub dilation: u64,
    pub groups: u64,
    pub bias: bool,
    pub init: Initializer,
}

impl Conv2dConfig {
    pub fn new(in_channels: u64, out_channels: u64, kernel: u64) -> Self {
        Conv2dConfig {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: None,
            dilation: 1,
            groups: 1,
            bias: true,
            init: Initializer::KaimingNormal,
        }
    }
    pub fn stride(mut self, s: u64) -> Self {
        self.stride = s;
        self
    }
    pub fn padding(mut self, p: u64) -> Self {
        self.padding = Some(p);
        self
    }
    pub fn groups(mut self, g: u64) -> Self {
        self.groups = g;
        self
    }
    pub fn dilation(mut self, d: u64) -> Self {
        self.dilation = d;
        self
    }
    pub fn bias(mut self, b: bool) -> Self {
        self.bias = b;
        self
    }

    fn attrs(&self) -> ConvAttrs {
        let p = self
            .padding
            .unwrap_or(self.dilation * (self.kernel.max(1) - 1) / 2);
        ConvAttrs {
            stride: [self.stride; 2],
            padding: [p; 4],
            dilation: [self.dilation; 2],
            groups: self.groups,
        }
    }

    /// Registers `<name>.weight` (and `<name>.bias`).
    #[track_caller]
    pub fn init(&self, b: &ModelBuilder, name: &str) -> Conv2d {
        let g = self.groups.max(1);
        let k2 = self.kernel * self.kernel;
        let fan_in = self.in_channels / g * k2;
        b.scope(name, || Conv2d {
            weight: b.param(
                "weight",
                &[
                    self.out_channels,
                    self.in_channels / g,
                    self.kernel,
                    self.kernel,
                ],
                self.init.resolve(fan_in, self.out_channels / g * k2),
            ),
            bias: self
                .bias
                .then(|| b.param("bias", &[self.out_channels], Init::Constant(0.0))),
            attrs: self.attrs(),
        })
    }
}

#[derive(Clone)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub attrs: ConvAttrs,
}

impl Conv2d {
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(&self.weight, self.bias.as_ref(), self.attrs.clone())
    }
}

/// Transposed 2-d convolution, weights `[in, out/groups, k, k]`.
#[derive(Debug, Clone)]
pub struct ConvTranspose2dConfig {
    pub conv: Conv2dConfig,
    pub output_padding: u64,
}

impl ConvTranspose2dConfig {
    pub fn new(in_channels: u64, out_channels: u64, kernel: u64) -> Self {
        ConvTranspose2dConfig {
            conv: Conv2dConfig::new(in_channels, out_channels, kernel).padding(0),
            output_padding: 0,
        }
    }

    /// Registers `<name>.weight` (and `<name>.bias`).
    #[track_caller]
    pub fn init(&self, b: &ModelBuilder, name: &str) -> ConvTranspose2d {
        let c = &self.conv;
        let g = c.groups.max(1);
        let k2 = c.kernel * c.kernel;
        b.scope(name, || ConvTranspose2d {
            weight: b.param(
                "weight",
                &[c.in_channels, c.out_channels / g, c.kernel, c.kernel],
                c.init
                    .resolve(c.out_channels / g * k2, c.in_channels / g * k2),
            ),
            bias: c
                .bias
                .then(|| b.param("bias", &[c.out_channels], Init::Constant(0.0))),
            attrs: ConvTransposeAttrs {
                conv: c.attrs(),
                output_padding: [self.output_padding; 2],
            },
        })
    }
}

#[derive(Clone)]
pub struct ConvTranspose2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub attrs: ConvTransposeAttrs,
}

impl ConvTranspose2d {
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.conv_transpose2d(&self.weight, self.bias.as_ref(), self.attrs.clone())
    }
}

/// Squeeze-and-excitation as in PP-LCNet and MobileNetV3: global pool, 1×1 conv down by
/// `reduction`, ReLU, 1×1 conv up, hard-sigmoid, rescale the input.
#[derive(Debug, Clone)]
pub struct SeBlockConfig {
    pub channels: u64,
    pub reduction: u64,
    pub gate: Activation,
}

impl SeBlockConfig {
    pub fn new(channels: u64) -> Self {
        SeBlockConfig {
            channels,
            reduction: 4,
            gate: Activation::HardSigmoid,
        }
    }

    /// Registers `<name>.conv1.*` and `<name>.conv2.*`.
    #[track_caller]
    pub fn init(&self, b: &ModelBuilder, name: &str) -> SeBlock {
        let mid = self.channels / self.reduction.max(1);
        b.scope(name, || SeBlock {
            conv1: Conv2dConfig::new(self.channels, mid, 1).init(b, "conv1"),
            conv2: Conv2dConfig::new(mid, self.channels, 1).init(b, "conv2"),
            gate: self.gate,
        })
    }
}

#[derive(Clone)]
pub struct SeBlock {
    pub conv1: Conv2d,
    pub conv2: Conv2d,
    pub gate: Activation,
}

impl SeBlock {
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let s = self.conv1.forward(&x.global_avg_pool()).relu();
        let s = self.gate.apply(&self.conv2.forward(&s));
        x * &s
    }
}
