//! The kernel IR as text (`oar compile --emit kernel-ir`).

use super::*;
use std::fmt::{self, Display, Formatter};

impl Display for Kernel {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let params: Vec<String> = self
            .params
            .iter()
            .enumerate()
            .map(|(i, (n, e))| format!("b{i}: {e:?} \"{n}\""))
            .collect();
        writeln!(
            f,
            "kernel @{}({}) parallel {} grain {} {{",
            self.name,
            params.join(", "),
            self.extent,
            self.grain
        )?;
        match &self.body {
            Body::Gemm(g) => writeln!(f, "  {g:?}")?,
            Body::Gemv(g) => writeln!(f, "  gemv {g:?}")?,
            Body::Loops(stmts) => {
                for s in stmts {
                    write_stmt(f, s, 1)?;
                }
            }
        }
        writeln!(f, "}}")
    }
}

fn write_stmt(f: &mut Formatter<'_>, s: &Stmt, depth: usize) -> fmt::Result {
    let pad = "  ".repeat(depth);
    match s {
        Stmt::For {
            var,
            extent,
            parallel,
            body,
        } => {
            let p = if *parallel { " parallel" } else { "" };
            writeln!(f, "{pad}for i{var} in 0..{extent}{p} {{")?;
            for b in body {
                write_stmt(f, b, depth + 1)?;
            }
            writeln!(f, "{pad}}}")
        }
        Stmt::Store { buf, idx, val } => writeln!(f, "{pad}b{buf}[{idx}] = {val}"),
        Stmt::Local { id, init } => writeln!(f, "{pad}let t{id} = {init}"),
        Stmt::Assign { id, val } => writeln!(f, "{pad}t{id} = {val}"),
    }
}

impl Display for IExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            IExpr::Var(v) => write!(f, "i{v}"),
            IExpr::C(c) => write!(f, "{c}"),
            IExpr::Add(a, b) => write!(f, "({a} + {b})"),
            IExpr::Mul(a, b) => write!(f, "{a}*{b}"),
            IExpr::Div(a, b) => write!(f, "({a} / {b})"),
            IExpr::Rem(a, b) => write!(f, "({a} % {b})"),
            IExpr::Load(b, i) => write!(f, "b{b}[{i}]"),
            IExpr::Select(c, a, b) => write!(f, "select({c}, {a}, {b})"),
        }
    }
}

impl Display for Cond {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Cond::InRange(e, n) => write!(f, "0 <= {e} < {n}"),
            Cond::Le(a, b) => write!(f, "{a} <= {b}"),
            Cond::Bool(b, i) => write!(f, "b{b}[{i}]"),
            Cond::And(a, b) => write!(f, "({a} && {b})"),
            Cond::Lt(a, b) => write!(f, "{a} < {b}"),
        }
    }
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Expr::C(c) => write!(f, "{c:?}"),
            Expr::Load(b, i) => write!(f, "b{b}[{i}]"),
            Expr::LoadIf(b, i, c) => write!(f, "({c} ? b{b}[{i}] : 0)"),
            Expr::Local(t) => write!(f, "t{t}"),
            Expr::Un(u, x) => write!(f, "{}({x})", format!("{u:?}").to_lowercase()),
            Expr::Bin(b, x, y) => write!(f, "{}({x}, {y})", format!("{b:?}").to_lowercase()),
            Expr::Select(c, a, b) => write!(f, "({c} ? {a} : {b})"),
            Expr::FromInt(i) => write!(f, "float({i})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_sums_print_as_independent_chains() {
        let sum = Expr::sum_of((0..6).map(|k| Expr::C(k as f32)));
        assert_eq!(
            sum.to_string(),
            "addinorder(addinorder(addinorder(0.0, 4.0), addinorder(1.0, 5.0)), \
             addinorder(2.0, 3.0))"
        );
        assert_eq!(Expr::sum_of([Expr::C(7.0)]).to_string(), "7.0");
        assert_eq!(Expr::sum_of([]).to_string(), "0.0");
    }
}
