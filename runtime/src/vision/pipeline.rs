//! The PP-OCR system around three networks (rapidocr-onnxruntime 1.4.4's `RapidOCR`
//! step for step): scale the image into bounds, detect (DB), crop and rectify each box in
//! reading order, classify direction and turn 180° crops, recognise in batches, decode
//! (CTC), drop low-confidence lines, map boxes back to the image. The networks run through
//! `Infer`, so the caller picks the backend (compiled or the interpreter).

use super::ctc::{greedy_decode, Dictionary};
use super::db::{db_boxes, det_input_size, sort_boxes, DbParams};
use super::geometry::Quad;
use super::image::perspective_transform;
use super::image::Image;
use super::VisionError;
use crate::HostTensor;

/// Runs one network on one f32 NCHW batch.
pub trait Infer {
    fn infer(&mut self, input: HostTensor) -> Result<HostTensor, VisionError>;
}

/// The three networks; without a classifier every crop is read as it is.
pub struct Models<'a> {
    pub det: &'a mut dyn Infer,
    pub cls: Option<&'a mut dyn Infer>,
    pub rec: &'a mut dyn Infer,
}

/// Pipeline settings; the defaults are rapidocr's `config.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct OcrParams {
    pub db: DbParams,
    /// A crop is turned 180° when the classifier says so with more than this score.
    pub cls_thresh: f32,
    /// Lines whose recognition score is below this are dropped.
    pub text_score: f32,
    pub cls_batch: usize,
    pub rec_batch: usize,
    /// Recogniser input height and least width (48 × 320: PP-OCRv4 rec).
    pub rec_height: usize,
    pub rec_min_width: usize,
    /// Classifier input (48 × 192).
    pub cls_height: usize,
    pub cls_width: usize,
    /// Round each recognition batch's width up to a multiple of this (1: as rapidocr).
    /// A compiled backend builds one program per input shape, so a coarser step means
    /// fewer compilations for a little more right padding.
    pub rec_width_multiple: usize,
    /// Images no taller than this, or wider than `width_height_ratio` × their height, get
    /// black bands above and below before detection.
    pub min_height: usize,
    pub width_height_ratio: f64,
    /// Images are first scaled so the longer side is at most `max_side_len` and the shorter
    /// at least `min_side_len`.
    pub max_side_len: usize,
    pub min_side_len: usize,
}

impl Default for OcrParams {
    fn default() -> Self {
        OcrParams {
            db: DbParams::default(),
            cls_thresh: 0.9,
            text_score: 0.5,
            cls_batch: 6,
            rec_batch: 6,
            rec_height: 48,
            rec_min_width: 320,
            cls_height: 48,
            cls_width: 192,
            rec_width_multiple: 1,
            min_height: 30,
            width_height_ratio: 8.0,
            max_side_len: 2000,
            min_side_len: 30,
        }
    }
}

/// One line of text found in an image.
#[derive(Debug, Clone, PartialEq)]
pub struct TextLine {
    /// Corners clockwise from top-left, in the input image's pixels.
    pub quad: Quad,
    pub text: String,
    /// Mean probability of the recognised characters.
    pub score: f32,
    /// Mean text probability inside the detected box.
    pub det_score: f32,
    /// Whether the classifier turned the crop 180°.
    pub flipped: bool,
}

/// Smallest side (pixels) an image may have.
pub const MIN_SIDE: usize = 4;

/// Resize so both sides are multiples of 32 after scaling by `ratio` (rapidocr's
/// `reduce_max_side` / `increase_min_side`); returns the image and the factors back.
fn rescale(img: &Image, ratio: f64) -> Result<(Image, f64, f64), VisionError> {
    let side = |s: usize| ((s as f64 * ratio).trunc() / 32.0).round_ties_even() as usize * 32;
    let (h, w) = (side(img.h), side(img.w));
    if h == 0 || w == 0 {
        return Err(VisionError::TooSmall { w: img.w, h: img.h });
    }
    Ok((
        img.resize(w, h),
        img.h as f64 / h as f64,
        img.w as f64 / w as f64,
    ))
}

/// Reads every line of text in `img` (BGR). No text gives an empty list.
pub fn ocr(
    img: &Image,
    models: &mut Models,
    dict: &Dictionary,
    p: &OcrParams,
) -> Result<Vec<TextLine>, VisionError> {
    if img.w < MIN_SIDE || img.h < MIN_SIDE {
        return Err(VisionError::TooSmall { w: img.w, h: img.h });
    }
    let (raw_w, raw_h) = (img.w as f64, img.h as f64);
    // Bounds on the sides, then the letterbox for very flat images.
    let mut work = img.clone();
    let (mut ratio_h, mut ratio_w) = (1.0, 1.0);
    if work.w.max(work.h) > p.max_side_len {
        let r = p.max_side_len as f64 / work.w.max(work.h) as f64;
        (work, ratio_h, ratio_w) = rescale(&work, r)?;
    }
    if work.w.min(work.h) < p.min_side_len {
        let r = p.min_side_len as f64 / work.w.min(work.h) as f64;
        (work, ratio_h, ratio_w) = rescale(&work, r)?;
    }
    let mut top = 0usize;
    if work.h <= p.min_height || work.w as f64 / work.h as f64 > p.width_height_ratio {
        let new_h = ((work.w as f64 / p.width_height_ratio) as usize).max(p.min_height) * 2;
        top = new_h.abs_diff(work.h) / 2;
        work = work.pad_rows(top);
    }
    let mut boxes = detect(&work, models.det, &p.db)?;
    if boxes.is_empty() {
        return Ok(Vec::new());
    }
    sort_boxes(&mut boxes);
    let mut crops: Vec<Image> = boxes.iter().map(|b| crop(&work, &b.quad)).collect();
    let mut flipped = vec![false; crops.len()];
    if let Some(cls) = models.cls.as_deref_mut() {
        classify(&mut crops, &mut flipped, cls, p)?;
    }
    let texts = recognize(&crops, models.rec, dict, p)?;
    let mut lines = Vec::new();
    for ((b, (text, score)), flipped) in boxes.iter().zip(texts).zip(flipped) {
        if score < p.text_score {
            continue;
        }
        let quad = b.quad.map(|[x, y]| {
            [
                (x * ratio_w).clamp(0.0, raw_w),
                ((y - top as f64) * ratio_h).clamp(0.0, raw_h),
            ]
        });
        lines.push(TextLine {
            quad,
            text,
            score,
            det_score: b.score,
            flipped,
        });
    }
    Ok(lines)
}

/// The detector on `img`, then DB post-processing back to `img`'s pixels.
pub fn detect(
    img: &Image,
    det: &mut dyn Infer,
    p: &DbParams,
) -> Result<Vec<super::db::DetBox>, VisionError> {
    let (rh, rw) = det_input_size(img.h, img.w, p.limit_side_len)
        .ok_or(VisionError::TooSmall { w: img.w, h: img.h })?;
    let mut x = vec![0.0f32; 3 * rh * rw];
    img.resize(rw, rh).normalize_into(&mut x, rh, rw);
    let out = det.infer(HostTensor::f32(vec![1, 3, rh, rw], x))?;
    let prob = out
        .as_f32()
        .filter(|_| out.numel() == rh * rw)
        .ok_or_else(|| {
            VisionError::Model(format!(
                "the detector gave {} for a 1×3×{rh}×{rw} input; expected f32[1,1,{rh},{rw}]",
                out.describe()
            ))
        })?;
    Ok(db_boxes(prob, rh, rw, img.w, img.h, p))
}

/// The box's pixels rectified to an upright rectangle (`get_rotate_crop_image`); crops at
/// least 1.5 times taller than wide are turned a quarter (vertical text read sideways).
pub fn crop(img: &Image, q: &Quad) -> Image {
    let d = |a: [f64; 2], b: [f64; 2]| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
    let w = (d(q[0], q[1]).max(d(q[2], q[3])) as usize).max(1);
    let h = (d(q[0], q[3]).max(d(q[1], q[2])) as usize).max(1);
    let (wf, hf) = (w as f64, h as f64);
    let dst = [[0.0, 0.0], [wf, 0.0], [wf, hf], [0.0, hf]];
    // Output → input, so every output pixel samples the image directly.
    let id = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    let m = perspective_transform(&dst, q).unwrap_or(id);
    let out = img.warp(&m, w, h);
    if h as f64 / w as f64 >= 1.5 {
        out.rot90()
    } else {
        out
    }
}

/// Indices of `crops` by width/height ratio (stable), the order batches are formed in.
fn by_ratio(crops: &[Image]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..crops.len()).collect();
    idx.sort_by(|&a, &b| {
        let r = |i: usize| crops[i].w as f64 / crops[i].h as f64;
        r(a).total_cmp(&r(b))
    });
    idx
}

/// `crop` resized to height `h` keeping its aspect (at most `max_w` wide), normalised
/// into `out` (3 × h × `w`), right-padded with zeros.
fn put_resized(img: &Image, out: &mut [f32], h: usize, w: usize, max_w: usize) {
    let ratio = img.w as f64 / img.h as f64;
    let rw = ((h as f64 * ratio).ceil() as usize).clamp(1, max_w);
    img.resize(rw, h).normalize_into(out, h, w);
}

fn classify(
    crops: &mut [Image],
    flipped: &mut [bool],
    cls: &mut dyn Infer,
    p: &OcrParams,
) -> Result<(), VisionError> {
    let order = by_ratio(crops);
    let (h, w) = (p.cls_height, p.cls_width);
    for batch in order.chunks(p.cls_batch.max(1)) {
        let mut x = vec![0.0f32; batch.len() * 3 * h * w];
        for (k, &i) in batch.iter().enumerate() {
            put_resized(
                &crops[i],
                &mut x[k * 3 * h * w..(k + 1) * 3 * h * w],
                h,
                w,
                w,
            );
        }
        let out = cls.infer(HostTensor::f32(vec![batch.len(), 3, h, w], x))?;
        let probs = out
            .as_f32()
            .filter(|_| out.numel() == batch.len() * 2)
            .ok_or_else(|| {
                VisionError::Model(format!(
                    "the direction classifier gave {}; expected f32[{},2]",
                    out.describe(),
                    batch.len()
                ))
            })?;
        for (k, &i) in batch.iter().enumerate() {
            let (p0, p180) = (probs[2 * k], probs[2 * k + 1]);
            if p180 > p0 && p180 > p.cls_thresh {
                crops[i] = crops[i].rot180();
                flipped[i] = true;
            }
        }
    }
    Ok(())
}

/// Text and score per crop (in `crops` order).
pub fn recognize(
    crops: &[Image],
    rec: &mut dyn Infer,
    dict: &Dictionary,
    p: &OcrParams,
) -> Result<Vec<(String, f32)>, VisionError> {
    let order = by_ratio(crops);
    let h = p.rec_height;
    let mut res = vec![(String::new(), 0.0); crops.len()];
    for batch in order.chunks(p.rec_batch.max(1)) {
        let mut max_ratio = p.rec_min_width as f64 / h as f64;
        for &i in batch {
            max_ratio = max_ratio.max(crops[i].w as f64 / crops[i].h as f64);
        }
        let w = (h as f64 * max_ratio) as usize;
        let m = p.rec_width_multiple.max(1);
        let padded = w.div_ceil(m) * m;
        let mut x = vec![0.0f32; batch.len() * 3 * h * padded];
        for (k, &i) in batch.iter().enumerate() {
            put_resized(
                &crops[i],
                &mut x[k * 3 * h * padded..(k + 1) * 3 * h * padded],
                h,
                padded,
                w,
            );
        }
        let out = rec.infer(HostTensor::f32(vec![batch.len(), 3, h, padded], x))?;
        let (probs, steps) = match (out.as_f32(), out.shape.as_slice()) {
            (Some(v), &[n, t, c]) if n == batch.len() && c == dict.len() => (v, t),
            _ => {
                return Err(VisionError::Model(format!(
                    "the recogniser gave {}; expected f32[{}, steps, {}] ({} dictionary classes, blank and space included)",
                    out.describe(),
                    batch.len(),
                    dict.len(),
                    dict.len()
                )))
            }
        };
        let per = steps * dict.len();
        for (k, &i) in batch.iter().enumerate() {
            res[i] = greedy_decode(&probs[k * per..(k + 1) * per], steps, dict)?;
        }
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "Text" wherever the image is dark (channel 0 normalised below 0).
    struct DarkIsText;
    impl Infer for DarkIsText {
        fn infer(&mut self, x: HostTensor) -> Result<HostTensor, VisionError> {
            let (h, w) = (x.shape[2], x.shape[3]);
            let v = x.as_f32().unwrap();
            let p = v[..h * w]
                .iter()
                .map(|&c| if c < 0.0 { 0.9 } else { 0.0 })
                .collect();
            Ok(HostTensor::f32(vec![1, 1, h, w], p))
        }
    }

    /// Says every crop is upside down, surely.
    struct AllFlipped;
    impl Infer for AllFlipped {
        fn infer(&mut self, x: HostTensor) -> Result<HostTensor, VisionError> {
            let n = x.shape[0];
            Ok(HostTensor::f32(vec![n, 2], [0.05, 0.95].repeat(n)))
        }
    }

    /// Reads "ab" in every crop: a, a, blank, b, then blanks; one step per 8 columns.
    struct ReadsAb(usize);
    impl Infer for ReadsAb {
        fn infer(&mut self, x: HostTensor) -> Result<HostTensor, VisionError> {
            let (n, t, c) = (x.shape[0], x.shape[3] / 8, self.0);
            let mut v = vec![0.0; n * t * c];
            for b in 0..n {
                for s in 0..t {
                    let k = [1, 1, 0, 2].get(s).copied().unwrap_or(0);
                    v[(b * t + s) * c + k] = 0.8;
                }
            }
            Ok(HostTensor::f32(vec![n, t, c], v))
        }
    }

    #[test]
    fn the_pipeline_strings_detection_direction_and_recognition_together() {
        let mut img = Image::filled(200, 100, [255; 3]);
        for y in 40..60 {
            for x in 40..160 {
                img.data[(y * 200 + x) * 3..(y * 200 + x) * 3 + 3].fill(0);
            }
        }
        let dict = Dictionary::from_lines("a\nb").unwrap();
        let (mut det, mut cls, mut rec) = (DarkIsText, AllFlipped, ReadsAb(dict.len()));
        let mut models = Models {
            det: &mut det,
            cls: Some(&mut cls),
            rec: &mut rec,
        };
        let lines = ocr(&img, &mut models, &dict, &OcrParams::default()).unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let l = &lines[0];
        assert_eq!(l.text, "ab");
        assert!((l.score - 0.8).abs() < 1e-6 && l.flipped);
        // the box holds the dark block (unclipped around it) and is centred on it
        let (x0, x1) = (l.quad[0][0], l.quad[1][0]);
        let (y0, y1) = (l.quad[0][1], l.quad[3][1]);
        assert!(
            x0 <= 40.0 && x1 >= 159.0 && y0 <= 40.0 && y1 >= 59.0,
            "{:?}",
            l.quad
        );
        assert!(((x0 + x1) / 2.0 - 99.5).abs() < 2.0 && ((y0 + y1) / 2.0 - 49.5).abs() < 2.0);
        // a blank image has no lines, and a tiny one is refused
        let blank = Image::filled(200, 100, [255; 3]);
        assert!(ocr(&blank, &mut models, &dict, &OcrParams::default())
            .unwrap()
            .is_empty());
        let e = ocr(
            &Image::filled(1, 1, [0; 3]),
            &mut models,
            &dict,
            &OcrParams::default(),
        );
        assert!(matches!(e, Err(VisionError::TooSmall { w: 1, h: 1 })));
    }
}
