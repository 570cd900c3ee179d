//! Semantics (stages, ARG/ENV scoping, image config) and lowering to the build graph.
//!
//! [`lower`] turns a parsed Dockerfile into a [`Definition`]: one vertex per filesystem-changing
//! step (`RUN` → exec, `COPY`/`ADD`/`WORKDIR` → file ops, `FROM` → image source) and the target
//! stage's image config with BuildKit's history lines. It follows BuildKit's `dockerfile2llb`:
//!
//! - stages are found by name (case-insensitive) or index; `FROM stage` continues an earlier
//!   stage; `COPY --from` names a stage, an index or else an image;
//! - only stages reachable from the target are lowered, and only their base images resolved;
//! - global ARGs (before the first FROM) are visible in FROM lines, and inside a stage only after
//!   a bare `ARG NAME`; ARG and ENV both set the step environment, the later one winning;
//! - every `COPY`/`ADD` from the build context reads its own local source vertex that includes
//!   exactly its paths, so its cache key covers exactly its files.
//!
//! invariant: a vertex digest depends only on ops and inputs (never on lines, comments or other
//! stages); descriptions and lines live in [`VertexMeta`](kiln_graph::VertexMeta).

mod args;
mod checks;
mod config;
mod copy;
mod dispatch;
mod error;
mod history;
mod mount;
pub(crate) mod paths;
mod run;
mod source;
mod stage;

use std::collections::BTreeMap;

use kiln_graph::Definition;
use kiln_oci::Platform;

use crate::ast::Ast;
use crate::diagnostic::Span;
use crate::lint::{CHECK_BUILD_ARG, Linter, Report};

pub use error::{LowerError, LowerErrorKind, MountError};

/// The most bytes one `lower` call may produce by expanding words and copying environments
/// (64 MiB): every expanded word, every step name, and the environment each `RUN` and each stage
/// built on another carries count. One word is also limited, to
/// [`MAX_WORD_LEN`](crate::shell::MAX_WORD_LEN); this bounds many words of just under that.
/// Past it lowering fails with [`LowerErrorKind::TooMuchExpansion`] at the instruction or word
/// that went over, before allocating more.
pub const MAX_EXPANSION_TOTAL: usize = 64 << 20;

pub use kiln_graph::{ImageResolver, NamedContext, ResolvedImage};

/// Inputs of a build besides the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowerOptions {
    /// `--target`: the stage to build (default: the last one).
    pub target: Option<String>,
    /// `--build-arg K=V`.
    pub build_args: BTreeMap<String, String>,
    /// The platform images are built for (`TARGETPLATFORM`).
    pub target_platform: Platform,
    /// The platform the build runs on (`BUILDPLATFORM`).
    pub build_platform: Platform,
    /// `.dockerignore` patterns, in file order.
    pub dockerignore: Vec<String>,
    /// `--label K=V`, added to the final image.
    pub labels: BTreeMap<String, String>,
    /// `--no-cache`: every step of every stage runs again.
    pub no_cache: bool,
    /// `--no-cache-filter`: stage names whose steps run again.
    pub no_cache_filter: Vec<String>,
    /// The Dockerfile's name, for messages (`Dockerfile`).
    pub file_name: String,
    /// Lower every stage, not only those the target needs (`kiln build --check`).
    pub all_stages: bool,
}

impl Default for LowerOptions {
    fn default() -> Self {
        let host = Platform::host();
        Self {
            target: None,
            build_args: BTreeMap::new(),
            target_platform: host.clone(),
            build_platform: host,
            dockerignore: Vec::new(),
            labels: BTreeMap::new(),
            no_cache: false,
            no_cache_filter: Vec::new(),
            file_name: "Dockerfile".to_owned(),
            all_stages: false,
        }
    }
}

/// A non-fatal problem found while lowering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowerWarning {
    /// What is wrong.
    pub message: String,
    /// Where, when it is tied to a line.
    pub span: Option<Span>,
}

/// One stage of the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageInfo {
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// 0-based position in the file.
    pub index: usize,
    /// The base after ARG expansion (`busybox`, `scratch`, or another stage's name).
    pub base: String,
    /// Whether the target depends on it (only those are lowered).
    pub reachable: bool,
}

/// The lowered build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lowered {
    /// The graph of the target stage and everything it needs.
    pub definition: Definition,
    /// Warnings (unused build args, ...).
    pub warnings: Vec<LowerWarning>,
    /// Every stage of the file.
    pub stages: Vec<StageInfo>,
}

/// Lower a parsed Dockerfile for `opts`, resolving base images through `resolver`.
pub fn lower(
    ast: &Ast,
    opts: &LowerOptions,
    resolver: &dyn ImageResolver,
) -> Result<Lowered, LowerError> {
    lower_checked(ast, opts, resolver).0
}

/// [`lower`], and the build checks' findings (kept when lowering fails: the rules that ran
/// before the failure still report). The checks' configuration is the file's `# check=`
/// directive, or the `BUILDKIT_DOCKERFILE_CHECK` build arg in `opts.build_args`.
pub fn lower_checked(
    ast: &Ast,
    opts: &LowerOptions,
    resolver: &dyn ImageResolver,
) -> (Result<Lowered, LowerError>, Report) {
    let check_arg = opts.build_args.get(CHECK_BUILD_ARG).map(String::as_str);
    let mut linter = match Linter::new(ast, check_arg) {
        Ok(l) => l,
        Err((span, e)) => {
            let err = LowerError::new(span, LowerErrorKind::CheckOptions(e));
            return (Err(err), Report::default());
        }
    };
    let result = dispatch::Lowerer::new(ast, opts, resolver, &mut linter).run();
    (result, linter.finish())
}
