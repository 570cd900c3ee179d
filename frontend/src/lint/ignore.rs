//! `.dockerignore` matching for the CopyIgnoredFile rule (moby's `patternmatcher` semantics:
//! `*` and `?` stop at `/`, `**` crosses directories, a pattern that matches a parent directory
//! matches what is inside it).
//!
//! The solver has its own matcher for the context itself; this one only answers "would this
//! source be excluded", and only for files without `!` exceptions (as BuildKit, which does not
//! try to decide those statically).

/// One pattern, as tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A literal character.
    Lit(char),
    /// `?`: one character but `/`.
    One,
    /// `*`: any run of characters without `/`.
    Star,
    /// `**`: any run of characters.
    Deep,
    /// `**/`: nothing, or any run of characters ending in `/`.
    DeepDir,
    /// `[...]`: ranges and singles, negated with `^` or `!`.
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

/// The `.dockerignore` patterns of a build, without exceptions.
#[derive(Debug, Clone, Default)]
pub(crate) struct IgnoreMatcher {
    patterns: Vec<(String, Vec<Token>)>,
}

impl IgnoreMatcher {
    /// A matcher for `patterns`; `None` when there is nothing to check against (no patterns,
    /// or a `!` exception somewhere).
    pub(crate) fn new(patterns: &[String]) -> Option<IgnoreMatcher> {
        let mut out = Vec::new();
        for p in patterns {
            let p = p.trim();
            if p.is_empty() || p.starts_with('#') {
                continue;
            }
            if p.starts_with('!') {
                return None;
            }
            let cleaned = clean(p);
            let cleaned = match cleaned.strip_prefix('/') {
                Some(rest) if !rest.is_empty() => rest.to_owned(),
                _ => cleaned,
            };
            let tokens = tokenize(&cleaned);
            out.push((cleaned, tokens));
        }
        (!out.is_empty()).then_some(IgnoreMatcher { patterns: out })
    }

    /// Whether the whole context root is excluded (`*`, `**` or `**/*`).
    pub(crate) fn root_ignored(&self) -> bool {
        self.patterns
            .iter()
            .any(|(p, _)| matches!(p.as_str(), "*" | "**" | "**/*"))
    }

    /// Whether `path` (cleaned, `/`-separated) or one of its parent directories matches.
    pub(crate) fn matches_or_parent(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        self.patterns.iter().any(|(_, tokens)| {
            if glob(tokens, path) {
                return true;
            }
            (1..parts.len()).any(|i| glob(tokens, &parts[..i].join("/")))
        })
    }
}

pub(crate) use crate::lower::paths::clean;

fn tokenize(p: &str) -> Vec<Token> {
    let chars: Vec<char> = p.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                if chars.get(i + 2) == Some(&'/') {
                    out.push(Token::DeepDir);
                    i += 3;
                } else {
                    out.push(Token::Deep);
                    i += 2;
                }
                continue;
            }
            '*' => out.push(Token::Star),
            '?' => out.push(Token::One),
            '\\' if i + 1 < chars.len() => {
                i += 1;
                out.push(Token::Lit(chars[i]));
            }
            '[' => {
                let mut j = i + 1;
                let negated = matches!(chars.get(j), Some('^' | '!'));
                if negated {
                    j += 1;
                }
                let mut items = Vec::new();
                let mut closed = false;
                while j < chars.len() {
                    let c = chars[j];
                    if c == ']' && (!items.is_empty() || j > i + 1 + usize::from(negated)) {
                        closed = true;
                        break;
                    }
                    let lo = if c == '\\' && j + 1 < chars.len() {
                        j += 1;
                        chars[j]
                    } else {
                        c
                    };
                    if chars.get(j + 1) == Some(&'-') && chars.get(j + 2).is_some_and(|c| *c != ']')
                    {
                        items.push((lo, chars[j + 2]));
                        j += 3;
                    } else {
                        items.push((lo, lo));
                        j += 1;
                    }
                }
                if closed {
                    out.push(Token::Class { negated, items });
                    i = j + 1;
                    continue;
                }
                out.push(Token::Lit('['));
            }
            c => out.push(Token::Lit(c)),
        }
        i += 1;
    }
    out
}

/// Whether `tokens` match all of `text` (dynamic programming: linear in pattern × text).
fn glob(tokens: &[Token], text: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    // can[j]: the tokens so far can match t[..j].
    let mut can = vec![false; t.len() + 1];
    can[0] = true;
    for tok in tokens {
        let mut next = vec![false; t.len() + 1];
        match tok {
            Token::Star | Token::Deep => {
                let mut run = false;
                for j in 0..=t.len() {
                    if can[j] {
                        run = true;
                    }
                    next[j] = run;
                    if *tok == Token::Star && j < t.len() && t[j] == '/' {
                        run = false;
                    }
                }
            }
            Token::DeepDir => {
                for j in 0..=t.len() {
                    if !can[j] {
                        continue;
                    }
                    next[j] = true;
                    for k in j..t.len() {
                        if t[k] == '/' {
                            next[k + 1] = true;
                        }
                    }
                }
            }
            _ => {
                for j in 0..t.len() {
                    if can[j] && single(tok, t[j]) {
                        next[j + 1] = true;
                    }
                }
            }
        }
        can = next;
    }
    can[t.len()]
}

fn single(tok: &Token, c: char) -> bool {
    match tok {
        Token::Lit(l) => *l == c,
        Token::One => c != '/',
        Token::Class { negated, items } => {
            c != '/' && items.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &[&str]) -> IgnoreMatcher {
        IgnoreMatcher::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn patterns_match_like_moby() {
        assert!(m(&["*/tmp/*"]).matches_or_parent("a/tmp/x.txt"));
        assert!(!m(&["*/tmp/*"]).matches_or_parent("tmp/x.txt"));
        assert!(m(&["tmp"]).matches_or_parent("tmp/x/y.txt"));
        assert!(m(&["*.log"]).matches_or_parent("a.log"));
        assert!(!m(&["*.log"]).matches_or_parent("dir/a.log"));
        assert!(m(&["**/*.log"]).matches_or_parent("dir/sub/a.log"));
        assert!(m(&["**/*.log"]).matches_or_parent("a.log"));
        assert!(m(&["/secret"]).matches_or_parent("secret"));
        assert!(m(&["file?.txt"]).matches_or_parent("file1.txt"));
        assert!(m(&["[a-c].txt"]).matches_or_parent("b.txt"));
        assert!(!m(&["[^a-c].txt"]).matches_or_parent("b.txt"));
        assert!(m(&["./build/"]).matches_or_parent("build/out"));
        assert!(!m(&["build"]).matches_or_parent("builder"));
        assert!(IgnoreMatcher::new(&["*.log".into(), "!keep.log".into()]).is_none());
        assert!(IgnoreMatcher::new(&[]).is_none());
        assert!(m(&["**"]).root_ignored() && !m(&["*.log"]).root_ignored());
    }

    #[test]
    fn clean_is_go_clean() {
        assert_eq!(clean("./tmp/a.txt"), "tmp/a.txt");
        assert_eq!(clean("a/../../b"), "../b");
        assert_eq!(clean("/a/../.."), "/");
        assert_eq!(clean("./"), ".");
        assert_eq!(clean("a//b/"), "a/b");
    }
}
