//! An optimizer step through the inference pipeline (canonicalize, eqsat, fuse, memory):
//! the optimized graph keeps its inputs, mode and state updates and computes the same new
//! parameters and slots over several steps (1e-6 relative, 1e-6 absolute below 1: rewrites
//! may reassociate f32 arithmetic), so the update ops fuse like any elementwise chain.

mod training_common;

use oar_ir::{ExecMode, Graph};
use oar_passes::training::optim::insert_optimizer;
use oar_passes::training::{OptimConfig, Optimizer};
use oar_passes::{PassContext, Pipeline};
use std::collections::BTreeMap;
use training_common::{graph_with_grads, initial_state, run, scalar, tensor, Rng, PARAMS};

fn optimize(g: Graph) -> Graph {
    let cluster = oar_ir::Cluster::resolve("cpu").expect("cpu preset");
    let mut cx = PassContext::new(cluster.node_groups[0].device.clone());
    cx.verify = true;
    cx.mode = g.mode;
    let p = Pipeline::named("inference", &[]).expect("pipeline");
    p.run(g, &cx, |_, _| {}).expect("optimize").0
}

#[test]
fn optimizer_steps_survive_the_inference_pipeline() {
    let optimizers = [
        Optimizer::Lamb {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-6,
            weight_decay: 0.01,
            always_adapt: false,
        },
        Optimizer::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.01,
        },
    ];
    for opt in optimizers {
        let mut cfg = OptimConfig::new(opt.clone());
        cfg.clip_global_norm = Some(0.7);
        cfg.accumulate = 2;
        let (mut g, grads) = graph_with_grads(&PARAMS);
        let slots = insert_optimizer(&mut g, &grads, &cfg).expect("insert");
        let opt_g = optimize(g.clone());
        assert_eq!(opt_g.mode, ExecMode::Training);
        assert_eq!(opt_g.state, g.state, "{opt:?}: state updates survive");
        assert!(
            opt_g.len() < g.len(),
            "{opt:?}: nothing was fused or simplified"
        );
        let mut rng = Rng(41);
        let (mut wa, _) = initial_state(&mut rng, &slots);
        let mut wb = wa.clone();
        for micro in 1..=6u64 {
            let mut inputs = BTreeMap::new();
            for (name, dims) in PARAMS {
                let v = rng.vec(dims.iter().product::<u64>() as usize, 1.0);
                inputs.insert(format!("grad.{name}"), tensor(dims, &v));
            }
            inputs.insert("lr".into(), scalar(0.05));
            inputs.insert("step".into(), scalar(micro.div_ceil(2) as f64));
            inputs.insert("apply".into(), scalar((micro % 2 == 0) as u8 as f64));
            run(&g, &inputs, &mut wa);
            run(&opt_g, &inputs, &mut wb);
            for (name, a) in &wa {
                let (diff, scale) = a.max_abs_diff(&wb[name]).expect("same shape");
                assert!(
                    diff <= 1e-6 * scale.max(1.0),
                    "{opt:?} micro-step {micro}: {name} differs by {diff:e}"
                );
            }
        }
    }
}
