//! Word expansion and splitting as BuildKit's shell lexer does it.
//!
//! Dockerfile instructions other than `RUN`/`CMD`/`ENTRYPOINT` in shell form expand `$`
//! substitutions in their arguments before use: `ENV`, `WORKDIR`, `COPY`, `USER`... expand each
//! argument as one word ([`expand_word`]); where a line must become a word list, it is expanded
//! and split at unquoted whitespace, including whitespace produced by a variable
//! ([`expand_words`]). Heredoc content with an unquoted terminator is expanded with quotes kept
//! literally ([`expand_heredoc`]).
//!
//! Supported: `$V ${V} ${V:-x} ${V-x} ${V:+x} ${V+x} ${V:?msg} ${V?msg} ${V#p} ${V##p} ${V%p}
//! ${V%%p} ${V/p/r} ${V//p/r}`, `'...'` (literal), `"..."` (the escape character escapes only
//! `"`, `$` and itself), the escape character outside quotes (takes the next character
//! literally; vanishes at the end), positional (`$1`, `$001`) and special (`$@ $* $# $? $- $$ $!
//! $0`) parameters, which are never set, and `$` before anything else, which is literal.
//!
//! [`Lexer`] carries the escape character and BuildKit's switches (`skip_quotes`, `raw_quotes`,
//! `raw_escapes`, `skip_unset`) for callers that need more than the three functions.
//!
//! The lexer is hand-written, never panics, and returns `Ok` or [`ShellError`] for any input.
//! No expansion produces more than [`MAX_WORD_LEN`] bytes (1 MiB) or the word's own length:
//! past that it stops with [`ShellError::TooLong`] before growing the text.
//! Names are read with Rust's Unicode classes (`char::is_alphanumeric`, `char::is_numeric`),
//! which accept a few more exotic characters than Go's `unicode.IsLetter`/`IsDigit`.

mod env;
mod error;
mod lexer;
mod pattern;

pub use env::{Env, EnvLookup};
pub use error::ShellError;
pub use lexer::{
    Escape, ExpandResult, Lexer, MAX_NESTING, MAX_WORD_LEN, expand_heredoc, expand_word,
    expand_words,
};

#[cfg(test)]
mod tests;
