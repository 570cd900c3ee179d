//! The lowering driver: stages in file order, each instruction applied to the stage's state
//! (filesystem vertex, image config, step environment), as BuildKit's `dispatch*` functions do.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};

use kiln_graph::{
    Definition, History, ImageConfig, ImageSpec, Op, RunConfig, SourceOp, Vertex, VertexMeta,
};
use kiln_oci::{Digest, Platform};

use super::args::automatic_args;
use super::copy::CopyParams;
use super::error::{LowerError, LowerErrorKind};
use super::history::{HISTORY_COMMENT, StepCounter, uppercase_cmd};
use super::paths::workdir;
use super::source::pinned;
use super::stage::{Command, Stage, check_cycles, context_key, reachable};
use super::{
    ImageResolver, LowerOptions, LowerWarning, Lowered, MAX_EXPANSION_TOTAL, NamedContext,
    ResolvedImage, StageInfo,
};
use crate::ast::{Ast, Word};
use crate::diagnostic::{Span, suggest};
use crate::instructions::{self as ins, Instruction};
use crate::lint::Linter;
use crate::shell::{Env, Escape, Lexer, ShellError};

/// `PATH` BuildKit puts in an image config that has none (Linux).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A stage while (and after) its instructions are applied.
#[derive(Debug, Clone)]
pub(super) struct StageState {
    /// The filesystem so far (`None`: empty).
    pub(super) fs: Option<Digest>,
    pub(super) config: ImageConfig,
    /// Position in `config.config.env` of each key, so ENV replaces in constant time.
    ///
    /// invariant: built when a stage starts from an image or scratch (a stage built on another
    /// keeps its parent's); only `ENV` changes that list afterwards.
    pub(super) config_env: HashMap<String, usize>,
    /// Whether an ARG gave a key of `config.config.env` another value in `env` since the stage
    /// started.
    pub(super) env_shadowed: bool,
    /// The step environment: image ENV plus ARGs in scope, as BuildKit's LLB state env.
    pub(super) env: Env,
    /// ARGs declared in the stage (and its base stages), with their values.
    pub(super) build_args: Vec<(String, Option<String>)>,
    pub(super) platform: Platform,
    pub(super) cwd: String,
    pub(super) user: String,
    /// CMD set in this stage (ENTRYPOINT then keeps it).
    pub(super) cmd_set: bool,
    pub(super) steps: StepCounter,
    /// `VertexMeta::stage`.
    pub(super) label: String,
    /// Index of the stage in the file.
    pub(super) index: usize,
    pub(super) ignore_cache: bool,
}

impl StageState {
    /// Moves the state out for the last stage built on this one, leaving behind what a later
    /// `--from` of this stage reads: its filesystem.
    fn hand_over(&mut self) -> StageState {
        let rest = StageState {
            fs: self.fs.clone(),
            config: ImageConfig::default(),
            config_env: HashMap::new(),
            env_shadowed: false,
            env: Env::new(),
            build_args: Vec::new(),
            platform: self.platform.clone(),
            cwd: String::new(),
            user: String::new(),
            cmd_set: false,
            steps: self.steps.clone(),
            label: self.label.clone(),
            index: self.index,
            ignore_cache: self.ignore_cache,
        };
        std::mem::replace(self, rest)
    }
}

/// The state of one `lower` call.
pub(crate) struct Lowerer<'a> {
    pub(super) ast: &'a Ast,
    pub(super) opts: &'a LowerOptions,
    resolver: &'a dyn ImageResolver,
    pub(super) lexer: Lexer,
    pub(super) def: Definition,
    resolved: HashMap<(String, Platform), ResolvedImage>,
    /// Named contexts loaded, by key and platform.
    contexts: HashMap<(String, Platform), Option<NamedContext>>,
    pub(super) warnings: Vec<LowerWarning>,
    /// Names declared by some ARG (for the unused build-arg warning).
    pub(super) consumed: BTreeSet<String>,
    /// Global args: automatic platform args and ARGs before the first FROM.
    pub(super) global: Env,
    /// Bytes counted against [`MAX_EXPANSION_TOTAL`] so far.
    spent: Cell<usize>,
    /// The build checks (see `checks`).
    pub(super) lint: &'a mut Linter,
}

/// The error for a word that does not expand, pointing at the offending character.
pub(super) fn expand_error(word: &Word, e: ShellError) -> LowerError {
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

impl<'a> Lowerer<'a> {
    pub(crate) fn new(
        ast: &'a Ast,
        opts: &'a LowerOptions,
        resolver: &'a dyn ImageResolver,
        lint: &'a mut Linter,
    ) -> Self {
        Self {
            ast,
            opts,
            resolver,
            lexer: Lexer::new(Escape::from_char(ast.escape).unwrap_or_default()),
            def: Definition::default(),
            resolved: HashMap::new(),
            contexts: HashMap::new(),
            warnings: Vec::new(),
            consumed: BTreeSet::new(),
            global: automatic_args(ast, opts),
            spent: Cell::new(0),
            lint,
        }
    }

    pub(crate) fn run(mut self) -> Result<Lowered, LowerError> {
        self.lint_start();
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

        // How many reachable stages are still to be built on each stage: the last one takes the
        // state instead of copying it, so a chain of stages costs no more than one long stage.
        let mut children = vec![0usize; stages.len()];
        for s in stages.iter().filter(|s| reach[s.index]) {
            if let Some(b) = s.base_stage {
                children[b] += 1;
            }
        }
        let mut states: Vec<Option<StageState>> = vec![None; stages.len()];
        for i in 0..stages.len() {
            if reach[i] {
                let base = match stages[i].base_stage {
                    Some(b) => {
                        children[b] = children[b].saturating_sub(1);
                        match states.get_mut(b).and_then(Option::as_mut) {
                            Some(state) if children[b] == 0 && b != target => {
                                Some(state.hand_over())
                            }
                            Some(state) => {
                                self.spend(state.env.byte_len(), stages[i].span)?;
                                Some(state.clone())
                            }
                            None => None,
                        }
                    }
                    None => None,
                };
                let st = self.dispatch_stage(&stages, i, base, &states, single)?;
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

        self.warn_unused_build_args();
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
                    Some(stage) if stage.replaced => {}
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

    fn new_stage(
        &mut self,
        f: &ins::From,
        span: Span,
        index: usize,
        names: &HashMap<String, usize>,
    ) -> Result<Stage, LowerError> {
        self.lint.take_unset();
        let global = &self.global;
        let base_name = self.expand(&f.image, global)?;
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
                let v = self.expand(p, global)?;
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
        self.lint_from(f, span);
        let name = f.name.as_ref().map(|n| n.value.to_lowercase());
        if let (Some(n), Some(word)) = (&name, &f.name)
            && names.contains_key(n)
        {
            return Err(LowerError::new(
                word.span,
                LowerErrorKind::DuplicateStage { name: n.clone() },
            ));
        }
        let mut base_stage = names.get(&base_name.to_lowercase()).copied();
        // A named context replaces a stage of its name, else gives a base that is no stage.
        let own = name
            .as_deref()
            .map(context_key)
            .filter(|k| self.resolver.has_named_context(k));
        let replaced = own.is_some();
        let context = match own {
            Some(k) => {
                base_stage = None;
                Some(k)
            }
            None if base_stage.is_none() && base_name != "scratch" => {
                Some(context_key(&base_name)).filter(|k| self.resolver.has_named_context(k))
            }
            None => None,
        };
        Ok(Stage {
            index,
            span,
            base_name,
            name,
            platform,
            base_stage,
            context,
            replaced,
            commands: Vec::new(),
            base_image: None,
            base_local: None,
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
            let reach = if self.opts.all_stages {
                vec![true; count]
            } else {
                reachable(stages, target)
            };
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
                    match self.stage_base(&stages[i], &platform)? {
                        NamedContext::Image(img) => {
                            let img = *img;
                            let on_build = img.config.config.on_build.clone();
                            stages[i].base_image = Some(img);
                            on_build
                        }
                        NamedContext::Local(src) => {
                            stages[i].base_local = Some(src);
                            Vec::new()
                        }
                    }
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

    /// The base of a stage that starts from an image or a named context.
    fn stage_base(&mut self, s: &Stage, platform: &Platform) -> Result<NamedContext, LowerError> {
        if let Some(key) = &s.context
            && let Some(base) = self.named(key, platform, s.span)?
        {
            return Ok(base);
        }
        Ok(NamedContext::Image(Box::new(self.resolve(
            &s.base_name,
            platform,
            s.span,
        )?)))
    }

    /// The named context `key` (see [`context_key`]), loaded once per platform.
    pub(super) fn named(
        &mut self,
        key: &str,
        platform: &Platform,
        span: Span,
    ) -> Result<Option<NamedContext>, LowerError> {
        if !self.resolver.has_named_context(key) {
            return Ok(None);
        }
        let cache_key = (key.to_owned(), platform.clone());
        if let Some(b) = self.contexts.get(&cache_key) {
            return Ok(b.clone());
        }
        let found = self
            .resolver
            .named_context(key, platform)
            .map_err(|message| {
                LowerError::new(
                    span,
                    LowerErrorKind::Resolve {
                        reference: key.to_owned(),
                        message,
                    },
                )
            })?;
        self.contexts.insert(cache_key, found.clone());
        Ok(found)
    }

    pub(super) fn resolve(
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

    /// Builds stage `i`; `base` is the state of the stage it starts from, if it starts from one.
    fn dispatch_stage(
        &mut self,
        stages: &[Stage],
        i: usize,
        base: Option<StageState>,
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
        let fresh = s.base_stage.is_none();
        let mut st = if !fresh {
            let Some(mut st) = base else {
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
                config_env: HashMap::new(),
                env_shadowed: false,
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
            let base = match (&s.base_image, &s.base_local) {
                _ if !s.starts_from_image() => None,
                (Some(img), _) => Some(NamedContext::Image(Box::new(img.clone()))),
                (None, Some(src)) => Some(NamedContext::Local(src.clone())),
                (None, None) => Some(self.stage_base(s, &platform)?),
            };
            if let Some(NamedContext::Local(src)) = base {
                let name = s.context.as_deref().unwrap_or_default();
                let desc = st.steps.name(&format!("FROM {name}"), false);
                let op = Op::Source(SourceOp::Local(src));
                st.fs = Some(self.add(op, Vec::new(), &st, desc, s.span.line, false));
            } else if let Some(NamedContext::Image(img)) = base {
                let config = img.config.derived();
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
        if fresh {
            st.config_env.clear();
            for (i, e) in st.config.config.env.iter().enumerate() {
                let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
                st.config_env.entry(key.to_owned()).or_insert(i);
            }
        }
        if !st.config_env.contains_key("PATH") {
            st.config_env
                .insert("PATH".to_owned(), st.config.config.env.len());
            st.config.config.env.push(format!("PATH={DEFAULT_PATH}"));
            st.env.set("PATH", DEFAULT_PATH);
        }
        // BuildKit sets the image's env over the step env at every stage. A stage built on
        // another one already has each of those values, unless an ARG replaced one since.
        if fresh || st.env_shadowed {
            for e in &st.config.config.env {
                let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
                st.env.set(k, v);
            }
            st.env_shadowed = false;
        }
        if !st.config.config.working_dir.is_empty() {
            st.cwd = workdir("/", &st.config.config.working_dir);
        }
        st.user = st.config.config.user.clone();

        self.lint_stage(s, &st);
        for cmd in &s.commands {
            self.dispatch(&mut st, cmd, stages, states)?;
        }
        Ok(st)
    }

    // ---- helpers ---------------------------------------------------------------------------

    pub(super) fn expand(&self, word: &Word, env: &Env) -> Result<String, LowerError> {
        let value = self
            .lexer
            .expand_word(&word.value, env)
            .map(|r| {
                self.lint.note_unset(&r.unset, word.span);
                r.value
            })
            .map_err(|e| expand_error(word, e))?;
        self.spend(value.len(), word.span)?;
        Ok(value)
    }

    /// Counts `bytes` of expanded or copied text against [`MAX_EXPANSION_TOTAL`]; fails at
    /// `span` once the total would pass it.
    pub(super) fn spend(&self, bytes: usize, span: Span) -> Result<(), LowerError> {
        let total = self.spent.get().saturating_add(bytes);
        if total > MAX_EXPANSION_TOTAL {
            return Err(LowerError::new(
                span,
                LowerErrorKind::TooMuchExpansion {
                    limit: MAX_EXPANSION_TOTAL,
                },
            ));
        }
        self.spent.set(total);
        Ok(())
    }

    /// A step name for COPY/ADD/WORKDIR at `span`: the instruction with variables expanded.
    pub(super) fn display(
        &self,
        original: &str,
        env: &Env,
        span: Span,
    ) -> Result<String, LowerError> {
        let text = self
            .lexer
            .expand_word(original, env)
            .map_or_else(|_| original.to_owned(), |r| r.value);
        self.spend(text.len(), span)?;
        Ok(uppercase_cmd(&text))
    }

    /// Adds a vertex for a step of the stage at `line`.
    pub(super) fn add(
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

    /// Appends an entry to the image history (`layer`: the step made one).
    pub(super) fn history(st: &mut StageState, created_by: String, layer: bool) {
        st.config.history.push(History {
            created: None,
            created_by,
            comment: HISTORY_COMMENT.to_owned(),
            empty_layer: !layer,
            ..History::default()
        });
    }

    // ---- instructions ----------------------------------------------------------------------

    /// Applies one instruction to the stage. Each family lives in its own module: `args` (ARG),
    /// `run` (RUN), `copy` (COPY, ADD) and `config` (the rest).
    fn dispatch(
        &mut self,
        st: &mut StageState,
        cmd: &Command,
        stages: &[Stage],
        states: &[Option<StageState>],
    ) -> Result<(), LowerError> {
        let args = self.lint_before(st, cmd);
        let result = match &cmd.instr {
            Instruction::From(_) => Ok(()),
            Instruction::Env(kvs) => self.env(st, kvs),
            Instruction::Label(kvs) => self.label(st, kvs),
            Instruction::Arg(decls) => self.arg(st, decls),
            Instruction::Run(r) => self.exec(st, cmd, r, stages, states),
            Instruction::Copy(c) => self.copy(st, cmd, CopyParams::copy(cmd, c), stages, states),
            Instruction::Add(a) => self.copy(st, cmd, CopyParams::add(a), stages, states),
            Instruction::Workdir(w) => self.workdir(st, cmd, w),
            Instruction::User(u) => self.user(st, u),
            Instruction::Expose(words) => self.expose(st, words),
            Instruction::Volume(words) => self.volume(st, words),
            Instruction::StopSignal(w) => self.stop_signal(st, w),
            Instruction::Cmd(c) => {
                Self::cmd(st, c);
                Ok(())
            }
            Instruction::Entrypoint(c) => {
                Self::entrypoint(st, c);
                Ok(())
            }
            Instruction::Healthcheck(h) => {
                Self::healthcheck(st, h);
                Ok(())
            }
            Instruction::Shell(words) => {
                Self::shell(st, words);
                Ok(())
            }
            Instruction::Onbuild { original, .. } => {
                Self::onbuild(st, cmd, original);
                Ok(())
            }
            Instruction::Maintainer(w) => {
                Self::maintainer(st, w);
                Ok(())
            }
        };
        self.lint_after(st, cmd, args);
        result
    }
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
