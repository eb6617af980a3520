//! DB (differentiable binarisation) text detection around the network: the input size
//! rule, and post-processing of its probability map into text boxes — threshold, 2×2
//! dilation, 8-connected components, minimum-area rectangle, mean probability inside it,
//! unclip, rescale to the image — with the parameters rapidocr-onnxruntime ships for the
//! PP-OCRv4 detector. Then PP-OCR's reading order.

use super::geometry::{in_convex, mini_box, order_clockwise, unclip, Point, Quad};

/// DB post-processing settings (rapidocr's `config.yaml` for PP-OCRv4 det).
#[derive(Debug, Clone, PartialEq)]
pub struct DbParams {
    /// Probability above which a pixel is text.
    pub thresh: f32,
    /// Least mean probability inside a box.
    pub box_thresh: f32,
    /// At most this many components are turned into boxes.
    pub max_candidates: usize,
    /// Unclip distance = area · ratio / perimeter. PP-OCR's own default is 1.5; rapidocr
    /// ships 1.6 with these weights, and the tests compare with rapidocr.
    pub unclip_ratio: f64,
    /// Dilate the bitmap with a 2×2 kernel first (joins characters one pixel apart).
    pub use_dilation: bool,
    /// Shorter side below which a box is dropped (before unclip; +2 after).
    pub min_size: f64,
    /// The side length the detector's input is scaled to (`limit_type: min`).
    pub limit_side_len: usize,
}

impl Default for DbParams {
    fn default() -> Self {
        DbParams {
            thresh: 0.3,
            box_thresh: 0.5,
            max_candidates: 1000,
            unclip_ratio: 1.6,
            use_dilation: true,
            min_size: 3.0,
            limit_side_len: 736,
        }
    }
}

/// A detected text box in image pixels (corners clockwise from top-left) and its score.
#[derive(Debug, Clone, PartialEq)]
pub struct DetBox {
    pub quad: Quad,
    pub score: f32,
}

/// `python round`: halves go to the even neighbour.
fn py_round(x: f64) -> f64 {
    x.round_ties_even()
}

/// The detector's input size (height, width) for an `h`×`w` image: the shorter side scaled
/// up to `limit` (never down), then each side rounded to a multiple of 32. `None` when a
/// side rounds to zero.
pub fn det_input_size(h: usize, w: usize, limit: usize) -> Option<(usize, usize)> {
    let short = h.min(w) as f64;
    let ratio = if short < limit as f64 {
        limit as f64 / short
    } else {
        1.0
    };
    let side = |s: usize| (py_round((s as f64 * ratio).trunc() / 32.0) * 32.0) as usize;
    let (rh, rw) = (side(h), side(w));
    (rh > 0 && rw > 0).then_some((rh, rw))
}

/// Boundary pixels of each 8-connected component of `bitmap` (row-major, `h`×`w`), in
/// the order their first pixel is met scanning rows. The hull of a component's boundary
/// is the hull of the component, which is all the rectangle needs.
pub fn components(bitmap: &[bool], h: usize, w: usize) -> Vec<Vec<Point>> {
    let mut label = vec![false; h * w];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    let on = |x: isize, y: isize| {
        x >= 0
            && y >= 0
            && (x as usize) < w
            && (y as usize) < h
            && bitmap[y as usize * w + x as usize]
    };
    for start in 0..h * w {
        if !bitmap[start] || label[start] {
            continue;
        }
        label[start] = true;
        stack.push(start);
        let mut edge = Vec::new();
        while let Some(i) = stack.pop() {
            let (x, y) = ((i % w) as isize, (i / w) as isize);
            if !(on(x - 1, y) && on(x + 1, y) && on(x, y - 1) && on(x, y + 1)) {
                edge.push([x as f64, y as f64]);
            }
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (nx, ny) = (x + dx, y + dy);
                    if on(nx, ny) {
                        let j = ny as usize * w + nx as usize;
                        if !label[j] {
                            label[j] = true;
                            stack.push(j);
                        }
                    }
                }
            }
        }
        out.push(edge);
    }
    out
}

/// Mean of `prob` over the pixels inside `quad` (corners truncated to integers, as
/// `box_score_fast` does before `cv2.fillPoly`).
pub fn box_score(prob: &[f32], h: usize, w: usize, quad: &Quad) -> f32 {
    let clampi = |v: f64, hi: usize| (v as i64).clamp(0, hi as i64 - 1) as usize;
    let xmin = clampi(
        quad.iter().map(|p| p[0]).fold(f64::MAX, f64::min).floor(),
        w,
    );
    let xmax = clampi(quad.iter().map(|p| p[0]).fold(f64::MIN, f64::max).ceil(), w);
    let ymin = clampi(
        quad.iter().map(|p| p[1]).fold(f64::MAX, f64::min).floor(),
        h,
    );
    let ymax = clampi(quad.iter().map(|p| p[1]).fold(f64::MIN, f64::max).ceil(), h);
    let poly: Vec<Point> = quad.iter().map(|p| [p[0].trunc(), p[1].trunc()]).collect();
    let (mut sum, mut n) = (0.0f64, 0usize);
    for y in ymin..=ymax {
        for x in xmin..=xmax {
            if in_convex(&poly, [x as f64, y as f64]) {
                sum += prob[y * w + x] as f64;
                n += 1;
            }
        }
    }
    if n == 0 {
        0.0
    } else {
        (sum / n as f64) as f32
    }
}

/// DB post-processing of the `h`×`w` probability map into boxes on a `dest_w`×`dest_h`
/// image (`DBPostProcess` then `filter_tag_det_res`).
pub fn db_boxes(
    prob: &[f32],
    h: usize,
    w: usize,
    dest_w: usize,
    dest_h: usize,
    p: &DbParams,
) -> Vec<DetBox> {
    let mut bitmap: Vec<bool> = prob.iter().map(|&v| v > p.thresh).collect();
    if p.use_dilation {
        // cv2.dilate with a 2×2 kernel, anchor (1, 1): a pixel is on if any of itself, its
        // left, upper and upper-left neighbours is.
        let src = bitmap.clone();
        for y in 0..h {
            for x in 0..w {
                let at = |xx: usize, yy: usize| src[yy * w + xx];
                bitmap[y * w + x] = at(x, y)
                    || (x > 0 && at(x - 1, y))
                    || (y > 0 && at(x, y - 1))
                    || (x > 0 && y > 0 && at(x - 1, y - 1));
            }
        }
    }
    let mut out = Vec::new();
    for pts in components(&bitmap, h, w).into_iter().take(p.max_candidates) {
        let (quad, side) = mini_box(&pts);
        if side < p.min_size {
            continue;
        }
        let score = box_score(prob, h, w, &quad);
        if p.box_thresh > score {
            continue;
        }
        let (quad, side) = mini_box(&unclip(&quad, p.unclip_ratio));
        if side < p.min_size + 2.0 {
            continue;
        }
        let scale = |v: f64, from: usize, to: usize| {
            py_round(v / from as f64 * to as f64).clamp(0.0, to as f64)
        };
        let quad = quad.map(|q| [scale(q[0], w, dest_w), scale(q[1], h, dest_h)]);
        // filter_tag_det_res: clockwise, clipped inside the image, at least 4 px each way
        let quad = order_clockwise(&quad).map(|q| {
            [
                q[0].clamp(0.0, dest_w as f64 - 1.0).trunc(),
                q[1].clamp(0.0, dest_h as f64 - 1.0).trunc(),
            ]
        });
        let dist = |a: Point, b: Point| {
            ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2))
                .sqrt()
                .trunc()
        };
        if dist(quad[0], quad[1]) <= 3.0 || dist(quad[0], quad[3]) <= 3.0 {
            continue;
        }
        out.push(DetBox { quad, score });
    }
    out
}

/// PP-OCR's reading order: by the top-left corner's (y, x), then boxes whose tops are
/// within 10 px of each other swapped into left-to-right order.
pub fn sort_boxes(boxes: &mut [DetBox]) {
    boxes.sort_by(|a, b| {
        a.quad[0][1]
            .total_cmp(&b.quad[0][1])
            .then(a.quad[0][0].total_cmp(&b.quad[0][0]))
    });
    for i in 0..boxes.len().saturating_sub(1) {
        for j in (0..=i).rev() {
            if (boxes[j + 1].quad[0][1] - boxes[j].quad[0][1]).abs() < 10.0
                && boxes[j + 1].quad[0][0] < boxes[j].quad[0][0]
            {
                boxes.swap(j, j + 1);
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn det_input_size_scales_the_short_side_to_the_limit_and_rounds_to_32() {
        // 480 → 736, 640 · 736/480 = 981.3 → 981 → 992
        assert_eq!(det_input_size(480, 640, 736), Some((736, 992)));
        // already large enough: only rounded (1000/32 = 31.25 → 31)
        assert_eq!(det_input_size(800, 1000, 736), Some((800, 992)));
        // python rounds 16/32 = 0.5 to 0
        assert_eq!(det_input_size(16, 16, 16), None);
    }

    #[test]
    fn db_finds_one_box_per_blob_and_rescales_it() {
        // two text-like blobs on a 64 × 32 map, probabilities 0.9
        let (h, w) = (32, 64);
        let mut prob = vec![0.0f32; h * w];
        for (x0, x1, y0, y1) in [(4, 28, 4, 10), (36, 60, 20, 26)] {
            for y in y0..y1 {
                for x in x0..x1 {
                    prob[y * w + x] = 0.9;
                }
            }
        }
        let p = DbParams {
            use_dilation: false,
            ..Default::default()
        };
        let mut boxes = db_boxes(&prob, h, w, 128, 64, &p);
        sort_boxes(&mut boxes);
        assert_eq!(boxes.len(), 2);
        assert!((boxes[0].score - 0.9).abs() < 1e-6);
        // blob 1 spans x 4..27, y 4..9 (pixel centres): 23 × 5; d = 115 · 1.6 / 56 = 3.29;
        // unclipped x 0.71..30.29, y 0.71..12.29, then ×2
        let q = boxes[0].quad;
        assert_eq!(q[0], [1.0, 1.0]);
        assert_eq!(q[2], [61.0, 25.0]);
        assert!(boxes[1].quad[0][1] > q[0][1]);
        // an empty map gives nothing
        assert!(db_boxes(&vec![0.0; h * w], h, w, 128, 64, &p).is_empty());
    }

    #[test]
    fn components_are_8_connected() {
        // a diagonal is one component; a pixel two columns away is another
        let (h, w) = (3, 6);
        let mut b = vec![false; h * w];
        for (x, y) in [(0, 0), (1, 1), (2, 2), (5, 0)] {
            b[y * w + x] = true;
        }
        let c = components(&b, h, w);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].len(), 3);
    }

    #[test]
    fn reading_order_is_rows_then_left_to_right() {
        let at = |x: f64, y: f64| DetBox {
            quad: [[x, y], [x + 5.0, y], [x + 5.0, y + 5.0], [x, y + 5.0]],
            score: 1.0,
        };
        let mut b = vec![at(50.0, 3.0), at(0.0, 40.0), at(10.0, 5.0)];
        sort_boxes(&mut b);
        let xs: Vec<f64> = b.iter().map(|d| d.quad[0][0]).collect();
        assert_eq!(xs, [10.0, 50.0, 0.0]);
    }
}
