//! The HTML reports' SVG, snapshotted (insta): the pipeline timeline of a fixed 1F1B schedule,
//! the charts of a small plan, and a small graph. The writer rounds every coordinate and
//! iterates in a fixed order, so these are byte-stable; a change in layout or cost model
//! shows up here as a reviewable diff (`cargo insta review`).

use oar_ir::cluster::preset;
use oar_passes::parallel::fault_model::{fault_report, FaultInputs};
use oar_passes::parallel::report::Report;
use oar_passes::parallel::search::Constraints;
use oar_passes::parallel::step_cost::{Evaluator, Schedule};
use oar_passes::parallel::{plan_with, weak_scaling, Job, LayerSpec, ModelSpec, TrainingCostModel};
use oar_passes::report_html::schedule::gantt;
use oar_passes::report_html::{graph_page, graph_svg, simulate, GraphView, StageTimes};
use std::collections::BTreeMap;

/// Every `<svg …>…</svg>` of a page, one per line.
fn svgs(page: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find("<svg") {
        let tail = &rest[start..];
        let Some(end) = tail.find("</svg>") else {
            break;
        };
        out.push(&tail[..end + 6]);
        rest = &tail[end + 6..];
    }
    out
}

#[test]
fn one_f_one_b_timeline_svg() {
    let times = StageTimes {
        forward: vec![1.0e-3, 1.2e-3, 0.9e-3],
        backward: vec![2.0e-3, 2.5e-3, 1.9e-3],
        p2p: 0.1e-3,
    };
    let t = simulate(Schedule::OneFOneB, 4, &times).unwrap();
    let svg = gantt(&t);
    assert_eq!(svg.matches("class=\"mb ").count(), 3 * 4 * 2);
    insta::assert_snapshot!(svg);
}

#[test]
fn small_plan_page_svg() {
    let model = ModelSpec {
        name: "gpt-8x1024".into(),
        vocab: 32000,
        embed_hidden: 1024,
        extra_embedding_rows: 1024,
        layers: vec![
            LayerSpec {
                hidden: 1024,
                heads: 16,
                ffn: 4096
            };
            8
        ],
    };
    let cluster = preset("a100").unwrap().with_nodes(2);
    let job = Job {
        global_batch: 64,
        seq: 1024,
    };
    let cost = TrainingCostModel::default();
    // Fixed degrees keep the chosen layout stable; the planner still picks the rest.
    let fixed = Constraints {
        dp: Some(4),
        tp: Some(2),
        pp: Some(2),
        ..Constraints::default()
    };
    let outcome = plan_with(&model, &job, &cluster, &cost, &fixed).unwrap();
    let scaling = weak_scaling(&model, &job, &cluster, &cost, &outcome.best.plan);
    let peak = Evaluator::new(&model, &job, &cluster, cost.clone()).peak();
    let r = Report {
        model: &model,
        job: &job,
        cluster: &cluster,
        outcome: &outcome,
        scaling: &scaling,
        peak,
        fault: Some(fault_report(
            &FaultInputs {
                node_mtbf_hours: 500.0,
                nodes: 2,
                checkpoint_bytes_per_node: 50e9,
                checkpoint_bandwidth_gbs: 2.0,
                relaunch_seconds: 120.0,
                job_hours: 24.0 * 30.0,
                max_restarts: 100,
            },
            Some(200),
            7,
        )),
    };
    let page = r.html();
    // The checkpoint-interval curve: seven intervals around Daly's, the best goodput at it.
    let curve = svgs(&page)
        .into_iter()
        .find(|s| s.contains("ckpt-interval"))
        .expect("a fault section with its curve");
    let cy: Vec<f64> = curve
        .split("<circle class=\"pt\"")
        .skip(1)
        .map(|c| {
            let v = &c[c.find("cy=\"").unwrap() + 4..];
            v[..v.find('"').unwrap()].parse().unwrap()
        })
        .collect();
    assert_eq!(cy.len(), 7);
    let best = (0..7).min_by(|&a, &b| cy[a].total_cmp(&cy[b])).unwrap();
    assert_eq!(best, 3, "goodput peaks at Daly's interval: {cy:?}");
    let p = &outcome.best.plan;
    let chunks = match p.schedule {
        Schedule::Interleaved(v) => v,
        Schedule::GPipe | Schedule::OneFOneB => 1,
    };
    assert_eq!(
        page.matches("class=\"mb ").count() as u64,
        p.pp * p.micro_batches * 2 * chunks
    );
    assert_eq!(page.matches("class=\"dev\"").count(), 16);
    assert!(
        !page.contains("http://")
            || page.matches("http://").count()
                == page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(),
        "nothing from the network"
    );
    insta::assert_snapshot!(svgs(&page).join("\n"));
}

#[test]
fn small_graph_svg() {
    let text = "graph @block(%x: f32[N,16]) -> (f32[N,16]) {
  %w = param \"blocks.0.fc.weight\" : f32[16,16]
  %b = param \"blocks.0.fc.bias\" : f32[16]
  %0 = matmul(%x, %w) : f32[N,16]
  %1 = add(%0, %b) : f32[N,16]
  %2 = relu(%1) : f32[N,16]
  %3 = add(%2, %x) : f32[N,16]
  %4 = softmax(%3) {axis=1} : f32[N,16]
  return %4
}
";
    let g = oar_ir::parse(text).unwrap();
    let bindings = BTreeMap::from([("N".to_string(), 4u64)]);
    let (svg, data) = graph_svg(&g, 0, &bindings);
    assert_eq!(svg.matches("<g class=\"node ").count(), g.len());
    assert_eq!(data.len(), g.len());
    // The matmul's FLOPs: 2·N·16·16 with N = 4.
    let mm = data.values().find(|d| d["op"] == "matmul").unwrap();
    assert_eq!(mm["flops"], 2 * 4 * 16 * 16);
    let page = graph_page(
        "block",
        &[GraphView {
            label: "block".into(),
            graph: g.clone(),
            note: String::new(),
        }],
        &bindings,
    );
    assert!(page.contains("id=\"graph-data\""));
    insta::assert_snapshot!(svg);
}
