//! How the frontend learns about base images without doing I/O: the solver implements the
//! trait over its store and registries, the frontend calls it while lowering.

use crate::ImageConfig;
use kiln_oci::{Digest, Platform};

/// Resolves base images; implemented by the solver over the image store and the registry,
/// called by the frontend (so it lives here, below both). It may block (network).
pub trait ImageResolver {
    /// Resolve a base image reference (as written after ARG expansion, e.g. `busybox`,
    /// `busybox:1.36`, `reg:5000/x@sha256:…`) for a platform.
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String>;
}

/// What the resolver knows of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The normalized reference (`docker.io/library/busybox:latest`).
    pub reference: String,
    /// The manifest digest, when known.
    pub digest: Option<Digest>,
    /// The image config, history included.
    pub config: ImageConfig,
}
