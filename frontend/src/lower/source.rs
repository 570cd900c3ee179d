//! The filesystems a step reads besides its stage's: the build context (one local source per
//! step, with exactly its paths), base images and other stages (`--from`).

use kiln_graph::{FileOp, LocalSource, Op, SourceOp, Vertex, VertexMeta};
use kiln_oci::{Digest, Platform};

use super::dispatch::{Lowerer, StageState};
use super::error::{LowerError, LowerErrorKind};
use super::stage::{SourceRef, Stage, context_key};
use super::{NamedContext, ResolvedImage};
use crate::diagnostic::Span;

/// `docker.io/library/busybox:latest@sha256:…` as BuildKit names a resolved base.
pub(super) fn pinned(img: &ResolvedImage) -> String {
    match &img.digest {
        Some(d) if !img.reference.contains('@') => format!("{}@{d}", img.reference),
        _ => img.reference.clone(),
    }
}

impl Lowerer<'_> {
    /// An empty filesystem: a stage with no layers yet, or an image without any.
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

    /// The build context, including exactly `include` (everything when it names `.`).
    pub(super) fn context(&mut self, mut include: Vec<String>) -> Digest {
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

    /// An image's filesystem, for `--from=<image>`.
    fn image_source(
        &mut self,
        reference: &str,
        platform: &Platform,
        span: Span,
    ) -> Result<Digest, LowerError> {
        let key = context_key(reference);
        let img = match self.named(&key, platform, span)? {
            Some(NamedContext::Image(img)) => *img,
            Some(NamedContext::Local(src)) => {
                return Ok(self.def.add(Vertex {
                    op: Op::Source(SourceOp::Local(src)),
                    inputs: Vec::new(),
                    meta: VertexMeta {
                        description: format!("[context {key}] load from client"),
                        ..VertexMeta::default()
                    },
                }));
            }
            None => self.resolve(reference, platform, span)?,
        };
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
    pub(super) fn source_fs(
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
}
