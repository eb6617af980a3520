//! CTC greedy decoding with PP-OCR's character dictionary: class 0 is the blank, classes
//! 1..=n are the dictionary's lines, and class n+1 is a space (`CTCLabelDecode`).

use super::VisionError;

/// The recogniser's classes as text.
#[derive(Debug, Clone, PartialEq)]
pub struct Dictionary {
    /// `classes[0]` is the blank (never printed).
    pub classes: Vec<String>,
}

impl Dictionary {
    /// One character per line (the `character` metadata of PP-OCRv4's rec ONNX, or a
    /// `ppocr_keys` file); the blank goes first and a space last.
    pub fn from_lines(text: &str) -> Result<Dictionary, VisionError> {
        if text.trim_end_matches(['\n', '\r']).is_empty() {
            return Err(VisionError::Dictionary("it has no characters".into()));
        }
        let mut classes = vec![String::new()];
        classes.extend(
            text.split('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string()),
        );
        // a trailing newline ends the last line rather than adding an empty class
        if text.ends_with('\n') {
            classes.pop();
        }
        classes.push(" ".into());
        Ok(Dictionary { classes })
    }

    /// Number of classes the recogniser must output.
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    /// Never true: the blank is always there.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }
}

/// Greedy CTC over one sequence of `steps` × `classes` probabilities (row-major): the
/// arg-max class per step, repeats merged, blanks dropped; the score is the mean of the
/// kept steps' probabilities (0 for an empty result).
pub fn greedy_decode(
    probs: &[f32],
    steps: usize,
    dict: &Dictionary,
) -> Result<(String, f32), VisionError> {
    let classes = dict.len();
    if probs.len() != steps * classes {
        return Err(VisionError::Model(format!(
            "the recogniser gives {} values for {steps} steps; the dictionary has {classes} \
             classes (blank and space included), which needs {}",
            probs.len(),
            steps * classes
        )));
    }
    let (mut text, mut sum, mut kept) = (String::new(), 0.0f64, 0usize);
    let mut prev = usize::MAX;
    for row in probs.chunks_exact(classes) {
        let (best, p) =
            row.iter()
                .enumerate()
                .fold((0, f32::MIN), |b, (k, &v)| if v > b.1 { (k, v) } else { b });
        if best != 0 && best != prev {
            text.push_str(&dict.classes[best]);
            sum += p as f64;
            kept += 1;
        }
        prev = best;
    }
    let score = if kept == 0 {
        0.0
    } else {
        (sum / kept as f64) as f32
    };
    Ok((text, score))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn onehot(seq: &[usize], classes: usize, p: f32) -> Vec<f32> {
        let mut v = vec![0.0; seq.len() * classes];
        for (t, &k) in seq.iter().enumerate() {
            v[t * classes + k] = p;
        }
        v
    }

    #[test]
    fn greedy_decode_merges_repeats_and_drops_blanks() {
        let d = Dictionary::from_lines("a\nb\nc").unwrap();
        assert_eq!(d.classes, ["", "a", "b", "c", " "]);
        // a a _ a b b _ _ c ␠ → "aabc " (the blank separates the two a's)
        let seq = [1, 1, 0, 1, 2, 2, 0, 0, 3, 4];
        let (text, score) = greedy_decode(&onehot(&seq, 5, 0.75), seq.len(), &d).unwrap();
        assert_eq!(text, "aabc ");
        assert!((score - 0.75).abs() < 1e-6);
        let (text, score) = greedy_decode(&onehot(&[0, 0, 0], 5, 0.9), 3, &d).unwrap();
        assert_eq!((text.as_str(), score), ("", 0.0));
    }

    #[test]
    fn the_score_is_the_mean_over_kept_steps_and_shape_errors_are_named() {
        let d = Dictionary::from_lines("x\ny\n").unwrap();
        assert_eq!(d.len(), 4);
        let mut v = onehot(&[1, 1, 2], 4, 0.5);
        v[2 * 4 + 2] = 0.9;
        let (text, score) = greedy_decode(&v, 3, &d).unwrap();
        assert_eq!(text, "xy");
        assert!((score - 0.7).abs() < 1e-6);
        let e = greedy_decode(&v, 2, &d).unwrap_err().to_string();
        assert!(e.contains("needs 8"), "{e}");
        assert!(Dictionary::from_lines("").is_err());
    }
}
