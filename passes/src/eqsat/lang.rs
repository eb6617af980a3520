//! The e-graph language: one e-node per IR op, with the op's attributes as payload (not
//! child e-classes), plus `proj` nodes selecting one output of a multi-output op. The
//! analysis carries each class's types and whether its value is known before run time
//! (computed from parameters and constants only), and asserts consistency on merge.

use egg::{Analysis, DidMerge, Id, Language};
use oar_ir::op::{infer_types, InferCtx, Op};
use oar_ir::{ExecMode, Graph, ProcessMesh, TensorType};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

/// An op with a cached canonical key, so e-nodes can be hashed and ordered even though op
/// attributes hold floats. Leaves (inputs, parameters, constants) carry their type, and
/// inputs their name, so distinct leaves stay distinct.
#[derive(Debug, Clone)]
pub struct OpKey {
    pub op: Op,
    /// Declared type of a source op (input, param, constant).
    pub leaf_type: Option<TensorType>,
    /// Graph-input name (inputs have no attributes to tell them apart).
    pub input_name: Option<String>,
    key: String,
}

impl OpKey {
    pub fn new(op: Op, leaf_type: Option<TensorType>, input_name: Option<String>) -> OpKey {
        let key = format!("{op:?}|{leaf_type:?}|{input_name:?}");
        OpKey {
            op,
            leaf_type,
            input_name,
            key,
        }
    }
}

impl PartialEq for OpKey {
    fn eq(&self, o: &Self) -> bool {
        self.key == o.key
    }
}
impl Eq for OpKey {}
impl Hash for OpKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.key.hash(h)
    }
}
impl PartialOrd for OpKey {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for OpKey {
    fn cmp(&self, o: &Self) -> Ordering {
        self.key.cmp(&o.key)
    }
}

/// An e-node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TensorNode {
    Op(OpKey, Vec<Id>),
    /// Output `index` of a multi-output op.
    Proj(u32, [Id; 1]),
}

impl Language for TensorNode {
    type Discriminant = String;

    fn discriminant(&self) -> String {
        match self {
            TensorNode::Op(k, _) => k.key.clone(),
            TensorNode::Proj(i, _) => format!("proj{i}"),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        match (self, other) {
            (TensorNode::Op(a, ca), TensorNode::Op(b, cb)) => a == b && ca.len() == cb.len(),
            (TensorNode::Proj(a, _), TensorNode::Proj(b, _)) => a == b,
            _ => false,
        }
    }

    fn children(&self) -> &[Id] {
        match self {
            TensorNode::Op(_, c) => c,
            TensorNode::Proj(_, c) => c,
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            TensorNode::Op(_, c) => c,
            TensorNode::Proj(_, c) => c,
        }
    }
}

/// Per-class facts.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassData {
    /// Output types (one entry except for multi-output ops).
    pub types: Vec<TensorType>,
    /// Computed from parameters and constants only: can be precomputed at load time.
    pub known: bool,
}

/// Type and known-ness analysis; holds the module context shape inference needs.
#[derive(Debug, Default, Clone)]
pub struct TypeAnalysis {
    pub meshes: BTreeMap<String, ProcessMesh>,
    pub functions: BTreeMap<String, Graph>,
    /// Decides whether parameters are load-time constants (`known`).
    pub mode: ExecMode,
}

pub type EG = egg::EGraph<TensorNode, TypeAnalysis>;

impl Analysis<TensorNode> for TypeAnalysis {
    type Data = ClassData;

    fn make(egraph: &mut EG, enode: &TensorNode) -> ClassData {
        match enode {
            TensorNode::Proj(i, [c]) => {
                let d = &egraph[*c].data;
                ClassData {
                    types: vec![d.types.get(*i as usize).cloned().unwrap_or_else(|| {
                        panic!(
                            "invariant: proj {i} of a class with {} outputs",
                            d.types.len()
                        )
                    })],
                    known: d.known,
                }
            }
            TensorNode::Op(k, children) => {
                let ins: Vec<TensorType> = children
                    .iter()
                    .map(|c| {
                        egraph[*c]
                            .data
                            .types
                            .first()
                            .cloned()
                            .expect("invariant: operand classes have one type")
                    })
                    .collect();
                let declared: Vec<TensorType> = k.leaf_type.iter().cloned().collect();
                let a = &egraph.analysis;
                let ctx = InferCtx {
                    meshes: Some(&a.meshes),
                    functions: Some(&a.functions),
                };
                let types = infer_types(&k.op, &ins, &declared, &ctx).unwrap_or_else(|e| {
                    panic!("unsound rewrite built an ill-typed `{}`: {e}", k.op.name())
                });
                // The same per-op rule as `oar_ir::analysis::weight_only`, over classes.
                let ins_known: Vec<bool> = children.iter().map(|c| egraph[*c].data.known).collect();
                let first_static = ins.first().is_some_and(|t| t.shape.as_static().is_some());
                let known = k.op.load_time(a.mode).decide(&ins_known, first_static);
                ClassData { types, known }
            }
        }
    }

    fn merge(&mut self, a: &mut ClassData, b: ClassData) -> DidMerge {
        // Equal values have equal types: a mismatch means an unsound rule.
        assert_eq!(
            a.types, b.types,
            "unsound rewrite: merged classes of different types"
        );
        let known = a.known || b.known;
        let changed = known != a.known;
        a.known = known;
        DidMerge(changed, known != b.known)
    }
}
