//! The lowering driver: stages in file order, each instruction applied to the stage's state
//! (filesystem vertex, image config, step environment), as BuildKit's `dispatch*` functions do.

use std::collections::{BTreeSet, HashMap};

use kiln_graph::{
    CopyAction, Definition, ExecOp, FileAction, FileOp, Healthcheck, History, ImageConfig,
    ImageSpec, LocalSource, Mount, MountKind, NetworkMode, Op, RunConfig, SecurityMode, SourceOp,
    Vertex, VertexMeta,
};
use kiln_oci::{Digest, Platform};

use super::config::{check_chmod, chown, parse_port_spec, valid_signal};
use super::error::{LowerError, LowerErrorKind, MountError};
use super::history::{
    HISTORY_COMMENT, StepCounter, go_list, go_quoted_list, healthcheck_text, summarize_heredoc,
    uppercase_cmd,
};
use super::mount::{MountType, parse_mount};
use super::paths::{clean, dest_path, source_path, url_filename, workdir};
use super::stage::{Command, SourceRef, Stage, check_cycles, reachable};
use super::{ImageResolver, LowerOptions, LowerWarning, Lowered, ResolvedImage, StageInfo};
use crate::ast::{Ast, Heredoc, Word};
use crate::diagnostic::{Span, suggest};
use crate::instructions::{self as ins, Instruction, ShellOrExec};
use crate::shell::{Env, Escape, Lexer, ShellError, expand_heredoc};

/// `PATH` BuildKit puts in an image config that has none (Linux).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Build args every Dockerfile may use without declaring them.
const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Automatic platform args (global scope).
const PLATFORM_ARGS: [&str; 9] = [
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "TARGETSTAGE",
];

/// A stage while (and after) its instructions are applied.
#[derive(Debug, Clone)]
struct StageState {
    /// The filesystem so far (`None`: empty).
    fs: Option<Digest>,
    config: ImageConfig,
    /// The step environment: image ENV plus ARGs in scope, as BuildKit's LLB state env.
    env: Env,
    /// ARGs declared in the stage (and its base stages), with their values.
    build_args: Vec<(String, Option<String>)>,
    platform: Platform,
    cwd: String,
    user: String,
    /// CMD set in this stage (ENTRYPOINT then keeps it).
    cmd_set: bool,
    steps: StepCounter,
    /// `VertexMeta::stage`.
    label: String,
    /// Index of the stage in the file.
    index: usize,
    ignore_cache: bool,
}

/// The state of one `lower` call.
pub(crate) struct Lowerer<'a> {
    ast: &'a Ast,
    opts: &'a LowerOptions,
    resolver: &'a dyn ImageResolver,
    lexer: Lexer,
    def: Definition,
    resolved: HashMap<(String, Platform), ResolvedImage>,
    warnings: Vec<LowerWarning>,
    /// Names declared by some ARG (for the unused build-arg warning).
    consumed: BTreeSet<String>,
    /// Global args: automatic platform args and ARGs before the first FROM.
    global: Env,
}

fn expand_error(word: &Word, e: ShellError) -> LowerError {
    let offset = e.offset().min(word.value.len());
    let before = word.value.get(..offset).map_or(0, |s| s.chars().count());
    let column = word
        .span
        .column
        .saturating_add(u32::try_from(before).unwrap_or(0));
    LowerError::new(
        Span::new(word.span.line, column, 1),
        LowerErrorKind::Expand {
            word: word.value.clone(),
            source: e,
        },
    )
}

/// `["/bin/sh", "-c", "<args joined>"]` with the stage's SHELL.
fn with_shell(config: &ImageConfig, args: &[String]) -> Vec<String> {
    let mut out = if config.config.shell.is_empty() {
        vec!["/bin/sh".to_owned(), "-c".to_owned()]
    } else {
        config.config.shell.clone()
    };
    out.push(args.join(" "));
    out
}

/// Sets `k` in a `K=V` list, in place when present (BuildKit's `addEnv`).
fn add_env(env: &mut Vec<String>, k: &str, v: &str) {
    let entry = format!("{k}={v}");
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map_or(e.as_str(), |(key, _)| key) == k)
    {
        Some(e) => *e = entry,
        None => env.push(entry),
    }
}

/// `<<EOF`, `<<-EOF`, `<<"EOF"` alone (BuildKit's `MustParseHeredoc` on a whole command).
fn heredoc_marker(s: &str) -> Option<String> {
    let rest = s.trim().strip_prefix("<<")?;
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let name = rest.trim_matches(|c| c == '"' || c == '\'');
    let ok = !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == '<');
    ok.then(|| name.to_owned())
}

fn is_http(src: &str) -> bool {
    (src.starts_with("http://") || src.starts_with("https://")) && !is_git(src)
}

fn is_git(src: &str) -> bool {
    let path = src.split(['#', '?']).next().unwrap_or(src);
    src.starts_with("git@")
        || src.starts_with("git://")
        || src.starts_with("ssh://")
        || ((src.starts_with("http://") || src.starts_with("https://")) && path.ends_with(".git"))
}

fn empty_image(p: &Platform) -> ImageConfig {
    ImageConfig {
        architecture: p.architecture.clone(),
        os: p.os.clone(),
        variant: p.variant.clone(),
        config: RunConfig {
            working_dir: "/".to_owned(),
            env: vec![format!("PATH={DEFAULT_PATH}")],
            ..RunConfig::default()
        },
        ..ImageConfig::default()
    }
}

/// `docker.io/library/busybox:latest@sha256:…` as BuildKit names a resolved base.
fn pinned(img: &ResolvedImage) -> String {
    match &img.digest {
        Some(d) if !img.reference.contains('@') => format!("{}@{d}", img.reference),
        _ => img.reference.clone(),
    }
}

impl<'a> Lowerer<'a> {
    pub(crate) fn new(
        ast: &'a Ast,
        opts: &'a LowerOptions,
        resolver: &'a dyn ImageResolver,
    ) -> Self {
        let bp = &opts.build_platform;
        let tp = &opts.target_platform;
        let mut global = Env::new();
        for (k, v) in [
            ("BUILDPLATFORM", bp.to_string()),
            ("BUILDOS", bp.os.clone()),
            ("BUILDARCH", bp.architecture.clone()),
            ("BUILDVARIANT", bp.variant.clone().unwrap_or_default()),
            ("TARGETPLATFORM", tp.to_string()),
            ("TARGETOS", tp.os.clone()),
            ("TARGETARCH", tp.architecture.clone()),
            ("TARGETVARIANT", tp.variant.clone().unwrap_or_default()),
        ] {
            let v = opts.build_args.get(k).cloned().unwrap_or(v);
            global.set(k, v);
        }
        // TARGETSTAGE: the requested target, else the last stage's name (as BuildKit).
        let last_name = ast
            .nodes
            .iter()
            .rev()
            .find(|n| n.keyword == crate::ast::Keyword::From)
            .and_then(|n| match n.args.as_slice() {
                [_, as_word, name] if as_word.value.eq_ignore_ascii_case("as") => {
                    Some(name.value.to_lowercase())
                }
                _ => None,
            })
            .unwrap_or_default();
        let target_stage = opts
            .build_args
            .get("TARGETSTAGE")
            .cloned()
            .unwrap_or_else(|| opts.target.clone().unwrap_or(last_name));
        global.set("TARGETSTAGE", target_stage);
        Self {
            ast,
            opts,
            resolver,
            lexer: Lexer::new(Escape::from_char(ast.escape).unwrap_or_default()),
            def: Definition::default(),
            resolved: HashMap::new(),
            warnings: Vec::new(),
            consumed: BTreeSet::new(),
            global,
        }
    }

    pub(crate) fn run(mut self) -> Result<Lowered, LowerError> {
        let mut stages = self.collect_stages()?;
        let target = self.find_target(&stages)?;
        check_cycles(&stages)?;
        let reach = self.load_triggers(&mut stages, target)?;
        let external = stages
            .iter()
            .flat_map(|s| &s.commands)
            .filter(|c| !c.onbuild && c.reads_image())
            .count();
        let single = stages.len() + external == 1;

        let mut states: Vec<Option<StageState>> = vec![None; stages.len()];
        for i in 0..stages.len() {
            if reach[i] {
                let st = self.dispatch_stage(&stages, i, &states, single)?;
                states[i] = Some(st);
            }
        }
        let Some(st) = states.get_mut(target).and_then(Option::take) else {
            return Err(LowerError::new(
                stages[target].span,
                LowerErrorKind::NoStages,
            ));
        };
        Ok(self.finish(st, &stages, &reach))
    }

    fn finish(mut self, st: StageState, stages: &[Stage], reach: &[bool]) -> Lowered {
        let mut config = st.config;
        config.created = None;
        for (k, v) in &self.opts.labels {
            config.config.labels.insert(k.clone(), v.clone());
        }
        let tp = &self.opts.target_platform;
        let same = tp.os == config.os && tp.architecture == config.architecture;
        config.os = tp.os.clone();
        config.architecture = tp.architecture.clone();
        if tp.variant.is_some() || !same {
            config.variant = tp.variant.clone();
        }
        self.def.root = st.fs;
        self.def.image = ImageSpec { config };

        let unused: Vec<&str> = self
            .opts
            .build_args
            .keys()
            .map(String::as_str)
            .filter(|k| {
                !self.consumed.contains(*k) && !PROXY_ARGS.contains(k) && !PLATFORM_ARGS.contains(k)
            })
            .collect();
        if !unused.is_empty() {
            self.warnings.push(LowerWarning {
                message: format!(
                    "[Warning] one or more build-args [{}] were not consumed",
                    unused.join(" ")
                ),
                span: None,
            });
        }
        let stages = stages
            .iter()
            .map(|s| StageInfo {
                name: s.name.clone(),
                index: s.index,
                base: s.base_name.clone(),
                reachable: reach.get(s.index).copied().unwrap_or(false),
            })
            .collect();
        Lowered {
            definition: self.def,
            warnings: self.warnings,
            stages,
        }
    }

    // ---- stages ----------------------------------------------------------------------------

    fn collect_stages(&mut self) -> Result<Vec<Stage>, LowerError> {
        let mut stages: Vec<Stage> = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for node in &self.ast.nodes {
            let cmd = Command::from_node(node, false)?;
            match &cmd.instr {
                Instruction::Arg(decls) if stages.is_empty() => self.global_args(decls)?,
                Instruction::From(f) => {
                    let stage = self.new_stage(f, node.span, stages.len(), &names)?;
                    if let Some(n) = &stage.name {
                        names.insert(n.clone(), stage.index);
                    }
                    stages.push(stage);
                }
                _ => match stages.last_mut() {
                    Some(stage) => stage.commands.push(cmd),
                    None => return Err(LowerError::new(node.span, LowerErrorKind::NoBuildStage)),
                },
            }
        }
        if stages.is_empty() {
            let span = self
                .ast
                .nodes
                .first()
                .map_or(Span::line_start(1), |n| n.span);
            return Err(LowerError::new(span, LowerErrorKind::NoStages));
        }
        let count = stages.len();
        for stage in &mut stages {
            for cmd in &mut stage.commands {
                cmd.link(&names, count)?;
            }
            stage.step_total = usize::from(stage.starts_from_image())
                + stage.commands.iter().filter(|c| c.is_step()).count();
        }
        Ok(stages)
    }

    /// ARGs before the first FROM (BuildKit's `buildMetaArgs`).
    fn global_args(&mut self, decls: &[ins::ArgDecl]) -> Result<(), LowerError> {
        for d in decls {
            let key = d.name.value.clone();
            self.consumed.insert(key.clone());
            let value = match (self.opts.build_args.get(&key), &d.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(def)) => Some(self.expand(def, &self.global.clone())?),
                (None, None) => None,
            };
            if let Some(v) = value {
                self.global.set(key, v);
            }
        }
        Ok(())
    }

    fn new_stage(
        &mut self,
        f: &ins::From,
        span: Span,
        index: usize,
        names: &HashMap<String, usize>,
    ) -> Result<Stage, LowerError> {
        let global = self.global.clone();
        let base_name = self.expand(&f.image, &global)?;
        if base_name.is_empty() {
            return Err(LowerError::new(
                f.image.span,
                LowerErrorKind::BlankBaseName {
                    written: f.image.value.clone(),
                },
            ));
        }
        let platform = match &f.platform {
            None => None,
            Some(p) => {
                let v = self.expand(p, &global)?;
                if v.is_empty() {
                    return Err(LowerError::new(
                        p.span,
                        LowerErrorKind::EmptyPlatform {
                            written: p.value.clone(),
                        },
                    ));
                }
                Some(v.parse::<Platform>().map_err(|_| {
                    LowerError::new(p.span, LowerErrorKind::InvalidPlatform { value: v })
                })?)
            }
        };
        let name = f.name.as_ref().map(|n| n.value.to_lowercase());
        if let (Some(n), Some(word)) = (&name, &f.name)
            && names.contains_key(n)
        {
            return Err(LowerError::new(
                word.span,
                LowerErrorKind::DuplicateStage { name: n.clone() },
            ));
        }
        let base_stage = names.get(&base_name.to_lowercase()).copied();
        Ok(Stage {
            index,
            span,
            base_name,
            name,
            platform,
            base_stage,
            commands: Vec::new(),
            base_image: None,
            triggers_loaded: false,
            step_total: 0,
        })
    }

    fn find_target(&self, stages: &[Stage]) -> Result<usize, LowerError> {
        let Some(t) = &self.opts.target else {
            return Ok(stages.len() - 1);
        };
        if let Some(s) = stages
            .iter()
            .find(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(t)))
        {
            return Ok(s.index);
        }
        let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
        Err(LowerError::new(
            Span::default(),
            LowerErrorKind::UnknownTarget {
                name: t.clone(),
                suggestion: suggest(t, &names).map(str::to_owned),
            },
        ))
    }

    /// Resolves the bases of reachable stages and prepends their ONBUILD triggers, until no
    /// trigger adds a stage dependency. Returns the reachable stages.
    fn load_triggers(
        &mut self,
        stages: &mut [Stage],
        target: usize,
    ) -> Result<Vec<bool>, LowerError> {
        let names: HashMap<String, usize> = stages
            .iter()
            .filter_map(|s| s.name.clone().map(|n| (n, s.index)))
            .collect();
        let count = stages.len();
        loop {
            let reach = reachable(stages, target);
            let mut new_deps = false;
            for i in 0..count {
                if !reach[i] || stages[i].triggers_loaded {
                    continue;
                }
                stages[i].triggers_loaded = true;
                let exprs: Vec<String> = if let Some(b) = stages[i].base_stage {
                    stages[b]
                        .commands
                        .iter()
                        .filter(|c| matches!(c.instr, Instruction::Onbuild { .. }))
                        .filter_map(|c| c.onbuild_expr.clone())
                        .collect()
                } else if stages[i].starts_from_image() {
                    let platform = stages[i]
                        .platform
                        .clone()
                        .unwrap_or_else(|| self.opts.target_platform.clone());
                    let img = self.resolve(&stages[i].base_name, &platform, stages[i].span)?;
                    let on_build = img.config.config.on_build.clone();
                    stages[i].base_image = Some(img);
                    on_build
                } else {
                    Vec::new()
                };
                let span = stages[i].span;
                let mut triggers = Vec::with_capacity(exprs.len());
                for expr in exprs {
                    let mut cmd = trigger(&expr, span)?;
                    cmd.link(&names, count)
                        .map_err(|e| LowerError::new(span, *e.kind))?;
                    new_deps |= cmd.stage_deps().next().is_some();
                    triggers.push(cmd);
                }
                stages[i].step_total += triggers.len();
                triggers.append(&mut stages[i].commands);
                stages[i].commands = triggers;
            }
            if !new_deps {
                return Ok(reach);
            }
            check_cycles(stages)?;
        }
    }

    fn resolve(
        &mut self,
        reference: &str,
        platform: &Platform,
        span: Span,
    ) -> Result<ResolvedImage, LowerError> {
        let key = (reference.to_owned(), platform.clone());
        if let Some(r) = self.resolved.get(&key) {
            return Ok(r.clone());
        }
        let r = self
            .resolver
            .resolve(reference, platform)
            .map_err(|message| {
                LowerError::new(
                    span,
                    LowerErrorKind::Resolve {
                        reference: reference.to_owned(),
                        message,
                    },
                )
            })?;
        self.resolved.insert(key, r.clone());
        Ok(r)
    }

    fn dispatch_stage(
        &mut self,
        stages: &[Stage],
        i: usize,
        states: &[Option<StageState>],
        single: bool,
    ) -> Result<StageState, LowerError> {
        let s = &stages[i];
        let steps = StepCounter {
            name: (!single).then(|| s.display_name()),
            total: s.step_total,
            index: 0,
        };
        let label = s.name.clone().unwrap_or_else(|| s.index.to_string());
        let ignore_cache = self.opts.no_cache
            || s.name.as_deref().is_some_and(|n| {
                self.opts
                    .no_cache_filter
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(n))
            });
        let platform = s
            .platform
            .clone()
            .unwrap_or_else(|| self.opts.target_platform.clone());
        let mut st = if let Some(b) = s.base_stage {
            let Some(mut st) = states.get(b).cloned().flatten() else {
                return Err(LowerError::new(
                    s.span,
                    LowerErrorKind::Cycle {
                        stage: s.display_name(),
                    },
                ));
            };
            st.config.config.on_build.clear();
            st.cmd_set = false;
            st.steps = steps;
            st.label = label;
            st.index = i;
            st.ignore_cache = ignore_cache;
            st
        } else {
            let mut st = StageState {
                fs: None,
                config: empty_image(&self.opts.target_platform),
                env: Env::new(),
                build_args: Vec::new(),
                platform: platform.clone(),
                cwd: "/".to_owned(),
                user: String::new(),
                cmd_set: false,
                steps,
                label,
                index: i,
                ignore_cache,
            };
            if s.starts_from_image() {
                let img = match &s.base_image {
                    Some(img) => img.clone(),
                    None => self.resolve(&s.base_name, &platform, s.span)?,
                };
                let mut config = img.config.clone();
                config.created = None;
                config.config.on_build.clear();
                let no_layers = config.rootfs.diff_ids.is_empty()
                    && config.history.iter().all(|h| h.empty_layer);
                st.config = config;
                if !no_layers {
                    let desc = st.steps.name(&format!("FROM {}", pinned(&img)), false);
                    let op = Op::Source(SourceOp::Image {
                        reference: img.reference.clone(),
                        digest: img.digest.clone(),
                        platform: platform.clone(),
                    });
                    st.fs = Some(self.add(op, Vec::new(), &st, desc, s.span.line, false));
                }
            }
            st
        };
        if !st
            .config
            .config
            .env
            .iter()
            .any(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == "PATH")
        {
            st.config.config.env.push(format!("PATH={DEFAULT_PATH}"));
        }
        for e in &st.config.config.env {
            let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
            st.env.set(k, v);
        }
        if !st.config.config.working_dir.is_empty() {
            st.cwd = workdir("/", &st.config.config.working_dir);
        }
        st.user = st.config.config.user.clone();

        for cmd in &s.commands {
            self.dispatch(&mut st, cmd, stages, states)?;
        }
        Ok(st)
    }

    // ---- helpers ---------------------------------------------------------------------------

    fn expand(&self, word: &Word, env: &Env) -> Result<String, LowerError> {
        self.lexer
            .expand_word(&word.value, env)
            .map(|r| r.value)
            .map_err(|e| expand_error(word, e))
    }

    /// A step name for COPY/ADD/WORKDIR: the instruction with variables expanded.
    fn display(&self, original: &str, env: &Env) -> String {
        let text = self
            .lexer
            .expand_word(original, env)
            .map_or_else(|_| original.to_owned(), |r| r.value);
        uppercase_cmd(&text)
    }

    fn add(
        &mut self,
        op: Op,
        inputs: Vec<Digest>,
        st: &StageState,
        description: String,
        line: u32,
        ignore_cache: bool,
    ) -> Digest {
        self.def.add(Vertex {
            op,
            inputs,
            meta: VertexMeta {
                description,
                stage: Some(st.label.clone()),
                line: Some(line),
                ignore_cache,
            },
        })
    }

    fn empty_fs(&mut self) -> Digest {
        self.def.add(Vertex {
            op: Op::File(FileOp {
                base: None,
                actions: Vec::new(),
            }),
            inputs: Vec::new(),
            meta: VertexMeta {
                description: "[internal] empty filesystem".to_owned(),
                ..VertexMeta::default()
            },
        })
    }

    fn context(&mut self, mut include: Vec<String>) -> Digest {
        if include.iter().any(|p| p == ".") {
            include.clear();
        }
        include.sort();
        include.dedup();
        self.def.add(Vertex {
            op: Op::Source(SourceOp::Local(LocalSource {
                name: "context".to_owned(),
                include,
                exclude: self.opts.dockerignore.clone(),
            })),
            inputs: Vec::new(),
            meta: VertexMeta {
                description: "[internal] load build context".to_owned(),
                ..VertexMeta::default()
            },
        })
    }

    fn image_source(
        &mut self,
        reference: &str,
        platform: &Platform,
        span: Span,
    ) -> Result<Digest, LowerError> {
        let img = self.resolve(reference, platform, span)?;
        if img.config.rootfs.diff_ids.is_empty() && img.config.history.iter().all(|h| h.empty_layer)
        {
            return Ok(self.empty_fs());
        }
        Ok(self.def.add(Vertex {
            op: Op::Source(SourceOp::Image {
                reference: img.reference.clone(),
                digest: img.digest.clone(),
                platform: platform.clone(),
            }),
            inputs: Vec::new(),
            meta: VertexMeta {
                description: format!("FROM {}", pinned(&img)),
                ..VertexMeta::default()
            },
        }))
    }

    /// The filesystem a `--from` refers to.
    fn source_fs(
        &mut self,
        src: &SourceRef,
        raw: &str,
        st: &StageState,
        states: &[Option<StageState>],
        stages: &[Stage],
        span: Span,
    ) -> Result<Digest, LowerError> {
        match src {
            SourceRef::Image(r) => self.image_source(r, &st.platform, span),
            SourceRef::Stage(j) => match states.get(*j).and_then(Option::as_ref) {
                Some(other) => match &other.fs {
                    Some(d) => Ok(d.clone()),
                    None => Ok(self.empty_fs()),
                },
                None => Err(LowerError::new(
                    span,
                    LowerErrorKind::CopyFromLater {
                        from: raw.to_owned(),
                        stage: stages
                            .get(st.index)
                            .map_or_else(String::new, Stage::display_name),
                    },
                )),
            },
        }
    }

    fn history(st: &mut StageState, created_by: String, layer: bool) {
        st.config.history.push(History {
            created: None,
            created_by,
            comment: HISTORY_COMMENT.to_owned(),
            empty_layer: !layer,
        });
    }

    // ---- instructions ----------------------------------------------------------------------

    fn dispatch(
        &mut self,
        st: &mut StageState,
        cmd: &Command,
        stages: &[Stage],
        states: &[Option<StageState>],
    ) -> Result<(), LowerError> {
        match &cmd.instr {
            Instruction::From(_) => Ok(()),
            Instruction::Env(kvs) => {
                let mut pairs = Vec::with_capacity(kvs.len());
                for kv in kvs {
                    pairs.push((
                        self.expand(&kv.key, &st.env)?,
                        self.expand(&kv.value, &st.env)?,
                    ));
                }
                let mut msg = String::from("ENV");
                for (k, v) in pairs {
                    msg.push_str(&format!(" {k}={v}"));
                    add_env(&mut st.config.config.env, &k, &v);
                    st.env.set(k, v);
                }
                Self::history(st, msg, false);
                Ok(())
            }
            Instruction::Label(kvs) => {
                let mut pairs = Vec::with_capacity(kvs.len());
                for kv in kvs {
                    pairs.push((
                        self.expand(&kv.key, &st.env)?,
                        self.expand(&kv.value, &st.env)?,
                    ));
                }
                let mut msg = String::from("LABEL");
                for (k, v) in pairs {
                    msg.push_str(&format!(" {k}={v}"));
                    st.config.config.labels.insert(k, v);
                }
                Self::history(st, msg, false);
                Ok(())
            }
            Instruction::Arg(decls) => self.arg(st, decls),
            Instruction::Run(r) => self.exec(st, cmd, r, stages, states),
            Instruction::Copy(c) => {
                let p = CopyParams {
                    add: false,
                    sources: &c.sources,
                    dest: &c.dest,
                    from: cmd.copy_from.as_ref().zip(c.from.as_ref()),
                    chown: c.chown.as_ref(),
                    chmod: c.chmod.as_ref(),
                    link: c.link,
                    parents: c.parents,
                    exclude: &c.exclude,
                    checksum: None,
                    heredocs: &c.heredocs,
                };
                self.copy(st, cmd, p, stages, states)
            }
            Instruction::Add(a) => {
                let p = CopyParams {
                    add: true,
                    sources: &a.sources,
                    dest: &a.dest,
                    from: None,
                    chown: a.chown.as_ref(),
                    chmod: a.chmod.as_ref(),
                    link: a.link,
                    parents: false,
                    exclude: &a.exclude,
                    checksum: a.checksum.as_ref(),
                    heredocs: &a.heredocs,
                };
                self.copy(st, cmd, p, stages, states)
            }
            Instruction::Workdir(w) => {
                let path = self.expand(w, &st.env)?;
                if path.is_empty() {
                    return Err(LowerError::new(w.span, LowerErrorKind::EmptyWorkdir));
                }
                let current = if st.config.config.working_dir.is_empty() {
                    "/"
                } else {
                    &st.config.config.working_dir
                };
                let wd = workdir(current, &path);
                st.config.config.working_dir = wd.clone();
                st.cwd = wd.clone();
                let layer = wd != "/";
                if layer {
                    let desc = self.display(&cmd.original, &st.env);
                    let desc = st.steps.name(&desc, cmd.onbuild);
                    let (base, inputs) = match &st.fs {
                        Some(fs) => (Some(0), vec![fs.clone()]),
                        None => (None, Vec::new()),
                    };
                    let op = Op::File(FileOp {
                        base,
                        actions: vec![FileAction::Mkdir {
                            path: wd.clone(),
                            mode: 0o755,
                            chown: chown(&st.config.config.user),
                        }],
                    });
                    st.fs = Some(self.add(op, inputs, st, desc, cmd.span.line, false));
                }
                Self::history(st, format!("WORKDIR {wd}"), layer);
                Ok(())
            }
            Instruction::User(u) => {
                let user = self.expand(u, &st.env)?;
                st.config.config.user = user.clone();
                st.user = user.clone();
                Self::history(st, format!("USER {user}"), false);
                Ok(())
            }
            Instruction::Expose(words) => {
                let mut ports = Vec::new();
                for w in words {
                    let (split, _) = self
                        .lexer
                        .expand_words(&w.value, &st.env)
                        .map_err(|e| expand_error(w, e))?;
                    for p in &split {
                        for spec in parse_port_spec(p).map_err(|k| LowerError::new(w.span, k))? {
                            st.config
                                .config
                                .exposed_ports
                                .insert(spec, serde_json::Value::Object(serde_json::Map::new()));
                        }
                    }
                    ports.extend(split);
                }
                Self::history(st, format!("EXPOSE {}", ports.join(" ")), false);
                Ok(())
            }
            Instruction::Volume(words) => {
                let mut vols = Vec::with_capacity(words.len());
                for w in words {
                    let v = self.expand(w, &st.env)?;
                    if v.is_empty() {
                        return Err(LowerError::new(w.span, LowerErrorKind::EmptyVolume));
                    }
                    vols.push(v);
                }
                for v in &vols {
                    st.config
                        .config
                        .volumes
                        .insert(v.clone(), serde_json::Value::Object(serde_json::Map::new()));
                }
                Self::history(st, format!("VOLUME {}", go_list(&vols)), false);
                Ok(())
            }
            Instruction::StopSignal(w) => {
                let sig = self.expand(w, &st.env)?;
                if !valid_signal(&sig) {
                    return Err(LowerError::new(
                        w.span,
                        LowerErrorKind::InvalidSignal { signal: sig },
                    ));
                }
                st.config.config.stop_signal = sig.clone();
                Self::history(st, format!("STOPSIGNAL {sig}"), false);
                Ok(())
            }
            Instruction::Cmd(c) => {
                let args = match c {
                    ShellOrExec::Exec(words) => words.iter().map(|w| w.value.clone()).collect(),
                    ShellOrExec::Shell(w) => with_shell(&st.config, std::slice::from_ref(&w.value)),
                };
                Self::history(st, format!("CMD {}", go_quoted_list(&args)), false);
                st.config.config.cmd = Some(args);
                st.config.config.args_escaped = true;
                st.cmd_set = true;
                Ok(())
            }
            Instruction::Entrypoint(c) => {
                let args: Option<Vec<String>> = match c {
                    ShellOrExec::Exec(words) if words.is_empty() => None,
                    ShellOrExec::Exec(words) => {
                        Some(words.iter().map(|w| w.value.clone()).collect())
                    }
                    ShellOrExec::Shell(w) => {
                        Some(with_shell(&st.config, std::slice::from_ref(&w.value)))
                    }
                };
                Self::history(
                    st,
                    format!(
                        "ENTRYPOINT {}",
                        go_quoted_list(args.as_deref().unwrap_or_default())
                    ),
                    false,
                );
                st.config.config.entrypoint = args;
                if !st.cmd_set {
                    st.config.config.cmd = None;
                }
                Ok(())
            }
            Instruction::Healthcheck(h) => {
                let hc = match h {
                    ins::Healthcheck::None => Healthcheck {
                        test: vec!["NONE".to_owned()],
                        ..Default::default()
                    },
                    ins::Healthcheck::Cmd {
                        cmd: c,
                        interval,
                        timeout,
                        start_period,
                        start_interval,
                        retries,
                    } => {
                        let test = match c {
                            ShellOrExec::Exec(words) => std::iter::once("CMD".to_owned())
                                .chain(words.iter().map(|w| w.value.clone()))
                                .collect(),
                            ShellOrExec::Shell(w) => vec!["CMD-SHELL".to_owned(), w.value.clone()],
                        };
                        let ns = |d: &Option<std::time::Duration>| {
                            d.map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                        };
                        Healthcheck {
                            test,
                            interval: ns(interval),
                            timeout: ns(timeout),
                            start_period: ns(start_period),
                            start_interval: ns(start_interval),
                            retries: i64::from(retries.unwrap_or(0)),
                        }
                    }
                };
                Self::history(st, healthcheck_text(&hc), false);
                st.config.config.healthcheck = Some(hc);
                Ok(())
            }
            Instruction::Shell(words) => {
                let shell: Vec<String> = words.iter().map(|w| w.value.clone()).collect();
                Self::history(st, format!("SHELL {}", go_list(&shell)), false);
                st.config.config.shell = shell;
                Ok(())
            }
            Instruction::Onbuild { original, .. } => {
                let expr = cmd.onbuild_expr.clone().unwrap_or_else(|| original.clone());
                st.config.config.on_build.push(expr);
                Ok(())
            }
            Instruction::Maintainer(w) => {
                st.config.author = w.value.clone();
                Self::history(st, format!("MAINTAINER {}", w.value), false);
                Ok(())
            }
        }
    }

    /// `ARG` inside a stage (BuildKit's `dispatchArg`).
    fn arg(&mut self, st: &mut StageState, decls: &[ins::ArgDecl]) -> Result<(), LowerError> {
        let mut commit = Vec::with_capacity(decls.len());
        for d in decls {
            let key = d.name.value.clone();
            self.consumed.insert(key.clone());
            let given = self.opts.build_args.get(&key);
            let mut value = None;
            if d.default.is_none() && given.is_none() {
                value = self.global.get(&key).map(str::to_owned);
            }
            if let Some(v) = given {
                value = Some(v.clone());
            } else if let Some(def) = &d.default {
                value = Some(self.expand(def, &st.env)?);
            }
            if let Some(v) = &value {
                st.env.set(key.clone(), v.clone());
                commit.push(format!("{key}={v}"));
            } else {
                commit.push(key.clone());
            }
            st.build_args.push((key, value));
        }
        Self::history(st, format!("ARG {}", commit.join(" ")), false);
        Ok(())
    }

    fn exec(
        &mut self,
        st: &mut StageState,
        cmd: &Command,
        r: &ins::Run,
        stages: &[Stage],
        states: &[Option<StageState>],
    ) -> Result<(), LowerError> {
        let mut inputs: Vec<Digest> = Vec::new();
        let rootfs = st.fs.clone().map(|fs| {
            inputs.push(fs);
            0
        });
        let mut mounts = Vec::new();
        let mut summary = None;
        let (mut args, prepend_shell) = match &r.cmd {
            ShellOrExec::Exec(words) => (
                words.iter().map(|w| w.value.clone()).collect::<Vec<_>>(),
                false,
            ),
            ShellOrExec::Shell(w) => (vec![w.value.clone()], true),
        };
        if prepend_shell && let Some(first) = r.heredocs.first() {
            if heredoc_marker(&args[0]).is_some() {
                let data = first.content.clone();
                if data.starts_with("#!") {
                    let op = Op::File(FileOp {
                        base: None,
                        actions: vec![FileAction::Mkfile {
                            path: format!("/{}", first.name),
                            data,
                            mode: 0o755,
                            chown: None,
                        }],
                    });
                    let doc = self.def.add(Vertex {
                        op,
                        inputs: Vec::new(),
                        meta: VertexMeta {
                            description: "preparing inline document".to_owned(),
                            ..VertexMeta::default()
                        },
                    });
                    inputs.push(doc);
                    mounts.push(Mount {
                        target: "/dev/pipes".to_owned(),
                        kind: MountKind::Bind {
                            input: Some(inputs.len() - 1),
                            source: "/".to_owned(),
                            readonly: true,
                        },
                    });
                    args = vec![format!("/dev/pipes/{}", first.name)];
                } else {
                    args = vec![data];
                }
                summary = Some(summarize_heredoc(&first.content));
            } else {
                let mut full = args[0].clone();
                for h in &r.heredocs {
                    full.push('\n');
                    full.push_str(&h.content);
                    full.push_str(&h.name);
                }
                args = vec![full];
            }
        }
        if prepend_shell {
            args = with_shell(&st.config, &args);
        }

        let mut ssh_count = 0;
        for (idx, m) in r.mounts.iter().enumerate() {
            let spec = parse_mount(&m.value, |v| {
                self.lexer
                    .expand_word(v, &st.env)
                    .map(|r| r.value)
                    .map_err(|e| LowerErrorKind::Expand {
                        word: v.to_owned(),
                        source: e,
                    })
            })
            .map_err(|k| LowerError::new(m.span, k))?;
            let from = cmd.mount_from.get(idx).cloned().flatten();
            let target = if spec.target.starts_with('/') {
                clean(&spec.target)
            } else {
                clean(&format!("{}/{}", st.cwd, spec.target))
            };
            let bad_target = || {
                LowerError::new(
                    m.span,
                    LowerErrorKind::Mount(MountError::InvalidTarget {
                        target: target.clone(),
                    }),
                )
            };
            let kind = match spec.kind {
                MountType::Bind | MountType::Cache | MountType::Tmpfs if target == "/" => {
                    return Err(bad_target());
                }
                MountType::Bind => {
                    let input = match &from {
                        Some(src) => self.source_fs(
                            src,
                            spec.from.as_deref().unwrap_or_default(),
                            st,
                            states,
                            stages,
                            m.span,
                        )?,
                        None => self.context(vec![source_path(&spec.source)]),
                    };
                    inputs.push(input);
                    MountKind::Bind {
                        input: Some(inputs.len() - 1),
                        source: clean(&format!("/{}", spec.source)),
                        readonly: spec.readonly,
                    }
                }
                MountType::Cache => {
                    let input = match &from {
                        Some(src) => {
                            inputs.push(self.source_fs(
                                src,
                                spec.from.as_deref().unwrap_or_default(),
                                st,
                                states,
                                stages,
                                m.span,
                            )?);
                            Some(inputs.len() - 1)
                        }
                        None => None,
                    };
                    MountKind::Cache {
                        id: if spec.id.is_empty() {
                            target.clone()
                        } else {
                            spec.id.clone()
                        },
                        sharing: spec.sharing.unwrap_or_default(),
                        from: input,
                        source: clean(&format!("/{}", spec.source)),
                        readonly: spec.readonly,
                        mode: spec.mode.unwrap_or(0o755),
                        uid: spec.uid.unwrap_or(0),
                        gid: spec.gid.unwrap_or(0),
                    }
                }
                MountType::Tmpfs => MountKind::Tmpfs { size: spec.size },
                MountType::Secret => {
                    let mut id = if spec.source.is_empty() {
                        spec.id.clone()
                    } else {
                        spec.source.clone()
                    };
                    if id.is_empty() {
                        id = spec
                            .target
                            .rsplit('/')
                            .next()
                            .unwrap_or_default()
                            .to_owned();
                    }
                    let kind = MountKind::Secret {
                        id: id.clone(),
                        required: spec.required,
                        mode: spec.mode.unwrap_or(0o400),
                        uid: spec.uid.unwrap_or(0),
                        gid: spec.gid.unwrap_or(0),
                        env: spec.env.clone(),
                    };
                    let secret_target = if !spec.target.is_empty() {
                        spec.target.clone()
                    } else if spec.env.is_some() {
                        String::new()
                    } else {
                        format!("/run/secrets/{}", id.rsplit('/').next().unwrap_or_default())
                    };
                    mounts.push(Mount {
                        target: secret_target,
                        kind,
                    });
                    continue;
                }
                MountType::Ssh => {
                    let id = if spec.id.is_empty() {
                        "default".to_owned()
                    } else {
                        spec.id.clone()
                    };
                    let ssh_target = if spec.target.is_empty() {
                        format!("/run/buildkit/ssh_agent.{ssh_count}")
                    } else {
                        spec.target.clone()
                    };
                    ssh_count += 1;
                    mounts.push(Mount {
                        target: ssh_target,
                        kind: MountKind::Ssh {
                            id,
                            required: spec.required,
                        },
                    });
                    continue;
                }
            };
            mounts.push(Mount { target, kind });
        }

        let network = match &r.network {
            None => NetworkMode::Default,
            Some(w) => match w.value.to_ascii_lowercase().as_str() {
                "default" => NetworkMode::Default,
                "none" => NetworkMode::None,
                "host" => NetworkMode::Host,
                _ => {
                    return Err(LowerError::new(
                        w.span,
                        LowerErrorKind::UnsupportedNetwork {
                            value: w.value.clone(),
                        },
                    ));
                }
            },
        };
        let security = match &r.security {
            None => SecurityMode::Sandbox,
            Some(w) => match w.value.to_ascii_lowercase().as_str() {
                "sandbox" => SecurityMode::Sandbox,
                "insecure" => SecurityMode::Insecure,
                _ => {
                    return Err(LowerError::new(
                        w.span,
                        LowerErrorKind::UnsupportedSecurity {
                            value: w.value.clone(),
                        },
                    ));
                }
            },
        };

        let mut env = st.env.to_kv_strings();
        for (k, v) in &self.opts.build_args {
            if PROXY_ARGS.contains(&k.as_str()) && st.env.get(k).is_none() {
                env.push(format!("{k}={v}"));
            }
        }

        let shown = Lexer::new(self.lexer.escape())
            .raw_quotes(true)
            .skip_unset(true)
            .expand_word(&cmd.original, &st.env)
            .map_or_else(|_| cmd.original.clone(), |r| r.value);
        let mut shown = uppercase_cmd(&shown);
        if let Some(s) = summary {
            shown.push_str(&format!(" ({s})"));
        }
        let desc = st.steps.name(&shown, cmd.onbuild);
        let created_by = format!(
            "RUN {} # buildkit",
            run_command_string(&args, &st.build_args, &st.env)
        );
        let op = Op::Exec(ExecOp {
            rootfs,
            args,
            env,
            cwd: st.cwd.clone(),
            user: st.user.clone(),
            network,
            security,
            mounts,
        });
        st.fs = Some(self.add(op, inputs, st, desc, cmd.span.line, st.ignore_cache));
        Self::history(st, created_by, true);
        Ok(())
    }

    fn copy(
        &mut self,
        st: &mut StageState,
        cmd: &Command,
        p: CopyParams<'_>,
        stages: &[Stage],
        states: &[Option<StageState>],
    ) -> Result<(), LowerError> {
        let mut paths: Vec<(String, Span)> = Vec::new();
        let mut docs: Vec<&Heredoc> = Vec::new();
        for w in p.sources {
            if let Some(name) = heredoc_marker(&w.value).filter(|_| w.value.starts_with("<<")) {
                let doc = p.heredocs.iter().find(|h| h.name == name).ok_or_else(|| {
                    LowerError::new(
                        w.span,
                        LowerErrorKind::MissingHeredoc { name: name.clone() },
                    )
                })?;
                docs.push(doc);
            } else {
                paths.push((self.expand(w, &st.env)?, w.span));
            }
        }
        let raw_dest = self.expand(p.dest, &st.env)?;
        let dest = dest_path(&st.cwd, &raw_dest);
        let chown_text = match p.chown {
            Some(w) => self.expand(w, &st.env)?,
            None => String::new(),
        };
        let chmod_text = match p.chmod {
            Some(w) => self.expand(w, &st.env)?,
            None => String::new(),
        };
        let mode = if chmod_text.is_empty() {
            None
        } else {
            check_chmod(&chmod_text)
                .map_err(|k| LowerError::new(p.chmod.map_or(cmd.span, |w| w.span), k))?
        };
        let mut exclude = Vec::with_capacity(p.exclude.len());
        for w in p.exclude {
            exclude.push(self.expand(w, &st.env)?);
        }
        let checksum = match p.checksum {
            Some(w) => {
                let v = self.expand(w, &st.env)?;
                if paths.len() + docs.len() != 1 {
                    return Err(LowerError::new(
                        w.span,
                        LowerErrorKind::ChecksumMultipleSources,
                    ));
                }
                if !paths.iter().all(|(s, _)| is_http(s) || is_git(s)) {
                    return Err(LowerError::new(w.span, LowerErrorKind::ChecksumNeedsRemote));
                }
                Some(v).filter(|v| !v.is_empty())
            }
            None => None,
        };
        let owner = chown(&chown_text);
        let chmod = (!chmod_text.is_empty()).then(|| chmod_text.clone());

        let mut msg = String::from(if p.add { "ADD" } else { "COPY" });
        if p.parents {
            msg.push_str(" --parents");
        }
        if !chown_text.is_empty() {
            msg.push_str(&format!(" --chown={chown_text}"));
        }
        if !chmod_text.is_empty() {
            msg.push_str(&format!(" --chmod={chmod_text}"));
        }
        let shown = self.display(&cmd.original, &st.env);
        let desc = st.steps.name(&shown, cmd.onbuild);

        let mut inputs: Vec<Digest> = Vec::new();
        let base = st.fs.clone().map(|fs| {
            inputs.push(fs);
            0
        });
        let mut actions = Vec::new();
        let mut local: Vec<String> = Vec::new();
        let mut local_slot = None;
        for (src, span) in &paths {
            msg.push(' ');
            msg.push_str(src);
            if is_git(src) {
                let kind = if p.add {
                    LowerErrorKind::GitUnsupported { url: src.clone() }
                } else {
                    LowerErrorKind::GitInCopy
                };
                return Err(LowerError::new(*span, kind));
            }
            if is_http(src) {
                if !p.add {
                    return Err(LowerError::new(*span, LowerErrorKind::UrlInCopy));
                }
                let filename = url_filename(src);
                let d = self.def.add(Vertex {
                    op: Op::Source(SourceOp::Http {
                        url: src.clone(),
                        checksum: checksum.clone(),
                        filename: filename.clone(),
                    }),
                    inputs: Vec::new(),
                    meta: VertexMeta {
                        description: desc.clone(),
                        stage: Some(st.label.clone()),
                        line: Some(cmd.span.line),
                        ignore_cache: false,
                    },
                });
                inputs.push(d);
                actions.push(FileAction::Copy(CopyAction {
                    src_input: inputs.len() - 1,
                    src: vec![filename],
                    dest: dest.clone(),
                    chown: owner.clone(),
                    chmod: chmod.clone(),
                    extract_archive: false,
                    exclude: exclude.clone(),
                    parents: false,
                    link: p.link,
                }));
                continue;
            }
            let normalized = if p.parents {
                match src.split_once("/./") {
                    Some((parent, rest)) => {
                        format!("{}/./{}", source_path(parent), source_path(rest))
                    }
                    None => source_path(src),
                }
            } else {
                source_path(src)
            };
            local.push(normalized);
            if local_slot.is_none() {
                local_slot = Some(actions.len());
                // Placeholder, replaced once every local path is known.
                actions.push(FileAction::Mkdir {
                    path: String::new(),
                    mode: 0,
                    chown: None,
                });
            }
        }
        if let Some(slot) = local_slot {
            let input = match p.from {
                Some((src, word)) => {
                    self.source_fs(src, &word.value, st, states, stages, word.span)?
                }
                None => self.context(local.iter().map(|s| s.replace("/./", "/")).collect()),
            };
            inputs.push(input);
            actions[slot] = FileAction::Copy(CopyAction {
                src_input: inputs.len() - 1,
                src: local,
                dest: dest.clone(),
                chown: owner.clone(),
                chmod: chmod.clone(),
                extract_archive: p.add,
                exclude: exclude.clone(),
                parents: p.parents,
                link: p.link,
            });
        }
        for doc in docs {
            msg.push_str(&format!(" <<{}", doc.name));
            let data = if doc.expand {
                expand_heredoc(&doc.content, &st.env, Escape::Backslash)
                    .map(|r| r.value)
                    .map_err(|e| {
                        LowerError::new(
                            doc.span,
                            LowerErrorKind::Expand {
                                word: doc.content.clone(),
                                source: e,
                            },
                        )
                    })?
            } else {
                doc.content.clone()
            };
            let path = if dest.ends_with('/') {
                format!("{dest}{}", doc.name)
            } else {
                dest.clone()
            };
            actions.push(FileAction::Mkfile {
                path,
                data,
                mode: mode.unwrap_or(0o644),
                chown: owner.clone(),
            });
        }
        msg.push(' ');
        msg.push_str(&raw_dest);
        msg.push_str(" # buildkit");
        let op = Op::File(FileOp { base, actions });
        st.fs = Some(self.add(op, inputs, st, desc, cmd.span.line, st.ignore_cache));
        Self::history(st, msg, true);
        Ok(())
    }
}

/// COPY and ADD, unified.
struct CopyParams<'c> {
    add: bool,
    sources: &'c [Word],
    dest: &'c Word,
    from: Option<(&'c SourceRef, &'c Word)>,
    chown: Option<&'c Word>,
    chmod: Option<&'c Word>,
    link: bool,
    parents: bool,
    exclude: &'c [Word],
    checksum: Option<&'c Word>,
    heredocs: &'c [Heredoc],
}

/// BuildKit's `runCommandString`: `|N K=V ... args`, values as the step sees them.
fn run_command_string(
    args: &[String],
    build_args: &[(String, Option<String>)],
    env: &Env,
) -> String {
    let mut shown: Vec<(String, String)> = Vec::new();
    for (k, v) in build_args {
        let value = env
            .get(k)
            .map(str::to_owned)
            .unwrap_or_else(|| v.clone().unwrap_or_default());
        match shown.iter_mut().find(|(key, _)| key == k) {
            Some(entry) => entry.1 = value,
            None => shown.push((k.clone(), value)),
        }
    }
    let mut parts = Vec::with_capacity(shown.len() + args.len() + 1);
    if !shown.is_empty() {
        parts.push(format!("|{}", shown.len()));
        parts.extend(shown.into_iter().map(|(k, v)| format!("{k}={v}")));
    }
    parts.extend(args.iter().cloned());
    parts.join(" ")
}

/// Parses an ONBUILD trigger of the base into a command run right after FROM.
fn trigger(expr: &str, span: Span) -> Result<Command, LowerError> {
    let wrap = |e: crate::parser::ParseError| {
        LowerError::new(
            span,
            LowerErrorKind::Trigger {
                trigger: expr.to_owned(),
                source: e,
            },
        )
    };
    let ast = crate::parser::parse(expr).map_err(wrap)?;
    let Some(node) = ast.nodes.first() else {
        return Err(wrap(crate::parser::ParseError::new(
            Span::line_start(1),
            crate::parser::ErrorKind::NoInstructions,
        )));
    };
    if matches!(
        node.keyword,
        crate::ast::Keyword::From | crate::ast::Keyword::Onbuild | crate::ast::Keyword::Maintainer
    ) {
        return Err(wrap(crate::parser::ParseError::new(
            node.span,
            crate::parser::ErrorKind::OnbuildTrigger {
                trigger: node.keyword.as_str(),
            },
        )));
    }
    let mut cmd = Command::from_node(node, true).map_err(|e| match *e.kind {
        LowerErrorKind::Parse(p) => wrap(p),
        other => LowerError::new(span, other),
    })?;
    cmd.span = span;
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heredoc_markers() {
        assert_eq!(heredoc_marker("<<EOF").as_deref(), Some("EOF"));
        assert_eq!(heredoc_marker(" <<-\"EOT\" ").as_deref(), Some("EOT"));
        assert_eq!(heredoc_marker("python3 <<EOF"), None);
        assert_eq!(heredoc_marker("<<"), None);
    }

    #[test]
    fn git_and_http() {
        assert!(is_http("https://example.com/x.tgz"));
        assert!(!is_http("https://github.com/a/b.git"));
        assert!(is_git("https://github.com/a/b.git#main"));
        assert!(is_git("git@github.com:a/b.git"));
        assert!(!is_git("src/"));
    }

    #[test]
    fn run_strings() {
        let env = Env::from_kv_strings(["A=env"]);
        let args = vec!["/bin/sh".to_owned(), "-c".to_owned(), "make".to_owned()];
        let ba = vec![
            ("A".to_owned(), Some("arg".to_owned())),
            ("B".to_owned(), None),
            ("A".to_owned(), None),
        ];
        assert_eq!(
            run_command_string(&args, &ba, &env),
            "|2 A=env B= /bin/sh -c make"
        );
        assert_eq!(run_command_string(&args, &[], &env), "/bin/sh -c make");
    }

    #[test]
    fn env_list_updates_in_place() {
        let mut env = vec!["PATH=/bin".to_owned(), "A=1".to_owned()];
        add_env(&mut env, "PATH", "/usr/bin");
        add_env(&mut env, "B", "2");
        assert_eq!(env, ["PATH=/usr/bin", "A=1", "B=2"]);
    }
}
