use oar_codegen::jit::JitModel;
use oar_passes::{PassContext, Pipeline};
use oar_runtime::{init::init_weights, HostTensor};
use std::collections::BTreeMap;
fn main() {
    let var = std::env::args().nth(1).unwrap();
    let g = oar_models::build("lcnet_x1_0").unwrap().unwrap();
    let w = init_weights(&g, 0).unwrap();
    let cluster = oar_ir::Cluster::resolve("cpu").unwrap();
    let cx = PassContext::new(cluster.node_groups[0].device.clone());
    let (opt, _) = Pipeline::named("inference", &[])
        .unwrap()
        .run(g, &cx, |_, _| {})
        .unwrap();
    let b = BTreeMap::from([("N".to_string(), 1)]);
    let mut ma = JitModel::new(&opt, &b, &w, 2).unwrap();
    std::env::set_var(&var, "1");
    let mut mb = JitModel::new(&opt, &b, &w, 2).unwrap();
    let x = HostTensor::f32(
        vec![1, 3, 224, 224],
        (0..150528).map(|i| (i % 255) as f32 / 255.0).collect(),
    );
    let xs = std::slice::from_ref(&x);
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..40 {
        for _ in 0..10 {
            let t = std::time::Instant::now();
            ma.run(xs).unwrap();
            ta.push(t.elapsed().as_secs_f64() * 1e3);
        }
        for _ in 0..10 {
            let t = std::time::Instant::now();
            mb.run(xs).unwrap();
            tb.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    ta.sort_by(f64::total_cmp);
    tb.sort_by(f64::total_cmp);
    println!(
        "A (default) p50 {:.3} min {:.3} | B ({var}) p50 {:.3} min {:.3}",
        ta[200], ta[0], tb[200], tb[0]
    );
}
