//! oar-models: the model zoo, written in the DSL. Each entry builds an `ir::Graph`; large
//! configurations build with symbolic batch and sequence and never allocate weights.

pub mod csp_pan;
pub mod ctr;
pub mod ernie;
pub mod esnet;
pub mod lcnet;
pub mod mobilenet_v3;
pub mod picodet;
pub mod resnet_vd;

use oar_frontend::BuildError;
use oar_ir::{Graph, Op};
use std::collections::BTreeMap;

pub use ctr::{CtrConfig, CtrKind, SparseInput, SparseTable};
pub use ernie::ErnieConfig;
pub use lcnet::LcNetConfig;
pub use mobilenet_v3::{MobileNetV3Config, MobileNetV3Size};
pub use picodet::PicoDetConfig;
pub use resnet_vd::ResNetVdConfig;

/// One zoo entry.
pub struct ZooEntry {
    pub name: &'static str,
    pub family: &'static str,
    pub description: &'static str,
    /// Symbol values for the sizes `oar models` reports (batch 1; sequence length).
    pub report_bindings: &'static [(&'static str, u64)],
    pub build: fn() -> Result<Graph, BuildError>,
}

impl ZooEntry {
    /// The bindings as a map.
    pub fn bindings(&self) -> BTreeMap<String, u64> {
        self.report_bindings
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect()
    }
}

macro_rules! lcnet {
    ($name:literal, $scale:expr) => {
        ZooEntry {
            name: $name,
            family: "PP-LCNet",
            description: "ImageNet classifier, 224x224",
            report_bindings: &[("N", 1)],
            build: || LcNetConfig::new($scale).build($name),
        }
    };
}

macro_rules! resnet_vd {
    ($name:literal, $depth:literal) => {
        ZooEntry {
            name: $name,
            family: "ResNet-vd",
            description:
                "ImageNet classifier, 224x224 (PaddleClas ResNet-vd: deep stem, pooled shortcuts)",
            report_bindings: &[("N", 1)],
            build: || {
                let cfg = ResNetVdConfig {
                    depth: $depth,
                    class_num: 1000,
                    image_size: 224,
                };
                cfg.build($name)
            },
        }
    };
}

macro_rules! mobilenet_v3 {
    ($name:literal, $size:ident, $scale:expr) => {
        ZooEntry {
            name: $name,
            family: "MobileNetV3",
            description: "ImageNet classifier, 224x224 (PaddleClas layout)",
            report_bindings: &[("N", 1)],
            build: || MobileNetV3Config::new(MobileNetV3Size::$size, $scale).build($name),
        }
    };
}

macro_rules! picodet {
    ($name:literal, $cfg:expr, $desc:literal) => {
        ZooEntry {
            name: $name,
            family: "PP-PicoDet",
            description: $desc,
            report_bindings: &[("N", 1)],
            build: || $cfg.build($name),
        }
    };
}

macro_rules! ernie {
    ($name:literal, $cfg:expr, $desc:literal) => {
        ZooEntry {
            name: $name,
            family: "ERNIE 3.0",
            description: $desc,
            report_bindings: &[("N", 1), ("seq", 128)],
            build: || $cfg.build_pretraining($name),
        }
    };
}

macro_rules! ctr {
    ($kind:expr, $desc:literal) => {
        ZooEntry {
            name: $kind.name(),
            family: "CTR",
            description: $desc,
            report_bindings: &[("N", 1)],
            build: || CtrConfig::criteo($kind).build($kind.name()),
        }
    };
}

/// The PP-LCNet configuration behind a zoo name (`lcnet_x0_25` → width 0.25), for callers
/// that change the head or the input size (training on a small dataset).
pub fn lcnet_config(name: &str) -> Option<LcNetConfig> {
    let scale: f64 = name
        .strip_prefix("lcnet_x")?
        .replace('_', ".")
        .parse()
        .ok()?;
    zoo()
        .iter()
        .any(|e| e.name == name)
        .then(|| LcNetConfig::new(scale))
}

/// Every zoo model.
pub fn zoo() -> Vec<ZooEntry> {
    vec![
        lcnet!("lcnet_x0_25", 0.25),
        lcnet!("lcnet_x0_35", 0.35),
        lcnet!("lcnet_x0_5", 0.5),
        lcnet!("lcnet_x0_75", 0.75),
        lcnet!("lcnet_x1_0", 1.0),
        lcnet!("lcnet_x1_5", 1.5),
        lcnet!("lcnet_x2_0", 2.0),
        lcnet!("lcnet_x2_5", 2.5),
        resnet_vd!("resnet18_vd", 18),
        resnet_vd!("resnet34_vd", 34),
        resnet_vd!("resnet50_vd", 50),
        resnet_vd!("resnet101_vd", 101),
        mobilenet_v3!("mobilenetv3_large_x0_35", Large, 0.35),
        mobilenet_v3!("mobilenetv3_large_x0_5", Large, 0.5),
        mobilenet_v3!("mobilenetv3_large_x0_75", Large, 0.75),
        mobilenet_v3!("mobilenetv3_large_x1_0", Large, 1.0),
        mobilenet_v3!("mobilenetv3_large_x1_25", Large, 1.25),
        mobilenet_v3!("mobilenetv3_small_x0_35", Small, 0.35),
        mobilenet_v3!("mobilenetv3_small_x0_5", Small, 0.5),
        mobilenet_v3!("mobilenetv3_small_x0_75", Small, 0.75),
        mobilenet_v3!("mobilenetv3_small_x1_0", Small, 1.0),
        mobilenet_v3!("mobilenetv3_small_x1_25", Small, 1.25),
        picodet!("picodet_s_320", PicoDetConfig::s(320), "COCO detector, ESNet 0.75x + CSP-PAN 96 + PicoHead, raw head outputs"),
        picodet!("picodet_s_416", PicoDetConfig::s(416), "COCO detector, ESNet 0.75x + CSP-PAN 96 + PicoHead, raw head outputs"),
        picodet!("picodet_m_320", PicoDetConfig::m(320), "COCO detector, ESNet 1.0x + CSP-PAN 128 + PicoHead, raw head outputs"),
        picodet!("picodet_m_416", PicoDetConfig::m(416), "COCO detector, ESNet 1.0x + CSP-PAN 128 + PicoHead, raw head outputs"),
        picodet!("picodet_l_320", PicoDetConfig::l(320), "COCO detector, ESNet 1.25x + CSP-PAN 160 + PicoHead, raw head outputs"),
        picodet!("picodet_l_416", PicoDetConfig::l(416), "COCO detector, ESNet 1.25x + CSP-PAN 160 + PicoHead, raw head outputs"),
        picodet!("picodet_l_640", PicoDetConfig::l(640), "COCO detector, ESNet 1.25x + CSP-PAN 160 + PicoHead, raw head outputs"),
        ernie!("ernie-3.0-tiny", ErnieConfig::tiny(), "PaddleNLP ernie-3.0-tiny-pico-v2-zh: 3L/128H/2 heads, MLM pre-training graph"),
        ernie!("ernie-3.0-titan-tiny", ErnieConfig::titan_tiny(), "test size: 2+1 layers, hidden 128, NLU/NLG modules, Titan losses"),
        ernie!("ernie-3.0-nano-zh", ErnieConfig::nano(), "4L/312H/12 heads, MLM pre-training graph"),
        ernie!("ernie-3.0-micro-zh", ErnieConfig::micro(), "4L/384H/12 heads, MLM pre-training graph"),
        ernie!("ernie-3.0-mini-zh", ErnieConfig::mini(), "6L/384H/12 heads, MLM pre-training graph"),
        ernie!("ernie-3.0-medium-zh", ErnieConfig::medium(), "6L/768H/12 heads, MLM pre-training graph"),
        ernie!("ernie-3.0-base-zh", ErnieConfig::base(), "12L/768H/12 heads, MLM pre-training graph"),
        ernie!("ernie-3.0-xbase-zh", ErnieConfig::xbase(), "20L/1024H/16 heads, MLM pre-training graph"),
        ernie!("ernie-3.0-10b", ErnieConfig::ten_billion(), "universal 48L/4096H + NLU/NLG 12L/768H"),
        ernie!("ernie-3.0-titan", ErnieConfig::titan(), "~260B: universal 144L/12288H (assumed) + NLU/NLG, adversarial and controllable LM losses"),
        ctr!(CtrKind::Dnn, "Criteo CTR-DNN: 26 slots x 10-wide embeddings (1M rows) + 13 dense, MLP 400-400-400, log-loss"),
        ctr!(CtrKind::WideDeep, "Criteo Wide&Deep: CTR-DNN + a wide linear part (1-wide table, dense linear)"),
        ctr!(CtrKind::DeepFm, "Criteo DeepFM: Wide&Deep + factorization-machine pairwise interactions"),
    ]
}

/// The entry with this name.
pub fn find(name: &str) -> Option<ZooEntry> {
    zoo().into_iter().find(|e| e.name == name)
}

/// Builds a zoo model by name.
pub fn build(name: &str) -> Option<Result<Graph, BuildError>> {
    find(name).map(|e| (e.build)())
}

/// The CTR configuration behind a zoo name (`ctr-dnn`, `wide-deep`, `deepfm`: Criteo-sized).
pub fn ctr_config(name: &str) -> Option<CtrConfig> {
    [CtrKind::Dnn, CtrKind::WideDeep, CtrKind::DeepFm]
        .into_iter()
        .find(|k| k.name() == name)
        .map(CtrConfig::criteo)
}

/// The ERNIE configuration behind a zoo name, for tools that reason about its structure.
pub fn ernie_config(name: &str) -> Option<ErnieConfig> {
    Some(match name {
        "ernie-3.0-tiny" => ErnieConfig::tiny(),
        "ernie-3.0-titan-tiny" => ErnieConfig::titan_tiny(),
        "ernie-3.0-nano-zh" => ErnieConfig::nano(),
        "ernie-3.0-micro-zh" => ErnieConfig::micro(),
        "ernie-3.0-mini-zh" => ErnieConfig::mini(),
        "ernie-3.0-medium-zh" => ErnieConfig::medium(),
        "ernie-3.0-base-zh" => ErnieConfig::base(),
        "ernie-3.0-xbase-zh" => ErnieConfig::xbase(),
        "ernie-3.0-10b" => ErnieConfig::ten_billion(),
        "ernie-3.0-titan" => ErnieConfig::titan(),
        _ => return None,
    })
}

/// The PP-PicoDet configuration behind a zoo name (`picodet_s_320` … `picodet_l_640`), for
/// callers that change the input size or the classes.
pub fn picodet_config(name: &str) -> Option<PicoDetConfig> {
    zoo()
        .iter()
        .any(|e| e.name == name)
        .then(|| PicoDetConfig::from_name(name))
        .flatten()
}

/// Parameter elements a training step updates: every parameter but batch norms' running
/// mean and variance (the count `paddle.summary` and the papers' tables report).
pub fn trainable_param_elements(g: &Graph, bindings: &BTreeMap<String, u64>) -> u64 {
    let running: std::collections::BTreeSet<_> = g
        .iter()
        .filter(|(_, n)| matches!(n.op, Op::BatchNorm { .. }))
        .flat_map(|(_, n)| n.inputs.iter().skip(3).map(|v| v.node))
        .collect();
    g.iter()
        .filter(|(id, n)| matches!(n.op, Op::Param(_)) && !running.contains(id))
        .map(|(_, n)| n.outputs[0].shape.numel().eval(bindings, 1))
        .sum()
}
