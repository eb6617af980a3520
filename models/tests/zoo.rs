//! The zoo against the papers' figures, and the models running in the interpreter.

use oar_ir::stats::graph_stats;
use oar_models::{build, zoo, ErnieConfig};
use oar_runtime::init::init_weights;
use oar_runtime::{run, HostTensor};
use std::collections::BTreeMap;
use std::time::Instant;

fn counts(name: &str) -> (f64, f64) {
    let entry = oar_models::find(name).unwrap();
    let g = (entry.build)().unwrap_or_else(|e| panic!("{name}: {e}"));
    let s = graph_stats(&g, &entry.bindings());
    (s.param_elements as f64 / 1e6, s.paddle_macs as f64 / 1e6)
}

#[test]
fn lcnet_matches_the_paper_table_within_3_percent() {
    let table = oar_models::lcnet::PAPER_TABLE;
    let mut report = Vec::new();
    for (name, params, macs) in table {
        let (p, m) = counts(name);
        let (dp, dm) = ((p - params) / params, (m - macs) / macs);
        report.push(format!(
            "{name}: params {p:.3}M ({:+.1}%), MACs {m:.1}M ({:+.1}%)",
            dp * 100.0,
            dm * 100.0
        ));
    }
    println!("{}", report.join("\n"));
    for (name, params, macs) in table {
        let (p, m) = counts(name);
        assert!(
            ((p - params) / params).abs() <= 0.03 && ((m - macs) / macs).abs() <= 0.03,
            "{}",
            report.join("\n")
        );
    }
}

/// Trainable parameters (M) and the multiply-adds of matmuls and convolutions (M) of a built
/// graph at batch 1: what the MobileNetV3 paper counts.
fn graph_counts(g: &oar_ir::Graph) -> (f64, f64) {
    let b = BTreeMap::from([("N".to_string(), 1)]);
    let s = graph_stats(g, &b);
    let p = oar_models::trainable_param_elements(g, &b);
    (p as f64 / 1e6, s.macs as f64 / 1e6)
}

/// One model against its table: name, (parameters M, cost) ours, (parameters M, cost) the table's.
type CountRow = (String, (f64, f64), (f64, f64));

/// Each row within its bounds, or the whole report fails.
fn assert_rows(rows: &[CountRow], params_tol: f64, cost_tol: f64) {
    let report: Vec<String> = rows
        .iter()
        .map(|(name, (p, c), (tp, tc))| {
            format!(
                "{name}: params {p:.3}M vs {tp}M ({:+.2}%), cost {c:.1} vs {tc} ({:+.2}%)",
                (p - tp) / tp * 100.0,
                (c - tc) / tc * 100.0
            )
        })
        .collect();
    println!("{}", report.join("\n"));
    for (_, (p, c), (tp, tc)) in rows {
        assert!(
            ((p - tp) / tp).abs() <= params_tol && ((c - tc) / tc).abs() <= cost_tol,
            "{}",
            report.join("\n")
        );
    }
}

/// ResNet-vd against PaddleClas's table: trainable parameters to 1%, FLOPs (2 × MACs) to 3%.
#[test]
fn resnet_vd_matches_the_paddleclas_table() {
    let rows: Vec<_> = oar_models::resnet_vd::PAPER_TABLE
        .iter()
        .map(|&(name, params, gflops)| {
            let g = oar_models::build(name)
                .expect("in the zoo")
                .expect("builds");
            let (p, m) = graph_counts(&g);
            (name.to_string(), (p, 2.0 * m / 1e3), (params, gflops))
        })
        .collect();
    assert_rows(&rows, 0.01, 0.03);
}

/// MobileNetV3 in the paper's configuration against its Table 3: parameters and MACs to 2%.
/// The table gives two significant digits (5.4 M; torchvision's reproduction of Large has
/// 5.483 M), so 1% cannot be asked of it.
#[test]
fn mobilenet_v3_matches_the_paper_table() {
    use oar_models::{MobileNetV3Config, MobileNetV3Size};
    let rows: Vec<_> = oar_models::mobilenet_v3::PAPER_TABLE
        .iter()
        .map(|&(name, params, macs)| {
            let zoo = MobileNetV3Config::from_name(name).expect("a zoo name");
            let cfg = MobileNetV3Config::paper(zoo.size, zoo.scale);
            let g = cfg.build(name).expect("builds");
            (name.to_string(), graph_counts(&g), (params, macs))
        })
        .collect();
    assert_rows(&rows, 0.02, 0.02);
    // The zoo's models are PaddleClas's: Large differs from the paper's by the first block's
    // expand conv only (16×16 + batch norm's 2×16 trainable).
    let b = BTreeMap::from([("N".to_string(), 1)]);
    let trainable = |g: &oar_ir::Graph| oar_models::trainable_param_elements(g, &b);
    let zoo_large = oar_models::build("mobilenetv3_large_x1_0")
        .unwrap()
        .unwrap();
    let paper_large = MobileNetV3Config::paper(MobileNetV3Size::Large, 1.0)
        .build("mobilenetv3_large_x1_0")
        .unwrap();
    assert_eq!(
        trainable(&zoo_large) - trainable(&paper_large),
        16 * 16 + 2 * 16
    );
}

#[test]
fn ernie_parameter_counts() {
    let (base, _) = counts("ernie-3.0-base-zh");
    assert!(
        (base - 118.0).abs() / 118.0 < 0.01,
        "ernie-3.0-base-zh has {base:.1}M parameters"
    );
    let (b10, _) = counts("ernie-3.0-10b");
    assert!(
        (b10 / 1e3 - 10.0).abs() < 0.5,
        "ernie-3.0-10b has {:.2}B",
        b10 / 1e3
    );
    let (titan, _) = counts("ernie-3.0-titan");
    assert!(
        (titan / 1e3 - 260.0).abs() < 5.0,
        "ernie-3.0-titan has {:.1}B",
        titan / 1e3
    );
}

#[test]
fn titan_builds_in_under_5_seconds() {
    let t = Instant::now();
    let g = ErnieConfig::titan()
        .build_pretraining("ernie-3.0-titan")
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(g.len() > 4000);
    assert!(secs < 5.0, "building Titan took {secs:.2}s");
}

#[test]
fn every_zoo_model_builds_and_verifies() {
    for e in zoo() {
        let g = (e.build)().unwrap_or_else(|err| panic!("{}: {err}", e.name));
        oar_ir::verify(&g).unwrap();
        // The printed IR parses back to the same graph.
        if g.len() < 3000 {
            assert_eq!(oar_ir::parse(&oar_ir::print(&g)).unwrap(), g, "{}", e.name);
        }
    }
}

fn random_ids(n: usize, seq: usize, hi: i64, seed: u64) -> HostTensor {
    let mut s = seed;
    let data = (0..n * seq)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as i64) % hi
        })
        .collect();
    HostTensor::i64(vec![n, seq], data)
}

#[test]
fn ernie_titan_tiny_losses_start_near_ln_vocab() {
    let cfg = ErnieConfig::titan_tiny();
    let g = build("ernie-3.0-titan-tiny").unwrap().unwrap();
    let w = init_weights(&g, 7).unwrap();
    let (n, seq) = (2, 12);
    let positions = HostTensor::i64(vec![n, seq], (0..n).flat_map(|_| 0..seq as i64).collect());
    let mut weights = vec![0.0f32; n * seq];
    for i in (0..n * seq).step_by(3) {
        weights[i] = 1.0;
    }
    let inputs: BTreeMap<&str, HostTensor> = BTreeMap::from([
        ("input_ids", random_ids(n, seq, cfg.vocab as i64, 1)),
        ("token_type_ids", random_ids(n, seq, 2, 2)),
        ("position_ids", positions),
        ("task_type_ids", random_ids(n, seq, 3, 3)),
        ("mlm_labels", random_ids(n, seq, cfg.vocab as i64, 4)),
        ("mlm_weights", HostTensor::f32(vec![n, seq], weights)),
        ("lm_labels", random_ids(n, seq, cfg.vocab as i64, 5)),
        // The first 3 positions are prompt tokens: no LM loss there.
        (
            "lm_weights",
            HostTensor::f32(
                vec![n, seq],
                (0..n * seq)
                    .map(|i| if i % seq < 3 { 0.0 } else { 1.0 })
                    .collect(),
            ),
        ),
        ("adv_labels", HostTensor::f32(vec![n], vec![1.0, 0.0])),
    ]);
    let ordered: Vec<HostTensor> = g
        .inputs()
        .iter()
        .map(|&i| inputs[g.node(i).name.as_str()].clone())
        .collect();
    let out = run(&g, &ordered, &w).unwrap();
    let ln_v = (cfg.vocab as f64).ln();
    let mlm = out[0].to_f64()[0];
    let lm = out[1].to_f64()[0];
    let adv = out[2].to_f64()[0];
    assert!(
        mlm.is_finite() && (mlm - ln_v).abs() < 0.5,
        "MLM loss {mlm} vs ln(V) = {ln_v}"
    );
    assert!(
        lm.is_finite() && (lm - ln_v).abs() < 0.5,
        "LM loss {lm} vs ln(V) = {ln_v}"
    );
    assert!(
        adv.is_finite() && (adv - 2f64.ln()).abs() < 0.3,
        "adversarial loss {adv} vs ln 2"
    );
}

#[test]
fn lcnet_x1_0_runs_at_batch_2() {
    let g = build("lcnet_x1_0").unwrap().unwrap();
    let w = init_weights(&g, 3).unwrap();
    let n: usize = 2 * 3 * 224 * 224;
    let x = HostTensor::f32(
        vec![2, 3, 224, 224],
        (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect(),
    );
    let out = run(&g, &[x], &w).unwrap();
    assert_eq!(out[0].shape, vec![2, 1000]);
    let v = out[0].to_f64();
    assert!(v.iter().all(|x| x.is_finite()));
    // Different images give different logits.
    assert!(v[..1000]
        .iter()
        .zip(&v[1000..])
        .any(|(a, b)| (a - b).abs() > 1e-6));
}

/// The encoder-only configs build PaddleNLP's `ErnieForMaskedLM` parameter set: its
/// state-dict names and shapes (Linear weights `[in, out]`), the pooler, a 16-row task-type
/// table where PaddleNLP's config has `use_task_id` and none where it does not.
#[test]
fn ernie_encoder_only_configs_have_paddlenlp_parameters() {
    for (cfg, hidden, task_rows) in [
        (ErnieConfig::nano(), 312u64, Some(16u64)),
        (ErnieConfig::tiny(), 128, None),
    ] {
        let g = cfg.build_masked_lm("m").unwrap();
        let w = init_weights(&g, 1).unwrap();
        let shape = |n: &str| -> Option<Vec<usize>> { w.get(n).map(|t| t.shape.clone()) };
        let h = hidden as usize;
        let ffn = cfg.universal.ffn as usize;
        let expect = [
            ("ernie.embeddings.word_embeddings.weight", vec![40000, h]),
            ("ernie.embeddings.position_embeddings.weight", vec![2048, h]),
            ("ernie.embeddings.token_type_embeddings.weight", vec![4, h]),
            ("ernie.embeddings.layer_norm.weight", vec![h]),
            ("ernie.encoder.layers.0.self_attn.q_proj.weight", vec![h, h]),
            ("ernie.encoder.layers.0.self_attn.out_proj.bias", vec![h]),
            ("ernie.encoder.layers.0.linear1.weight", vec![h, ffn]),
            ("ernie.encoder.layers.0.linear2.weight", vec![ffn, h]),
            ("ernie.encoder.layers.0.norm2.bias", vec![h]),
            ("ernie.pooler.dense.weight", vec![h, h]),
            ("ernie.pooler.dense.bias", vec![h]),
            ("cls.predictions.transform.weight", vec![h, h]),
            ("cls.predictions.layer_norm.bias", vec![h]),
            ("cls.predictions.decoder_bias", vec![40000]),
        ];
        for (name, s) in expect {
            assert_eq!(shape(name), Some(s), "{name}");
        }
        let task = "ernie.embeddings.task_type_embeddings.weight";
        assert_eq!(shape(task), task_rows.map(|r| vec![r as usize, h]));
        // 16 tensors per layer, 5 or 6 embedding tensors, pooler 2, head 5 (decoder tied).
        let embeddings = 5 + usize::from(task_rows.is_some());
        assert_eq!(
            w.len(),
            embeddings + 16 * cfg.universal.layers as usize + 2 + 5
        );
        assert_eq!(cfg.eps, 1e-12);
    }
}
