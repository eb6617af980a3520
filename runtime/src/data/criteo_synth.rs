//! Synthetic Criteo-shaped data with a planted logistic signal, written in the Criteo text
//! format, so tests and benches need no download (docs/heterps.md).
//!
//! Sample `i` of seed `s` (ChaCha8 seeded with `s`, drawn in order):
//! - categorical slot `k`: a rank `r` from a Zipf law over `1..=vocab` with exponent
//!   `zipf` (rank 1 the most frequent), written as the 8-hex-digit hash
//!   `mix64(s ⊕ (k, r))` truncated to 32 bits; empty with probability `missing`;
//! - integer feature `j`: `⌊exp(N(1, 1.2))⌋ − 1` (counts with a heavy tail, some −1 like
//!   Criteo's second column), empty with probability `missing`;
//! - label ~ Bernoulli(sigmoid(z)) with `z = bias + Σ_k w(k, r_k) + Σ_j u_j·(ln(1 + max(x_j,
//!   0)) − 1)`; the planted weights `w(k, r) ~ N(0, signal²)` and `u_j ~ N(0, (signal/2)²)`
//!   are pure functions of (seed, slot, rank) and (seed, j), and an empty field weighs 0.
//!
//! A model that recovers the weights reaches the AUC of `z` itself on the same samples
//! ([`SynthSample::logit`]), the ceiling tests state their figures against.

use super::criteo::{mix64, DENSE_FEATURES, SLOTS};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::io::Write;
use std::path::Path;

/// Generator settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    pub seed: u64,
    /// Distinct values per slot.
    pub vocab: u64,
    /// Zipf exponent of the value frequencies.
    pub zipf: f64,
    /// Probability that a field is empty.
    pub missing: f64,
    /// Standard deviation of the planted per-value weights.
    pub signal: f64,
    /// The logit's intercept (−1.2: about a quarter of the labels are 1).
    pub bias: f64,
}

impl SynthConfig {
    pub fn new(seed: u64) -> SynthConfig {
        SynthConfig {
            seed,
            vocab: 1000,
            zipf: 1.1,
            missing: 0.02,
            signal: 0.5,
            bias: -1.2,
        }
    }
}

/// One generated sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSample {
    pub label: u8,
    pub dense: [Option<i64>; DENSE_FEATURES],
    pub cats: [Option<u32>; SLOTS],
    /// The planted logit the label was drawn from.
    pub logit: f64,
}

impl SynthSample {
    /// The sample as one Criteo line (without a newline).
    pub fn line(&self) -> String {
        let mut s = String::with_capacity(200);
        s.push(if self.label == 1 { '1' } else { '0' });
        for d in &self.dense {
            s.push('\t');
            if let Some(x) = d {
                s.push_str(&x.to_string());
            }
        }
        for c in &self.cats {
            s.push('\t');
            if let Some(v) = c {
                s.push_str(&format!("{v:08x}"));
            }
        }
        s
    }
}

/// A seeded stream of samples.
pub struct SynthGenerator {
    cfg: SynthConfig,
    rng: ChaCha8Rng,
    /// Cumulative Zipf probabilities of ranks `1..=vocab`.
    cdf: Vec<f64>,
    dense_w: [f64; DENSE_FEATURES],
}

/// A standard normal from a 64-bit hash (Box–Muller on its two halves).
pub(crate) fn hashed_normal(h: u64) -> f64 {
    let u1 = ((h >> 32) as f64 + 0.5) / 4_294_967_296.0;
    let u2 = ((h & 0xFFFF_FFFF) as f64 + 0.5) / 4_294_967_296.0;
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl SynthGenerator {
    pub fn new(cfg: SynthConfig) -> SynthGenerator {
        let mut cdf = Vec::with_capacity(cfg.vocab as usize);
        let mut acc = 0.0;
        for r in 1..=cfg.vocab.max(1) {
            acc += (r as f64).powf(-cfg.zipf);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        let mut dense_w = [0.0; DENSE_FEATURES];
        for (j, w) in dense_w.iter_mut().enumerate() {
            *w = 0.5 * cfg.signal * hashed_normal(mix64(cfg.seed ^ mix64(0xD0 + j as u64)));
        }
        SynthGenerator {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            cdf,
            dense_w,
        }
    }

    /// The hash written for rank `r` of slot `k`.
    fn value(&self, k: usize, r: u64) -> u32 {
        mix64(self.cfg.seed ^ mix64(((k as u64) << 40) | r)) as u32
    }

    /// The planted weight of rank `r` of slot `k`.
    pub fn weight(&self, k: usize, r: u64) -> f64 {
        self.cfg.signal
            * hashed_normal(mix64(
                self.cfg.seed.rotate_left(17) ^ mix64(((k as u64) << 40) | r),
            ))
    }

    /// The next sample.
    pub fn sample(&mut self) -> SynthSample {
        let mut z = self.cfg.bias;
        let mut cats = [None; SLOTS];
        for (k, c) in cats.iter_mut().enumerate() {
            let u: f64 = self.rng.gen();
            let m: f64 = self.rng.gen();
            if m < self.cfg.missing {
                continue;
            }
            let r = self.cdf.partition_point(|&p| p < u) as u64 + 1;
            let r = r.min(self.cfg.vocab.max(1));
            *c = Some(self.value(k, r));
            z += self.weight(k, r);
        }
        let normal = Normal::new(1.0, 1.2).expect("a valid normal");
        let mut dense = [None; DENSE_FEATURES];
        for (j, d) in dense.iter_mut().enumerate() {
            let x: f64 = normal.sample(&mut self.rng);
            let m: f64 = self.rng.gen();
            if m < self.cfg.missing {
                continue;
            }
            let v = (x.exp().floor() as i64 - 1).min(1_000_000);
            *d = Some(v);
            z += self.dense_w[j] * ((v.max(0) as f64).ln_1p() - 1.0);
        }
        let p = 1.0 / (1.0 + (-z).exp());
        let label = u8::from(self.rng.gen::<f64>() < p);
        SynthSample {
            label,
            dense,
            cats,
            logit: z,
        }
    }
}

impl Iterator for SynthGenerator {
    type Item = SynthSample;
    fn next(&mut self) -> Option<SynthSample> {
        Some(self.sample())
    }
}

/// What [`write_synthetic`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthStats {
    pub samples: u64,
    pub positives: u64,
    /// The AUC of the planted logit over the written samples: the best a model can reach.
    pub planted_auc: f64,
}

/// Writes `n` samples to `path` in the Criteo format.
pub fn write_synthetic(path: &Path, n: u64, cfg: &SynthConfig) -> std::io::Result<SynthStats> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut logits = Vec::with_capacity(n as usize);
    let mut labels = Vec::with_capacity(n as usize);
    for s in SynthGenerator::new(cfg.clone()).take(n as usize) {
        writeln!(w, "{}", s.line())?;
        logits.push(s.logit as f32);
        labels.push(f32::from(s.label));
    }
    w.flush()?;
    Ok(SynthStats {
        samples: n,
        positives: labels.iter().filter(|&&l| l > 0.5).count() as u64,
        planted_auc: crate::train::metrics::auc(&logits, &labels).unwrap_or(0.5),
    })
}

#[cfg(test)]
mod tests {
    use super::super::criteo::{parse_line, CriteoOptions, CriteoReader, CtrBatch};
    use super::*;

    #[test]
    fn lines_round_trip_through_the_reader() {
        let cfg = SynthConfig::new(7);
        let samples: Vec<SynthSample> = SynthGenerator::new(cfg.clone()).take(300).collect();
        for s in &samples {
            let p = parse_line(&s.line()).unwrap();
            assert_eq!((p.label, p.dense, p.cats), (s.label, s.dense, s.cats));
        }
        let dir = std::env::temp_dir().join(format!("oar-criteo-synth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("train.txt");
        let stats = write_synthetic(&path, 300, &cfg).unwrap();
        assert!(stats.positives > 30 && stats.positives < 200, "{stats:?}");
        assert!(stats.planted_auc > 0.7, "{stats:?}");
        let got: Vec<CtrBatch> = CriteoReader::open(&[path], CriteoOptions::new(64))
            .unwrap()
            .read_all()
            .unwrap();
        assert_eq!(
            got.iter().map(CtrBatch::len).collect::<Vec<_>>(),
            [64, 64, 64, 64, 44]
        );
        let mut want = CtrBatch::default();
        for s in &samples {
            want.push(&parse_line(&s.line()).unwrap());
        }
        let mut all = CtrBatch::default();
        for b in got {
            all.labels.extend(b.labels);
            all.dense.extend(b.dense);
            all.keys.extend(b.keys);
        }
        assert_eq!(all, want);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_same_seed_gives_the_same_samples() {
        let a: Vec<_> = SynthGenerator::new(SynthConfig::new(3)).take(50).collect();
        let b: Vec<_> = SynthGenerator::new(SynthConfig::new(3)).take(50).collect();
        let c: Vec<_> = SynthGenerator::new(SynthConfig::new(4)).take(50).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
