//! `oar inspect FILE`: the graph as text, JSON, DOT, MLIR or an HTML page, and `--stats`.

use super::common;
use anyhow::bail;
use clap::{Args, ValueEnum};
use oar::ir;
use oar::passes::report_html::{graph_page, GraphView};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    Text,
    Json,
    Dot,
    /// MLIR, TOSA dialect (static shapes: symbols bound by --sym, others 1), verified by MLIR.
    Mlir,
    /// A self-contained HTML page: the graph as SVG, node details on hover, search, collapsible
    /// layers; with --pipeline one view per pass that changed the graph; with --rank the
    /// rank's graph with its collectives highlighted.
    Html,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A graph file (text IR, JSON or .onnx) or a zoo model name (see `oar models`).
    model: String,
    /// Fix an ONNX input's dynamic dims, e.g. `--input-shape x=1x3x224x224` (repeatable).
    #[arg(long = "input-shape", value_name = "NAME=DxDx..")]
    input_shapes: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Print statistics (nodes by op, parameters, FLOPs, per-node table) instead of the graph.
    #[arg(long)]
    stats: bool,
    /// Bind a symbolic dim for statistics, e.g. `--sym N=8` (unbound symbols count as 1),
    /// or for `--rank` (`--sym N=4,seq=8`; unbound symbols are 8 there).
    #[arg(long = "sym", value_name = "NAME=VALUE")]
    syms: Vec<String>,
    /// Print the graph rank R runs, as the partitioner makes it from the graph's
    /// distribution attributes (`oar plan … --emit-graph`): local shapes, collectives,
    /// send/recv between pipeline stages.
    #[arg(long, value_name = "R")]
    rank: Option<u64>,
    /// Run a pass pipeline first (`inference`, `canonicalize`) and print a before/after summary.
    #[arg(long)]
    pipeline: Option<String>,
    /// Print the graph after this pass (repeatable), or after every pass with `all`.
    #[arg(long = "print-after", value_name = "PASS|all")]
    print_after: Vec<String>,
    /// Leave a pass out of the pipeline (repeatable).
    #[arg(long = "disable-pass", value_name = "PASS")]
    disable_pass: Vec<String>,
    /// The device the cost model estimates for: a cluster preset or file (its first device).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Write to a file instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

pub fn run(a: InspectArgs) -> anyhow::Result<()> {
    let shapes = common::parse_input_shapes(&a.input_shapes)?;
    let mut graph = oar::load_model(&a.model, &shapes)?.graph;
    let html = matches!(a.format, Format::Html);
    let mut views = Vec::new();
    if let Some(name) = &a.pipeline {
        graph = run_pipeline(graph, name, &a, html.then_some(&mut views))?;
    } else if !a.print_after.is_empty() || !a.disable_pass.is_empty() {
        bail!("--print-after and --disable-pass need --pipeline NAME");
    }
    let out = if let Some(rank) = a.rank {
        if a.stats || !matches!(a.format, Format::Text | Format::Html) {
            bail!("--rank prints the rank's graph as text or html (no --stats or other --format)");
        }
        let (header, rg, bindings) = rank_graph(&graph, rank, &common::parse_bindings(&a.syms)?)?;
        if html {
            let view = GraphView {
                label: format!("rank {rank}"),
                graph: rg,
                note: header.replace("// ", "").replace('\n', " · "),
            };
            let title = format!("oar inspect: {} (rank {rank})", a.model);
            graph_page(&title, &[view], &bindings)
        } else {
            header + &ir::print(&rg)
        }
    } else if a.stats {
        // Zoo models report at their stated size unless overridden.
        let bindings = model_bindings(&a)?;
        let stats = ir::stats::graph_stats(&graph, &bindings);
        match a.format {
            Format::Text => stats.render(&graph.name),
            Format::Json => {
                let rows: Vec<_> = stats
                    .rows
                    .iter()
                    .map(|r| {
                        serde_json::json!({"name": r.name, "op": r.op, "outputs": r.outputs, "params": r.params,
                            "macs": r.macs, "flops": r.flops, "bytes": r.bytes})
                    })
                    .collect();
                let j = serde_json::json!({
                    "graph": graph.name,
                    "symbols": stats.bindings,
                    "nodes": stats.nodes,
                    "nodes_by_op": stats.by_op,
                    "param_tensors": stats.param_tensors,
                    "param_elements": stats.param_elements,
                    "param_bytes": stats.param_bytes,
                    "macs": stats.paddle_macs,
                    "flops": stats.flops,
                    "bytes": stats.bytes,
                    "per_node": rows,
                });
                serde_json::to_string_pretty(&j)? + "\n"
            }
            Format::Dot | Format::Mlir | Format::Html => bail!("--stats prints text or json"),
        }
    } else {
        match a.format {
            Format::Text => ir::print(&graph),
            Format::Json => serde_json::to_string_pretty(&graph)? + "\n",
            Format::Dot => ir::dot::to_dot(&graph),
            Format::Mlir => {
                let bindings = model_bindings(&a)?;
                let text = oar::codegen::mlir::to_tosa(&graph, &bindings)?;
                oar::codegen::mlir::verify(&text)? + "\n"
            }
            Format::Html => {
                if views.is_empty() {
                    views.push(GraphView {
                        label: graph.name.clone(),
                        graph,
                        note: String::new(),
                    });
                }
                graph_page(
                    &format!("oar inspect: {}", a.model),
                    &views,
                    &model_bindings(&a)?,
                )
            }
        }
    };
    common::emit(&out, a.output.as_deref())
}

/// The zoo model's symbol values (its stated size), overridden by `--sym`.
fn model_bindings(a: &InspectArgs) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut bindings = oar::models::find(&a.model)
        .map(|e| e.bindings())
        .unwrap_or_default();
    bindings.extend(common::parse_bindings(&a.syms)?);
    Ok(bindings)
}

/// Symbols `--rank` binds when the command line does not.
const DEFAULT_SYMBOL_VALUE: u64 = 8;

/// Rank `rank`'s graph, a header saying what it holds (comment lines) and the symbol values.
fn rank_graph(
    graph: &ir::Graph,
    rank: u64,
    syms: &BTreeMap<String, u64>,
) -> anyhow::Result<(String, ir::Graph, BTreeMap<String, u64>)> {
    use oar::passes::parallel::partition::{partition_rank, ranks, specialize};
    use std::fmt::Write;
    if graph.meshes.is_empty() {
        bail!("--rank: {}", oar::passes::parallel::PartitionError::NoMesh);
    }
    let mut bindings = syms.clone();
    let mut unbound = std::collections::BTreeSet::new();
    for n in graph.nodes() {
        for t in &n.outputs {
            for d in &t.shape.0 {
                unbound.extend(d.symbols().into_iter().filter(|s| !syms.contains_key(*s)));
            }
        }
    }
    if !unbound.is_empty() {
        let names: Vec<&str> = unbound.iter().copied().collect();
        eprintln!(
            "note: {} unbound, set to {DEFAULT_SYMBOL_VALUE} (bind with --sym NAME=VALUE)",
            names.join(", ")
        );
        for s in names {
            bindings.insert(s.to_string(), DEFAULT_SYMBOL_VALUE);
        }
    }
    let g = specialize(graph, &bindings)?;
    let all = ranks(&g).map_err(|e| anyhow::anyhow!("--rank: {e}"))?;
    let rg = partition_rank(&g, rank).map_err(|e| anyhow::anyhow!("--rank {rank}: {e}"))?;
    let mut out = String::new();
    let _ =
        writeln!(
        out,
        "// rank {rank} of {} (ranks {}), pipeline stage{} {}: {} collectives, {} sends, {} recvs",
        all.len(),
        all.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
        // Interleaved virtual stages put several on one rank.
        if rg.stages.len() > 1 { "s" } else { "" },
        rg.stages.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
        rg.collectives,
        rg.sends,
        rg.recvs
    );
    let bound: Vec<String> = bindings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(out, "// symbols: {}", bound.join(", "));
    for (name, pl) in &rg.inputs {
        let pl: Vec<String> = pl.iter().map(|p| p.to_string()).collect();
        let _ = writeln!(out, "// input {name}: [{}]", pl.join(", "));
    }
    let outputs: Vec<String> = rg.outputs.iter().map(usize::to_string).collect();
    let _ = writeln!(out, "// returns global outputs [{}]", outputs.join(", "));
    Ok((out, rg.graph, bindings))
}

/// Runs the named pipeline; with `views`, also keeps the input and the graph after each pass
/// that changed it (for the HTML page's before/after tabs).
fn run_pipeline(
    graph: oar::ir::Graph,
    name: &str,
    a: &InspectArgs,
    mut views: Option<&mut Vec<GraphView>>,
) -> anyhow::Result<oar::ir::Graph> {
    use oar::passes::{summary, PassContext, Pipeline};
    let cluster = oar::ir::Cluster::resolve(&a.device)?;
    let mut cx = PassContext::new(cluster.node_groups[0].device.clone());
    cx.verify = true;
    // Collectives in distributed graphs are priced on the cluster's links.
    cx.topology = Some(oar::passes::comm_cost::Topology::of(&cluster));
    cx.bindings = model_bindings(a)?;
    let pipeline = Pipeline::named(name, &a.disable_pass)?;
    let names = pipeline.pass_names();
    for p in &a.print_after {
        if p != "all" && !oar::passes::registry().iter().any(|r| r.name() == p) {
            bail!(
                "--print-after {p}: no such pass (passes: {})",
                names.join(", ")
            );
        }
    }
    let before = summary::summarize(&graph, &cx);
    let mut last_text = String::new();
    if let Some(v) = views.as_deref_mut() {
        last_text = ir::print(&graph);
        v.push(GraphView {
            label: "input".into(),
            graph: graph.clone(),
            note: format!("{} before pipeline `{name}`", a.model),
        });
    }
    let (out, reports) = pipeline.run(graph, &cx, |pass, g| {
        if a.print_after.iter().any(|p| p == "all" || p == pass) {
            eprintln!("// ----- after {pass} -----\n{}", ir::print(g));
        }
        if let Some(v) = views.as_deref_mut() {
            // Only passes that changed the graph get a view: the page stays small.
            let text = ir::print(g);
            if text != last_text {
                let before = v.last().map(|l| l.graph.len()).unwrap_or(0);
                v.push(GraphView {
                    label: format!("after {pass}"),
                    graph: g.clone(),
                    note: format!("after pass `{pass}`: {before} -> {} nodes", g.len()),
                });
                last_text = text;
            }
        }
    })?;
    let after = summary::summarize(&out, &cx);
    eprintln!("pipeline `{name}` on {} ({}):", a.model, cx.device.model);
    for r in &reports {
        eprintln!(
            "  {:<13} {:>8.1} ms  {} -> {} nodes",
            r.pass,
            r.time.as_secs_f64() * 1e3,
            r.nodes_before,
            r.nodes_after
        );
        for n in &r.notes {
            eprintln!("                {n}");
        }
    }
    eprint!("{}", summary::render(&before, &after));
    Ok(out)
}
