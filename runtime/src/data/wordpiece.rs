//! A WordPiece tokenizer (BERT/ERNIE style) and its trainer.
//!
//! Text is lower-cased and split on whitespace, every punctuation or symbol character being
//! a word of its own (BERT's basic tokenizer, without accent stripping or CJK splitting);
//! each word is then cut into vocabulary pieces by greedy longest match, pieces after the
//! first carrying the `##` prefix. A word that cannot be cut (a character outside the
//! vocabulary) or is longer than [`MAX_WORD_CHARS`] becomes `[UNK]`.
//!
//! Training is the one Hugging Face's `WordPieceTrainer` performs: start from the characters
//! (word-initial `c` and continuation `##c`), then repeatedly merge the most frequent adjacent
//! pair of pieces across the word counts until the vocabulary has the requested size.
//!
//! Why our own instead of the `tokenizers` crate: it is ~300 lines against ~40 crates (a C
//! regex library or fancy-regex, a C++ suffix-array crate, rayon) in the runtime's build,
//! and it is deterministic by construction — ties between equally frequent pairs go to the
//! pair of lower piece ids, and ids are given in a fixed order — so retraining on the same
//! corpus gives the same vocabulary byte for byte, which exact resume relies on. The
//! vocabulary file is BERT's `vocab.txt` format (one piece per line, the line number is the
//! id), readable by PaddleNLP's and Hugging Face's BERT tokenizers.

use super::DataError;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::Path;

/// The special tokens, at ids 0..5 in this order.
pub const SPECIALS: [&str; 5] = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"];
pub const PAD_ID: u32 = 0;
pub const CLS_ID: u32 = 1;
pub const SEP_ID: u32 = 2;
pub const MASK_ID: u32 = 3;
pub const UNK_ID: u32 = 4;
/// Words longer than this (in characters) are `[UNK]`, as in BERT.
pub const MAX_WORD_CHARS: usize = 100;

/// A trained WordPiece vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct WordPiece {
    pieces: Vec<String>,
    ids: HashMap<String, u32>,
}

/// BERT's basic tokenization: lower-cased words, punctuation and symbols split off.
pub fn pre_tokenize(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
        } else if c.is_alphanumeric() || c == '_' {
            cur.extend(c.to_lowercase());
        } else {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            words.push(c.to_string());
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// The piece for character `c` at a word start or inside a word.
fn char_piece(c: char, first: bool) -> String {
    if first {
        c.to_string()
    } else {
        format!("##{c}")
    }
}

impl WordPiece {
    /// A tokenizer over `pieces` (line number = id); the first five must be [`SPECIALS`].
    pub fn from_pieces(pieces: Vec<String>) -> Result<WordPiece, DataError> {
        if pieces.len() < SPECIALS.len() || pieces[..SPECIALS.len()] != SPECIALS {
            return Err(DataError::Config(format!(
                "a WordPiece vocabulary starts with {}",
                SPECIALS.join(" ")
            )));
        }
        let mut ids = HashMap::with_capacity(pieces.len());
        for (i, p) in pieces.iter().enumerate() {
            if p.is_empty() || p.chars().any(char::is_whitespace) {
                return Err(DataError::Config(format!(
                    "vocabulary line {}: `{p}` is empty or holds whitespace",
                    i + 1
                )));
            }
            if ids.insert(p.clone(), i as u32).is_some() {
                return Err(DataError::Config(format!(
                    "vocabulary line {}: `{p}` appears twice",
                    i + 1
                )));
            }
        }
        Ok(WordPiece { pieces, ids })
    }

    /// Trains a vocabulary of at most `vocab_size` pieces (specials included) on `texts`.
    pub fn train<'a>(
        texts: impl IntoIterator<Item = &'a str>,
        vocab_size: usize,
    ) -> Result<WordPiece, DataError> {
        if vocab_size <= SPECIALS.len() {
            return Err(DataError::Config(format!(
                "the vocabulary size must exceed the {} special tokens, found {vocab_size}",
                SPECIALS.len()
            )));
        }
        let mut counts: HashMap<String, u64> = HashMap::new();
        for t in texts {
            for w in pre_tokenize(t) {
                if w.chars().count() <= MAX_WORD_CHARS {
                    *counts.entry(w).or_default() += 1;
                }
            }
        }
        let mut words: Vec<(String, u64)> = counts.into_iter().collect();
        words.sort();
        Ok(Trainer::new(&words, vocab_size).run())
    }

    /// Reads a vocabulary file (one piece per line).
    pub fn load(path: &Path) -> Result<WordPiece, DataError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| DataError::Config(format!("{}: {e}", path.display())))?;
        WordPiece::from_pieces(text.lines().map(str::to_string).collect())
            .map_err(|e| DataError::Config(format!("{}: {e}", path.display())))
    }

    /// Writes the vocabulary file (one piece per line), atomically: ranks that train the
    /// same vocabulary at once each rename a complete file, so a rank that finds the file
    /// never reads half of one.
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        crate::io::write_atomically(path, self.to_text().as_bytes())
            .map_err(|e| DataError::Config(e.to_string()))
    }

    /// The vocabulary file's text.
    pub fn to_text(&self) -> String {
        let mut s = self.pieces.join("\n");
        s.push('\n');
        s
    }

    /// FNV-1a of the vocabulary file's text: two tokenizers agree iff their fingerprints do
    /// (up to hash collisions), which a resumed run checks.
    pub fn fingerprint(&self) -> u64 {
        crate::io::checkpoint::fnv1a64(self.to_text().as_bytes())
    }

    /// Number of pieces (the model's vocabulary size).
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// Never true: a vocabulary holds at least the specials.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The piece with id `id`.
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }

    /// The id of `piece`.
    pub fn id(&self, piece: &str) -> Option<u32> {
        self.ids.get(piece).copied()
    }

    /// The pieces of one pre-tokenized word, by greedy longest match.
    fn encode_word(&self, word: &str, out: &mut Vec<u32>) {
        let chars: Vec<(usize, char)> = word.char_indices().collect();
        if chars.len() > MAX_WORD_CHARS {
            out.push(UNK_ID);
            return;
        }
        let mark = out.len();
        let mut start = 0;
        let mut key = String::new();
        while start < chars.len() {
            let from = chars[start].0;
            let found = (start + 1..=chars.len()).rev().find_map(|end| {
                let to = chars.get(end).map_or(word.len(), |c| c.0);
                key.clear();
                if start > 0 {
                    key.push_str("##");
                }
                key.push_str(&word[from..to]);
                self.ids.get(key.as_str()).map(|&id| (end, id))
            });
            let Some((end, id)) = found else {
                out.truncate(mark);
                out.push(UNK_ID);
                return;
            };
            out.push(id);
            start = end;
        }
    }

    /// Token ids of `text` (no [CLS]/[SEP]).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut cache: HashMap<String, Vec<u32>> = HashMap::new();
        let mut out = Vec::new();
        for w in pre_tokenize(text) {
            let pieces = cache.entry(w).or_insert_with_key(|w| {
                let mut v = Vec::new();
                self.encode_word(w, &mut v);
                v
            });
            out.extend_from_slice(pieces);
        }
        out
    }

    /// Text from ids: words separated by spaces, `##` pieces glued to the previous one.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut s = String::new();
        for &id in ids {
            let p = self.piece(id).unwrap_or(SPECIALS[UNK_ID as usize]);
            match p.strip_prefix("##") {
                Some(rest) => s.push_str(rest),
                None => {
                    if !s.is_empty() {
                        s.push(' ');
                    }
                    s.push_str(p);
                }
            }
        }
        s
    }
}

/// The merge loop: words as piece-id sequences, pair counts kept up to date incrementally,
/// a max-heap of (count, lowest ids) with stale entries skipped when popped.
struct Trainer {
    pieces: Vec<String>,
    ids: HashMap<String, u32>,
    vocab_size: usize,
    words: Vec<Vec<u32>>,
    freqs: Vec<u64>,
    pair_count: HashMap<(u32, u32), u64>,
    pair_words: HashMap<(u32, u32), HashSet<usize>>,
    heap: BinaryHeap<(u64, Reverse<(u32, u32)>)>,
}

impl Trainer {
    fn new(words: &[(String, u64)], vocab_size: usize) -> Trainer {
        // The alphabet, most frequent first (ties by text), cut to what the vocabulary holds:
        // a word with a dropped character is left out of training (it encodes to [UNK]).
        let mut alpha: HashMap<String, u64> = HashMap::new();
        for (w, f) in words {
            for (i, c) in w.chars().enumerate() {
                *alpha.entry(char_piece(c, i == 0)).or_default() += f;
            }
        }
        let mut alpha: Vec<(String, u64)> = alpha.into_iter().collect();
        alpha.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        alpha.truncate(vocab_size - SPECIALS.len());
        let mut t = Trainer {
            pieces: SPECIALS.iter().map(|s| s.to_string()).collect(),
            ids: HashMap::new(),
            vocab_size,
            words: Vec::new(),
            freqs: Vec::new(),
            pair_count: HashMap::new(),
            pair_words: HashMap::new(),
            heap: BinaryHeap::new(),
        };
        for (p, _) in alpha {
            t.add_piece(p);
        }
        for (w, f) in words {
            let ids: Option<Vec<u32>> = w
                .chars()
                .enumerate()
                .map(|(i, c)| t.ids.get(&char_piece(c, i == 0)).copied())
                .collect();
            if let Some(ids) = ids.filter(|v| v.len() > 1) {
                let k = t.words.len();
                t.words.push(ids);
                t.freqs.push(*f);
                t.count_pairs(k, true);
            }
        }
        let all: Vec<(u32, u32)> = t.pair_count.keys().copied().collect();
        t.push_pairs(all);
        t
    }

    fn add_piece(&mut self, p: String) -> u32 {
        if let Some(&id) = self.ids.get(&p) {
            return id;
        }
        let id = self.pieces.len() as u32;
        self.ids.insert(p.clone(), id);
        self.pieces.push(p);
        id
    }

    /// Adds (or removes) word `k`'s adjacent pairs to the counts.
    fn count_pairs(&mut self, k: usize, add: bool) {
        let f = self.freqs[k];
        for w in self.words[k].windows(2) {
            let pair = (w[0], w[1]);
            let c = self.pair_count.entry(pair).or_default();
            *c = if add { *c + f } else { c.saturating_sub(f) };
            if add {
                self.pair_words.entry(pair).or_default().insert(k);
            }
        }
    }

    fn push_pairs(&mut self, pairs: impl IntoIterator<Item = (u32, u32)>) {
        for p in pairs {
            let c = self.pair_count.get(&p).copied().unwrap_or(0);
            if c > 0 {
                self.heap.push((c, Reverse(p)));
            }
        }
    }

    fn run(mut self) -> WordPiece {
        while self.pieces.len() < self.vocab_size {
            let Some((count, Reverse(pair))) = self.heap.pop() else {
                break;
            };
            if self.pair_count.get(&pair) != Some(&count) {
                continue; // stale: a fresher entry for this pair is in the heap
            }
            let (a, b) = (&self.pieces[pair.0 as usize], &self.pieces[pair.1 as usize]);
            let merged = format!("{a}{}", b.trim_start_matches("##"));
            let new = self.add_piece(merged);
            let mut affected: Vec<usize> = self
                .pair_words
                .remove(&pair)
                .unwrap_or_default()
                .into_iter()
                .collect();
            affected.sort_unstable();
            let mut touched: HashSet<(u32, u32)> = HashSet::new();
            for k in affected {
                self.count_pairs(k, false);
                touched.extend(self.words[k].windows(2).map(|w| (w[0], w[1])));
                let old = std::mem::take(&mut self.words[k]);
                let mut w = Vec::with_capacity(old.len());
                let mut i = 0;
                while i < old.len() {
                    if i + 1 < old.len() && (old[i], old[i + 1]) == pair {
                        w.push(new);
                        i += 2;
                    } else {
                        w.push(old[i]);
                        i += 1;
                    }
                }
                self.words[k] = w;
                self.count_pairs(k, true);
                touched.extend(self.words[k].windows(2).map(|w| (w[0], w[1])));
            }
            self.pair_count.remove(&pair);
            let mut touched: Vec<(u32, u32)> = touched.into_iter().collect();
            touched.sort_unstable();
            self.push_pairs(touched);
        }
        WordPiece {
            pieces: self.pieces,
            ids: self.ids,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "The quick brown fox jumps over the lazy dog. The dog sleeps; \
        the fox runs quickly, quicker than the dogs! def fox_jumps(x): return x + 1";

    #[test]
    fn pre_tokenize_splits_punctuation_and_lowercases() {
        assert_eq!(
            pre_tokenize("Hello, World!  x_y(1)"),
            ["hello", ",", "world", "!", "x_y", "(", "1", ")"]
        );
    }

    #[test]
    fn training_is_deterministic_and_round_trips() {
        let a = WordPiece::train([TEXT], 80).unwrap();
        let b = WordPiece::train([TEXT], 80).unwrap();
        assert_eq!(a, b, "same corpus, same vocabulary");
        assert_eq!(a.len(), 80);
        assert_eq!(a.piece(MASK_ID), Some("[MASK]"));
        // Every training word is covered (its characters are in the alphabet), so decoding
        // the ids gives the pre-tokenized text back.
        let ids = a.encode(TEXT);
        assert!(!ids.contains(&UNK_ID), "{}", a.decode(&ids));
        assert_eq!(a.decode(&ids), pre_tokenize(TEXT).join(" "));
        // Merges shorten the encoding: fewer ids than characters.
        assert!(ids.len() < TEXT.chars().filter(|c| !c.is_whitespace()).count() / 2);
        // The file round trip gives the same tokenizer.
        let dir = std::env::temp_dir().join(format!("oar-wp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vocab.txt");
        a.save(&path).unwrap();
        let c = WordPiece::load(&path).unwrap();
        assert_eq!((c.encode(TEXT), c.fingerprint()), (ids, a.fingerprint()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn frequent_words_become_one_piece_and_unknown_characters_unk() {
        let wp = WordPiece::train([TEXT, TEXT, "the the the"], 120).unwrap();
        assert_eq!(wp.encode("the"), vec![wp.id("the").unwrap()]);
        let the = wp.id("the").unwrap();
        assert_eq!(wp.encode("the ß The"), vec![the, UNK_ID, the]);
    }

    #[test]
    fn bad_vocabularies_are_errors() {
        assert!(WordPiece::train([TEXT], 5).is_err());
        let mut p: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
        p.push("a".into());
        p.push("a".into());
        assert!(WordPiece::from_pieces(p).is_err());
        assert!(WordPiece::from_pieces(vec!["a".into()]).is_err());
    }
}
