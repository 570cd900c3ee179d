//! The typed layer: each syntax-tree [`Node`] becomes an [`Instruction`] with checked argument
//! counts and decoded flags.
//!
//! invariant: no word expansion happens here; every string is raw source text (quotes and
//! `$VAR`s as written) with its span. The lowering expands them with the shell lexer.

use std::time::Duration;

use crate::ast::{Heredoc, Keyword, Node, Word};
use crate::diagnostic::Span;
use crate::parser::{ErrorKind, ParseError, parse_go_duration, validate_flags};

/// A command in shell form (`RUN echo hi`) or exec form (`RUN ["echo", "hi"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellOrExec {
    /// Shell form: the rest of the line, run with the stage's SHELL.
    Shell(Word),
    /// Exec form: the JSON array's elements.
    Exec(Vec<Word>),
}

/// `FROM [--platform=P] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    /// The image reference (or stage name).
    pub image: Word,
    /// The stage name after `AS`, lower-cased as BuildKit does.
    pub name: Option<Word>,
    /// `--platform`.
    pub platform: Option<Word>,
}

/// `RUN [--mount=...] [--network=...] [--security=...] command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The command.
    pub cmd: ShellOrExec,
    /// Each `--mount` value, raw (`type=cache,target=/root/.cache`).
    pub mounts: Vec<Word>,
    /// `--network` (`default`, `none`, `host`).
    pub network: Option<Word>,
    /// `--security` (`sandbox`, `insecure`).
    pub security: Option<Word>,
    /// Heredoc bodies announced on the line.
    pub heredocs: Vec<Heredoc>,
}

/// `COPY [flags] src... dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// Sources (a `<<NAME` source refers to a heredoc in `heredocs`).
    pub sources: Vec<Word>,
    /// Destination.
    pub dest: Word,
    /// `--from` (stage name, stage index or image).
    pub from: Option<Word>,
    /// `--chown`.
    pub chown: Option<Word>,
    /// `--chmod`.
    pub chmod: Option<Word>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// Each `--exclude` pattern.
    pub exclude: Vec<Word>,
    /// Heredoc bodies announced on the line.
    pub heredocs: Vec<Heredoc>,
}

/// `ADD [flags] src... dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    /// Sources (paths, URLs, git repositories, or `<<NAME` heredocs).
    pub sources: Vec<Word>,
    /// Destination.
    pub dest: Word,
    /// `--chown`.
    pub chown: Option<Word>,
    /// `--chmod`.
    pub chmod: Option<Word>,
    /// `--link`.
    pub link: bool,
    /// Each `--exclude` pattern.
    pub exclude: Vec<Word>,
    /// `--checksum`.
    pub checksum: Option<Word>,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--unpack`: `None` when not given (local archives are unpacked, URLs are not).
    pub unpack: Option<bool>,
    /// Heredoc bodies announced on the line.
    pub heredocs: Vec<Heredoc>,
}

/// One `key=value` of ENV or LABEL (raw: quotes kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Word,
    /// The value.
    pub value: Word,
}

/// One `name[=default]` of ARG (raw).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// The name.
    pub name: Word,
    /// The default value, if given.
    pub default: Option<Word>,
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [flags] CMD command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// Disable any inherited health check.
    None,
    /// Run `cmd` to check health.
    Cmd {
        /// The check command.
        cmd: ShellOrExec,
        /// `--interval`.
        interval: Option<Duration>,
        /// `--timeout`.
        timeout: Option<Duration>,
        /// `--start-period`.
        start_period: Option<Duration>,
        /// `--start-interval`.
        start_interval: Option<Duration>,
        /// `--retries`.
        retries: Option<u32>,
    },
}

/// A checked Dockerfile instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// `FROM`
    From(From),
    /// `RUN`
    Run(Run),
    /// `CMD`
    Cmd(ShellOrExec),
    /// `ENTRYPOINT`
    Entrypoint(ShellOrExec),
    /// `COPY`
    Copy(Copy),
    /// `ADD`
    Add(Add),
    /// `ENV`
    Env(Vec<KeyValue>),
    /// `ARG`
    Arg(Vec<ArgDecl>),
    /// `LABEL`
    Label(Vec<KeyValue>),
    /// `WORKDIR`
    Workdir(Word),
    /// `USER`
    User(Word),
    /// `EXPOSE`
    Expose(Vec<Word>),
    /// `VOLUME`
    Volume(Vec<Word>),
    /// `STOPSIGNAL`
    StopSignal(Word),
    /// `HEALTHCHECK`
    Healthcheck(Healthcheck),
    /// `SHELL` (always exec form)
    Shell(Vec<Word>),
    /// `ONBUILD`: the trigger, checked, and its raw text (what goes into the image config).
    Onbuild {
        /// The trigger instruction.
        trigger: Box<Instruction>,
        /// The trigger's source text.
        original: String,
    },
    /// `MAINTAINER` (deprecated)
    Maintainer(Word),
}

impl Instruction {
    /// Check `node` and give its arguments meaning. Flags are validated first
    /// ([`validate_flags`]); then argument counts and shapes, as BuildKit's
    /// `instructions.Parse` does.
    pub fn from_node(node: &Node) -> Result<Instruction, ParseError> {
        validate_flags(node)?;
        let n = Checked { node };
        Ok(match node.keyword {
            Keyword::From => n.from()?,
            Keyword::Run => {
                n.at_least(1, "at least one argument")?;
                n.one_of("network", &["default", "none", "host"])?;
                n.one_of("security", &["sandbox", "insecure"])?;
                Instruction::Run(Run {
                    cmd: n.command(),
                    mounts: n.flag_list("mount"),
                    network: n.flag("network"),
                    security: n.flag("security"),
                    heredocs: node.heredocs.clone(),
                })
            }
            Keyword::Cmd => Instruction::Cmd(n.command()),
            Keyword::Entrypoint => Instruction::Entrypoint(n.command()),
            Keyword::Copy => {
                let (sources, dest) = n.sources_dest()?;
                Instruction::Copy(Copy {
                    sources,
                    dest,
                    from: n.flag("from"),
                    chown: n.flag("chown"),
                    chmod: n.flag("chmod"),
                    link: n.bool_flag("link"),
                    parents: n.bool_flag("parents"),
                    exclude: n.flag_list("exclude"),
                    heredocs: node.heredocs.clone(),
                })
            }
            Keyword::Add => {
                let (sources, dest) = n.sources_dest()?;
                Instruction::Add(Add {
                    sources,
                    dest,
                    chown: n.flag("chown"),
                    chmod: n.flag("chmod"),
                    link: n.bool_flag("link"),
                    exclude: n.flag_list("exclude"),
                    checksum: n.flag("checksum"),
                    keep_git_dir: n.bool_flag("keep-git-dir"),
                    unpack: n.has_flag("unpack").then(|| n.bool_flag("unpack")),
                    heredocs: node.heredocs.clone(),
                })
            }
            Keyword::Env => Instruction::Env(n.key_values()?),
            Keyword::Label => Instruction::Label(n.key_values()?),
            Keyword::Arg => n.arg()?,
            Keyword::Workdir => Instruction::Workdir(n.one()?),
            Keyword::User => Instruction::User(n.one()?),
            Keyword::StopSignal => Instruction::StopSignal(n.one()?),
            Keyword::Maintainer => Instruction::Maintainer(n.one()?),
            Keyword::Expose => {
                n.at_least(1, "at least one argument")?;
                Instruction::Expose(node.args.clone())
            }
            Keyword::Volume => {
                n.at_least(1, "at least one argument")?;
                if let Some(empty) = node.args.iter().find(|w| w.value.trim().is_empty()) {
                    return Err(ParseError::new(empty.span, ErrorKind::EmptyVolume));
                }
                Instruction::Volume(node.args.clone())
            }
            Keyword::Shell => {
                n.at_least(1, "at least one argument")?;
                if !node.json {
                    return Err(ParseError::new(node.span, ErrorKind::ShellNotJson));
                }
                Instruction::Shell(node.args.clone())
            }
            Keyword::Healthcheck => n.healthcheck()?,
            Keyword::Onbuild => {
                let Some(trigger) = &node.trigger else {
                    return Err(n.count_error("at least one argument"));
                };
                let forbidden = match trigger.keyword {
                    Keyword::Onbuild => Some("ONBUILD"),
                    Keyword::From => Some("FROM"),
                    Keyword::Maintainer => Some("MAINTAINER"),
                    _ => None,
                };
                if let Some(trigger_name) = forbidden {
                    return Err(ParseError::new(
                        trigger.span,
                        ErrorKind::OnbuildTrigger {
                            trigger: trigger_name,
                        },
                    ));
                }
                // Heredoc bodies travel with the trigger text, so the image that runs the
                // trigger can parse it again.
                let mut original = trigger.original.trim().to_owned();
                for h in &trigger.heredocs {
                    original.push('\n');
                    original.push_str(&h.content);
                    original.push_str(&h.name);
                }
                Instruction::Onbuild {
                    trigger: Box::new(Instruction::from_node(trigger)?),
                    original,
                }
            }
        })
    }
}

/// A node whose flags have been validated, with helpers to read it.
struct Checked<'a> {
    node: &'a Node,
}

impl Checked<'_> {
    fn count_error(&self, expected: &'static str) -> ParseError {
        ParseError::new(
            self.node.span,
            ErrorKind::ArgCount {
                instruction: self.node.keyword.as_str(),
                expected,
            },
        )
    }

    fn at_least(&self, n: usize, expected: &'static str) -> Result<(), ParseError> {
        if self.node.args.len() < n {
            return Err(self.count_error(expected));
        }
        Ok(())
    }

    fn one(&self) -> Result<Word, ParseError> {
        match self.node.args.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(self.count_error("exactly one argument")),
        }
    }

    fn flag(&self, name: &str) -> Option<Word> {
        self.node
            .flags
            .iter()
            .rev()
            .find(|f| f.name == name)
            .map(|f| Word {
                value: f.value.clone().unwrap_or_default(),
                span: f.span,
            })
    }

    /// Check that flag `name`, if given, has one of `values`.
    fn one_of(&self, name: &str, values: &'static [&'static str]) -> Result<(), ParseError> {
        match self.flag(name) {
            Some(w) if !values.contains(&w.value.as_str()) => Err(ParseError::new(
                w.span,
                ErrorKind::FlagInvalidValue {
                    name: name.to_owned(),
                    value: w.value,
                    reason: match name {
                        "network" => "expected default, none or host",
                        _ => "expected sandbox or insecure",
                    },
                },
            )),
            _ => Ok(()),
        }
    }

    fn flag_list(&self, name: &str) -> Vec<Word> {
        self.node
            .flags
            .iter()
            .filter(|f| f.name == name)
            .map(|f| Word {
                value: f.value.clone().unwrap_or_default(),
                span: f.span,
            })
            .collect()
    }

    /// A validated boolean flag: present without value, or with a true value.
    fn has_flag(&self, name: &str) -> bool {
        self.node.flags.iter().any(|f| f.name == name)
    }

    fn bool_flag(&self, name: &str) -> bool {
        self.node
            .flags
            .iter()
            .rev()
            .find(|f| f.name == name)
            .is_some_and(|f| {
                f.value
                    .as_deref()
                    .is_none_or(|v| crate::parser::parse_go_bool(v) == Some(true))
            })
    }

    fn command(&self) -> ShellOrExec {
        command_of(self.node, &self.node.args)
    }

    fn from(&self) -> Result<Instruction, ParseError> {
        let args = &self.node.args;
        let (image, name) = match args.as_slice() {
            [image] => (image.clone(), None),
            [image, as_word, name] if as_word.value.eq_ignore_ascii_case("as") => {
                let lower = name.value.to_lowercase();
                let valid = lower.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && lower
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
                if !valid {
                    return Err(ParseError::new(
                        name.span,
                        ErrorKind::InvalidStageName {
                            name: name.value.clone(),
                        },
                    ));
                }
                (
                    image.clone(),
                    Some(Word {
                        value: lower,
                        span: name.span,
                    }),
                )
            }
            _ => {
                let span = args.get(1).map_or(self.node.span, |w| w.span);
                return Err(ParseError::new(span, ErrorKind::FromSyntax));
            }
        };
        Ok(Instruction::From(From {
            image,
            name,
            platform: self.flag("platform"),
        }))
    }

    fn sources_dest(&self) -> Result<(Vec<Word>, Word), ParseError> {
        match self.node.args.split_last() {
            Some((dest, sources)) if !sources.is_empty() => Ok((sources.to_vec(), dest.clone())),
            _ => Err(self.count_error("at least two arguments (sources and a destination)")),
        }
    }

    fn key_values(&self) -> Result<Vec<KeyValue>, ParseError> {
        self.at_least(1, "at least one argument")?;
        let mut out = Vec::new();
        for triple in self.node.args.chunks(3) {
            let [key, value, _] = triple else {
                return Err(self.count_error("key value pairs"));
            };
            if key.value.is_empty() {
                return Err(ParseError::new(
                    key.span,
                    ErrorKind::BlankName {
                        instruction: self.node.keyword.as_str(),
                    },
                ));
            }
            out.push(KeyValue {
                key: key.clone(),
                value: value.clone(),
            });
        }
        Ok(out)
    }

    fn arg(&self) -> Result<Instruction, ParseError> {
        self.at_least(1, "at least one argument")?;
        let mut out = Vec::new();
        for word in &self.node.args {
            let (name, default) = match word.value.split_once('=') {
                Some((name, value)) => {
                    let at = name.chars().count() + 1;
                    let span = Span::new(
                        word.span.line,
                        word.span
                            .column
                            .saturating_add(u32::try_from(at).unwrap_or(u32::MAX)),
                        u32::try_from(value.chars().count()).unwrap_or(u32::MAX),
                    );
                    (
                        name,
                        Some(Word {
                            value: value.to_owned(),
                            span,
                        }),
                    )
                }
                None => (word.value.as_str(), None),
            };
            if name.is_empty() {
                return Err(ParseError::new(
                    word.span,
                    ErrorKind::BlankName { instruction: "ARG" },
                ));
            }
            let name_span = Span {
                len: u32::try_from(name.chars().count()).unwrap_or(0),
                ..word.span
            };
            out.push(ArgDecl {
                name: Word {
                    value: name.to_owned(),
                    span: name_span,
                },
                default,
            });
        }
        Ok(Instruction::Arg(out))
    }

    fn duration(&self, name: &str) -> Result<Option<Duration>, ParseError> {
        let Some(flag) = self.flag(name) else {
            return Ok(None);
        };
        // validate_flags has checked the syntax already.
        let d = parse_go_duration(&flag.value).unwrap_or_default();
        if !d.is_zero() && d < Duration::from_millis(1) {
            return Err(ParseError::new(
                flag.span,
                ErrorKind::FlagInvalidValue {
                    name: name.to_owned(),
                    value: flag.value,
                    reason: "must be 0 or at least 1ms",
                },
            ));
        }
        Ok(Some(d))
    }

    fn healthcheck(&self) -> Result<Instruction, ParseError> {
        let node = self.node;
        let Some((typ, rest)) = node.args.split_first() else {
            return Err(self.count_error("at least one argument"));
        };
        if typ.value.eq_ignore_ascii_case("none") {
            if !rest.is_empty() {
                return Err(ParseError::new(
                    rest[0].span,
                    ErrorKind::HealthcheckNoneArgs,
                ));
            }
            return Ok(Instruction::Healthcheck(Healthcheck::None));
        }
        if !typ.value.eq_ignore_ascii_case("cmd") {
            return Err(ParseError::new(
                typ.span,
                ErrorKind::HealthcheckType {
                    kind: typ.value.clone(),
                },
            ));
        }
        if rest.is_empty() || (!node.json && rest.iter().all(|w| w.value.is_empty())) {
            return Err(ParseError::new(typ.span, ErrorKind::HealthcheckMissingCmd));
        }
        let retries = self.flag("retries").and_then(|w| w.value.parse().ok());
        Ok(Instruction::Healthcheck(Healthcheck::Cmd {
            cmd: command_of(node, rest),
            interval: self.duration("interval")?,
            timeout: self.duration("timeout")?,
            start_period: self.duration("start-period")?,
            start_interval: self.duration("start-interval")?,
            retries,
        }))
    }
}

fn command_of(node: &Node, args: &[Word]) -> ShellOrExec {
    if node.json {
        return ShellOrExec::Exec(args.to_vec());
    }
    match args.first() {
        Some(w) => ShellOrExec::Shell(w.clone()),
        None => ShellOrExec::Shell(Word {
            value: String::new(),
            span: node.span,
        }),
    }
}

/// Parse and check a whole Dockerfile into typed instructions, each with its node.
pub fn parse_instructions(src: &str) -> Result<(crate::ast::Ast, Vec<Instruction>), ParseError> {
    let ast = crate::parser::parse(src)?;
    let instructions = ast
        .nodes
        .iter()
        .map(Instruction::from_node)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((ast, instructions))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(src: &str) -> Result<Instruction, ParseError> {
        let ast = crate::parser::parse(src).map_err(|e| ParseError::new(e.span, e.kind))?;
        let last = ast
            .nodes
            .last()
            .ok_or_else(|| ParseError::new(Span::default(), ErrorKind::NoInstructions))?;
        Instruction::from_node(last)
    }

    fn values(words: &[Word]) -> Vec<&str> {
        words.iter().map(|w| w.value.as_str()).collect()
    }

    #[test]
    fn from_with_stage_and_platform() {
        let Ok(Instruction::From(f)) = one("FROM --platform=$BUILDPLATFORM golang:1 AS Build")
        else {
            panic!("not a FROM")
        };
        assert_eq!(f.image.value, "golang:1");
        assert_eq!(f.name.map(|w| w.value), Some("build".to_owned()));
        assert_eq!(
            f.platform.map(|w| w.value),
            Some("$BUILDPLATFORM".to_owned())
        );
        assert_eq!(one("FROM a AS 1x").map_err(|e| e.to_string()), Err("invalid name for build stage: \"1x\", name can't start with a number or contain symbols".to_owned()));
        assert!(matches!(
            one("FROM a b c").map_err(|e| e.kind),
            Err(ErrorKind::FromSyntax)
        ));
    }

    #[test]
    fn copy_and_add_flags() {
        let Ok(Instruction::Copy(c)) =
            one("FROM a\nCOPY --from=b --link --exclude=x --exclude=y --chmod=755 s1 s2 /d/")
        else {
            panic!("not a COPY")
        };
        assert_eq!(values(&c.sources), ["s1", "s2"]);
        assert_eq!(c.dest.value, "/d/");
        assert_eq!(c.from.map(|w| w.value), Some("b".to_owned()));
        assert!(c.link && !c.parents);
        assert_eq!(values(&c.exclude), ["x", "y"]);
        let Ok(Instruction::Add(a)) =
            one("FROM a\nADD --keep-git-dir=true --link=false --checksum=sha256:x u /d")
        else {
            panic!("not an ADD")
        };
        assert!(a.keep_git_dir && !a.link);
        assert_eq!(a.checksum.map(|w| w.value), Some("sha256:x".to_owned()));
        assert!(matches!(
            one("FROM a\nCOPY x").map_err(|e| e.kind),
            Err(ErrorKind::ArgCount { .. })
        ));
    }

    #[test]
    fn run_forms_and_heredocs() {
        let Ok(Instruction::Run(r)) =
            one("FROM a\nRUN --mount=type=cache,target=/c --network=none <<EOF\necho\nEOF\n")
        else {
            panic!("not a RUN")
        };
        assert_eq!(values(&r.mounts), ["type=cache,target=/c"]);
        assert_eq!(r.network.map(|w| w.value), Some("none".to_owned()));
        assert_eq!(r.heredocs.len(), 1);
        assert!(matches!(r.cmd, ShellOrExec::Shell(ref w) if w.value == "<<EOF"));
        let Ok(Instruction::Cmd(ShellOrExec::Exec(e))) = one("CMD [\"a\", \"b\"]") else {
            panic!("not exec")
        };
        assert_eq!(values(&e), ["a", "b"]);
    }

    #[test]
    fn env_label_arg() {
        let Ok(Instruction::Env(kv)) = one("ENV a=1 b=\"2 3\"") else {
            panic!("not ENV")
        };
        assert_eq!(kv.len(), 2);
        assert_eq!(kv[1].value.value, "\"2 3\"");
        let Ok(Instruction::Env(kv)) = one("ENV a 1 2") else {
            panic!("not ENV")
        };
        assert_eq!(
            (kv[0].key.value.as_str(), kv[0].value.value.as_str()),
            ("a", "1 2")
        );
        let Ok(Instruction::Arg(a)) = one("ARG x y=2") else {
            panic!("not ARG")
        };
        assert_eq!(a[0].default, None);
        assert_eq!(
            a[1].default
                .as_ref()
                .map(|w| (w.value.as_str(), w.span.column)),
            Some(("2", 9))
        );
        assert!(matches!(
            one("ENV =x").map_err(|e| e.kind),
            Err(ErrorKind::BlankName { .. })
        ));
        assert!(matches!(
            one("ENV").map_err(|e| e.kind),
            Err(ErrorKind::ArgCount { .. })
        ));
    }

    #[test]
    fn healthcheck() {
        let Ok(Instruction::Healthcheck(Healthcheck::Cmd {
            cmd,
            interval,
            retries,
            ..
        })) = one("HEALTHCHECK --interval=1m30s --retries=3 CMD curl -f x")
        else {
            panic!("not a healthcheck")
        };
        assert_eq!(interval, Some(Duration::from_secs(90)));
        assert_eq!(retries, Some(3));
        assert!(matches!(cmd, ShellOrExec::Shell(ref w) if w.value == "curl -f x"));
        assert_eq!(
            one("HEALTHCHECK NONE"),
            Ok(Instruction::Healthcheck(Healthcheck::None))
        );
        for (src, msg) in [
            ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
            (
                "HEALTHCHECK CONNECT x",
                "unknown type \"CONNECT\" in HEALTHCHECK (try CMD)",
            ),
            ("HEALTHCHECK CMD", "missing command after HEALTHCHECK CMD"),
            (
                "HEALTHCHECK --timeout=1ns CMD x",
                "invalid value for flag --timeout: \"1ns\" (must be 0 or at least 1ms)",
            ),
        ] {
            assert_eq!(
                one(src).map_err(|e| e.to_string()),
                Err(msg.to_owned()),
                "{src}"
            );
        }
    }

    #[test]
    fn onbuild_shell_volume_and_single_word() {
        let Ok(Instruction::Onbuild { trigger, original }) = one("ONBUILD RUN echo hi") else {
            panic!("not ONBUILD")
        };
        assert_eq!(original, "RUN echo hi");
        assert!(matches!(*trigger, Instruction::Run(_)));
        let Ok(Instruction::Onbuild { trigger, original }) =
            one("ONBUILD RUN <<EOF\necho hi\nEOF\n")
        else {
            panic!("not ONBUILD")
        };
        assert_eq!(original, "RUN <<EOF\necho hi\nEOF");
        assert!(
            matches!(*trigger, Instruction::Run(Run { ref heredocs, .. }) if heredocs.len() == 1)
        );
        for (src, msg) in [
            (
                "ONBUILD ONBUILD RUN x",
                "ONBUILD isn't allowed as an ONBUILD trigger",
            ),
            ("ONBUILD FROM x", "FROM isn't allowed as an ONBUILD trigger"),
            ("ONBUILD", "ONBUILD requires at least one argument"),
            (
                "SHELL sh -c",
                "SHELL requires the arguments to be in JSON form",
            ),
            (
                "VOLUME [\"\"]",
                "VOLUME specified can not be an empty string",
            ),
            ("WORKDIR", "WORKDIR requires exactly one argument"),
            ("RUN", "RUN requires at least one argument"),
            (
                "RUN --network=bridge x",
                "invalid value for flag --network: \"bridge\" (expected default, none or host)",
            ),
            (
                "RUN --security=root x",
                "invalid value for flag --security: \"root\" (expected sandbox or insecure)",
            ),
            ("EXPOSE", "EXPOSE requires at least one argument"),
            ("ONBUILD COPY --bad x y", "unknown flag: --bad"),
        ] {
            assert_eq!(
                one(src).map_err(|e| e.to_string()),
                Err(msg.to_owned()),
                "{src}"
            );
        }
    }
}
