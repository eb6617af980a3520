//! Per-rank graphs with collectives and send/recv, compiled through LLVM and run on thread
//! ranks with `LocalComm`, against the interpreter's `run_on_rank` (to 1e-6).

use oar_codegen::cpu::jit;
use oar_codegen::jit::{CompileError, JitModel};
use oar_codegen::kernel::{build_kernels, Compiled};
use oar_codegen::package::{package, Artifact, PackageError};
use oar_ir::Graph;
use oar_runtime::comm::{Communicator, LocalComm};
use oar_runtime::init::init_weights;
use oar_runtime::program::{ExecError, Executor, KernelFn};
use oar_runtime::{run_on_rank, HostTensor, Weights};
use std::collections::BTreeMap;
use std::sync::Arc;

const TOL: f64 = 1e-6;

/// One rank's graph on a mesh of `mesh` devices: collectives along `axis` (n = its extent)
/// over a matmul whose weight differs per rank, so every reduction has work to do.
fn rank_graph(mesh: &[u64], axis: usize) -> Graph {
    let n = mesh[axis] as usize;
    let c = 2 * n;
    let dims: Vec<String> = mesh.iter().map(u64::to_string).collect();
    let axes: Vec<String> = (0..mesh.len()).map(|a| format!("\"a{a}\"")).collect();
    let g = format!("mesh=@m, mesh_axis={axis}");
    let src = format!(
        r#"mesh @m = {{shape=[{dims}], axes=[{axes}]}}

graph @rank(%x: f32[4,{c}]) -> (f32[4,{c}], f32[4,{c}], f32[4,{cn}], f32[4,{c}], f32[{n4},2], f32[4,{c}], f32[{c},4]) {{
  %w = param "w" : f32[{c},{c}]
  %h = matmul(%x, %w) : f32[4,{c}]
  %a = all_reduce(%h) {{op=sum, {g}}} : f32[4,{c}]
  %r = tanh(%a) : f32[4,{c}]
  %m = all_reduce(%h) {{op=max, {g}}} : f32[4,{c}]
  %ga = all_gather(%r) {{axis=1, {g}}} : f32[4,{cn}]
  %s = reduce_scatter(%ga) {{op=mean, axis=1, {g}}} : f32[4,{c}]
  %t = all_to_all(%s) {{split_axis=1, concat_axis=0, {g}}} : f32[{n4},2]
  %b = broadcast(%x) {{root=1, {g}}} : f32[4,{c}]
  %v = reshape(%h) {{shape=[{c}, 4]}} : f32[{c},4]
  %p = all_reduce(%v) {{op=prod, {g}}} : f32[{c},4]
  return %r, %m, %ga, %s, %t, %b, %p
}}
"#,
        dims = dims.join(", "),
        axes = axes.join(", "),
        cn = c * n,
        n4 = 4 * n,
    );
    oar_ir::text::parse(&src).unwrap_or_else(|e| panic!("{e}\n{src}"))
}

fn random(shape: Vec<usize>, seed: u64) -> HostTensor {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 20001) as f32 / 10000.0 - 1.0
        })
        .collect();
    HostTensor::f32(shape, data)
}

/// Each rank's inputs and weights: different data on every rank.
fn rank_data(g: &Graph, ranks: usize) -> Vec<(Vec<HostTensor>, Weights)> {
    (0..ranks as u64)
        .map(|r| {
            let inputs = g
                .inputs()
                .iter()
                .enumerate()
                .map(|(k, &i)| {
                    let t = &g.node(i).outputs[0];
                    let shape = t.shape.eval(&BTreeMap::new(), 1);
                    random(
                        shape.iter().map(|&d| d as usize).collect(),
                        100 * r + k as u64 + 1,
                    )
                })
                .collect();
            (inputs, init_weights(g, 7 + r).expect("weights"))
        })
        .collect()
}

/// Runs `f(rank index, communicator)` on one thread per rank.
fn on_ranks<T: Send>(
    comms: Vec<LocalComm>,
    f: impl Fn(usize, Arc<dyn Communicator>) -> T + Sync,
) -> Vec<T> {
    std::thread::scope(|s| {
        let hs: Vec<_> = comms
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let f = &f;
                s.spawn(move || f(i, Arc::new(c)))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("rank thread"))
            .collect()
    })
}

fn compile(g: &Graph) -> Compiled {
    let cpu = oar_codegen::cpu::host_cpu().expect("host cpu");
    build_kernels(g, &BTreeMap::new(), &cpu).expect("build")
}

/// Compiles each rank's graph (on this thread: LLVM engines stay here), then runs the
/// programs on thread ranks and the interpreter on other thread ranks; compares.
fn check_against_interpreter(graphs: &[Graph], ranks: &[u64], threads: usize) {
    let data: Vec<_> = graphs
        .iter()
        .zip(rank_data(&graphs[0], ranks.len()))
        .map(|(_, d)| d)
        .collect();
    let want = on_ranks(LocalComm::group(ranks), |i, c| {
        run_on_rank(&graphs[i], &data[i].0, &data[i].1, c.as_ref())
            .unwrap_or_else(|e| panic!("interpreter, rank {i}: {e}"))
    });
    let compiled: Vec<Compiled> = graphs.iter().map(compile).collect();
    // The engines stay on this thread and outlive the rank threads that call their code.
    let code: Vec<_> = compiled.iter().map(|c| jit(c).expect("jit")).collect();
    let kernels: Vec<Vec<KernelFn>> = code.iter().map(|c| c.kernels.clone()).collect();
    let got = on_ranks(LocalComm::group(ranks), |i, c| {
        let mut exec = Executor::with_communicator(
            compiled[i].program.clone(),
            kernels[i].clone(),
            &data[i].1,
            threads,
            c,
        )
        .unwrap_or_else(|e| panic!("executor, rank {i}: {e}"));
        // Twice: a second run must see fresh messages, not leftovers of the first.
        exec.run(&data[i].0).expect("first run");
        exec.run(&data[i].0)
            .unwrap_or_else(|e| panic!("program, rank {i}: {e}"))
    });
    for (r, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.len(), w.len());
        for (k, (a, b)) in g.iter().zip(w).enumerate() {
            let (d, scale) = a.max_abs_diff(b).expect("same shape");
            assert!(
                d <= TOL * scale.max(1.0),
                "rank {r} output {k}: max |diff| {d:e} (scale {scale})"
            );
        }
    }
}

#[test]
fn collectives_compile_and_match_the_interpreter_on_2_3_4_ranks() {
    for n in 2..=4u64 {
        let g = rank_graph(&[n], 0);
        let ranks: Vec<u64> = (0..n).collect();
        check_against_interpreter(&vec![g; n as usize], &ranks, 2);
    }
}

#[test]
fn collectives_over_either_axis_of_a_2x2_mesh() {
    for axis in 0..2 {
        let g = rank_graph(&[2, 2], axis);
        check_against_interpreter(&vec![g; 4], &[0, 1, 2, 3], 1);
    }
}

#[test]
fn send_and_recv_between_two_compiled_ranks() {
    let stage0 = oar_ir::text::parse(
        r#"graph @stage0(%x: f32[3,5]) -> (f32[3,5]) {
  %w = param "w0" : f32[5,5]
  %h = matmul(%x, %w) : f32[3,5]
  %a = tanh(%h) : f32[3,5]
  %s = send(%a) {peer=1} : ()
  return %a
}
"#,
    )
    .expect("stage 0");
    let stage1 = oar_ir::text::parse(
        r#"graph @stage1(%y: f32[3,5]) -> (f32[3,5]) {
  %r = recv {peer=0} : f32[3,5]
  %w = param "w1" : f32[5,5]
  %h = matmul(%r, %w) : f32[3,5]
  %o = add(%h, %y) : f32[3,5]
  return %o
}
"#,
    )
    .expect("stage 1");
    let mut w = init_weights(&stage0, 1).expect("w0");
    w.extend(init_weights(&stage1, 2).expect("w1"));
    let graphs = [stage0, stage1];
    let inputs = [random(vec![3, 5], 1), random(vec![3, 5], 2)];
    let want = on_ranks(LocalComm::group(&[0, 1]), |i, c| {
        run_on_rank(&graphs[i], &inputs[i..=i], &w, c.as_ref()).expect("interpreter")
    });
    let compiled: Vec<Compiled> = graphs.iter().map(compile).collect();
    let code: Vec<_> = compiled.iter().map(|c| jit(c).expect("jit")).collect();
    let kernels: Vec<Vec<KernelFn>> = code.iter().map(|c| c.kernels.clone()).collect();
    let got = on_ranks(LocalComm::group(&[0, 1]), |i, c| {
        let program = compiled[i].program.clone();
        let mut exec =
            Executor::with_communicator(program, kernels[i].clone(), &w, 1, c).expect("executor");
        exec.run(&inputs[i..=i]).expect("run")
    });
    for r in 0..2 {
        let (d, scale) = got[r][0].max_abs_diff(&want[r][0]).expect("same shape");
        assert!(d <= TOL * scale.max(1.0), "rank {r}: {d:e}");
    }
}

#[test]
fn a_program_with_collectives_needs_a_communicator() {
    let g = rank_graph(&[2], 0);
    let w = init_weights(&g, 1).expect("weights");
    let Err(e) = JitModel::new(&g, &BTreeMap::new(), &w, 1) else {
        panic!("compiled and bound without a communicator");
    };
    assert!(
        matches!(
            e,
            CompileError::Exec(ExecError::NoCommunicator {
                what: "all_reduce",
                ..
            })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("communicator"), "{e}");
}

#[test]
fn packaging_refuses_programs_that_communicate() {
    let g = rank_graph(&[2], 0);
    let w = init_weights(&g, 1).expect("weights");
    let out = std::env::temp_dir().join(format!("oar-collectives-{}", std::process::id()));
    let e = package(
        &compile(&g),
        &["x".into()],
        &w,
        Artifact::Executable,
        true,
        &out,
    )
    .expect_err("packaged a program with collectives");
    assert!(matches!(e, PackageError::Communicates { .. }), "{e}");
    assert!(!out.exists(), "nothing is built");
}
