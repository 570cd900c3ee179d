//! Build args: the automatic and proxy args, ARGs before the first FROM (global scope) and
//! inside a stage, and the warning for `--build-arg`s no ARG declared.

use super::dispatch::{Lowerer, StageState};
use super::error::LowerError;
use super::{LowerOptions, LowerWarning};
use crate::ast::Ast;
use crate::instructions as ins;
use crate::shell::Env;

/// Build args every Dockerfile may use without declaring them.
pub(super) const PROXY_ARGS: [&str; 10] = [
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

/// The global scope before any ARG: the automatic platform args and `TARGETSTAGE`, each
/// overridden by a `--build-arg` of that name.
pub(super) fn automatic_args(ast: &Ast, opts: &LowerOptions) -> Env {
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
    // TARGETSTAGE: the requested target, else the last stage's name, `default` for an unnamed
    // last stage (BuildKit's `defaultArgs`; dockerfile_args_test.go testTargetStageNameArg).
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
        .unwrap_or_else(|| "default".to_owned());
    let target_stage = opts
        .build_args
        .get("TARGETSTAGE")
        .cloned()
        .unwrap_or_else(|| opts.target.clone().unwrap_or(last_name));
    global.set("TARGETSTAGE", target_stage);
    global
}

impl Lowerer<'_> {
    /// ARGs before the first FROM (BuildKit's `buildMetaArgs`).
    pub(super) fn global_args(&mut self, decls: &[ins::ArgDecl]) -> Result<(), LowerError> {
        for d in decls {
            let key = d.name.value.clone();
            self.consumed.insert(key.clone());
            let value = match (self.opts.build_args.get(&key), &d.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(def)) => Some(self.expand(def, &self.global)?),
                (None, None) => None,
            };
            if let Some(v) = value {
                self.global.set(key, v);
            }
        }
        Ok(())
    }

    /// `ARG` inside a stage (BuildKit's `dispatchArg`).
    pub(super) fn arg(
        &mut self,
        st: &mut StageState,
        decls: &[ins::ArgDecl],
    ) -> Result<(), LowerError> {
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
                st.env_shadowed |= st.config_env.contains_key(&key);
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

    /// Warns of the `--build-arg`s no ARG declared (BuildKit's "were not consumed").
    pub(super) fn warn_unused_build_args(&mut self) {
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
    }
}
