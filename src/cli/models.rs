//! `oar models`: the zoo with parameters and MACs/FLOPs at each model's stated input size.

use clap::Args;
use oar::ir::stats::{graph_stats, human};
use oar::models::{trainable_param_elements, zoo};

#[derive(Args, Debug)]
pub struct ModelsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ModelsArgs) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for e in zoo() {
        let g = (e.build)()?;
        let b = e.bindings();
        let s = graph_stats(&g, &b);
        let trainable = trainable_param_elements(&g, &b);
        let input: Vec<String> = g
            .inputs()
            .iter()
            .take(1)
            .map(|&i| g.node(i).outputs[0].to_string())
            .collect();
        let at: Vec<String> = b.iter().map(|(k, v)| format!("{k}={v}")).collect();
        rows.push((e, s, trainable, input.join(""), at.join(",")));
    }
    if a.json {
        let j: Vec<_> = rows
            .iter()
            .map(|(e, s, trainable, input, at)| {
                serde_json::json!({
                    "name": e.name, "family": e.family, "description": e.description,
                    "input": input, "at": at, "params": s.param_elements,
                    "trainable_params": trainable,
                    "macs": s.paddle_macs, "flops": s.flops, "nodes": s.nodes,
                })
            })
            .collect();
        return super::common::emit(&(serde_json::to_string_pretty(&j)? + "\n"), None);
    }
    let mut out = String::new();
    out += &format!(
        "{:<20} {:<10} {:>9} {:>9} {:>9}  {:<18} {:<12} description\n",
        "name", "family", "params", "MACs", "FLOPs", "input", "at"
    );
    for (e, s, _, input, at) in &rows {
        out += &format!(
            "{:<20} {:<10} {:>9} {:>9} {:>9}  {:<18} {:<12} {}\n",
            e.name,
            e.family,
            human(s.param_elements),
            human(s.paddle_macs),
            human(s.flops),
            input,
            at,
            e.description
        );
    }
    out += "\nMACs as paddle.flops counts them (batch norm and pooling included); FLOPs count a multiply-accumulate as 2.\n\
        params include batch-norm running statistics; --json also gives trainable_params (without them).\n";
    super::common::emit(&out, None)
}
