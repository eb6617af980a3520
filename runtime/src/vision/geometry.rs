//! Plane geometry for DB post-processing: convex hull, minimum-area rotated rectangle
//! (`cv2.minAreaRect`), polygon area/perimeter, the Vatti unclip offset, and the corner
//! orderings PP-OCR uses. Written here rather than taken from `geo`/`clipper2`: each is a
//! few dozen lines on at most a few hundred points, and the unclip PP-OCR applies is always
//! to a rectangle, where the round-joined Vatti offset's minimum-area rectangle is exactly
//! the rectangle with every side pushed out by the offset distance (the mitred offset below),
//! so no general polygon clipper is needed.

/// A point (x right, y down), in pixels.
pub type Point = [f64; 2];

/// Four corners; PP-OCR's order is top-left, top-right, bottom-right, bottom-left.
pub type Quad = [Point; 4];

fn cross(o: Point, a: Point, b: Point) -> f64 {
    (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
}

/// The convex hull (Andrew's monotone chain), counter-clockwise in a y-up frame, without
/// collinear points; fewer than three distinct points come back as they are (deduplicated).
pub fn convex_hull(points: &[Point]) -> Vec<Point> {
    let mut p: Vec<Point> = points.to_vec();
    p.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    p.dedup();
    if p.len() < 3 {
        return p;
    }
    let mut hull: Vec<Point> = Vec::with_capacity(2 * p.len());
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &Point>> = if pass == 0 {
            Box::new(p.iter())
        } else {
            Box::new(p.iter().rev())
        };
        for &q in iter {
            while hull.len() >= start + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], q) <= 0.0
            {
                hull.pop();
            }
            hull.push(q);
        }
        hull.pop();
    }
    hull
}

/// The minimum-area rectangle around `points` (`cv2.minAreaRect` + `cv2.boxPoints`): its
/// four corners (in order around the rectangle) and its shorter side. One of the hull's
/// edges lies on the optimal rectangle, so trying each edge direction is exact.
pub fn min_area_rect(points: &[Point]) -> (Quad, f64) {
    let hull = convex_hull(points);
    if hull.is_empty() {
        return ([[0.0; 2]; 4], 0.0);
    }
    if hull.len() == 1 {
        return ([hull[0]; 4], 0.0);
    }
    let mut best: Option<(f64, Quad, f64)> = None;
    for i in 0..hull.len() {
        let (a, b) = (hull[i], hull[(i + 1) % hull.len()]);
        let len = ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2)).sqrt();
        if len == 0.0 {
            continue;
        }
        let u = [(b[0] - a[0]) / len, (b[1] - a[1]) / len];
        let v = [-u[1], u[0]];
        let (mut lo_u, mut hi_u, mut lo_v, mut hi_v) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for p in &hull {
            let (pu, pv) = (p[0] * u[0] + p[1] * u[1], p[0] * v[0] + p[1] * v[1]);
            lo_u = lo_u.min(pu);
            hi_u = hi_u.max(pu);
            lo_v = lo_v.min(pv);
            hi_v = hi_v.max(pv);
        }
        let area = (hi_u - lo_u) * (hi_v - lo_v);
        let better = match &best {
            None => true,
            Some(b) => area < b.0 - 1e-9,
        };
        if better {
            let at = |s: f64, t: f64| [s * u[0] + t * v[0], s * u[1] + t * v[1]];
            let quad = [
                at(lo_u, lo_v),
                at(hi_u, lo_v),
                at(hi_u, hi_v),
                at(lo_u, hi_v),
            ];
            best = Some((area, quad, (hi_u - lo_u).min(hi_v - lo_v)));
        }
    }
    match best {
        Some((_, q, side)) => (q, side),
        None => ([hull[0]; 4], 0.0),
    }
}

/// PP-OCR's `get_mini_boxes`: the minimum-area rectangle with its corners ordered
/// top-left, top-right, bottom-right, bottom-left (sorted by x; each side's pair by y).
pub fn mini_box(points: &[Point]) -> (Quad, f64) {
    let (q, side) = min_area_rect(points);
    let mut p = q.to_vec();
    p.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (tl, bl) = if p[1][1] > p[0][1] {
        (p[0], p[1])
    } else {
        (p[1], p[0])
    };
    let (tr, br) = if p[3][1] > p[2][1] {
        (p[2], p[3])
    } else {
        (p[3], p[2])
    };
    ([tl, tr, br, bl], side)
}

/// `order_points_clockwise`: left pair and right pair by x, each ordered by y.
pub fn order_clockwise(q: &Quad) -> Quad {
    let mut p = q.to_vec();
    p.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let mut left = [p[0], p[1]];
    let mut right = [p[2], p[3]];
    left.sort_by(|a, b| a[1].total_cmp(&b[1]));
    right.sort_by(|a, b| a[1].total_cmp(&b[1]));
    [left[0], right[0], right[1], left[1]]
}

/// Shoelace area (absolute).
pub fn area(poly: &[Point]) -> f64 {
    let n = poly.len();
    let s: f64 = (0..n)
        .map(|i| {
            let (a, b) = (poly[i], poly[(i + 1) % n]);
            a[0] * b[1] - b[0] * a[1]
        })
        .sum();
    s.abs() / 2.0
}

/// Closed perimeter.
pub fn perimeter(poly: &[Point]) -> f64 {
    let n = poly.len();
    (0..n)
        .map(|i| {
            let (a, b) = (poly[i], poly[(i + 1) % n]);
            ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2)).sqrt()
        })
        .sum()
}

/// DB's unclip: the convex polygon pushed outwards by the Vatti distance
/// `area · ratio / perimeter` (sides moved out in parallel, neighbours intersected). For the
/// rectangles DB unclips this is the minimum-area rectangle of PP-OCR's round-joined
/// pyclipper offset.
pub fn unclip(poly: &[Point], ratio: f64) -> Vec<Point> {
    let n = poly.len();
    let len = perimeter(poly);
    if n < 3 || len == 0.0 {
        return poly.to_vec();
    }
    let d = area(poly) * ratio / len;
    // Outward normals depend on the winding: signed area > 0 is clockwise on screen.
    let signed: f64 = (0..n)
        .map(|i| {
            let (a, b) = (poly[i], poly[(i + 1) % n]);
            a[0] * b[1] - b[0] * a[1]
        })
        .sum();
    let s = if signed > 0.0 { 1.0 } else { -1.0 };
    // Each side as (a point on it, its direction) after the shift.
    let sides: Vec<(Point, Point)> = (0..n)
        .map(|i| {
            let (a, b) = (poly[i], poly[(i + 1) % n]);
            let l = ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2))
                .sqrt()
                .max(1e-12);
            let dir = [(b[0] - a[0]) / l, (b[1] - a[1]) / l];
            let normal = [s * dir[1], -s * dir[0]];
            ([a[0] + normal[0] * d, a[1] + normal[1] * d], dir)
        })
        .collect();
    (0..n)
        .map(|i| {
            let (p, r) = sides[(i + n - 1) % n];
            let (q, t) = sides[i];
            let denom = r[0] * t[1] - r[1] * t[0];
            if denom.abs() < 1e-12 {
                return q;
            }
            let k = ((q[0] - p[0]) * t[1] - (q[1] - p[1]) * t[0]) / denom;
            [p[0] + k * r[0], p[1] + k * r[1]]
        })
        .collect()
}

/// Whether `p` is inside or on the convex polygon `poly` (either winding).
pub fn in_convex(poly: &[Point], p: Point) -> bool {
    let n = poly.len();
    let (mut pos, mut neg) = (false, false);
    for i in 0..n {
        let c = cross(poly[i], poly[(i + 1) % n], p);
        pos |= c > 1e-9;
        neg |= c < -1e-9;
    }
    !(pos && neg)
}

/// Intersection over union of two convex polygons (Sutherland–Hodgman clipping).
pub fn convex_iou(a: &[Point], b: &[Point]) -> f64 {
    let orient = |p: &[Point]| -> Vec<Point> {
        let mut v = p.to_vec();
        let s: f64 = (0..v.len())
            .map(|i| cross([0.0, 0.0], v[i], v[(i + 1) % v.len()]))
            .sum();
        if s < 0.0 {
            v.reverse();
        }
        v
    };
    let (a, b) = (orient(a), orient(b));
    let mut out = a.clone();
    for i in 0..b.len() {
        let (c0, c1) = (b[i], b[(i + 1) % b.len()]);
        let input = std::mem::take(&mut out);
        for j in 0..input.len() {
            let (p, q) = (input[j], input[(j + 1) % input.len()]);
            let (ip, iq) = (cross(c0, c1, p) >= 0.0, cross(c0, c1, q) >= 0.0);
            if ip {
                out.push(p);
            }
            if ip != iq {
                let (dp, dq) = (cross(c0, c1, p), cross(c0, c1, q));
                let t = dp / (dp - dq);
                out.push([p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])]);
            }
        }
        if out.is_empty() {
            return 0.0;
        }
    }
    let inter = area(&out);
    let union = area(&a) + area(&b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Point, b: Point) -> bool {
        (a[0] - b[0]).abs() < 1e-6 && (a[1] - b[1]).abs() < 1e-6
    }

    #[test]
    fn min_area_rect_of_an_axis_aligned_block_is_its_bounding_box() {
        let pts: Vec<Point> = (0..5)
            .flat_map(|x| (0..3).map(move |y| [x as f64 + 10.0, y as f64 + 20.0]))
            .collect();
        let (q, side) = mini_box(&pts);
        assert_eq!(side, 2.0);
        assert_eq!(q, [[10.0, 20.0], [14.0, 20.0], [14.0, 22.0], [10.0, 22.0]]);
    }

    #[test]
    fn min_area_rect_of_a_rotated_rectangle_recovers_it() {
        // a 10 × 4 rectangle turned by 30°, with interior points that must not matter
        let (c, s) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
        let corner = |u: f64, v: f64| [5.0 + u * c - v * s, 7.0 + u * s + v * c];
        let mut pts = vec![
            corner(0.0, 0.0),
            corner(10.0, 0.0),
            corner(10.0, 4.0),
            corner(0.0, 4.0),
        ];
        pts.push(corner(3.0, 2.0));
        pts.push(corner(10.0, 2.0));
        let (q, side) = min_area_rect(&pts);
        assert!((side - 4.0).abs() < 1e-9);
        assert!((area(&q) - 40.0).abs() < 1e-9);
        for p in &pts[..4] {
            assert!(
                q.iter().any(|r| close(*r, *p)),
                "{p:?} not a corner of {q:?}"
            );
        }
        // a triangle: the rectangle lies on its longest edge's direction or another, but
        // never has less area than the triangle's double
        let (q, _) = min_area_rect(&[[0.0, 0.0], [4.0, 0.0], [0.0, 3.0]]);
        assert!((area(&q) - 12.0).abs() < 1e-9, "{}", area(&q));
    }

    #[test]
    fn unclip_pushes_each_side_out_by_area_ratio_over_perimeter() {
        // 100 × 10 box, ratio 1.5: d = 1000 · 1.5 / 220 = 6.818…
        let q = [[0.0, 0.0], [100.0, 0.0], [100.0, 10.0], [0.0, 10.0]];
        let d = 1000.0 * 1.5 / 220.0;
        let out = unclip(&q, 1.5);
        let want = [
            [-d, -d],
            [100.0 + d, -d],
            [100.0 + d, 10.0 + d],
            [-d, 10.0 + d],
        ];
        for (a, b) in out.iter().zip(&want) {
            assert!(close(*a, *b), "{out:?}");
        }
        // the other winding gives the same polygon
        let mut rev = q;
        rev.reverse();
        let out2 = unclip(&rev, 1.5);
        assert!((area(&out2) - area(&out)).abs() < 1e-6);
    }

    #[test]
    fn order_and_iou_on_hand_cases() {
        let q = [[10.0, 10.0], [0.0, 10.0], [10.0, 0.0], [0.0, 0.0]];
        assert_eq!(
            order_clockwise(&q),
            [[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]]
        );
        let a = [[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]];
        let b = [[5.0, 0.0], [15.0, 0.0], [15.0, 10.0], [5.0, 10.0]];
        assert!((convex_iou(&a, &b) - 50.0 / 150.0).abs() < 1e-9);
        assert!((convex_iou(&a, &a) - 1.0).abs() < 1e-9);
        let far = [[20.0, 0.0], [30.0, 0.0], [30.0, 10.0], [20.0, 10.0]];
        assert_eq!(convex_iou(&a, &far), 0.0);
        assert!(
            in_convex(&a, [5.0, 5.0]) && in_convex(&a, [10.0, 5.0]) && !in_convex(&a, [11.0, 5.0])
        );
    }
}
