//! Source positions and rustc-style rendering of Dockerfile errors.
//!
//! invariant: every error the parser or the typed layer produces carries a [`Span`] that points
//! into the source it was given (lines and columns are 1-based; columns count characters).

use std::fmt;

/// A position in a Dockerfile: 1-based line, 1-based column (in characters) and a length in
/// characters on that line (0 when unknown; the caret is then one character wide).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Span {
    /// 1-based line number.
    pub line: u32,
    /// 1-based column, counted in characters (a tab is one column).
    pub column: u32,
    /// Length in characters of the spanned text on `line` (0 if unknown).
    pub len: u32,
}

impl Span {
    /// A span at `line:column` with length `len`.
    pub fn new(line: u32, column: u32, len: u32) -> Self {
        Self { line, column, len }
    }

    /// A span covering the start of a line.
    pub fn line_start(line: u32) -> Self {
        Self {
            line,
            column: 1,
            len: 0,
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Something that can be shown as a located diagnostic: a message, a span and optional help.
pub trait Diagnostic: fmt::Display {
    /// Where the problem is.
    fn span(&self) -> Span;
    /// An extra line of advice, if one helps.
    fn help(&self) -> Option<String> {
        None
    }
}

/// Render a diagnostic the way rustc does: `FILE:LINE:COL: message`, the source line, a caret
/// line under the column and, where one helps, a `help:` line.
///
/// Tabs before the column are repeated in the caret line so the caret lines up in a terminal.
/// A span past the end of the source (e.g. an empty file) renders without the source lines.
pub fn render<D: Diagnostic + ?Sized>(err: &D, file_name: &str, src: &str) -> String {
    let span = err.span();
    let mut out = format!("{file_name}:{}:{}: {err}\n", span.line, span.column);
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let line_text = (span.line as usize)
        .checked_sub(1)
        .and_then(|idx| src.split('\n').nth(idx))
        .map(|l| l.strip_suffix('\r').unwrap_or(l));
    if let Some(text) = line_text {
        let number = span.line.to_string();
        let pad = " ".repeat(number.len());
        out.push_str(&format!("{number} | {text}\n"));
        let mut caret = String::new();
        let before = span.column.saturating_sub(1) as usize;
        for ch in text.chars().take(before) {
            caret.push(if ch == '\t' { '\t' } else { ' ' });
        }
        let width = span.len.max(1) as usize;
        caret.push_str(&"^".repeat(width));
        out.push_str(&format!("{pad} | {caret}\n"));
    }
    if let Some(help) = err.help() {
        out.push_str(&format!("help: {help}\n"));
    }
    out
}

/// Levenshtein edit distance between two strings, compared case-insensitively.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().flat_map(char::to_lowercase).collect();
    let b: Vec<char> = b.chars().flat_map(char::to_lowercase).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate closest to `word` if it is close enough to be a plausible typo.
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    if word.chars().count() > 64 {
        return None;
    }
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E(Span, Option<String>);
    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("boom")
        }
    }
    impl Diagnostic for E {
        fn span(&self) -> Span {
            self.0
        }
        fn help(&self) -> Option<String> {
            self.1.clone()
        }
    }

    #[test]
    fn renders_line_and_caret_with_tabs() {
        let src = "FROM a\n\tRUN  x\r\n";
        let out = render(
            &E(Span::new(2, 6, 1), Some("try y".into())),
            "Dockerfile",
            src,
        );
        assert_eq!(
            out,
            "Dockerfile:2:6: boom\n2 | \tRUN  x\n  | \t    ^\nhelp: try y\n"
        );
    }

    #[test]
    fn renders_span_outside_source() {
        let out = render(&E(Span::new(9, 1, 0), None), "Dockerfile", "");
        assert_eq!(out, "Dockerfile:9:1: boom\n");
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(suggest("COPPY", &["COPY", "ADD"]), Some("COPY"));
        assert_eq!(suggest("XYZZY", &["COPY", "ADD"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
