//! How the frontend learns about base images and named contexts without doing I/O: the solver
//! implements the trait over its store, registries and the client's directories, the frontend
//! calls it while lowering.

use crate::{ImageConfig, LocalSource};
use kiln_oci::{Digest, Platform, Reference};

/// Resolves base images and named contexts; implemented by the solver over the image store,
/// the registry and `--build-context`, called by the frontend (so it lives here, below both).
/// It may block (network).
pub trait ImageResolver {
    /// Resolve a base image reference (as written after ARG expansion, e.g. `busybox`,
    /// `busybox:1.36`, `reg:5000/x@sha256:…`) for a platform.
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String>;

    /// Whether a named context (`--build-context NAME=…`) answers to `name`: a stage of that
    /// name, a `FROM name` or a `--from=name`. `name` is in docker's familiar form without
    /// `:latest` (`alpine`, `alpine:3.20`, `reg:5000/app`), as BuildKit looks it up. Cheap: no
    /// I/O, so the frontend may ask for every stage.
    fn has_named_context(&self, name: &str) -> bool {
        let _ = name;
        false
    }

    /// The named context `name`, loaded (an image resolved, a directory found); `None` when
    /// there is no such context.
    fn named_context(
        &self,
        name: &str,
        platform: &Platform,
    ) -> Result<Option<NamedContext>, String> {
        let _ = (name, platform);
        Ok(None)
    }
}

/// What a named context gives a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// An image (`docker-image://REF`, `oci-layout://PATH`): its filesystem and its config.
    Image(Box<ResolvedImage>),
    /// A directory of the client (a path, or a git or http context fetched to one): its files,
    /// with the `.dockerignore` patterns found in it; the image config is empty.
    Local(LocalSource),
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

/// The name a named context answers to, for a stage name, a `FROM` base, a `--from` value or
/// the NAME of `--build-context NAME=…`: docker's familiar form without `:latest`
/// (`docker.io/library/alpine:latest` → `alpine`), as BuildKit looks contexts up; what is no
/// reference (`Build_Env`) is only lower-cased.
pub fn context_key(name: &str) -> String {
    match name.parse::<Reference>() {
        Ok(r) => {
            let f = r.familiar();
            f.strip_suffix(":latest").map(str::to_owned).unwrap_or(f)
        }
        Err(_) => name.to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::context_key;

    #[test]
    fn context_keys_are_familiar_names_without_latest() {
        assert_eq!(context_key("alpine"), "alpine");
        assert_eq!(context_key("alpine:latest"), "alpine");
        assert_eq!(context_key("docker.io/library/alpine:latest"), "alpine");
        assert_eq!(context_key("alpine:3.20"), "alpine:3.20");
        assert_eq!(context_key("reg:5000/app"), "reg:5000/app");
        assert_eq!(context_key("Build_Env"), "build_env");
    }
}
