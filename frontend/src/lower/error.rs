//! Errors of lowering: each has a span into the Dockerfile and a kind.

use crate::diagnostic::{Diagnostic, Span};
use crate::parser::ParseError;
use crate::shell::ShellError;

/// A Dockerfile that parses but cannot be lowered: what is wrong ([`LowerErrorKind`]) and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct LowerError {
    /// Where the problem is.
    pub span: Span,
    /// What the problem is (boxed: errors stay one pointer wide on the happy path).
    pub kind: Box<LowerErrorKind>,
}

impl LowerError {
    /// An error of `kind` at `span`.
    pub fn new(span: Span, kind: LowerErrorKind) -> Self {
        Self {
            span,
            kind: Box::new(kind),
        }
    }
}

impl From<ParseError> for LowerError {
    fn from(e: ParseError) -> Self {
        Self {
            span: e.span,
            kind: Box::new(LowerErrorKind::Parse(e)),
        }
    }
}

impl Diagnostic for LowerError {
    fn span(&self) -> Span {
        self.span
    }

    fn help(&self) -> Option<String> {
        match &*self.kind {
            LowerErrorKind::Parse(e) => e.help(),
            LowerErrorKind::FromVariable => Some(
                "define a new stage with FROM using ARG from global scope as a workaround".into(),
            ),
            LowerErrorKind::CopyFromLater { .. } => {
                Some("move the stage you copy from above this one".into())
            }
            LowerErrorKind::UnsupportedNetwork { .. } => {
                Some("--network takes default, none or host".into())
            }
            LowerErrorKind::UnsupportedSecurity { .. } => {
                Some("--security takes sandbox or insecure".into())
            }
            _ => None,
        }
    }
}

/// Everything that can be wrong while giving a parsed Dockerfile its meaning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LowerErrorKind {
    /// The typed layer rejected an instruction (argument counts, flags).
    #[error("{0}")]
    Parse(ParseError),
    /// A `# check=` directive (or `BUILDKIT_DOCKERFILE_CHECK`) that does not parse.
    #[error("{0}")]
    CheckOptions(crate::lint::CheckConfigError),
    /// Only ARGs (or nothing) before the end of the file.
    #[error("dockerfile contains no stages to build")]
    NoStages,
    /// An instruction other than ARG before the first FROM.
    #[error("no build stage in current context")]
    NoBuildStage,
    /// Word expansion failed.
    #[error("failed to process {word:?}: {source}")]
    Expand {
        /// The word as written.
        word: String,
        /// Why it failed.
        source: ShellError,
    },
    /// The Dockerfile expands to more than [`MAX_EXPANSION_TOTAL`](super::MAX_EXPANSION_TOTAL).
    #[error("expansion of the Dockerfile exceeds {limit} bytes in total")]
    TooMuchExpansion {
        /// The limit in bytes.
        limit: usize,
    },
    /// `FROM $EMPTY`.
    #[error("base name ({written}) should not be blank")]
    BlankBaseName {
        /// The image as written.
        written: String,
    },
    /// `FROM --platform=` with a value that expands to nothing.
    #[error("empty platform value from expression {written}")]
    EmptyPlatform {
        /// The flag value as written.
        written: String,
    },
    /// `--platform` that is not `os/arch[/variant]`.
    #[error("failed to parse platform {value}")]
    InvalidPlatform {
        /// The expanded value.
        value: String,
    },
    /// `--target` names no stage.
    #[error("target stage {name:?} could not be found{}", did_you_mean(suggestion))]
    UnknownTarget {
        /// The requested target.
        name: String,
        /// A stage name close to it.
        suggestion: Option<String>,
    },
    /// Two stages with one name.
    #[error("duplicate stage name {name:?}, stage names should be unique")]
    DuplicateStage {
        /// The (lower-cased) name.
        name: String,
    },
    /// `COPY --from=7` with fewer stages.
    #[error("invalid stage index {index}")]
    InvalidStageIndex {
        /// The index given.
        index: i64,
    },
    /// Stages that depend on each other.
    #[error("circular dependency detected on stage: {stage}")]
    Cycle {
        /// The stage where the cycle was found.
        stage: String,
    },
    /// `COPY --from=$X`.
    #[error(
        "variable expansion is not supported for --from, define a new stage with FROM using ARG \
         from global scope as a workaround"
    )]
    FromVariable,
    /// `RUN --mount=from=$X`.
    #[error("'from' doesn't support variable expansion, define alias stage instead")]
    MountFromVariable,
    /// `COPY --from=later` where the stage comes after the current one.
    #[error(
        "cannot copy from stage {from:?}, it needs to be defined before current stage {stage:?}"
    )]
    CopyFromLater {
        /// The `--from` value.
        from: String,
        /// The current stage.
        stage: String,
    },
    /// The image resolver failed.
    #[error("{reference}: {message}")]
    Resolve {
        /// The reference as written (after expansion).
        reference: String,
        /// The resolver's message.
        message: String,
    },
    /// A bad `RUN --mount`.
    #[error("{0}")]
    Mount(MountError),
    /// `RUN --network=x`.
    #[error("unsupported network mode {value:?}")]
    UnsupportedNetwork {
        /// The value given.
        value: String,
    },
    /// `RUN --security=x`.
    #[error("unsupported security mode {value:?}")]
    UnsupportedSecurity {
        /// The value given.
        value: String,
    },
    /// `--chmod` that is neither octal nor a symbolic mode.
    #[error(
        "invalid chmod parameter: '{value}'. it should be octal string and between 0 and 07777"
    )]
    InvalidChmod {
        /// The value given.
        value: String,
    },
    /// `COPY --checksum` (only ADD takes it).
    #[error("checksum can't be specified for COPY")]
    ChecksumOnCopy,
    /// `ADD --checksum` with several sources.
    #[error("checksum can't be specified for multiple sources")]
    ChecksumMultipleSources,
    /// `ADD --checksum` with a local source.
    #[error("checksum requires HTTP(S) or Git sources")]
    ChecksumNeedsRemote,
    /// `COPY https://...`.
    #[error("source can't be a URL for COPY")]
    UrlInCopy,
    /// `COPY git@...`.
    #[error("source can't be a git ref for COPY")]
    GitInCopy,
    /// `ADD` of a git repository (no git source in the graph yet).
    #[error("git sources are not supported yet: {url}")]
    GitUnsupported {
        /// The source as written.
        url: String,
    },
    /// `COPY <<EOF` with no matching heredoc body.
    #[error("no heredoc body for {name}")]
    MissingHeredoc {
        /// The heredoc name.
        name: String,
    },
    /// `EXPOSE` with a bad port.
    #[error("invalid containerPort: {port}")]
    InvalidPort {
        /// The port as written.
        port: String,
    },
    /// `EXPOSE 80/xyz`.
    #[error("invalid proto: {proto}")]
    InvalidProto {
        /// The protocol as written.
        proto: String,
    },
    /// `STOPSIGNAL` with an unknown signal.
    #[error("Invalid signal: {signal}")]
    InvalidSignal {
        /// The signal as written.
        signal: String,
    },
    /// `VOLUME $EMPTY`.
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    /// An ONBUILD trigger of the base that does not parse.
    #[error("invalid ONBUILD trigger {trigger:?}: {source}")]
    Trigger {
        /// The trigger text.
        trigger: String,
        /// Why it was rejected.
        source: ParseError,
    },
    /// `WORKDIR $EMPTY`.
    #[error("WORKDIR path can not be empty")]
    EmptyWorkdir,
}

/// What is wrong with one `RUN --mount` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    /// The CSV could not be read.
    #[error("failed to parse csv mounts: {reason}")]
    Csv {
        /// Why.
        reason: &'static str,
    },
    /// `type=xyz`.
    #[error("unsupported mount type {value:?}{}", did_you_mean(suggestion))]
    UnsupportedType {
        /// The type given.
        value: String,
        /// A close mount type.
        suggestion: Option<String>,
    },
    /// `sharing=xyz`.
    #[error("unsupported sharing value {value:?}{}", did_you_mean(suggestion))]
    UnsupportedSharing {
        /// The value given.
        value: String,
        /// A close sharing mode.
        suggestion: Option<String>,
    },
    /// A field without `=` that is not a boolean option.
    #[error("invalid field '{field}' must be a key=value pair")]
    NotKeyValue {
        /// The field.
        field: String,
    },
    /// A key the mount type does not take.
    #[error("unexpected key '{key}' for mount type '{kind}'")]
    KeyForType {
        /// The key.
        key: String,
        /// The mount type.
        kind: String,
    },
    /// A key no mount takes.
    #[error("unexpected key '{key}' in '{field}'{}", did_you_mean(suggestion))]
    UnknownKey {
        /// The key.
        key: String,
        /// The whole field.
        field: String,
        /// A close known key.
        suggestion: Option<String>,
    },
    /// A value that does not parse (bool, octal mode, id number, size).
    #[error("invalid value for {key}: {value}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// `mode`, `uid` or `gid` on a bind or tmpfs mount.
    #[error("{key} not allowed for {kind:?} type mounts")]
    FileInfoNotAllowed {
        /// mode, uid or gid.
        key: &'static str,
        /// The mount type.
        kind: String,
    },
    /// A secret with `from`.
    #[error("secret mount should not have a from")]
    SecretFrom,
    /// A secret with `sharing`.
    #[error("secret mount should not define sharing")]
    SecretSharing,
    /// A secret with neither source, target nor id.
    #[error("invalid secret mount. one of source, target required")]
    SecretTarget,
    /// A secret with both source and id.
    #[error("both source and id can't be set")]
    SecretSourceAndId,
    /// `sharing` on something other than a cache.
    #[error("invalid cache sharing set for {kind} mount")]
    SharingNotCache {
        /// The mount type.
        kind: String,
    },
    /// A bind/cache/tmpfs mount without a target, or a target of `/`.
    #[error("invalid mount target {target:?}")]
    InvalidTarget {
        /// The target.
        target: String,
    },
    /// `type=ssh,source=...`.
    #[error("ssh does not support source")]
    SshSource,
}

/// BuildKit's `suggest.WrapError` wording: the hint ends the message, ` (did you mean X?)`.
fn did_you_mean(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    }
}
