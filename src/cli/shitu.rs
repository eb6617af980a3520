//! `oar shitu`: PP-ShiTu's retrieval half. `index build` embeds a labelled gallery with the
//! extractor (PP-LCNet + the 512-d neck, `shitu_lcnet_x…`) and saves a vector index;
//! `query` embeds one image and prints the nearest gallery labels; `eval` scores top-1
//! retrieval over a labelled query set. Main-body detection is not built yet: the whole
//! image is the body box. See docs/shitu.md.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use oar::ir::Graph;
use oar::passes::parallel::partition::specialize;
use oar::runtime::data::{load_dir, resize_bilinear};
use oar::runtime::index::{HnswParams, IndexKind, Metric, VectorIndex};
use oar::runtime::io::checkpoint::load_latest_good;
use oar::runtime::io::weights::load_safetensors;
use oar::runtime::{HostTensor, Weights};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum ShituCommand {
    /// Build or inspect a gallery index.
    #[command(subcommand)]
    Index(IndexCommand),
    /// The gallery entries nearest one image: labels, scores and the body box.
    Query(QueryArgs),
    /// Top-1 retrieval accuracy of a labelled query set against an index.
    Eval(EvalArgs),
}

#[derive(Subcommand, Debug)]
pub enum IndexCommand {
    /// Embed a gallery and save its index: GALLERY is a folder with one sub-folder of images
    /// per label, or a folder of .npy shards (images.npy + labels.npy, as `oar train` reads).
    Build(BuildArgs),
}

/// The extractor: which model, which weights, what input size.
#[derive(Args, Debug, Clone)]
pub struct ExtractorArgs {
    /// The extractor, `shitu_lcnet_x<width>` (PP-ShiTu: shitu_lcnet_x2_5). Query and eval
    /// default to the one the index was built with.
    #[arg(long)]
    model: Option<String>,
    /// Trained weights: a safetensors file or a checkpoint (a step-* directory or an
    /// `oar train --save` root). Query and eval default to the index's.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Input height and width (default: the index's; when building, the .npy gallery's
    /// image size, or 224 for image files).
    #[arg(long)]
    image_size: Option<u64>,
    /// Images per interpreter batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    gallery: PathBuf,
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    ex: ExtractorArgs,
    /// exact (brute force), hnsw, or auto: exact below 10,000 images.
    #[arg(long, default_value = "auto", value_parser = ["auto", "exact", "hnsw"])]
    kind: String,
    /// HNSW links per node.
    #[arg(long, default_value_t = 16)]
    m: usize,
    /// HNSW beam width while building.
    #[arg(long, default_value_t = 200)]
    ef_construction: usize,
    /// HNSW beam width while searching (saved in the index).
    #[arg(long, default_value_t = 128)]
    ef_search: usize,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    /// An image file (PNG or JPEG).
    image: PathBuf,
    #[arg(long)]
    index: PathBuf,
    /// How many matches.
    #[arg(short, default_value_t = 5)]
    k: usize,
    #[command(flatten)]
    ex: ExtractorArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Labelled queries, laid out like a gallery.
    queries: PathBuf,
    #[arg(long)]
    index: PathBuf,
    #[command(flatten)]
    ex: ExtractorArgs,
}

pub fn run(c: ShituCommand) -> anyhow::Result<()> {
    match c {
        ShituCommand::Index(IndexCommand::Build(a)) => build(a),
        ShituCommand::Query(a) => query(a),
        ShituCommand::Eval(a) => eval(a),
    }
}

/// The extractor's embedding size and metric: what an index built by it must hold.
const METRIC: Metric = Metric::Cosine;
const DEFAULT_MODEL: &str = "shitu_lcnet_x2_5";

/// Labelled images as `[c, h, w]` f32 in [0, 1], with the label names.
struct Images {
    images: Vec<(Vec<f32>, [usize; 3])>,
    labels: Vec<String>,
}

/// A gallery or query set: .npy shards (label = the class number) or one folder per label.
fn read_labelled(dir: &Path) -> anyhow::Result<Images> {
    if !dir.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    let npy = dir.join("images.npy").is_file() || dir.join("images-0.npy").is_file();
    if npy {
        let d = load_dir(dir)?;
        let shape = d.image_shape();
        return Ok(Images {
            images: (0..d.len()).map(|i| (d.image(i).to_vec(), shape)).collect(),
            labels: d.labels.iter().map(|l| l.to_string()).collect(),
        });
    }
    let mut out = Images {
        images: Vec::new(),
        labels: Vec::new(),
    };
    let mut classes: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| dir.display().to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    for class in classes {
        let label = class
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&class)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in files {
            out.images.push(read_image(&f)?);
            out.labels.push(label.clone());
        }
    }
    if out.images.is_empty() {
        bail!(
            "{}: no images (expected images.npy + labels.npy, or one sub-folder of images per label)",
            dir.display()
        );
    }
    Ok(out)
}

/// An image file as RGB `[3, h, w]` in [0, 1] (the scaling the .npy digits use).
fn read_image(path: &Path) -> anyhow::Result<(Vec<f32>, [usize; 3])> {
    let img = image::open(path)
        .with_context(|| format!("{}: cannot read the image", path.display()))?
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        bail!("{}: the image is empty ({w}x{h})", path.display());
    }
    let mut chw = vec![0f32; 3 * h * w];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            chw[c * h * w + y as usize * w + x as usize] = p[c] as f32 / 255.0;
        }
    }
    Ok((chw, [3, h, w]))
}

/// The extractor graph and weights.
struct Extractor {
    model: String,
    weights_path: Option<PathBuf>,
    size: u64,
    graph: Graph,
    weights: Weights,
    dim: usize,
    batch: usize,
}

impl Extractor {
    fn new(
        model: &str,
        weights: Option<&Path>,
        size: u64,
        batch: usize,
    ) -> anyhow::Result<Extractor> {
        let Some(mut cfg) = oar::models::lcnet::shitu_config(model) else {
            bail!("unknown extractor `{model}`; use shitu_lcnet_x<width>, e.g. shitu_lcnet_x2_5");
        };
        cfg.backbone.image_size = size;
        let graph = cfg
            .build(model)
            .map_err(|e| anyhow::anyhow!("cannot build {model}: {e}"))?;
        let mut w = oar::runtime::init::init_weights(&graph, 0).map_err(anyhow::Error::msg)?;
        match weights {
            Some(p) => {
                let given = if p.is_dir() {
                    let (ck, warnings) = load_latest_good(p)?;
                    for w in warnings {
                        eprintln!("warning: {w}");
                    }
                    ck.weights
                } else {
                    load_safetensors(p)?
                };
                for name in w.keys().cloned().collect::<Vec<_>>() {
                    let Some(t) = given.get(&name) else {
                        bail!("{}: no weight `{name}` for {model}", p.display());
                    };
                    if t.shape != w[&name].shape {
                        bail!(
                            "{}: `{name}` has shape {:?}; {model} wants {:?} (another width?)",
                            p.display(),
                            t.shape,
                            w[&name].shape
                        );
                    }
                    w.insert(name, t.clone());
                }
            }
            None => eprintln!(
                "warning: no --weights: {model} embeds with random initial weights, so matches \
                 mean little"
            ),
        }
        Ok(Extractor {
            model: model.to_string(),
            weights_path: weights.map(Path::to_path_buf),
            size,
            graph,
            weights: w,
            dim: cfg.embedding_size as usize,
            batch: batch.max(1),
        })
    }

    /// What the index records about its extractor.
    fn meta(&self) -> String {
        json!({
            "model": self.model,
            "weights": self.weights_path.as_ref().map(|p| p.display().to_string()),
            "image_size": self.size,
        })
        .to_string()
    }

    /// The embedding of each image (resized to the input size, grey repeated into RGB).
    fn embed(&self, images: &[(Vec<f32>, [usize; 3])]) -> anyhow::Result<Vec<Vec<f32>>> {
        let s = self.size as usize;
        let mut graphs: BTreeMap<usize, Graph> = BTreeMap::new();
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.batch) {
            let n = chunk.len();
            let mut x = Vec::with_capacity(n * 3 * s * s);
            for (img, shape) in chunk {
                let r = if [shape[1], shape[2]] == [s, s] {
                    img.clone()
                } else {
                    resize_bilinear(img, *shape, [s, s])
                };
                match shape[0] {
                    1 => x.extend(r.repeat(3)),
                    3 => x.extend(r),
                    c => bail!("a {c}-channel image; the extractor takes grey or RGB"),
                }
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = graphs.entry(n) {
                let bind = BTreeMap::from([("N".to_string(), n as u64)]);
                slot.insert(specialize(&self.graph, &bind)?);
            }
            let input = HostTensor::f32(vec![n, 3, s, s], x);
            let res = oar::runtime::run(&graphs[&n], &[input], &self.weights)?;
            let e = res
                .first()
                .and_then(|t| t.as_f32())
                .context("the extractor gave no f32 embedding")?;
            out.extend(e.chunks(self.dim).map(<[f32]>::to_vec));
        }
        Ok(out)
    }
}

/// The extractor for a query against `index`: the flags, else what the index recorded.
fn extractor_for(index: &VectorIndex, ex: &ExtractorArgs) -> anyhow::Result<Extractor> {
    let meta: serde_json::Value = serde_json::from_str(index.meta()).unwrap_or_default();
    let model = ex
        .model
        .clone()
        .or_else(|| meta["model"].as_str().map(String::from))
        .unwrap_or_else(|| DEFAULT_MODEL.to_string());
    let weights = ex
        .weights
        .clone()
        .or_else(|| meta["weights"].as_str().map(PathBuf::from));
    let size = ex
        .image_size
        .or_else(|| meta["image_size"].as_u64())
        .unwrap_or(224);
    Extractor::new(&model, weights.as_deref(), size, ex.batch)
}

fn build(a: BuildArgs) -> anyhow::Result<()> {
    let gallery = read_labelled(&a.gallery)?;
    let size =
        a.ex.image_size
            .unwrap_or_else(|| gallery.images[0].1[1] as u64);
    let model = a.ex.model.as_deref().unwrap_or(DEFAULT_MODEL);
    let ex = Extractor::new(model, a.ex.weights.as_deref(), size, a.ex.batch)?;
    let n = gallery.images.len();
    let kind = match (a.kind.as_str(), n) {
        ("exact", _) => IndexKind::BruteForce,
        ("auto", n) if n < 10_000 => IndexKind::BruteForce,
        _ => IndexKind::Hnsw(HnswParams {
            m: a.m,
            ef_construction: a.ef_construction,
            ef_search: a.ef_search,
            seed: 0,
        }),
    };
    let mut index = VectorIndex::new(ex.dim, METRIC, kind)?;
    index.set_meta(&ex.meta());
    let t = std::time::Instant::now();
    let feats = ex.embed(&gallery.images)?;
    for (f, label) in feats.iter().zip(&gallery.labels) {
        index.add(f, label)?;
    }
    index.save(&a.output)?;
    let kind = match kind {
        IndexKind::BruteForce => "exact".to_string(),
        IndexKind::Hnsw(p) => format!("hnsw m={} ef_search={}", p.m, p.ef_search),
    };
    println!(
        "{}: {n} images, {}-d {} features, {kind} index ({:.1} s)",
        a.output.display(),
        ex.dim,
        METRIC.name(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Loads the index, refusing one of another feature size than the extractor's.
fn open_index(path: &Path, ex: &ExtractorArgs) -> anyhow::Result<(VectorIndex, Extractor)> {
    let index = VectorIndex::load(path)?;
    let extractor = extractor_for(&index, ex)?;
    let index = VectorIndex::load_expecting(path, extractor.dim, METRIC)?;
    Ok((index, extractor))
}

fn query(a: QueryArgs) -> anyhow::Result<()> {
    let (mut index, ex) = open_index(&a.index, &a.ex)?;
    let img = read_image(&a.image)?;
    let [_, h, w] = img.1;
    let feat = ex.embed(&[img])?.remove(0);
    let hits = index.search(&feat, a.k)?;
    // Main-body detection (PicoDet) is not built yet: the whole image is the body box.
    let bbox = [0, 0, w, h];
    if a.json {
        let hits: Vec<_> = hits
            .iter()
            .map(|h| json!({"label": h.label, "score": h.score, "id": h.id}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"box": bbox, "matches": hits}))?
        );
        return Ok(());
    }
    println!(
        "box [{}, {}, {}, {}] (the whole image: no main-body detector yet)",
        bbox[0], bbox[1], bbox[2], bbox[3]
    );
    for (rank, h) in hits.iter().enumerate() {
        println!(
            "{:>2}. {:<16} {:.4}  (entry {})",
            rank + 1,
            h.label,
            h.score,
            h.id
        );
    }
    Ok(())
}

fn eval(a: EvalArgs) -> anyhow::Result<()> {
    let (mut index, ex) = open_index(&a.index, &a.ex)?;
    let queries = read_labelled(&a.queries)?;
    let feats = ex.embed(&queries.images)?;
    let mut right = 0;
    for (f, label) in feats.iter().zip(&queries.labels) {
        if index
            .search(f, 1)?
            .first()
            .is_some_and(|h| &h.label == label)
        {
            right += 1;
        }
    }
    let n = queries.labels.len();
    let mut classes: Vec<&String> = queries.labels.iter().collect();
    classes.sort();
    classes.dedup();
    println!(
        "top-1 retrieval accuracy: {:.4} ({right}/{n} queries; chance {:.4} over {} labels)",
        right as f64 / n as f64,
        1.0 / classes.len() as f64,
        classes.len()
    );
    Ok(())
}
