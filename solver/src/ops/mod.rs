//! Op implementations over real directories: sources, `RUN` in the sandbox, file actions (with
//! Docker's copy rules and ADD's archives), and the export of the result as an image.

mod archive;
pub mod copy;
pub mod exec;
pub mod export;
pub mod file;
pub mod http;
pub(crate) mod incremental;
pub mod mounts;
pub mod source;
pub mod step;

use kiln_cache::{Encoding, LayerOptions, Store};
use kiln_executor::Runtime;
use std::collections::BTreeMap;

/// What ops need from the build they run in: the store, the sandbox's runtime, how new layers
/// are written, and the secrets `RUN --mount=type=secret` may read.
pub(crate) struct OpEnv {
    pub(crate) store: Store,
    pub(crate) runtime: Runtime,
    /// Encoding of new layers.
    pub(crate) compression: Encoding,
    /// The build's epoch: file times in new layers are clamped to it (`None`: wall-clock
    /// times, `--no-reproducible`).
    pub(crate) source_date_epoch: Option<i64>,
    /// `--secret id=…` (never in a key, a layer or a log).
    pub(crate) secrets: BTreeMap<String, mounts::SecretSource>,
    /// `--network`, `--add-host` of the build's RUN steps.
    pub(crate) network: exec::RunNetwork,
}

impl OpEnv {
    /// How a step writes its layer.
    pub(crate) fn layer_options(&self) -> LayerOptions {
        LayerOptions {
            compression: self.compression,
            mtime_clamp: self.source_date_epoch,
            ..LayerOptions::default()
        }
    }
}
