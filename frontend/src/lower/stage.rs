//! Build stages: which instructions belong to which stage, how stages refer to each other
//! (`FROM stage`, `COPY --from`, `RUN --mount=from=`), cycles and reachability from the target.

use std::collections::HashMap;

use kiln_graph::LocalSource;
pub(crate) use kiln_graph::context_key;
use kiln_oci::Platform;

use super::ResolvedImage;
use super::error::{LowerError, LowerErrorKind};
use super::mount::mount_from;
use crate::ast::Node;
use crate::diagnostic::Span;
use crate::instructions::Instruction;
use crate::shell::{Env, Lexer};

/// What a `--from` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceRef {
    /// Another stage, by index.
    Stage(usize),
    /// An image reference.
    Image(String),
}

/// One instruction of a stage, checked, with what it refers to.
#[derive(Debug, Clone)]
pub(crate) struct Command {
    pub instr: Instruction,
    /// Where the instruction starts (for an ONBUILD trigger: the stage's FROM).
    pub span: Span,
    /// The instruction as written (continuations joined), for step names.
    pub original: String,
    /// Whether it runs as an ONBUILD trigger of the base.
    pub onbuild: bool,
    /// For `ONBUILD x`: the trigger text stored in the image config.
    pub onbuild_expr: Option<String>,
    /// `COPY --from`.
    pub copy_from: Option<SourceRef>,
    /// `RUN --mount` sources, one per mount.
    pub mount_from: Vec<Option<SourceRef>>,
}

impl Command {
    /// Checks `node` into a command.
    pub(crate) fn from_node(node: &Node, onbuild: bool) -> Result<Command, LowerError> {
        let instr = Instruction::from_node(node)?;
        let onbuild_expr = node.trigger.as_ref().map(|t| {
            let mut expr = t.original.trim().to_owned();
            for h in &t.heredocs {
                expr.push('\n');
                expr.push_str(&h.content);
                expr.push_str(&h.name);
            }
            expr
        });
        Ok(Command {
            instr,
            span: node.span,
            original: node.original.trim().to_owned(),
            onbuild,
            onbuild_expr,
            copy_from: None,
            mount_from: Vec::new(),
        })
    }

    /// Whether the command makes a step BuildKit counts in `[i/total]`.
    pub(crate) fn is_step(&self) -> bool {
        matches!(
            self.instr,
            Instruction::Run(_)
                | Instruction::Copy(_)
                | Instruction::Add(_)
                | Instruction::Workdir(_)
        )
    }

    /// Resolves `COPY --from` and mount sources against the stage names.
    pub(crate) fn link(
        &mut self,
        names: &HashMap<String, usize>,
        stage_count: usize,
    ) -> Result<(), LowerError> {
        match &self.instr {
            Instruction::Copy(c) => {
                if let Some(from) = &c.from {
                    let v = &from.value;
                    let plain = Lexer::default()
                        .expand_word(v, &Env::new())
                        .map(|r| r.value);
                    if plain.as_deref() != Ok(v.as_str()) {
                        return Err(LowerError::new(from.span, LowerErrorKind::FromVariable));
                    }
                    self.copy_from = Some(match go_atoi(v) {
                        Some(index) => {
                            if index < 0 || index >= stage_count as i64 {
                                return Err(LowerError::new(
                                    from.span,
                                    LowerErrorKind::InvalidStageIndex { index },
                                ));
                            }
                            SourceRef::Stage(index as usize)
                        }
                        None => match names.get(&v.to_lowercase()) {
                            Some(i) => SourceRef::Stage(*i),
                            None => SourceRef::Image(v.clone()),
                        },
                    });
                }
            }
            Instruction::Run(r) => {
                let mut out = Vec::with_capacity(r.mounts.len());
                for m in &r.mounts {
                    let from = mount_from(&m.value)
                        .map_err(|e| LowerError::new(m.span, LowerErrorKind::Mount(e)))?;
                    out.push(from.map(|f| match names.get(&f.to_lowercase()) {
                        Some(i) => SourceRef::Stage(*i),
                        None => SourceRef::Image(f),
                    }));
                }
                self.mount_from = out;
            }
            _ => {}
        }
        Ok(())
    }

    /// Stages this command reads.
    pub(crate) fn stage_deps(&self) -> impl Iterator<Item = usize> + '_ {
        self.copy_from
            .iter()
            .chain(self.mount_from.iter().flatten())
            .filter_map(|s| match s {
                SourceRef::Stage(i) => Some(*i),
                SourceRef::Image(_) => None,
            })
    }

    /// Whether the command reads an image directly (`COPY --from=alpine`).
    pub(crate) fn reads_image(&self) -> bool {
        self.copy_from
            .iter()
            .chain(self.mount_from.iter().flatten())
            .any(|s| matches!(s, SourceRef::Image(_)))
    }
}

/// Go's `strconv.Atoi`: optional sign and ASCII digits only.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// One `FROM` and its instructions.
#[derive(Debug, Clone)]
pub(crate) struct Stage {
    pub index: usize,
    /// The FROM instruction's span.
    pub span: Span,
    /// The base after expansion with the global args.
    pub base_name: String,
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// `--platform`, expanded and parsed.
    pub platform: Option<Platform>,
    /// `FROM <earlier stage>`.
    pub base_stage: Option<usize>,
    pub commands: Vec<Command>,
    /// The named context (`--build-context`) the stage starts from: the stage's own name (the
    /// stage is then replaced by the context, as BuildKit does) or its base's.
    pub context: Option<String>,
    /// Whether that context is the stage's own name: its instructions are then not run.
    pub replaced: bool,
    /// The resolved base image (image-based stages that are reachable).
    pub base_image: Option<ResolvedImage>,
    /// The base, when a named context gives a directory instead of an image.
    pub base_local: Option<LocalSource>,
    /// Whether the ONBUILD triggers of the base were added.
    pub triggers_loaded: bool,
    /// Steps BuildKit counts for `[i/total]`.
    pub step_total: usize,
}

impl Stage {
    /// The name BuildKit shows: the stage name or `stage-N`.
    pub(crate) fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", self.index))
    }

    /// Stages this stage needs: its base and every `--from`.
    pub(crate) fn deps(&self) -> impl Iterator<Item = usize> + '_ {
        self.base_stage
            .into_iter()
            .chain(self.commands.iter().flat_map(Command::stage_deps))
    }

    /// Whether the stage starts from an image or a named context (not scratch, not a stage).
    pub(crate) fn starts_from_image(&self) -> bool {
        self.context.is_some() || (self.base_stage.is_none() && self.base_name != "scratch")
    }
}

/// Fails on stages that depend on themselves, naming the stage where the cycle closes.
pub(crate) fn check_cycles(stages: &[Stage]) -> Result<(), LowerError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks = vec![Mark::New; stages.len()];
    for start in 0..stages.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (stage, its deps, next dep position).
        let mut stack: Vec<(usize, Vec<usize>, usize)> =
            vec![(start, stages[start].deps().collect(), 0)];
        marks[start] = Mark::Open;
        while let Some((node, deps, pos)) = stack.last_mut() {
            if *pos < deps.len() {
                let next = deps[*pos];
                *pos += 1;
                match marks.get(next) {
                    Some(Mark::Open) => {
                        return Err(LowerError::new(
                            stages[next].span,
                            LowerErrorKind::Cycle {
                                stage: stages[next].display_name(),
                            },
                        ));
                    }
                    Some(Mark::New) => {
                        marks[next] = Mark::Open;
                        let d = stages[next].deps().collect();
                        stack.push((next, d, 0));
                    }
                    _ => {}
                }
            } else {
                marks[*node] = Mark::Done;
                stack.pop();
            }
        }
    }
    Ok(())
}

/// Which stages the target needs (itself included).
pub(crate) fn reachable(stages: &[Stage], target: usize) -> Vec<bool> {
    let mut seen = vec![false; stages.len()];
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if i >= seen.len() || seen[i] {
            continue;
        }
        seen[i] = true;
        todo.extend(stages[i].deps());
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoi_like_go() {
        assert_eq!(go_atoi("1"), Some(1));
        assert_eq!(go_atoi("+2"), Some(2));
        assert_eq!(go_atoi("-1"), Some(-1));
        assert_eq!(go_atoi("1a"), None);
        assert_eq!(go_atoi(""), None);
        assert_eq!(go_atoi("-"), None);
    }
}
