//! Ad-hoc: prints the kernel IR and optimized LLVM IR of one kernel.
use oar_passes::{PassContext, Pipeline};
use std::collections::BTreeMap;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let g = oar_models::build(&args[1]).unwrap().unwrap();
    let cluster = oar_ir::Cluster::resolve("cpu").unwrap();
    let cx = PassContext::new(cluster.node_groups[0].device.clone());
    let (opt, _) = Pipeline::named("inference", &[])
        .unwrap()
        .run(g, &cx, |_, _| {})
        .unwrap();
    let c =
        oar_codegen::kernel::build_kernels(&opt, &BTreeMap::from([("N".to_string(), 1)])).unwrap();
    let k = c
        .kernels
        .iter()
        .find(|k| k.name.starts_with(&format!("{}_", args[2])))
        .unwrap();
    println!("{k}");
    let one = oar_codegen::kernel::Compiled {
        program: c.program.clone(),
        kernels: vec![k.clone()],
    };
    let ir = oar_codegen::cpu::emit(&one, oar_codegen::cpu::Emit::LlvmIr).unwrap();
    println!("{}", String::from_utf8_lossy(&ir));
}
