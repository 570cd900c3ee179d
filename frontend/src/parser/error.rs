//! Errors of the parser and of the typed instruction layer: each has a span and a kind.

use crate::diagnostic::{Diagnostic, Span};

/// A rejected Dockerfile: what is wrong ([`ErrorKind`]) and where ([`Span`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    /// Where the problem is.
    pub span: Span,
    /// What the problem is.
    pub kind: ErrorKind,
}

impl ParseError {
    /// An error of `kind` at `span`.
    pub fn new(span: Span, kind: ErrorKind) -> Self {
        Self { span, kind }
    }
}

impl Diagnostic for ParseError {
    fn span(&self) -> Span {
        self.span
    }

    fn help(&self) -> Option<String> {
        self.kind.help()
    }
}

fn did_you_mean(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    }
}

/// Everything that can be wrong with a Dockerfile before word expansion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// The file's bytes are not UTF-8 (from [`decode`](super::decode)).
    #[error("invalid UTF-8: byte 0x{byte:02x} in the Dockerfile")]
    InvalidUtf8 {
        /// The first byte that is not part of a valid sequence.
        byte: u8,
    },
    /// The file has no instruction at all (empty, or only comments).
    #[error("file with no instructions")]
    NoInstructions,
    /// An instruction name kiln does not know.
    #[error("unknown instruction: {name}{}", did_you_mean(suggestion))]
    UnknownInstruction {
        /// The name as written.
        name: String,
        /// The closest known instruction, if any is close.
        suggestion: Option<String>,
    },
    /// A parser directive given twice.
    #[error("only one {name} parser directive can be used")]
    DuplicateDirective {
        /// The directive name (lower case).
        name: String,
    },
    /// `# escape=` with something other than `\` or a backtick.
    #[error("invalid escape token '{value}' does not match ` or \\")]
    InvalidEscape {
        /// The value given.
        value: String,
    },
    /// A heredoc whose terminator never appears.
    #[error("unterminated heredoc {name}")]
    UnterminatedHeredoc {
        /// The terminator that was expected.
        name: String,
    },
    /// `ENV key` / `LABEL key` with no value.
    #[error("{instruction} must have two arguments")]
    MissingValue {
        /// ENV or LABEL.
        instruction: &'static str,
    },
    /// A `key=value` list with a word that has no `=`.
    #[error("syntax error - can't find = in {word:?}, must be of the form: name=value")]
    MissingEquals {
        /// The offending word.
        word: String,
    },
    /// A valid JSON array with a non-string element.
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    NotStringArray,
    /// ONBUILD nested more deeply than the parser allows.
    #[error("ONBUILD nested too deeply")]
    OnbuildTooDeep,
    /// A flag the instruction does not take.
    #[error("unknown flag: --{name}{}", did_you_mean(suggestion))]
    UnknownFlag {
        /// The instruction (upper case).
        instruction: &'static str,
        /// The flag name without dashes.
        name: String,
        /// A close flag name the instruction does take (with dashes).
        suggestion: Option<String>,
    },
    /// `--from` and friends without `=value`.
    #[error("missing a value on flag: --{name}")]
    FlagMissingValue {
        /// The flag name.
        name: String,
    },
    /// A boolean flag with a value that is not true/false.
    #[error("expecting boolean value for flag --{name}, not: {value}")]
    FlagNotBool {
        /// The flag name.
        name: String,
        /// The value given.
        value: String,
    },
    /// A flag with a bad value (duration, number, ...).
    #[error("invalid value for flag --{name}: {value:?} ({reason})")]
    FlagInvalidValue {
        /// The flag name.
        name: String,
        /// The value given.
        value: String,
        /// What is expected.
        reason: &'static str,
    },
    /// A single-valued flag given twice.
    #[error("duplicate flag specified: --{name}")]
    DuplicateFlag {
        /// The flag name.
        name: String,
    },
    /// Wrong number of arguments.
    #[error("{instruction} requires {expected}")]
    ArgCount {
        /// The instruction (upper case).
        instruction: &'static str,
        /// e.g. "exactly one argument".
        expected: &'static str,
    },
    /// `FROM image xx name` where `xx` is not `AS`.
    #[error("FROM requires either one or three arguments (FROM image AS name)")]
    FromSyntax,
    /// A stage name that is not `[a-z][a-z0-9-_.]*`.
    #[error(
        "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
    )]
    InvalidStageName {
        /// The name given.
        name: String,
    },
    /// `ENV =value` and similar.
    #[error("{instruction} names can not be blank")]
    BlankName {
        /// ENV, LABEL or ARG.
        instruction: &'static str,
    },
    /// HEALTHCHECK with something other than CMD or NONE.
    #[error("unknown type {kind:?} in HEALTHCHECK (try CMD)")]
    HealthcheckType {
        /// The word given.
        kind: String,
    },
    /// `HEALTHCHECK NONE something`.
    #[error("HEALTHCHECK NONE takes no arguments")]
    HealthcheckNoneArgs,
    /// `HEALTHCHECK CMD` with nothing after it.
    #[error("missing command after HEALTHCHECK CMD")]
    HealthcheckMissingCmd,
    /// SHELL not in JSON form.
    #[error("SHELL requires the arguments to be in JSON form")]
    ShellNotJson,
    /// ONBUILD with a forbidden trigger.
    #[error("{trigger} isn't allowed as an ONBUILD trigger")]
    OnbuildTrigger {
        /// FROM, MAINTAINER or ONBUILD.
        trigger: &'static str,
    },
    /// `VOLUME ""`.
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
}

impl ErrorKind {
    /// Advice for the user, where it helps.
    pub fn help(&self) -> Option<String> {
        match self {
            ErrorKind::InvalidUtf8 { .. } => Some(
                "kiln reads Dockerfiles as UTF-8: convert the file (iconv -t UTF-8)".to_owned(),
            ),
            ErrorKind::UnknownFlag { instruction, .. } => Some(match *instruction {
                "RUN" => "RUN takes --mount, --network and --security".to_owned(),
                "FROM" => "FROM takes only --platform".to_owned(),
                "COPY" => "COPY takes --from, --chown, --chmod, --link, --parents and --exclude"
                    .to_owned(),
                "ADD" => {
                    "ADD takes --chown, --chmod, --link, --exclude, --keep-git-dir, --checksum \
                     and --unpack"
                        .to_owned()
                }
                "HEALTHCHECK" => "HEALTHCHECK takes --interval, --timeout, --start-period, \
                                  --start-interval and --retries"
                    .to_owned(),
                other => format!("{other} takes no flags"),
            }),
            ErrorKind::UnterminatedHeredoc { name } => Some(format!(
                "end the heredoc with a line containing only {name}"
            )),
            ErrorKind::MissingValue { instruction } => Some(format!(
                "use {instruction} key=value or {instruction} key value"
            )),
            ErrorKind::NotStringArray => Some(
                "exec form is a JSON array of strings, e.g. [\"sh\", \"-c\", \"echo hi\"]".into(),
            ),
            ErrorKind::FromSyntax => Some("write FROM image or FROM image AS name".into()),
            ErrorKind::OnbuildTrigger { trigger: "ONBUILD" } => {
                Some("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into())
            }
            _ => None,
        }
    }
}
