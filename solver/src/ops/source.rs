//! Source ops: base images from the store.

use crate::error::{Error, Result};
use crate::refs::{Chain, ChainLayer};
use kiln_cache::Store;
use kiln_oci::Digest;

/// The layer chain of a base image, by manifest digest when known, else by name.
pub fn image_chain(
    store: &Store,
    reference: &str,
    digest: Option<&Digest>,
    step: &Digest,
) -> Result<Chain> {
    let rec = match digest {
        Some(d) => store.image_by_manifest(d)?,
        None => store.resolve(reference)?,
    };
    let rec = rec.ok_or_else(|| Error::MissingImage {
        reference: reference.to_string(),
        digest: digest.map(|d| d.to_string()).unwrap_or_default(),
    })?;
    Ok(chain_of(rec.layers, step))
}

/// A base image's layers as the chain of its source step.
pub fn chain_of(layers: Vec<kiln_cache::LayerInfo>, step: &Digest) -> Chain {
    Chain {
        layers: layers
            .into_iter()
            .map(|layer| ChainLayer {
                layer,
                step: step.clone(),
            })
            .collect(),
    }
}
