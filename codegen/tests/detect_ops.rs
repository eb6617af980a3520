//! The detector ops have no LLVM kernel: compiling a graph with `nms`, `matrix_nms` or
//! `deform_conv2d` fails with an error naming the node and saying where they run instead.

use oar_codegen::cpu::host_cpu;
use oar_codegen::kernel::build_kernels;
use std::collections::BTreeMap;

fn compile_error(text: &str) -> String {
    let g = oar_ir::parse(text).unwrap_or_else(|e| panic!("{e}"));
    let cpu = host_cpu().unwrap();
    match build_kernels(&g, &BTreeMap::new(), &cpu) {
        Ok(_) => panic!("compiled a graph with no kernel for its op:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn nms_and_deform_conv_say_they_have_no_cpu_kernel() {
    let nms = "graph @g(%b: f32[1,8,4], %s: f32[1,2,8]) -> (f32[1,4,6]) {\n  %n = nms(%b, %s) {iou_threshold=0.5, score_threshold=0.1, keep_top_k=4} : (f32[1,4,6], i64[1,4,3], i64[1])\n  return %n\n}\n";
    let e = compile_error(nms);
    assert!(
        e.contains("%n") && e.contains("`nms` has no CPU kernel") && e.contains("oar run"),
        "{e}"
    );
    let matrix = nms.replace(
        "nms(%b, %s) {iou_threshold=0.5,",
        "matrix_nms(%b, %s) {post_threshold=0.1,",
    );
    let e = compile_error(&matrix);
    assert!(e.contains("`matrix_nms` has no CPU kernel"), "{e}");
    let dcn = "graph @g(%x: f32[1,2,5,5], %o: f32[1,18,3,3], %m: f32[1,9,3,3], %w: f32[2,2,3,3]) -> (f32[1,2,3,3]) {\n  %y = deform_conv2d(%x, %o, %m, %w) : f32[1,2,3,3]\n  return %y\n}\n";
    let e = compile_error(dcn);
    assert!(
        e.contains("%y") && e.contains("`deform_conv2d` has no CPU kernel yet"),
        "{e}"
    );
}
