//! The loop-level kernel IR: what codegen emits for each node before LLVM. Scalar loop nests
//! over flat buffers (LLVM's vectorizer widens the inner loops), plus calls into the
//! generated GEMM for contractions. `--emit kernel-ir` prints it.

mod build;
mod print;
mod tiling;

pub use build::{build_kernels, BuildError, Compiled};
pub use tiling::{CpuModel, Tiling};

/// Element type of a kernel buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32,
    I64,
    /// One byte per element, non-zero = true.
    Bool,
}

/// A kernel: its buffer parameters (in the step's argument order) and body. The body's
/// `For { parallel: true }` loop runs only `[begin, end)` of its extent. Buffer index
/// `params.len()` is the calling thread's f32 scratch area ([`Tiling::scratch_bytes`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<(String, Elem)>,
    pub body: Body,
    /// Extent of the parallel loop (1 when there is none).
    pub extent: i64,
    /// Smallest slice worth a thread.
    pub grain: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Loops(Vec<Stmt>),
    Gemm(GemmSpec),
    /// A product with a single row or column, same parameters as `Gemm`, no packing:
    /// for `m < MR` each parallel unit is [`Tiling::gemv_cols`] columns of C (all its rows),
    /// else (`n == 1`, B contiguous) each unit is [`Tiling::gemv_rows`] rows of C.
    Gemv(GemmSpec),
}

impl GemmSpec {
    /// Whether a `Gemv` body walks rows (n == 1) rather than column blocks.
    pub fn gemv_by_rows(&self) -> bool {
        self.n == 1 && self.m >= self.tile.mr
    }

    /// The parallel units of a `Gemv` body.
    pub fn gemv_units(&self) -> i64 {
        let per = if self.gemv_by_rows() {
            (self.m + self.tile.gemv_rows() - 1) / self.tile.gemv_rows()
        } else {
            (self.n + self.tile.gemv_cols() - 1) / self.tile.gemv_cols()
        };
        self.batch * per
    }
}

/// `C[b] = act(A[b] × B[b] + bias + residual)` over `batch` matrices, row-major; parallel
/// over `batch × row_chunks × ⌈n / NR⌉` units (column panels fastest). Parameters: A, B, C,
/// then bias, then residual.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmSpec {
    pub m: i64,
    pub n: i64,
    pub k: i64,
    pub lda: i64,
    pub ldb: i64,
    pub ldc: i64,
    pub batch: i64,
    /// Element strides between batches (0 broadcasts an operand).
    pub stride_a: i64,
    pub stride_b: i64,
    pub stride_c: i64,
    /// Row ranges the parallel loop also splits over (when there are few column panels).
    pub row_chunks: i64,
    /// A arrives packed by a prologue step (a weight): W-row panels, each K deep,
    /// `Ap[(row / W · K + k) · W + row % W]`, rows past m zero; W = MR for Gemm bodies,
    /// `tile.gemv_rows()` for Gemv bodies by rows (each k then one contiguous vector).
    pub a_packed: bool,
    /// B arrives packed by a prologue step (a weight) in G = `tile.gemv_cols()`-wide column
    /// blocks, each K deep, `Bp[(col / G · K + k) · G + col % G]`, columns past n zero:
    /// each unit then streams contiguous memory. Gemv bodies by column block only.
    pub b_packed: bool,
    /// A is stored transposed (k × m, row stride `lda`); read so by the GEMM's packing.
    /// Gemm bodies only.
    pub trans_a: bool,
    /// B is stored transposed (n × k, row stride `ldb`); read so by the GEMM's packing.
    /// Gemm bodies only.
    pub trans_b: bool,
    pub bias: BiasMode,
    pub residual: bool,
    pub act: GemmAct,
    /// The register and cache blocking (from the target CPU).
    pub tile: Tiling,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BiasMode {
    None,
    /// One value per row of C (a convolution's output channel).
    PerRow,
    /// One value per column of C (a linear layer's output feature).
    PerCol,
}

/// Activations the GEMM applies while storing (the rest run as a separate kernel).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GemmAct {
    None,
    Relu,
    Clip(f32, f32),
    /// `x · clip(αx + β, 0, 1)` (hard-swish: α = 1/6, β = 1/2).
    HardSwish,
    /// `clip(αx + β, 0, 1)`.
    HardSigmoid(f32, f32),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    For {
        var: u32,
        extent: i64,
        parallel: bool,
        body: Vec<Stmt>,
    },
    Store {
        buf: usize,
        idx: IExpr,
        val: Expr,
    },
    /// Declares an f32 local.
    Local {
        id: u32,
        init: Expr,
    },
    Assign {
        id: u32,
        val: Expr,
    },
}

/// Integer (index) expressions.
#[derive(Debug, Clone, PartialEq)]
pub enum IExpr {
    Var(u32),
    C(i64),
    Add(Box<IExpr>, Box<IExpr>),
    Mul(Box<IExpr>, Box<IExpr>),
    Div(Box<IExpr>, Box<IExpr>),
    Rem(Box<IExpr>, Box<IExpr>),
    /// An element of an i64 buffer.
    Load(usize, Box<IExpr>),
    /// `cond ? a : b` (an integer `where`).
    Select(Box<Cond>, Box<IExpr>, Box<IExpr>),
}

/// Index conditions.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// `0 <= e < n`.
    InRange(IExpr, i64),
    /// `a <= b`.
    Le(IExpr, IExpr),
    /// A bool buffer element.
    Bool(usize, IExpr),
    And(Box<Cond>, Box<Cond>),
    /// `a < b` on f32 values (false when either is NaN): the arg-max routing of max
    /// pooling's gradient compares values, not indices.
    Lt(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Un {
    Neg,
    Exp,
    Log,
    Sqrt,
    Tanh,
    Erf,
    Abs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bin {
    Add,
    /// An add LLVM may fuse with a multiply but not reassociate: keeps the partial sums of
    /// [`Expr::sum_of`] independent (with reassociation LLVM folds them back into one chain).
    AddInOrder,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
}

/// f32 expressions.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    C(f32),
    Load(usize, IExpr),
    /// A load that reads 0 where the condition fails (padding), without touching memory.
    LoadIf(usize, IExpr, Cond),
    Local(u32),
    Un(Un, Box<Expr>),
    Bin(Bin, Box<Expr>, Box<Expr>),
    Select(Cond, Box<Expr>, Box<Expr>),
    FromInt(IExpr),
}

impl Stmt {
    /// `for var in 0..extent { body }`.
    pub fn seq(var: u32, extent: i64, body: Vec<Stmt>) -> Stmt {
        Stmt::For {
            var,
            extent,
            parallel: false,
            body,
        }
    }

    /// The kernel's parallel loop, over variable 0: each call runs its `[begin, end)`.
    pub fn par(extent: i64, body: Vec<Stmt>) -> Stmt {
        Stmt::For {
            var: 0,
            extent,
            parallel: true,
            body,
        }
    }
}

// Small constructors keep the op builders readable. They are methods rather than
// `std::ops` impls because they fold constants as they build and take plain i64 factors.
#[allow(clippy::should_implement_trait)]
impl IExpr {
    pub fn c(v: i64) -> IExpr {
        IExpr::C(v)
    }
    pub fn v(id: u32) -> IExpr {
        IExpr::Var(id)
    }
    pub fn add(self, o: IExpr) -> IExpr {
        match (&self, &o) {
            (IExpr::C(0), _) => o,
            (_, IExpr::C(0)) => self,
            (IExpr::C(a), IExpr::C(b)) => IExpr::C(a + b),
            _ => IExpr::Add(Box::new(self), Box::new(o)),
        }
    }
    pub fn mul(self, o: i64) -> IExpr {
        match (&self, o) {
            (_, 0) => IExpr::C(0),
            (_, 1) => self,
            (IExpr::C(a), b) => IExpr::C(a * b),
            _ => IExpr::Mul(Box::new(self), Box::new(IExpr::C(o))),
        }
    }
    pub fn mul_e(self, o: IExpr) -> IExpr {
        IExpr::Mul(Box::new(self), Box::new(o))
    }
    pub fn div(self, o: i64) -> IExpr {
        if o == 1 {
            self
        } else {
            IExpr::Div(Box::new(self), Box::new(IExpr::C(o)))
        }
    }
    pub fn select(c: Cond, a: IExpr, b: IExpr) -> IExpr {
        IExpr::Select(Box::new(c), Box::new(a), Box::new(b))
    }
    pub fn rem(self, o: i64) -> IExpr {
        IExpr::Rem(Box::new(self), Box::new(IExpr::C(o)))
    }
}

#[allow(clippy::should_implement_trait)]
impl Expr {
    pub fn un(self, u: Un) -> Expr {
        Expr::Un(u, Box::new(self))
    }
    pub fn bin(self, b: Bin, o: Expr) -> Expr {
        Expr::Bin(b, Box::new(self), Box::new(o))
    }
    pub fn add(self, o: Expr) -> Expr {
        self.bin(Bin::Add, o)
    }
    pub fn sub(self, o: Expr) -> Expr {
        self.bin(Bin::Sub, o)
    }
    pub fn mul(self, o: Expr) -> Expr {
        self.bin(Bin::Mul, o)
    }
    pub fn div(self, o: Expr) -> Expr {
        self.bin(Bin::Div, o)
    }
    pub fn max(self, o: Expr) -> Expr {
        self.bin(Bin::Max, o)
    }
    pub fn min(self, o: Expr) -> Expr {
        self.bin(Bin::Min, o)
    }

    /// The sum of `terms` as [`SUM_CHAINS`] interleaved partial sums added at the end: a
    /// window sum written as one chain is a chain of dependent FMAs, each waiting for the
    /// last (4 cycles apiece on current x86), which LLVM does not split on its own.
    pub fn sum_of(terms: impl IntoIterator<Item = Expr>) -> Expr {
        let mut chains: Vec<Option<Expr>> = vec![None; SUM_CHAINS];
        for (i, t) in terms.into_iter().enumerate() {
            let c = &mut chains[i % SUM_CHAINS];
            *c = Some(match c.take() {
                Some(acc) => acc.bin(Bin::AddInOrder, t),
                None => t,
            });
        }
        let mut parts: Vec<Expr> = chains.into_iter().flatten().collect();
        // Pairwise: (c0 + c1) + (c2 + c3).
        while parts.len() > 1 {
            parts = parts
                .chunks(2)
                .map(|p| match p {
                    [a, b] => a.clone().bin(Bin::AddInOrder, b.clone()),
                    [a] => a.clone(),
                    _ => unreachable!("chunks of two"),
                })
                .collect();
        }
        parts.pop().unwrap_or(Expr::C(0.0))
    }
}

/// Independent partial sums in [`Expr::sum_of`]: enough to cover FMA latency × throughput.
pub const SUM_CHAINS: usize = 4;
