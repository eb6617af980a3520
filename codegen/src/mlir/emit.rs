//! A TOSA text builder over static shapes: SSA names, types, and the helpers every lowering
//! needs (rank alignment for broadcasting, reshapes, transposes, splat constants).

use oar_ir::DType;
use std::fmt::Write;

/// A value in the module: its SSA name, static shape and element type.
#[derive(Debug, Clone)]
pub(super) struct V {
    pub name: String,
    pub shape: Vec<u64>,
    pub dtype: DType,
}

pub(super) struct Emitter {
    pub body: String,
    next: usize,
}

/// MLIR's element type spelling.
pub(super) fn elem(d: DType) -> Result<&'static str, String> {
    Ok(match d {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F64 => "f64",
        DType::I64 => "i64",
        DType::I32 => "i32",
        DType::I8 => "i8",
        DType::U8 => "ui8",
        DType::Bool => "i1",
    })
}

/// `tensor<1x3xf32>`; rank 0 is `tensor<f32>`.
pub(super) fn tensor_ty(shape: &[u64], d: DType) -> String {
    let e = elem(d).unwrap_or("f32");
    if shape.is_empty() {
        format!("tensor<{e}>")
    } else {
        let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
        format!("tensor<{}x{e}>", dims.join("x"))
    }
}

/// An MLIR float literal (always with a decimal point; finite).
pub(super) fn float_lit(v: f64) -> String {
    let v = v.clamp(f32::MIN as f64, f32::MAX as f64);
    format!("{v:.9e}")
}

impl V {
    pub fn ty(&self) -> String {
        tensor_ty(&self.shape, self.dtype)
    }
}

impl Emitter {
    pub fn new() -> Emitter {
        Emitter {
            body: String::new(),
            next: 0,
        }
    }

    fn fresh(&mut self) -> String {
        self.next += 1;
        format!("%v{}", self.next)
    }

    /// Emits `%r = <text> : <sig>` and returns the result.
    pub fn op(&mut self, text: &str, sig: &str, shape: Vec<u64>, dtype: DType) -> V {
        let name = self.fresh();
        let _ = writeln!(self.body, "    {name} = {text} : {sig}");
        V { name, shape, dtype }
    }

    /// Emits `%r = <text>` for ops whose syntax carries their own types (linalg).
    pub fn op_typed_inline(&mut self, text: &str, shape: Vec<u64>, dtype: DType) -> V {
        let name = self.fresh();
        let _ = writeln!(self.body, "    {name} = {text}");
        V { name, shape, dtype }
    }

    /// A one-operand elementwise op with the operand's type.
    pub fn unary(&mut self, op: &str, x: &V) -> V {
        let t = x.ty();
        self.op(
            &format!("tosa.{op} {}", x.name),
            &format!("({t}) -> {t}"),
            x.shape.clone(),
            x.dtype,
        )
    }

    /// A splat constant of `shape`.
    pub fn splat(&mut self, v: f64, shape: Vec<u64>, dtype: DType) -> V {
        let lit = if dtype.is_float() {
            float_lit(v)
        } else if dtype == DType::Bool {
            (v != 0.0).to_string()
        } else {
            (v as i64).to_string()
        };
        let t = tensor_ty(&shape, dtype);
        self.op(
            &format!("\"tosa.const\"() {{values = dense<{lit}> : {t}}}"),
            &format!("() -> {t}"),
            shape,
            dtype,
        )
    }

    /// A scalar broadcastable against rank `rank` (shape `[1; rank]`).
    pub fn scalar(&mut self, v: f64, rank: usize, dtype: DType) -> V {
        self.splat(v, vec![1; rank], dtype)
    }

    /// Zero points and shifts TOSA ops take as operands.
    pub fn zero_point(&mut self, dtype: DType) -> V {
        self.splat(0.0, vec![1], dtype)
    }

    /// A constant from flat values, reshaped to `shape`.
    pub fn dense(&mut self, vals: &[f64], shape: Vec<u64>, dtype: DType) -> V {
        let items: Vec<String> = vals
            .iter()
            .map(|&v| {
                if dtype.is_float() {
                    float_lit(v)
                } else if dtype == DType::Bool {
                    (v != 0.0).to_string()
                } else {
                    (v as i64).to_string()
                }
            })
            .collect();
        let flat = vec![vals.len() as u64];
        let t = tensor_ty(&flat, dtype);
        let c = self.op(
            &format!(
                "\"tosa.const\"() {{values = dense<[{}]> : {t}}}",
                items.join(", ")
            ),
            &format!("() -> {t}"),
            flat,
            dtype,
        );
        self.reshape(&c, shape)
    }

    pub fn reshape(&mut self, x: &V, shape: Vec<u64>) -> V {
        if x.shape == shape {
            return x.clone();
        }
        let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
        let n = shape.len();
        let s = self.op(
            &format!(
                "tosa.const_shape {{values = dense<[{}]> : tensor<{n}xindex>}}",
                dims.join(", ")
            ),
            &format!("() -> !tosa.shape<{n}>"),
            vec![],
            DType::I64,
        );
        let t = tensor_ty(&shape, x.dtype);
        self.op(
            &format!("tosa.reshape {}, {}", x.name, s.name),
            &format!("({}, !tosa.shape<{n}>) -> {t}", x.ty()),
            shape,
            x.dtype,
        )
    }

    pub fn transpose(&mut self, x: &V, perm: &[usize]) -> V {
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return x.clone();
        }
        let shape: Vec<u64> = perm.iter().map(|&p| x.shape[p]).collect();
        let p: Vec<String> = perm.iter().map(usize::to_string).collect();
        let t = tensor_ty(&shape, x.dtype);
        self.op(
            &format!(
                "tosa.transpose {} {{perms = array<i32: {}>}}",
                x.name,
                p.join(", ")
            ),
            &format!("({}) -> {t}", x.ty()),
            shape,
            x.dtype,
        )
    }

    /// Left-pads the shape with 1s to `rank` (TOSA broadcasts only between equal ranks).
    pub fn pad_rank(&mut self, x: &V, rank: usize) -> V {
        if x.shape.len() >= rank {
            return x.clone();
        }
        let mut shape = vec![1; rank - x.shape.len()];
        shape.extend(&x.shape);
        self.reshape(x, shape)
    }

    /// numpy broadcasting as TOSA spells it: the rank padded with leading 1s, then a tile
    /// by the ratio of target to input dims (1 where the dims already agree).
    pub fn broadcast_to(&mut self, x: &V, shape: &[u64]) -> V {
        let x = self.pad_rank(x, shape.len());
        let n = shape.len();
        let multiples: Vec<String> = x
            .shape
            .iter()
            .zip(shape)
            .map(|(&d, &s)| (if d == 1 { s } else { 1 }).to_string())
            .collect();
        if multiples.iter().all(|m| m == "1") {
            return x;
        }
        let m = self.op(
            &format!(
                "tosa.const_shape {{values = dense<[{}]> : tensor<{n}xindex>}}",
                multiples.join(", ")
            ),
            &format!("() -> !tosa.shape<{n}>"),
            vec![],
            DType::I64,
        );
        let t = tensor_ty(shape, x.dtype);
        self.op(
            &format!("tosa.tile {}, {}", x.name, m.name),
            &format!("({}, !tosa.shape<{n}>) -> {t}", x.ty()),
            shape.to_vec(),
            x.dtype,
        )
    }

    /// A broadcasting binary op; `out_dtype` for comparisons.
    pub fn binary(
        &mut self,
        op: &str,
        a: &V,
        b: &V,
        out_dtype: Option<DType>,
    ) -> Result<V, String> {
        let rank = a.shape.len().max(b.shape.len());
        let (a, b) = (self.pad_rank(a, rank), self.pad_rank(b, rank));
        let mut shape = Vec::with_capacity(rank);
        for (x, y) in a.shape.iter().zip(&b.shape) {
            shape.push(match (x, y) {
                (x, y) if x == y => *x,
                (1, y) => *y,
                (x, 1) => *x,
                _ => return Err(format!("cannot broadcast {:?} with {:?}", a.shape, b.shape)),
            });
        }
        let dt = out_dtype.unwrap_or(a.dtype);
        let t = tensor_ty(&shape, dt);
        let (text, sig) = if op == "mul" {
            let shift = self.splat(0.0, vec![1], DType::I8);
            (
                format!("tosa.mul {}, {}, {}", a.name, b.name, shift.name),
                format!("({}, {}, tensor<1xi8>) -> {t}", a.ty(), b.ty()),
            )
        } else {
            (
                format!("tosa.{op} {}, {}", a.name, b.name),
                format!("({}, {}) -> {t}", a.ty(), b.ty()),
            )
        };
        Ok(self.op(&text, &sig, shape, dt))
    }

    /// Reduction over one axis, keeping it as size 1.
    pub fn reduce(&mut self, op: &str, x: &V, axis: usize) -> V {
        let mut shape = x.shape.clone();
        shape[axis] = 1;
        let t = tensor_ty(&shape, x.dtype);
        self.op(
            &format!("tosa.{op} {} {{axis = {axis} : i32}}", x.name),
            &format!("({}) -> {t}", x.ty()),
            shape,
            x.dtype,
        )
    }

    pub fn clamp(&mut self, x: &V, lo: f64, hi: f64) -> V {
        let t = x.ty();
        self.op(
            &format!(
                "tosa.clamp {} {{min_val = {} : f32, max_val = {} : f32}}",
                x.name,
                float_lit(lo),
                float_lit(hi)
            ),
            &format!("({t}) -> {t}"),
            x.shape.clone(),
            x.dtype,
        )
    }

    pub fn cast(&mut self, x: &V, to: DType) -> V {
        if x.dtype == to {
            return x.clone();
        }
        let t = tensor_ty(&x.shape, to);
        self.op(
            &format!("tosa.cast {}", x.name),
            &format!("({}) -> {t}", x.ty()),
            x.shape.clone(),
            to,
        )
    }

    pub fn select(&mut self, c: &V, a: &V, b: &V) -> V {
        let rank = c.shape.len().max(a.shape.len()).max(b.shape.len());
        let (c, a, b) = (
            self.pad_rank(c, rank),
            self.pad_rank(a, rank),
            self.pad_rank(b, rank),
        );
        let shape: Vec<u64> = (0..rank)
            .map(|i| c.shape[i].max(a.shape[i]).max(b.shape[i]))
            .collect();
        let t = tensor_ty(&shape, a.dtype);
        self.op(
            &format!("tosa.select {}, {}, {}", c.name, a.name, b.name),
            &format!("({}, {}, {}) -> {t}", c.ty(), a.ty(), b.ty()),
            shape,
            a.dtype,
        )
    }
}
