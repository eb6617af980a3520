//! Vision pre- and post-processing around networks, as plain Rust on host images: image
//! decoding and the OpenCV operations PP-OCR uses (`image`), plane geometry (`geometry`),
//! DB text detection's post-processing (`db`), CTC decoding (`ctc`), and the PP-OCR system
//! that strings them around three networks (`pipeline`). The networks run behind
//! `pipeline::Infer`, so a compiled backend or the interpreter can serve them.

pub mod ctc;
pub mod db;
pub mod geometry;
pub mod image;
pub mod pipeline;

pub use ctc::Dictionary;
pub use image::Image;
pub use pipeline::{ocr, Infer, Models, OcrParams, TextLine};

/// What can go wrong turning pixels into text.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    #[error("cannot read image {path}: {msg}")]
    Read { path: String, msg: String },
    #[error("{path} is not a PNG or JPEG image this build can decode: {msg}")]
    Decode { path: String, msg: String },
    #[error(
        "the image is {w}×{h} pixels: too small to hold text (each side needs at least {} pixels)",
        pipeline::MIN_SIDE
    )]
    TooSmall { w: usize, h: usize },
    #[error("character dictionary: {0}")]
    Dictionary(String),
    #[error("{0}")]
    Model(String),
}
