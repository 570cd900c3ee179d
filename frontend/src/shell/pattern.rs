//! Glob-style patterns of `${V#p}`, `${V%p}` and `${V/p/r}`, matched as BuildKit matches them.
//!
//! BuildKit turns a pattern into a Go regular expression: `*` is `.*` (greedy) or `.*?` (lazy),
//! `?` is `.`, escapes `\*`, `\?`, `\\` are literal, `\}` and `\/` drop the backslash, every other
//! escape is an error, and there are no bracket expressions. Go's `.` does not match `\n`, so
//! neither `*` nor `?` crosses a newline. Matches follow the regex's leftmost-first priority, which
//! this module reproduces with a Pike VM (as Go's own engine does), so a search costs
//! `O(pattern × text)` steps and never backtracks.

/// One element of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// A character matched literally.
    Literal(char),
    /// `?`: any character but `\n`.
    Any,
    /// `*`: any run of characters without `\n`.
    Star,
}

/// A parse failure: the character after an invalid `\`, `None` when the pattern ends with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidEscape(pub(crate) Option<char>);

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    tokens: Vec<Token>,
}

impl Pattern {
    /// Parses `source` (escapes kept by the lexer) into tokens.
    pub(crate) fn parse(source: &str) -> Result<Self, InvalidEscape> {
        let mut tokens = Vec::with_capacity(source.len());
        let mut chars = source.chars();
        while let Some(ch) = chars.next() {
            let token = match ch {
                '*' => Token::Star,
                '?' => Token::Any,
                '\\' => match chars.next() {
                    Some(c @ ('*' | '?' | '\\' | '}' | '/')) => Token::Literal(c),
                    other => return Err(InvalidEscape(other)),
                },
                c => Token::Literal(c),
            };
            // `**` matches exactly what `*` matches, with the same priorities.
            if token == Token::Star && tokens.last() == Some(&Token::Star) {
                continue;
            }
            tokens.push(token);
        }
        Ok(Self { tokens })
    }

    /// The pattern read right to left (escaped characters stay escaped).
    pub(crate) fn reversed(&self) -> Self {
        let mut tokens = self.tokens.clone();
        tokens.reverse();
        Self { tokens }
    }
}

/// A thread of the simulation: the token it waits on (or `tokens.len()` for a match) and where
/// its match started.
type Thread = (usize, usize);

/// Runs one pattern over one text as a Pike VM: all alternatives advance together, one
/// character at a time, in priority order, so a search costs `O(tokens × text)`.
struct Matcher<'p> {
    tokens: &'p [Token],
    text: &'p [char],
    greedy: bool,
    /// `visited[token] == stamp`: the token is already in the list being built.
    visited: Vec<usize>,
    stamp: usize,
}

impl<'p> Matcher<'p> {
    fn new(pattern: &'p Pattern, text: &'p [char], greedy: bool) -> Self {
        Self {
            tokens: &pattern.tokens,
            text,
            greedy,
            visited: vec![0; pattern.tokens.len() + 1],
            stamp: 0,
        }
    }

    /// Adds the thread at `token` to `list`, following a star's choice in priority order.
    fn add(&mut self, list: &mut Vec<Thread>, token: usize, start: usize) {
        if self.visited[token] == self.stamp {
            return;
        }
        self.visited[token] = self.stamp;
        if self.tokens.get(token) == Some(&Token::Star) {
            // A star is never followed by another star, so this recurses once at most.
            if self.greedy {
                list.push((token, start));
                self.add(list, token + 1, start);
            } else {
                self.add(list, token + 1, start);
                list.push((token, start));
            }
        } else {
            list.push((token, start));
        }
    }

    /// The leftmost-first match: its start and end (character indices). With `anchored`, only
    /// a match starting at `from`; otherwise the leftmost one starting at or after `from`.
    fn find(&mut self, from: usize, anchored: bool) -> Option<(usize, usize)> {
        let mut current: Vec<Thread> = Vec::new();
        let mut next: Vec<Thread> = Vec::new();
        let mut found = None;
        self.stamp += 1;
        for pos in from..=self.text.len() {
            if found.is_none() && (!anchored || pos == from) {
                // The new start has the lowest priority of all.
                self.add(&mut current, 0, pos);
            }
            if current.is_empty() {
                break;
            }
            self.stamp += 1;
            let ch = self.text.get(pos).copied();
            for &(token, start) in &current {
                let target = match (self.tokens.get(token), ch) {
                    (None, _) => {
                        // A match: every thread after this one has lower priority.
                        found = Some((start, pos));
                        break;
                    }
                    (Some(Token::Literal(want)), Some(c)) if *want == c => token + 1,
                    (Some(Token::Any), Some(c)) if c != '\n' => token + 1,
                    (Some(Token::Star), Some(c)) if c != '\n' => token,
                    _ => continue,
                };
                self.add(&mut next, target, start);
            }
            std::mem::swap(&mut current, &mut next);
            next.clear();
        }
        found
    }
}

/// `${V#p}` / `${V##p}`: `value` without its shortest (`greedy == false`) or longest prefix
/// matching `pattern`; unchanged when nothing matches.
pub(crate) fn trim_prefix(pattern: &Pattern, value: &str, greedy: bool) -> String {
    let text: Vec<char> = value.chars().collect();
    match Matcher::new(pattern, &text, greedy).find(0, true) {
        Some((_, end)) => text[end..].iter().collect(),
        None => value.to_owned(),
    }
}

/// `${V%p}` / `${V%%p}`: `value` without its shortest or longest suffix matching `pattern`.
pub(crate) fn trim_suffix(pattern: &Pattern, value: &str, greedy: bool) -> String {
    // As BuildKit does: reverse both and trim a prefix.
    let reversed = pattern.reversed();
    let text: Vec<char> = value.chars().rev().collect();
    match Matcher::new(&reversed, &text, greedy).find(0, true) {
        Some((_, end)) => text[end..].iter().rev().collect(),
        None => value.to_owned(),
    }
}

/// `${V/p/r}` (`all == false`) and `${V//p/r}`: replaces the leftmost (or every) greedy match
/// of `pattern` in `value`.
///
/// Like BuildKit (Go's `Regexp.ReplaceAllString`), replacing every match expands `$0`/`${0}` in
/// `replacement` to the match, other `$name` references to nothing, and `$$` to `$`; a single
/// replacement inserts `replacement` verbatim. An empty match right after a match is skipped.
pub(crate) fn replace(
    pattern: &Pattern,
    value: &str,
    replacement: &str,
    all: bool,
    limit: usize,
) -> Option<String> {
    let text: Vec<char> = value.chars().collect();
    let mut matcher = Matcher::new(pattern, &text, true);
    let find_from = |matcher: &mut Matcher<'_>, from: usize| matcher.find(from, false);
    let slice = |from: usize, to: usize| text[from..to].iter().collect::<String>();

    if !all {
        return match find_from(&mut matcher, 0) {
            Some((start, end)) => {
                // Both parts are within the limit already: at most twice that is built.
                let mut out = slice(0, start);
                out.push_str(replacement);
                out.push_str(&slice(end, text.len()));
                (out.len() <= limit).then_some(out)
            }
            None => Some(value.to_owned()),
        };
    }

    let mut out = String::with_capacity(value.len().min(limit));
    let (mut last_end, mut search) = (0, 0);
    while search <= text.len() {
        let Some((start, end)) = find_from(&mut matcher, search) else {
            break;
        };
        out.push_str(&slice(last_end, start));
        if (end > last_end || start == 0)
            && !expand_template(&mut out, replacement, &slice(start, end), limit)
        {
            return None;
        }
        if out.len() > limit {
            return None;
        }
        last_end = end;
        search = if search + 1 > end { search + 1 } else { end };
    }
    out.push_str(&slice(last_end, text.len()));
    (out.len() <= limit).then_some(out)
}

/// Appends `template` to `out` as Go's `Regexp.Expand` does for a pattern with no groups but
/// the whole match (`$0`).
///
/// Returns `false`, leaving `out` unfinished, as soon as `out` would pass `limit` bytes.
fn expand_template(out: &mut String, template: &str, whole: &str, limit: usize) -> bool {
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        rest = &rest[dollar + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let (braced, body) = match rest.strip_prefix('{') {
            Some(body) => (true, body),
            None => (false, rest),
        };
        let name_len = body
            .char_indices()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
            .map_or(body.len(), |(i, _)| i);
        let name = &body[..name_len];
        let after = &body[name_len..];
        let after = match (braced, after.strip_prefix('}')) {
            (false, _) => Some(after),
            (true, closed) => closed,
        };
        match after {
            Some(after) if !name.is_empty() => {
                // Only group 0 exists; `0` with no leading zeros names it.
                if name == "0" {
                    if out.len() + whole.len() > limit {
                        return false;
                    }
                    out.push_str(whole);
                }
                rest = after;
            }
            // Malformed reference: the `$` is literal.
            _ => out.push('$'),
        }
    }
    out.push_str(rest);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(source: &str) -> Pattern {
        match Pattern::parse(source) {
            Ok(pattern) => pattern,
            Err(e) => panic!("pattern {source:?}: {e:?}"),
        }
    }

    #[test]
    fn prefix_shortest_and_longest() {
        assert_eq!(
            trim_prefix(&p("*/"), "/usr/local/bin", false),
            "usr/local/bin"
        );
        assert_eq!(trim_prefix(&p("*/"), "/usr/local/bin", true), "bin");
        assert_eq!(trim_prefix(&p("a?c"), "abcd", false), "d");
        assert_eq!(trim_prefix(&p("x"), "abc", false), "abc");
        assert_eq!(trim_prefix(&p(""), "abc", true), "abc");
        assert_eq!(trim_prefix(&p("*"), "abc", true), "");
        assert_eq!(trim_prefix(&p("*"), "abc", false), "abc");
    }

    #[test]
    fn suffix_shortest_and_longest() {
        assert_eq!(trim_suffix(&p(".*"), "file.tar.gz", false), "file.tar");
        assert_eq!(trim_suffix(&p(".*"), "file.tar.gz", true), "file");
        assert_eq!(trim_suffix(&p("\\*"), "a*", false), "a");
        assert_eq!(trim_suffix(&p("z"), "abc", false), "abc");
    }

    #[test]
    fn wildcards_do_not_cross_newlines() {
        assert_eq!(trim_prefix(&p("*b"), "a\nb", true), "a\nb");
        assert_eq!(trim_prefix(&p("a?b"), "a\nb", true), "a\nb");
        assert_eq!(trim_prefix(&p("a\n*"), "a\nbc", true), "");
    }

    #[test]
    fn escapes() {
        assert_eq!(
            p("\\}\\/").tokens,
            [Token::Literal('}'), Token::Literal('/')]
        );
        assert_eq!(Pattern::parse("a\\b"), Err(InvalidEscape(Some('b'))));
        assert_eq!(Pattern::parse("a\\"), Err(InvalidEscape(None)));
        assert_eq!(trim_prefix(&p("\\?"), "?x", false), "x");
        assert_eq!(trim_prefix(&p("\\?"), "ax", false), "ax");
    }

    fn replace_all(pattern: &Pattern, value: &str, replacement: &str, all: bool) -> String {
        replace(pattern, value, replacement, all, usize::MAX).unwrap_or_default()
    }

    #[test]
    fn replacement_stops_at_the_limit() {
        let value = "a".repeat(1000);
        let x = "x".repeat(1000);
        assert_eq!(replace(&p("a"), &value, &x, true, 10_000), None);
        assert_eq!(replace(&p("a"), &value, &x, false, 1_998), None);
        let first = replace(&p("a"), &value, &x, false, 1_999).map(|s| s.len());
        assert_eq!(first, Some(1_999));
        let fits = replace(&p("a"), &value, "b", true, 1_000);
        assert_eq!(fits, Some("b".repeat(1000)));
        // One match, copied a thousand times by the template: stops before the copies.
        let template = "$0".repeat(1000);
        assert_eq!(replace(&p("*"), &value, &template, true, 100_000), None);
    }

    #[test]
    fn replace_first_and_all() {
        assert_eq!(replace_all(&p("o"), "foo boo", "0", false), "f0o boo");
        assert_eq!(replace_all(&p("o"), "foo boo", "0", true), "f00 b00");
        assert_eq!(replace_all(&p("o*"), "foo boo", "X", false), "fX");
        assert_eq!(replace_all(&p("z"), "foo", "X", true), "foo");
        assert_eq!(replace_all(&p(""), "ab", "-", true), "-a-b-");
        assert_eq!(replace_all(&p("b*"), "abc", "-", true), "a-");
        assert_eq!(replace_all(&p("b?"), "abcbd", "-", true), "a--");
        assert_eq!(replace_all(&p("한"), "한국어한", "K", true), "K국어K");
    }

    #[test]
    fn replace_all_expands_go_templates() {
        assert_eq!(replace_all(&p("o"), "fo", "[$0]", true), "f[o]");
        assert_eq!(replace_all(&p("o"), "fo", "[${0}]", true), "f[o]");
        assert_eq!(replace_all(&p("o"), "fo", "$$", true), "f$");
        assert_eq!(replace_all(&p("o"), "fo", "$1x", true), "f");
        assert_eq!(replace_all(&p("o"), "fo", "${1}x", true), "fx");
        assert_eq!(replace_all(&p("o"), "fo", "${0", true), "f${0");
        assert_eq!(replace_all(&p("o"), "fo", "$-", true), "f$-");
        assert_eq!(replace_all(&p("o"), "fo", "$", true), "f$");
        assert_eq!(replace_all(&p("o"), "fo", "$0", false), "f$0");
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let value = "a".repeat(2000);
        let pattern = p(&"*a".repeat(200));
        let start = std::time::Instant::now();
        assert_eq!(trim_prefix(&pattern, &value, false), "a".repeat(1800));
        let unmatched = p(&format!("{}b", "*a".repeat(200)));
        assert_eq!(trim_prefix(&unmatched, &value, true), value);
        assert_eq!(replace_all(&unmatched, &value, "x", true), value);
        assert!(start.elapsed().as_secs() < 5, "took {:?}", start.elapsed());
    }
}
