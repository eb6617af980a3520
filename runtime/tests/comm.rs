//! The communicator's collectives on 2, 3 and 4 thread-ranks against direct computations on
//! random data; the ring all-reduce's traffic; typed errors; send/recv.

mod comm_common;

use comm_common::{assert_close, random, reduce_direct};
use oar_ir::dist::ReduceOp;
use oar_runtime::comm::shaped::{run_tensor, Collective};
use oar_runtime::comm::{CommError, Communicator, LocalComm};
use oar_runtime::HostTensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Runs `f(comm, index)` on one thread per rank of `comms`; results in rank order.
fn on_ranks<T: Send>(comms: &[LocalComm], f: impl Fn(&LocalComm, usize) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let hs: Vec<_> = comms
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let f = &f;
                s.spawn(move || f(c, i))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("rank thread"))
            .collect()
    })
}

fn ranks(n: usize) -> Vec<u64> {
    // Not 0..n: global ids need not be contiguous or start at zero.
    (0..n as u64).map(|r| 10 + 3 * r).collect()
}

#[test]
fn all_reduce_matches_direct_and_is_identical_on_every_rank() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for n in 2..=4 {
        let group = ranks(n);
        for op in ReduceOp::ALL {
            // Lengths below, at and above the group size, divisible or not.
            for len in [1, n, 7, 64, 1001] {
                let inputs: Vec<Vec<f32>> = (0..n).map(|_| random(&mut rng, len, op)).collect();
                let comms = LocalComm::group(&group);
                let out = on_ranks(&comms, |c, i| {
                    let mut buf = inputs[i].clone();
                    c.all_reduce(&group, op, &mut buf).expect("all_reduce");
                    buf
                });
                let what = format!("all_reduce {} n={n} len={len}", op.name());
                assert_close(&out[0], &reduce_direct(op, &inputs), &what);
                for o in &out[1..] {
                    let same = o
                        .iter()
                        .zip(&out[0])
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{what}: ranks disagree bit for bit");
                }
            }
        }
    }
}

#[test]
fn ring_all_reduce_moves_two_n_minus_one_over_n_of_the_data() {
    let len = 1200; // divisible by 2, 3 and 4
    for n in 2..=4 {
        let group = ranks(n);
        let comms = LocalComm::group(&group);
        let sent = on_ranks(&comms, |c, i| {
            let mut buf = vec![i as f32; len];
            c.all_reduce(&group, ReduceOp::Sum, &mut buf)
                .expect("all_reduce");
            assert!(buf.iter().all(|&v| v == (n * (n - 1) / 2) as f32));
            c.bytes_sent()
        });
        let want = 2 * (n - 1) * len * 4 / n;
        for (r, &s) in sent.iter().enumerate() {
            assert_eq!(s, want as u64, "n={n} rank {r}: bytes sent");
        }
    }
}

#[test]
fn reduce_scatter_matches_direct() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for n in 2..=4 {
        let group = ranks(n);
        for op in ReduceOp::ALL {
            let m = 13;
            let inputs: Vec<Vec<f32>> = (0..n).map(|_| random(&mut rng, n * m, op)).collect();
            let comms = LocalComm::group(&group);
            let out = on_ranks(&comms, |c, _| {
                let i = group.iter().position(|&r| r == c.rank()).expect("member");
                let mut o = vec![0.0; m];
                c.reduce_scatter(&group, op, &inputs[i], &mut o)
                    .expect("reduce_scatter");
                o
            });
            let want = reduce_direct(op, &inputs);
            for (i, o) in out.iter().enumerate() {
                let what = format!("reduce_scatter {} n={n} rank {i}", op.name());
                assert_close(o, &want[i * m..(i + 1) * m], &what);
            }
        }
    }
}

#[test]
fn all_gather_broadcast_and_all_to_all_match_direct() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for n in 2..=4 {
        let group = ranks(n);
        let l = 6 * n; // bytes per member, divisible by n for all_to_all
        let inputs: Vec<Vec<u8>> = (0..n)
            .map(|_| (0..l).map(|_| rng.gen()).collect())
            .collect();
        let comms = LocalComm::group(&group);
        let gathered = on_ranks(&comms, |c, i| {
            let mut o = vec![0; n * l];
            c.all_gather(&group, &inputs[i], &mut o)
                .expect("all_gather");
            o
        });
        let concat: Vec<u8> = inputs.concat();
        assert!(gathered.iter().all(|g| *g == concat), "all_gather n={n}");

        for root in 0..n {
            let out = on_ranks(&comms, |c, i| {
                let mut b = inputs[i].clone();
                c.broadcast(&group, root, &mut b).expect("broadcast");
                b
            });
            assert!(
                out.iter().all(|b| *b == inputs[root]),
                "broadcast n={n} root {root}"
            );
        }

        let out = on_ranks(&comms, |c, i| {
            let mut o = vec![0; l];
            c.all_to_all(&group, &inputs[i], &mut o)
                .expect("all_to_all");
            o
        });
        let k = l / n;
        for (j, o) in out.iter().enumerate() {
            let want: Vec<u8> = (0..n)
                .flat_map(|i| inputs[i][j * k..(j + 1) * k].to_vec())
                .collect();
            assert_eq!(*o, want, "all_to_all n={n} member {j}");
        }
    }
}

#[test]
fn barrier_waits_for_every_member() {
    for n in 2..=4 {
        let group = ranks(n);
        let arrived = AtomicUsize::new(0);
        let comms = LocalComm::group(&group);
        let seen = on_ranks(&comms, |c, i| {
            // Late arrivals: the barrier must hold the early ones.
            std::thread::sleep(Duration::from_millis(10 * i as u64));
            arrived.fetch_add(1, Ordering::SeqCst);
            c.barrier(&group).expect("barrier");
            arrived.load(Ordering::SeqCst)
        });
        assert!(seen.iter().all(|&s| s == n), "n={n}: {seen:?}");
    }
}

/// Concatenates row-major tensors along `axis`.
fn concat(parts: &[HostTensor], axis: usize) -> HostTensor {
    let shape0 = &parts[0].shape;
    let outer: usize = shape0[..axis].iter().product();
    let mut shape = shape0.clone();
    shape[axis] = parts.iter().map(|p| p.shape[axis]).sum();
    let mut data = Vec::new();
    for o in 0..outer {
        for p in parts {
            let v = p.as_f32().expect("f32");
            let blk = v.len() / outer;
            data.extend_from_slice(&v[o * blk..(o + 1) * blk]);
        }
    }
    HostTensor::f32(shape, data)
}

#[test]
fn collectives_along_tensor_axes_match_narrow_and_concat() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for n in 2..=4 {
        let group = ranks(n);
        let shape = vec![3, 2 * n, n, 5];
        let xs: Vec<HostTensor> = (0..n)
            .map(|_| {
                let len = shape.iter().product();
                HostTensor::f32(shape.clone(), random(&mut rng, len, ReduceOp::Sum))
            })
            .collect();
        let comms = LocalComm::group(&group);
        let run = |c: Collective| {
            on_ranks(&comms, |comm, i| {
                run_tensor(comm, &group, &c, &xs[i]).expect("collective")
            })
        };
        for axis in 0..4 {
            let want = concat(&xs, axis);
            let got = run(Collective::AllGather { axis });
            assert!(
                got.iter().all(|g| *g == want),
                "all_gather axis {axis} n={n}"
            );
        }
        for axis in [1, 2] {
            let got = run(Collective::ReduceScatter {
                op: ReduceOp::Sum,
                axis,
            });
            let parts: Vec<Vec<f32>> = xs
                .iter()
                .map(|x| x.as_f32().expect("f32").to_vec())
                .collect();
            let sum = HostTensor::f32(
                shape.clone(),
                reduce_direct(ReduceOp::Sum, &parts)
                    .iter()
                    .map(|&v| v as f32)
                    .collect(),
            );
            let len = shape[axis] / n;
            for (i, g) in got.iter().enumerate() {
                let want = sum.narrow(axis, i * len, len);
                let (d, _) = g.max_abs_diff(&want).expect("same shape");
                assert!(d <= 1e-5, "reduce_scatter axis {axis} n={n} rank {i}: {d}");
            }
        }
        for (split, cat) in [(1, 0), (2, 3), (1, 1), (2, 1)] {
            let got = run(Collective::AllToAll {
                split_axis: split,
                concat_axis: cat,
            });
            let len = shape[split] / n;
            for (j, g) in got.iter().enumerate() {
                let pieces: Vec<HostTensor> =
                    xs.iter().map(|x| x.narrow(split, j * len, len)).collect();
                assert_eq!(
                    *g,
                    concat(&pieces, cat),
                    "all_to_all {split}→{cat} n={n} member {j}"
                );
            }
        }
    }
}

#[test]
fn send_and_recv_deliver_in_order_both_ways() {
    let comms = LocalComm::group(&[0, 1]);
    let out = on_ranks(&comms, |c, i| {
        let peer = 1 - i as u64;
        let mine: Vec<Vec<u8>> = (0..3).map(|k| vec![(10 * i + k) as u8; 4 + k]).collect();
        for m in &mine {
            c.send(peer, m).expect("send");
        }
        (0..3)
            .map(|k| {
                let mut b = vec![0; 4 + k];
                c.recv(peer, &mut b).expect("recv");
                b
            })
            .collect::<Vec<_>>()
    });
    for (i, got) in out.iter().enumerate() {
        let from = 1 - i;
        let want: Vec<Vec<u8>> = (0..3).map(|k| vec![(10 * from + k) as u8; 4 + k]).collect();
        assert_eq!(*got, want, "rank {i}");
    }
}

#[test]
fn a_peer_that_never_joins_times_out_naming_group_and_ranks() {
    let comms = LocalComm::group_with_timeout(&[0, 1], Duration::from_millis(100));
    let mut buf = vec![1.0f32; 8];
    let e = comms[0]
        .all_reduce(&[0, 1], ReduceOp::Sum, &mut buf)
        .expect_err("rank 1 never calls");
    assert!(
        matches!(&e, CommError::Timeout { rank: 0, peer: 1, group, .. } if group == &[0, 1]),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("[0, 1]") && msg.contains("rank 0") && msg.contains("rank 1"),
        "{msg}"
    );
}

#[test]
fn a_rank_outside_the_group_is_refused() {
    let comms = LocalComm::group(&[0, 1, 2]);
    let mut buf = vec![0.0f32; 4];
    let e = comms[2].all_reduce(&[0, 1], ReduceOp::Sum, &mut buf);
    assert_eq!(
        e,
        Err(CommError::NotInGroup {
            rank: 2,
            group: vec![0, 1]
        })
    );
    let e = comms[0].barrier(&[0, 1, 0]);
    assert!(matches!(e, Err(CommError::BadGroup { .. })), "{e:?}");
}

#[test]
fn members_that_disagree_on_the_size_both_fail() {
    let group = [0, 1];
    let comms = LocalComm::group_with_timeout(&group, Duration::from_secs(5));
    let out = on_ranks(&comms, |c, i| {
        let mut buf = vec![1.0f32; 8 + 2 * i];
        c.all_reduce(&group, ReduceOp::Sum, &mut buf)
    });
    for (i, r) in out.iter().enumerate() {
        match r {
            Err(CommError::SizeMismatch {
                rank, mine, theirs, ..
            }) => {
                assert_eq!(*rank, i as u64);
                assert_eq!(*mine, 4 * (8 + 2 * i));
                assert_eq!(*theirs, 4 * (8 + 2 * (1 - i)));
            }
            other => panic!("rank {i}: {other:?}"),
        }
    }
}

#[test]
fn run_on_rank_sends_and_receives_between_two_ranks() {
    let stage0 = oar_ir::parse(
        "graph @s0(%x: f32[2,3]) -> (f32[2,3]) {
  %a = tanh(%x) : f32[2,3]
  %s = send(%a) {peer=1} : ()
  return %a
}
",
    )
    .expect("stage 0");
    let stage1 = oar_ir::parse(
        "graph @s1(%y: f32[2,3]) -> (f32[2,3]) {
  %r = recv {peer=0} : f32[2,3]
  %o = mul(%r, %y) : f32[2,3]
  return %o
}
",
    )
    .expect("stage 1");
    // The single-device graph both stages split.
    let whole = oar_ir::parse(
        "graph @whole(%x: f32[2,3], %y: f32[2,3]) -> (f32[2,3]) {
  %a = tanh(%x) : f32[2,3]
  %o = mul(%a, %y) : f32[2,3]
  return %o
}
",
    )
    .expect("whole");
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x = HostTensor::f32(vec![2, 3], random(&mut rng, 6, ReduceOp::Sum));
    let y = HostTensor::f32(vec![2, 3], random(&mut rng, 6, ReduceOp::Sum));
    let weights = Default::default();
    let want = oar_runtime::run(&whole, &[x.clone(), y.clone()], &weights).expect("whole");
    let comms = LocalComm::group(&[0, 1]);
    let (graphs, inputs) = ([stage0, stage1], [x, y]);
    let out = on_ranks(&comms, |c, i| {
        oar_runtime::run_on_rank(&graphs[i], &inputs[i..=i], &weights, c).expect("stage")
    });
    assert_eq!(out[1], want);
    let e = oar_runtime::run(&graphs[0], &inputs[..1], &weights).expect_err("no communicator");
    assert!(e.to_string().contains("communicator"), "{e}");
}
