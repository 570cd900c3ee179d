//! Go's `path/filepath` semantics that Docker builds on: `Match` (shell globs per path segment)
//! and `Clean` (lexical normalization). Both are written from Go's documented behaviour.

/// A pattern that Go's `filepath.Match` rejects (`ErrBadPattern`): an unclosed or empty `[...]`
/// class, a bad range, or a trailing `\`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("syntax error in pattern {0:?}")]
pub struct BadPattern(pub String);

/// One compiled element of a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    /// A literal character.
    Lit(char),
    /// `*`: any run of characters other than `/`.
    Star,
    /// `?`: one character other than `/`.
    Quest,
    /// `[...]` / `[^...]`: one character in (or not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// moby's `**` followed by more pattern: `(.*/)?` (nothing, or anything ending with `/`).
    DirStar,
    /// moby's trailing `**` after other wildcards: `.*`.
    AnyTail,
}

/// Parses a `[...]` class starting after the `[`; returns the token and the index after `]`.
pub(crate) fn parse_class(
    chars: &[char],
    mut i: usize,
    whole: &str,
) -> Result<(Token, usize), BadPattern> {
    let bad = || BadPattern(whole.to_string());
    let mut negated = false;
    if chars.get(i) == Some(&'^') {
        negated = true;
        i += 1;
    }
    let mut ranges = Vec::new();
    let read_char = |i: &mut usize| -> Result<char, BadPattern> {
        match chars.get(*i) {
            None | Some('-') | Some(']') => Err(bad()),
            Some('\\') => {
                *i += 1;
                let c = *chars.get(*i).ok_or_else(bad)?;
                *i += 1;
                Ok(c)
            }
            Some(&c) => {
                *i += 1;
                Ok(c)
            }
        }
    };
    loop {
        if chars.get(i) == Some(&']') && !ranges.is_empty() {
            return Ok((Token::Class { negated, ranges }, i + 1));
        }
        let lo = read_char(&mut i)?;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') {
            i += 1;
            hi = read_char(&mut i)?;
            if hi < lo {
                return Err(bad());
            }
        }
        ranges.push((lo, hi));
    }
}

/// Compiles a Go `filepath.Match` pattern.
pub(crate) fn compile_segment(pattern: &str) -> Result<Vec<Token>, BadPattern> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => {
                if out.last() != Some(&Token::Star) {
                    out.push(Token::Star);
                }
                i += 1;
            }
            '?' => {
                out.push(Token::Quest);
                i += 1;
            }
            '[' => {
                let (tok, next) = parse_class(&chars, i + 1, pattern)?;
                out.push(tok);
                i = next;
            }
            '\\' => {
                let c = *chars
                    .get(i + 1)
                    .ok_or_else(|| BadPattern(pattern.to_string()))?;
                out.push(Token::Lit(c));
                i += 2;
            }
            c => {
                out.push(Token::Lit(c));
                i += 1;
            }
        }
    }
    Ok(out)
}

fn class_matches(negated: bool, ranges: &[(char, char)], c: char) -> bool {
    ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != negated
}

/// Anchored match of `tokens` against all of `s` (memoized backtracking, linear in
/// `tokens × chars`).
pub(crate) fn match_tokens(tokens: &[Token], s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    let width = chars.len() + 1;
    // 0 = unknown, 1 = false, 2 = true.
    let mut memo = vec![0u8; (tokens.len() + 1) * width];
    go(tokens, &chars, 0, 0, &mut memo, width)
}

fn go(t: &[Token], s: &[char], ti: usize, si: usize, memo: &mut [u8], width: usize) -> bool {
    let key = ti * width + si;
    match memo[key] {
        1 => return false,
        2 => return true,
        _ => {}
    }
    let result = match t.get(ti) {
        None => si == s.len(),
        Some(Token::Lit(c)) => s.get(si) == Some(c) && go(t, s, ti + 1, si + 1, memo, width),
        Some(Token::Quest) => {
            matches!(s.get(si), Some(&c) if c != '/') && go(t, s, ti + 1, si + 1, memo, width)
        }
        Some(Token::Class { negated, ranges }) => {
            matches!(s.get(si), Some(&c) if class_matches(*negated, ranges, c))
                && go(t, s, ti + 1, si + 1, memo, width)
        }
        Some(Token::Star) => {
            let mut k = si;
            loop {
                if go(t, s, ti + 1, k, memo, width) {
                    break true;
                }
                if k >= s.len() || s[k] == '/' {
                    break false;
                }
                k += 1;
            }
        }
        Some(Token::AnyTail) => (si..=s.len()).any(|k| go(t, s, ti + 1, k, memo, width)),
        Some(Token::DirStar) => {
            go(t, s, ti + 1, si, memo, width)
                || (si..s.len()).any(|k| s[k] == '/' && go(t, s, ti + 1, k + 1, memo, width))
        }
    };
    memo[key] = if result { 2 } else { 1 };
    result
}

/// Go's `filepath.Match(pattern, name)`: `*` and `?` never match `/`; `[...]` classes with `^`
/// negation and ranges; `\` escapes the next character.
pub fn glob_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    Ok(match_tokens(&compile_segment(pattern)?, name))
}

/// Whether `s` contains glob meta characters (`*`, `?`, `[`, `\`), as Go's `hasMeta`.
pub fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '\\'])
}

/// Go's `filepath.Clean`: collapses repeated `/`, removes `.` elements and `..` elements with
/// what precedes them (a rooted path's leading `..` are dropped), no trailing `/`; `""` → `"."`.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if matches!(parts.last(), Some(p) if *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_match_table() {
        // (pattern, name, matches) from Go's documented rules.
        let table: &[(&str, &str, bool)] = &[
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ab/c", false),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("*[a-ζ]", "A", false),
            ("a?b", "a/b", false),
            ("a*b", "a/b", false),
            ("[\\]a]", "]", true),
            ("[\\-]", "-", true),
            ("[x\\-]", "x", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("*x", "xxx", true),
            (".*", ".hidden", true),
            ("*", ".hidden", true),
        ];
        for (p, n, want) in table {
            assert_eq!(glob_match(p, n), Ok(*want), "Match({p:?}, {n:?})");
        }
    }

    #[test]
    fn go_match_rejects_bad_patterns() {
        for p in [
            "[", "[^", "[^bc", "a[", "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[z-a]",
        ] {
            assert!(glob_match(p, "a").is_err(), "pattern {p:?} should be bad");
        }
    }

    #[test]
    fn clean_table() {
        let table = [
            ("", "."),
            ("abc", "abc"),
            ("abc/def", "abc/def"),
            ("a/b/c", "a/b/c"),
            (".", "."),
            ("..", ".."),
            ("../..", "../.."),
            ("../../abc", "../../abc"),
            ("/abc", "/abc"),
            ("/", "/"),
            ("abc/", "abc"),
            ("abc/def/", "abc/def"),
            ("a/b/c/", "a/b/c"),
            ("./", "."),
            ("../", ".."),
            ("/abc/", "/abc"),
            ("abc//def//ghi", "abc/def/ghi"),
            ("//abc", "/abc"),
            ("///abc", "/abc"),
            ("abc/./def", "abc/def"),
            ("/./abc/def", "/abc/def"),
            ("abc/.", "abc"),
            ("abc/def/ghi/../jkl", "abc/def/jkl"),
            ("abc/def/../ghi/../jkl", "abc/jkl"),
            ("abc/def/..", "abc"),
            ("abc/def/../..", "."),
            ("/abc/def/../..", "/"),
            ("abc/def/../../..", ".."),
            ("/abc/def/../../..", "/"),
            ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
            ("/../abc", "/abc"),
            ("abc/./../def", "def"),
            ("./abc/def", "abc/def"),
        ];
        for (input, want) in table {
            assert_eq!(clean(input), want, "Clean({input:?})");
        }
    }
}
