//! Learning-rate schedules at key steps against Paddle's formulas, evaluated by hand here
//! (`LinearWarmup`, `CosineAnnealingDecay`'s closed form, `PolynomialDecay`); the
//! comparison with Paddle itself is in `training_paddle.rs`.

use oar_passes::training::{Decay, Schedule};

fn close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-12 * want.abs().max(1e-6),
        "{what}: {got} vs {want}"
    );
}

fn warmup(decay: Decay) -> Schedule {
    Schedule::Warmup {
        warmup_steps: 10,
        start_lr: 0.0,
        end_lr: 0.1,
        base_lr: 0.1,
        decay,
    }
}

#[test]
fn warmup_then_cosine_at_key_steps() {
    let s = warmup(Decay::Cosine {
        t_max: 90,
        eta_min: 0.001,
    });
    // Step 1 is epoch 0: the start of the warmup.
    close(s.lr(1), 0.0, "first step");
    close(s.lr(6), 0.05, "half-way through the warmup");
    close(s.lr(10), 0.09, "last warmup step");
    // Epoch 10: the cosine at its start, then its middle and its end.
    close(s.lr(11), 0.1, "cosine start");
    close(s.lr(56), 0.001 + 0.099 * 0.5, "cosine middle");
    close(s.lr(101), 0.001, "cosine end");
    let e = 30.0;
    close(
        s.lr(41),
        0.001 + 0.099 * (1.0 + (std::f64::consts::PI * e / 90.0).cos()) / 2.0,
        "cosine at epoch 30 after warmup",
    );
}

#[test]
fn warmup_then_polynomial_and_linear_at_key_steps() {
    let s = warmup(Decay::Polynomial {
        decay_steps: 100,
        end_lr: 1e-4,
        power: 2.0,
    });
    close(s.lr(11), 0.1, "decay start");
    close(s.lr(61), (0.1 - 1e-4) * 0.25 + 1e-4, "half-way: (1 − 1/2)²");
    close(s.lr(111), 1e-4, "decay end");
    close(s.lr(500), 1e-4, "held after the end");
    let l = warmup(Decay::linear(50, 0.0));
    close(l.lr(36), 0.05, "linear half-way");
    close(l.lr(61), 0.0, "linear end");
    assert_eq!(Schedule::Constant { lr: 0.3 }.lr(7), 0.3);
}

#[test]
fn schedules_read_back_from_json() {
    let s = warmup(Decay::Cosine {
        t_max: 5,
        eta_min: 0.0,
    });
    let text = serde_json::to_string(&s).unwrap();
    let back: Schedule = serde_json::from_str(&text).unwrap();
    assert_eq!(back, s);
}
