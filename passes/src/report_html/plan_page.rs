//! The plan page: the chosen layout and job, the step time and memory as stacked bars, the
//! pipeline timeline, the device mesh with its rank mapping, the weak-scaling curve and the
//! alternatives, sortable. Everything drawn comes from the `Report` the text report prints.

use super::schedule::{caption, gantt, simulate, StageTimes};
use super::svg::{colour, esc, line_chart, stacked_bar, svg, Point, Segment, Tag};
use super::{page, SORT_JS};
use crate::parallel::fault_model::{expected_wall_time, FaultReport};
use crate::parallel::report::Report;
use crate::parallel::spec::ModelSpec;
use crate::parallel::step_cost::{Evaluation, Mapping};
use std::fmt::Write;

const GIB: f64 = (1u64 << 30) as f64;

/// Per-stage forward and backward times of one micro-batch. The cost model prices the
/// slowest stage; other stages are scaled by their layers' parameters (a transformer layer's
/// FLOPs per token are about twice its parameters), so a stage of smaller task-module layers
/// runs faster. Forward is a third of the compute (backward computes two gradients per
/// GEMM), recompute runs before backward, and tensor-parallel communication splits evenly
/// between the two passes.
pub fn stage_times(model: &ModelSpec, e: &Evaluation) -> StageTimes {
    let p = &e.plan;
    let m = p.micro_batches.max(1) as f64;
    let t = &e.time;
    let stages = (p.pp.max(1)) as usize;
    let layers: Vec<f64> = if p.stage_layers.len() == stages
        && p.stage_layers.iter().sum::<usize>() == model.layers.len()
    {
        let mut start = 0;
        p.stage_layers
            .iter()
            .map(|&n| {
                let w: f64 = model.layers[start..start + n]
                    .iter()
                    .map(|l| l.params() as f64)
                    .sum();
                start += n;
                w
            })
            .collect()
    } else {
        vec![1.0; stages]
    };
    let most = layers.iter().copied().fold(0.0, f64::max).max(1.0);
    let fwd = (t.compute / 3.0 + t.tensor_parallel_comm / 2.0) / m;
    let bwd = (t.compute * 2.0 / 3.0 + t.recompute + t.tensor_parallel_comm / 2.0) / m;
    let v = match p.schedule {
        crate::parallel::step_cost::Schedule::Interleaved(v) => v.max(1) as f64,
        _ => 1.0,
    };
    StageTimes {
        forward: layers.iter().map(|l| fwd * l / most).collect(),
        backward: layers.iter().map(|l| bwd * l / most).collect(),
        // `pipeline_p2p` counts both directions of every chunk boundary per micro-batch.
        p2p: t.pipeline_p2p / m / (2.0 * v),
    }
}

/// Tensor, data and pipeline coordinates of a rank under the plan's mapping.
pub fn rank_coords(mapping: Mapping, tp: u64, dp: u64, pp: u64, rank: u64) -> (u64, u64, u64) {
    let t = rank % tp;
    match mapping {
        Mapping::TpDpPp => (t, (rank / tp) % dp, rank / (tp * dp)),
        Mapping::TpPpDp => (t, rank / (tp * pp), (rank / tp) % pp),
    }
}

/// The device mesh: nodes as boxes, devices coloured by pipeline stage, each with its rank
/// and groups in `data-*` attributes for the hover highlight.
pub fn mesh_svg(r: &Report) -> String {
    let plan = &r.outcome.best.plan;
    let (tp, dp, pp) = (plan.tp.max(1), plan.dp.max(1), plan.pp.max(1));
    let used = tp * dp * pp;
    let cell = 14.0;
    let mut s = String::new();
    let mut rank = 0u64;
    let mut node_index = 0usize;
    let max_per_node = r
        .cluster
        .node_groups
        .iter()
        .map(|g| g.devices_per_node)
        .max()
        .unwrap_or(1) as f64;
    let box_w = max_per_node * cell + 10.0;
    let per_row = ((1060.0 / (box_w + 8.0)) as usize).max(1);
    let box_h = cell + 22.0;
    for g in &r.cluster.node_groups {
        for n in 0..g.nodes {
            let bx = 4.0 + (node_index % per_row) as f64 * (box_w + 8.0);
            let by = 4.0 + (node_index / per_row) as f64 * (box_h + 8.0);
            let mut inner = Tag::new("rect")
                .a("class", "nodebox")
                .x("x", bx)
                .x("y", by)
                .x("width", box_w)
                .x("height", box_h)
                .a("rx", 4)
                .titled(&format!("{} node {n} ({})", g.name, g.device.model));
            inner += &Tag::new("text")
                .x("x", bx + 4.0)
                .x("y", by + 11.0)
                .a("font-size", 9)
                .text(&format!("node {node_index}"));
            for d in 0..g.devices_per_node {
                let x = bx + 5.0 + d as f64 * cell;
                let y = by + 16.0;
                let tag = Tag::new("rect").x("x", x).x("y", y).x("width", cell - 1.0);
                inner += &if rank < used {
                    let (t, dd, pst) = rank_coords(plan.mapping, tp, dp, pp, rank);
                    tag.x("height", cell - 1.0)
                        .a("class", "dev")
                        .a("data-rank", rank)
                        .a("data-tp", t)
                        .a("data-dp", dd)
                        .a("data-pp", pst)
                        .a("fill", colour(pst as usize))
                        .titled(&format!(
                            "rank {rank} ({} {d}): tensor index {t}, data replica {dd}, pipeline stage {pst}",
                            g.device.model
                        ))
                } else {
                    tag.x("height", cell - 1.0)
                        .a("class", "dev idle-dev")
                        .titled(&format!("unused device ({} {d})", g.device.model))
                };
                rank += 1;
            }
            s += &Tag::new("g").a("class", "node").wrap(&inner);
            node_index += 1;
        }
    }
    let rows = node_index.div_ceil(per_row).max(1) as f64;
    let legend_y = 8.0 + rows * (box_h + 8.0);
    for st in 0..pp.min(16) {
        let x = 4.0 + st as f64 * 70.0;
        s += &Tag::new("rect")
            .x("x", x)
            .x("y", legend_y)
            .x("width", 12.0)
            .x("height", 12.0)
            .a("fill", colour(st as usize))
            .empty();
        s += &Tag::new("text")
            .x("x", x + 16.0)
            .x("y", legend_y + 10.0)
            .text(&format!("stage {st}"));
    }
    let width = 8.0 + per_row.min(node_index.max(1)) as f64 * (box_w + 8.0);
    svg("mesh", width.max(600.0), legend_y + 20.0, &s)
}

/// Highlights the hovered device's tensor, data or pipeline group (the radio buttons choose).
const MESH_JS: &str = r#"
(function(){
  var devs=document.querySelectorAll('svg.mesh rect.dev');
  var info=document.getElementById('mesh-info');
  function group(){var c=document.querySelector('input[name=grp]:checked');return c?c.value:'tp';}
  devs.forEach(function(d){
    d.addEventListener('mouseenter',function(){
      var g=group(),keys={tp:['dp','pp'],dp:['tp','pp'],pp:['tp','dp']}[g];
      var n=0;
      devs.forEach(function(e){
        var same=keys.every(function(k){return e.dataset[k]===d.dataset[k];});
        e.classList.toggle('hl',same);if(same)n++;
      });
      info.textContent='rank '+d.dataset.rank+': its '+{tp:'tensor',dp:'data',pp:'pipeline'}[g]+' group has '+n+' ranks';
    });
  });
})();
"#;

fn kpi(label: &str, value: &str) -> String {
    format!(
        "<span class=\"kpi\">{}<b>{}</b></span>",
        esc(label),
        esc(value)
    )
}

fn alternatives_table(r: &Report) -> String {
    let mut s = String::from(
        "<table class=\"sortable\" id=\"alternatives\"><thead><tr><th>layout</th><th>dp</th><th>tp</th><th>pp</th><th>step time (ms)</th><th>memory (GiB)</th><th>fits</th><th>why it lost</th></tr></thead><tbody>",
    );
    let best = &r.outcome.best;
    let rows = std::iter::once((best, "chosen")).chain(
        r.outcome
            .alternatives
            .iter()
            .map(|a| (&a.evaluation, a.why.as_str())),
    );
    for (e, why) in rows {
        let p = &e.plan;
        let _ = write!(
            s,
            "<tr{}><td>{}</td><td class=\"num\" data-v=\"{}\">{}</td><td class=\"num\" data-v=\"{}\">{}</td><td class=\"num\" data-v=\"{}\">{}</td><td class=\"num\" data-v=\"{}\">{:.1}</td><td class=\"num\" data-v=\"{}\">{:.2}</td><td>{}</td><td>{}</td></tr>",
            if e.fits { "" } else { " class=\"nofit\"" },
            esc(&Report::plan_line(e)),
            p.dp, p.dp, p.tp, p.tp, p.pp, p.pp,
            e.time.total, e.time.total * 1e3,
            e.memory.total, e.memory.total / GIB,
            if e.fits { "yes" } else { "no" },
            esc(why)
        );
    }
    s + "</tbody></table>"
}

/// The plan page.
pub fn plan_page(r: &Report) -> String {
    let b = &r.outcome.best;
    let t = &b.time;
    let m = &b.memory;
    let tput = r.throughput(b);
    let title = format!("oar plan: {} on {}", r.model.name, r.cluster.name);
    let mut body = format!(
        "<header><h1>{}</h1><p>{:.2}B parameters · {} nodes, {} devices · global batch {} sequences of {} tokens</p></header><main>",
        esc(&title),
        r.model.params() as f64 / 1e9,
        r.cluster.num_nodes(),
        r.cluster.num_devices(),
        r.job.global_batch,
        r.job.seq
    );
    let layers: Vec<String> = b.plan.stage_layers.iter().map(|n| n.to_string()).collect();
    let _ = write!(
        body,
        "<section id=\"chosen\"><h2>Chosen layout</h2><p><b>{}</b></p><p class=\"note\">layers per stage: [{}] · intra-op sharding of a layer: {}</p>{}{}{}{}{}</section>",
        esc(&Report::plan_line(b)),
        layers.join(", "),
        esc(&b.layer_strategy.join(", ")),
        kpi("step time", &format!("{:.1} ms", t.total * 1e3)),
        kpi("tokens/s", &format!("{:.0}", tput.tokens_per_s)),
        kpi("TFLOP/s per device", &format!("{:.1}", tput.tflops_per_device)),
        kpi("MFU", &format!("{:.1}%", tput.mfu * 100.0)),
        kpi("memory per device", &format!("{:.2} / {:.0} GiB", m.total / GIB, m.capacity / GIB)),
    );
    let time = [
        ("compute", t.compute),
        ("recompute", t.recompute),
        ("tensor-parallel comm", t.tensor_parallel_comm),
        ("pipeline send/recv", t.pipeline_p2p),
        ("exposed data-parallel comm", t.data_parallel_comm),
        ("pipeline bubble", t.bubble),
        ("optimizer", t.optimizer),
        // Spine contention is already inside the exposed data-parallel time.
        ("straggler wait", t.straggler),
    ];
    let segs: Vec<Segment> = time
        .iter()
        .map(|&(label, v)| Segment {
            label,
            value: v * 1e3,
        })
        .collect();
    let _ = write!(
        body,
        "<section id=\"step-time\"><h2>Step time by component</h2>{}</section>",
        stacked_bar("step-bar", &segs, "ms", None)
    );
    let mem = [
        ("parameters", m.parameters),
        ("gradients", m.gradients),
        ("optimizer states", m.optimizer_states),
        ("activations", m.activations),
        ("logits", m.logits),
        ("workspace + fragmentation", m.workspace),
    ];
    let segs: Vec<Segment> = mem
        .iter()
        .map(|&(label, v)| Segment {
            label,
            value: v / GIB,
        })
        .collect();
    let _ = write!(
        body,
        "<section id=\"memory\"><h2>Memory per device (most loaded stage) against capacity</h2>{}</section>",
        stacked_bar("mem-bar", &segs, "GiB", Some(("capacity", m.capacity / GIB)))
    );
    let timeline = match simulate(b.plan.schedule, b.plan.micro_batches as usize, &stage_times(r.model, b)) {
        Ok(tl) => format!(
            "<p class=\"note\">{} (the cost model's bubble: {:.1} ms). Stage times: the slowest stage as priced, others scaled by their layers' parameters; forward ⅓ of compute. Idle time includes imbalance between stages.</p>{}",
            esc(&caption(&tl)),
            t.bubble * 1e3,
            gantt(&tl)
        ),
        Err(e) => format!("<p class=\"note\">no timeline: {}</p>", esc(&e.to_string())),
    };
    let _ = write!(
        body,
        "<section id=\"pipeline\"><h2>Pipeline timeline (one step)</h2>{timeline}</section>"
    );
    let _ = write!(
        body,
        "<section id=\"mesh-section\"><h2>Device mesh and rank mapping</h2><p class=\"note\">Colour: pipeline stage. Hover a device to highlight its group: <label><input type=\"radio\" name=\"grp\" value=\"tp\" checked> tensor</label> <label><input type=\"radio\" name=\"grp\" value=\"dp\"> data</label> <label><input type=\"radio\" name=\"grp\" value=\"pp\"> pipeline</label> · <span id=\"mesh-info\">dp={} tp={} pp={}</span></p>{}</section>",
        b.plan.dp, b.plan.tp, b.plan.pp,
        mesh_svg(r)
    );
    let points: Vec<Point> = r
        .scaling
        .iter()
        .map(|row| Point {
            label: row.devices.to_string(),
            y: row.efficiency.map(|e| e * 100.0),
            title: match (row.plan, row.tokens_per_s, row.efficiency) {
                (Some((d, tp, pp)), Some(tps), Some(e)) => format!(
                    "{} devices, batch {}: dp={d} tp={tp} pp={pp}, {tps:.0} tokens/s, efficiency {:.1}%",
                    row.devices, row.global_batch, e * 100.0
                ),
                _ => format!("{} devices, batch {}: does not fit", row.devices, row.global_batch),
            },
        })
        .collect();
    let _ = write!(
        body,
        "<section id=\"scaling\"><h2>Weak scaling (same batch per device)</h2>{}</section>",
        line_chart("scaling", &points, "efficiency (%)", 100.0)
    );
    if let Some(f) = &r.fault {
        body += &fault_section(f);
    }
    let _ = write!(
        body,
        "<section id=\"alts\"><h2>Alternatives (click a column to sort)</h2>{}<p class=\"note\">planned in {:.2} s: {} layouts considered, {} fit</p></section></main>",
        alternatives_table(r),
        r.outcome.planning_seconds,
        r.outcome.considered,
        r.outcome.fitting
    );
    let script = format!("{SORT_JS}{MESH_JS}");
    page(&title, "", &body, &script)
}

/// The fault model: the chosen checkpoint interval, goodput with and without restarts, and
/// goodput against the checkpoint interval around Daly's optimum (Daly 2006, eq. 13).
fn fault_section(f: &FaultReport) -> String {
    let work = f.inputs.job_hours * 3600.0;
    let mtbf = f.job_mtbf_hours * 3600.0;
    let points: Vec<Point> = [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
        .iter()
        .map(|&k| {
            let tau = f.daly_interval_s * k;
            let wall = expected_wall_time(work, tau, f.checkpoint_seconds, f.restart_seconds, mtbf);
            let goodput = (wall.is_finite() && wall > 0.0).then(|| work / wall * 100.0);
            Point {
                label: format!("{:.0} min", tau / 60.0),
                y: goodput,
                title: match goodput {
                    Some(g) => format!("checkpoint every {:.1} min: goodput {g:.1}%", tau / 60.0),
                    None => format!(
                        "checkpoint every {:.1} min: the job never finishes",
                        tau / 60.0
                    ),
                },
            }
        })
        .collect();
    let sim = f.simulation.as_ref().map_or(String::new(), |s| {
        format!(
            " · simulated over {} jobs: {:.1}% fail without restarts, {:.1}% with",
            s.jobs,
            s.failed_without_restarts * 100.0,
            s.failed_with_restarts * 100.0
        )
    });
    format!(
        "<section id=\"fault\"><h2>Fault model</h2><p class=\"note\">job MTBF {:.1} h · checkpoint {:.0} s · restart {:.0} s · Daly interval {:.1} min · goodput {:.1}% with restarts, {:.1}% restarting from scratch{}</p>{}</section>",
        f.job_mtbf_hours,
        f.checkpoint_seconds,
        f.restart_seconds,
        f.daly_interval_s / 60.0,
        f.goodput_with_restarts * 100.0,
        f.goodput_without_fault_tolerance * 100.0,
        esc(&sim),
        line_chart("ckpt-interval", &points, "goodput (%)", 100.0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_coordinates_follow_the_mapping() {
        // tp=2, dp=3, pp=2: Megatron order puts data replicas before stages.
        assert_eq!(rank_coords(Mapping::TpDpPp, 2, 3, 2, 0), (0, 0, 0));
        assert_eq!(rank_coords(Mapping::TpDpPp, 2, 3, 2, 3), (1, 1, 0));
        assert_eq!(rank_coords(Mapping::TpDpPp, 2, 3, 2, 6), (0, 0, 1));
        assert_eq!(rank_coords(Mapping::TpPpDp, 2, 3, 2, 2), (0, 0, 1));
        assert_eq!(rank_coords(Mapping::TpPpDp, 2, 3, 2, 4), (0, 1, 0));
        // Every rank gets a distinct coordinate.
        let mut seen = std::collections::BTreeSet::new();
        for r in 0..12 {
            assert!(seen.insert(rank_coords(Mapping::TpPpDp, 2, 3, 2, r)));
        }
    }
}
