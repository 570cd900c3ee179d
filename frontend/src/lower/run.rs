//! `RUN`: one exec vertex over the stage's filesystem, with its mounts, network and security
//! modes and heredocs; the shell form's command line and its history text.

use std::collections::{BTreeMap, HashMap};

use kiln_graph::{
    ExecOp, FileAction, FileOp, ImageConfig, Mount, MountKind, NetworkMode, Op, SecurityMode,
    Vertex, VertexMeta,
};
use kiln_oci::Digest;

use super::args::PROXY_ARGS;
use super::dispatch::{Lowerer, StageState};
use super::error::{LowerError, LowerErrorKind, MountError};
use super::history::{summarize_heredoc, uppercase_cmd};
use super::mount::{MountType, parse_mount};
use super::paths::{clean, source_path};
use super::stage::{Command, Stage};
use crate::instructions::{self as ins, ShellOrExec};
use crate::shell::{Env, Lexer};

/// `["/bin/sh", "-c", "<args joined>"]` with the stage's SHELL.
pub(super) fn with_shell(config: &ImageConfig, args: &[String]) -> Vec<String> {
    let mut out = if config.config.shell.is_empty() {
        vec!["/bin/sh".to_owned(), "-c".to_owned()]
    } else {
        config.config.shell.clone()
    };
    out.push(args.join(" "));
    out
}

/// `<<EOF`, `<<-EOF`, `<<"EOF"` alone (BuildKit's `MustParseHeredoc` on a whole command).
pub(super) fn heredoc_marker(s: &str) -> Option<String> {
    let rest = s.trim().strip_prefix("<<")?;
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let name = rest.trim_matches(|c| c == '"' || c == '\'');
    let ok = !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == '<');
    ok.then(|| name.to_owned())
}

impl Lowerer<'_> {
    /// `RUN` (BuildKit's `dispatchRun`).
    pub(super) fn exec(
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
                let value = self
                    .lexer
                    .expand_word(v, &st.env)
                    .map(|r| r.value)
                    .map_err(|e| LowerErrorKind::Expand {
                        word: v.to_owned(),
                        source: e,
                    })?;
                self.spend(value.len(), m.span).map_err(|e| *e.kind)?;
                Ok(value)
            })
            .map_err(|k| LowerError::new(m.span, k))?;
            let from = cmd.mount_from.get(idx).cloned().flatten();
            let from_name = spec.from.as_deref().unwrap_or_default();
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
                        Some(src) => self.source_fs(src, from_name, st, states, stages, m.span)?,
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
                            inputs
                                .push(self.source_fs(src, from_name, st, states, stages, m.span)?);
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

        // Every step carries the whole environment: count each copy.
        self.spend(st.env.byte_len() + st.env.len(), cmd.span)?;
        let env = st.env.to_kv_strings();
        let proxy_env = proxy_env(&self.opts.build_args, &st.env);

        let shown = Lexer::new(self.lexer.escape())
            .raw_quotes(true)
            .skip_unset(true)
            .expand_word(&cmd.original, &st.env)
            .map_or_else(|_| cmd.original.clone(), |r| r.value);
        self.spend(shown.len(), cmd.span)?;
        let mut shown = uppercase_cmd(&shown);
        if let Some(s) = summary {
            shown.push_str(&format!(" ({s})"));
        }
        let desc = st.steps.name(&shown, cmd.onbuild);
        let created_by = format!(
            "RUN {} # buildkit",
            run_command_string(&args, &st.build_args, &st.env)
        );
        self.spend(created_by.len(), cmd.span)?;
        let op = Op::Exec(ExecOp {
            rootfs,
            args,
            env,
            cwd: st.cwd.clone(),
            user: st.user.clone(),
            network,
            security,
            mounts,
            proxy_env,
        });
        st.fs = Some(self.add(op, inputs, st, desc, cmd.span.line, st.ignore_cache));
        Self::history(st, created_by, true);
        Ok(())
    }
}

/// The proxy build args as BuildKit hands them to a RUN (`proxyEnvFromBuildArgs`, then the
/// exec op's `proxyEnvList`): a `--build-arg` matches its proxy name in any case (of two
/// spellings, the later in sorted order wins) and the process gets the value under both the
/// upper and the lower case name, whether or not an ARG declared it. A name the stage's ENV or
/// ARGs already set keeps its value. (dockerfile_args_test.go testBuiltinArgs: `$HTTP_PROXY`
/// after `--build-arg http_proxy=`, and a new proxy value still hits the cache.)
fn proxy_env(build_args: &BTreeMap<String, String>, env: &Env) -> Vec<String> {
    let mut out = Vec::new();
    for upper in PROXY_ARGS
        .iter()
        .filter(|n| n.bytes().all(|b| !b.is_ascii_lowercase()))
    {
        let Some(value) = build_args
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(upper))
            .map(|(_, v)| v)
            .next_back()
            .filter(|v| !v.is_empty())
        else {
            continue;
        };
        for name in [upper.to_string(), upper.to_ascii_lowercase()] {
            if env.get(&name).is_none() {
                out.push(format!("{name}={value}"));
            }
        }
    }
    out
}

/// BuildKit's `runCommandString`: `|N K=V ... args`, values as the step sees them.
fn run_command_string(
    args: &[String],
    build_args: &[(String, Option<String>)],
    env: &Env,
) -> String {
    // First position of each name, the last declaration's value.
    let mut shown: Vec<(&str, &str)> = Vec::new();
    let mut position: HashMap<&str, usize> = HashMap::new();
    for (k, v) in build_args {
        let value = env
            .get(k)
            .unwrap_or_else(|| v.as_deref().unwrap_or_default());
        match position.get(k.as_str()) {
            Some(&i) => shown[i].1 = value,
            None => {
                position.insert(k, shown.len());
                shown.push((k, value));
            }
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
}
