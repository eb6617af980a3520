//! Plan → graph → ranks, for real: ernie-3.0-titan-tiny is planned on the 4-device CPU cluster
//! (`examples/clusters/cpu4.toml`), the plan is written onto the graph as distribution
//! attributes, the partitioner makes one graph per rank from those alone, and the ranks run
//! in threads with the in-process communicator and give the single-device losses.

mod support;

use oar_ir::dist::Placement;
use oar_ir::op::Op;
use oar_ir::Graph;
use oar_passes::parallel::{
    annotate, partition, partition_rank, specialize, PartitionError, RankGraph,
};
use oar_runtime::comm::LocalComm;
use oar_runtime::{init::init_weights, run, run_on_rank, HostTensor};
use std::collections::BTreeMap;
use support::*;

#[test]
fn ernie_tiny_planned_on_cpu4_runs_on_four_ranks_like_one_device() {
    let e = plan(2, 2, 1);
    // The planner's intra-op choice is Megatron's: the test covers tensor parallelism.
    assert!(
        e.layer_strategy.contains(&"qkv: column".to_string())
            && e.layer_strategy.contains(&"ffn2: row".to_string()),
        "{:?}",
        e.layer_strategy
    );
    let seq = 8;
    let g = annotated(&e, 4, seq);
    let ranks = partition(&g).unwrap();
    assert_eq!(ranks.len(), 4);
    assert!(ranks.iter().all(|r| r.collectives > 0 && r.sends == 0));

    let weights = init_weights(&g, 9).unwrap();
    let ins = inputs(&g, seq);
    let want = run(&g, &ordered(&g, &ins), &weights).unwrap();
    let results = run_ranks(&ranks, &g, &ins, &weights);
    for rg in &ranks {
        assert_eq!(rg.outputs, (0..want.len()).collect::<Vec<_>>());
    }
    assert_ranks_match(&ranks, &results, &want);
    // Column-split FFN weights: each tensor rank holds half of linear1's columns.
    let r0 = &ranks[0];
    assert_eq!(
        r0.param_placements["encoder.layers.0.linear1.weight"],
        vec![Placement::Replicate, Placement::Shard(1)]
    );
    let w1 = r0.graph.find("encoder.layers.0.linear1.weight").unwrap();
    assert_eq!(r0.graph.node(w1).outputs[0].to_string(), "f32[128,256]");
    assert_eq!(
        r0.inputs[0].1,
        vec![Placement::Shard(0), Placement::Replicate]
    );
}

/// A name worth keeping: numeric names are re-assigned.
fn kept(name: &str) -> Option<String> {
    (!name.chars().all(|c| c.is_ascii_digit())).then(|| name.to_string())
}

/// A pipeline rank's graph with its `recv`s turned into inputs and its `send`s into extra
/// outputs, so the interpreter can run one stage after another.
fn open_stage(rg: &RankGraph) -> (Graph, Vec<u64>, Vec<u64>) {
    let g = &rg.graph;
    let mut out = Graph::new(g.name.clone());
    out.meshes = g.meshes.clone();
    let (mut recv_from, mut send_to, mut sent) = (vec![], vec![], vec![]);
    let mut map = BTreeMap::new();
    for (id, n) in g.iter() {
        let new = match &n.op {
            Op::Input => out.add_input(n.name.clone(), n.outputs[0].clone()),
            Op::Recv { peer } => {
                recv_from.push(*peer);
                out.add_input(format!("recv{}", recv_from.len()), n.outputs[0].clone())
            }
            Op::Send { peer } => {
                send_to.push(*peer);
                sent.push(map[&n.inputs[0]]);
                continue;
            }
            op if op.is_source() => out
                .add_node_typed(op.clone(), vec![], n.outputs.clone(), kept(&n.name))
                .unwrap()
                .into(),
            op => {
                let ins = n.inputs.iter().map(|v| map[v]).collect();
                out.add_node(op.clone(), ins, None).unwrap().into()
            }
        };
        map.insert(oar_ir::ValueRef::new(id, 0), new);
    }
    let mut outs: Vec<_> = g.outputs().iter().map(|v| map[v]).collect();
    outs.extend(sent);
    out.set_outputs(outs);
    (out, recv_from, send_to)
}

#[test]
fn pipeline_stages_exchange_boundary_values_by_send_and_recv() {
    // Plain 1F1B: one stage per device (interleaving has its own test below).
    let e = candidate(1, 2, 2, |p| {
        p.schedule == oar_passes::parallel::step_cost::Schedule::OneFOneB && !p.sequence_parallel
    });
    assert_eq!(e.plan.stage_layers.len(), 2);
    let seq = 8;
    let g = annotated(&e, 2, seq);
    let ranks = partition(&g).unwrap();
    assert_eq!(ranks.len(), 4);
    let (first, last): (Vec<&RankGraph>, Vec<&RankGraph>) =
        ranks.iter().partition(|r| r.stage == 0);
    assert_eq!((first.len(), last.len()), (2, 2));
    // Stage 0 only sends and returns nothing; stage 1 receives and returns every loss.
    for r in &first {
        assert!(r.sends > 0 && r.recvs == 0 && r.outputs.is_empty(), "{r:?}");
    }
    for r in &last {
        assert!(r.recvs > 0 && r.sends == 0, "{r:?}");
        assert_eq!(r.outputs, (0..g.outputs().len()).collect::<Vec<_>>());
    }
    assert_eq!(first[0].sends, last[0].recvs);

    // Run stage 0's ranks, hand what they send to stage 1's, run those: the single-device
    // losses come out of each last-stage rank.
    let weights = init_weights(&g, 5).unwrap();
    let ins = inputs(&g, seq);
    let want = run(&g, &ordered(&g, &ins), &weights).unwrap();
    let run_stage = |stage: &[&RankGraph], received: &BTreeMap<u64, Vec<HostTensor>>| {
        let ids: Vec<u64> = stage.iter().map(|r| r.rank).collect();
        let comms = LocalComm::group(&ids);
        std::thread::scope(|scope| {
            let hs: Vec<_> = stage
                .iter()
                .zip(&comms)
                .map(|(rg, comm)| {
                    let (li, lw) = local(rg, &g, &ins, &weights);
                    let (open, _, to) = open_stage(rg);
                    // The opened graph's inputs: the rank's own by name, then what it
                    // received, in order (`recv1`, `recv2`, …).
                    let by_name: BTreeMap<&str, &HostTensor> =
                        rg.inputs.iter().map(|(n, _)| n.as_str()).zip(&li).collect();
                    let got = received.get(&rg.rank).cloned().unwrap_or_default();
                    let li: Vec<HostTensor> = open
                        .inputs()
                        .iter()
                        .map(|&i| {
                            let name = &open.node(i).name;
                            match name
                                .strip_prefix("recv")
                                .and_then(|k| k.parse::<usize>().ok())
                            {
                                Some(k) => got[k - 1].clone(),
                                None => by_name[name.as_str()].clone(),
                            }
                        })
                        .collect();
                    scope.spawn(move || {
                        let outs = run_on_rank(&open, &li, &lw, comm).unwrap();
                        (rg.rank, rg.outputs.len(), to, outs)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        })
    };
    let mut received: BTreeMap<u64, Vec<HostTensor>> = BTreeMap::new();
    for (rank, n_out, to, outs) in run_stage(&first, &BTreeMap::new()) {
        for (peer, t) in to.iter().zip(&outs[n_out..]) {
            received.entry(*peer).or_default().push(t.clone());
        }
        // Each value goes from this rank to the rank at its coordinates in stage 1.
        let (_, last_from, _) = open_stage(last.iter().find(|r| r.rank == to[0]).unwrap());
        assert!(last_from.iter().all(|&p| p == rank));
    }
    for (rank, n_out, _, outs) in run_stage(&last, &received) {
        assert_eq!(n_out, want.len());
        for (k, (a, b)) in outs.iter().zip(&want).enumerate() {
            assert_close(a, b, &format!("rank {rank} output {k}"));
        }
    }
}

#[test]
fn the_graph_cost_model_prices_a_rank_s_all_reduce_on_the_cluster_link() {
    use oar_passes::comm_cost::{all_reduce, Topology, COMM_EFFICIENCY};
    use oar_passes::roofline::CostModel;
    let c = cpu4();
    let g = annotated(&plan(2, 2, 1), 4, 8);
    let r0 = partition_rank(&g, 0).unwrap();
    let model = CostModel::for_device(&c.node_groups[0].device).with_topology(Topology::of(&c));
    let b = BTreeMap::new();
    let mut priced = 0;
    for n in r0.graph.nodes() {
        if let Op::AllReduce { .. } = n.op {
            let bytes = n.outputs[0].bytes(&b, 1) as f64;
            let want = all_reduce(2, bytes, &c.node_groups[0].intra_node, COMM_EFFICIENCY)
                + model.launch_s;
            assert_eq!(model.node_time(&r0.graph, n, &b), want, "%{}", n.name);
            priced += 1;
        }
    }
    assert!(priced >= 8, "{priced} all-reduces");
}

#[test]
fn graphs_without_meshes_and_unknown_ranks_are_clear_errors() {
    let g = oar_models::build(MODEL).unwrap().unwrap();
    let g = specialize(&g, &BTreeMap::from([("N".into(), 2), ("seq".into(), 4)])).unwrap();
    let err = partition(&g).unwrap_err();
    assert_eq!(err, PartitionError::NoMesh);
    assert!(err.to_string().contains("--emit-graph"), "{err}");

    let a = annotated(&plan(2, 2, 1), 2, 4);
    let err = partition_rank(&a, 7).unwrap_err();
    assert_eq!(
        err.to_string(),
        "rank 7 is not in any mesh of the graph (ranks: 0, 1, 2, 3)"
    );
    // Symbolic shapes must be bound first.
    let sym = annotate(&oar_models::build(MODEL).unwrap().unwrap(), &plan(4, 1, 1)).unwrap();
    assert!(matches!(partition(&sym), Err(PartitionError::Symbolic(_))));
    // Batch 3 does not split over two data-parallel ranks.
    let odd = annotated(&plan(2, 2, 1), 3, 4);
    let err = partition(&odd).unwrap_err();
    assert!(matches!(err, PartitionError::Uneven { .. }), "{err}");
}

#[test]
fn interleaved_virtual_stages_share_their_devices_round_robin() {
    use oar_passes::parallel::step_cost::Schedule;
    // The planner's choice for ernie-3.0-titan-tiny at dp 1 × tp 2 × pp 2 is interleaved 1F1B with
    // two model chunks per device (and sequence parallelism, so both are covered at once).
    let e = plan(1, 2, 2);
    assert_eq!(e.plan.schedule, Schedule::Interleaved(2));
    let seq = 8;
    let g = annotated(&e, 2, seq);
    // Four layers, four virtual stages; stage k runs on @stage<k mod 2>.
    let stage_of = |param: &str| {
        let n = g.node(g.find(param).unwrap());
        let d = n.dist.as_ref().unwrap();
        (d.stage, d.mesh.clone().unwrap())
    };
    assert_eq!(
        stage_of("encoder.layers.1.linear1.weight"),
        (Some(1), "stage1".to_string())
    );
    assert_eq!(
        stage_of("nlu.encoder.layers.0.linear1.weight"),
        (Some(2), "stage0".to_string())
    );
    assert_eq!(
        stage_of("nlg.encoder.layers.0.linear1.weight"),
        (Some(3), "stage1".to_string())
    );
    let ranks = partition(&g).unwrap();
    assert_eq!(ranks.len(), 4);
    for rg in &ranks {
        // @stage0 holds devices 0 and 1, @stage1 devices 2 and 3.
        let d = u32::from(rg.rank >= 2);
        assert_eq!(rg.stages, vec![d, d + 2], "rank {}", rg.rank);
        // Every device both sends and receives: 0 → 1 → 2 → 3 alternates meshes.
        assert!(rg.sends > 0 && rg.recvs > 0, "{rg:?}");
        assert!(rg.collectives > 0);
    }
    // The losses come from the last virtual stage, on @stage1.
    assert!(ranks[0].outputs.is_empty() && ranks[1].outputs.is_empty());
    assert_eq!(ranks[2].outputs, (0..g.outputs().len()).collect::<Vec<_>>());

    let weights = init_weights(&g, 7).unwrap();
    let ins = inputs(&g, seq);
    let want = run(&g, &ordered(&g, &ins), &weights).unwrap();
    let got = run_ranks(&ranks, &g, &ins, &weights);
    assert_ranks_match(&ranks, &got, &want);
}
