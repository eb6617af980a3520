//! Gathers TOSA has no op for, as `linalg.generic` with `tensor.extract`.

use super::emit::{tensor_ty, Emitter, V};

/// Gathers with no TOSA op, as a `linalg.generic` over the output that reads the index
/// tensor through `idx_dims` (loop dims → index coordinates) and extracts from `data` at
/// `data_coord(k)` for each data dim (`None` = the loaded index).
fn linalg_gather(
    e: &mut Emitter,
    data: &V,
    idx: &V,
    out_shape: Vec<u64>,
    idx_dims: &[usize],
    data_coord: &dyn Fn(usize) -> Option<usize>,
) -> V {
    let r = out_shape.len();
    let dims: Vec<String> = (0..r).map(|i| format!("d{i}")).collect();
    let out_map = format!("affine_map<({0}) -> ({0})>", dims.join(", "));
    let idx_sel: Vec<&str> = idx_dims.iter().map(|&d| dims[d].as_str()).collect();
    let idx_map = format!(
        "affine_map<({}) -> ({})>",
        dims.join(", "),
        idx_sel.join(", ")
    );
    let iters = vec!["\"parallel\""; r].join(", ");
    let out_ty = tensor_ty(&out_shape, data.dtype);
    let init = e.op("tensor.empty()", &out_ty, out_shape.clone(), data.dtype);
    let elem_in = super::emit::elem(idx.dtype).unwrap_or("i64");
    let elem_out = super::emit::elem(data.dtype).unwrap_or("f32");
    let mut region = format!("^bb0(%i: {elem_in}, %o: {elem_out}):\n      %ii = arith.index_cast %i : {elem_in} to index\n");
    let mut used = std::collections::BTreeSet::new();
    let coords: Vec<String> = (0..data.shape.len())
        .map(|k| match data_coord(k) {
            None => "%ii".to_string(),
            Some(d) => {
                used.insert(d);
                format!("%c{d}")
            }
        })
        .collect();
    for d in used {
        region += &format!("      %c{d} = linalg.index {d} : index\n");
    }
    region += &format!(
        "      %x = tensor.extract {}[{}] : {}\n      linalg.yield %x : {elem_out}\n    ",
        data.name,
        coords.join(", "),
        data.ty()
    );
    e.op_typed_inline(
        &format!(
            "linalg.generic {{indexing_maps = [{idx_map}, {out_map}], iterator_types = [{iters}]}} ins({} : {}) outs({} : {out_ty}) {{\n    {region}}} -> {out_ty}",
            idx.name,
            idx.ty(),
            init.name
        ),
        out_shape,
        data.dtype,
    )
}

/// GatherElements: output has the index's shape; the index replaces coordinate `axis`.
pub(super) fn gather_elements(e: &mut Emitter, data: &V, idx: &V, axis: usize) -> V {
    let r = idx.shape.len();
    let all: Vec<usize> = (0..r).collect();
    linalg_gather(e, data, idx, idx.shape.clone(), &all, &|k| {
        (k != axis).then_some(k)
    })
}

/// ONNX Gather: output = data[:axis] + idx.shape + data[axis+1:].
pub(super) fn gather_axis(e: &mut Emitter, data: &V, idx: &V, axis: usize, out: Vec<u64>) -> V {
    let ri = idx.shape.len();
    let idx_dims: Vec<usize> = (axis..axis + ri).collect();
    linalg_gather(e, data, idx, out, &idx_dims, &|k| match k.cmp(&axis) {
        std::cmp::Ordering::Less => Some(k),
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Greater => Some(k - 1 + ri),
    })
}
