//! Optimizer updates as IR, checked step by step against an independent f64
//! re-implementation of each optimizer (Paddle's formulation where it differs in form from
//! the graph's, e.g. AdamW's `lr_t` and `ε·sqrt(1−β2^t)`). Gradients are fed as graph inputs,
//! so these tests need no gradient rules. Every parameter and every optimizer slot is compared
//! after every step: within 1e-5 relative, values below 1 in magnitude within 1e-5 absolute.
//! The graph computes in f32, and Adam's `m/sqrt(v)` loses digits when the moment's terms
//! cancel; a wrong formula moves values by at least `lr·1e-2`, far above that.

mod training_common;

use oar_ir::TensorType;
use oar_passes::training::optim::{insert_optimizer, insert_optimizer_with};
use oar_passes::training::{Decay, DecayMask, OptimConfig, Optimizer, Schedule};
use oar_runtime::Weights;
use std::collections::BTreeMap;
use training_common::{graph_with_grads, initial_state, run, scalar, tensor, Rng, PARAMS};

type State = BTreeMap<String, Vec<f64>>;

/// Every tensor of `w` equals the reference, which holds the same names.
fn compare(w: &Weights, want: &State, what: &str) {
    let names: Vec<&String> = w.keys().collect();
    let want_names: Vec<&String> = want.keys().collect();
    assert_eq!(names, want_names, "{what}: parameter and slot names");
    for (name, v) in want {
        let got = w[name].to_f64();
        for (i, (a, b)) in got.iter().zip(v).enumerate() {
            let tol = 1e-5 * b.abs().max(1.0);
            assert!(
                (a - b).abs() <= tol,
                "{what}: {name}[{i}] = {a}, reference {b} (diff {:e})",
                (a - b).abs()
            );
        }
    }
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// One step of the reference optimizer on every parameter; `ranks` gives each parameter's
/// rank (for the default decay mask).
fn reference_step(
    cfg: &OptimConfig,
    s: &mut State,
    ranks: &[(&str, usize)],
    grads: &BTreeMap<String, Vec<f64>>,
    lr: f64,
    t: f64,
) {
    let mut grads = grads.clone();
    if let Some(clip) = cfg.clip_global_norm {
        let total = grads.values().map(|g| norm(g).powi(2)).sum::<f64>().sqrt();
        if total > clip {
            for g in grads.values_mut() {
                g.iter_mut().for_each(|x| *x *= clip / total);
            }
        }
    }
    for &(name, rank) in ranks {
        let decays = match &cfg.decay_mask {
            DecayMask::Auto => rank > 1,
            DecayMask::All => true,
            DecayMask::Only(l) => l.iter().any(|s| name.contains(s.as_str())),
            DecayMask::Except(l) => !l.iter().any(|s| name.contains(s.as_str())),
        };
        let g = &grads[name];
        let mut p = s[name].clone();
        let wd = if decays {
            cfg.optimizer.weight_decay()
        } else {
            0.0
        };
        match cfg.optimizer {
            Optimizer::Sgd {
                momentum, nesterov, ..
            } => {
                let gg: Vec<f64> = g.iter().zip(&p).map(|(g, p)| g + wd * p).collect();
                if momentum > 0.0 {
                    let key = format!("{name}.velocity");
                    let mut v = s[&key].clone();
                    for i in 0..p.len() {
                        v[i] = momentum * v[i] + gg[i];
                        let d = if nesterov {
                            gg[i] + momentum * v[i]
                        } else {
                            v[i]
                        };
                        p[i] -= lr * d;
                    }
                    s.insert(key, v);
                } else {
                    for i in 0..p.len() {
                        p[i] -= lr * gg[i];
                    }
                }
            }
            Optimizer::AdamW {
                beta1,
                beta2,
                epsilon,
                ..
            } => {
                let (k1, k2) = (format!("{name}.moment1"), format!("{name}.moment2"));
                let (mut m, mut v) = (s[&k1].clone(), s[&k2].clone());
                let (bc1, bc2) = (1.0 - beta1.powf(t), 1.0 - beta2.powf(t));
                let lr_t = lr * bc2.sqrt() / bc1;
                for i in 0..p.len() {
                    p[i] *= 1.0 - lr * wd;
                    m[i] = beta1 * m[i] + (1.0 - beta1) * g[i];
                    v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i];
                    p[i] -= lr_t * m[i] / (v[i].sqrt() + epsilon * bc2.sqrt());
                }
                s.insert(k1, m);
                s.insert(k2, v);
            }
            Optimizer::Lamb {
                beta1,
                beta2,
                epsilon,
                always_adapt,
                ..
            } => {
                let (k1, k2) = (format!("{name}.moment1"), format!("{name}.moment2"));
                let (mut m, mut v) = (s[&k1].clone(), s[&k2].clone());
                let mut r = vec![0.0; p.len()];
                for i in 0..p.len() {
                    m[i] = beta1 * m[i] + (1.0 - beta1) * g[i];
                    v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i];
                    let mh = m[i] / (1.0 - beta1.powf(t));
                    let vh = v[i] / (1.0 - beta2.powf(t));
                    r[i] = mh / (vh.sqrt() + epsilon) + wd * p[i];
                }
                let (pn, rn) = (norm(&p), norm(&r));
                let ratio = if (wd != 0.0 || always_adapt) && pn > 0.0 && rn > 0.0 {
                    pn / rn
                } else {
                    1.0
                };
                for i in 0..p.len() {
                    p[i] -= lr * ratio * r[i];
                }
                s.insert(k1, m);
                s.insert(k2, v);
            }
            Optimizer::Adagrad { epsilon, .. } => {
                let key = format!("{name}.moment");
                let mut a = s[&key].clone();
                for i in 0..p.len() {
                    let gi = g[i] + wd * p[i];
                    a[i] += gi * gi;
                    p[i] -= lr * gi / (a[i].sqrt() + epsilon);
                }
                s.insert(key, a);
            }
        }
        s.insert(name.to_string(), p);
    }
}

/// Runs `steps` optimizer steps of `cfg` in the graph and in the reference, comparing after
/// each. Gradients are random, of magnitude `grad_scale`.
fn check_optimizer(cfg: &OptimConfig, steps: u64, grad_scale: f64, seed: u64) {
    let (mut g, grads) = graph_with_grads(&PARAMS);
    let slots = insert_optimizer(&mut g, &grads, cfg).unwrap();
    oar_ir::verify(&g).unwrap();
    let schedule = Schedule::Warmup {
        warmup_steps: 2,
        start_lr: 0.01,
        end_lr: 0.1,
        base_lr: 0.1,
        decay: Decay::Cosine {
            t_max: steps,
            eta_min: 0.001,
        },
    };
    let mut rng = Rng(seed);
    let (mut w, mut want) = initial_state(&mut rng, &slots);
    let ranks: Vec<(&str, usize)> = PARAMS.iter().map(|(n, d)| (*n, d.len())).collect();
    for t in 1..=steps {
        let lr = schedule.lr(t) as f32 as f64;
        let mut inputs = BTreeMap::new();
        let mut gs = BTreeMap::new();
        for (name, dims) in PARAMS {
            let n = dims.iter().product::<u64>() as usize;
            let v = rng.vec(n, grad_scale);
            inputs.insert(format!("grad.{name}"), tensor(dims, &v));
            gs.insert(name.to_string(), v);
        }
        inputs.insert("lr".into(), scalar(lr));
        inputs.insert("step".into(), scalar(t as f64));
        run(&g, &inputs, &mut w);
        reference_step(cfg, &mut want, &ranks, &gs, lr, t as f64);
        compare(&w, &want, &format!("{:?} step {t}", cfg.optimizer));
    }
}

#[test]
fn sgd_plain_momentum_and_nesterov_match_the_reference() {
    for (momentum, nesterov) in [(0.0, false), (0.9, false), (0.9, true)] {
        let cfg = OptimConfig::new(Optimizer::Sgd {
            momentum,
            nesterov,
            weight_decay: 0.05,
        });
        check_optimizer(&cfg, 5, 1.0, 11);
    }
}

#[test]
fn adamw_matches_the_reference() {
    let cfg = OptimConfig::new("adamw".parse().unwrap());
    check_optimizer(&cfg, 6, 1.0, 12);
    // Strong decay on everything, with gradients small next to the parameters.
    let mut cfg = OptimConfig::new(Optimizer::AdamW {
        beta1: 0.8,
        beta2: 0.95,
        epsilon: 1e-6,
        weight_decay: 0.3,
    });
    cfg.decay_mask = DecayMask::All;
    check_optimizer(&cfg, 5, 0.01, 13);
}

#[test]
fn lamb_matches_the_reference() {
    let cfg = OptimConfig::new("lamb".parse().unwrap());
    check_optimizer(&cfg, 5, 1.0, 14);
    let mut cfg = OptimConfig::new(Optimizer::Lamb {
        beta1: 0.9,
        beta2: 0.99,
        epsilon: 1e-6,
        weight_decay: 0.1,
        always_adapt: true,
    });
    cfg.decay_mask = DecayMask::Except(vec!["head".into()]);
    check_optimizer(&cfg, 5, 0.5, 15);
}

#[test]
fn adagrad_matches_the_reference() {
    let cfg = OptimConfig::new(Optimizer::Adagrad {
        epsilon: 1e-6,
        initial_accumulator: 0.1,
        weight_decay: 0.02,
    });
    check_optimizer(&cfg, 5, 1.0, 16);
}

#[test]
fn global_norm_clipping_matches_the_reference() {
    // Gradients of norm ~4 against a clip of 0.5 (scaled), then ~0.04 (untouched).
    for (scale, seed) in [(1.0, 17), (0.01, 18)] {
        let mut cfg = OptimConfig::new("adamw".parse().unwrap());
        cfg.clip_global_norm = Some(0.5);
        check_optimizer(&cfg, 4, scale, seed);
        let mut cfg = OptimConfig::new(Optimizer::Sgd {
            momentum: 0.5,
            nesterov: false,
            weight_decay: 0.0,
        });
        cfg.clip_global_norm = Some(0.5);
        check_optimizer(&cfg, 4, scale, seed);
    }
}

#[test]
fn weight_decay_masks_select_parameters_by_rank_or_name() {
    let sgd = Optimizer::Sgd {
        momentum: 0.0,
        nesterov: false,
        weight_decay: 0.5,
    };
    for mask in [
        DecayMask::Auto,
        DecayMask::All,
        DecayMask::Only(vec!["bias".into()]),
        DecayMask::Except(vec!["fc.".into()]),
    ] {
        let mut cfg = OptimConfig::new(sgd.clone());
        cfg.decay_mask = mask;
        check_optimizer(&cfg, 3, 1.0, 19);
    }
    let m = TensorType::f32(&[4, 4]);
    let v = TensorType::f32(&[4]);
    assert!(DecayMask::Auto.decays("fc.weight", &m));
    assert!(!DecayMask::Auto.decays("ln.weight", &v));
    assert!(!DecayMask::Except(vec!["bias".into()]).decays("fc.bias", &v));
    assert!(DecayMask::Only(vec!["bias".into()]).decays("fc.bias", &v));
}

#[test]
fn unknown_optimizer_names_the_known_ones() {
    let err = "adam2".parse::<Optimizer>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown optimizer `adam2`; known: sgd, adamw, lamb, adagrad"
    );
    assert!(matches!(
        "AdamW".parse::<Optimizer>(),
        Ok(Optimizer::AdamW { .. })
    ));
}

#[test]
fn slots_are_named_after_their_parameter_and_initialised() {
    let (mut g, grads) = graph_with_grads(&PARAMS);
    let cfg = OptimConfig::new(Optimizer::Adagrad {
        epsilon: 1e-6,
        initial_accumulator: 0.25,
        weight_decay: 0.0,
    });
    let slots = insert_optimizer(&mut g, &grads, &cfg).unwrap();
    let names: Vec<&str> = slots.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["fc.weight.moment", "fc.bias.moment", "head.weight.moment"]
    );
    assert!(slots.iter().all(|s| s.init == 0.25));
    // The slots are parameters with their initialiser, updated by state updates, as are
    // the parameters; the scalars are inputs.
    let updated: Vec<&str> = g.state_updates().map(|(n, _)| n).collect();
    assert_eq!(
        updated,
        [
            "fc.weight",
            "fc.weight.moment",
            "fc.bias",
            "fc.bias.moment",
            "head.weight",
            "head.weight.moment"
        ]
    );
    let inputs: Vec<&str> = g
        .inputs()
        .iter()
        .map(|&i| g.node(i).name.as_str())
        .collect();
    assert_eq!(
        inputs,
        [
            "grad.fc.weight",
            "grad.fc.bias",
            "grad.head.weight",
            "lr",
            "step"
        ]
    );
    // The text format reads the step back (names with dots, constants, state updates).
    g.canonicalize_order();
    assert_eq!(oar_ir::parse(&oar_ir::print(&g)).unwrap(), g);
    // A gradient of the wrong type is refused.
    let (mut g, mut grads) = graph_with_grads(&PARAMS);
    grads.swap(0, 1);
    grads[0].0 = "fc.weight".into();
    let err = insert_optimizer(&mut g, &grads, &cfg).unwrap_err();
    assert!(
        err.to_string().contains("does not match the parameter"),
        "{err}"
    );
}

#[test]
fn a_decay_predicate_builds_what_the_equivalent_mask_builds() {
    let cfg = OptimConfig::new(Optimizer::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
        weight_decay: 0.1,
    });
    let (mut a, grads) = graph_with_grads(&PARAMS);
    insert_optimizer_with(&mut a, &grads, &cfg, &|name, _| name == "fc.bias").unwrap();
    let mut masked = cfg.clone();
    masked.decay_mask = DecayMask::Only(vec!["fc.bias".into()]);
    let (mut b, grads) = graph_with_grads(&PARAMS);
    insert_optimizer(&mut b, &grads, &masked).unwrap();
    assert_eq!(oar_ir::print(&a), oar_ir::print(&b));
    // Under the default mask the bias is not decayed: a different graph.
    let (mut c, grads) = graph_with_grads(&PARAMS);
    insert_optimizer(&mut c, &grads, &cfg).unwrap();
    assert_ne!(oar_ir::print(&a), oar_ir::print(&c));
}

#[test]
fn inserting_an_optimizer_twice_is_refused() {
    let (mut g, grads) = graph_with_grads(&PARAMS);
    let cfg = OptimConfig::new("lamb".parse().unwrap());
    insert_optimizer(&mut g, &grads, &cfg).unwrap();
    let err = insert_optimizer(&mut g, &grads, &cfg).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the graph already has a parameter `fc.weight.moment1`, the name of a new optimizer slot (was the optimizer inserted twice?)"
    );
}
