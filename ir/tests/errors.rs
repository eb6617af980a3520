//! Bad input gets one clear error, never a panic: snapshots of each kind of mistake, and a
//! mutation test that feeds corrupted example files to the parser.

use oar_ir::cluster::Cluster;
use oar_ir::parse;

const MLP: &str = include_str!("../../examples/mlp.oir");
const CONVNET: &str = include_str!("../../examples/convnet.oir");
const TRANSFORMER: &str = include_str!("../../examples/transformer.oir");
const MESH: &str = include_str!("../../examples/mesh_2x2.oir");

fn parse_err(src: &str) -> String {
    match parse(src) {
        Ok(_) => panic!("expected an error for:\n{src}"),
        Err(e) => e.with_file("bad.oir").to_string(),
    }
}

#[test]
fn truncated_file() {
    let cut = &MLP[..MLP.find("%3 = matmul").unwrap() + 8];
    insta::assert_snapshot!(parse_err(cut));
}

#[test]
fn unknown_op() {
    insta::assert_snapshot!(parse_err(&MLP.replace("relu(%1)", "rleu(%1)")));
}

#[test]
fn wrong_arity() {
    insta::assert_snapshot!(parse_err(&MLP.replace("add(%0, %b1)", "add(%0, %b1, %b1)")));
}

#[test]
fn shape_mismatch() {
    insta::assert_snapshot!(parse_err(&MLP.replace("f32[256,10]", "f32[200,10]")));
}

#[test]
fn declared_type_disagrees_with_the_op() {
    insta::assert_snapshot!(parse_err(
        &MLP.replace("%2 = relu(%1) : f32[N,256]", "%2 = relu(%1) : f32[N,255]")
    ));
}

#[test]
fn unknown_symbol() {
    insta::assert_snapshot!(parse_err(
        &MLP.replace("%2 = relu(%1) : f32[N,256]", "%2 = relu(%1) : f32[M,256]")
    ));
}

#[test]
fn unknown_value() {
    insta::assert_snapshot!(parse_err(
        &MLP.replace("matmul(%2, %w2)", "matmul(%h, %w2)")
    ));
}

#[test]
fn unknown_mesh() {
    insta::assert_snapshot!(parse_err(
        &MESH.replace("#dist<mesh=@m, [R, S(1)]>", "#dist<mesh=@mesh, [R, S(1)]>")
    ));
}

#[test]
fn wrong_placement_count() {
    insta::assert_snapshot!(parse_err(&MESH.replace("[R, S(1)]>", "[R]>")));
}

#[test]
fn shard_of_a_missing_dim() {
    insta::assert_snapshot!(parse_err(&MESH.replace(
        "f32[256,10] #dist<mesh=@m, [S(0), R]>",
        "f32[256,10] #dist<mesh=@m, [S(2), R]>"
    )));
}

#[test]
fn bad_attribute() {
    insta::assert_snapshot!(parse_err(&CONVNET.replace(
        "{kernel=[2, 2], stride=[2, 2]}",
        "{kernel=[2, 2], strides=[2, 2]}"
    )));
}

#[test]
fn return_type_mismatch() {
    insta::assert_snapshot!(parse_err(&MLP.replace("-> (f32[N,10])", "-> (f32[N,11])")));
}

const GOOD_TOML: &str = r#"
name = "lab"

[inter_node]
kind = "100 Gb/s Ethernet"
bandwidth_gbs = 12.5
latency_us = 20.0

[[node_group]]
name = "gpu-box"
nodes = 2
devices_per_node = 4

[node_group.device]
kind = "gpu"
model = "A100-PCIE-40GB"
memory_gib = 40.0
memory_bandwidth_gbs = 1555.0
price_per_hour = 2.5

[node_group.device.peak_tflops]
f32 = 19.5
bf16 = 312.0

[node_group.intra_node]
kind = "PCIe 4.0 x16"
bandwidth_gbs = 32.0
latency_us = 5.0
"#;

fn cluster_err(text: &str) -> String {
    match Cluster::from_toml(text, "lab.toml") {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn good_cluster_toml_loads() {
    let c = Cluster::from_toml(GOOD_TOML, "lab.toml").unwrap();
    assert_eq!(c.num_devices(), 8);
    assert_eq!(
        c.node_groups[0].device.peak_flops(oar_ir::DType::BF16),
        Some(312e12)
    );
}

#[test]
fn cluster_toml_missing_field() {
    insta::assert_snapshot!(cluster_err(
        &GOOD_TOML.replace("devices_per_node = 4\n", "")
    ));
}

#[test]
fn cluster_toml_wrong_type() {
    insta::assert_snapshot!(cluster_err(
        &GOOD_TOML.replace("nodes = 2", "nodes = \"two\"")
    ));
}

#[test]
fn cluster_toml_unknown_field() {
    insta::assert_snapshot!(cluster_err(
        &GOOD_TOML.replace("memory_gib = 40.0", "memory_gb = 40.0")
    ));
}

#[test]
fn cluster_toml_bad_value() {
    insta::assert_snapshot!(cluster_err(
        &GOOD_TOML.replace("bandwidth_gbs = 32.0", "bandwidth_gbs = -1.0")
    ));
}

#[test]
fn cluster_toml_syntax() {
    insta::assert_snapshot!(cluster_err(
        &GOOD_TOML.replace("[inter_node]", "[inter_node")
    ));
}

/// A small deterministic generator, so a failure names a reproducible case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() as usize) % n.max(1)
    }
}

/// One random corruption: delete, insert, replace or duplicate a span, or truncate.
fn mutate(src: &str, rng: &mut Rng) -> String {
    let chars: Vec<char> = src.chars().collect();
    let alphabet: Vec<char> = "%@#(){}[]<>,:=*-\"\\0123456789.eNRS_ xfi\n\té"
        .chars()
        .collect();
    let mut out = chars.clone();
    for _ in 0..rng.below(3) + 1 {
        let len = out.len().max(1);
        let at = rng.below(len);
        let span = (rng.below(6) + 1).min(len - at);
        match rng.below(5) {
            0 => {
                out.drain(at..(at + span).min(out.len()));
            }
            1 => out.insert(at.min(out.len()), alphabet[rng.below(alphabet.len())]),
            2 => {
                if at < out.len() {
                    out[at] = alphabet[rng.below(alphabet.len())];
                }
            }
            3 => {
                let piece: Vec<char> = out[at..(at + span).min(out.len())].to_vec();
                let to = rng.below(out.len() + 1);
                out.splice(to..to, piece);
            }
            _ => out.truncate(at),
        }
    }
    out.into_iter().collect()
}

#[test]
fn corrupted_files_never_panic() {
    let sources = [MLP, CONVNET, TRANSFORMER, MESH];
    let mut rng = Rng(0x0a5e_ed00);
    let (mut ok, mut failed) = (0usize, 0usize);
    for i in 0..100_000 {
        let src = sources[i % sources.len()];
        let text = mutate(src, &mut rng);
        match std::panic::catch_unwind(|| parse(&text)) {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) => {
                // Every error renders with a position inside the file.
                let shown = e.to_string();
                assert!(e.line >= 1 && shown.contains('^'), "case {i}: {shown}");
                failed += 1;
            }
            Err(_) => panic!("parser panicked on case {i}:\n{text}"),
        }
    }
    assert_eq!(ok + failed, 100_000);
    assert!(
        failed > 50_000,
        "most corruptions must be rejected, only {failed} were"
    );
}

#[test]
fn corrupted_json_never_panics() {
    let g = parse(MESH).unwrap();
    let json = serde_json::to_string_pretty(&g).unwrap();
    let mut rng = Rng(7);
    for i in 0..5_000 {
        let text = mutate(&json, &mut rng);
        let r = std::panic::catch_unwind(|| oar_ir::read_graph(&text, "g.json").is_ok());
        assert!(r.is_ok(), "read_graph panicked on JSON case {i}:\n{text}");
    }
}

#[test]
fn modules_with_functions_round_trip_and_check_calls() {
    let text = "graph @f0(%in0: f32[N,4], %in1: f32[4]) -> (f32[N,4]) {\n  %2 = add(%in0, %in1) : f32[N,4]\n  %3 = relu(%2) : f32[N,4]\n  return %3\n}\n\ngraph @main(%x: f32[N,4]) -> (f32[N,4]) {\n  %b = param \"b\" : f32[4]\n  %y = fused(%x, %b) {func=@f0} : f32[N,4]\n  return %y\n}\n";
    let g = parse(text).unwrap();
    assert_eq!(g.functions.len(), 1);
    assert_eq!(oar_ir::print(&g), text);
    let bad = text.replace("fused(%x, %b)", "fused(%x, %x)");
    insta::assert_snapshot!(parse_err(&bad));
    let unknown = text.replace(
        "func=@f0} : f32[N,4]\n  return",
        "func=@f9} : f32[N,4]\n  return",
    );
    assert!(parse_err(&unknown).contains("unknown function @f9"));
}

/// A JSON graph whose input list names a node id it does not have is refused, not a panic
/// (found by the `ir_json` fuzz target: fuzz/regressions/ir_json/dangling-input-id).
#[test]
fn json_with_a_dangling_input_id_is_an_error() {
    let text = include_str!("../../fuzz/regressions/ir_json/dangling-input-id");
    let e = oar_ir::read_graph(text, "crash.json").expect_err("must not load");
    assert!(e.to_string().contains("does not have"), "{e}");
}
