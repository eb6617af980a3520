//! Equality saturation + extraction time on lcnet_x1_0, ernie-3.0-base and a 12-layer
//! GPT-style block stack. Run: `cargo bench -p oar-passes --bench eqsat`.

use criterion::{criterion_group, criterion_main, Criterion};
use oar_passes::eqsat::{optimize, rules::all_rules, Limits};
use oar_passes::PassContext;

fn graphs() -> Vec<(&'static str, oar_ir::Graph)> {
    let gpt = oar_passes_bench_support::gpt_stack(12);
    vec![
        (
            "lcnet_x1_0",
            oar_models::build("lcnet_x1_0").unwrap().unwrap(),
        ),
        (
            "ernie-3.0-base-zh",
            oar_models::build("ernie-3.0-base-zh").unwrap().unwrap(),
        ),
        ("gpt-12-layer", gpt),
    ]
}

mod oar_passes_bench_support {
    use oar_frontend::nn::TransformerEncoderLayerConfig;
    use oar_frontend::ModelBuilder;

    /// 12 pre-norm causal blocks, hidden 768, 12 heads, FFN 3072.
    pub fn gpt_stack(layers: usize) -> oar_ir::Graph {
        let b = ModelBuilder::new("gpt");
        let mut h = b.input("x", "f32[N,seq,768]");
        for i in 0..layers {
            let l = TransformerEncoderLayerConfig::new(768, 12, 3072)
                .pre_norm(true)
                .causal(true)
                .init(&b, &format!("h.{i}"));
            h = l.forward(&h);
        }
        b.finish(&[&h]).unwrap()
    }
}

fn bench(c: &mut Criterion) {
    let cx = PassContext::host();
    let rules = all_rules();
    let mut group = c.benchmark_group("eqsat+extract");
    group.sample_size(10);
    for (name, g) in graphs() {
        let canon = oar_passes::canonicalize::dce(&g).unwrap().0;
        group.bench_function(name, |b| {
            b.iter(|| optimize(&canon, &rules, &Limits::default(), &cx).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
