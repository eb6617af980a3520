//! The text format: what `oar inspect` prints and tests snapshot. `parse(print(g)) == g`.
//!
//! ```text
//! mesh @m = {shape=[2, 2], axes=["dp", "tp"]}
//!
//! graph @mlp(%x: f32[N,784]) -> (f32[N,10]) {
//!   %w1 = param "fc1.weight" : f32[784,256]
//!   %0 = matmul(%x, %w1) : f32[N,256]
//!   %1 = relu(%0) : f32[N,256]
//!   %w2 = param "fc2.weight" : f32[256,10] #dist<mesh=@m, [R, S(1)]>
//!   %2 = matmul(%1, %w2) : f32[N,10]
//!   return %2
//! }
//! ```

mod lexer;
mod parse;
mod print;

pub use parse::parse;
pub use print::print;

use std::fmt;

/// A syntax or type error in a text file, with its position and the offending line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// File name, when known.
    pub file: Option<String>,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    pub message: String,
    /// The source line the error is on.
    pub source_line: String,
}

impl ParseError {
    pub(crate) fn at(src: &str, offset: usize, message: impl Into<String>) -> ParseError {
        let offset = offset.min(src.len());
        let before = &src[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|p| p + 1).unwrap_or(0);
        let col = src[line_start..offset].chars().count() + 1;
        let line_end = src[offset..]
            .find('\n')
            .map(|p| offset + p)
            .unwrap_or(src.len());
        ParseError {
            file: None,
            line,
            col,
            message: message.into(),
            source_line: src[line_start..line_end].to_string(),
        }
    }

    /// Attaches a file name for display.
    pub fn with_file(mut self, file: impl Into<String>) -> ParseError {
        self.file = Some(file.into());
        self
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.as_deref().unwrap_or("<input>");
        let num = self.line.to_string();
        let pad = " ".repeat(num.len());
        writeln!(f, "{}", self.message)?;
        writeln!(f, "{pad}--> {file}:{}:{}", self.line, self.col)?;
        writeln!(f, "{pad} |")?;
        writeln!(f, "{num} | {}", self.source_line)?;
        // Tabs keep their width so the caret lines up.
        let lead: String = self
            .source_line
            .chars()
            .take(self.col - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(f, "{pad} | {lead}^")
    }
}
