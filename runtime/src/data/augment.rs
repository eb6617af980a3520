//! Image augmentation for training batches: bilinear resize to the model's input size (and
//! grey repeated into colour channels), a random crop after zero padding, and an optional horizontal flip. Images are `[c, h, w]`
//! f32 slices; randomness comes from the loader's RNG, so it is part of the checkpoint.

use super::loader::SplitMix;
use super::DataError;
use serde::{Deserialize, Serialize};

/// What happens to each training image (evaluation applies only the resize).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augment {
    /// Resize every image to `[h, w]` (bilinear, half-pixel centres) first.
    pub resize: Option<[usize; 2]>,
    /// Pad by this many zero pixels on each side, then crop back at a random offset (0: off).
    pub crop_pad: usize,
    /// Flip left-right with probability ½. Off by default: a flipped digit is another glyph.
    pub hflip: bool,
    /// Repeat a one-channel (grey) image into this many channels, as a colour model's input
    /// expects (PP-LCNet takes RGB). Applies to evaluation too.
    #[serde(default)]
    pub channels: Option<usize>,
}

impl Augment {
    /// Refuses settings that cannot apply to images of `[c, h, w]`.
    pub(crate) fn check(&self, shape: [usize; 3]) -> Result<(), DataError> {
        if let Some(c) = self.channels {
            if shape[0] != 1 && shape[0] != c {
                return Err(DataError::Config(format!(
                    "cannot turn {}-channel images into {c} channels (only grey images repeat)",
                    shape[0]
                )));
            }
        }
        match self.resize {
            Some([h, w]) if h == 0 || w == 0 => Err(DataError::Config(format!(
                "cannot resize images to {h}x{w}"
            ))),
            _ => Ok(()),
        }
    }

    /// `[c, h, w]` after the transform.
    pub fn output_shape(&self, [c, h, w]: [usize; 3]) -> [usize; 3] {
        let c = self.channels.unwrap_or(c);
        match self.resize {
            Some([rh, rw]) => [c, rh, rw],
            None => [c, h, w],
        }
    }

    /// The training transform of one image.
    pub(crate) fn apply(&self, img: &[f32], shape: [usize; 3], rng: &mut SplitMix) -> Vec<f32> {
        let mut out = eval_transform(self, img, shape);
        let [c, h, w] = self.output_shape(shape);
        if self.crop_pad > 0 {
            let dy = rng.below(2 * self.crop_pad + 1);
            let dx = rng.below(2 * self.crop_pad + 1);
            out = random_crop(&out, [c, h, w], self.crop_pad, dy, dx);
        }
        if self.hflip && rng.next_u64() & 1 == 1 {
            out = hflip(&out, [c, h, w]);
        }
        out
    }
}

/// The evaluation transform: only the resize.
pub(crate) fn eval_transform(a: &Augment, img: &[f32], shape: [usize; 3]) -> Vec<f32> {
    let resized = match a.resize {
        Some(size) if size != [shape[1], shape[2]] => resize_bilinear(img, shape, size),
        _ => img.to_vec(),
    };
    match a.channels {
        Some(c) if shape[0] == 1 && c > 1 => resized.repeat(c),
        _ => resized,
    }
}

/// Bilinear resize of `[c, h, w]` to `[c, oh, ow]` with half-pixel centres (the same
/// convention as the IR's `resize` in bilinear mode and PyTorch's `align_corners=False`).
pub fn resize_bilinear(img: &[f32], [c, h, w]: [usize; 3], [oh, ow]: [usize; 2]) -> Vec<f32> {
    let src = |scale: f64, o: usize, n: usize| -> (usize, usize, f32) {
        let x = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (x.floor() as usize).min(n - 1);
        let i1 = (i0 + 1).min(n - 1);
        (i0, i1, (x - i0 as f64) as f32)
    };
    let (sy, sx) = (h as f64 / oh as f64, w as f64 / ow as f64);
    let mut out = Vec::with_capacity(c * oh * ow);
    for ch in 0..c {
        let plane = &img[ch * h * w..(ch + 1) * h * w];
        for oy in 0..oh {
            let (y0, y1, fy) = src(sy, oy, h);
            for ox in 0..ow {
                let (x0, x1, fx) = src(sx, ox, w);
                let top = plane[y0 * w + x0] * (1.0 - fx) + plane[y0 * w + x1] * fx;
                let bottom = plane[y1 * w + x0] * (1.0 - fx) + plane[y1 * w + x1] * fx;
                out.push(top * (1.0 - fy) + bottom * fy);
            }
        }
    }
    out
}

/// The `[c, h, w]` window at offset `(dy, dx)` (each in `0..=2·pad`) of the image padded
/// with `pad` zeros on every side.
pub fn random_crop(
    img: &[f32],
    [c, h, w]: [usize; 3],
    pad: usize,
    dy: usize,
    dx: usize,
) -> Vec<f32> {
    let mut out = vec![0.0; c * h * w];
    for ch in 0..c {
        for y in 0..h {
            // Row y of the crop is row y + dy − pad of the image.
            let Some(sy) = (y + dy).checked_sub(pad).filter(|&s| s < h) else {
                continue;
            };
            for x in 0..w {
                if let Some(sx) = (x + dx).checked_sub(pad).filter(|&s| s < w) {
                    out[(ch * h + y) * w + x] = img[(ch * h + sy) * w + sx];
                }
            }
        }
    }
    out
}

/// Left-right mirror of `[c, h, w]`.
pub fn hflip(img: &[f32], [c, h, w]: [usize; 3]) -> Vec<f32> {
    let mut out = Vec::with_capacity(c * h * w);
    for row in img.chunks_exact(w).take(c * h) {
        out.extend(row.iter().rev());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_repeats_into_colour_channels_and_colour_is_refused() {
        let a = Augment {
            channels: Some(3),
            ..Augment::default()
        };
        let img = [0.5f32, 0.25, 0.0, 1.0];
        assert_eq!(a.output_shape([1, 2, 2]), [3, 2, 2]);
        assert_eq!(eval_transform(&a, &img, [1, 2, 2]), img.repeat(3));
        assert!(a.check([2, 2, 2]).is_err());
        assert!(a.check([3, 2, 2]).is_ok());
    }

    #[test]
    fn resize_to_the_same_size_is_identity_and_doubling_interpolates() {
        let img: Vec<f32> = (0..6).map(|v| v as f32).collect();
        assert_eq!(resize_bilinear(&img, [1, 2, 3], [2, 3]), img);
        // 1x2 → 1x4: half-pixel centres give 0, 0.25, 0.75, 1.
        let up = resize_bilinear(&[0.0, 1.0], [1, 1, 2], [1, 4]);
        assert_eq!(up, vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn crop_at_the_centre_is_identity_and_shifts_pad_with_zeros() {
        let img: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        assert_eq!(random_crop(&img, [1, 3, 3], 1, 1, 1), img);
        let shifted = random_crop(&img, [1, 3, 3], 1, 0, 0);
        assert_eq!(shifted, vec![0., 0., 0., 0., 1., 2., 0., 4., 5.]);
        assert_eq!(
            hflip(&img, [1, 3, 3]),
            vec![3., 2., 1., 6., 5., 4., 9., 8., 7.]
        );
    }
}
