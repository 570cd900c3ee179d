//! Word-level scanning of a logical line: flags, quote-aware words, heredoc markers.
//!
//! Everything here keeps raw text (no expansion) and reports byte offsets into its input so the
//! caller can map them back to source positions.

/// Go's `reWhitespace` (`[\t\v\f\r ]`): what separates an instruction from its arguments.
pub(crate) fn is_split_space(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Split `s` at runs of [`is_split_space`], at most `limit` pieces (0: no limit; the last piece
/// keeps the rest).
/// Returns each piece with its byte offset. Like Go's `Regexp.Split(s, n)`: a leading separator
/// produces an empty first piece.
pub(crate) fn split_space(s: &str, limit: usize) -> Vec<(&str, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut iter = s.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        if limit != 0 && out.len() + 1 >= limit {
            break;
        }
        if is_split_space(c) {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = iter.peek() {
                if !is_split_space(d) {
                    break;
                }
                end = j + d.len_utf8();
                iter.next();
            }
            out.push((&s[start..i], start));
            start = end;
        }
    }
    out.push((&s[start..], start));
    out
}

/// A flag word found at the start of an instruction's arguments.
pub(crate) struct RawFlag {
    /// The flag with quotes and backslash escapes removed.
    pub text: String,
    /// Byte offset of its first `-`.
    pub at: usize,
}

/// BuildKit's flag extraction: leading `--words` (quotes and `\` escapes removed), stopping at
/// the first word not starting with `--`, or after a bare `--` (which is dropped). Returns the
/// flags and the byte offset where the remaining arguments start.
pub(crate) fn extract_flags(line: &str) -> (Vec<RawFlag>, usize) {
    let trimmed = line.trim_start();
    if !trimmed.starts_with("--") {
        return (Vec::new(), line.len() - trimmed.len());
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut flags = Vec::new();
    let mut i = 0;
    loop {
        while i < chars.len() && chars[i].1.is_whitespace() {
            i += 1;
        }
        if i >= chars.len() {
            return (flags, line.len());
        }
        let (at, c) = chars[i];
        let next_dash = chars.get(i + 1).is_some_and(|&(_, d)| d == '-');
        if c != '-' || !next_dash {
            return (flags, at);
        }
        // Read one word with quote and escape handling.
        let mut word = String::new();
        let mut blank_ok = false;
        let mut quote: Option<char> = None;
        while i < chars.len() {
            let ch = chars[i].1;
            match quote {
                None => {
                    if ch.is_whitespace() {
                        break;
                    }
                    if ch == '\'' || ch == '"' {
                        quote = Some(ch);
                        blank_ok = true;
                    } else if ch == '\\' {
                        if i + 1 < chars.len() {
                            i += 1;
                            word.push(chars[i].1);
                        }
                    } else {
                        word.push(ch);
                    }
                }
                Some(q) => {
                    if ch == q {
                        quote = None;
                    } else if ch == '\\' {
                        if i + 1 < chars.len() {
                            i += 1;
                            word.push(chars[i].1);
                        } else {
                            quote = None;
                        }
                    } else {
                        word.push(ch);
                    }
                }
            }
            i += 1;
        }
        if word == "--" {
            let rest = chars.get(i).map_or(line.len(), |&(o, _)| o);
            return (flags, rest);
        }
        if blank_ok || !word.is_empty() {
            flags.push(RawFlag { text: word, at });
        }
    }
}

/// BuildKit's `parseWords`: split at unquoted whitespace, keeping quotes and escapes in the
/// words (an escape character at the very end is dropped). Returns words with byte offsets.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<(String, usize)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut word_at = 0;
    let mut in_word = false;
    let mut blank_ok = false;
    let mut quote: Option<char> = None;
    let mut iter = rest.char_indices().peekable();
    while let Some((at, ch)) = iter.next() {
        match quote {
            None => {
                if ch.is_whitespace() {
                    if in_word && (blank_ok || !word.is_empty()) {
                        words.push((std::mem::take(&mut word), word_at));
                    }
                    in_word = false;
                    blank_ok = false;
                    continue;
                }
                if !in_word {
                    in_word = true;
                    word_at = at;
                }
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    blank_ok = true;
                }
                word.push(ch);
                if ch == escape {
                    match iter.next() {
                        Some((_, next)) => word.push(next),
                        // An escape character at the very end is dropped.
                        None => {
                            word.pop();
                        }
                    }
                }
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                }
                word.push(ch);
                if ch == escape && q != '\'' {
                    match iter.next() {
                        Some((_, next)) => word.push(next),
                        None => {
                            word.pop();
                            quote = None;
                        }
                    }
                }
            }
        }
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push((word, word_at));
    }
    words
}

/// A `<<NAME` marker found in a RUN/COPY/ADD line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HeredocMarker {
    pub name: String,
    pub expand: bool,
    pub chomp: bool,
    pub fd: Option<u32>,
    /// Byte offset of the word holding the marker.
    pub at: usize,
    /// Byte length of that word.
    pub len: usize,
}

/// Find heredoc markers the way BuildKit does: split the line into shell words (quotes and
/// backslash escapes kept raw), and take every word of the form `[digits]<<[-]NAME` where NAME
/// contains no `<` and is a single word once unquoted.
pub(crate) fn heredoc_markers(line: &str) -> Vec<HeredocMarker> {
    let mut out = Vec::new();
    for (word, at) in raw_shell_words(line) {
        let digits_len = word.bytes().take_while(u8::is_ascii_digit).count();
        let Some(rest) = word[digits_len..].strip_prefix("<<") else {
            continue;
        };
        let (chomp, rest) = match rest.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if rest.is_empty() || rest.contains('<') {
            continue;
        }
        let Some((name, quoted)) = unquote_single_word(rest) else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        let fd = if digits_len > 0 {
            word[..digits_len].parse().ok()
        } else {
            None
        };
        out.push(HeredocMarker {
            name,
            expand: !quoted,
            chomp,
            fd,
            at,
            len: word.len(),
        });
    }
    out
}

/// Shell words with quotes and backslash escapes kept raw, split at unquoted whitespace.
fn raw_shell_words(line: &str) -> Vec<(&str, usize)> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut quote: Option<char> = None;
    let mut iter = line.char_indices();
    while let Some((i, c)) = iter.next() {
        match quote {
            Some('\'') => {
                if c == '\'' {
                    quote = None;
                }
            }
            Some(q) => {
                if c == '\\' {
                    iter.next();
                } else if c == q {
                    quote = None;
                }
            }
            None => {
                if c.is_whitespace() {
                    if let Some(s) = start.take() {
                        out.push((&line[s..i], s));
                    }
                    continue;
                }
                if start.is_none() {
                    start = Some(i);
                }
                if c == '\\' {
                    iter.next();
                } else if c == '\'' || c == '"' {
                    quote = Some(c);
                }
            }
        }
    }
    if let Some(s) = start {
        out.push((&line[s..], s));
    }
    out
}

/// Remove shell quoting from a heredoc name. Returns the name and whether any quoting was
/// present, or `None` if unquoting yields more than one word (unquoted whitespace) or an
/// unterminated quote.
fn unquote_single_word(raw: &str) -> Option<(String, bool)> {
    let mut out = String::new();
    let mut quoted = false;
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        d => out.push(d),
                    }
                }
            }
            '"' => {
                quoted = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => out.push(chars.next()?),
                        d => out.push(d),
                    }
                }
            }
            '\\' => {
                if let Some(d) = chars.next() {
                    out.push(d);
                }
            }
            c if c.is_whitespace() => return None,
            c => out.push(c),
        }
    }
    Some((out, quoted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        parse_words(s, '\\').into_iter().map(|(w, _)| w).collect()
    }

    #[test]
    fn parse_words_keeps_quotes_and_escapes() {
        assert_eq!(words(r#"abc="123 456" def"#), [r#"abc="123 456""#, "def"]);
        assert_eq!(words(r"name=value\ value2 x"), [r"name=value\ value2", "x"]);
        assert_eq!(words(r#"name='a\'b'' z"#), [r"name='a\'b''", "z"]);
        assert_eq!(words("a \\"), ["a"]);
        assert_eq!(words("\"\" ''"), ["\"\"", "''"]);
        assert_eq!(
            parse_words("  x  y", '\\'),
            [("x".to_owned(), 2), ("y".to_owned(), 5)]
        );
    }

    #[test]
    fn flags_stop_at_first_plain_word() {
        let (f, rest) = extract_flags(r#"--a=1 --b="x y" --c -- --d e"#);
        let t: Vec<_> = f.iter().map(|f| (f.text.as_str(), f.at)).collect();
        assert_eq!(t, [("--a=1", 0), ("--b=x y", 6), ("--c", 16)]);
        assert_eq!(&r#"--a=1 --b="x y" --c -- --d e"#[rest..], " --d e");
        let (f, rest) = extract_flags("--doit");
        assert_eq!(f.len(), 1);
        assert_eq!(rest, 6);
        let (f, rest) = extract_flags("-x --y");
        assert!(f.is_empty());
        assert_eq!(rest, 0);
    }

    #[test]
    fn split_space_like_go() {
        assert_eq!(split_space("a  b c", 2), [("a", 0), ("b c", 3)]);
        assert_eq!(split_space("a", 2), [("a", 0)]);
        assert_eq!(split_space("a\u{a0}b c", 0), [("a\u{a0}b", 0), ("c", 5)]);
    }

    #[test]
    fn heredoc_markers_like_buildkit() {
        let m = heredoc_markers(r#"RUN python3 <<EOF <<-"E2" 3<<'x' "<<no" a<<no <<"#);
        let got: Vec<_> = m
            .iter()
            .map(|m| (m.name.as_str(), m.expand, m.chomp, m.fd))
            .collect();
        assert_eq!(
            got,
            [
                ("EOF", true, false, None),
                ("E2", false, true, None),
                ("x", false, false, Some(3))
            ]
        );
        assert_eq!(m[0].at, 12);
        assert!(heredoc_markers("RUN <<\"a b\"").len() == 1);
        assert!(heredoc_markers("RUN <<a<b").is_empty());
    }
}
