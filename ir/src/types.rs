//! Element types, dimensions (static or symbolic) and tensor types.
//!
//! A symbolic dimension is a monomial over named symbols (`N`, `2*N`, `N*seq`), which is
//! enough to keep batch and sequence dynamic through reshapes and flattens while every
//! equality check stays exact.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I8,
    U8,
    Bool,
}

impl DType {
    /// Every dtype, in text-format order.
    pub const ALL: [DType; 9] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F64,
        DType::I64,
        DType::I32,
        DType::I8,
        DType::U8,
        DType::Bool,
    ];

    /// Bytes per element (bool is stored as one byte).
    pub fn size_bytes(self) -> u64 {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// The text-format name (`f32`, `bf16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::Bool => "bool",
        }
    }

    /// Parses a text-format name.
    pub fn from_name(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }

    /// Floating-point types.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }

    /// Integer types (bool excluded).
    pub fn is_int(self) -> bool {
        matches!(self, DType::I64 | DType::I32 | DType::I8 | DType::U8)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A symbolic size: `coef * Π sym^power`, with at least one symbol.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SymDim {
    coef: u64,
    factors: BTreeMap<String, u32>,
}

impl SymDim {
    /// The symbols this size mentions.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.factors.keys().map(String::as_str)
    }
}

/// One dimension of a shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    /// A size known at compile time.
    Static(u64),
    /// A size known only at run time (batch, sequence), possibly scaled or multiplied.
    Sym(SymDim),
}

impl Dim {
    /// A plain named symbol.
    pub fn sym(name: &str) -> Dim {
        Dim::Sym(SymDim {
            coef: 1,
            factors: BTreeMap::from([(name.to_string(), 1)]),
        })
    }

    /// The static size, if known.
    pub fn as_static(&self) -> Option<u64> {
        match self {
            Dim::Static(n) => Some(*n),
            Dim::Sym(_) => None,
        }
    }

    /// The product of two dimensions.
    pub fn mul(&self, other: &Dim) -> Dim {
        let (ca, fa) = self.parts();
        let (cb, fb) = other.parts();
        let mut factors = fa;
        for (k, p) in fb {
            *factors.entry(k).or_insert(0) += p;
        }
        Dim::from_parts(ca.saturating_mul(cb), factors)
    }

    /// Exact division, when the quotient is again a monomial with an integer coefficient.
    pub fn div_exact(&self, other: &Dim) -> Option<Dim> {
        let (ca, mut fa) = self.parts();
        let (cb, fb) = other.parts();
        if cb == 0 || ca % cb != 0 {
            return None;
        }
        for (k, p) in fb {
            let have = fa.get_mut(&k)?;
            if *have < p {
                return None;
            }
            *have -= p;
        }
        fa.retain(|_, p| *p > 0);
        Some(Dim::from_parts(ca / cb, fa))
    }

    /// The coefficient and the monomial with coefficient 1 (`6*N` → `(6, N)`).
    pub fn split_coef(&self) -> (u64, Dim) {
        let (c, f) = self.parts();
        if f.is_empty() {
            (c, Dim::Static(1))
        } else {
            (c, Dim::from_parts(1, f))
        }
    }

    /// Substitutes symbol values; unbound symbols take `default`.
    pub fn eval(&self, bindings: &BTreeMap<String, u64>, default: u64) -> u64 {
        match self {
            Dim::Static(n) => *n,
            Dim::Sym(s) => s.factors.iter().fold(s.coef, |acc, (k, p)| {
                let v = bindings.get(k).copied().unwrap_or(default);
                acc.saturating_mul(v.saturating_pow(*p))
            }),
        }
    }

    /// The symbols this dimension mentions.
    pub fn symbols(&self) -> Vec<&str> {
        match self {
            Dim::Static(_) => Vec::new(),
            Dim::Sym(s) => s.symbols().collect(),
        }
    }

    fn parts(&self) -> (u64, BTreeMap<String, u32>) {
        match self {
            Dim::Static(n) => (*n, BTreeMap::new()),
            Dim::Sym(s) => (s.coef, s.factors.clone()),
        }
    }

    fn from_parts(coef: u64, factors: BTreeMap<String, u32>) -> Dim {
        if factors.is_empty() || coef == 0 {
            Dim::Static(coef)
        } else {
            Dim::Sym(SymDim { coef, factors })
        }
    }

    /// Parses `4`, `N`, `2*N`, `N*seq`, `N*N`.
    pub fn parse(s: &str) -> Option<Dim> {
        let mut acc = Dim::Static(1);
        for part in s.split('*') {
            let part = part.trim();
            let d = if let Ok(n) = part.parse::<u64>() {
                Dim::Static(n)
            } else if is_symbol_name(part) {
                Dim::sym(part)
            } else {
                return None;
            };
            acc = acc.mul(&d);
        }
        Some(acc)
    }
}

/// Whether `s` is a valid symbol name: a letter or `_`, then letters, digits or `_`.
pub fn is_symbol_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl From<u64> for Dim {
    fn from(n: u64) -> Dim {
        Dim::Static(n)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Static(n) => write!(f, "{n}"),
            Dim::Sym(s) => {
                let mut parts: Vec<String> = Vec::new();
                if s.coef != 1 {
                    parts.push(s.coef.to_string());
                }
                for (k, p) in &s.factors {
                    for _ in 0..*p {
                        parts.push(k.clone());
                    }
                }
                f.write_str(&parts.join("*"))
            }
        }
    }
}

impl Serialize for Dim {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Dim::Static(n) => s.serialize_u64(*n),
            Dim::Sym(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Dim {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dim, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            N(u64),
            S(String),
        }
        match Repr::deserialize(d)? {
            Repr::N(n) => Ok(Dim::Static(n)),
            Repr::S(s) => Dim::parse(&s)
                .ok_or_else(|| serde::de::Error::custom(format!("bad dimension `{s}`"))),
        }
    }
}

/// A tensor shape; rank 0 is a scalar.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// A fully static shape.
    pub fn of(dims: &[u64]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::Static(d)).collect())
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Product of all dimensions (a scalar has one element).
    pub fn numel(&self) -> Dim {
        self.0.iter().fold(Dim::Static(1), |acc, d| acc.mul(d))
    }

    /// All sizes, if every one is static.
    pub fn as_static(&self) -> Option<Vec<u64>> {
        self.0.iter().map(Dim::as_static).collect()
    }

    /// Sizes with symbols substituted.
    pub fn eval(&self, bindings: &BTreeMap<String, u64>, default: u64) -> Vec<u64> {
        self.0.iter().map(|d| d.eval(bindings, default)).collect()
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// The type of one value: element type and shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    /// A type from a dtype and dims.
    pub fn new(dtype: DType, dims: Vec<Dim>) -> TensorType {
        TensorType {
            dtype,
            shape: Shape(dims),
        }
    }

    /// A static f32 type, for tests and examples.
    pub fn f32(dims: &[u64]) -> TensorType {
        TensorType {
            dtype: DType::F32,
            shape: Shape::of(dims),
        }
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.rank()
    }

    /// The same shape with another dtype.
    pub fn with_dtype(&self, dtype: DType) -> TensorType {
        TensorType {
            dtype,
            shape: self.shape.clone(),
        }
    }

    /// Bytes this tensor occupies with symbols substituted.
    pub fn bytes(&self, bindings: &BTreeMap<String, u64>, default: u64) -> u64 {
        self.shape
            .numel()
            .eval(bindings, default)
            .saturating_mul(self.dtype.size_bytes())
    }
}

impl std::str::FromStr for TensorType {
    type Err = String;

    /// Parses `f32[N,3,224,224]` (the text-format spelling).
    fn from_str(s: &str) -> Result<TensorType, String> {
        let s = s.trim();
        let (dt, rest) = s
            .split_once('[')
            .ok_or_else(|| format!("`{s}` is not a type such as f32[N,3]"))?;
        let dtype = DType::from_name(dt.trim()).ok_or_else(|| format!("unknown dtype `{dt}`"))?;
        let inner = rest
            .strip_suffix(']')
            .ok_or_else(|| format!("`{s}` lacks a closing `]`"))?;
        let dims = if inner.trim().is_empty() {
            Vec::new()
        } else {
            inner
                .split(',')
                .map(|d| Dim::parse(d).ok_or_else(|| format!("bad dimension `{d}` in `{s}`")))
                .collect::<Result<_, _>>()?
        };
        Ok(TensorType::new(dtype, dims))
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolic_products_divide_back() {
        let n = Dim::sym("N");
        let seq = Dim::sym("seq");
        let flat = n.mul(&seq).mul(&Dim::Static(12));
        assert_eq!(flat.to_string(), "12*N*seq");
        assert_eq!(
            flat.div_exact(&Dim::Static(12)).unwrap().to_string(),
            "N*seq"
        );
        assert_eq!(
            flat.div_exact(&n.mul(&Dim::Static(4))),
            Some(Dim::Static(3).mul(&seq))
        );
        assert_eq!(flat.div_exact(&Dim::Static(5)), None);
        assert_eq!(Dim::parse("2*N*N").unwrap().to_string(), "2*N*N");
        assert_eq!(Dim::parse("N*4"), Some(Dim::Static(4).mul(&n)));
    }

    #[test]
    fn types_parse_from_text() {
        let t: TensorType = "f32[N,3,2*N]".parse().unwrap();
        assert_eq!(t.to_string(), "f32[N,3,2*N]");
        assert_eq!("i64[]".parse::<TensorType>().unwrap().rank(), 0);
        assert!("f33[2]".parse::<TensorType>().is_err());
        assert!("f32[2".parse::<TensorType>().is_err());
    }

    #[test]
    fn eval_substitutes_symbols() {
        let d = Dim::parse("2*N*seq").unwrap();
        let b = BTreeMap::from([("N".to_string(), 3u64)]);
        assert_eq!(d.eval(&b, 1), 6);
        assert_eq!(d.eval(&b, 5), 30);
    }

    #[test]
    fn dims_serialize_as_numbers_and_strings() {
        let t = TensorType::new(DType::F32, vec![Dim::sym("N"), Dim::Static(4)]);
        let j = serde_json::to_string(&t).unwrap();
        assert_eq!(j, r#"{"dtype":"f32","shape":["N",4]}"#);
        assert_eq!(serde_json::from_str::<TensorType>(&j).unwrap(), t);
    }
}
