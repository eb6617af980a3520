//! Detector ops: non-maximum suppression (greedy hard NMS and Matrix NMS over every class)
//! and modulated deformable convolution (DCNv2).

use super::ConvAttrs;
use serde::{Deserialize, Serialize};

/// How `nms` suppresses the overlapping boxes of one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum NmsKind {
    /// Greedy hard NMS (Paddle `multiclass_nms`, ONNX `NonMaxSuppression`): walk the
    /// candidates by descending score and drop a box whose IoU with an already kept box of
    /// its class exceeds `iou_threshold`. Output rows are class-major (class ascending, then
    /// descending score), Paddle's order.
    Hard {
        #[serde(with = "crate::serde_f64")]
        iou_threshold: f64,
    },
    /// Matrix NMS (SOLOv2, PP-YOLOv2's `matrix_nms`): every candidate's score decays by its
    /// IoU with each higher-scored box of its class, `min_j f(iou_ij, max_iou_j)` with
    /// linear `(1 − iou)/(1 − max_iou)` or gaussian `exp((max_iou² − iou²)·sigma)`; boxes
    /// whose decayed score is `<= post_threshold` are dropped. Output rows are ordered by
    /// descending decayed score over all classes, Paddle's order.
    Matrix {
        gaussian: bool,
        #[serde(with = "crate::serde_f64")]
        sigma: f64,
        #[serde(with = "crate::serde_f64")]
        post_threshold: f64,
    },
}

/// Multiclass non-maximum suppression of `boxes [N, M, 4]` (x0, y0, x1, y1) scored by
/// `scores [N, C, M]`. Outputs, padded to `keep_top_k` rows per image:
/// `dets f32[N, K, 6]` (class, score, x0, y0, x1, y1), `selected i64[N, K, 3]`
/// (image, class, box index: ONNX NonMaxSuppression's row) and `count i64[N]`; rows at
/// and past `count` are class −1, score 0, box 0 and selected −1.
///
/// Ties: candidates of equal score are taken by ascending box index, and the overall
/// ranking keeps the class-major order among equal scores (a stable sort).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NmsAttrs {
    pub kind: NmsKind,
    /// Candidates need `score > score_threshold`.
    #[serde(with = "crate::serde_f64")]
    pub score_threshold: f64,
    /// Candidates per class before suppression, highest first (Paddle `nms_top_k`).
    pub nms_top_k: Option<u64>,
    /// Boxes kept per class after suppression (ONNX `max_output_boxes_per_class`).
    pub max_per_class: Option<u64>,
    /// Rows per image (Paddle `keep_top_k`): the best-scored detections over all classes.
    pub keep_top_k: u64,
    /// A class that is never output (Paddle `background_label`).
    pub background: Option<u64>,
    /// `false`: pixel boxes whose width is `x1 − x0 + 1` (Paddle `normalized=False`).
    pub normalized: bool,
}

/// Modulated deformable convolution (DCNv2; torchvision `deform_conv2d`, ONNX `DeformConv`):
/// inputs `x [N, C, H, W]`, `offset [N, 2·kh·kw·dg, Ho, Wo]` (per deformable group and
/// tap, `dy` then `dx`), `mask [N, kh·kw·dg, Ho, Wo]`, `w [O, C/groups, kh, kw]` and an
/// optional `bias [O]`. Each tap samples `x` bilinearly at its displaced position (zero
/// outside) and scales the sample by its mask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeformConvAttrs {
    pub conv: ConvAttrs,
    /// Offset groups: input channels split into `deform_groups` that share offsets.
    pub deform_groups: u64,
}
