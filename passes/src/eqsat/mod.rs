//! eqsat: the graph into an egg e-graph, rewrite rules to saturation (bounded by iterations,
//! e-nodes and time, deterministic), DAG-aware extraction by the cost model, back to a graph.

pub mod extract;
pub mod lang;
pub mod rules;

use crate::pass::{Pass, PassContext, PassFailure};
use crate::roofline::CostModel;
use egg::Id;
use lang::{OpKey, TensorNode, TypeAnalysis, EG};
use oar_ir::op::{infer_types, InferCtx, Literal, Op, ShapeError};
use oar_ir::{ExecMode, Graph, NodeError, TensorType, ValueRef};
use rules::{Rewrite, Rule, Search, Term};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Bounds on saturation.
#[derive(Debug, Clone)]
pub struct Limits {
    pub iterations: usize,
    pub nodes: usize,
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            iterations: 12,
            nodes: 50_000,
            time: Duration::from_secs(2),
        }
    }
}

/// What a saturation run did.
#[derive(Debug, Clone, Default)]
pub struct EqSatReport {
    pub fired: BTreeMap<&'static str, usize>,
    pub iterations: usize,
    pub stop: String,
    pub egraph_nodes: usize,
    pub egraph_classes: usize,
    pub saturate_time: Duration,
    pub extract_time: Duration,
    pub cost_before: f64,
    pub cost_after: f64,
}

/// The graph in an e-graph: the class of every value.
pub struct Loaded {
    pub eg: EG,
    pub value_class: BTreeMap<ValueRef, Id>,
}

/// Adds every node of `g` to a new e-graph.
pub fn load(g: &Graph) -> Loaded {
    let analysis = TypeAnalysis {
        meshes: g.meshes.clone(),
        functions: g.functions.clone(),
        mode: g.mode,
    };
    let mut eg = EG::new(analysis);
    let mut value_class = BTreeMap::new();
    for (id, n) in g.iter() {
        let leaf = n.op.is_source().then(|| n.outputs[0].clone());
        // A training dropout's name keys its random stream: it keeps two dropouts of one
        // value apart and names the rebuilt node.
        let named = matches!(n.op, Op::Input)
            || (g.mode == ExecMode::Training && matches!(n.op, Op::Dropout { .. }));
        let input_name = named.then(|| n.name.clone());
        let children = n.inputs.iter().map(|v| value_class[v]).collect();
        let c = eg.add(TensorNode::Op(
            OpKey::new(n.op.clone(), leaf, input_name),
            children,
        ));
        if n.outputs.len() == 1 {
            value_class.insert(ValueRef::new(id, 0), c);
        } else {
            for p in 0..n.outputs.len() as u32 {
                let pc = eg.add(TensorNode::Proj(p, [c]));
                value_class.insert(ValueRef::new(id, p), pc);
            }
        }
    }
    eg.rebuild();
    Loaded { eg, value_class }
}

/// Why equality saturation could not type a rewrite or produce a graph.
#[derive(Debug, thiserror::Error)]
pub enum EqSatError {
    /// A projection names an output its operand does not have.
    #[error("no output {0}")]
    NoOutput(u32),
    /// An operand of a rewritten op has no value to feed it.
    #[error("an operand without a value")]
    OperandWithoutValue,
    /// A rewritten op does not accept its operands' types.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// The extraction has no choice for a class the rebuilt graph needs.
    #[error("class {0} was not extracted")]
    NotExtracted(Id),
    /// An extracted input names no input of the original graph.
    #[error("an input vanished")]
    InputVanished,
    /// A node of the extracted graph could not be added.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Every choice for some output costs infinity.
    #[error("extraction found no finite choice for an output")]
    NoFiniteChoice,
}

/// The types a term would have, without adding it.
pub fn term_types(eg: &EG, t: &Term) -> Result<Vec<TensorType>, EqSatError> {
    match t {
        Term::Class(c) => Ok(eg[*c].data.types.clone()),
        Term::Scalar(_) => Ok(vec![TensorType::f32(&[])]),
        Term::Const(_, ty) => Ok(vec![ty.clone()]),
        Term::Proj(i, inner) => {
            let ts = term_types(eg, inner)?;
            ts.get(*i as usize)
                .cloned()
                .map(|t| vec![t])
                .ok_or(EqSatError::NoOutput(*i))
        }
        Term::Op(op, ch) => {
            let ins: Vec<TensorType> = ch
                .iter()
                .map(|c| {
                    term_types(eg, c)
                        .and_then(|v| v.into_iter().next().ok_or(EqSatError::OperandWithoutValue))
                })
                .collect::<Result<_, _>>()?;
            let a = &eg.analysis;
            let ctx = InferCtx {
                meshes: Some(&a.meshes),
                functions: Some(&a.functions),
            };
            Ok(infer_types(op, &ins, &[], &ctx)?)
        }
    }
}

/// Adds a (validated) term; returns its class.
pub fn add_term(eg: &mut EG, t: &Term) -> Id {
    match t {
        Term::Class(c) => *c,
        Term::Scalar(v) => eg.add(TensorNode::Op(
            OpKey::new(
                Op::Constant(Literal::Floats(vec![*v])),
                Some(TensorType::f32(&[])),
                None,
            ),
            vec![],
        )),
        Term::Const(l, ty) => eg.add(TensorNode::Op(
            OpKey::new(Op::Constant(l.clone()), Some(ty.clone()), None),
            vec![],
        )),
        Term::Proj(i, inner) => {
            let c = add_term(eg, inner);
            eg.add(TensorNode::Proj(*i, [c]))
        }
        Term::Op(op, ch) => {
            let kids = ch.iter().map(|c| add_term(eg, c)).collect();
            eg.add(TensorNode::Op(OpKey::new(op.clone(), None, None), kids))
        }
    }
}

/// Every match of every rule in the current e-graph, in a deterministic order.
fn search(eg: &EG, rules: &[Rule]) -> Vec<(&'static str, Rewrite)> {
    let mut classes: Vec<Id> = eg.classes().map(|c| c.id).collect();
    classes.sort();
    let mut out = Vec::new();
    for r in rules {
        match r.search {
            Search::Local(f) => {
                for &c in &classes {
                    for n in &eg[c].nodes {
                        if let TensorNode::Op(k, ch) = n {
                            out.extend(f(eg, c, &k.op, ch).into_iter().map(|rw| (r.name, rw)));
                        }
                    }
                }
            }
            Search::Global(f) => out.extend(f(eg).into_iter().map(|rw| (r.name, rw))),
        }
    }
    out
}

/// Applies rules until saturation or a limit.
pub fn saturate(eg: &mut EG, rules: &[Rule], limits: &Limits) -> EqSatReport {
    let start = Instant::now();
    let mut report = EqSatReport {
        stop: "iteration limit".into(),
        ..Default::default()
    };
    for iter in 0..limits.iterations {
        report.iterations = iter + 1;
        let mut unions = 0;
        for (name, rw) in search(eg, rules) {
            if start.elapsed() > limits.time {
                report.stop = "time limit".into();
                break;
            }
            let want = eg[rw.target].data.types.clone();
            match term_types(eg, &rw.term) {
                Ok(t) if t == want => {
                    let id = add_term(eg, &rw.term);
                    if eg.union(rw.target, id) {
                        unions += 1;
                        *report.fired.entry(name).or_insert(0) += 1;
                    }
                }
                // A rule proposed an ill-typed or differently typed term: a bug in the rule.
                other => debug_assert!(
                    false,
                    "rule {name} proposed {other:?} for a class of {want:?}"
                ),
            }
        }
        eg.rebuild();
        if report.stop == "time limit" {
            break;
        }
        if unions == 0 {
            report.stop = "saturated".into();
            break;
        }
        if eg.total_size() > limits.nodes {
            report.stop = "e-node limit".into();
            break;
        }
    }
    report.egraph_nodes = eg.total_size();
    report.egraph_classes = eg.number_of_classes();
    report.saturate_time = start.elapsed();
    report
}

/// The extraction cost of one e-node: its roofline time; values computed from parameters
/// and constants only are charged a thousandth, since they are computed once at load time.
pub fn enode_cost(
    model: &CostModel,
    eg: &EG,
    class: Id,
    n: &TensorNode,
    b: &BTreeMap<String, u64>,
) -> f64 {
    match n {
        TensorNode::Proj(..) => 0.0,
        TensorNode::Op(k, ch) => {
            if k.op.is_free() {
                return 0.0;
            }
            let ins: Vec<TensorType> = ch.iter().map(|c| eg[*c].data.types[0].clone()).collect();
            let t = model.op_time(&k.op, &ins, &eg[class].data.types, b);
            if eg[class].data.known {
                t * 1e-3
            } else {
                t
            }
        }
    }
}

/// Rebuilds a graph from an extraction. Inputs keep their names and order; parameters keep
/// their names.
pub fn rebuild_graph(
    old: &Graph,
    eg: &EG,
    choice: &BTreeMap<Id, TensorNode>,
    roots: &[Id],
) -> Result<Graph, EqSatError> {
    let mut g = old.empty_like();
    let mut inputs = BTreeMap::new();
    for &i in old.inputs() {
        let n = old.node(i);
        inputs.insert(
            n.name.clone(),
            g.add_input(n.name.clone(), n.outputs[0].clone()),
        );
    }
    let mut memo: BTreeMap<Id, Vec<ValueRef>> = BTreeMap::new();
    // Iterative post-order so deep graphs do not overflow the stack.
    let mut stack: Vec<(Id, bool)> = roots.iter().rev().map(|&r| (eg.find(r), false)).collect();
    while let Some((c, expanded)) = stack.pop() {
        if memo.contains_key(&c) {
            continue;
        }
        let node = choice.get(&c).ok_or(EqSatError::NotExtracted(c))?;
        let kids: Vec<Id> = egg::Language::children(node)
            .iter()
            .map(|&k| eg.find(k))
            .collect();
        if !expanded {
            stack.push((c, true));
            stack.extend(
                kids.iter()
                    .rev()
                    .filter(|k| !memo.contains_key(k))
                    .map(|&k| (k, false)),
            );
            continue;
        }
        let vals = match node {
            TensorNode::Proj(i, _) => vec![memo[&kids[0]][*i as usize]],
            TensorNode::Op(k, _) => {
                let ins: Vec<ValueRef> = kids.iter().map(|k| memo[k][0]).collect();
                let id = match (&k.op, &k.leaf_type) {
                    (Op::Input, _) => inputs
                        .get(k.input_name.as_deref().unwrap_or(""))
                        .map(|v| v.node)
                        .ok_or(EqSatError::InputVanished)?,
                    (op @ Op::Param(p), Some(t)) => {
                        let name = oar_ir::verify::is_value_name(&p.name)
                            .then(|| p.name.clone())
                            .filter(|n| g.find(n).is_none());
                        g.add_node_typed(op.clone(), vec![], vec![t.clone()], name)?
                    }
                    (op, Some(t)) => g.add_node_typed(op.clone(), vec![], vec![t.clone()], None)?,
                    (op, None) => {
                        // Numeric names are automatic and could collide with later ones.
                        let name = k
                            .input_name
                            .clone()
                            .filter(|n| !n.chars().all(|c| c.is_ascii_digit()))
                            .filter(|n| g.find(n).is_none());
                        g.add_node(op.clone(), ins, name)?
                    }
                };
                (0..g.node(id).outputs.len() as u32)
                    .map(|p| ValueRef::new(id, p))
                    .collect()
            }
        };
        memo.insert(c, vals);
    }
    let outs = roots.iter().map(|r| memo[&eg.find(*r)][0]).collect();
    g.set_outputs(outs);
    g.canonicalize_order();
    Ok(g)
}

/// Applies one rule once to the classes of `g`'s outputs (no saturation, no extraction):
/// the rewritten graph computes each output by the rule's right-hand side. Rule tests
/// compare it with `g` in the interpreter. None when the rule does not match an output.
pub fn rewrite_outputs(g: &Graph, rule: &Rule) -> Option<Graph> {
    let Loaded {
        mut eg,
        value_class,
    } = load(g);
    let mut roots: Vec<Id> = g
        .outputs()
        .iter()
        .map(|v| eg.find(value_class[v]))
        .collect();
    let mut hit = false;
    for (_, rw) in search(&eg, std::slice::from_ref(rule)) {
        let Some(k) = roots.iter().position(|&r| r == eg.find(rw.target)) else {
            continue;
        };
        if term_types(&eg, &rw.term).ok()? != eg[rw.target].data.types {
            return None;
        }
        roots[k] = add_term(&mut eg, &rw.term);
        hit = true;
    }
    if !hit {
        return None;
    }
    eg.rebuild();
    // Without unions every class still holds exactly the one node that made it.
    let choice = eg.classes().map(|c| (c.id, c.nodes[0].clone())).collect();
    rebuild_graph(g, &eg, &choice, &roots).ok()
}

/// Runs equality saturation on `g` with `rules` and extracts the cheapest graph.
pub fn optimize(
    g: &Graph,
    rules: &[Rule],
    limits: &Limits,
    cx: &PassContext,
) -> Result<(Graph, EqSatReport), EqSatError> {
    let Loaded {
        mut eg,
        value_class,
    } = load(g);
    let roots: Vec<Id> = g.outputs().iter().map(|v| value_class[v]).collect();
    let model = CostModel::for_device(&cx.device);
    let cost_before = model.graph_time(g, &cx.bindings);
    let mut report = saturate(&mut eg, rules, limits);
    let t = Instant::now();
    let ext = extract::extract(&eg, &roots, |eg, c, n| {
        enode_cost(&model, eg, c, n, &cx.bindings)
    })
    .ok_or(EqSatError::NoFiniteChoice)?;
    let out = rebuild_graph(g, &eg, &ext.choice, &roots)?;
    report.extract_time = t.elapsed();
    report.cost_before = cost_before;
    report.cost_after = model.graph_time(&out, &cx.bindings);
    Ok((out, report))
}

/// The eqsat pass with all rules.
#[derive(Default)]
pub struct EqSat {
    pub limits: Limits,
}

impl Pass for EqSat {
    fn name(&self) -> &'static str {
        "eqsat"
    }
    fn description(&self) -> &'static str {
        "equality saturation (egg): folding, op recovery, algebra, epilogue fusion; cost-model extraction"
    }
    fn run(&self, g: Graph, cx: &PassContext) -> Result<(Graph, Vec<String>), PassFailure> {
        if let Some(n) = g
            .nodes()
            .iter()
            .find(|n| n.op.has_effects() || n.dist.is_some() || n.device.is_some())
        {
            return Ok((
                g.clone(),
                vec![format!(
                    "skipped: %{} carries communication or placement annotations",
                    n.name
                )],
            ));
        }
        let (out, r) = optimize(&g, &rules::all_rules(), &self.limits, cx)?;
        let fired: Vec<String> = r.fired.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
        let notes = vec![
            format!(
                "{} iterations ({}), e-graph {} nodes in {} classes, saturation {:.1} ms, extraction {:.1} ms",
                r.iterations,
                r.stop,
                r.egraph_nodes,
                r.egraph_classes,
                r.saturate_time.as_secs_f64() * 1e3,
                r.extract_time.as_secs_f64() * 1e3
            ),
            format!("rules fired: {}", if fired.is_empty() { "none".into() } else { fired.join(", ") }),
            format!("estimated time {:.3} ms -> {:.3} ms", r.cost_before * 1e3, r.cost_after * 1e3),
        ];
        Ok((out, notes))
    }
}
