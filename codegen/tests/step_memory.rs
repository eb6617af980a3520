//! The step-graph memory model `oar plan` uses on one CPU device
//! (`oar_passes::step_memory::predict_step_memory`) against the memory the compiled step
//! really allocates, for PP-LCNet x0.25 (batch 32, 64×64) and ERNIE 3.0 tiny (a small batch
//! and sequence): the prediction must be within 10% of the measurement.
//!
//! What is measured: this test binary's global allocator counts the bytes the Rust heap
//! holds. The step is lowered and JIT-compiled first (LLVM's own heap is C++'s, not
//! counted, and it is freed before the step runs in `oar train` too), the weights and the
//! batch are made, then the count's high-water mark is reset to what is live and the
//! executor is built (every buffer of the program, each thread's scratch, the weights and
//! optimizer slots copied in) and runs one step the way `CompiledRunner` does (dropout
//! masks drawn, the loss and logits read back, the state committed). The figure is that
//! high-water mark minus what was live before. The prediction reads only the step graph;
//! it never sees the compiled program or its storage plan. One test function, so no other
//! test allocates while it measures.

use oar_codegen::cpu::{host_cpu, jit};
use oar_codegen::kernel::{build_kernels, Tiling};
use oar_ir::{DType, Graph};
use oar_passes::step_memory::{predict_step_memory, StepMemory, StepMemoryOptions};
use oar_passes::training::{build_train_step, LossKind, TrainConfig, TrainStep};
use oar_runtime::init::init_weights;
use oar_runtime::program::Executor;
use oar_runtime::HostTensor;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting live bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            if new >= l.size() {
                grew(new - l.size());
            } else {
                LIVE.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const THREADS: usize = 2;

/// One batch of the step's inputs: zeros for the integer inputs (valid token ids,
/// positions and labels), a small constant image, lr, step 1.
fn inputs(g: &Graph) -> Vec<HostTensor> {
    g.inputs()
        .iter()
        .map(|&id| {
            let n = g.node(id);
            let t = &n.outputs[0];
            let dims: Vec<usize> = t
                .shape
                .as_static()
                .expect("static inputs")
                .iter()
                .map(|&d| d as usize)
                .collect();
            let len = dims.iter().product();
            match (t.dtype, n.name.as_str()) {
                (DType::F32, "lr") => HostTensor::f32(dims, vec![1e-3]),
                (DType::F32, "step") => HostTensor::f32(dims, vec![1.0]),
                (DType::F32, _) => HostTensor::f32(dims, vec![0.25; len]),
                (DType::I64, _) => HostTensor::i64(dims, vec![0; len]),
                (other, name) => panic!("input `{name}` is {}", other.name()),
            }
        })
        .collect()
}

/// Predicted and measured peak of `step` (bytes).
fn predicted_and_measured(label: &str, model: &Graph, step: &TrainStep) -> (StepMemory, usize) {
    let cpu = host_cpu().expect("host CPU");
    let opts = StepMemoryOptions {
        slots: step.slots.iter().map(|s| s.name.clone()).collect(),
        threads: THREADS as u64,
        scratch_per_thread: Tiling::for_cpu(&cpu).scratch_bytes() as u64,
    };
    let predicted = predict_step_memory(&step.graph, &opts).expect("prediction");

    let compiled = build_kernels(&step.graph, &BTreeMap::new(), &cpu).expect("lowering");
    let code = jit(&compiled).expect("JIT");
    let mut weights = init_weights(model, 3).expect("init");
    weights.extend(step.init_state());
    let batch = inputs(&step.graph);
    let kernels = code.kernels.clone();
    let outputs = step.graph.model_outputs().len();

    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let mut exec = Executor::new(compiled.program, kernels, &weights, THREADS).expect("executor");
    exec.set_dropout(Some((7, 1)));
    let outs = exec.run_first(&batch, outputs).expect("step");
    exec.commit_state();
    let measured = PEAK.load(Ordering::Relaxed) - before;
    assert!(
        outs[0].to_f64()[0].is_finite(),
        "{label}: the loss is finite"
    );
    drop(outs);
    drop(exec);
    drop(code);

    let mib = |b: f64| b / (1u64 << 20) as f64;
    eprintln!(
        "{label}: predicted {:.2} MiB, measured {:.2} MiB ({:+.1}%)",
        mib(predicted.total() as f64),
        mib(measured as f64),
        100.0 * (predicted.total() as f64 / measured as f64 - 1.0)
    );
    for (what, bytes) in predicted.parts() {
        eprintln!("  {what}: {:.2} MiB", mib(bytes as f64));
    }
    (predicted, measured)
}

fn assert_within_10_percent(label: &str, p: &StepMemory, measured: usize) {
    let rel = (p.total() as f64 - measured as f64).abs() / measured as f64;
    assert!(
        rel <= 0.10,
        "{label}: predicted {} bytes, measured {measured} ({:.1}% off)",
        p.total(),
        100.0 * rel
    );
}

#[test]
fn predicted_step_memory_is_within_10_percent_of_the_compiled_steps_allocations() {
    // PP-LCNet x0.25 as `oar train lcnet_x0_25 --image-size 64 --batch 32` on the digits
    // (10 classes) builds it: AdamW, dropout 0.2 before the classifier.
    let cfg = oar_models::LcNetConfig {
        image_size: 64,
        class_num: 10,
        ..oar_models::LcNetConfig::new(0.25)
    };
    let model = cfg.build("lcnet_x0_25").expect("build");
    let bind = [("N".to_string(), 32u64)].into();
    let model = oar_passes::parallel::specialize(&model, &bind).expect("bind N");
    let step =
        build_train_step(&model, &TrainConfig::new("adamw".parse().expect("adamw"))).expect("step");
    let (p, m) = predicted_and_measured("PP-LCNet x0.25, batch 32, 64x64", &model, &step);
    // The activations the backward reads dominate an image model's step.
    assert!(p.activations > p.parameters + p.optimizer_state);
    assert_within_10_percent("PP-LCNet", &p, m);

    // ERNIE 3.0 tiny's masked-LM step (3 layers, hidden 128) at the vocabulary `oar train`
    // trains (8192), batch 4 × seq 32.
    let mut cfg = oar_models::ernie_config("ernie-3.0-tiny").expect("zoo");
    cfg.vocab = 8192;
    let model = cfg.build_masked_lm("ernie-3.0-tiny").expect("build");
    let bind = [("N".to_string(), 4u64), ("seq".to_string(), 32u64)].into();
    let model = oar_passes::parallel::specialize(&model, &bind).expect("bind");
    let mut tc = TrainConfig::new("adamw".parse().expect("adamw"));
    tc.loss = LossKind::MaskedLm;
    let step = build_train_step(&model, &tc).expect("step");
    let (p, m) = predicted_and_measured("ERNIE 3.0 tiny, batch 4 x seq 32", &model, &step);
    assert_within_10_percent("ERNIE 3.0 tiny", &p, m);
}
