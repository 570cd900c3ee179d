//! Build checks: BuildKit's Dockerfile lint rules, with their names, messages and locations.
//!
//! Rules about the text alone (casing, stage names, MAINTAINER, empty continuation lines) run
//! over the whole file ([`syntax`]); rules that need the lowering's knowledge (the ARG and ENV
//! in scope, the base image's config, the expanded words) run from hooks in the lowering, on the
//! stages it lowers. Both report into one [`Linter`], which applies the configuration: the
//! `# check=skip=A,B;error=true` directive or the `BUILDKIT_DOCKERFILE_CHECK` build arg (which
//! replaces the directive), narrowed per instruction by a `# check=` comment right above it.
//!
//! invariant: a rule never changes what is built; a finding always carries a span into the
//! Dockerfile it was found in.

mod ignore;
pub(crate) mod syntax;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

use crate::ast::Ast;
use crate::diagnostic::{Diagnostic, Span};

pub(crate) use ignore::{IgnoreMatcher, clean as clean_path};

/// The build-arg that configures the checks, replacing the file's `# check=` directive.
pub const CHECK_BUILD_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

/// One of BuildKit's lint rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// Stage names should be lowercase.
    StageNameCasing,
    /// `as` should match the case of `from`.
    FromAsCasing,
    /// Empty continuation lines.
    NoEmptyContinuation,
    /// Instructions should all be upper or all lower case.
    ConsistentInstructionCasing,
    /// Stage names should be unique.
    DuplicateStageName,
    /// `scratch` and `context` are not stage names.
    ReservedStageName,
    /// CMD and ENTRYPOINT in exec form.
    JsonArgsRecommended,
    /// MAINTAINER is deprecated.
    MaintainerDeprecated,
    /// FROM uses an ARG nobody declared.
    UndefinedArgInFrom,
    /// A relative WORKDIR before any absolute one.
    WorkdirRelativePath,
    /// A variable used before it is defined.
    UndefinedVar,
    /// Several CMD, ENTRYPOINT or HEALTHCHECK in one stage.
    MultipleInstructionsDisallowed,
    /// `ENV key value` instead of `ENV key=value`.
    LegacyKeyValueFormat,
    /// The base image's platform is not the one asked for.
    InvalidBaseImagePlatform,
    /// `FROM --platform=$TARGETPLATFORM`.
    RedundantTargetPlatform,
    /// ARG or ENV keys that look like secrets.
    SecretsUsedInArgOrEnv,
    /// A global ARG's default makes an invalid base image name.
    InvalidDefaultArgInFrom,
    /// `FROM --platform=linux/amd64` (a constant).
    FromPlatformFlagConstDisallowed,
    /// COPY or ADD of a file `.dockerignore` excludes.
    CopyIgnoredFile,
    /// A comment above FROM or ARG that is not a description (experimental).
    InvalidDefinitionDescription,
    /// EXPOSE with an upper-case protocol.
    ExposeProtoCasing,
    /// EXPOSE with an IP address or host port.
    ExposeInvalidFormat,
}

impl Rule {
    /// Every rule, in BuildKit's order.
    pub const ALL: [Rule; 22] = [
        Rule::StageNameCasing,
        Rule::FromAsCasing,
        Rule::NoEmptyContinuation,
        Rule::ConsistentInstructionCasing,
        Rule::DuplicateStageName,
        Rule::ReservedStageName,
        Rule::JsonArgsRecommended,
        Rule::MaintainerDeprecated,
        Rule::UndefinedArgInFrom,
        Rule::WorkdirRelativePath,
        Rule::UndefinedVar,
        Rule::MultipleInstructionsDisallowed,
        Rule::LegacyKeyValueFormat,
        Rule::InvalidBaseImagePlatform,
        Rule::RedundantTargetPlatform,
        Rule::SecretsUsedInArgOrEnv,
        Rule::InvalidDefaultArgInFrom,
        Rule::FromPlatformFlagConstDisallowed,
        Rule::CopyIgnoredFile,
        Rule::InvalidDefinitionDescription,
        Rule::ExposeProtoCasing,
        Rule::ExposeInvalidFormat,
    ];

    /// The rule's name, as in `# check=skip=NAME`.
    pub fn name(self) -> &'static str {
        match self {
            Rule::StageNameCasing => "StageNameCasing",
            Rule::FromAsCasing => "FromAsCasing",
            Rule::NoEmptyContinuation => "NoEmptyContinuation",
            Rule::ConsistentInstructionCasing => "ConsistentInstructionCasing",
            Rule::DuplicateStageName => "DuplicateStageName",
            Rule::ReservedStageName => "ReservedStageName",
            Rule::JsonArgsRecommended => "JSONArgsRecommended",
            Rule::MaintainerDeprecated => "MaintainerDeprecated",
            Rule::UndefinedArgInFrom => "UndefinedArgInFrom",
            Rule::WorkdirRelativePath => "WorkdirRelativePath",
            Rule::UndefinedVar => "UndefinedVar",
            Rule::MultipleInstructionsDisallowed => "MultipleInstructionsDisallowed",
            Rule::LegacyKeyValueFormat => "LegacyKeyValueFormat",
            Rule::InvalidBaseImagePlatform => "InvalidBaseImagePlatform",
            Rule::RedundantTargetPlatform => "RedundantTargetPlatform",
            Rule::SecretsUsedInArgOrEnv => "SecretsUsedInArgOrEnv",
            Rule::InvalidDefaultArgInFrom => "InvalidDefaultArgInFrom",
            Rule::FromPlatformFlagConstDisallowed => "FromPlatformFlagConstDisallowed",
            Rule::CopyIgnoredFile => "CopyIgnoredFile",
            Rule::InvalidDefinitionDescription => "InvalidDefinitionDescription",
            Rule::ExposeProtoCasing => "ExposeProtoCasing",
            Rule::ExposeInvalidFormat => "ExposeInvalidFormat",
        }
    }

    /// What the rule asks for (BuildKit's description).
    pub fn description(self) -> &'static str {
        match self {
            Rule::StageNameCasing => "Stage names should be lowercase",
            Rule::FromAsCasing => "The 'as' keyword should match the case of the 'from' keyword",
            Rule::NoEmptyContinuation => {
                "Empty continuation lines will become errors in a future release"
            }
            Rule::ConsistentInstructionCasing => {
                "All commands within the Dockerfile should use the same casing (either upper or lower)"
            }
            Rule::DuplicateStageName => "Stage names should be unique",
            Rule::ReservedStageName => "Reserved words should not be used as stage names",
            Rule::JsonArgsRecommended => {
                "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals"
            }
            Rule::MaintainerDeprecated => {
                "The MAINTAINER instruction is deprecated, use a label instead to define an image author"
            }
            Rule::UndefinedArgInFrom => "FROM command must use declared ARGs",
            Rule::WorkdirRelativePath => {
                "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes"
            }
            Rule::UndefinedVar => "Variables should be defined before their use",
            Rule::MultipleInstructionsDisallowed => {
                "Multiple instructions of the same type should not be used in the same stage"
            }
            Rule::LegacyKeyValueFormat => {
                "Legacy key/value format with whitespace separator should not be used"
            }
            Rule::InvalidBaseImagePlatform => {
                "Base image platform does not match expected target platform"
            }
            Rule::RedundantTargetPlatform => {
                "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior"
            }
            Rule::SecretsUsedInArgOrEnv => {
                "Sensitive data should not be used in the ARG or ENV commands"
            }
            Rule::InvalidDefaultArgInFrom => {
                "Default value for global ARG results in an empty or invalid base image name"
            }
            Rule::FromPlatformFlagConstDisallowed => {
                "FROM --platform flag should not use a constant value"
            }
            Rule::CopyIgnoredFile => "Attempting to Copy file that is excluded by .dockerignore",
            Rule::InvalidDefinitionDescription => {
                "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment."
            }
            Rule::ExposeProtoCasing => "Protocol in EXPOSE instruction should be lowercase",
            Rule::ExposeInvalidFormat => {
                "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release"
            }
        }
    }

    /// The rule's documentation page (none for InvalidBaseImagePlatform, as in BuildKit).
    pub fn url(self) -> Option<String> {
        let slug = match self {
            Rule::StageNameCasing => "stage-name-casing",
            Rule::FromAsCasing => "from-as-casing",
            Rule::NoEmptyContinuation => "no-empty-continuation",
            Rule::ConsistentInstructionCasing => "consistent-instruction-casing",
            Rule::DuplicateStageName => "duplicate-stage-name",
            Rule::ReservedStageName => "reserved-stage-name",
            Rule::JsonArgsRecommended => "json-args-recommended",
            Rule::MaintainerDeprecated => "maintainer-deprecated",
            Rule::UndefinedArgInFrom => "undefined-arg-in-from",
            Rule::WorkdirRelativePath => "workdir-relative-path",
            Rule::UndefinedVar => "undefined-var",
            Rule::MultipleInstructionsDisallowed => "multiple-instructions-disallowed",
            Rule::LegacyKeyValueFormat => "legacy-key-value-format",
            Rule::InvalidBaseImagePlatform => return None,
            Rule::RedundantTargetPlatform => "redundant-target-platform",
            Rule::SecretsUsedInArgOrEnv => "secrets-used-in-arg-or-env",
            Rule::InvalidDefaultArgInFrom => "invalid-default-arg-in-from",
            Rule::FromPlatformFlagConstDisallowed => "from-platform-flag-const-disallowed",
            Rule::CopyIgnoredFile => "copy-ignored-file",
            Rule::InvalidDefinitionDescription => "invalid-definition-description",
            Rule::ExposeProtoCasing => "expose-proto-casing",
            Rule::ExposeInvalidFormat => "expose-invalid-format",
        };
        Some(format!(
            "https://docs.docker.com/go/dockerfile/rule/{slug}/"
        ))
    }

    /// Whether the rule runs only when enabled with `experimental=`.
    pub fn experimental(self) -> bool {
        self == Rule::InvalidDefinitionDescription
    }

    /// The rule of that name (exact, as BuildKit matches them).
    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The check configuration: `skip=A,B|all;experimental=C|all;error=true`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    /// `skip=all`.
    pub skip_all: bool,
    /// `skip=A,B`.
    pub skip: BTreeSet<String>,
    /// `experimental=all`.
    pub experimental_all: bool,
    /// `experimental=A,B`.
    pub experimental: BTreeSet<String>,
    /// `error=true`: a build with findings fails.
    pub error: bool,
}

/// A `# check=` value or `BUILDKIT_DOCKERFILE_CHECK` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to parse check options: {0}")]
pub struct CheckConfigError(pub String);

impl CheckConfig {
    /// Parses BuildKit's check options (at most three `;`-separated `key=value` parts).
    pub fn parse(text: &str) -> Result<CheckConfig, CheckConfigError> {
        let mut cfg = CheckConfig::default();
        let text = text.trim();
        if text.is_empty() {
            return Ok(cfg);
        }
        let list = |v: &str| -> (bool, BTreeSet<String>) {
            let v = v.trim();
            if v == "all" {
                (true, BTreeSet::new())
            } else {
                (false, v.split(',').map(|r| r.trim().to_owned()).collect())
            }
        };
        for part in text.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(CheckConfigError(format!("invalid check option {part:?}")));
            };
            match k.trim() {
                "skip" => (cfg.skip_all, cfg.skip) = list(v),
                "experimental" => (cfg.experimental_all, cfg.experimental) = list(v),
                "error" => {
                    cfg.error = parse_go_bool(v.trim()).ok_or_else(|| {
                        CheckConfigError(format!(
                            "invalid check option {part:?}: {:?} is not a boolean",
                            v.trim()
                        ))
                    })?;
                }
                other => return Err(CheckConfigError(format!("invalid check option {other:?}"))),
            }
        }
        Ok(cfg)
    }

    /// This configuration narrowed by `other` (a `# check=` comment above one instruction):
    /// skips and experimental rules add up; `error` stays the file's.
    fn merged(&self, other: &CheckConfig) -> CheckConfig {
        let mut out = self.clone();
        out.skip_all |= other.skip_all;
        out.experimental_all |= other.experimental_all;
        out.skip.extend(other.skip.iter().cloned());
        out.experimental.extend(other.experimental.iter().cloned());
        out
    }

    /// Whether `rule` runs under this configuration.
    pub fn enabled(&self, rule: Rule) -> bool {
        if rule.experimental() {
            self.experimental_all || self.experimental.contains(rule.name())
        } else {
            !self.skip_all && !self.skip.contains(rule.name())
        }
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// One rule that fired: which, what BuildKit says, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule.
    pub rule: Rule,
    /// The message, as BuildKit words it.
    pub message: String,
    /// Where (the instruction, or the word at fault).
    pub span: Span,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.message)
    }
}

impl Diagnostic for Finding {
    fn span(&self) -> Span {
        self.span
    }

    fn help(&self) -> Option<String> {
        self.rule.url()
    }
}

/// What the checks found in one Dockerfile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The findings, in file order.
    pub findings: Vec<Finding>,
    /// Whether the configuration says findings fail the build (`error=true`).
    pub error: bool,
}

impl Report {
    /// BuildKit's error for a build with findings under `error=true`: `lint violation found
    /// for rules: A, B` (each rule once, in file order); `None` when the build may go on.
    pub fn violation(&self) -> Option<String> {
        if !self.error || self.findings.is_empty() {
            return None;
        }
        let mut rules: Vec<&str> = Vec::new();
        for f in &self.findings {
            if !rules.contains(&f.rule.name()) {
                rules.push(f.rule.name());
            }
        }
        Some(format!(
            "lint violation found for rules: {}",
            rules.join(", ")
        ))
    }
}

/// Collects findings under a configuration.
#[derive(Debug, Default)]
pub struct Linter {
    config: CheckConfig,
    /// `# check=` comments above an instruction, by the instruction's line.
    per_line: HashMap<u32, CheckConfig>,
    findings: Vec<Finding>,
    /// Lines of ENV and LABEL instructions written in the legacy `key value` form.
    pub(crate) legacy_kv: BTreeSet<u32>,
    /// Variables words referenced while unset since the last [`Linter::take_unset`].
    unset: RefCell<Vec<(String, Span)>>,
    /// What the stage rules remember, by stage index.
    pub(crate) stages: HashMap<usize, StageFacts>,
    /// The `.dockerignore` matcher, made on first use (`None` inside: nothing to check).
    pub(crate) ignore: Option<Option<IgnoreMatcher>>,
    /// "did you mean" searches done so far (each reads every name in scope; bounded, so a
    /// file full of undefined variables stays linear).
    suggestions: usize,
}

/// The most "did you mean" searches one Dockerfile gets.
const MAX_SUGGESTIONS: usize = 64;

/// What the rules that look across a stage remember about it.
#[derive(Debug, Clone, Default)]
pub(crate) struct StageFacts {
    /// A WORKDIR was set (in this stage or the stage it is built on).
    pub(crate) workdir_set: bool,
    /// The last CMD, ENTRYPOINT and HEALTHCHECK: their line and span.
    pub(crate) cmd: Option<(u32, Span)>,
    pub(crate) entrypoint: Option<(u32, Span)>,
    pub(crate) healthcheck: Option<(u32, Span)>,
}

impl Linter {
    /// A linter for `ast`: the configuration is `check_arg` (the `BUILDKIT_DOCKERFILE_CHECK`
    /// build arg) when given, else the file's `# check=` directive; the text-only rules run
    /// at once.
    pub fn new(ast: &Ast, check_arg: Option<&str>) -> Result<Linter, (Span, CheckConfigError)> {
        let (text, span) = match (check_arg, &ast.directives.check) {
            (Some(v), _) => (v, Span::default()),
            (None, Some(d)) => (d.value.as_str(), d.span),
            (None, None) => ("", Span::default()),
        };
        let config = CheckConfig::parse(text).map_err(|e| (span, e))?;
        let mut linter = Linter {
            config,
            ..Linter::default()
        };
        for node in &ast.nodes {
            if let Some(c) = check_comment(&node.comments) {
                linter.per_line.insert(node.span.line, c);
            }
        }
        syntax::check(ast, &mut linter);
        Ok(linter)
    }

    /// Reports `rule` for the instruction starting at line `line`, pointing at `span`.
    pub(crate) fn report(&mut self, rule: Rule, line: u32, span: Span, message: String) {
        let enabled = match self.per_line.get(&line) {
            Some(c) => self.config.merged(c).enabled(rule),
            None => self.config.enabled(rule),
        };
        if enabled {
            self.findings.push(Finding {
                rule,
                message,
                span,
            });
        }
    }

    /// Notes variables a word referenced while they were unset (for UndefinedVar and
    /// UndefinedArgInFrom); `word` is where the word starts.
    pub(crate) fn note_unset<'s>(&self, names: impl IntoIterator<Item = &'s String>, word: Span) {
        let mut unset = self.unset.borrow_mut();
        for n in names {
            if !unset.iter().any(|(m, _)| m == n) {
                unset.push((n.clone(), word));
            }
        }
    }

    /// Whether a "did you mean" search may run (counts it).
    pub(crate) fn spend_suggestion(&mut self) -> bool {
        self.suggestions += 1;
        self.suggestions <= MAX_SUGGESTIONS
    }

    /// The unset variables noted since the last call.
    pub(crate) fn take_unset(&self) -> Vec<(String, Span)> {
        std::mem::take(&mut *self.unset.borrow_mut())
    }

    /// The findings so far, in file order (the order rules fired in within a line).
    pub fn finish(mut self) -> Report {
        self.findings.sort_by_key(|f| (f.span.line, f.span.column));
        self.findings.dedup();
        Report {
            findings: self.findings,
            error: self.config.error,
        }
    }
}

/// The first `check=` directive among comment lines (BuildKit reads the value up to its first
/// space, and ignores one that does not parse).
fn check_comment(comments: &[String]) -> Option<CheckConfig> {
    for c in comments {
        let Some((name, value)) = c.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("check") {
            continue;
        }
        let value = value.trim();
        let value = value.split(' ').next().unwrap_or_default();
        return CheckConfig::parse(value).ok();
    }
    None
}

/// BuildKit's test for keys that look like secrets: a `_`-separated part (or the whole key)
/// is one of its secret words, and none is one of its allowed words (case-insensitive).
pub(crate) fn looks_secret(key: &str) -> bool {
    const DENY: [&str; 10] = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    const ALLOW: [&str; 3] = ["public", "file", "version"];
    let has = |words: &[&str]| {
        key.split('_')
            .any(|part| words.iter().any(|w| part.eq_ignore_ascii_case(w)))
    };
    has(&DENY) && !has(&ALLOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_like_buildkit() {
        let c = CheckConfig::parse("skip=JSONArgsRecommended, StageNameCasing;error=true").unwrap();
        assert!(c.error);
        assert!(!c.enabled(Rule::JsonArgsRecommended));
        assert!(!c.enabled(Rule::StageNameCasing));
        assert!(c.enabled(Rule::UndefinedVar));
        assert!(!c.enabled(Rule::InvalidDefinitionDescription));
        let all = CheckConfig::parse("skip=all").unwrap();
        assert!(Rule::ALL.iter().all(|r| !all.enabled(*r)));
        let exp = CheckConfig::parse("experimental=all;error=1").unwrap();
        assert!(exp.enabled(Rule::InvalidDefinitionDescription) && exp.error);
        assert_eq!(CheckConfig::parse("").unwrap(), CheckConfig::default());
        assert_eq!(
            CheckConfig::parse("skip").unwrap_err().to_string(),
            "failed to parse check options: invalid check option \"skip\""
        );
        assert_eq!(
            CheckConfig::parse("nope=1").unwrap_err().to_string(),
            "failed to parse check options: invalid check option \"nope\""
        );
        assert!(CheckConfig::parse("error=maybe").is_err());
    }

    #[test]
    fn every_rule_has_a_name_and_but_one_a_page() {
        for r in Rule::ALL {
            assert_eq!(Rule::from_name(r.name()), Some(r));
            assert_eq!(r.url().is_none(), r == Rule::InvalidBaseImagePlatform);
        }
        assert_eq!(
            Rule::JsonArgsRecommended.url().unwrap(),
            "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"
        );
    }

    #[test]
    fn secret_keys() {
        for k in [
            "AWS_SECRET_ACCESS_KEY",
            "api_key",
            "GITHUB_TOKEN",
            "password",
            "APIKEY",
        ] {
            assert!(looks_secret(k), "{k}");
        }
        for k in [
            "PUBLIC_KEY",
            "KEY_FILE",
            "VERSION",
            "monkey",
            "my-key",
            "tokens",
            "PATH",
        ] {
            assert!(!looks_secret(k), "{k}");
        }
    }

    #[test]
    fn comment_directive() {
        let c = check_comment(&["hello".into(), "check=skip=UndefinedVar more".into()]).unwrap();
        assert!(!c.enabled(Rule::UndefinedVar));
        assert_eq!(check_comment(&["check=bad".into()]), None);
    }

    #[test]
    fn violation_names_each_rule_once() {
        let f = |rule, line| Finding {
            rule,
            message: String::new(),
            span: Span::new(line, 1, 1),
        };
        let mut r = Report {
            findings: vec![
                f(Rule::UndefinedVar, 2),
                f(Rule::JsonArgsRecommended, 3),
                f(Rule::UndefinedVar, 4),
            ],
            error: false,
        };
        assert_eq!(r.violation(), None);
        r.error = true;
        assert_eq!(
            r.violation().unwrap(),
            "lint violation found for rules: UndefinedVar, JSONArgsRecommended"
        );
    }
}
