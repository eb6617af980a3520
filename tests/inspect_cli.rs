//! End-to-end tests of `oar inspect` and `oar cluster` through the real binary.

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

#[test]
fn transformer_flops_match_a_hand_count() {
    let out = ok(&[
        "inspect",
        "examples/transformer.oir",
        "--stats",
        "--format",
        "json",
        "--sym",
        "N=2",
    ]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Hand count for one sample of one pre-norm layer: S=128 tokens, D=256, H=4 heads, F=1024.
    // A multiply-accumulate is 2 FLOPs; elementwise ops 1 per element; layer_norm 7 and
    // softmax 5 per element (ir/README.md).
    let (s, d, h, f) = (128u64, 256u64, 4u64, 1024u64);
    let layer_norms = 2 * 7 * s * d;
    let qkv = 3 * (2 * s * d * d + s * d);
    let attention = 2 * s * s * d + h * s * s + 5 * h * s * s + 2 * s * s * d;
    let out_proj = 2 * s * d * d + s * d;
    let residuals = 2 * s * d;
    let ffn = (2 * s * d * f + s * f) + s * f + (2 * s * f * d + s * d);
    let per_layer = layer_norms + qkv + attention + out_proj + residuals + ffn;
    let batch = 2;
    assert_eq!(j["flops"].as_u64().unwrap(), batch * 2 * per_layer);
    // Parameters: per layer 4 D×D projections with bias, two FFN matrices with bias, two norms.
    let params = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 2 * 2 * d;
    assert_eq!(j["param_elements"].as_u64().unwrap(), 2 * params);
    assert_eq!(j["symbols"]["N"].as_u64().unwrap(), 2);
}

#[test]
fn stats_snapshot() {
    insta::assert_snapshot!(ok(&["inspect", "examples/convnet.oir", "--stats"]));
}

#[test]
fn inspect_round_trips_text_and_json() {
    for f in ["mlp", "convnet", "transformer", "mesh_2x2"] {
        let path = format!("examples/{f}.oir");
        let text = ok(&["inspect", &path]);
        let source =
            std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let body: String = source
            .lines()
            .filter(|l| !l.starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(text, body, "{f}: printing changed the file");
        let json = ok(&["inspect", &path, "--format", "json"]);
        let tmp = std::env::temp_dir().join(format!("oar-test-{f}-{}.json", std::process::id()));
        std::fs::write(&tmp, json).unwrap();
        assert_eq!(
            ok(&["inspect", tmp.to_str().unwrap()]),
            text,
            "{f}: JSON round trip"
        );
        let _ = std::fs::remove_file(tmp);
    }
}

#[test]
fn mesh_example_prints_dist_annotations() {
    insta::assert_snapshot!(ok(&["inspect", "examples/mesh_2x2.oir"]));
}

#[test]
fn dot_output_renders_with_graphviz() {
    let dot = ok(&["inspect", "examples/convnet.oir", "--format", "dot"]);
    assert!(dot.starts_with("digraph \"convnet\""));
    assert!(dot.contains("n2 [label=\"%c1\\nconv2d\\nf32[N,16,32,32]\""));
    let has_dot = Command::new("dot").arg("-V").output().is_ok();
    if !has_dot {
        eprintln!(
            "skipping the graphviz render: `dot` is not installed (scripts/setup.sh installs it)"
        );
        return;
    }
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dot.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
}

#[test]
fn cluster_show_snapshot() {
    insta::assert_snapshot!(ok(&["cluster", "show", "dgx-a100-80g", "--nodes", "16"]));
}

#[test]
fn cluster_list_snapshot() {
    insta::assert_snapshot!(ok(&["cluster", "list"]));
}

#[test]
fn cluster_files_load_in_both_formats() {
    let dir = std::env::temp_dir().join(format!("oar-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = ok(&[
        "cluster", "show", "v100", "--nodes", "4", "--format", "toml",
    ]);
    let json = ok(&[
        "cluster", "show", "v100", "--nodes", "4", "--format", "json",
    ]);
    std::fs::write(dir.join("c.toml"), toml).unwrap();
    std::fs::write(dir.join("c.json"), json).unwrap();
    let direct = ok(&["cluster", "show", "v100", "--nodes", "4"]);
    assert!(direct.contains("32 devices"));
    assert_eq!(
        ok(&["cluster", "show", dir.join("c.toml").to_str().unwrap()]),
        direct
    );
    assert_eq!(
        ok(&["cluster", "show", dir.join("c.json").to_str().unwrap()]),
        direct
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn cli_errors_are_clear_and_exit_non_zero() {
    let errs = [
        fails(&["inspect", "examples/missing.oir"]),
        fails(&["cluster", "show", "tpu-v9"]),
        fails(&["inspect", "examples/mlp.oir", "--stats", "--sym", "N"]),
        fails(&["cluster", "show", "a100", "--nodes", "0"]),
    ];
    insta::assert_snapshot!(errs.join("\n---\n"));
}

#[test]
fn bad_graph_file_error_names_the_file_and_line() {
    let dir = std::env::temp_dir().join(format!("oar-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.oir");
    std::fs::write(
        &f,
        "graph @g(%x: f32[4]) -> (f32[4]) {\n  %y = relu(%x, %x) : f32[4]\n  return %y\n}\n",
    )
    .unwrap();
    let err = fails(&["inspect", f.to_str().unwrap()]);
    assert!(err.contains("bad.oir:2:8"), "{err}");
    assert!(err.contains("`relu` takes 1 inputs, found 2"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_oar"))
        .args(["inspect", "ernie-3.0-base-zh"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read a little, then hang up, as `| head` does.
    let mut first = [0u8; 64];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}
