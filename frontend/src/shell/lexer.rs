//! The hand-written lexer: quotes, escapes and `$` substitutions in one pass.

use std::collections::BTreeSet;

use super::env::EnvLookup;
use super::error::ShellError;
use super::pattern::{self, Pattern};

/// How deep `${a:-${b:-...}}` may nest before expansion gives up with [`ShellError::TooDeep`].
pub const MAX_NESTING: usize = 256;

/// The most bytes expanding one word may produce (1 MiB), unless the word as written is already
/// longer: then its own length is the limit. Substitutions can double a word per line
/// (`ARG a2=${a1}${a1}`), so without a limit 40 lines ask for a terabyte; past it expansion stops
/// with [`ShellError::TooLong`] before the text grows further. BuildKit has no such limit.
pub const MAX_WORD_LEN: usize = 1 << 20;

/// The escape character, set by the `# escape=` parser directive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Escape {
    /// `\`, the default.
    #[default]
    Backslash,
    /// `` ` `` (set by ``# escape=` ``), for Windows paths.
    Backtick,
}

impl Escape {
    /// The escape for a directive's character, `None` for anything but `\` and `` ` ``.
    pub fn from_char(ch: char) -> Option<Self> {
        match ch {
            '\\' => Some(Self::Backslash),
            '`' => Some(Self::Backtick),
            _ => None,
        }
    }

    /// The character itself.
    pub fn as_char(self) -> char {
        match self {
            Self::Backslash => '\\',
            Self::Backtick => '`',
        }
    }
}

/// The result of expanding one word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpandResult {
    /// The expanded word (quotes removed, escapes applied, spaces kept).
    pub value: String,
    /// Names of every variable the word referenced, set or not (`$1`, `$@` included).
    pub used: BTreeSet<String>,
    /// The subset of `used` that was unset (BuildKit's "unmatched", for undefined-variable lints).
    pub unset: BTreeSet<String>,
}

/// A word lexer configured with the escape character, as BuildKit's `shell.Lex` is.
///
/// The default settings are those of instruction words; the switches reproduce BuildKit's
/// `SkipProcessQuotes`, `RawQuotes`, `RawEscapes` and `SkipUnsetEnv` for callers that need them
/// (heredoc content, heredoc detection, display names of `RUN` steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: Escape,
    skip_quotes: bool,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_unset: bool,
    max_len: usize,
}

impl Default for Lexer {
    fn default() -> Self {
        Self {
            escape: Escape::default(),
            skip_quotes: false,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset: false,
            max_len: MAX_WORD_LEN,
        }
    }
}

impl Lexer {
    /// A lexer for words of instructions: quotes removed, escapes applied, unset variables
    /// expanded to nothing.
    pub fn new(escape: Escape) -> Self {
        Self {
            escape,
            ..Self::default()
        }
    }

    /// Leave `'` and `"` as ordinary characters (BuildKit's `SkipProcessQuotes`, used for
    /// heredoc content).
    pub fn skip_quotes(mut self, on: bool) -> Self {
        self.skip_quotes = on;
        self
    }

    /// Keep the quote characters of quoted strings in the output (BuildKit's `RawQuotes`).
    pub fn raw_quotes(mut self, on: bool) -> Self {
        self.raw_quotes = on;
        self
    }

    /// Keep escape characters in the output (BuildKit's `RawEscapes`); words nested in `${...}`
    /// are not affected.
    pub fn raw_escapes(mut self, on: bool) -> Self {
        self.raw_escapes = on;
        self
    }

    /// Leave references to unset variables as written (`$X`, `${X}`, `${X:-w}` with `w`
    /// expanded) instead of expanding them (BuildKit's `SkipUnsetEnv`).
    pub fn skip_unset(mut self, on: bool) -> Self {
        self.skip_unset = on;
        self
    }

    /// Sets the most bytes one expansion may produce ([`MAX_WORD_LEN`] by default); a word
    /// written longer than that may still keep its own length.
    pub fn max_len(mut self, bytes: usize) -> Self {
        self.max_len = bytes;
        self
    }

    /// The configured escape.
    pub fn escape(&self) -> Escape {
        self.escape
    }

    /// Expands `word` as one word (spaces kept), as ENV, WORKDIR, COPY, USER... do.
    pub fn expand_word<E: EnvLookup + ?Sized>(
        &self,
        word: &str,
        env: &E,
    ) -> Result<ExpandResult, ShellError> {
        let mut state = State::new(self, word, env);
        let value = state.process(None, self.raw_escapes, None)?;
        Ok(ExpandResult {
            value,
            used: state.used,
            unset: state.unset,
        })
    }

    /// Expands `line` and splits it into words: unquoted whitespace, including whitespace that
    /// comes out of a variable's value, separates words; empty words are dropped.
    pub fn expand_words<E: EnvLookup + ?Sized>(
        &self,
        line: &str,
        env: &E,
    ) -> Result<(Vec<String>, BTreeSet<String>), ShellError> {
        let mut state = State::new(self, line, env);
        let mut words = Words::default();
        state.process(None, self.raw_escapes, Some(&mut words))?;
        Ok((words.finish(), state.used))
    }
}

/// Expands `word` as a single word with the given escape; see [`Lexer::expand_word`].
pub fn expand_word<E: EnvLookup + ?Sized>(
    word: &str,
    env: &E,
    escape: Escape,
) -> Result<ExpandResult, ShellError> {
    Lexer::new(escape).expand_word(word, env)
}

/// Expands and splits `line` into words; see [`Lexer::expand_words`]. Returns the words and the
/// names of every variable referenced.
pub fn expand_words<E: EnvLookup + ?Sized>(
    line: &str,
    env: &E,
    escape: Escape,
) -> Result<(Vec<String>, BTreeSet<String>), ShellError> {
    Lexer::new(escape).expand_words(line, env)
}

/// Expands the content of a heredoc whose terminator is unquoted (`COPY <<EOF /file`).
///
/// BuildKit expands such content with `SkipProcessQuotes`: `$` substitutions and escapes apply,
/// while `'` and `"` are kept literally. Note that BuildKit always uses `\` here, whatever
/// `# escape=` says: pass [`Escape::Backslash`] to behave exactly like it.
pub fn expand_heredoc<E: EnvLookup + ?Sized>(
    content: &str,
    env: &E,
    escape: Escape,
) -> Result<ExpandResult, ShellError> {
    Lexer::new(escape)
        .skip_quotes(true)
        .expand_word(content, env)
}

/// Word splitting as BuildKit's `wordsStruct` does it.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    /// An unquoted, unescaped character: whitespace ends the current word.
    fn add_char(&mut self, ch: char) {
        if !ch.is_whitespace() {
            self.add_raw_char(ch);
        } else if self.in_word && !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
            self.in_word = false;
        }
    }

    /// A quoted or escaped character: always part of the word.
    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    /// A variable's value: split at whitespace.
    fn add_str(&mut self, s: &str) {
        s.chars().for_each(|ch| self.add_char(ch));
    }

    /// A quoted string: part of the word, even when empty.
    fn add_raw_str(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

/// One expansion in progress.
struct State<'a, E: ?Sized> {
    src: &'a str,
    pos: usize,
    env: &'a E,
    escape: char,
    skip_quotes: bool,
    raw_quotes: bool,
    skip_unset: bool,
    /// The most bytes any string built while expanding may hold.
    limit: usize,
    depth: usize,
    used: BTreeSet<String>,
    unset: BTreeSet<String>,
}

impl<'a, E: EnvLookup + ?Sized> State<'a, E> {
    fn new(lexer: &Lexer, src: &'a str, env: &'a E) -> Self {
        // Go's text/scanner, which BuildKit reads words with, drops a leading byte order mark.
        let pos = if src.starts_with('\u{feff}') {
            '\u{feff}'.len_utf8()
        } else {
            0
        };
        Self {
            src,
            pos,
            env,
            escape: lexer.escape.as_char(),
            skip_quotes: lexer.skip_quotes,
            raw_quotes: lexer.raw_quotes,
            skip_unset: lexer.skip_unset,
            limit: lexer.max_len.max(src.len()),
            depth: 0,
            used: BTreeSet::new(),
            unset: BTreeSet::new(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.pos += ch.len_utf8();
        Some(ch)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    /// Fails when `out` cannot take `extra` more bytes; `offset` is where the growth comes from.
    fn room(&self, out: &str, extra: usize, offset: usize) -> Result<(), ShellError> {
        if out.len().saturating_add(extra) > self.limit {
            return Err(ShellError::TooLong {
                limit: self.limit,
                offset,
            });
        }
        Ok(())
    }

    /// Appends `s` to `out` within the limit.
    fn push_str(&self, out: &mut String, s: &str, offset: usize) -> Result<(), ShellError> {
        self.room(out, s.len(), offset)?;
        out.push_str(s);
        Ok(())
    }

    /// Appends `ch` to `out` within the limit.
    fn push(&self, out: &mut String, ch: char, offset: usize) -> Result<(), ShellError> {
        self.room(out, ch.len_utf8(), offset)?;
        out.push(ch);
        Ok(())
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        if !self.used.contains(name) {
            self.used.insert(name.to_owned());
        }
        let value = self.env.lookup(name).map(str::to_owned);
        if value.is_none() && !self.unset.contains(name) {
            self.unset.insert(name.to_owned());
        }
        value
    }

    /// Processes text until `stop` (consumed) or, with `stop == None`, the end. With `raw`, escape
    /// characters are kept in the output (for patterns). `words` collects word splitting.
    fn process(
        &mut self,
        stop: Option<char>,
        raw: bool,
        mut words: Option<&mut Words>,
    ) -> Result<String, ShellError> {
        let mut out = String::new();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += ch.len_utf8();
                return Ok(out);
            }
            match ch {
                '$' => {
                    let offset = self.pos;
                    let value = self.dollar()?;
                    self.room(&out, value.len(), offset)?;
                    if let Some(words) = words.as_deref_mut() {
                        words.add_str(&value);
                    }
                    out.push_str(&value);
                }
                '\'' | '"' if !self.skip_quotes => {
                    let offset = self.pos;
                    let value = if ch == '\'' {
                        self.single_quote()?
                    } else {
                        self.double_quote(raw)?
                    };
                    self.room(&out, value.len(), offset)?;
                    if let Some(words) = words.as_deref_mut() {
                        words.add_raw_str(&value);
                    }
                    out.push_str(&value);
                }
                _ => {
                    let offset = self.pos;
                    self.pos += ch.len_utf8();
                    if ch == self.escape {
                        if raw {
                            self.push(&mut out, ch, offset)?;
                            if let Some(words) = words.as_deref_mut() {
                                words.add_raw_char(ch);
                            }
                        }
                        // The escape takes the next character literally; at the end it vanishes.
                        let Some(escaped) = self.bump() else { break };
                        self.push(&mut out, escaped, offset)?;
                        if let Some(words) = words.as_deref_mut() {
                            words.add_raw_char(escaped);
                        }
                    } else {
                        self.push(&mut out, ch, offset)?;
                        if let Some(words) = words.as_deref_mut() {
                            words.add_char(ch);
                        }
                    }
                }
            }
        }
        match stop {
            // Callers turn this into the error for the construct they were reading.
            Some(_) => Err(ShellError::MissingBrace { offset: self.pos }),
            None => Ok(out),
        }
    }

    /// `'...'`: everything literal up to the next `'`.
    fn single_quote(&mut self) -> Result<String, ShellError> {
        let offset = self.pos;
        self.pos += 1;
        match self.src[self.pos..].find('\'') {
            Some(len) => {
                let value = if self.raw_quotes {
                    &self.src[offset..self.pos + len + 1]
                } else {
                    &self.src[self.pos..self.pos + len]
                };
                self.pos += len + 1;
                Ok(value.to_owned())
            }
            None => {
                self.pos = self.src.len();
                Err(ShellError::UnterminatedSingleQuote { offset })
            }
        }
    }

    /// `"..."`: `$` expands; the escape character escapes only `"`, `$` and itself.
    fn double_quote(&mut self, raw: bool) -> Result<String, ShellError> {
        let offset = self.pos;
        self.pos += 1;
        let mut out = String::new();
        if self.raw_quotes {
            out.push('"');
        }
        loop {
            match self.peek() {
                None => return Err(ShellError::UnterminatedDoubleQuote { offset }),
                Some('"') => {
                    let at = self.pos;
                    self.pos += 1;
                    if self.raw_quotes {
                        self.push(&mut out, '"', at)?;
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let at = self.pos;
                    let value = self.dollar()?;
                    self.push_str(&mut out, &value, at)?;
                }
                Some(mut ch) => {
                    let at = self.pos;
                    self.pos += ch.len_utf8();
                    if ch == self.escape {
                        if raw {
                            self.push(&mut out, ch, at)?;
                        }
                        match self.peek() {
                            // An escape at the very end vanishes (and the quote is unterminated).
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                self.pos += next.len_utf8();
                                ch = next;
                            }
                            // Any other escape stays literal (twice in raw mode, as BuildKit).
                            Some(_) => {}
                        }
                    }
                    self.push(&mut out, ch, at)?;
                }
            }
        }
    }

    /// Reads a parameter name: a run of digits, one special character (`@*#?-$!0`), or a run
    /// of letters, digits and `_`. Empty when none of those follows.
    fn name(&mut self) -> &'a str {
        let src = self.src;
        let start = self.pos;
        let Some(first) = self.peek() else {
            return "";
        };
        if first.is_numeric() {
            while self.peek().is_some_and(char::is_numeric) {
                self.bump();
            }
        } else if matches!(first, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
            self.bump();
        } else {
            while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                self.bump();
            }
        }
        &src[start..self.pos]
    }

    /// Reads the word of a `${name<op>word}` up to `stop`, mapping an unexpected end to
    /// `at_end_error`.
    fn nested(
        &mut self,
        stop: char,
        raw: bool,
        at_end_error: ShellError,
    ) -> Result<String, ShellError> {
        match self.process(Some(stop), raw, None) {
            Ok(word) => Ok(word),
            Err(_) if self.at_end() => Err(at_end_error),
            Err(e) => Err(e),
        }
    }

    /// `$name` or `${...}`, starting at the `$`.
    fn dollar(&mut self) -> Result<String, ShellError> {
        let offset = self.pos;
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.lookup(name) {
                Some(value) => value,
                None if self.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(ShellError::MissingBrace { offset }),
            Some('{' | '}' | ':') => return Err(ShellError::BadSubstitution { offset }),
            Some(_) => {}
        }
        if self.depth >= MAX_NESTING {
            return Err(ShellError::TooDeep {
                limit: MAX_NESTING,
                offset,
            });
        }
        self.depth += 1;
        let result = self.braced(offset);
        self.depth -= 1;
        result
    }

    /// The rest of `${...}` after the `{`.
    fn braced(&mut self, offset: usize) -> Result<String, ShellError> {
        let name = self.name();
        let Some(ch) = self.bump() else {
            return Err(ShellError::MissingBrace { offset });
        };
        match ch {
            '}' => Ok(match self.lookup(name) {
                Some(value) => value,
                None if self.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let null_is_unset = ch == ':';
                let op = if null_is_unset {
                    self.bump().ok_or(ShellError::MissingBrace { offset })?
                } else {
                    ch
                };
                let modifier = if null_is_unset {
                    format!(":{op}")
                } else {
                    op.to_string()
                };
                let raw = op == '#' || op == '%';
                let word = self.nested('}', raw, ShellError::MissingBrace { offset })?;
                let value = self.lookup(name);
                if value.is_none() && self.skip_unset {
                    // Checked before the modifier, as BuildKit does: even an unsupported
                    // modifier is kept as written.
                    return Ok(format!("${{{name}{modifier}{word}}}"));
                }
                Modifier {
                    name,
                    op,
                    modifier,
                    null_is_unset,
                    offset,
                }
                .apply(value, word)
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                let source = self.nested('/', true, ShellError::MissingSlash { offset })?;
                let replacement = self.nested('}', true, ShellError::MissingBrace { offset })?;
                let value = self.lookup(name);
                if value.is_none() && self.skip_unset {
                    // BuildKit writes a single `/` here even for `//`.
                    return Ok(format!("${{{name}/{source}/{replacement}}}"));
                }
                // An unset variable is replaced in as empty: an empty pattern still matches.
                let pattern = compile(&source, offset)?;
                let value = value.unwrap_or_default();
                pattern::replace(&pattern, &value, &replacement, all, self.limit).ok_or(
                    ShellError::TooLong {
                        limit: self.limit,
                        offset,
                    },
                )
            }
            other => Err(ShellError::UnsupportedModifier {
                modifier: other.to_string(),
                offset,
            }),
        }
    }
}

/// A parsed `${name<modifier>word}` (for the modifiers `- + ? # %`, with or without `:`).
struct Modifier<'a> {
    name: &'a str,
    /// The operator character.
    op: char,
    /// The modifier as written (`:-`, `#`...), for error messages.
    modifier: String,
    /// With `:`, a set but empty variable counts as unset.
    null_is_unset: bool,
    /// Byte offset of the `$`.
    offset: usize,
}

impl Modifier<'_> {
    /// Applies the modifier to the variable's value, given the expanded word.
    fn apply(self, value: Option<String>, word: String) -> Result<String, ShellError> {
        let Self {
            name,
            op,
            modifier,
            null_is_unset,
            offset,
        } = self;
        let is_unset = match &value {
            None => true,
            Some(v) => null_is_unset && v.is_empty(),
        };
        match op {
            '-' => Ok(if is_unset {
                word
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if is_unset { String::new() } else { word }),
            '?' => {
                let message = (!word.is_empty()).then_some(word);
                match value {
                    None => Err(ShellError::UnsetVariable {
                        name: name.to_owned(),
                        message,
                        offset,
                    }),
                    Some(v) if null_is_unset && v.is_empty() => Err(ShellError::EmptyVariable {
                        name: name.to_owned(),
                        message,
                        offset,
                    }),
                    Some(v) => Ok(v),
                }
            }
            '#' | '%' => {
                let (greedy, source) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                let pattern = compile(source, offset)?;
                let value = value.unwrap_or_default();
                Ok(if op == '#' {
                    pattern::trim_prefix(&pattern, &value, greedy)
                } else {
                    pattern::trim_suffix(&pattern, &value, greedy)
                })
            }
            _ => Err(ShellError::UnsupportedModifier { modifier, offset }),
        }
    }
}

fn compile(source: &str, offset: usize) -> Result<Pattern, ShellError> {
    Pattern::parse(source).map_err(|e| ShellError::InvalidPattern {
        pattern: source.to_owned(),
        escaped: e.0,
        offset,
    })
}
