//! `oar plan … --emit-graph` and `oar inspect FILE --rank R` through the real binary.

use std::path::PathBuf;
use std::process::Command;

fn oar(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_oar"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the oar binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let (code, out, err) = oar(args);
    assert_eq!(code, 0, "oar {args:?} failed: {err}");
    out
}

fn fails(args: &[&str]) -> String {
    let (code, out, err) = oar(args);
    assert_ne!(code, 0, "oar {args:?} should fail but printed {out}");
    assert!(!err.contains("panicked"), "oar {args:?} panicked: {err}");
    err
}

/// Plans ernie-3.0-titan-tiny as dp 2 × tp 2 on the 4-device CPU cluster into a fresh file.
fn emit(tag: &str, extra: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oar-plan-cli-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("g.oir");
    let p = path.to_str().unwrap();
    let mut args = vec![
        "plan",
        "ernie-3.0-titan-tiny",
        "--cluster",
        "examples/clusters/cpu4.toml",
        "--emit-graph",
        p,
    ];
    args.extend(extra);
    let report = ok(&args);
    assert!(report.contains("ernie-3.0-titan-tiny"), "{report}");
    path
}

#[test]
fn plan_emits_an_annotated_graph_and_inspect_prints_each_rank() {
    let path = emit("2x2", &["--dp", "2", "--tp", "2", "--pp", "1"]);
    let p = path.to_str().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains(r#"mesh @stage0 = {shape=[2, 2], axes=["dp", "tp"], devices=[0, 1, 2, 3]}"#)
            || text.contains(r#"mesh @stage0 = {shape=[2, 2], axes=["dp", "tp"]}"#),
        "{}",
        &text[..text.len().min(2000)]
    );
    assert!(
        text.contains("#dist<mesh=@stage0, [R, S(1)], stage=0>"),
        "column split"
    );
    // Every rank's graph, with its local shapes and collectives.
    for r in 0..4 {
        let out = ok(&["inspect", p, "--rank", &r.to_string(), "--sym", "N=4,seq=8"]);
        assert!(out.starts_with(&format!("// rank {r} of 4")), "{out}");
        assert!(out.contains("all_reduce("), "{out}");
    }
    let rank0 = ok(&["inspect", p, "--rank", "0", "--sym", "N=4,seq=8"]);
    // Header and the communication of one layer: the snapshot shows where the
    // partitioner reduces and gathers.
    let lines: Vec<&str> = rank0
        .lines()
        .filter(|l| {
            l.starts_with("//")
                || l.starts_with("mesh ")
                || l.starts_with("graph ")
                || ((l.contains("all_reduce(") || l.contains("all_gather("))
                    && !l.contains("nlu.")
                    && !l.contains("nlg."))
                || l.contains("encoder.layers.0.linear1.weight\"")
        })
        .collect();
    insta::assert_snapshot!(lines.join("\n"));
    // Unbound symbols get a stated default.
    let (code, _, err) = oar(&["inspect", p, "--rank", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("N, seq unbound, set to 8"), "{err}");
}

#[test]
fn bad_ranks_and_graphs_without_meshes_are_clear_errors() {
    let path = emit("errors", &["--dp", "4"]);
    let p = path.to_str().unwrap();
    let err = fails(&["inspect", p, "--rank", "4", "--sym", "N=4,seq=8"]);
    assert!(
        err.contains("--rank 4: rank 4 is not in any mesh of the graph (ranks: 0, 1, 2, 3)"),
        "{err}"
    );
    let err = fails(&["inspect", "examples/mlp.oir", "--rank", "0"]);
    assert!(err.contains("declares no process mesh"), "{err}");
    assert!(err.contains("--emit-graph"), "{err}");
    let err = fails(&[
        "plan",
        "examples/plan/gpt-18b.toml",
        "--cluster",
        "examples/clusters/cpu4.toml",
        "--emit-graph",
        "/nonexistent/g.oir",
    ]);
    assert!(err.contains("--emit-graph needs a zoo model"), "{err}");
}

#[test]
fn sequence_parallel_and_interleaved_plans_reach_the_rank_graphs() {
    // Megatron-SP: reduce-scatters after the row-parallel matmuls, all-gathers before the
    // column-parallel ones, on every rank.
    let path = emit(
        "sp",
        &[
            "--dp",
            "2",
            "--tp",
            "2",
            "--pp",
            "1",
            "--sequence-parallel",
            "true",
        ],
    );
    let p = path.to_str().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("in=[[S(0), R], [R, S(1)]]"), "column operand");
    for r in 0..4 {
        let out = ok(&["inspect", p, "--rank", &r.to_string(), "--sym", "N=4,seq=8"]);
        assert!(out.contains("reduce_scatter("), "{out}");
        assert!(out.contains("all_gather("), "{out}");
    }
    // Interleaved 1F1B (the planner's choice at tp 2 × pp 2): each device holds two
    // virtual stages and both sends and receives.
    let path = emit("interleaved", &["--dp", "1", "--tp", "2", "--pp", "2"]);
    let p = path.to_str().unwrap();
    let out = ok(&["inspect", p, "--rank", "0", "--sym", "N=2,seq=8"]);
    let header = out.lines().next().unwrap();
    assert!(header.contains("pipeline stages 0, 2:"), "{header}");
    assert!(out.contains(" send(") && out.contains(" = recv "), "{out}");
    let out = ok(&["inspect", p, "--rank", "3", "--sym", "N=2,seq=8"]);
    assert!(out
        .lines()
        .next()
        .unwrap()
        .contains("pipeline stages 1, 3:"));
}

#[test]
fn plan_reports_the_fault_model_and_mixed_stage_devices() {
    let out = ok(&[
        "plan",
        "examples/plan/gpt-18b.toml",
        "--cluster",
        "a100",
        "--nodes",
        "4",
        "--seq",
        "2048",
        "--mtbf-hours",
        "500",
        "--simulate-failures",
        "2000",
        "--train-tokens",
        "2e9",
        "--format",
        "json",
    ]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let f = &j["fault_model"];
    // 4 nodes of 500 h: the job's MTBF is 125 h.
    assert!(
        (f["job_mtbf_hours"].as_f64().unwrap() - 125.0).abs() < 1e-9,
        "{f}"
    );
    let (young, daly) = (
        f["young_interval_s"].as_f64().unwrap(),
        f["daly_interval_s"].as_f64().unwrap(),
    );
    let delta = f["checkpoint_seconds"].as_f64().unwrap();
    assert!((young - daly - delta).abs() < 1e-6 && delta > 0.0, "{f}");
    let sim = &f["simulation"];
    assert_eq!(sim["jobs"].as_u64(), Some(2000));
    assert!(
        sim["failed_with_restarts"].as_f64().unwrap()
            <= sim["failed_without_restarts"].as_f64().unwrap()
    );
    // Simulating needs a failure rate.
    let err = fails(&[
        "plan",
        "examples/plan/gpt-18b.toml",
        "--cluster",
        "a100",
        "--simulate-failures",
        "10",
    ]);
    assert!(err.contains("--mtbf-hours"), "{err}");
    // A mixed cluster: A100 stages first, then Ascend stages with fewer layers.
    let out = ok(&[
        "plan",
        "examples/plan/gpt-18b.toml",
        "--cluster",
        "examples/clusters/titan-mixed.toml",
        "--nodes",
        "1",
        "--seq",
        "2048",
        "--pp",
        "2",
        "--format",
        "json",
    ]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let devices: Vec<&str> = j["stage_devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d.as_str())
        .collect();
    assert_eq!(devices, ["A100-SXM4-80GB", "Ascend-910"], "{j}");
    let layers: Vec<u64> = j["stage_layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    assert!(layers[1] < layers[0], "{layers:?}");
}

#[test]
fn cluster_calibrate_quick_writes_a_file_the_planner_accepts() {
    let dir = std::env::temp_dir().join(format!("oar-calibrate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("local.toml");
    let p = path.to_str().unwrap();
    let started = std::time::Instant::now();
    ok(&["cluster", "calibrate", "--quick", "-o", p]);
    // The quick run is for tests; MPI (when mpirun exists) included.
    assert!(started.elapsed().as_secs() < 120, "{:?}", started.elapsed());
    let text = std::fs::read_to_string(&path).unwrap();
    let cluster = oar::ir::Cluster::from_toml(&text, p).expect("the written file parses");
    let device = &cluster.node_groups[0].device;
    assert!(device
        .peak_flops(oar::ir::DType::F32)
        .is_some_and(|f| f > 0.0));
    assert!(device.memory_bandwidth_gbs > 0.0);
    let table = device.efficiency.as_ref().expect("a measured table");
    assert!(
        table.source.contains("oar cluster calibrate"),
        "{}",
        table.source
    );
    assert!(table.gemm.len() >= 3, "{table:?}");
    for g in &table.gemm {
        assert_eq!(g.dtype, oar::ir::DType::F32);
        assert!(g.efficiency > 0.0 && g.efficiency <= 1.0, "{g:?}");
    }
    // The planner prices ERNIE 3.0 tiny's step on it.
    let report = ok(&[
        "plan",
        "ernie-3.0-tiny",
        "--cluster",
        p,
        "--batch",
        "16",
        "--seq",
        "128",
        "--format",
        "json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&report).unwrap();
    let step = json["step_time_s"].as_f64().expect("a step time");
    assert!(step.is_finite() && step > 0.0, "{step}");
    assert_eq!(json["devices"].as_u64(), Some(1), "{report}");
    std::fs::remove_dir_all(&dir).ok();
}

/// On one CPU device the plan is the training step's memory from its graph: PP-LCNet (which
/// the transformer planner cannot plan) alone, ERNIE beside the transformer report. The
/// figure itself is checked against the compiled step's allocations in
/// `codegen/tests/step_memory.rs`.
#[test]
fn one_cpu_device_plans_report_the_step_graphs_memory() {
    let cpu1 = "examples/clusters/cpu1.toml";
    let report = ok(&[
        "plan",
        "lcnet_x0_25",
        "--cluster",
        cpu1,
        "--batch",
        "32",
        "--image-size",
        "64",
        "--classes",
        "10",
        "--threads",
        "2",
        "--format",
        "json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&report).unwrap();
    let peak = json["peak_bytes"].as_u64().expect("a peak");
    let parts = json["breakdown_bytes"].as_object().expect("a breakdown");
    let sum: u64 = parts.values().filter_map(|v| v.as_u64()).sum();
    assert_eq!(sum, peak, "{report}");
    // About 42 MiB (docs/training.md): activations, not weights, dominate.
    assert!((30 << 20..60 << 20).contains(&peak), "{report}");
    assert_eq!(json["fits"].as_bool(), Some(true));
    // A larger batch needs more.
    let text = ok(&[
        "plan",
        "lcnet_x0_25",
        "--cluster",
        cpu1,
        "--batch",
        "64",
        "--image-size",
        "64",
    ]);
    assert!(text.contains("activations kept for the backward"), "{text}");
    // ERNIE: the transformer report is unchanged, the step memory is added.
    let report = ok(&[
        "plan",
        "ernie-3.0-tiny",
        "--cluster",
        cpu1,
        "--batch",
        "4",
        "--seq",
        "32",
        "--vocab",
        "8192",
        "--format",
        "json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert!(json["step_time_s"].as_f64().is_some(), "{report}");
    let step = &json["one_device_step_memory"];
    assert!(
        step["peak_bytes"].as_u64().is_some_and(|b| b > 0),
        "{report}"
    );
    // Bad settings are errors, not panics.
    let err = fails(&["plan", "lcnet_x0_25", "--cluster", cpu1, "--batch", "0"]);
    assert!(err.contains("--batch"), "{err}");
    let err = fails(&["plan", "no-such-model", "--cluster", cpu1]);
    assert!(err.contains("no-such-model"), "{err}");
}
