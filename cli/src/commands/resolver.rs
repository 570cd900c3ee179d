//! Base images for the frontend: from the local store, pulled from their registry when the
//! store lacks them (or always looked up again with `--pull`).

use kiln_frontend::lower::{ImageResolver, ResolvedImage};
use kiln_solver::cache::{ImageRecord, Store};
use kiln_solver::distribution;
use kiln_solver::graph::{Digest, ImageConfig, Platform};
use kiln_solver::registry::{Client, Reference};

/// Resolves `FROM` references against the store, and a registry when one is given.
pub struct StoreResolver {
    store: Store,
    pull: bool,
    remote: Option<(Client, tokio::runtime::Handle)>,
}

impl StoreResolver {
    /// Store only.
    pub fn new(store: Store) -> StoreResolver {
        StoreResolver {
            store,
            pull: false,
            remote: None,
        }
    }

    /// Store, then the registry through `client` (futures run on `handle`; call `resolve` from
    /// outside that runtime). `pull`: look tags up in the registry even when the store has them.
    pub fn with_registry(
        store: Store,
        client: Client,
        handle: tokio::runtime::Handle,
        pull: bool,
    ) -> StoreResolver {
        StoreResolver {
            store,
            pull,
            remote: Some((client, handle)),
        }
    }

    fn fetch(
        &self,
        reference: &str,
        r: &Reference,
        platform: &Platform,
    ) -> Result<ImageRecord, String> {
        let Some((client, handle)) = &self.remote else {
            return Err(format!(
                "{reference}: image not found in the local store (kiln images lists what is there; kiln pull, load or import adds images)"
            ));
        };
        handle
            .block_on(distribution::pull(
                client,
                &self.store,
                r,
                &distribution::platform(platform),
            ))
            .map_err(|e| {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(&format!(": {s}"));
                    src = s.source();
                }
                msg
            })
    }
}

impl ImageResolver for StoreResolver {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        let r: Reference = reference
            .parse()
            .map_err(|e| format!("invalid reference {reference:?}: {e}"))?;
        let name = r.to_string();
        let local = self.store.resolve(&name).map_err(|e| e.to_string())?;
        let rec = match local {
            Some(rec) if !self.pull || r.digest.is_some() => rec,
            Some(rec) => match self.fetch(reference, &r, platform) {
                Ok(fresh) => fresh,
                Err(e) => {
                    tracing::warn!("{reference}: using the local image: {e}");
                    rec
                }
            },
            None => self.fetch(reference, &r, platform)?,
        };
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
