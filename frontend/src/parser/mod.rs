//! Dockerfile parser: directives, continuations, heredocs, flags, JSON vs shell form.
//!
//! Hand-written to behave like BuildKit's `frontend/dockerfile/parser`: [`parse`] turns text into
//! an [`Ast`] whose [`dump`] matches BuildKit's test `result` files byte for byte. Flags are kept
//! raw here; [`validate_flags`] checks them per instruction (BuildKit's dump shows flags that
//! validation later rejects, so the two steps stay separate).
//!
//! invariant: no input makes the parser panic; every error carries a span.

mod dump;
mod error;
mod flags;
mod json;
mod words;

pub use dump::{dump, dump_with_heredocs, go_quote};
pub use error::{ErrorKind, ParseError};
pub(crate) use flags::parse_go_bool;
pub use flags::{FlagKind, allowed_flags, parse_go_duration, validate_flags};

use std::cell::Cell;

use crate::ast::{Ast, Directive, Directives, Flag, Heredoc, Keyword, Node, Warning, Word};
use crate::diagnostic::{Span, suggest};
use json::{ExecForm, parse_exec_form};
use words::{extract_flags, heredoc_markers, parse_words, split_space};

/// How deeply ONBUILD may nest before the parser gives up (the typed layer rejects any nesting).
const MAX_ONBUILD_DEPTH: usize = 4;

/// The Dockerfile's bytes as text, or an [`ErrorKind::InvalidUtf8`] error located at the first
/// byte that is not UTF-8 (its line and, counted in characters, its column).
///
/// BuildKit passes such bytes through to `RUN`'s shell; kiln's parser works on `str`, so it
/// stops here instead, with a position. To render the error, pass
/// `String::from_utf8_lossy(bytes)` as the source: the caret then falls on the `�` that stands
/// for the bad byte.
pub fn decode(bytes: &[u8]) -> Result<&str, ParseError> {
    let e = match std::str::from_utf8(bytes) {
        Ok(text) => return Ok(text),
        Err(e) => e,
    };
    let valid = e.valid_up_to();
    // Everything before `valid` is UTF-8, so this cannot fail.
    let before = std::str::from_utf8(&bytes[..valid]).unwrap_or_default();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let mut head = &before[line_start..];
    if line == 1 {
        // render drops a leading byte order mark, and columns count after it.
        head = head.strip_prefix('\u{feff}').unwrap_or(head);
    }
    let column = head.chars().count() + 1;
    let span = Span::new(
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
        1,
    );
    Err(ParseError::new(
        span,
        ErrorKind::InvalidUtf8 {
            byte: bytes.get(valid).copied().unwrap_or_default(),
        },
    ))
}

/// Parse a Dockerfile. Warnings (such as empty continuation lines) are in [`Ast::warnings`].
pub fn parse(src: &str) -> Result<Ast, ParseError> {
    Parser::new(src).run()
}

/// Parse a Dockerfile and check every instruction's flags ([`validate_flags`]).
pub fn parse_and_validate(src: &str) -> Result<Ast, ParseError> {
    let ast = parse(src)?;
    for node in &ast.nodes {
        validate_flags(node)?;
    }
    Ok(ast)
}

/// A logical line under construction: continuation pieces joined, each piece remembering where
/// it came from so offsets can be mapped back to source positions.
#[derive(Default)]
struct Logical {
    text: String,
    /// (byte offset in `text`, source line, 1-based column of the piece's first character)
    pieces: Vec<(usize, u32, u32)>,
    /// The last position computed (byte offset, column there), so that spans asked for in
    /// increasing order cost linear time in the line length, not quadratic.
    cursor: Cell<(usize, usize)>,
}

impl Logical {
    fn push(&mut self, s: &str, line: u32, column: u32) {
        self.pieces.push((self.text.len(), line, column));
        self.text.push_str(s);
    }

    /// The source span of `len` bytes at byte offset `at` of the logical line.
    fn span(&self, at: usize, len: usize) -> Span {
        let idx = self.pieces.partition_point(|p| p.0 <= at).saturating_sub(1);
        let Some(&(start, line, column)) = self.pieces.get(idx) else {
            return Span::default();
        };
        let piece_end = self.pieces.get(idx + 1).map_or(self.text.len(), |p| p.0);
        let count = |a: usize, b: usize| self.text.get(a..b).map_or(0, |s| s.chars().count());
        let (cursor_at, cursor_col) = self.cursor.get();
        let col = if cursor_col == 0 || cursor_at < start || cursor_at >= piece_end {
            column as usize + count(start, at)
        } else if cursor_at <= at {
            cursor_col + count(cursor_at, at)
        } else {
            cursor_col.saturating_sub(count(at, cursor_at))
        };
        self.cursor.set((at, col));
        let end = (at + len).min(piece_end);
        Span::new(line, to_u32(col), to_u32(count(at, end.max(at))))
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Go's `trimNewline`: drop trailing `\r` and `\n`.
fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(s: &str) -> bool {
    s.trim_start().starts_with('#')
}

/// If `line` ends with an unescaped escape character (then optional blanks), drop both and
/// report that the logical line continues.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    let run = t.chars().rev().take_while(|&c| c == escape).count();
    if run % 2 == 1 {
        (&t[..t.len() - escape.len_utf8()], false)
    } else {
        (line, true)
    }
}

/// The value of a parser directive line (`#name=value`), per BuildKit's
/// `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`.
fn directive_of(line: &str) -> Option<(String, &str)> {
    let is_ws = |c: char| matches!(c, ' ' | '\t' | '\n' | '\u{c}' | '\r');
    let rest = line.strip_prefix('#')?.trim_start_matches(is_ws);
    let name_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if name_len == 0 {
        return None;
    }
    let (name, rest) = rest.split_at(name_len);
    let rest = rest.trim_start_matches(is_ws).strip_prefix('=')?;
    let value = rest.trim_matches(is_ws);
    if value.is_empty() {
        return None;
    }
    Some((name.to_ascii_lowercase(), value))
}

struct Parser<'a> {
    lines: Vec<&'a str>,
    next: usize,
    escape: char,
    directives: Directives,
    directives_done: bool,
    warnings: Vec<Warning>,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        let src = src.strip_prefix('\u{feff}').unwrap_or(src);
        Self {
            lines: src.split_inclusive('\n').collect(),
            next: 0,
            escape: '\\',
            directives: Directives::default(),
            directives_done: false,
            warnings: Vec::new(),
        }
    }

    /// The next physical line (with its newline) and its 1-based number.
    fn next_line(&mut self) -> Option<(&'a str, u32)> {
        let line = *self.lines.get(self.next)?;
        self.next += 1;
        Some((line, to_u32(self.next)))
    }

    /// Feed a line to the directive scanner (BuildKit looks at every line until the first line
    /// that is not a directive).
    fn directive(&mut self, text: &str, line: u32, column: u32) -> Result<(), ParseError> {
        if self.directives_done {
            return Ok(());
        }
        let Some((name, value)) = directive_of(text) else {
            self.directives_done = true;
            return Ok(());
        };
        let span = Span::new(line, column, to_u32(text.chars().count()));
        let slot = match name.as_str() {
            "escape" => &mut self.directives.escape,
            "syntax" => &mut self.directives.syntax,
            "check" => &mut self.directives.check,
            _ => {
                self.directives_done = true;
                return Ok(());
            }
        };
        if slot.is_some() {
            return Err(ParseError::new(
                span,
                ErrorKind::DuplicateDirective { name },
            ));
        }
        *slot = Some(Directive {
            name: name.clone(),
            value: value.to_owned(),
            span,
        });
        if name == "escape" {
            self.escape = match value {
                "\\" => '\\',
                "`" => '`',
                _ => {
                    return Err(ParseError::new(
                        span,
                        ErrorKind::InvalidEscape {
                            value: value.to_owned(),
                        },
                    ));
                }
            };
        }
        Ok(())
    }

    fn run(mut self) -> Result<Ast, ParseError> {
        let mut nodes = Vec::new();
        let mut comments: Vec<String> = Vec::new();
        let mut last_line = 0;
        while let Some((full, number)) = self.next_line() {
            last_line = number;
            let text = trim_newline(full);
            let trimmed = text.trim_start();
            let column = to_u32(text[..text.len() - trimmed.len()].chars().count()) + 1;
            let comment = trimmed.starts_with('#');
            if comment {
                let c = trimmed[1..].trim();
                if c.is_empty() {
                    comments.clear();
                } else {
                    comments.push(c.to_owned());
                }
            }
            self.directive(trimmed, number, column)?;
            let first = if comment { "" } else { trimmed };
            let (first, mut end_of_line) = trim_continuation(first, self.escape);
            if end_of_line && first.is_empty() {
                continue;
            }
            let mut logical = Logical::default();
            logical.push(first, number, column);
            let mut empty_continuation: Option<u32> = None;
            let mut end_line = number;
            while !end_of_line {
                let Some((full, number)) = self.next_line() else {
                    break;
                };
                end_line = number;
                let text = trim_newline(full);
                self.directive(text, number, 1)?;
                if is_comment(text) {
                    continue;
                }
                if text.trim_start().is_empty() {
                    empty_continuation.get_or_insert(number);
                    continue;
                }
                let (piece, eol) = trim_continuation(text, self.escape);
                end_of_line = eol;
                logical.push(piece, number, 1);
            }
            if let Some(line) = empty_continuation {
                self.warnings.push(Warning {
                    message: format!("Empty continuation line found in: {}", logical.text),
                    span: Span::line_start(line),
                });
            }
            let Some(mut node) = self.node(&logical, 0, logical.text.len(), 0)? else {
                continue;
            };
            node.comments = std::mem::take(&mut comments);
            if logical.text.contains("<<") {
                // As BuildKit: RUN/COPY/ADD in shell form, also as an ONBUILD trigger (the
                // bodies then belong to the trigger node).
                let target = match node.keyword {
                    Keyword::Onbuild => node.trigger.as_deref_mut(),
                    _ => Some(&mut node),
                };
                if let Some(target) = target.filter(|t| t.keyword.takes_heredocs() && !t.json) {
                    end_line = self.heredocs(&logical, target)?.unwrap_or(end_line);
                    target.end_line = end_line;
                }
            }
            node.end_line = end_line;
            last_line = end_line;
            nodes.push(node);
        }
        if nodes.is_empty() {
            return Err(ParseError::new(
                Span::line_start(last_line.max(1)),
                ErrorKind::NoInstructions,
            ));
        }
        Ok(Ast {
            directives: self.directives,
            escape: self.escape,
            nodes,
            warnings: self.warnings,
        })
    }

    /// Read the bodies of the heredocs the line announces; returns the last line consumed.
    fn heredocs(&mut self, logical: &Logical, node: &mut Node) -> Result<Option<u32>, ParseError> {
        let mut last = None;
        for marker in heredoc_markers(&logical.text) {
            let span = logical.span(marker.at, marker.len);
            let body_line = to_u32(self.next + 1);
            let mut content = String::new();
            let mut terminated = false;
            while let Some((full, number)) = self.next_line() {
                last = Some(number);
                let mut candidate = trim_newline(full);
                if marker.chomp {
                    candidate = candidate.trim_start_matches('\t');
                }
                if candidate == marker.name {
                    terminated = true;
                    break;
                }
                if marker.chomp {
                    content.push_str(full.trim_start_matches('\t'));
                } else {
                    content.push_str(full);
                }
            }
            if !terminated {
                return Err(ParseError::new(
                    span,
                    ErrorKind::UnterminatedHeredoc { name: marker.name },
                ));
            }
            node.heredocs.push(Heredoc {
                name: marker.name,
                content,
                expand: marker.expand,
                chomp: marker.chomp,
                fd: marker.fd,
                span,
                body_line,
            });
        }
        Ok(last)
    }

    /// BuildKit's `newNodeFromLine` on `logical.text[start..end]`. `None` for a blank line.
    fn node(
        &self,
        logical: &Logical,
        start: usize,
        end: usize,
        depth: usize,
    ) -> Result<Option<Node>, ParseError> {
        let line = logical.text.get(start..end).unwrap_or_default();
        let trimmed_start = line.trim_start();
        let base = start + (line.len() - trimmed_start.len());
        let trimmed = trimmed_start.trim_end();
        if trimmed.is_empty() {
            return Ok(None);
        }
        let parts = split_space(trimmed, 2);
        let (cmd, _) = parts[0];
        let name_span = logical.span(base, cmd.len());
        let Some(keyword) = Keyword::from_name(cmd) else {
            let names: Vec<&str> = Keyword::ALL.iter().map(|k| k.as_str()).collect();
            let suggestion = suggest(cmd, &names).map(str::to_owned);
            return Err(ParseError::new(
                name_span,
                ErrorKind::UnknownInstruction {
                    name: cmd.to_owned(),
                    suggestion,
                },
            ));
        };
        let mut flags = Vec::new();
        let mut rest = "";
        let mut rest_at = base + trimmed.len();
        if let Some(&(after, after_at)) = parts.get(1) {
            let (raw_flags, rest_off) = extract_flags(after);
            for f in raw_flags {
                let body = f.text.strip_prefix("--").unwrap_or(&f.text);
                let (name, value) = match body.split_once('=') {
                    Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                    None => (body.to_owned(), None),
                };
                let span = logical.span(base + after_at + f.at, f.text.len());
                flags.push(Flag {
                    raw: f.text,
                    name,
                    value,
                    span,
                });
            }
            let r = &after[rest_off..];
            let r_trim = r.trim_start();
            rest_at = base + after_at + rest_off + (r.len() - r_trim.len());
            rest = r_trim.trim_end();
        }
        let mut node = Node {
            keyword,
            name: cmd.to_owned(),
            flags,
            args: Vec::new(),
            json: false,
            trigger: None,
            heredocs: Vec::new(),
            original: line.to_owned(),
            span: name_span,
            end_line: name_span.line,
            comments: Vec::new(),
        };
        let args = Args {
            logical,
            rest,
            at: rest_at,
            escape: self.escape,
        };
        match keyword {
            Keyword::Add | Keyword::Copy | Keyword::Volume => args.maybe_json_to_list(&mut node)?,
            Keyword::Cmd | Keyword::Entrypoint | Keyword::Run | Keyword::Shell => {
                args.maybe_json(&mut node)?
            }
            Keyword::Arg => node.args = args.words(),
            Keyword::Env | Keyword::Label => args.name_val(&mut node)?,
            Keyword::Expose | Keyword::From => node.args = args.whitespace_delimited(),
            Keyword::Healthcheck => args.health(&mut node)?,
            Keyword::Maintainer | Keyword::StopSignal | Keyword::User | Keyword::Workdir => {
                node.args = args.string()
            }
            Keyword::Onbuild => {
                if !rest.is_empty() {
                    if depth >= MAX_ONBUILD_DEPTH {
                        return Err(ParseError::new(name_span, ErrorKind::OnbuildTooDeep));
                    }
                    node.trigger = self
                        .node(logical, rest_at, rest_at + rest.len(), depth + 1)?
                        .map(Box::new);
                }
            }
        }
        Ok(Some(node))
    }
}

/// The argument text of one instruction and how to turn it into BuildKit's argument shapes.
struct Args<'l> {
    logical: &'l Logical,
    rest: &'l str,
    /// Byte offset of `rest` in the logical line.
    at: usize,
    escape: char,
}

impl Args<'_> {
    fn word(&self, value: impl Into<String>, off: usize, len: usize) -> Word {
        Word {
            value: value.into(),
            span: self.logical.span(self.at + off, len),
        }
    }

    fn string(&self) -> Vec<Word> {
        if self.rest.is_empty() {
            return Vec::new();
        }
        vec![self.word(self.rest, 0, self.rest.len())]
    }

    fn whitespace_delimited(&self) -> Vec<Word> {
        if self.rest.is_empty() {
            return Vec::new();
        }
        split_space(self.rest, 0)
            .into_iter()
            .map(|(w, off)| self.word(w, off, w.len()))
            .collect()
    }

    fn words(&self) -> Vec<Word> {
        parse_words(self.rest, self.escape)
            .into_iter()
            .map(|(w, off)| {
                let len = w.len();
                self.word(w, off, len)
            })
            .collect()
    }

    /// Exec form if `rest` is a JSON string array; `Ok(false)` if it is not JSON at all.
    fn json(&self, node: &mut Node) -> Result<bool, ParseError> {
        match parse_exec_form(self.rest) {
            ExecForm::Strings(items) => {
                node.args = items
                    .into_iter()
                    .map(|(s, off)| self.word(s, off, 1))
                    .collect();
                node.json = true;
                Ok(true)
            }
            ExecForm::NotStrings => Err(ParseError::new(
                self.logical.span(self.at, 1),
                ErrorKind::NotStringArray,
            )),
            ExecForm::Invalid => Ok(false),
        }
    }

    fn maybe_json(&self, node: &mut Node) -> Result<(), ParseError> {
        if self.rest.is_empty() || self.json(node)? {
            return Ok(());
        }
        node.args = self.string();
        Ok(())
    }

    fn maybe_json_to_list(&self, node: &mut Node) -> Result<(), ParseError> {
        if !self.json(node)? {
            node.args = self.whitespace_delimited();
        }
        Ok(())
    }

    /// ENV and LABEL: `key value` (old form) or `key=value ...`, as `key value sep` triples.
    fn name_val(&self, node: &mut Node) -> Result<(), ParseError> {
        let instruction = node.keyword.as_str();
        let words = parse_words(self.rest, self.escape);
        let Some((first, _)) = words.first() else {
            return Ok(());
        };
        if !first.contains('=') {
            let parts = split_space(self.rest, 2);
            let (key, key_off) = parts[0];
            let Some(&(value, value_off)) = parts.get(1) else {
                return Err(ParseError::new(
                    self.logical.span(self.at, self.rest.len()),
                    ErrorKind::MissingValue { instruction },
                ));
            };
            node.args = vec![
                self.word(key, key_off, key.len()),
                self.word(value, value_off, value.len()),
                self.word("", key_off, 0),
            ];
            return Ok(());
        }
        for (word, off) in words {
            let Some((key, value)) = word.split_once('=') else {
                return Err(ParseError::new(
                    self.logical.span(self.at + off, word.len()),
                    ErrorKind::MissingEquals { word },
                ));
            };
            node.args.push(self.word(key, off, key.len()));
            node.args
                .push(self.word(value, off + key.len() + 1, value.len()));
            node.args.push(self.word("=", off + key.len(), 1));
        }
        Ok(())
    }

    /// HEALTHCHECK: the first word (CMD, NONE, ...) then the command, exec or shell form.
    fn health(&self, node: &mut Node) -> Result<(), ParseError> {
        let sep = self
            .rest
            .find(char::is_whitespace)
            .unwrap_or(self.rest.len());
        if sep == 0 {
            return Ok(());
        }
        let after = &self.rest[sep..];
        let next = sep + (after.len() - after.trim_start().len());
        let typ = self.word(&self.rest[..sep], 0, sep);
        let inner = Args {
            logical: self.logical,
            rest: &self.rest[next..],
            at: self.at + next,
            escape: self.escape,
        };
        inner.maybe_json(node)?;
        node.args.insert(0, typ);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_needs_an_odd_run_of_escapes() {
        assert_eq!(trim_continuation("a \\", '\\'), ("a ", false));
        assert_eq!(trim_continuation("a \\ \t", '\\'), ("a ", false));
        assert_eq!(trim_continuation("a\\\\", '\\'), ("a\\\\", true));
        assert_eq!(trim_continuation("a\\\\\\", '\\'), ("a\\\\", false));
        assert_eq!(trim_continuation("a `", '`'), ("a ", false));
        assert_eq!(trim_continuation("a \\", '`'), ("a \\", true));
    }

    #[test]
    fn directive_syntax() {
        assert_eq!(directive_of("# escape = `"), Some(("escape".into(), "`")));
        assert_eq!(
            directive_of("#Syntax=docker/dockerfile:1 "),
            Some(("syntax".into(), "docker/dockerfile:1"))
        );
        assert_eq!(directive_of("# escape"), None);
        assert_eq!(directive_of("# 1x=y"), None);
        assert_eq!(directive_of("#x="), None);
    }

    #[test]
    fn spans_follow_continuations() {
        let ast =
            parse("FROM a\nRUN --mount=x \\\n  echo \\\n   hi\n").unwrap_or_else(|e| panic!("{e}"));
        let run = &ast.nodes[1];
        assert_eq!(run.span, Span::new(2, 1, 3));
        assert_eq!(run.flags[0].span, Span::new(2, 5, 9));
        assert_eq!(run.args[0].span, Span::new(3, 3, 5));
        assert_eq!(run.end_line, 4);
    }

    fn ok(src: &str) -> Ast {
        parse(src).unwrap_or_else(|e| panic!("{src:?}: {e}"))
    }

    #[test]
    fn directives_are_recorded_case_insensitively() {
        let ast = ok(
            "\u{feff}# Syntax = docker/dockerfile:1\n#ESCAPE=`\n# check=skip=all\nFROM a `\n  AS b\n",
        );
        let d = &ast.directives;
        assert_eq!(
            d.syntax.as_ref().map(|d| d.value.as_str()),
            Some("docker/dockerfile:1")
        );
        assert_eq!(
            d.escape.as_ref().map(|d| (d.value.as_str(), d.span.line)),
            Some(("`", 2))
        );
        assert_eq!(d.check.as_ref().map(|d| d.value.as_str()), Some("skip=all"));
        assert_eq!(ast.escape, '`');
        assert_eq!(dump(&ast), "(from \"a\" \"AS\" \"b\")\n");
    }

    #[test]
    fn directives_end_at_first_other_line() {
        for src in [
            "# hello\n# escape=`\nFROM a \\\n b\n",
            "\n# escape=`\nFROM a \\\n b\n",
            "# unknown=x\n# escape=`\nFROM a \\\n b\n",
            "FROM a \\\n b\n# escape=`\n",
        ] {
            let ast = ok(src);
            assert_eq!(ast.escape, '\\', "{src:?}");
            assert!(ast.directives.escape.is_none(), "{src:?}");
            assert_eq!(dump(&ast), "(from \"a\" \"b\")\n", "{src:?}");
        }
        let err = parse("# syntax=a\n# SYNTAX=b\nFROM a")
            .map(|_| ())
            .map_err(|e| e.kind);
        assert_eq!(
            err,
            Err(ErrorKind::DuplicateDirective {
                name: "syntax".into()
            })
        );
    }

    #[test]
    fn empty_continuation_lines_warn_once() {
        let ast = ok("FROM a\nRUN a \\\n\n  \\\n\nb\n");
        assert_eq!(ast.warnings.len(), 1);
        assert_eq!(ast.warnings[0].span.line, 3);
        assert_eq!(
            ast.warnings[0].message,
            "Empty continuation line found in: RUN a   b"
        );
    }

    #[test]
    fn comments_attach_to_next_instruction() {
        let ast = ok("# first\n\n# build it\n#\n# really\nFROM a\n");
        assert_eq!(ast.nodes[0].comments, ["really"]);
    }

    #[test]
    fn heredoc_bodies_keep_lines_and_strip_tabs_when_chomping() {
        let ast = ok("FROM a\nRUN <<-EOT cat\n\tone\n\t\ttwo\n\tEOT\nRUN x\n");
        let h = &ast.nodes[1].heredocs[0];
        assert_eq!(
            (h.content.as_str(), h.chomp, h.body_line),
            ("one\ntwo\n", true, 3)
        );
        assert_eq!(ast.nodes[1].end_line, 5);
        assert_eq!(ast.nodes[2].span.line, 6);
        // Without `-`, a tab-indented terminator does not end the body.
        let err = parse("FROM a\nRUN <<EOT\n\tEOT\n")
            .map(|_| ())
            .map_err(|e| e.kind);
        assert_eq!(
            err,
            Err(ErrorKind::UnterminatedHeredoc { name: "EOT".into() })
        );
    }

    #[test]
    fn decode_locates_the_first_invalid_byte() {
        assert_eq!(decode(b"FROM a\n").map(str::len), Ok(7));
        let bytes = b"FROM a\nRUN echo \xc3\xa9 \xff ok\n";
        let e = match decode(bytes) {
            Err(e) => e,
            Ok(_) => panic!("not UTF-8"),
        };
        assert_eq!(e.span, Span::new(2, 12, 1));
        assert_eq!(e.kind, ErrorKind::InvalidUtf8 { byte: 0xff });
        let out = crate::diagnostic::render(&e, "Dockerfile", &String::from_utf8_lossy(bytes));
        assert_eq!(
            out,
            "Dockerfile:2:12: invalid UTF-8: byte 0xff in the Dockerfile\n\
             2 | RUN echo \u{e9} \u{fffd} ok\n  |            ^\n\
             help: kiln reads Dockerfiles as UTF-8: convert the file (iconv -t UTF-8)\n"
        );
        // A truncated sequence at the end, after a byte order mark on line 1.
        let e = decode(b"\xef\xbb\xbfFROM \xe2\x82").err();
        assert_eq!(
            e.map(|e| (e.span, e.kind)),
            Some((Span::new(1, 6, 1), ErrorKind::InvalidUtf8 { byte: 0xe2 }))
        );
    }
}
