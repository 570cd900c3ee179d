//! Base images for the frontend: from the local store (pulled images land there too).

use kiln_frontend::lower::{ImageResolver, ResolvedImage};
use kiln_solver::cache::Store;
use kiln_solver::graph::{Digest, ImageConfig, Platform};

/// Resolves `FROM` references against the store.
pub struct StoreResolver {
    store: Store,
    pull: bool,
}

impl StoreResolver {
    pub fn new(store: Store, pull: bool) -> StoreResolver {
        StoreResolver { store, pull }
    }
}

impl ImageResolver for StoreResolver {
    fn resolve(&self, reference: &str, _platform: &Platform) -> Result<ResolvedImage, String> {
        let name = crate::commands::normalize_reference(reference).map_err(|e| e.to_string())?;
        if self.pull {
            return Err(format!(
                "{reference}: --pull needs the registry client, which this build of kiln does not have yet"
            ));
        }
        let rec = self
            .store
            .resolve(&name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "{reference}: image not found in the local store (kiln images lists what is there; kiln load or kiln import adds images)"
                )
            })?;
        let config: ImageConfig = serde_json::from_slice(&rec.config_bytes)
            .map_err(|e| format!("{reference}: unreadable image config: {e}"))?;
        let digest: Digest = rec
            .manifest_digest
            .to_string()
            .parse()
            .map_err(|e| format!("{reference}: {e}"))?;
        Ok(ResolvedImage {
            reference: name,
            digest: Some(digest),
            config,
        })
    }
}
