//! 8-bit BGR images and the OpenCV operations PP-OCR's pre-processing uses: bilinear
//! resize (`cv2.resize`, INTER_LINEAR), perspective warp with bicubic sampling and a
//! replicated border (`cv2.warpPerspective`, INTER_CUBIC), 90° and 180° rotations, and the
//! normalise-to-CHW step every PP-OCR model takes. BGR because the Paddle models were
//! trained on `cv2.imread` images; decoding converts from the file's RGB.

use super::VisionError;
use std::path::Path;

/// An 8-bit image, rows of `w` BGR pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub w: usize,
    pub h: usize,
    /// `h * w * 3` bytes, row-major, B G R.
    pub data: Vec<u8>,
}

impl Image {
    /// A `w`×`h` image filled with one BGR colour.
    pub fn filled(w: usize, h: usize, bgr: [u8; 3]) -> Image {
        let data = bgr.iter().copied().cycle().take(w * h * 3).collect();
        Image { w, h, data }
    }

    /// Decodes a PNG or JPEG file. Grey, grey+alpha and RGBA become BGR (alpha over white).
    pub fn open(path: &Path) -> Result<Image, VisionError> {
        let bytes = std::fs::read(path).map_err(|e| VisionError::Read {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        Image::decode(&bytes).map_err(|msg| VisionError::Decode {
            path: path.display().to_string(),
            msg,
        })
    }

    /// Decodes PNG or JPEG bytes (the format is read from the bytes, not a file name).
    pub fn decode(bytes: &[u8]) -> Result<Image, String> {
        let img = image::load_from_memory(bytes).map_err(|e| e.to_string())?;
        let rgba = img.to_rgba8();
        let (w, h) = (rgba.width() as usize, rgba.height() as usize);
        let mut data = Vec::with_capacity(w * h * 3);
        for p in rgba.pixels() {
            let [r, g, b, a] = p.0;
            // Composite over white: transparent text images would otherwise be black on black.
            let over = |c: u8| ((c as u32 * a as u32 + 255 * (255 - a as u32) + 127) / 255) as u8;
            data.extend_from_slice(&[over(b), over(g), over(r)]);
        }
        Ok(Image { w, h, data })
    }

    /// PNG bytes (RGB), for tests and for saving crops.
    pub fn encode_png(&self) -> Result<Vec<u8>, String> {
        let rgb: Vec<u8> = self
            .data
            .chunks_exact(3)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect();
        let buf = image::RgbImage::from_raw(self.w as u32, self.h as u32, rgb)
            .ok_or("size does not match the data")?;
        let mut out = std::io::Cursor::new(Vec::new());
        buf.write_to(&mut out, image::ImageFormat::Png)
            .map_err(|e| e.to_string())?;
        Ok(out.into_inner())
    }

    fn px(&self, x: usize, y: usize, c: usize) -> u8 {
        self.data[(y * self.w + x) * 3 + c]
    }

    /// Bilinear resize as `cv2.resize(.., INTER_LINEAR)`: half-pixel centres, edges clamped.
    pub fn resize(&self, w: usize, h: usize) -> Image {
        let taps = |dst: usize, src: usize| -> Vec<(usize, usize, f32)> {
            let scale = src as f64 / dst as f64;
            (0..dst)
                .map(|d| {
                    let f = (d as f64 + 0.5) * scale - 0.5;
                    let mut s = f.floor();
                    let mut frac = f - s;
                    if s < 0.0 {
                        s = 0.0;
                        frac = 0.0;
                    }
                    let mut s = s as usize;
                    if s + 1 >= src {
                        s = src - 1;
                        frac = 0.0;
                    }
                    (s, (s + 1).min(src - 1), frac as f32)
                })
                .collect()
        };
        let (xs, ys) = (taps(w, self.w), taps(h, self.h));
        let mut data = vec![0u8; w * h * 3];
        for (y, &(y0, y1, fy)) in ys.iter().enumerate() {
            for (x, &(x0, x1, fx)) in xs.iter().enumerate() {
                for c in 0..3 {
                    let top =
                        self.px(x0, y0, c) as f32 * (1.0 - fx) + self.px(x1, y0, c) as f32 * fx;
                    let bot =
                        self.px(x0, y1, c) as f32 * (1.0 - fx) + self.px(x1, y1, c) as f32 * fx;
                    let v = top * (1.0 - fy) + bot * fy;
                    data[(y * w + x) * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        Image { w, h, data }
    }

    /// `np.rot90`: a quarter turn counter-clockwise (a `w`×`h` image becomes `h`×`w`).
    pub fn rot90(&self) -> Image {
        let (w, h) = (self.h, self.w);
        let mut data = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    data[(y * w + x) * 3 + c] = self.px(self.w - 1 - y, x, c);
                }
            }
        }
        Image { w, h, data }
    }

    /// A half turn (`cv2.rotate(.., ROTATE_180)`).
    pub fn rot180(&self) -> Image {
        let mut data = Vec::with_capacity(self.data.len());
        for p in self.data.chunks_exact(3).rev() {
            data.extend_from_slice(p);
        }
        Image {
            w: self.w,
            h: self.h,
            data,
        }
    }

    /// Black bands of `pad` rows above and below (`cv2.copyMakeBorder`, constant 0).
    pub fn pad_rows(&self, pad: usize) -> Image {
        let row = self.w * 3;
        let mut data = vec![0u8; row * (self.h + 2 * pad)];
        data[row * pad..row * (pad + self.h)].copy_from_slice(&self.data);
        Image {
            w: self.w,
            h: self.h + 2 * pad,
            data,
        }
    }

    /// The `w`×`h` image whose pixel (x, y) samples this one at `homography · (x, y, 1)`,
    /// bicubic (OpenCV's A = −0.75) with the border replicated, as `cv2.warpPerspective`
    /// with `WARP_INVERSE_MAP` semantics (the matrix maps output to input).
    pub fn warp(&self, homography: &[f64; 9], w: usize, h: usize) -> Image {
        let m = homography;
        let mut data = vec![0u8; w * h * 3];
        let clampx = |i: i64| i.clamp(0, self.w as i64 - 1) as usize;
        let clampy = |i: i64| i.clamp(0, self.h as i64 - 1) as usize;
        for y in 0..h {
            for x in 0..w {
                let (xf, yf) = (x as f64, y as f64);
                let d = m[6] * xf + m[7] * yf + m[8];
                let d = if d.abs() < 1e-12 { 1e-12 } else { d };
                let sx = (m[0] * xf + m[1] * yf + m[2]) / d;
                let sy = (m[3] * xf + m[4] * yf + m[5]) / d;
                let (ix, iy) = (sx.floor(), sy.floor());
                let (wx, wy) = (cubic_weights(sx - ix), cubic_weights(sy - iy));
                let (ix, iy) = (ix as i64, iy as i64);
                for c in 0..3 {
                    let mut acc = 0.0;
                    for (j, wyj) in wy.iter().enumerate() {
                        let yy = clampy(iy - 1 + j as i64);
                        for (i, wxi) in wx.iter().enumerate() {
                            let xx = clampx(ix - 1 + i as i64);
                            acc += wyj * wxi * self.px(xx, yy, c) as f64;
                        }
                    }
                    data[(y * w + x) * 3 + c] = acc.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        Image { w, h, data }
    }

    /// CHW floats `(v / 255 − 0.5) / 0.5` into `out` (3 × `out_h` × `out_w`, already
    /// zeroed), this image at the top-left: PP-OCR's normalisation and right padding.
    pub fn normalize_into(&self, out: &mut [f32], out_h: usize, out_w: usize) {
        for c in 0..3 {
            for y in 0..self.h.min(out_h) {
                for x in 0..self.w.min(out_w) {
                    let v = self.px(x, y, c) as f32 / 255.0;
                    out[(c * out_h + y) * out_w + x] = (v - 0.5) / 0.5;
                }
            }
        }
    }
}

/// Keys' cubic convolution weights for taps at −1, 0, 1, 2 around `t` ∈ [0, 1).
fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let w0 = ((A * (t + 1.0) - 5.0 * A) * (t + 1.0) + 8.0 * A) * (t + 1.0) - 4.0 * A;
    let w1 = ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let w2 = ((A + 2.0) * (1.0 - t) - (A + 3.0)) * (1.0 - t) * (1.0 - t) + 1.0;
    [w0, w1, w2, 1.0 - w0 - w1 - w2]
}

/// The homography taking `from[k]` to `to[k]` (`cv2.getPerspectiveTransform`), row-major
/// with `h[8] = 1`; `None` when three of the points are collinear.
pub fn perspective_transform(from: &[[f64; 2]; 4], to: &[[f64; 2]; 4]) -> Option<[f64; 9]> {
    // Eight equations a·x + b·y + c − g·x·u − h·y·u = u (and the same for v).
    let mut a = [[0.0f64; 9]; 8];
    for k in 0..4 {
        let ([x, y], [u, v]) = (from[k], to[k]);
        a[2 * k] = [x, y, 1.0, 0.0, 0.0, 0.0, -x * u, -y * u, u];
        a[2 * k + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -x * v, -y * v, v];
    }
    for col in 0..8 {
        let pivot = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        let pivot_row = a[col];
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (x, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    let mut h = [1.0; 9];
    for (k, hk) in h.iter_mut().take(8).enumerate() {
        *hk = a[k][8] / a[k][k];
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: usize, h: usize) -> Image {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&[(x * 10) as u8, (y * 10) as u8, 7]);
            }
        }
        Image { w, h, data }
    }

    #[test]
    fn resize_to_the_same_size_is_the_identity_and_halving_averages_pairs() {
        let img = ramp(6, 4);
        assert_eq!(img.resize(6, 4), img);
        let half = img.resize(3, 2);
        // half-pixel centres: output x samples input 2x + 0.5, the mean of columns 2x, 2x+1
        assert_eq!(half.px(0, 0, 0), 5);
        assert_eq!(half.px(2, 1, 1), 25);
    }

    #[test]
    fn rotations_move_corners_where_numpy_and_opencv_do() {
        let img = ramp(3, 2);
        let r = img.rot90();
        assert_eq!((r.w, r.h), (2, 3));
        // np.rot90: the top-right pixel becomes the top-left one
        assert_eq!(r.px(0, 0, 0), img.px(2, 0, 0));
        assert_eq!(r.px(1, 2, 1), img.px(0, 1, 1));
        assert_eq!(img.rot180().rot180(), img);
        assert_eq!(img.rot180().px(0, 0, 0), img.px(2, 1, 0));
    }

    #[test]
    fn perspective_transform_maps_the_four_points_and_warp_by_identity_copies() {
        let from = [[10.0, 5.0], [50.0, 8.0], [48.0, 30.0], [12.0, 28.0]];
        let to = [[0.0, 0.0], [40.0, 0.0], [40.0, 22.0], [0.0, 22.0]];
        let m = perspective_transform(&from, &to).unwrap();
        for (f, t) in from.iter().zip(&to) {
            let d = m[6] * f[0] + m[7] * f[1] + m[8];
            let u = (m[0] * f[0] + m[1] * f[1] + m[2]) / d;
            let v = (m[3] * f[0] + m[4] * f[1] + m[5]) / d;
            assert!(
                (u - t[0]).abs() < 1e-9 && (v - t[1]).abs() < 1e-9,
                "{u} {v}"
            );
        }
        let img = ramp(5, 4);
        let id = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        assert_eq!(img.warp(&id, 5, 4), img);
        let line = [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]];
        assert!(perspective_transform(&line, &to).is_none());
    }
}
