//! Non-maximum suppression (greedy hard NMS and Matrix NMS over every class), Paddle's
//! `multiclass_nms` / `matrix_nms` semantics with the outputs padded to `keep_top_k` rows
//! (see `oar_ir::op::NmsAttrs`).
//!
//! Ties: equal scores keep ascending box index (a stable sort of the candidates), and the
//! overall ranking is stable over the class-major list.

use super::float::{by_float, floats, Real};
use super::{err, Res};
use crate::tensor::HostTensor;
use oar_ir::op::{NmsAttrs, NmsKind};
use std::cmp::Ordering;

/// Paddle's `BBoxArea`: zero for an inverted box; pixel boxes count both end pixels.
fn area<T: Real>(b: &[T], normalized: bool) -> T {
    if b[2] < b[0] || b[3] < b[1] {
        return T::zero();
    }
    let one = if normalized { T::zero() } else { T::one() };
    (b[2] - b[0] + one) * (b[3] - b[1] + one)
}

/// Paddle's `JaccardOverlap` of two (x0, y0, x1, y1) boxes.
fn iou<T: Real>(a: &[T], b: &[T], normalized: bool) -> T {
    if b[0] > a[2] || b[2] < a[0] || b[1] > a[3] || b[3] < a[1] {
        return T::zero();
    }
    let one = if normalized { T::zero() } else { T::one() };
    let iw = a[2].min(b[2]) - a[0].max(b[0]) + one;
    let ih = a[3].min(b[3]) - a[1].max(b[1]) + one;
    let inter = iw * ih;
    inter / (area(a, normalized) + area(b, normalized) - inter)
}

/// Descending by score; `sort_by` is stable, so ties keep their order.
fn by_score_desc<T: Real>(a: T, b: T) -> Ordering {
    b.partial_cmp(&a).unwrap_or(Ordering::Equal)
}

/// One kept detection: score (decayed for Matrix NMS), class, box index.
type Kept<T> = (T, usize, usize);

/// The boxes one class keeps, in descending score order.
fn one_class<T: Real>(a: &NmsAttrs, boxes: &[T], scores: &[T], class: usize) -> Vec<Kept<T>> {
    let bx = |i: usize| &boxes[4 * i..4 * i + 4];
    let thr = T::c(a.score_threshold);
    let mut cand: Vec<usize> = (0..scores.len()).filter(|&i| scores[i] > thr).collect();
    cand.sort_by(|&i, &j| by_score_desc(scores[i], scores[j]));
    if let Some(t) = a.nms_top_k {
        cand.truncate(t as usize);
    }
    let cap = a.max_per_class.map_or(usize::MAX, |m| m as usize);
    let mut kept: Vec<Kept<T>> = Vec::new();
    match a.kind {
        NmsKind::Hard { iou_threshold } => {
            let t = T::c(iou_threshold);
            for &i in &cand {
                if kept.len() >= cap {
                    break;
                }
                if kept
                    .iter()
                    .all(|&(_, _, j)| iou(bx(i), bx(j), a.normalized) <= t)
                {
                    kept.push((scores[i], class, i));
                }
            }
        }
        NmsKind::Matrix {
            gaussian,
            sigma,
            post_threshold,
        } => {
            let (sigma, post) = (T::c(sigma), T::c(post_threshold));
            let n = cand.len();
            // ious[i][j], j < i, and each candidate's largest IoU with a higher-scored one.
            let ious: Vec<Vec<T>> = (0..n)
                .map(|i| {
                    (0..i)
                        .map(|j| iou(bx(cand[i]), bx(cand[j]), a.normalized))
                        .collect()
                })
                .collect();
            let max_iou: Vec<T> = ious
                .iter()
                .map(|row| row.iter().fold(T::zero(), |m, &v| m.max(v)))
                .collect();
            for i in 0..n {
                let mut decay = T::one();
                for j in 0..i {
                    let (v, m) = (ious[i][j], max_iou[j]);
                    let d = if gaussian {
                        ((m * m - v * v) * sigma).exp()
                    } else {
                        (T::one() - v) / (T::one() - m)
                    };
                    decay = decay.min(d);
                }
                let s = decay * scores[cand[i]];
                if s > post && kept.len() < cap {
                    kept.push((s, class, cand[i]));
                }
            }
        }
    }
    kept
}

/// `nms(boxes [N, M, 4], scores [N, C, M])` → `(dets [N, K, 6], selected [N, K, 3],
/// count [N])`.
pub(crate) fn nms(boxes: &HostTensor, scores: &HostTensor, a: &NmsAttrs) -> Res<Vec<HostTensor>> {
    by_float!(boxes, nms_t(boxes, scores, a))
}

fn nms_t<T: Real>(boxes: &HostTensor, scores: &HostTensor, a: &NmsAttrs) -> Res<Vec<HostTensor>> {
    let (bv, sv) = (floats::<T>(boxes)?, floats::<T>(scores)?);
    let (&[n, m, 4], &[n2, c, m2]) = (&boxes.shape[..], &scores.shape[..]) else {
        return err(format!(
            "needs boxes [N, M, 4] and scores [N, C, M], found {} and {}",
            boxes.describe(),
            scores.describe()
        ));
    };
    if n != n2 || m != m2 {
        return err(format!(
            "boxes {} and scores {} disagree on N or M",
            boxes.describe(),
            scores.describe()
        ));
    }
    let k = a.keep_top_k as usize;
    let mut dets = vec![T::zero(); n * k * 6];
    let mut selected = vec![-1i64; n * k * 3];
    let mut count = vec![0i64; n];
    for img in 0..n {
        let bx = &bv[img * m * 4..(img + 1) * m * 4];
        let mut all: Vec<Kept<T>> = Vec::new();
        for class in 0..c {
            if a.background == Some(class as u64) {
                continue;
            }
            let sc = &sv[(img * c + class) * m..(img * c + class + 1) * m];
            all.extend(one_class(a, bx, sc, class));
        }
        if all.len() > k || matches!(a.kind, NmsKind::Matrix { .. }) {
            all.sort_by(|x, y| by_score_desc(x.0, y.0));
            all.truncate(k);
        }
        // Hard NMS lists its rows class-major (Paddle regroups the kept boxes by class).
        if let NmsKind::Hard { .. } = a.kind {
            all.sort_by_key(|d| d.1);
        }
        count[img] = all.len() as i64;
        for row in 0..k {
            let d = &mut dets[(img * k + row) * 6..(img * k + row + 1) * 6];
            let s = &mut selected[(img * k + row) * 3..(img * k + row + 1) * 3];
            match all.get(row) {
                Some(&(score, class, i)) => {
                    d[0] = T::c(class as f64);
                    d[1] = score;
                    d[2..].copy_from_slice(&bx[4 * i..4 * i + 4]);
                    s.copy_from_slice(&[img as i64, class as i64, i as i64]);
                }
                None => d[0] = -T::one(),
            }
        }
    }
    Ok(vec![
        T::tensor(vec![n, k, 6], dets),
        HostTensor::i64(vec![n, k, 3], selected),
        HostTensor::i64(vec![n], count),
    ])
}
