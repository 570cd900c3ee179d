//! The build checks that need the lowering's knowledge: the ARG and ENV in scope, the base
//! image's config, expanded words. Each hook reports into the build's
//! [`Linter`](crate::lint::Linter), which applies the check configuration; none changes what is
//! lowered. (The rules about the text alone run over the whole file in `lint::syntax`.)

use kiln_oci::{Platform, Reference};

use super::LowerOptions;
use super::dispatch::{Lowerer, StageState};
use super::stage::{Command, Stage};
use crate::ast::{Keyword, Word};
use crate::diagnostic::{Span, suggest};
use crate::instructions::{self as ins, Instruction, ShellOrExec};
use crate::lint::{CHECK_BUILD_ARG, IgnoreMatcher, Rule, looks_secret};

/// Build args BuildKit never puts in the step environment (and so never reports as undefined).
const NON_ENV_ARGS: [&str; 2] = ["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// The name an instruction was written with (`env`, `Env`, `ENV`).
fn written_name(cmd: &Command, keyword: Keyword) -> String {
    cmd.original
        .split_whitespace()
        .next()
        .filter(|n| n.eq_ignore_ascii_case(keyword.as_str()))
        .unwrap_or(keyword.as_str())
        .to_owned()
}

impl Lowerer<'_> {
    /// Before the stages: InvalidDefaultArgInFrom (every FROM, expanded with the global ARGs'
    /// defaults and no `--build-arg`, must name a valid image).
    pub(super) fn lint_start(&mut self) {
        self.consumed.insert(CHECK_BUILD_ARG.to_owned());
        let defaults = LowerOptions {
            build_args: Default::default(),
            ..self.opts.clone()
        };
        let mut env = super::args::automatic_args(self.ast, &defaults);
        let mut in_stages = false;
        for node in &self.ast.nodes {
            match node.keyword {
                Keyword::From => in_stages = true,
                Keyword::Arg if !in_stages => {}
                _ => continue,
            }
            let Ok(instr) = Instruction::from_node(node) else {
                continue;
            };
            match &instr {
                Instruction::Arg(decls) if !in_stages => {
                    for d in decls {
                        if let Some(def) = &d.default {
                            let Ok(v) = self.lexer.expand_word(&def.value, &env) else {
                                return;
                            };
                            env.set(d.name.value.clone(), v.value);
                        }
                    }
                }
                Instruction::From(f) => {
                    let Ok(r) = self.lexer.expand_word(&f.image.value, &env) else {
                        return;
                    };
                    if r.value.parse::<Reference>().is_err() {
                        self.lint.report(
                            Rule::InvalidDefaultArgInFrom,
                            node.span.line,
                            f.image.span,
                            format!(
                                "Default value for ARG {} results in empty or invalid base image name",
                                f.image.value
                            ),
                        );
                    }
                }
                _ => {}
            }
        }
    }

    /// A FROM line, its words already expanded with the global scope: UndefinedArgInFrom,
    /// RedundantTargetPlatform and FromPlatformFlagConstDisallowed.
    pub(super) fn lint_from(&mut self, f: &ins::From, span: Span) {
        let unset = self.lint.take_unset();
        let mut reports = Vec::new();
        for (name, at) in &unset {
            // Unset in the global scope: declared only if some ARG named it without a value.
            if self.consumed.contains(name) || !is_name(name) {
                continue;
            }
            let mut message = format!("FROM argument '{name}' is not declared");
            if self.lint.spend_suggestion() {
                let keys: Vec<&str> = self
                    .global
                    .iter()
                    .map(|(k, _)| k)
                    .chain(self.consumed.iter().map(String::as_str))
                    .collect();
                if let Some(s) = suggest(name, &keys) {
                    message.push_str(&format!(" (did you mean {s}?)"));
                }
            }
            reports.push((Rule::UndefinedArgInFrom, *at, message));
        }
        if let Some(p) = &f.platform
            && let Ok(r) = self.lexer.expand_word(&p.value, &self.global)
        {
            if r.used.len() == 1 && r.unset.is_empty() && r.used.contains("TARGETPLATFORM") {
                if self.global.get("TARGETPLATFORM") == Some(r.value.as_str()) {
                    reports.push((
                        Rule::RedundantTargetPlatform,
                        p.span,
                        format!(
                            "Setting platform to predefined {} in FROM is redundant as this is the default behavior",
                            p.value
                        ),
                    ));
                }
            } else if r.used.is_empty()
                && let Ok(platform) = r.value.parse::<Platform>()
            {
                let stage = f
                    .name
                    .as_ref()
                    .map(|n| n.value.to_lowercase())
                    .unwrap_or_default();
                if !stage.contains(&platform.os) && !stage.contains(&platform.architecture) {
                    reports.push((
                        Rule::FromPlatformFlagConstDisallowed,
                        p.span,
                        format!(
                            "FROM --platform flag should not use constant value {:?}",
                            r.value
                        ),
                    ));
                }
            }
        }
        for (rule, at, message) in reports {
            self.lint.report(rule, span.line, at, message);
        }
    }

    /// A stage about to run its instructions (`st` holds its base's config):
    /// InvalidBaseImagePlatform, and what the stage inherits from the stage it is built on.
    pub(super) fn lint_stage(&mut self, s: &Stage, st: &StageState) {
        let facts = crate::lint::StageFacts {
            workdir_set: s
                .base_stage
                .and_then(|b| self.lint.stages.get(&b))
                .is_some_and(|f| f.workdir_set),
            ..Default::default()
        };
        self.lint.stages.insert(s.index, facts);
        if !s.starts_from_image() || st.config.os.is_empty() {
            return;
        }
        let want = &st.platform;
        if st.config.os != want.os || st.config.architecture != want.architecture {
            let actual = Platform {
                os: st.config.os.clone(),
                architecture: st.config.architecture.clone(),
                variant: st.config.variant.clone(),
            };
            self.lint.report(
                Rule::InvalidBaseImagePlatform,
                s.span.line,
                s.span,
                format!(
                    "Base image {} was pulled with platform {:?}, expected {:?} for current build",
                    s.base_name,
                    actual.to_string(),
                    want.to_string()
                ),
            );
        }
    }

    /// Before an instruction is applied (`st` as it was before it): the rules about the
    /// instruction's own words and the stage so far. Returns how many ARGs were in scope, for
    /// [`Lowerer::lint_after`].
    pub(super) fn lint_before(&mut self, st: &StageState, cmd: &Command) -> usize {
        self.lint.take_unset();
        let line = cmd.span.line;
        let span = cmd.span;
        let mut reports: Vec<(Rule, u32, Span, String)> = Vec::new();
        let facts = self.lint.stages.entry(st.index).or_default();
        match &cmd.instr {
            Instruction::Env(kvs) | Instruction::Label(kvs) => {
                let (keyword, is_env) = match &cmd.instr {
                    Instruction::Env(_) => (Keyword::Env, true),
                    _ => (Keyword::Label, false),
                };
                let name = written_name(cmd, keyword);
                if self.lint.legacy_kv.contains(&line) {
                    reports.push((
                        Rule::LegacyKeyValueFormat,
                        line,
                        span,
                        format!(
                            "\"{name} key=value\" should be used instead of legacy \"{name} key value\" format"
                        ),
                    ));
                }
                if is_env {
                    for kv in kvs {
                        let key = self
                            .lexer
                            .expand_word(&kv.key.value, &st.env)
                            .map_or_else(|_| kv.key.value.clone(), |r| r.value);
                        if looks_secret(&key) {
                            reports.push((
                                Rule::SecretsUsedInArgOrEnv,
                                line,
                                kv.key.span,
                                secret_message("ENV", &key),
                            ));
                        }
                    }
                }
            }
            Instruction::Arg(decls) => {
                for d in decls {
                    if looks_secret(&d.name.value) {
                        reports.push((
                            Rule::SecretsUsedInArgOrEnv,
                            line,
                            d.name.span,
                            secret_message("ARG", &d.name.value),
                        ));
                    }
                }
            }
            Instruction::Workdir(w) => {
                let path = self
                    .lexer
                    .expand_word(&w.value, &st.env)
                    .map_or_else(|_| w.value.clone(), |r| r.value);
                if !facts.workdir_set && !path.starts_with('/') {
                    reports.push((
                        Rule::WorkdirRelativePath,
                        line,
                        w.span,
                        format!(
                            "Relative workdir {path:?} can have unexpected results if the base image changes"
                        ),
                    ));
                }
                facts.workdir_set = true;
            }
            Instruction::Cmd(c) | Instruction::Entrypoint(c) => {
                let keyword = if matches!(cmd.instr, Instruction::Cmd(_)) {
                    Keyword::Cmd
                } else {
                    Keyword::Entrypoint
                };
                let name = written_name(cmd, keyword);
                let slot = if keyword == Keyword::Cmd {
                    &mut facts.cmd
                } else {
                    &mut facts.entrypoint
                };
                if let Some((l, s)) = slot.replace((line, span)) {
                    reports.push((Rule::MultipleInstructionsDisallowed, l, s, multiple(&name)));
                }
                if matches!(c, ShellOrExec::Shell(_)) && st.config.config.shell.is_empty() {
                    reports.push((
                        Rule::JsonArgsRecommended,
                        line,
                        span,
                        format!(
                            "JSON arguments recommended for {name} to prevent unintended behavior related to OS signals"
                        ),
                    ));
                }
            }
            Instruction::Healthcheck(_) => {
                let name = written_name(cmd, Keyword::Healthcheck);
                if let Some((l, s)) = facts.healthcheck.replace((line, span)) {
                    reports.push((Rule::MultipleInstructionsDisallowed, l, s, multiple(&name)));
                }
            }
            Instruction::Expose(words) => {
                for w in words {
                    let Ok((ports, _)) = self.lexer.expand_words(&w.value, &st.env) else {
                        continue;
                    };
                    for raw in ports {
                        reports.extend(expose(&raw).into_iter().map(|(r, m)| (r, line, w.span, m)));
                    }
                }
            }
            Instruction::Copy(c) if cmd.copy_from.is_none() => {
                self.copy_ignored(st, "Copy", &c.sources, &c.heredocs, line, &mut reports);
            }
            Instruction::Add(a) => {
                self.copy_ignored(st, "Add", &a.sources, &a.heredocs, line, &mut reports);
            }
            _ => {}
        }
        for (rule, l, s, message) in reports {
            self.lint.report(rule, l, s, message);
        }
        st.build_args.len()
    }

    /// CopyIgnoredFile for the context sources of a COPY or ADD.
    fn copy_ignored(
        &mut self,
        st: &StageState,
        verb: &str,
        sources: &[Word],
        heredocs: &[crate::ast::Heredoc],
        line: u32,
        reports: &mut Vec<(Rule, u32, Span, String)>,
    ) {
        let ignore = self
            .lint
            .ignore
            .get_or_insert_with(|| IgnoreMatcher::new(&self.opts.dockerignore));
        let Some(m) = ignore else {
            return;
        };
        for w in sources {
            if w.value.starts_with("<<") && !heredocs.is_empty() {
                continue;
            }
            let Ok(r) = self.lexer.expand_word(&w.value, &st.env) else {
                continue;
            };
            let src = r.value;
            if src.contains("://") || src.starts_with("git@") {
                continue;
            }
            let src = crate::lint::clean_path(&src);
            if (src == "." || src == "/") && !m.root_ignored() {
                continue;
            }
            if m.matches_or_parent(&src) {
                reports.push((
                    Rule::CopyIgnoredFile,
                    line,
                    w.span,
                    format!("Attempting to {verb} file {src:?} that is excluded by .dockerignore"),
                ));
            }
        }
    }

    /// After an instruction was applied: UndefinedVar for the variables its words used while
    /// unset (the first `args` ARGs of the stage, those in scope before it, count as defined).
    pub(super) fn lint_after(&mut self, st: &StageState, cmd: &Command, args: usize) {
        let unset = self.lint.take_unset();
        if unset.is_empty() {
            return;
        }
        let in_scope = &st.build_args[..args.min(st.build_args.len())];
        for (name, at) in unset {
            // `consumed` (every ARG name) first: the scan of the stage's ARGs is for names
            // some ARG declared.
            if (self.consumed.contains(&name) && in_scope.iter().any(|(k, _)| *k == name))
                || NON_ENV_ARGS.contains(&name.as_str())
                || !is_name(&name)
            {
                continue;
            }
            let mut message = format!("Usage of undefined variable '${name}'");
            if self.lint.spend_suggestion() {
                let keys: Vec<&str> = st.env.iter().map(|(k, _)| k).collect();
                if let Some(s) = suggest(&name, &keys) {
                    message.push_str(&format!(" (did you mean ${s}?)"));
                }
            }
            self.lint
                .report(Rule::UndefinedVar, cmd.span.line, at, message);
        }
    }
}

/// Whether `name` is a variable name (not `$1`, `$@`...).
fn is_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c == '_' || c.is_alphabetic())
}

fn secret_message(instruction: &str, key: &str) -> String {
    format!("Do not use ARG or ENV instructions for sensitive data ({instruction} {key:?})")
}

fn multiple(name: &str) -> String {
    format!(
        "Multiple {name} instructions should not be used in the same stage because only the last one will be used"
    )
}

/// ExposeProtoCasing and ExposeInvalidFormat for one port spec (`[ip:][host:]port[/proto]`).
fn expose(raw: &str) -> Vec<(Rule, String)> {
    let parts: Vec<&str> = raw.split(':').collect();
    let n = parts.len();
    let (ip, host, container) = match n {
        1 => ("".to_owned(), "", parts[0]),
        2 => ("".to_owned(), parts[0], parts[1]),
        _ => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
    };
    let mut proto_parts = container.split('/');
    if proto_parts.next().is_none_or(str::is_empty) {
        return Vec::new();
    }
    let proto = proto_parts.next().unwrap_or("tcp");
    let mut out = Vec::new();
    if proto != proto.to_lowercase() {
        out.push((
            Rule::ExposeProtoCasing,
            format!("Defined protocol '{raw}' in EXPOSE instruction should be lowercase"),
        ));
    }
    if !ip.is_empty() || !host.is_empty() {
        out.push((
            Rule::ExposeInvalidFormat,
            format!(
                "EXPOSE instruction should not define an IP address or host-port mapping, found '{raw}'"
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expose_specs() {
        assert!(expose("80").is_empty());
        assert!(expose("80/udp").is_empty());
        let r: Vec<Rule> = expose("80/TcP").into_iter().map(|(r, _)| r).collect();
        assert_eq!(r, [Rule::ExposeProtoCasing]);
        let r = expose("127.0.0.1:80:80");
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].1,
            "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80'"
        );
        assert_eq!(expose("80:80")[0].0, Rule::ExposeInvalidFormat);
        assert!(expose("/tcp").is_empty());
    }
}
