//! The Dockerfile syntax tree: one [`Node`] per instruction, with raw (unexpanded) text and spans.
//!
//! invariant: the tree keeps BuildKit's argument shapes (what `parser::dump` prints); no word
//! expansion happens here. The typed layer (`crate::instructions`) gives the arguments meaning.

use crate::diagnostic::Span;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ast {
    /// Parser directives found at the top of the file.
    pub directives: Directives,
    /// The escape character in effect (`\` unless `# escape=` changed it to a backtick).
    pub escape: char,
    /// The instructions in source order.
    pub nodes: Vec<Node>,
    /// Non-fatal problems BuildKit also warns about (e.g. empty continuation lines).
    pub warnings: Vec<Warning>,
}

/// The parser directives (`# syntax=`, `# escape=`, `# check=`), each at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    /// `# syntax=` (the frontend image; kiln records it but always uses its own frontend).
    pub syntax: Option<Directive>,
    /// `# escape=` (`\` or a backtick).
    pub escape: Option<Directive>,
    /// `# check=` (build-check configuration, kept raw).
    pub check: Option<Directive>,
}

/// One parser directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Lower-case directive name.
    pub name: String,
    /// The value, with surrounding whitespace trimmed.
    pub value: String,
    /// Where the directive's line starts.
    pub span: Span,
}

/// A non-fatal problem found while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// What is wrong, as BuildKit words it.
    pub message: String,
    /// Where.
    pub span: Span,
}

/// The Dockerfile instructions kiln knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Keyword {
    /// `ADD`
    Add,
    /// `ARG`
    Arg,
    /// `CMD`
    Cmd,
    /// `COPY`
    Copy,
    /// `ENTRYPOINT`
    Entrypoint,
    /// `ENV`
    Env,
    /// `EXPOSE`
    Expose,
    /// `FROM`
    From,
    /// `HEALTHCHECK`
    Healthcheck,
    /// `LABEL`
    Label,
    /// `MAINTAINER` (deprecated)
    Maintainer,
    /// `ONBUILD`
    Onbuild,
    /// `RUN`
    Run,
    /// `SHELL`
    Shell,
    /// `STOPSIGNAL`
    StopSignal,
    /// `USER`
    User,
    /// `VOLUME`
    Volume,
    /// `WORKDIR`
    Workdir,
}

impl Keyword {
    /// Every keyword, in alphabetical order.
    pub const ALL: [Keyword; 18] = [
        Keyword::Add,
        Keyword::Arg,
        Keyword::Cmd,
        Keyword::Copy,
        Keyword::Entrypoint,
        Keyword::Env,
        Keyword::Expose,
        Keyword::From,
        Keyword::Healthcheck,
        Keyword::Label,
        Keyword::Maintainer,
        Keyword::Onbuild,
        Keyword::Run,
        Keyword::Shell,
        Keyword::StopSignal,
        Keyword::User,
        Keyword::Volume,
        Keyword::Workdir,
    ];

    /// The keyword's canonical upper-case spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Keyword::Add => "ADD",
            Keyword::Arg => "ARG",
            Keyword::Cmd => "CMD",
            Keyword::Copy => "COPY",
            Keyword::Entrypoint => "ENTRYPOINT",
            Keyword::Env => "ENV",
            Keyword::Expose => "EXPOSE",
            Keyword::From => "FROM",
            Keyword::Healthcheck => "HEALTHCHECK",
            Keyword::Label => "LABEL",
            Keyword::Maintainer => "MAINTAINER",
            Keyword::Onbuild => "ONBUILD",
            Keyword::Run => "RUN",
            Keyword::Shell => "SHELL",
            Keyword::StopSignal => "STOPSIGNAL",
            Keyword::User => "USER",
            Keyword::Volume => "VOLUME",
            Keyword::Workdir => "WORKDIR",
        }
    }

    /// Look an instruction name up, in any case.
    pub fn from_name(name: &str) -> Option<Keyword> {
        Keyword::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(name))
    }

    /// Whether BuildKit reads heredoc bodies after this instruction (RUN, COPY, ADD in shell form).
    pub fn takes_heredocs(self) -> bool {
        matches!(self, Keyword::Run | Keyword::Copy | Keyword::Add)
    }
}

/// One instruction as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Which instruction.
    pub keyword: Keyword,
    /// The instruction name as written (any case).
    pub name: String,
    /// Flags (`--name=value`, `--name`) from the start of the arguments, unquoted, in order.
    pub flags: Vec<Flag>,
    /// The arguments in BuildKit's shape: exec-form elements, the shell-form rest of the line,
    /// `key value =` triples for ENV/LABEL, and so on. Empty for ONBUILD (see `trigger`).
    pub args: Vec<Word>,
    /// Whether the arguments came from a JSON (exec form) array.
    pub json: bool,
    /// For ONBUILD: the trigger instruction.
    pub trigger: Option<Box<Node>>,
    /// Heredoc bodies read after the instruction line, in the order their markers appear.
    pub heredocs: Vec<Heredoc>,
    /// The whole logical line (continuations joined, comment lines dropped).
    pub original: String,
    /// Where the instruction name starts (its length is the name's length).
    pub span: Span,
    /// The last source line of the instruction (continuations and heredoc bodies included).
    pub end_line: u32,
    /// Comment lines directly above the instruction, without the `#`.
    pub comments: Vec<String>,
}

/// A flag such as `--from=build` or `--link`, with quotes and escapes removed as BuildKit does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// The flag as BuildKit's dump shows it: `--name=value` or `--name`.
    pub raw: String,
    /// The name, without the leading dashes.
    pub name: String,
    /// The value after `=`, if any.
    pub value: Option<String>,
    /// Where the flag starts.
    pub span: Span,
}

/// One argument of an instruction (raw: quotes, escapes and `$VAR`s as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The text.
    pub value: String,
    /// Where it starts in the source (for synthesized `=` markers: the key's position).
    pub span: Span,
}

/// A heredoc body (`<<EOF ... EOF`) attached to RUN, COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The terminator word, unquoted (`EOF` for `<<"EOF"`).
    pub name: String,
    /// The body, each line with its newline; with `<<-`, leading tabs already removed.
    pub content: String,
    /// False when the terminator was quoted (`<<"EOF"`, `<<'EOF'`): no expansion of the body.
    pub expand: bool,
    /// True for `<<-` (leading tabs stripped from the body and the terminator line).
    pub chomp: bool,
    /// The file descriptor digits before `<<` (`3<<EOF`), if any.
    pub fd: Option<u32>,
    /// Where the `<<` marker is.
    pub span: Span,
    /// The first line of the body.
    pub body_line: u32,
}
