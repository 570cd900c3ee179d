use kiln_oci::ImageConfig;
use serde::{Deserialize, Serialize};

/// What the target stage contributes to the final image besides its filesystem: the config
/// (base image's config updated by the Dockerfile) and the history entries of every step,
/// base image entries first. The solver fills in layer digests and times.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    pub config: ImageConfig,
}
