//! Errors of word expansion.

use thiserror::Error;

/// Why a word could not be expanded.
///
/// Messages are BuildKit's own (`frontend/dockerfile/shell`), so users see what `docker build`
/// would print. Every variant carries `offset`, the byte offset in the expanded text where the
/// offending construct starts (the `$` of a substitution, the opening quote of a string); see
/// [`ShellError::offset`]. BuildKit itself prefixes these messages with
/// `failed to process "<word>": `; callers that render errors may do the same.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShellError {
    /// A `'` without its closing `'`.
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote {
        /// Byte offset of the opening quote.
        offset: usize,
    },
    /// A `"` without its closing `"`.
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote {
        /// Byte offset of the opening quote.
        offset: usize,
    },
    /// `${` that never finds its closing `}`.
    #[error("syntax error: missing '}}'")]
    MissingBrace {
        /// Byte offset of the `$`.
        offset: usize,
    },
    /// `${name/pattern` without the `/` that ends the pattern.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash {
        /// Byte offset of the `$`.
        offset: usize,
    },
    /// `${}`, `${{...}`, `${:...}` and friends.
    #[error("syntax error: bad substitution")]
    BadSubstitution {
        /// Byte offset of the `$`.
        offset: usize,
    },
    /// `${name<modifier>...}` with a modifier BuildKit does not support (`:=`, `:x`, `^`...).
    #[error("unsupported modifier ({modifier}) in substitution")]
    UnsupportedModifier {
        /// The modifier as written, e.g. `:=`.
        modifier: String,
        /// Byte offset of the `$`.
        offset: usize,
    },
    /// `${name?msg}` or `${name:?msg}` with `name` unset.
    #[error("{name}: {}", message.as_deref().unwrap_or("is not allowed to be unset"))]
    UnsetVariable {
        /// The variable's name.
        name: String,
        /// The user's message, `None` when the word after `?` was empty.
        message: Option<String>,
        /// Byte offset of the `$`.
        offset: usize,
    },
    /// `${name:?msg}` with `name` set but empty.
    #[error("{name}: {}", message.as_deref().unwrap_or("is not allowed to be empty"))]
    EmptyVariable {
        /// The variable's name.
        name: String,
        /// The user's message, `None` when the word after `:?` was empty.
        message: Option<String>,
        /// Byte offset of the `$`.
        offset: usize,
    },
    /// A `#`, `%` or `/` pattern with an escape other than `\*`, `\?`, `\\`, `\}` or `\/`.
    #[error(
        "invalid pattern ({pattern}) in substitution: invalid escape '\\{}'",
        escaped.map(String::from).unwrap_or_default()
    )]
    InvalidPattern {
        /// The pattern after expansion, escapes kept.
        pattern: String,
        /// The character after the backslash, `None` when the pattern ends with it.
        escaped: Option<char>,
        /// Byte offset of the `$`.
        offset: usize,
    },
    /// Substitutions nested deeper than kiln allows (BuildKit has no limit; kiln keeps its stack).
    #[error("substitutions nested deeper than {limit} levels")]
    TooDeep {
        /// The nesting limit.
        limit: usize,
        /// Byte offset of the `$` that went one level too deep.
        offset: usize,
    },
    /// The expansion would grow past the limit on one word (kiln's, see
    /// [`MAX_WORD_LEN`](super::MAX_WORD_LEN)); stopped before it did.
    #[error("expansion longer than {limit} bytes")]
    TooLong {
        /// The limit in bytes.
        limit: usize,
        /// Byte offset of the construct whose value did not fit (a `$`, a quote, a character).
        offset: usize,
    },
}

impl ShellError {
    /// Byte offset in the expanded text where the offending construct starts.
    pub fn offset(&self) -> usize {
        match self {
            Self::UnterminatedSingleQuote { offset }
            | Self::UnterminatedDoubleQuote { offset }
            | Self::MissingBrace { offset }
            | Self::MissingSlash { offset }
            | Self::BadSubstitution { offset }
            | Self::UnsupportedModifier { offset, .. }
            | Self::UnsetVariable { offset, .. }
            | Self::EmptyVariable { offset, .. }
            | Self::InvalidPattern { offset, .. }
            | Self::TooDeep { offset, .. }
            | Self::TooLong { offset, .. } => *offset,
        }
    }
}
