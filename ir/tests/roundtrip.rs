//! `parse(print(g)) == g` and JSON round trips on random well-typed graphs.
//!
//! A graph is grown from a seed: each step proposes a random op on random existing values
//! (creating matching parameters where an op needs them) and keeps it only when shape
//! inference accepts it, so every generated graph is well typed by construction.

use oar_ir::dist::{DeviceKind, DeviceRef, OpDist, Placement, ProcessMesh, ReduceOp};
use oar_ir::op::*;
use oar_ir::{parse, print, verify, DType, Dim, ExecMode, Graph, NodeId, TensorType, ValueRef};
use proptest::prelude::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() as f64 / u64::MAX as f64) < p
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
    fn float(&mut self) -> f64 {
        let choices = [
            0.0,
            1.0,
            -2.5,
            1e-5,
            0.1 + 0.2,
            6.02e23,
            -1e-300,
            0.125,
            f64::INFINITY,
        ];
        if self.chance(0.5) {
            *self.pick(&choices)
        } else {
            (self.next() as i64 as f64) / (self.next() % 1000 + 1) as f64
        }
    }
}

struct Gen {
    rng: Rng,
    g: Graph,
    counter: usize,
}

impl Gen {
    fn name(&mut self) -> Option<String> {
        self.counter += 1;
        match self.rng.below(3) {
            0 => None,
            1 => Some(format!("v{}", self.counter)),
            _ => Some(format!("layer{}.out_{}", self.rng.below(4), self.counter)),
        }
    }

    fn unique(&mut self, name: Option<String>) -> Option<String> {
        // Auto names are the node index; custom names must not collide with them.
        name.filter(|n| self.g.find(n).is_none())
    }

    fn param(&mut self, dims: &[u64]) -> ValueRef {
        let specials = [
            "w",
            "a.b",
            "quote\"d",
            "back\\slash",
            "tab\t",
            "ünï",
            "nl\n",
        ];
        let pname = format!("{}.{}", self.rng.pick(&specials), self.counter);
        let init = match self.rng.below(4) {
            0 => None,
            1 => Some(Init::Constant(self.rng.float())),
            2 => Some(Init::Normal {
                mean: 0.0,
                std: self.rng.float(),
            }),
            _ => Some(Init::Uniform {
                low: -self.rng.float(),
                high: self.rng.float(),
            }),
        };
        let name = self.name();
        let name = self.unique(name);
        let id = self
            .g
            .add_node_typed(
                Op::Param(ParamAttrs { name: pname, init }),
                vec![],
                vec![TensorType::f32(dims)],
                name,
            )
            .expect("a param always fits");
        id.into()
    }

    fn constant(&mut self) -> ValueRef {
        let n = self.rng.below(4) + 1;
        let (dtype, lit) = if self.rng.chance(0.5) {
            (
                DType::F32,
                Literal::Floats((0..n).map(|_| self.rng.float()).collect()),
            )
        } else {
            (
                DType::I64,
                Literal::Ints((0..n).map(|_| self.rng.next() as i64 % 7).collect()),
            )
        };
        let name = self.name();
        let name = self.unique(name);
        self.g
            .add_node_typed(
                Op::Constant(lit),
                vec![],
                vec![TensorType::new(dtype, vec![Dim::Static(n)])],
                name,
            )
            .expect("a constant with matching length fits")
            .into()
    }

    fn values(&self, pred: impl Fn(&TensorType) -> bool) -> Vec<ValueRef> {
        self.g
            .iter()
            .flat_map(|(id, n)| (0..n.outputs.len() as u32).map(move |p| ValueRef::new(id, p)))
            .filter(|v| self.g.value_type(*v).is_some_and(&pred))
            .collect()
    }

    fn dims_of(&self, v: ValueRef) -> Vec<Dim> {
        self.g
            .value_type(v)
            .map(|t| t.shape.0.clone())
            .unwrap_or_default()
    }

    fn static_of(&self, d: &Dim) -> u64 {
        d.as_static().unwrap_or(3)
    }

    fn group(&mut self) -> Option<CommGroup> {
        let (name, mesh) = self.g.meshes.iter().next()?;
        Some(CommGroup {
            mesh: name.clone(),
            axis: self.rng.below(mesh.shape.len() as u64) as usize,
        })
    }

    /// Proposes one random op; returns it with its operands.
    fn propose(&mut self) -> Option<(Op, Vec<ValueRef>)> {
        let floats = self.values(|t| t.dtype == DType::F32);
        let x = *self.rng.pick(&floats);
        let xd = self.dims_of(x);
        let rank = xd.len() as i64;
        let axis = if rank > 0 {
            self.rng.below(rank as u64) as i64 - if self.rng.chance(0.3) { rank } else { 0 }
        } else {
            0
        };
        let r = &mut self.rng;
        let op = match r.below(26) {
            0 => {
                let unary = [
                    UnaryOp::Neg,
                    UnaryOp::Exp,
                    UnaryOp::Log,
                    UnaryOp::Sqrt,
                    UnaryOp::Rsqrt,
                    UnaryOp::Tanh,
                    UnaryOp::Erf,
                    UnaryOp::Abs,
                    UnaryOp::Relu,
                    UnaryOp::Relu6,
                    UnaryOp::Sigmoid,
                    UnaryOp::HardSwish,
                    UnaryOp::Silu,
                    UnaryOp::Mish,
                    UnaryOp::LeakyRelu { alpha: 0.2 },
                    UnaryOp::HardSigmoid {
                        alpha: 1.0 / 6.0,
                        beta: 0.5,
                    },
                    UnaryOp::Gelu { tanh: true },
                    UnaryOp::Gelu { tanh: false },
                    UnaryOp::Clip { min: 0.0, max: 6.0 },
                    UnaryOp::Clip {
                        min: f64::NEG_INFINITY,
                        max: 1.5,
                    },
                ];
                (Op::Unary(*r.pick(&unary)), vec![x])
            }
            1 | 2 => {
                let y = *r.pick(&floats);
                (Op::Binary(*r.pick(&BinaryOp::ALL)), vec![x, y])
            }
            3 => {
                let k = self.static_of(xd.last()?);
                let n = self.rng.below(5) + 1;
                let w = self.param(&[k, n]);
                (Op::MatMul(MatMulAttrs::default()), vec![x, w])
            }
            4 => {
                if xd.len() != 4 {
                    return None;
                }
                let c = self.static_of(&xd[1]);
                let groups = if c.is_multiple_of(2) && self.rng.chance(0.5) {
                    2
                } else {
                    1
                };
                let k = self.rng.below(3) + 1;
                let w = self.param(&[groups * 2, c / groups, k, k]);
                let p = self.rng.below(2);
                let attrs = ConvAttrs {
                    stride: [self.rng.below(2) + 1; 2],
                    padding: [p; 4],
                    dilation: [1, 1],
                    groups,
                };
                if self.rng.chance(0.3) {
                    (
                        Op::ConvTranspose2d(ConvTransposeAttrs {
                            conv: ConvAttrs { groups: 1, ..attrs },
                            output_padding: [0, 0],
                        }),
                        vec![x, self.param(&[c, 2, k, k])],
                    )
                } else {
                    (Op::Conv2d(attrs), vec![x, w])
                }
            }
            5 => (
                Op::Pool(PoolAttrs {
                    kind: if r.chance(0.5) {
                        PoolKind::Max
                    } else {
                        PoolKind::Avg
                    },
                    kernel: [2, 2],
                    stride: [r.below(2) + 1; 2],
                    padding: [r.below(2); 4],
                    ceil_mode: r.chance(0.5),
                    count_include_pad: r.chance(0.5),
                }),
                vec![x],
            ),
            6 => (
                Op::GlobalPool(if r.chance(0.5) {
                    PoolKind::Max
                } else {
                    PoolKind::Avg
                }),
                vec![x],
            ),
            7 => (
                Op::Reduce(ReduceOverAxes {
                    op: *r.pick(&ReduceOp::ALL),
                    axes: vec![axis],
                    keepdims: r.chance(0.5),
                }),
                vec![x],
            ),
            8 => (
                match r.below(3) {
                    0 => Op::Softmax { axis },
                    1 => Op::LogSoftmax { axis },
                    _ => Op::CausalMask { fill: -1e9 },
                },
                vec![x],
            ),
            9 => {
                let last = self.static_of(xd.last()?);
                let s = self.param(&[last]);
                let b = self.param(&[last]);
                (
                    Op::LayerNorm {
                        axis: -1,
                        eps: 1e-6,
                    },
                    vec![x, s, b],
                )
            }
            10 => {
                let c = self.static_of(xd.get(1)?);
                let ps: Vec<ValueRef> = (0..4).map(|_| self.param(&[c])).collect();
                // The training form (three outputs) exists only in training graphs.
                let momentum =
                    (self.g.mode == ExecMode::Training && self.rng.chance(0.7)).then_some(0.9);
                (
                    Op::BatchNorm {
                        eps: 1e-5,
                        momentum,
                    },
                    [vec![x], ps].concat(),
                )
            }
            11 => (Op::Concat { axis }, vec![x, x]),
            12 => {
                let a = axis.rem_euclid(rank.max(1));
                let n = self.static_of(xd.get(a as usize)?);
                let first = self.rng.below(n + 1);
                (
                    Op::Split {
                        axis,
                        sizes: vec![first, n - first],
                    },
                    vec![x],
                )
            }
            13 => (
                Op::Slice(SliceAttrs {
                    axes: vec![axis],
                    starts: vec![r.below(3) as i64 - 1],
                    ends: vec![i64::MAX],
                    steps: vec![r.below(2) as i64 + 1],
                }),
                vec![x],
            ),
            14 => (
                Op::Reshape {
                    shape: vec![ReshapeDim::Infer],
                },
                vec![x],
            ),
            15 => {
                let mut perm: Vec<usize> = (0..xd.len()).collect();
                perm.reverse();
                (Op::Transpose { perm }, vec![x])
            }
            16 if r.chance(0.5) => {
                // broadcast_to: a new leading dim of 2, and the first dim grown when it is 1.
                let mut shape = vec![Dim::Static(2)];
                shape.extend(xd.iter().cloned());
                (Op::BroadcastTo { shape }, vec![x])
            }
            16 => (Op::Unsqueeze { axes: vec![0] }, vec![x]),
            17 => (
                Op::Flatten {
                    axis: r.below(rank as u64 + 1) as i64,
                },
                vec![x],
            ),
            18 => {
                let idx = self.constant();
                if rank == 1 && self.rng.chance(0.3) {
                    (Op::GatherElements { axis: 0 }, vec![x, idx])
                } else if self.rng.chance(0.5) {
                    (Op::Gather { axis }, vec![x, idx])
                } else {
                    let table = self.param(&[7, 3]);
                    (Op::Embedding, vec![table, idx])
                }
            }
            19 => {
                let y = *r.pick(&floats);
                let name = self.name();
                let name = self.unique(name);
                let cond = self
                    .g
                    .add_node(Op::Binary(BinaryOp::Less), vec![x, y], name)
                    .ok()?;
                (Op::Where, vec![cond.into(), x, y])
            }
            20 => (
                if r.chance(0.5) {
                    Op::Cast {
                        to: *r.pick(&[DType::F16, DType::I64, DType::BF16]),
                    }
                } else {
                    Op::Dropout {
                        p: 0.1,
                        mode: *r
                            .pick(&[DropoutMode::UpscaleInTrain, DropoutMode::DownscaleInInfer]),
                        mask_of: r.chance(0.3).then(|| "fwd.drop".to_string()),
                    }
                },
                vec![x],
            ),
            21 => (
                Op::Resize(ResizeAttrs {
                    mode: if r.chance(0.5) {
                        ResizeMode::Nearest
                    } else {
                        ResizeMode::Bilinear
                    },
                    coord: *r.pick(&[
                        CoordMode::HalfPixel,
                        CoordMode::AlignCorners,
                        CoordMode::Asymmetric,
                        CoordMode::PytorchHalfPixel,
                    ]),
                    size: [Dim::Static(r.below(8) + 1), Dim::Static(4)],
                }),
                vec![x],
            ),
            22 => {
                let group = self.group()?;
                let op = match self.rng.below(5) {
                    0 => Op::AllReduce {
                        op: ReduceOp::Sum,
                        group,
                    },
                    1 => Op::AllGather { axis, group },
                    2 => Op::ReduceScatter {
                        op: ReduceOp::Max,
                        axis,
                        group,
                    },
                    3 => Op::AllToAll {
                        split_axis: axis,
                        concat_axis: 0,
                        group,
                    },
                    _ => Op::Broadcast { root: 0, group },
                };
                (op, vec![x])
            }
            23 => return self.propose_grad(x, axis),
            24 => return self.propose_detect(),
            _ => (Op::Send { peer: r.below(4) }, vec![x]),
        };
        Some(op)
    }

    /// A detection op on fresh parameters: `nms`/`matrix_nms` or `deform_conv2d`.
    fn propose_detect(&mut self) -> Option<(Op, Vec<ValueRef>)> {
        let opt = |s: &mut Self, v: u64| s.rng.chance(0.5).then_some(v);
        if self.rng.chance(0.5) {
            let m = self.rng.below(6) + 1;
            let c = self.rng.below(3) + 1;
            let boxes = self.param(&[2, m, 4]);
            let scores = self.param(&[2, c, m]);
            let kind = if self.rng.chance(0.5) {
                NmsKind::Hard {
                    iou_threshold: self.rng.float(),
                }
            } else {
                NmsKind::Matrix {
                    gaussian: self.rng.chance(0.5),
                    sigma: *self.rng.pick(&[2.0, 0.5]),
                    post_threshold: self.rng.float(),
                }
            };
            let attrs = NmsAttrs {
                kind,
                score_threshold: self.rng.float(),
                nms_top_k: opt(self, 5),
                max_per_class: opt(self, 3),
                keep_top_k: self.rng.below(9) + 1,
                background: opt(self, 0),
                normalized: self.rng.chance(0.5),
            };
            return Some((Op::Nms(attrs), vec![boxes, scores]));
        }
        let dg = self.rng.below(2) + 1;
        let x = self.param(&[1, 2 * dg, 5, 5]);
        let w = self.param(&[3, 2 * dg, 3, 3]);
        let offset = self.param(&[1, 18 * dg, 3, 3]);
        let mask = self.param(&[1, 9 * dg, 3, 3]);
        let attrs = DeformConvAttrs {
            conv: ConvAttrs::default(),
            deform_groups: dg,
        };
        Some((Op::DeformConv2d(attrs), vec![x, offset, mask, w]))
    }

    /// A gradient op on `x`, with the forward op that makes its cotangent.
    fn propose_grad(&mut self, x: ValueRef, axis: i64) -> Option<(Op, Vec<ValueRef>)> {
        let xd = self.dims_of(x);
        let forward = |s: &mut Self, op: Op, ins: Vec<ValueRef>| -> Option<ValueRef> {
            let name = s.name();
            let name = s.unique(name);
            s.g.add_node(op, ins, name).ok().map(ValueRef::from)
        };
        match self.rng.below(4) {
            0 if xd.len() == 4 => {
                let p = PoolAttrs {
                    kind: *self.rng.pick(&[PoolKind::Max, PoolKind::Avg]),
                    kernel: [2, 2],
                    stride: [self.rng.below(2) + 1; 2],
                    padding: [self.rng.below(2); 4],
                    ceil_mode: self.rng.chance(0.5),
                    count_include_pad: self.rng.chance(0.5),
                };
                let dy = forward(self, Op::Pool(p.clone()), vec![x])?;
                Some((Op::Grad(GradOp::Pool(p)), vec![x, dy]))
            }
            1 if xd.len() == 4 => {
                let c = xd[1].as_static()?;
                let groups = if c.is_multiple_of(2) && self.rng.chance(0.5) {
                    2
                } else {
                    1
                };
                let k = self.rng.below(3) + 1;
                let w = self.param(&[groups * 2, c / groups, k, k]);
                let conv = ConvAttrs {
                    stride: [self.rng.below(2) + 1; 2],
                    padding: [self.rng.below(2); 4],
                    dilation: [self.rng.below(2) + 1, 1],
                    groups,
                };
                let dy = forward(self, Op::Conv2d(conv.clone()), vec![x, w])?;
                Some((
                    Op::Grad(GradOp::Conv2dWeight {
                        conv,
                        kernel: [k, k],
                    }),
                    vec![x, dy],
                ))
            }
            2 if !xd.is_empty() => {
                let idx = self.constant();
                let a = axis.rem_euclid(xd.len() as i64) as usize;
                let rows = xd[a].as_static()?;
                let dy = forward(self, Op::Gather { axis }, vec![x, idx])?;
                Some((Op::Grad(GradOp::Gather { axis, rows }), vec![idx, dy]))
            }
            3 if xd.len() == 1 => {
                let idx = self.constant();
                let upd = forward(self, Op::GatherElements { axis: 0 }, vec![x, idx])?;
                Some((Op::Grad(GradOp::ScatterAdd { axis: 0 }), vec![x, idx, upd]))
            }
            _ => None,
        }
    }

    fn annotate(&mut self, v: ValueRef) {
        let n_out = self.g.node(v.node).outputs.len();
        let ranks: Vec<usize> = self
            .g
            .node(v.node)
            .outputs
            .iter()
            .map(|t| t.rank())
            .collect();
        let mesh = self
            .g
            .meshes
            .iter()
            .next()
            .map(|(k, m)| (k.clone(), m.shape.len()));
        let rng = &mut self.rng;
        let mut dist = None;
        if rng.chance(0.4) {
            let mut d = OpDist {
                stage: rng.chance(0.5).then(|| rng.below(4) as u32),
                ..Default::default()
            };
            if let Some((name, axes)) = mesh {
                if rng.chance(0.7) {
                    d.mesh = Some(name);
                    for r in ranks.iter().take(n_out) {
                        let ps = (0..axes)
                            .map(|_| match rng.below(3) {
                                0 if *r > 0 => Placement::Shard(rng.below(*r as u64) as usize),
                                1 => Placement::Partial(*rng.pick(&ReduceOp::ALL)),
                                _ => Placement::Replicate,
                            })
                            .collect();
                        d.outputs.push(ps);
                    }
                }
            }
            dist = Some(d);
        }
        let device = rng.chance(0.2).then(|| DeviceRef {
            kind: if rng.chance(0.5) {
                DeviceKind::Cpu
            } else {
                DeviceKind::Gpu
            },
            index: rng.chance(0.5).then(|| rng.below(8) as u32),
        });
        let node = self.g.node_mut(v.node);
        node.dist = dist;
        node.device = device;
    }
}

fn random_graph(seed: u64) -> Graph {
    let mut gen = Gen {
        rng: Rng(seed | 1),
        g: Graph::new("random"),
        counter: 0,
    };
    if gen.rng.chance(0.5) {
        let shape = gen.rng.pick(&[vec![2, 2], vec![4], vec![2, 2, 2]]).clone();
        let names = ["dp", "tp", "pp"][..shape.len()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut mesh = ProcessMesh::new(shape, names);
        if gen.rng.chance(0.5) {
            mesh.device_ids.reverse();
        }
        gen.g.meshes.insert("m".into(), mesh);
    }
    if gen.rng.chance(0.3) {
        gen.g.mode = ExecMode::Training;
    }
    let n_inputs = gen.rng.below(3) + 1;
    for i in 0..n_inputs {
        let rank = gen.rng.below(4) + 1;
        let dims = (0..rank)
            .map(|k| match gen.rng.below(6) {
                0 if k == 0 => Dim::sym("N"),
                1 if k == 1 => Dim::sym("seq"),
                _ => Dim::Static(gen.rng.below(6) + 1),
            })
            .collect();
        let v = gen
            .g
            .add_input(format!("in{i}"), TensorType::new(DType::F32, dims));
        gen.annotate(v);
    }
    let steps = gen.rng.below(25) + 3;
    for _ in 0..steps {
        if let Some((op, inputs)) = gen.propose() {
            let name = gen.name();
            let name = gen.unique(name);
            if let Ok(id) = gen.g.add_node(op, inputs, name) {
                gen.annotate(id.into());
            }
        }
    }
    let candidates = gen.values(|_| true);
    let outs = (0..gen.rng.below(3) + 1)
        .map(|_| *gen.rng.pick(&candidates))
        .collect();
    gen.g.set_outputs(outs);
    // Training-form batch_norms write their new running statistics back as state.
    let bns: Vec<(String, String, NodeId)> = gen
        .g
        .iter()
        .filter(|(_, n)| {
            matches!(
                n.op,
                Op::BatchNorm {
                    momentum: Some(_),
                    ..
                }
            )
        })
        .filter_map(|(id, n)| {
            let pname = |v: ValueRef| match &gen.g.node(v.node).op {
                Op::Param(p) => Some(p.name.clone()),
                _ => None,
            };
            Some((pname(n.inputs[3])?, pname(n.inputs[4])?, id))
        })
        .collect();
    for (mean, var, id) in bns {
        if gen.rng.chance(0.8) && !gen.g.state.contains(&mean) && !gen.g.state.contains(&var) {
            gen.g.add_state_update(mean, ValueRef::new(id, 1));
            gen.g.add_state_update(var, ValueRef::new(id, 2));
        }
    }
    if gen.rng.chance(0.2) {
        let name = gen.name().unwrap_or_else(|| "r".into());
        let name = gen.unique(Some(format!("recv_{name}")));
        let _ = gen.g.add_node_typed(
            Op::Recv { peer: 1 },
            vec![],
            vec![TensorType::f32(&[2, 3])],
            name,
        );
    }
    gen.g
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn text_round_trip_is_exact(seed in any::<u64>()) {
        let g = random_graph(seed);
        verify(&g).map_err(|e| TestCaseError::fail(format!("{e}\n{}", print(&g))))?;
        let text = print(&g);
        let back = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&back, &g, "text:\n{}", text);
        prop_assert_eq!(print(&back), text);
    }

    #[test]
    fn json_round_trip_is_exact(seed in any::<u64>()) {
        let g = random_graph(seed);
        let j = serde_json::to_string(&g).unwrap();
        let back: Graph = serde_json::from_str(&j).unwrap();
        prop_assert_eq!(back, g);
    }
}

#[test]
fn generated_graphs_cover_many_ops() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..256 {
        for n in random_graph(seed).nodes() {
            seen.insert(n.op.name());
        }
    }
    // Training graphs with state updates are generated too.
    let with_state = (0..256)
        .filter(|&seed| !random_graph(seed).state.is_empty())
        .count();
    assert!(
        with_state >= 5,
        "only {with_state} graphs with state updates"
    );
    // The generator must exercise most of the op set, or the round trip proves little.
    assert!(
        seen.len() >= 45,
        "only {} ops generated: {seen:?}",
        seen.len()
    );
}
