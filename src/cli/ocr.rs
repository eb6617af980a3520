//! `oar ocr IMAGE...`: PP-OCR (detect, classify direction, recognise) with the pre- and
//! post-processing of `oar::runtime::vision` and the three networks compiled for this CPU
//! (one program per input shape, kept for the run), or run in the interpreter.

use super::common;
use anyhow::{bail, Context};
use clap::Args;
use oar::runtime::vision::{self, Dictionary, Image, Infer, Models, OcrParams, VisionError};
use oar::runtime::HostTensor;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

const MODELS_DIR: &str = "target/onnx/models";

#[derive(Args, Debug)]
pub struct OcrArgs {
    /// PNG or JPEG images.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Text detector (DB), ONNX. Default: target/onnx/models/ppocrv4_det.onnx.
    #[arg(long)]
    det: Option<PathBuf>,
    /// Direction classifier, ONNX. Default: target/onnx/models/ppocr_mobile_v2_cls.onnx.
    #[arg(long)]
    cls: Option<PathBuf>,
    /// Skip direction classification.
    #[arg(long)]
    no_cls: bool,
    /// Recogniser (CTC), ONNX. Default: target/onnx/models/ppocrv4_rec.onnx.
    #[arg(long)]
    rec: Option<PathBuf>,
    /// Character dictionary, one character per line (default: the recogniser's
    /// `character` metadata).
    #[arg(long)]
    dict: Option<PathBuf>,
    /// Print JSON: one object per image with its lines (text, score, box).
    #[arg(long)]
    json: bool,
    /// `llvm`: the networks compiled for this CPU; `interp`: the reference interpreter.
    #[arg(long, default_value = "llvm", value_parser = ["llvm", "interp"])]
    backend: String,
    /// Threads for the compiled networks.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// DB unclip ratio (rapidocr's 1.6; PP-OCR's own default is 1.5).
    #[arg(long, default_value_t = 1.6)]
    unclip_ratio: f64,
    /// Round each recognition batch's width up to a multiple of this many pixels (fewer
    /// shapes to compile; 1 pads exactly as rapidocr does).
    #[arg(long, default_value_t = 160)]
    rec_width_multiple: usize,
    /// Read each image once before the timed run, so `seconds` (in --json) is the
    /// steady-state latency without compilation.
    #[arg(long)]
    warmup: bool,
}

/// Runs one compiled (or interpreted) program on its inputs.
type Runner = Box<dyn FnMut(&[HostTensor]) -> anyhow::Result<Vec<HostTensor>>>;

/// One network: imported and compiled once per input shape.
struct Net {
    path: PathBuf,
    backend: String,
    threads: usize,
    compiled: HashMap<Vec<usize>, Runner>,
}

impl Net {
    fn new(path: PathBuf, a: &OcrArgs) -> Net {
        Net {
            path,
            backend: a.backend.clone(),
            threads: a.threads,
            compiled: HashMap::new(),
        }
    }

    /// Imports the model with its input fixed to `shape` and builds a runner for it.
    fn build(&self, shape: &[usize]) -> anyhow::Result<Runner> {
        let spec = self.path.to_str().context("model path is not UTF-8")?;
        let names = oar::onnx_io::onnx_input_names(&self.path)?.unwrap_or_default();
        let input = names.first().cloned().unwrap_or_else(|| "x".into());
        let shapes = BTreeMap::from([(input, shape.iter().map(|&d| d as u64).collect())]);
        let loaded = oar::load_model(spec, &shapes)
            .with_context(|| format!("importing {}", self.path.display()))?;
        let weights = loaded.weights.clone().unwrap_or_default();
        let graph = loaded.graph;
        if self.backend == "llvm" {
            let bindings = BTreeMap::new();
            let jit = common::optimize(graph.clone(), "inference", &bindings).and_then(|g| {
                Ok(oar::codegen::jit::JitModel::new(
                    &g,
                    &bindings,
                    &weights,
                    self.threads,
                )?)
            });
            match jit {
                Ok(mut m) => return Ok(Box::new(move |x| Ok(m.run(x)?))),
                // The interpreter runs every op; a model the compiler cannot take still runs.
                Err(e) => eprintln!(
                    "note: {} at {shape:?} does not compile ({e:#}); using the interpreter",
                    self.path.display()
                ),
            }
        }
        Ok(Box::new(move |x| {
            Ok(oar::runtime::run(&graph, x, &weights)?)
        }))
    }
}

impl Infer for Net {
    fn infer(&mut self, input: HostTensor) -> Result<HostTensor, VisionError> {
        let shape = input.shape.clone();
        if !self.compiled.contains_key(&shape) {
            let runner = self
                .build(&shape)
                .map_err(|e| VisionError::Model(format!("{e:#}")))?;
            self.compiled.insert(shape.clone(), runner);
        }
        let run = self
            .compiled
            .get_mut(&shape)
            .ok_or_else(|| VisionError::Model("no runner".into()))?;
        let mut outs = run(&[input])
            .map_err(|e| VisionError::Model(format!("{}: {e:#}", self.path.display())))?;
        if outs.is_empty() {
            return Err(VisionError::Model(format!(
                "{} has no output",
                self.path.display()
            )));
        }
        Ok(outs.swap_remove(0))
    }
}

/// `given`, else the default file if it is there, else an error saying how to get it.
fn model_path(given: &Option<PathBuf>, file: &str, flag: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        if !p.is_file() {
            bail!("--{flag} {}: no such file", p.display());
        }
        return Ok(p.clone());
    }
    let p = Path::new(MODELS_DIR).join(file);
    if !p.is_file() {
        bail!(
            "no {flag} model: {} is missing (run `python3 scripts/onnx_setup.py`, which extracts \
             PP-OCRv4 from the rapidocr-onnxruntime wheel, or pass --{flag} FILE.onnx)",
            p.display()
        );
    }
    Ok(p)
}

/// The recogniser's `character` metadata (PP-OCRv4 rec from rapidocr carries it).
fn dictionary(rec: &Path, dict: &Option<PathBuf>) -> anyhow::Result<Dictionary> {
    if let Some(d) = dict {
        let text = std::fs::read_to_string(d)
            .with_context(|| format!("cannot read --dict {}", d.display()))?;
        return Dictionary::from_lines(&text).with_context(|| format!("--dict {}", d.display()));
    }
    use oar::frontend::onnx::proto::ModelProto;
    use prost::Message;
    let bytes = std::fs::read(rec).with_context(|| format!("cannot read {}", rec.display()))?;
    let m = ModelProto::decode(bytes.as_slice())
        .with_context(|| format!("{} is not an ONNX model", rec.display()))?;
    let Some(chars) = m.metadata_props.iter().find(|p| p.key == "character") else {
        bail!(
            "{} has no `character` metadata: pass the recogniser's dictionary with --dict FILE \
             (one character per line, e.g. ppocr_keys_v1.txt)",
            rec.display()
        );
    };
    Dictionary::from_lines(&chars.value)
        .with_context(|| format!("{}: `character` metadata", rec.display()))
}

/// Decodes an image and refuses one too small to hold text, before any model is loaded.
fn open_image(path: &Path) -> anyhow::Result<Image> {
    let img = Image::open(path)?;
    if img.w < vision::pipeline::MIN_SIDE || img.h < vision::pipeline::MIN_SIDE {
        return Err(VisionError::TooSmall { w: img.w, h: img.h })
            .with_context(|| path.display().to_string());
    }
    Ok(img)
}

pub fn run(a: OcrArgs) -> anyhow::Result<()> {
    let images = a
        .images
        .iter()
        .map(|p| open_image(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let det_path = model_path(&a.det, "ppocrv4_det.onnx", "det")?;
    let rec_path = model_path(&a.rec, "ppocrv4_rec.onnx", "rec")?;
    let cls_path = if a.no_cls {
        None
    } else {
        Some(model_path(&a.cls, "ppocr_mobile_v2_cls.onnx", "cls")?)
    };
    let dict = dictionary(&rec_path, &a.dict)?;
    let mut params = OcrParams {
        rec_width_multiple: a.rec_width_multiple.max(1),
        ..Default::default()
    };
    params.db.unclip_ratio = a.unclip_ratio;
    let mut det = Net::new(det_path, &a);
    let mut rec = Net::new(rec_path, &a);
    let mut cls = cls_path.map(|p| Net::new(p, &a));
    let mut text = String::new();
    let mut json = Vec::new();
    for (path, img) in a.images.iter().zip(&images) {
        let mut read = || {
            let t0 = Instant::now();
            let mut models = Models {
                det: &mut det,
                cls: cls.as_mut().map(|c| c as &mut dyn Infer),
                rec: &mut rec,
            };
            let lines = vision::ocr(img, &mut models, &dict, &params)
                .with_context(|| path.display().to_string());
            lines.map(|l| (l, t0.elapsed().as_secs_f64()))
        };
        if a.warmup {
            read()?;
        }
        let (lines, seconds) = read()?;
        if lines.is_empty() {
            text += &format!("{}: no text found\n", path.display());
        } else {
            text += &format!("{}: {} line(s)\n", path.display(), lines.len());
        }
        for l in &lines {
            let corners: Vec<String> = l
                .quad
                .iter()
                .map(|[x, y]| format!("{x:.0},{y:.0}"))
                .collect();
            text += &format!("  [{}]  {:.3}  {}\n", corners.join(" "), l.score, l.text);
        }
        json.push(serde_json::json!({
            "image": path.display().to_string(),
            "seconds": seconds,
            "lines": lines.iter().map(|l| serde_json::json!({
                "text": l.text,
                "score": l.score,
                "det_score": l.det_score,
                "flipped": l.flipped,
                "box": l.quad,
            })).collect::<Vec<_>>(),
        }));
    }
    if a.json {
        common::emit(&(serde_json::to_string_pretty(&json)? + "\n"), None)
    } else {
        common::emit(&text, None)
    }
}
