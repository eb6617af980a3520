//! The Criteo display-ads text format (Kaggle/Terabyte `train.txt`): one sample a line,
//! tab-separated — the label (0/1), 13 integer features, 26 categorical features as 8-digit
//! hex hashes; any feature may be empty. [`CriteoReader`] streams files on its own thread,
//! parses them into [`CtrBatch`]es and hands them over a bounded channel, so reading never
//! stalls a training step (and never runs more than `capacity` batches ahead).
//!
//! Conversion: an integer feature `x` becomes `ln(1 + max(x, 0))` (0 when empty), the usual
//! Criteo transform; a categorical value `v` of slot `s` becomes the 64-bit key
//! `splitmix64((s + 1)·2³³ + v)` (an empty one: `+ 2³²`, which no 32-bit value reaches), so
//! equal hashes in different slots are different features. Models hash keys modulo their
//! table rows ([`CtrBatch::ids`]).
//!
//! A malformed line (wrong field count, a label other than 0/1, a bad number) is an error
//! naming the file and 1-based line; [`OnError::Skip`] drops the line and records it
//! ([`CriteoReader::skipped`]), [`OnError::Stop`] ends the stream with the error.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Integer features per line.
pub const DENSE_FEATURES: usize = 13;
/// Categorical features per line.
pub const SLOTS: usize = 26;
/// Fields per line (label, integers, categoricals).
pub const FIELDS: usize = 1 + DENSE_FEATURES + SLOTS;

/// A Criteo file that could not be read or parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CriteoError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{path}:{line}: {message}")]
    Line {
        path: String,
        line: u64,
        message: String,
    },
    #[error("{0}")]
    Config(String),
}

/// What to do with a malformed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Drop it, record it, go on.
    #[default]
    Skip,
    /// End the stream with the error.
    Stop,
}

impl std::str::FromStr for OnError {
    type Err = CriteoError;
    fn from_str(s: &str) -> Result<OnError, CriteoError> {
        match s {
            "skip" => Ok(OnError::Skip),
            "stop" => Ok(OnError::Stop),
            _ => Err(CriteoError::Config(format!(
                "unknown error policy `{s}`; expected skip or stop"
            ))),
        }
    }
}

/// Which lines a reader keeps: line `i` (0-based, counted over the valid lines of all files
/// in order) is held out when `i % every == every - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    All,
    Train { every: u64 },
    Eval { every: u64 },
}

impl Split {
    fn keeps(self, i: u64) -> bool {
        match self {
            Split::All => true,
            Split::Train { every } => every == 0 || i % every != every - 1,
            Split::Eval { every } => every != 0 && i % every == every - 1,
        }
    }
}

/// Reader settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CriteoOptions {
    /// Samples per batch.
    pub batch_size: usize,
    pub on_error: OnError,
    /// Parsed batches that may wait in the channel.
    pub capacity: usize,
    pub split: Split,
    /// Drop a last batch smaller than `batch_size`.
    pub drop_last: bool,
}

impl CriteoOptions {
    pub fn new(batch_size: usize) -> CriteoOptions {
        CriteoOptions {
            batch_size,
            on_error: OnError::Skip,
            capacity: 8,
            split: Split::All,
            drop_last: false,
        }
    }
}

/// One parsed line before conversion: `None` where the field was empty.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSample {
    pub label: u8,
    pub dense: [Option<i64>; DENSE_FEATURES],
    pub cats: [Option<u32>; SLOTS],
}

/// Samples in the layout the CTR models take.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CtrBatch {
    /// `[n]`, 0 or 1.
    pub labels: Vec<f32>,
    /// `[n, 13]`, `ln(1 + max(x, 0))`.
    pub dense: Vec<f32>,
    /// `[n, 26]` feature keys (see the module docs).
    pub keys: Vec<u64>,
}

/// splitmix64's step from state `z`: a bijective 64-bit mix (the loader's generator).
pub fn mix64(z: u64) -> u64 {
    super::loader::SplitMix(z).next_u64()
}

/// The key of categorical value `v` (or an empty field) in slot `slot`.
pub fn feature_key(slot: usize, v: Option<u32>) -> u64 {
    let base = (slot as u64 + 1) << 33;
    mix64(base + v.map_or(1 << 32, u64::from))
}

impl CtrBatch {
    /// Samples in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Appends one sample.
    pub fn push(&mut self, s: &RawSample) {
        self.labels.push(f32::from(s.label));
        self.dense.extend(
            s.dense
                .iter()
                .map(|x| (x.unwrap_or(0).max(0) as f64).ln_1p() as f32),
        );
        self.keys
            .extend(s.cats.iter().enumerate().map(|(k, v)| feature_key(k, *v)));
    }

    /// Samples `range` as a batch of their own.
    pub fn slice(&self, range: std::ops::Range<usize>) -> CtrBatch {
        CtrBatch {
            labels: self.labels[range.clone()].to_vec(),
            dense: self.dense[range.start * DENSE_FEATURES..range.end * DENSE_FEATURES].to_vec(),
            keys: self.keys[range.start * SLOTS..range.end * SLOTS].to_vec(),
        }
    }

    /// The keys hashed into a table of `rows` rows (`key mod rows`), `[n, 26]`.
    pub fn ids(&self, rows: u64) -> Vec<i64> {
        self.keys.iter().map(|k| (k % rows.max(1)) as i64).collect()
    }
}

/// Parses one line (without its newline).
pub fn parse_line(line: &str) -> Result<RawSample, String> {
    let fields: Vec<&str> = line.split('\t').collect();
    if fields.len() != FIELDS {
        return Err(format!(
            "expected {FIELDS} tab-separated fields (label, {DENSE_FEATURES} integers, {SLOTS} \
             categorical hashes), found {}",
            fields.len()
        ));
    }
    let label = match fields[0] {
        "0" => 0,
        "1" => 1,
        other => return Err(format!("label must be 0 or 1, found {other:?}")),
    };
    let mut dense = [None; DENSE_FEATURES];
    for (j, f) in fields[1..=DENSE_FEATURES].iter().enumerate() {
        if !f.is_empty() {
            dense[j] = Some(f.parse::<i64>().map_err(|_| {
                format!(
                    "integer feature {} (field {}): {f:?} is not an integer",
                    j + 1,
                    j + 2
                )
            })?);
        }
    }
    let mut cats = [None; SLOTS];
    for (k, f) in fields[1 + DENSE_FEATURES..].iter().enumerate() {
        if !f.is_empty() {
            cats[k] = Some(u32::from_str_radix(f, 16).map_err(|_| {
                format!(
                    "categorical feature {} (field {}): {f:?} is not a hex hash of at most 8 digits",
                    k + 1,
                    k + 2 + DENSE_FEATURES
                )
            })?);
        }
    }
    Ok(RawSample { label, dense, cats })
}

/// A malformed line a [`OnError::Skip`] reader dropped.
pub type SkippedLine = CriteoError;

/// Streams batches from Criteo files, parsed on a background thread.
pub struct CriteoReader {
    rx: Receiver<Result<CtrBatch, CriteoError>>,
    skipped: Arc<Mutex<Vec<SkippedLine>>>,
    thread: Option<JoinHandle<()>>,
}

impl CriteoReader {
    /// Starts reading `paths` in order. Missing files are reported here, before the thread
    /// starts.
    pub fn open(paths: &[PathBuf], opts: CriteoOptions) -> Result<CriteoReader, CriteoError> {
        if opts.batch_size == 0 {
            return Err(CriteoError::Config("batch size must be at least 1".into()));
        }
        for p in paths {
            if !p.is_file() {
                return Err(CriteoError::Io {
                    path: p.display().to_string(),
                    message: "no such file".into(),
                });
            }
        }
        let (tx, rx) = sync_channel(opts.capacity.max(1));
        let skipped = Arc::new(Mutex::new(Vec::new()));
        let sk = skipped.clone();
        let paths = paths.to_vec();
        let thread = std::thread::Builder::new()
            .name("criteo-reader".into())
            .spawn(move || {
                let mut batch = CtrBatch::default();
                let mut index = 0u64;
                for p in &paths {
                    if let Err(e) = read_file(p, &opts, &mut batch, &mut index, &tx, &sk) {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
                if !batch.is_empty() && !opts.drop_last {
                    let _ = tx.send(Ok(batch));
                }
            })
            .map_err(|e| CriteoError::Config(format!("starting the reader thread: {e}")))?;
        Ok(CriteoReader {
            rx,
            skipped,
            thread: Some(thread),
        })
    }

    /// The lines dropped so far (with [`OnError::Skip`]), each naming file and line.
    pub fn skipped(&self) -> Vec<SkippedLine> {
        self.skipped.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Every remaining batch (stopping at the first error).
    pub fn read_all(self) -> Result<Vec<CtrBatch>, CriteoError> {
        self.collect()
    }
}

impl Iterator for CriteoReader {
    type Item = Result<CtrBatch, CriteoError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.rx.recv() {
            Ok(b) => Some(b),
            Err(_) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
                None
            }
        }
    }
}

/// Reads one file into batches; `Err` ends the stream (I/O, or a bad line under `Stop`).
/// Returns `Ok` also when the consumer hung up.
fn read_file(
    path: &Path,
    opts: &CriteoOptions,
    batch: &mut CtrBatch,
    index: &mut u64,
    tx: &std::sync::mpsc::SyncSender<Result<CtrBatch, CriteoError>>,
    skipped: &Mutex<Vec<SkippedLine>>,
) -> Result<(), CriteoError> {
    let name = path.display().to_string();
    let io = |e: std::io::Error| CriteoError::Io {
        path: name.clone(),
        message: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut line = String::new();
    let mut lineno = 0u64;
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(io)? == 0 {
            return Ok(());
        }
        lineno += 1;
        let text = line.strip_suffix('\n').unwrap_or(&line);
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.is_empty() {
            continue;
        }
        let sample = match parse_line(text) {
            Ok(s) => s,
            Err(message) => {
                let e = CriteoError::Line {
                    path: name.clone(),
                    line: lineno,
                    message,
                };
                match opts.on_error {
                    OnError::Stop => return Err(e),
                    OnError::Skip => {
                        if let Ok(mut s) = skipped.lock() {
                            s.push(e);
                        }
                        continue;
                    }
                }
            }
        };
        let keep = opts.split.keeps(*index);
        *index += 1;
        if !keep {
            continue;
        }
        batch.push(&sample);
        if batch.len() == opts.batch_size && tx.send(Ok(std::mem::take(batch))).is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(label: &str, dense: &str, cats: &str) -> String {
        format!("{label}\t{dense}\t{cats}")
    }

    fn good() -> String {
        let dense = (0..13)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join("\t");
        let cats = (0..26)
            .map(|i| format!("{:08x}", 0x1000 + i))
            .collect::<Vec<_>>()
            .join("\t");
        line("1", &dense, &cats)
    }

    #[test]
    fn parses_a_full_line_and_empty_fields() {
        let s = parse_line(&good()).unwrap();
        assert_eq!(s.label, 1);
        assert_eq!(s.dense[3], Some(3));
        assert_eq!(s.cats[25], Some(0x1000 + 25));
        let empty = line("0", &vec![""; 13].join("\t"), &vec![""; 26].join("\t"));
        let s = parse_line(&empty).unwrap();
        assert!(s.dense.iter().all(Option::is_none) && s.cats.iter().all(Option::is_none));
        let mut b = CtrBatch::default();
        b.push(&s);
        assert!(b.dense.iter().all(|&x| x == 0.0));
        // An empty field is its slot's own feature, different from every value and slot.
        assert_ne!(b.keys[0], b.keys[1]);
        assert_ne!(feature_key(0, None), feature_key(0, Some(0)));
    }

    #[test]
    fn bad_fields_are_named() {
        let e = parse_line("1\t2\t3").unwrap_err();
        assert!(e.contains("expected 40") && e.contains("found 3"), "{e}");
        let bad = good().replacen('1', "7", 1);
        assert!(parse_line(&bad).unwrap_err().contains("label"));
        let bad = good().replace("00001005", "zz");
        assert!(parse_line(&bad)
            .unwrap_err()
            .contains("categorical feature 6"));
    }

    #[test]
    fn a_bad_line_is_named_by_file_and_line_under_both_policies() {
        let dir = std::env::temp_dir().join(format!("oar-criteo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("day_0.txt");
        let text = [
            good(),
            good(),
            "1\t2\t3".to_string(),
            good(),
            String::new(),
            good(),
        ];
        std::fs::write(&path, text.join("\n") + "\n").unwrap();
        let mut o = CriteoOptions::new(2);
        o.on_error = OnError::Stop;
        let e = CriteoReader::open(std::slice::from_ref(&path), o.clone())
            .unwrap()
            .read_all()
            .unwrap_err();
        let want = format!("{}:3: expected 40", path.display());
        assert!(e.to_string().starts_with(&want), "{e}");
        o.on_error = OnError::Skip;
        let mut r = CriteoReader::open(std::slice::from_ref(&path), o).unwrap();
        let sizes: Vec<usize> = r.by_ref().map(|b| b.unwrap().len()).collect();
        assert_eq!(
            sizes,
            [2, 2],
            "the bad line is dropped, the empty one ignored"
        );
        let skipped = r.skipped();
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].to_string().starts_with(&want), "{}", skipped[0]);
        let missing = CriteoReader::open(&[dir.join("nope.txt")], CriteoOptions::new(2));
        assert!(missing
            .err()
            .unwrap()
            .to_string()
            .contains("nope.txt: no such file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn splits_hold_out_every_kth_line() {
        let split = |s: Split| (0..20).filter(|&i| s.keeps(i)).count();
        assert_eq!(split(Split::Train { every: 10 }), 18);
        assert_eq!(split(Split::Eval { every: 10 }), 2);
        assert_eq!(split(Split::All), 20);
    }
}
