//! What `oar cluster calibrate` measures on this machine: the f32 FMA peak of T threads,
//! oar's own compiled GEMM at a grid of shapes, and memory bandwidth (a STREAM-style triad).
//! Each figure is the best of several timed blocks: the machine may be shared, and the best
//! block is the one least disturbed by other work.

use anyhow::Context;
use oar::codegen::jit::JitModel;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long to measure each figure.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Timed blocks per figure (the best is kept).
    pub blocks: usize,
    /// Minimum length of one block.
    pub block: Duration,
}

impl Budget {
    pub fn new(quick: bool) -> Budget {
        if quick {
            Budget {
                blocks: 2,
                block: Duration::from_millis(15),
            }
        } else {
            Budget {
                blocks: 5,
                block: Duration::from_millis(80),
            }
        }
    }
}

/// Seconds per call of `f`: the best over `budget.blocks` blocks of at least `budget.block`.
fn best_seconds(budget: Budget, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?; // warm-up: first-touch page faults, caches
    let mut best = f64::INFINITY;
    for _ in 0..budget.blocks.max(1) {
        let start = Instant::now();
        let mut calls = 0u32;
        while calls == 0 || start.elapsed() < budget.block {
            f()?;
            calls += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() / calls as f64);
    }
    Ok(best)
}

/// Independent accumulators in the FMA probe: enough to cover the FMA latency (4–5 cycles)
/// times two FMA ports.
const ACCUMULATORS: usize = 12;

/// One thread's FMA loop on 512-bit vectors: `iters` × ACCUMULATORS × 16 lanes × 2 FLOPs.
/// On cores that split 512-bit FMAs in two (Zen 4) this measures the same peak as AVX2; on
/// cores with two 512-bit FMA units it measures twice it, which the AVX2 loop would miss.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_block_avx512(iters: u64, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_ps(0.999_999);
    let b = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(seed); ACCUMULATORS];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(*x, a, b);
        }
    }
    acc.iter().map(|&x| _mm512_reduce_add_ps(x)).sum()
}

/// One thread's FMA loop: `iters` × ACCUMULATORS × 8 lanes × 2 FLOPs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_block_avx2(iters: u64, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(seed); ACCUMULATORS];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let mut sum = _mm256_setzero_ps();
    for x in acc {
        sum = _mm256_add_ps(sum, x);
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
    lanes.iter().sum()
}

/// The portable loop (no vector FMA known to the compiler): a floor, not the peak.
fn fma_block_scalar(iters: u64, seed: f32) -> f32 {
    let mut acc = [seed; ACCUMULATORS * 8];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = x.mul_add(0.999_999, 1e-7);
        }
    }
    acc.iter().sum()
}

/// The widest FMA loop this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum FmaPath {
    Avx512,
    Avx2,
    Portable,
}

impl FmaPath {
    fn detect() -> FmaPath {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return FmaPath::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return FmaPath::Avx2;
            }
        }
        FmaPath::Portable
    }

    /// f32 lanes per accumulator.
    fn lanes(self) -> u64 {
        match self {
            FmaPath::Avx512 => 16,
            FmaPath::Avx2 | FmaPath::Portable => 8,
        }
    }

    fn block(self, iters: u64, seed: f32) -> f32 {
        match self {
            // SAFETY: `detect` found AVX-512F.
            #[cfg(target_arch = "x86_64")]
            FmaPath::Avx512 => unsafe { fma_block_avx512(iters, seed) },
            // SAFETY: `detect` found AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            FmaPath::Avx2 => unsafe { fma_block_avx2(iters, seed) },
            _ => fma_block_scalar(iters, seed),
        }
    }

    fn how(self) -> &'static str {
        match self {
            FmaPath::Avx512 => "AVX-512 FMA loop, 12 independent 16-lane accumulators per thread",
            FmaPath::Avx2 => "AVX2 FMA loop, 12 independent 8-lane accumulators per thread",
            FmaPath::Portable => "portable mul_add loop (no AVX2/FMA detected)",
        }
    }
}

/// The measured f32 FMA throughput of `threads` threads, FLOP/s, and how it was measured.
pub fn fma_peak(threads: usize, budget: Budget) -> (f64, &'static str) {
    let path = FmaPath::detect();
    let iters: u64 = 1 << 16;
    let block = move |seed: f32| -> f32 { path.block(iters, seed) };
    let flops_per_block = (iters * ACCUMULATORS as u64 * path.lanes() * 2) as f64;
    let mut best = 0.0f64;
    for _ in 0..budget.blocks.max(1) {
        let start = Instant::now();
        let blocks: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads.max(1))
                .map(|t| {
                    s.spawn(move || {
                        let mut n = 0u64;
                        let mut sink = 0.0f32;
                        let t0 = Instant::now();
                        while n == 0 || t0.elapsed() < budget.block {
                            sink += block(t as f32 + n as f32 * 1e-3);
                            n += 1;
                        }
                        std::hint::black_box(sink);
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        let rate = blocks as f64 * flops_per_block / start.elapsed().as_secs_f64();
        best = best.max(rate);
    }
    (best, path.how())
}

/// One GEMM shape `[m, k] × [k, n]` and its measured rate.
#[derive(Debug, Clone, Copy)]
pub struct GemmSample {
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub flops_per_s: f64,
}

/// The grid of shapes: cubes from small to the sizes a CPU step uses, and token-major
/// shapes like a transformer's projections (2,048 tokens × hidden 128–512).
pub fn gemm_grid(quick: bool) -> Vec<(u64, u64, u64)> {
    if quick {
        return vec![(32, 32, 32), (64, 64, 64), (128, 128, 128)];
    }
    let mut g: Vec<(u64, u64, u64)> = [32u64, 64, 128, 256, 512, 768, 1024]
        .iter()
        .map(|&s| (s, s, s))
        .collect();
    g.extend([
        (2048, 128, 128),
        (2048, 512, 128),
        (2048, 128, 512),
        (2048, 2048, 128),
    ]);
    g
}

/// Times oar's compiled `[m, k] × [k, n]` f32 GEMM (the LLVM JIT, `threads` threads) on
/// inputs bound in place, so only the product is timed.
pub fn gemm(m: u64, n: u64, k: u64, threads: usize, budget: Budget) -> anyhow::Result<GemmSample> {
    let text = format!(
        "graph @gemm(%a: f32[{m},{k}], %b: f32[{k},{n}]) -> (f32[{m},{n}]) {{\n  %c = matmul(%a, %b) : f32[{m},{n}]\n  return %c\n}}\n"
    );
    let g = oar::ir::read_graph(&text, "gemm").context("the calibration GEMM graph")?;
    let mut model = JitModel::new(&g, &BTreeMap::new(), &Default::default(), threads)
        .with_context(|| format!("cannot compile the {m}×{n}×{k} GEMM"))?;
    let exec = model.executor();
    for input in 0..2 {
        let buf = exec
            .input_f32_mut(input)
            .context("the GEMM's inputs are f32")?;
        // Not zeros: a pattern in [-0.6, 0.6] (denormals and zero-skipping cannot flatter it).
        for (i, v) in buf.iter_mut().enumerate() {
            *v = ((i * 7 + input) % 13) as f32 * 0.1 - 0.6;
        }
    }
    let seconds = best_seconds(budget, || {
        exec.run_bound().map_err(anyhow::Error::from)?;
        Ok(())
    })?;
    Ok(GemmSample {
        m,
        n,
        k,
        flops_per_s: 2.0 * (m * n * k) as f64 / seconds,
    })
}

/// Memory bandwidth of `threads` threads on a triad `a = b + s·c` over arrays of
/// `elements` f32 each (far larger than the caches), bytes/s counted as STREAM does:
/// two reads and one write per element, write-allocate traffic not counted.
pub fn triad_bandwidth(elements: usize, threads: usize, budget: Budget) -> f64 {
    let threads = threads.max(1);
    let mut a = vec![0f32; elements];
    let b: Vec<f32> = (0..elements).map(|i| (i % 17) as f32 * 0.25).collect();
    let c: Vec<f32> = (0..elements).map(|i| (i % 11) as f32 * 0.5).collect();
    let chunk = elements.div_ceil(threads);
    let mut pass = |scale: f32| {
        std::thread::scope(|s| {
            for ((a, b), c) in a
                .chunks_mut(chunk)
                .zip(b.chunks(chunk))
                .zip(c.chunks(chunk))
            {
                s.spawn(move || {
                    for ((x, y), z) in a.iter_mut().zip(b).zip(c) {
                        *x = y + scale * z;
                    }
                });
            }
        });
    };
    pass(1.0);
    let mut best = f64::INFINITY;
    for i in 0..budget.blocks.max(2) {
        let t = Instant::now();
        pass(1.0 + i as f32 * 1e-3);
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&a);
    3.0 * 4.0 * elements as f64 / best
}

/// This CPU's name (`model name` in /proc/cpuinfo), or the architecture.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Physical memory in GiB (MemTotal of /proc/meminfo), if known.
pub fn memory_gib() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: f64 = text
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / (1u64 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fma_probe_and_the_triad_measure_positive_rates() {
        let b = Budget {
            blocks: 1,
            block: Duration::from_millis(5),
        };
        let (peak, _) = fma_peak(1, b);
        // Any CPU of the last two decades does more than 100 MFLOP/s on one thread.
        assert!(peak > 1e8, "{peak}");
        let bw = triad_bandwidth(1 << 20, 1, b);
        assert!(bw > 1e8, "{bw}");
        assert!(gemm_grid(true).len() >= 3);
    }
}
