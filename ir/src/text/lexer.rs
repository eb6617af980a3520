//! Tokens of the text format, with byte offsets for error positions.

use super::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// `%name`
    Value(String),
    /// `@name`
    Global(String),
    /// `#dist`, `#device`
    Hash(String),
    Ident(String),
    Int(i64),
    Float(f64),
    Str(String),
    /// Punctuation: `( ) [ ] { } < > , : = * -> #`
    Punct(&'static str),
    Eof,
}

impl Tok {
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Value(v) => format!("`%{v}`"),
            Tok::Global(g) => format!("`@{g}`"),
            Tok::Hash(h) => format!("`#{h}`"),
            Tok::Ident(i) => format!("`{i}`"),
            Tok::Int(i) => format!("`{i}`"),
            Tok::Float(x) => format!("`{x:?}`"),
            Tok::Str(_) => "a string".into(),
            Tok::Punct(p) => format!("`{p}`"),
            Tok::Eof => "end of file".into(),
        }
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

const PUNCT: [&str; 14] = [
    "->", "(", ")", "[", "]", "{", "}", "<", ">", ",", ":", "=", "*", "#",
];

pub(crate) fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let mut out = Vec::new();
    let mut i = 0;
    let take_while = |start: usize, f: &dyn Fn(char) -> bool| -> usize {
        src[start..]
            .char_indices()
            .find(|(_, c)| !f(*c))
            .map(|(k, _)| start + k)
            .unwrap_or(src.len())
    };
    while i < src.len() {
        let c = src[i..].chars().next().unwrap_or(' ');
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        if src[i..].starts_with("//") {
            i = take_while(i, &|c| c != '\n');
            continue;
        }
        let start = i;
        let tok = match c {
            '%' | '@' => {
                // Module-level names (graphs, meshes) may also contain `-` (`@ernie-3.0-base`).
                let end = if c == '@' {
                    take_while(i + 1, &|c| is_name_char(c) || c == '-')
                } else {
                    take_while(i + 1, &is_name_char)
                };
                if end == i + 1 {
                    return Err(ParseError::at(
                        src,
                        i,
                        format!("expected a name after `{c}`"),
                    ));
                }
                let name = src[i + 1..end].to_string();
                i = end;
                if c == '%' {
                    Tok::Value(name)
                } else {
                    Tok::Global(name)
                }
            }
            '#' if src[i + 1..].starts_with(|c: char| c.is_ascii_alphabetic()) => {
                let end = take_while(i + 1, &|c| c.is_ascii_alphanumeric() || c == '_');
                let name = src[i + 1..end].to_string();
                i = end;
                Tok::Hash(name)
            }
            '"' => {
                let (s, end) = lex_string(src, i)?;
                i = end;
                Tok::Str(s)
            }
            c if c.is_ascii_digit()
                || (c == '-'
                    && src[i + 1..].starts_with(|d: char| d.is_ascii_digit() || d == 'i')) =>
            {
                let (t, end) = lex_number(src, i)?;
                i = end;
                t
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let end = take_while(i, &|c| c.is_ascii_alphanumeric() || c == '_');
                let word = &src[i..end];
                i = end;
                match word {
                    "inf" => Tok::Float(f64::INFINITY),
                    "NaN" | "nan" => Tok::Float(f64::NAN),
                    _ => Tok::Ident(word.to_string()),
                }
            }
            _ => match PUNCT.iter().find(|p| src[i..].starts_with(**p)) {
                Some(p) => {
                    i += p.len();
                    Tok::Punct(p)
                }
                None => {
                    return Err(ParseError::at(
                        src,
                        i,
                        format!("unexpected character `{c}`"),
                    ));
                }
            },
        };
        out.push((tok, start));
    }
    out.push((Tok::Eof, src.len()));
    Ok(out)
}

fn lex_string(src: &str, start: usize) -> Result<(String, usize), ParseError> {
    let mut s = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((k, c)) = chars.next() {
        let at = start + 1 + k;
        match c {
            '"' => return Ok((s, at + 1)),
            '\\' => match chars.next() {
                Some((_, 'n')) => s.push('\n'),
                Some((_, 't')) => s.push('\t'),
                Some((_, '"')) => s.push('"'),
                Some((_, '\\')) => s.push('\\'),
                Some((_, 'u')) => {
                    let rest = &src[at + 2..];
                    let close = rest.find('}').filter(|_| rest.starts_with('{'));
                    let ch = close
                        .and_then(|e| u32::from_str_radix(&rest[1..e], 16).ok())
                        .and_then(char::from_u32);
                    match (ch, close) {
                        (Some(ch), Some(e)) => {
                            s.push(ch);
                            // `{`, the hex digits (ASCII) and the closing `}`.
                            for _ in 0..=e {
                                chars.next();
                            }
                        }
                        _ => {
                            return Err(ParseError::at(src, at, "bad `\\u{...}` escape in string"))
                        }
                    }
                }
                _ => return Err(ParseError::at(src, at, "unknown escape in string")),
            },
            '\n' => {
                return Err(ParseError::at(
                    src,
                    start,
                    "string is not closed on its line",
                ))
            }
            c => s.push(c),
        }
    }
    Err(ParseError::at(src, start, "string is not closed"))
}

fn lex_number(src: &str, start: usize) -> Result<(Tok, usize), ParseError> {
    let rest = &src[start..];
    if rest.starts_with("-inf") {
        return Ok((Tok::Float(f64::NEG_INFINITY), start + 4));
    }
    let mut end = start;
    let mut is_float = false;
    for (k, c) in rest.char_indices() {
        let prev = rest[..k].chars().last();
        let ok = c.is_ascii_digit()
            || (k == 0 && c == '-')
            || (c == '.' && !is_float)
            || c == 'e'
            || c == 'E'
            || ((c == '-' || c == '+') && matches!(prev, Some('e') | Some('E')));
        if !ok {
            break;
        }
        if matches!(c, '.' | 'e' | 'E') {
            is_float = true;
        }
        end = start + k + c.len_utf8();
    }
    let text = &src[start..end];
    let tok = if is_float {
        text.parse::<f64>().map(Tok::Float).ok()
    } else {
        text.parse::<i64>().map(Tok::Int).ok()
    };
    tok.map(|t| (t, end))
        .ok_or_else(|| ParseError::at(src, start, format!("bad number `{text}`")))
}
