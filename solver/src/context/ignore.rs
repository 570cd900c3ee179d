//! `.dockerignore` matching with moby's semantics (its `patternmatcher` and `ignorefile`
//! packages, reimplemented from their documented behaviour): Go `filepath.Match` globs, `**`
//! for any number of directories, `!` exceptions, the last matching pattern wins, and a pattern
//! that matches a directory excludes everything under it. The same matcher serves
//! `COPY --exclude`.

use super::glob::{self, BadPattern, Token};
use std::path::{Path, PathBuf};

/// How moby decides a pattern matches, chosen when the pattern is compiled.
#[derive(Debug, Clone)]
enum Kind {
    /// No wildcard: the path equals the pattern.
    Exact,
    /// `prefix**`: the path starts with `prefix`.
    Prefix(String),
    /// `**suffix` (suffix without wildcards): the path ends with `suffix`.
    Suffix(String),
    /// Anything else: an anchored glob over the whole path.
    Glob(Vec<Token>),
}

/// One compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    exclusion: bool,
    kind: Kind,
    /// `/`-separated segments of the pattern, for the descend decision.
    segments: Vec<String>,
}

impl Pattern {
    /// Compiles one pattern as moby's `NewPatternMatcher` does: trimmed, `filepath.Clean`ed, a
    /// leading `!` marks an exception.
    pub fn new(raw: &str) -> Result<Self, BadPattern> {
        let mut text = glob::clean(raw.trim());
        let exclusion = text.starts_with('!');
        if exclusion {
            if text.len() == 1 {
                return Err(BadPattern(raw.to_string()));
            }
            text.remove(0);
        }
        // As `ignorefile.ReadAll` does; paths we match never start with `/` anyway.
        if text.len() > 1 && text.starts_with('/') {
            text.remove(0);
        }
        // Syntax check as moby does (filepath.Match against ".").
        glob::compile_segment(&text)?;
        let kind = compile(&text)?;
        let segments = text.split('/').map(str::to_string).collect();
        Ok(Pattern {
            text,
            exclusion,
            kind,
            segments,
        })
    }

    /// The cleaned pattern without its `!`.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether this is a `!` exception (re-inclusion).
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    /// Whether the pattern matches `path` itself (a relative, `/`-separated, clean path).
    pub fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|s| s == path)
            }
            Kind::Glob(tokens) => glob::match_tokens(tokens, path),
        }
    }

    /// Whether the pattern, or an ancestor-match of it, could match `dir` or something below
    /// `dir`. Conservative: `true` when unsure (a `**` segment).
    fn may_match_within(&self, dir: &str) -> bool {
        let mut pattern_segments = self.segments.iter();
        for dir_segment in dir.split('/') {
            match pattern_segments.next() {
                // The pattern matched an ancestor of (or) `dir`: everything below is affected.
                None => return true,
                Some(p) if p.contains("**") => return true,
                Some(p) => {
                    if !glob::glob_match(p, dir_segment).unwrap_or(true) {
                        return false;
                    }
                }
            }
        }
        true
    }
}

/// Translates a cleaned pattern into moby's match kinds (`Pattern.compile`).
fn compile(text: &str) -> Result<Kind, BadPattern> {
    #[derive(PartialEq)]
    enum State {
        Exact,
        Prefix,
        Suffix,
        Glob,
    }
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut state = State::Exact;
    let mut i = 0;
    let mut first = true;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if state == State::Exact {
                        state = State::Prefix;
                    } else {
                        tokens.push(Token::AnyTail);
                        state = State::Glob;
                    }
                } else {
                    tokens.push(Token::DirStar);
                    state = State::Glob;
                }
                if first {
                    state = State::Suffix;
                }
            }
            '*' => {
                tokens.push(Token::Star);
                state = State::Glob;
                i += 1;
            }
            '?' => {
                tokens.push(Token::Quest);
                state = State::Glob;
                i += 1;
            }
            '\\' => match chars.get(i + 1) {
                Some(&next) => {
                    tokens.push(Token::Lit(next));
                    state = State::Glob;
                    i += 2;
                }
                None => {
                    tokens.push(Token::Lit('\\'));
                    i += 1;
                }
            },
            '[' => {
                let (tok, next) = glob::parse_class(&chars, i + 1, text)?;
                tokens.push(tok);
                state = State::Glob;
                i = next;
            }
            c => {
                tokens.push(Token::Lit(c));
                i += 1;
            }
        }
        first = false;
    }
    Ok(match state {
        State::Exact => Kind::Exact,
        State::Prefix => Kind::Prefix(text[..text.len() - 2].to_string()),
        State::Suffix => {
            // A leading `**` whose remainder turned out to have wildcards compiles as a glob.
            if tokens.iter().skip(1).all(|t| matches!(t, Token::Lit(_))) {
                Kind::Suffix(text[2..].to_string())
            } else {
                Kind::Glob(tokens)
            }
        }
        State::Glob => Kind::Glob(tokens),
    })
}

/// A list of patterns applied in order; the last one that matches decides.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl Matcher {
    /// Compiles patterns in order; blank ones are skipped.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, BadPattern> {
        let mut out = Matcher::default();
        for p in patterns {
            if p.as_ref().trim().is_empty() {
                continue;
            }
            let pattern = Pattern::new(p.as_ref())?;
            out.exclusions |= pattern.exclusion;
            out.patterns.push(pattern);
        }
        Ok(out)
    }

    /// Parses `.dockerignore` text and compiles it.
    pub fn from_ignore_text(text: &str) -> Result<Self, BadPattern> {
        Self::new(&parse_ignore_file(text))
    }

    /// The compiled patterns, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether there are no patterns (nothing is excluded).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether any pattern is a `!` exception.
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    /// Whether `path` (relative to the context root, `/`-separated) is excluded: the last
    /// pattern matching the path or one of its parent directories decides (moby's
    /// `MatchesOrParentMatches`).
    pub fn matches(&self, path: &str) -> bool {
        let path = path.trim_start_matches("./").trim_start_matches('/');
        let parent_ends: Vec<usize> = path.match_indices('/').map(|(i, _)| i).collect();
        let mut matched = false;
        for pattern in &self.patterns {
            // An exception only matters once something matched, an exclusion only before.
            if pattern.exclusion != matched {
                continue;
            }
            let hit = pattern.matches(path)
                || parent_ends.iter().any(|&end| pattern.matches(&path[..end]));
            if hit {
                matched = !pattern.exclusion;
            }
        }
        matched
    }

    /// For an excluded directory `dir`: whether some `!` exception could re-include something
    /// below it, so a walk must descend into it rather than skip the whole subtree.
    pub fn may_reinclude_within(&self, dir: &str) -> bool {
        self.exclusions
            && self
                .patterns
                .iter()
                .any(|p| p.exclusion && p.may_match_within(dir))
    }
}

/// Reads `.dockerignore` text as moby's `ignorefile.ReadAll`: a UTF-8 BOM is dropped, lines
/// starting with `#` are comments, lines are trimmed, blank ones skipped, each pattern is
/// `filepath.Clean`ed with a leading `/` removed, `!` kept in front.
pub fn parse_ignore_file(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = glob::clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        out.push(if invert {
            format!("!{cleaned}")
        } else {
            cleaned
        });
    }
    out
}

/// Which ignore file applies to a build: `<Dockerfile>.dockerignore` beside the Dockerfile wins
/// over `<context>/.dockerignore`; `None` when neither exists.
pub fn find_ignore_file(context: &Path, dockerfile: &Path) -> Option<PathBuf> {
    if let Some(name) = dockerfile.file_name() {
        let mut specific = name.to_os_string();
        specific.push(".dockerignore");
        let candidate = dockerfile.with_file_name(specific);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let candidate = context.join(".dockerignore");
    candidate.is_file().then_some(candidate)
}

/// The ignore patterns of a build (for [`LocalSource::exclude`](crate::graph::LocalSource)):
/// the applicable ignore file (see [`find_ignore_file`]) parsed, or none.
pub fn read_ignore_patterns(
    context: &Path,
    dockerfile: &Path,
) -> Result<Vec<String>, super::Error> {
    let Some(file) = find_ignore_file(context, dockerfile) else {
        return Ok(Vec::new());
    };
    let text = fs_err::read_to_string(&file).map_err(|e| super::Error::Io {
        op: "read ignore file",
        path: file.clone(),
        source: e,
    })?;
    let patterns = parse_ignore_file(&text);
    // Reject bad patterns here, where the file can be named.
    Matcher::new(&patterns)?;
    Ok(patterns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excluded(patterns: &[&str], path: &str) -> bool {
        Matcher::new(patterns)
            .expect("valid patterns")
            .matches(path)
    }

    #[test]
    fn pattern_table() {
        // (patterns, path, excluded)
        let table: &[(&[&str], &str, bool)] = &[
            (&["*"], "fileutils.go", true),
            (&["*.go"], "fileutils.go", true),
            (&["*.go"], "src/fileutils.go", false),
            (&["**/*.go"], "src/fileutils.go", true),
            (&["**/*.go"], "fileutils.go", true),
            (&["**/*.go"], "a/b/c/d.go", true),
            (&["**/*.go"], "a/b/c/d.rs", false),
            (&["docs"], "docs/README.md", true),
            (&["docs"], "docs", true),
            (&["docs"], "docsx", false),
            (&["docs/"], "docs/a", true),
            (&["/docs"], "docs/a", true),
            (&["./docs"], "docs/a", true),
            (&["docs/*.md"], "docs/a.md", true),
            (&["docs/*.md"], "docs/sub/a.md", false),
            (&["*/temp*"], "somedir/temporary.txt", true),
            (&["*/temp*"], "somedir/temp", true),
            (&["*/temp*"], "temp", false),
            (&["*/*/temp*"], "a/b/temp.x", true),
            (&["temp?"], "tempa", true),
            (&["temp?"], "temp", false),
            (&["temp?"], "temp/", false),
            (&["**"], "anything/at/all", true),
            (&["dir/**"], "dir/file", true),
            (&["dir/**"], "dir/a/b", true),
            (&["dir/**"], "dirx/a", false),
            (&["**/dir"], "dir", true),
            (&["**/dir"], "a/b/dir", true),
            (&["**/dir"], "a/b/dir/c", true),
            (&["**/dir"], "a/bdir", false),
            (&["a/**/b"], "a/b", true),
            (&["a/**/b"], "a/x/b", true),
            (&["a/**/b"], "a/x/y/b", true),
            (&["a/**/b"], "a/xb", false),
            (&["a/**/*.txt"], "a/x/y.txt", true),
            (&["a/**/*.txt"], "a/y.txt", true),
            (&["a/**/*.txt"], "b/y.txt", false),
            (&["[a-c]*"], "banana", true),
            (&["[a-c]*"], "dog", false),
            (&["[^a-c]*"], "dog", true),
            (&["\\*"], "*", true),
            (&["\\*"], "a", false),
            (&["file\\?"], "file?", true),
            (&["file\\?"], "filex", false),
            (&["a.b"], "axb", false),
            (&["a+b"], "a+b", true),
            (&["(x)"], "(x)", true),
            (&["{a,b}"], "a", false),
            // Exceptions, last match wins.
            (&["*.md", "!README.md"], "README.md", false),
            (&["*.md", "!README.md"], "CHANGES.md", true),
            (&["!README.md", "*.md"], "README.md", true),
            (&["*", "!keep"], "keep", false),
            (&["*", "!keep"], "keep/sub/file", false),
            (&["*", "!keep"], "other", true),
            (&["docs", "!docs/keep.md"], "docs/keep.md", false),
            (&["docs", "!docs/keep.md"], "docs/other.md", true),
            (
                &["docs", "!docs/keep.md", "docs/keep.md"],
                "docs/keep.md",
                true,
            ),
            (&["**", "!**/*.py"], "a/b/c.py", false),
            (&["**", "!**/*.py"], "a/b/c.rs", true),
            (&["a", "!a/b", "a/b/c"], "a/b/c/d", true),
            (&["a", "!a/b", "a/b/c"], "a/b/x", false),
            // Cleaning.
            (&["a/../b"], "b", true),
            (&["a//b/"], "a/b", true),
            (&["  spaced  "], "spaced", true),
            (&["**/.foo"], ".foo", true),
            (&["**/.foo"], "bar.foo", false),
            (&["**/foo/bar"], "foo/bar", true),
            (&["**/foo/bar"], "x/foo/bar", true),
            (&["abc/**"], "abc", false),
            (&["abc/**"], "abc/def/ghi", true),
            (&["pkg/**/*.txt"], "pkg/a/b/c.txt", true),
            (&["a(b)c/def"], "a(b)c/def", true),
            (&["a.|)$(}+{bc"], "a.|)$(}+{bc", true),
            (&["\\\\"], "\\", true),
            (&["*.go", "!**/keep.go"], "a/b/keep.go", false),
            // Nothing.
            (&[], "x", false),
        ];
        for (patterns, path, want) in table {
            assert_eq!(
                excluded(patterns, path),
                *want,
                "patterns {patterns:?} on {path:?}"
            );
        }
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(Matcher::new(&["["]).is_err());
        assert!(Matcher::new(&["a[b"]).is_err());
        assert!(Matcher::new(&["!"]).is_err());
        assert!(Matcher::new(&["[]"]).is_err());
    }

    #[test]
    fn ignore_file_parsing() {
        let text = "\u{feff}# comment\n\n  *.log  \n!important.log\n/abs/path/\n./rel\n! spaced\n#x\n a/../b\n/\n";
        assert_eq!(
            parse_ignore_file(text),
            vec![
                "*.log",
                "!important.log",
                "abs/path",
                "rel",
                "!spaced",
                "b",
                "/"
            ]
        );
        let m = Matcher::from_ignore_text(text).expect("parses");
        assert!(m.matches("debug.log"));
        assert!(!m.matches("important.log"));
        assert!(m.matches("abs/path/x"));
        assert!(m.matches("rel"));
        assert!(!m.matches("other"));
    }

    #[test]
    fn reinclusion_decides_descent() {
        let m = Matcher::new(&["docs", "!docs/keep.md"]).expect("valid");
        assert!(m.matches("docs"));
        assert!(m.may_reinclude_within("docs"));
        let m = Matcher::new(&["node_modules", "!src/keep"]).expect("valid");
        assert!(!m.may_reinclude_within("node_modules"));
        let m = Matcher::new(&["*", "!**/*.py"]).expect("valid");
        assert!(m.may_reinclude_within("deep/dir"));
        let m = Matcher::new(&["a", "!a/*/keep"]).expect("valid");
        assert!(m.may_reinclude_within("a"));
        assert!(m.may_reinclude_within("a/x"));
        assert!(!m.may_reinclude_within("a/x/other"));
        let m = Matcher::new(&["a"]).expect("valid");
        assert!(!m.may_reinclude_within("a"));
    }

    #[test]
    fn dockerfile_specific_ignore_file_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = dir.path();
        let dockerfile = ctx.join("app.Dockerfile");
        assert_eq!(find_ignore_file(ctx, &dockerfile), None);
        fs_err::write(ctx.join(".dockerignore"), "a").expect("write");
        assert_eq!(
            find_ignore_file(ctx, &dockerfile),
            Some(ctx.join(".dockerignore"))
        );
        fs_err::write(ctx.join("app.Dockerfile.dockerignore"), "# c\n/b/\n!b/keep").expect("write");
        assert_eq!(
            find_ignore_file(ctx, &dockerfile),
            Some(ctx.join("app.Dockerfile.dockerignore"))
        );
        assert_eq!(
            read_ignore_patterns(ctx, &dockerfile).expect("read"),
            ["b", "!b/keep"]
        );
        assert_eq!(
            read_ignore_patterns(ctx, &ctx.join("Dockerfile")).expect("read"),
            ["a"]
        );
    }
}
