//! `COPY` and `ADD`: one file op that copies paths from the build context, another stage or an
//! image, downloads URLs (ADD) and writes heredocs into the stage's filesystem.

use kiln_graph::{CopyAction, FileAction, FileOp, Op, SourceOp, Vertex, VertexMeta};
use kiln_oci::Digest;

use super::config::{check_chmod, chown};
use super::dispatch::{Lowerer, StageState};
use super::error::{LowerError, LowerErrorKind};
use super::paths::{dest_path, source_path, url_filename};
use super::run::heredoc_marker;
use super::stage::{Command, SourceRef, Stage};
use crate::ast::{Heredoc, Word};
use crate::diagnostic::Span;
use crate::instructions as ins;
use crate::shell::{Escape, expand_heredoc};

/// COPY and ADD, unified.
pub(super) struct CopyParams<'c> {
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
    /// `ADD --unpack`; `None` when not given.
    unpack: Option<bool>,
    heredocs: &'c [Heredoc],
}

impl<'c> CopyParams<'c> {
    /// A `COPY`'s sources and flags; `cmd` holds what its `--from` refers to.
    pub(super) fn copy(cmd: &'c Command, c: &'c ins::Copy) -> Self {
        Self {
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
            unpack: Some(false),
            heredocs: &c.heredocs,
        }
    }

    /// An `ADD`'s sources and flags.
    pub(super) fn add(a: &'c ins::Add) -> Self {
        Self {
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
            unpack: a.unpack,
            heredocs: &a.heredocs,
        }
    }
}

impl Lowerer<'_> {
    /// `COPY` and `ADD` (BuildKit's `dispatchCopy`).
    pub(super) fn copy(
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
        let shown = self.display(&cmd.original, &st.env, cmd.span)?;
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
                    // A download is unpacked only on request (BuildKit's convert_copy.go;
                    // dockerfile_add_test.go: "ADD from URL with --unpack=true").
                    extract_archive: p.unpack == Some(true),
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
                extract_archive: p.add && p.unpack != Some(false),
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
            if doc.expand {
                self.spend(data.len(), doc.span)?;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_and_http() {
        assert!(is_http("https://example.com/x.tgz"));
        assert!(!is_http("https://github.com/a/b.git"));
        assert!(is_git("https://github.com/a/b.git#main"));
        assert!(is_git("git@github.com:a/b.git"));
        assert!(!is_git("src/"));
    }
}
