//! Helpers several commands share: writing output, reading `--sym` and `--input-shape`
//! flags, choosing the weights of a run, and running a pass pipeline for the CPU.

use anyhow::{bail, Context};
use oar::runtime::init::init_weights;
use oar::runtime::io::weights::load_safetensors;
use std::collections::BTreeMap;
use std::path::Path;

/// Writes `text` to `path`, or to stdout when there is none.
pub(crate) fn emit(text: &str, path: Option<&Path>) -> anyhow::Result<()> {
    match path {
        Some(p) => std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display())),
        None => {
            use std::io::Write;
            // A closed pipe (`oar … | head`) is the reader's choice, not an error.
            match std::io::stdout().lock().write_all(text.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
    }
}

/// `NAME=1x3x224x224` flags as a map of input shapes.
pub(crate) fn parse_input_shapes(specs: &[String]) -> anyhow::Result<BTreeMap<String, Vec<u64>>> {
    let mut out = BTreeMap::new();
    for s in specs {
        let Some((name, dims)) = s.split_once('=') else {
            bail!("--input-shape expects NAME=DxDx.., found `{s}`");
        };
        let dims = dims
            .split(['x', ','])
            .map(|d| d.trim().parse::<u64>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                anyhow::anyhow!(
                    "--input-shape {name}: `{dims}` is not a list of sizes like 1x3x224x224"
                )
            })?;
        out.insert(name.to_string(), dims);
    }
    Ok(out)
}

/// `--sym NAME=VALUE` flags (each may hold several, comma-separated) as a map.
pub(crate) fn parse_bindings(syms: &[String]) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut b = BTreeMap::new();
    for s in syms.iter().flat_map(|s| s.split(',')) {
        let Some((k, v)) = s.split_once('=') else {
            bail!("--sym expects NAME=VALUE, found `{s}`");
        };
        let v: u64 = v
            .parse()
            .with_context(|| format!("--sym {k}: `{v}` is not a non-negative integer"))?;
        b.insert(k.to_string(), v);
    }
    Ok(b)
}

/// The weights a run uses: `--weights`, else the model file's, else seeded.
pub(crate) fn resolve_weights(
    loaded: &oar::LoadedModel,
    path: Option<&Path>,
    seed: u64,
) -> anyhow::Result<oar::runtime::Weights> {
    Ok(match (path, &loaded.weights) {
        (Some(p), _) => {
            let w = load_safetensors(p)?;
            check_weights(&loaded.graph, &w, p, true)?;
            w
        }
        (None, Some(w)) => w.clone(),
        (None, None) => {
            eprintln!(
                "note: parameters initialised from seed {seed} (pass --weights FILE.safetensors)"
            );
            init_weights(&loaded.graph, seed).map_err(anyhow::Error::msg)?
        }
    })
}

/// Runs a named pass pipeline for the CPU.
pub(crate) fn optimize(
    g: oar::ir::Graph,
    pipeline: &str,
    bindings: &BTreeMap<String, u64>,
) -> anyhow::Result<oar::ir::Graph> {
    use oar::passes::{PassContext, Pipeline};
    let cluster = oar::ir::Cluster::resolve("cpu")?;
    let mut cx = PassContext::new(cluster.node_groups[0].device.clone());
    cx.bindings = bindings.clone();
    Ok(Pipeline::named(pipeline, &[])?.run(g, &cx, |_, _| {})?.0)
}

/// Checks a `--weights` file against the graph's parameters before anything runs: a tensor
/// that names a parameter must have its dtype and shape, and a tensor that names none is
/// refused (misnamed or extra). With `require_all` (inference) every parameter must be
/// there, and then extra tensors are only noted: a training checkpoint's file also holds
/// optimizer state. Without these checks a misnamed tensor was silently ignored (training
/// started from the initialiser) and a wrong shape failed deep inside an op.
pub(crate) fn check_weights(
    graph: &oar::ir::Graph,
    given: &oar::runtime::Weights,
    file: &Path,
    require_all: bool,
) -> anyhow::Result<()> {
    let params: BTreeMap<&str, &oar::ir::TensorType> = graph
        .nodes()
        .iter()
        .filter_map(|n| match &n.op {
            oar::ir::Op::Param(p) => n.outputs.first().map(|t| (p.name.as_str(), t)),
            _ => None,
        })
        .collect();
    for (name, t) in given {
        if let Some(ty) = params.get(name.as_str()) {
            if !t.matches(ty) {
                bail!(
                    "{}: tensor `{name}` is {}, the model's parameter is {ty}",
                    file.display(),
                    t.describe()
                );
            }
        }
    }
    let missing = params.keys().find(|n| !given.contains_key(**n));
    let unknown: Vec<&str> = given
        .keys()
        .map(String::as_str)
        .filter(|n| !params.contains_key(n))
        .collect();
    if let Some(name) = unknown.first() {
        if !require_all || missing.is_some() {
            let names: Vec<&str> = params.keys().copied().take(8).collect();
            let more = params.len().saturating_sub(names.len());
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            bail!(
                "{}: tensor `{name}` is not a parameter of the model (its parameters: {}{tail})",
                file.display(),
                names.join(", ")
            );
        }
        eprintln!(
            "note: {}: {} tensor(s) that name no parameter ignored (optimizer state?), e.g. `{name}`",
            file.display(),
            unknown.len()
        );
    }
    if let (true, Some(name)) = (require_all, missing) {
        bail!(
            "{}: no tensor for parameter `{name}` (the file has {} of the model's {} parameters)",
            file.display(),
            given.len(),
            params.len()
        );
    }
    Ok(())
}
