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

/// Characters of a source line [`render`] shows; a longer line is cut to this many around the
/// caret, with `…` where text was left out.
pub const SOURCE_WINDOW: usize = 120;

/// Characters of a message (or help) line [`render`] shows; a longer one (a message quoting a
/// 10 MB word) keeps its start and its end around ` … `.
pub const MESSAGE_WINDOW: usize = 400;

/// Render a diagnostic the way rustc does: `FILE:LINE:COL: message`, the source line, a caret
/// line under the column and, where one helps, a `help:` line.
///
/// Tabs before the column are repeated in the caret line so the caret lines up in a terminal.
/// A span past the end of the source (e.g. an empty file) renders without the source lines.
/// Output stays small whatever the input: the source line is cut to [`SOURCE_WINDOW`]
/// characters around the caret and messages to [`MESSAGE_WINDOW`].
pub fn render<D: Diagnostic + ?Sized>(err: &D, file_name: &str, src: &str) -> String {
    let span = err.span();
    let message = err.to_string();
    let mut out = format!(
        "{file_name}:{}:{}: {}\n",
        span.line,
        span.column,
        clip(&message, MESSAGE_WINDOW)
    );
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let line_text = (span.line as usize)
        .checked_sub(1)
        .and_then(|idx| src.split('\n').nth(idx))
        .map(|l| l.strip_suffix('\r').unwrap_or(l));
    if let Some(text) = line_text {
        let number = span.line.to_string();
        let pad = " ".repeat(number.len());
        let before = span.column.saturating_sub(1) as usize;
        let (shown, caret) = source_window(text, before, span.len.max(1) as usize);
        out.push_str(&format!("{number} | {shown}\n"));
        out.push_str(&format!("{pad} | {caret}\n"));
    }
    if let Some(help) = err.help() {
        out.push_str(&format!("help: {}\n", clip(&help, MESSAGE_WINDOW)));
    }
    out
}

/// The part of `text` shown around a caret `before` characters in, `width` wide, and the caret
/// line under it.
fn source_window(text: &str, before: usize, width: usize) -> (String, String) {
    let total = text.chars().count();
    let (start, end) = if total <= SOURCE_WINDOW {
        (0, total)
    } else {
        // A third of the window before the caret, the rest after it.
        let start = before
            .saturating_sub(SOURCE_WINDOW / 3)
            .min(total - SOURCE_WINDOW);
        (start, start + SOURCE_WINDOW)
    };
    let mut shown = String::new();
    let mut caret = String::new();
    if start > 0 {
        shown.push('…');
        caret.push(' ');
    }
    for (i, ch) in text.chars().skip(start).take(end - start).enumerate() {
        shown.push(ch);
        if start + i < before {
            caret.push(if ch == '\t' { '\t' } else { ' ' });
        }
    }
    if end < total {
        shown.push('…');
    }
    // The caret stops where the shown text does (plus one past a line's end).
    let room = (end + 1).saturating_sub(before.max(start)).max(1);
    caret.push_str(&"^".repeat(width.min(room)));
    (shown, caret)
}

/// `text` if it has at most `max` characters, else its start and end around ` … `.
pub(crate) fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    let keep = max / 2;
    let head_end = text.char_indices().nth(keep).map(|(i, _)| i);
    let tail_start = text
        .char_indices()
        .rev()
        .nth(keep.saturating_sub(1))
        .map(|(i, _)| i);
    match (head_end, tail_start) {
        (Some(h), Some(t)) if h < t && text[h..t].chars().nth(3).is_some() => {
            format!("{} … {}", &text[..h], &text[t..]).into()
        }
        _ => text.into(),
    }
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

/// The candidate closest to `word` if it is close enough to be a plausible typo: BuildKit's
/// `suggest.Search` (edit distance below 3, the first of the closest; none for an exact match).
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    if word.chars().count() > 64 || candidates.contains(&word) {
        return None;
    }
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d < 3)
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
    fn long_lines_and_messages_are_windowed() {
        let line = format!("ENV A={}B{}", "x".repeat(10_000_000), "y".repeat(1_000_000));
        let src = format!("FROM a\n{line}\n");
        let caret_col = 7 + 10_000_000;
        let message = format!("bad {line:?}");
        struct Long(Span, String);
        impl fmt::Display for Long {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.1)
            }
        }
        impl Diagnostic for Long {
            fn span(&self) -> Span {
                self.0
            }
        }
        let out = render(
            &Long(Span::new(2, caret_col, 3), message),
            "Dockerfile",
            &src,
        );
        assert!(out.len() < 2_000, "{} bytes", out.len());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("Dockerfile:2:10000007: bad \"ENV A=xxx"));
        assert!(lines[0].ends_with("yyy\""), "{}", lines[0]);
        assert!(lines[0].contains(" … "));
        let shown = lines[1].strip_prefix("2 | ").unwrap_or_default();
        assert_eq!(shown.chars().count(), SOURCE_WINDOW + 2);
        assert!(shown.starts_with('…') && shown.ends_with('…'));
        let caret = lines[2].strip_prefix("  | ").unwrap_or_default();
        // The caret sits under the B (three wide), whatever was cut before it.
        let at = caret.find('^').unwrap_or(0);
        assert_eq!(shown.chars().nth(at), Some('B'));
        assert_eq!(caret.trim_start(), "^^^");

        // Near the start and the end of a long line: one `…` only.
        let out = render(&E(Span::new(2, 1, 0), None), "Dockerfile", &src);
        let shown = out.lines().nth(1).unwrap_or_default();
        assert!(shown.starts_with("2 | ENV A=xx") && shown.ends_with('…'));
        assert!(out.lines().nth(2).is_some_and(|c| c == "  | ^"));
        let end = (line.chars().count() + 1) as u32;
        let out = render(&E(Span::new(2, end, 5), None), "Dockerfile", &src);
        let shown = out.lines().nth(1).unwrap_or_default();
        assert!(
            shown.starts_with("2 | …yy") && shown.ends_with("yyy"),
            "{shown}"
        );
        let caret = out.lines().nth(2).unwrap_or_default();
        assert_eq!(caret.len(), "  | ".len() + 1 + SOURCE_WINDOW + 1);
        assert!(caret.ends_with(" ^"), "one caret past the end: {caret}");
    }

    #[test]
    fn clip_keeps_short_text_and_both_ends_of_long_text() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("0123456789", 10), "0123456789");
        assert_eq!(
            clip("0123456789ab", 10),
            "0123456789ab",
            "cuts only to save space"
        );
        assert_eq!(clip(&"é".repeat(30), 10), "ééééé … ééééé");
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
        assert_eq!(suggest("tmp", &["bind", "tmpfs"]), Some("tmpfs"));
        assert_eq!(suggest("bulid", &["build", "b"]), Some("build"));
        assert_eq!(suggest("build", &["build"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
