//! Optimizers applied row by row on the servers (and to the workers' dense parameters as
//! one row each). Formulas and f32 operation order are those of passes' optimizer updates
//! (`passes/src/training/update.rs`), so a parameter-server run and single-process training
//! agree to rounding.

/// A row-wise optimizer with its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SparseOptim {
    /// `p -= lr·g`.
    Sgd { lr: f32 },
    /// `a += g²; p -= lr·(g / (sqrt(a) + ε))`, `a` starting at `initial`.
    Adagrad { lr: f32, epsilon: f32, initial: f32 },
    /// Adam with bias correction, counted per row ("lazy" Adam: a row's moments and step
    /// advance only when the row is pushed).
    Adam {
        lr: f32,
        beta1: f32,
        beta2: f32,
        epsilon: f32,
    },
}

impl SparseOptim {
    /// By name with the learning rate (Paddle's defaults otherwise).
    pub fn by_name(name: &str, lr: f32) -> Option<SparseOptim> {
        Some(match name {
            "sgd" => SparseOptim::Sgd { lr },
            "adagrad" => SparseOptim::Adagrad {
                lr,
                epsilon: 1e-6,
                initial: 0.0,
            },
            "adam" => SparseOptim::Adam {
                lr,
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 1e-8,
            },
            _ => return None,
        })
    }

    /// State floats per row of width `dim`.
    pub fn state_len(&self, dim: usize) -> usize {
        match self {
            SparseOptim::Sgd { .. } => 0,
            SparseOptim::Adagrad { .. } => dim,
            SparseOptim::Adam { .. } => 2 * dim,
        }
    }

    /// A fresh row's state.
    pub fn init_state(&self, dim: usize) -> Vec<f32> {
        match self {
            SparseOptim::Adagrad { initial, .. } => vec![*initial; dim],
            _ => vec![0.0; self.state_len(dim)],
        }
    }

    /// Applies gradient `g` to row `p` with state `state`; `step` is the row's update
    /// count, incremented here.
    pub fn apply(&self, p: &mut [f32], state: &mut [f32], step: &mut u64, g: &[f32]) {
        *step += 1;
        match *self {
            SparseOptim::Sgd { lr } => {
                for (p, g) in p.iter_mut().zip(g) {
                    *p -= lr * g;
                }
            }
            SparseOptim::Adagrad { lr, epsilon, .. } => {
                for ((p, a), g) in p.iter_mut().zip(state.iter_mut()).zip(g) {
                    *a += g * g;
                    *p -= lr * (g / (a.sqrt() + epsilon));
                }
            }
            SparseOptim::Adam {
                lr,
                beta1,
                beta2,
                epsilon,
            } => {
                let t = *step as i32;
                let (c1, c2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
                let (m, v) = state.split_at_mut(p.len());
                for i in 0..p.len() {
                    m[i] = beta1 * m[i] + (1.0 - beta1) * g[i];
                    v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i];
                    p[i] -= lr * ((m[i] / c1) / ((v[i] / c2).sqrt() + epsilon));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adagrad_and_adam_follow_their_formulas() {
        let o = SparseOptim::by_name("adagrad", 0.1).unwrap();
        let (mut p, mut s, mut t) = (vec![1.0f32], o.init_state(1), 0);
        o.apply(&mut p, &mut s, &mut t, &[2.0]);
        assert!((p[0] - (1.0 - 0.1 * 2.0 / (2.0 + 1e-6))).abs() < 1e-7 && s[0] == 4.0);
        let o = SparseOptim::by_name("adam", 0.1).unwrap();
        let (mut p, mut s, mut t) = (vec![1.0f32], o.init_state(1), 0);
        o.apply(&mut p, &mut s, &mut t, &[0.5]);
        // The first bias-corrected Adam step moves by lr·sign(g).
        assert!((p[0] - 0.9).abs() < 1e-5, "{}", p[0]);
        assert_eq!(t, 1);
    }
}
