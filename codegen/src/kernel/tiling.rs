//! GEMM register and cache blocking chosen per CPU: the micro-tile from the vector width
//! and register count, the depth and row blocks from the cache sizes (the analytical
//! model of BLIS: Low et al., "Analytical modeling is enough for high-performance BLIS",
//! 2016). The kernel builder lays out packed weights and splits work by these numbers,
//! and the LLVM generator emits the micro-kernel from them.

/// What code generation needs to know about a CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuModel {
    /// LLVM's name for the CPU (`znver3`, `skylake-avx512`, …).
    pub name: String,
    /// LLVM target features (`+avx2,+fma,…`); empty means the CPU's defaults.
    pub features: String,
    /// Width of the widest f32 vector register.
    pub vector_bits: u32,
    /// Number of vector registers.
    pub vector_registers: u32,
    pub l1d_bytes: u64,
    pub l2_bytes: u64,
    /// The last-level cache this core can count on (its share when shared).
    pub l3_bytes_per_core: u64,
}

/// x86 CPUs LLVM knows with AVX-512F (the vector width of a named target when no feature
/// string says otherwise).
const AVX512_CPUS: &[&str] = &[
    "knl",
    "knm",
    "skylake-avx512",
    "skx",
    "cascadelake",
    "cooperlake",
    "cannonlake",
    "icelake-client",
    "icelake-server",
    "tigerlake",
    "rocketlake",
    "sapphirerapids",
    "emeraldrapids",
    "graniterapids",
    "graniterapids-d",
    "diamondrapids",
    "znver4",
    "znver5",
    "x86-64-v4",
];

/// x86 CPUs LLVM knows with AVX (256-bit vectors) but not AVX-512F.
const AVX_CPUS: &[&str] = &[
    "sandybridge",
    "ivybridge",
    "haswell",
    "broadwell",
    "skylake",
    "alderlake",
    "raptorlake",
    "meteorlake",
    "arrowlake",
    "arrowlake-s",
    "lunarlake",
    "pantherlake",
    "gracemont",
    "sierraforest",
    "grandridge",
    "clearwaterforest",
    "core-avx2",
    "core-avx-i",
    "corei7-avx",
    "bdver1",
    "bdver2",
    "bdver3",
    "bdver4",
    "btver2",
    "znver1",
    "znver2",
    "znver3",
    "x86-64-v3",
];

/// x86-64 CPUs LLVM knows with 128-bit vectors only.
const SSE_CPUS: &[&str] = &[
    "x86-64",
    "x86-64-v2",
    "core2",
    "penryn",
    "nehalem",
    "corei7",
    "westmere",
    "bonnell",
    "atom",
    "silvermont",
    "slm",
    "goldmont",
    "goldmont-plus",
    "tremont",
    "btver1",
    "amdfam10",
    "barcelona",
    "k8",
    "opteron",
    "athlon64",
];

impl CpuModel {
    /// Whether LLVM knows `name` as an x86-64 CPU (one of the tables here).
    pub fn is_known(name: &str) -> bool {
        [AVX512_CPUS, AVX_CPUS, SSE_CPUS]
            .iter()
            .any(|t| t.contains(&name))
    }

    /// Every CPU name [`CpuModel::is_known`] accepts, widest vectors first.
    pub fn known_names() -> Vec<&'static str> {
        [AVX512_CPUS, AVX_CPUS, SSE_CPUS].concat()
    }

    /// A CPU by LLVM name and optional feature string, with typical cache sizes (32 KiB
    /// L1d, 1 MiB L2, 2 MiB of L3 per core) since its caches cannot be read from here.
    /// The vector width comes from the features when they name AVX/AVX-512, else from the
    /// CPU name; unknown x86 names get SSE's 128 bits.
    pub fn named(name: &str, features: &str) -> CpuModel {
        let has = |f: &str| features.split(',').any(|t| t.trim() == format!("+{f}"));
        let lacks = |f: &str| features.split(',').any(|t| t.trim() == format!("-{f}"));
        let avx512 = has("avx512f") || (AVX512_CPUS.contains(&name) && !lacks("avx512f"));
        let avx_cpu = AVX_CPUS.contains(&name) || AVX512_CPUS.contains(&name);
        let avx = avx512 || has("avx") || (avx_cpu && !lacks("avx"));
        let (vector_bits, vector_registers) = if avx512 {
            (512, 32)
        } else if avx {
            (256, 16)
        } else {
            (128, 16)
        };
        CpuModel {
            name: name.to_string(),
            features: features.to_string(),
            vector_bits,
            vector_registers,
            l1d_bytes: 32 << 10,
            l2_bytes: 1 << 20,
            l3_bytes_per_core: 2 << 20,
        }
    }
}

/// Register and cache blocking of the generated GEMM (see cpu/gemm.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tiling {
    /// f32 lanes of one vector register.
    pub lanes: i64,
    /// Micro-tile rows (broadcasts of A) and columns (vectors of B): MR × NR / lanes
    /// accumulators live in registers through the depth loop.
    pub mr: i64,
    pub nr: i64,
    /// Depth of a packed panel: B's KC × NR micro-panel stays in L1.
    pub kc: i64,
    /// Rows of A per packed block: MC × KC stays in L2.
    pub mc: i64,
    /// Columns of B per packed block: KC × NC stays in L3.
    pub nc: i64,
}

impl Tiling {
    /// The blocking for `cpu`.
    pub fn for_cpu(cpu: &CpuModel) -> Tiling {
        let lanes = (cpu.vector_bits as i64 / 32).max(4);
        // Two vectors of B per row of the tile: enough independent FMAs to cover their
        // latency without spilling.
        let nr = 2 * lanes;
        // 2·MR accumulators, two B vectors and one broadcast of A must fit the registers.
        let mr = ((cpu.vector_registers as i64 - 3) / 2).clamp(4, 14);
        let f = 4; // bytes per f32
                   // B's micro-panel in half of L1 (A's micro-panel and C's tile take the rest).
        let kc = round_down(cpu.l1d_bytes as i64 / 2 / (nr * f), 8).clamp(64, 512);
        // A's block in a quarter of L2 (B's micro-panels and C stream through the rest).
        let mc = round_down(cpu.l2_bytes as i64 / 4 / (kc * f), mr).clamp(mr, 32 * mr);
        // B's block in half of this core's L3 share.
        let nc = round_down(cpu.l3_bytes_per_core as i64 / 2 / (kc * f), nr).clamp(8 * nr, 4096);
        Tiling {
            lanes,
            mr,
            nr,
            kc,
            mc,
            nc,
        }
    }

    /// Per-thread scratch: one packed KC × NC block of B, then one packed MC × KC block of A.
    pub fn scratch_bytes(&self) -> usize {
        ((self.kc * self.nc + self.mc * self.kc) * 4) as usize
    }

    /// Offset (in floats) of A's packed block in the scratch.
    pub fn a_block_offset(&self) -> i64 {
        self.kc * self.nc
    }

    /// Vectors in one row of the micro-tile.
    pub fn vectors_per_row(&self) -> usize {
        (self.nr / self.lanes) as usize
    }

    /// Rows of C per parallel unit of a matrix × column-vector product: one vector.
    pub fn gemv_rows(&self) -> i64 {
        self.lanes
    }

    /// Columns of C per parallel unit of a row-vector × matrix product: four vectors.
    pub fn gemv_cols(&self) -> i64 {
        4 * self.lanes
    }
}

impl std::fmt::Display for Tiling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}x{} micro-tile of {}-lane vectors, KC {} MC {} NC {}",
            self.mr, self.nr, self.lanes, self.kc, self.mc, self.nc
        )
    }
}

fn round_down(x: i64, to: i64) -> i64 {
    x / to * to
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(name: &str, features: &str, l1: u64, l2: u64, l3: u64) -> CpuModel {
        CpuModel {
            l1d_bytes: l1 << 10,
            l2_bytes: l2 << 10,
            l3_bytes_per_core: l3 << 10,
            ..CpuModel::named(name, features)
        }
    }

    #[test]
    fn avx2_gets_the_6x16_tile_and_cache_blocks_from_its_caches() {
        // Zen 3: 32 KiB L1d, 512 KiB L2, 4 MiB of L3 per core.
        let t = Tiling::for_cpu(&cpu("znver3", "", 32, 512, 4096));
        assert_eq!((t.lanes, t.mr, t.nr, t.kc), (8, 6, 16, 256));
        assert_eq!((t.mc, t.nc), (126, 2048));
        assert_eq!(t.scratch_bytes(), (256 * 2048 + 126 * 256) * 4);
    }

    #[test]
    fn avx512_gets_a_14x32_tile_and_a_shallower_panel() {
        // Ice Lake server: 48 KiB L1d, 1.25 MiB L2.
        let t = Tiling::for_cpu(&cpu("icelake-server", "", 48, 1280, 1536));
        assert_eq!((t.lanes, t.mr, t.nr, t.kc), (16, 14, 32, 192));
        assert_eq!(t.mc % t.mr, 0);
        assert!(t.mc as u64 * t.kc as u64 * 4 <= 1280 << 10);
        assert_eq!(t.gemv_cols(), 64);
    }

    #[test]
    fn features_override_the_name_and_unknown_cpus_get_sse() {
        assert_eq!(
            CpuModel::named("skylake-avx512", "-avx512f").vector_bits,
            256
        );
        assert_eq!(CpuModel::named("x86-64", "+avx2,+avx512f").vector_bits, 512);
        assert_eq!(CpuModel::named("haswell", "").vector_bits, 256);
        let sse = Tiling::for_cpu(&CpuModel::named("x86-64", ""));
        assert_eq!((sse.lanes, sse.mr, sse.nr), (4, 6, 8));
        // A feature name containing another ("+avx512f" vs "+avx") is matched whole.
        assert_eq!(CpuModel::named("x86-64", "+avx512fp16").vector_bits, 128);
    }

    #[test]
    fn tiny_caches_still_give_usable_blocks() {
        let t = Tiling::for_cpu(&cpu("x86-64", "", 4, 16, 64));
        assert!(t.kc >= 64 && t.mc >= t.mr && t.nc >= 8 * t.nr);
        assert_eq!(t.nc % t.nr, 0);
    }
}
