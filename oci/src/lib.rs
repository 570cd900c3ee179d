//! kiln's ground floor: the vocabulary every other crate speaks, defined once.
//!
//! - [`Digest`]: a sha256 content address (`sha256:<64 hex>`), and [`chain_id`];
//! - [`Platform`]: `os/arch[/variant]`, the host's platform and index matching;
//! - [`media_type`]: OCI and docker media types, and [`Compression`] of a blob or archive;
//! - [`Descriptor`], [`ImageManifest`], [`ImageIndex`]: the wire types of manifests and
//!   indexes, tolerant of what other tools write (`null` for empty lists and maps);
//! - [`Reference`]: an image reference, parsed and normalized as docker does;
//! - [`ImageConfig`]: the image config, tolerant of `null` and keeping unknown fields;
//! - [`canonical_json`]: the one JSON encoding kiln writes (keys sorted at every level).
//!
//! No I/O, no async, no compression codecs: the frontend builds on this crate alone.

mod config;
mod digest;
mod json;
mod manifest;
pub mod media_type;
mod platform;
mod reference;

pub use config::{ConfigError, Extra, Healthcheck, History, ImageConfig, RootFs, RunConfig};
pub use digest::{Digest, DigestError, chain_id, sha256};
pub use json::canonical_json;
pub use manifest::{Descriptor, ImageIndex, ImageManifest};
pub use media_type::Compression;
pub use platform::{Platform, PlatformError};
pub use reference::{DOCKER_HUB, Reference, ReferenceError};
