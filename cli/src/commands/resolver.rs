//! Base images for the frontend: from the local store, pulled from their registry when the
//! store lacks them (or always looked up again with `--pull`).

use kiln_frontend::lower::{ImageResolver, ResolvedImage};
use kiln_oci::{Digest, Platform};
use kiln_solver::cache::{ImageRecord, Store};
use kiln_solver::distribution;
use kiln_solver::graph::ImageConfig;
use kiln_solver::registry::{Client, Reference};

/// Resolves `FROM` references against the store, and a registry when one is given.
pub struct StoreResolver {
    store: Store,
    pull: bool,
    remote: Option<(Remote, tokio::runtime::Handle)>,
    /// Fetch only manifests and configs: layers come later, if a step needs them.
    lazy: bool,
    /// Images resolved lazily, not yet images of the store.
    staged: std::sync::Mutex<Vec<(Reference, ImageRecord)>>,
}

/// The registry client, made on first use: building one loads the system's TLS roots, which a
/// build whose images are all local never needs.
struct Remote {
    insecure: Vec<String>,
    client: std::sync::OnceLock<std::sync::Arc<Client>>,
}

impl StoreResolver {
    /// Store only.
    pub fn new(store: Store) -> StoreResolver {
        StoreResolver {
            store,
            pull: false,
            remote: None,
            lazy: false,
            staged: Default::default(),
        }
    }

    /// Store, then the registry (futures run on `handle`; call `resolve` from outside that
    /// runtime). `pull`: look tags up in the registry even when the store has them.
    pub fn with_registry(
        store: Store,
        insecure: Vec<String>,
        handle: tokio::runtime::Handle,
        pull: bool,
    ) -> StoreResolver {
        let remote = Remote {
            insecure,
            client: std::sync::OnceLock::new(),
        };
        StoreResolver {
            store,
            pull,
            remote: Some((remote, handle)),
            lazy: false,
            staged: Default::default(),
        }
    }

    /// Pulls only manifests and configs (see [`distribution::pull_lazily`]); the caller
    /// takes the results with [`staged`](Self::staged) and fetches layers as steps need them.
    pub fn lazy(mut self, lazy: bool) -> StoreResolver {
        self.lazy = lazy;
        self
    }

    /// The images resolved lazily so far.
    pub fn staged(&self) -> Vec<(Reference, ImageRecord)> {
        self.staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Uses `client` for pulls instead of making one (a build that also reads a remote cache
    /// shares its client: making one loads the system's TLS roots).
    pub fn with_client(self, client: Option<std::sync::Arc<Client>>) -> StoreResolver {
        if let (Some(c), Some((remote, _))) = (client, &self.remote) {
            let _ = remote.client.set(c);
        }
        self
    }

    fn fetch(
        &self,
        reference: &str,
        r: &Reference,
        platform: &Platform,
    ) -> Result<ImageRecord, String> {
        let Some((remote, handle)) = &self.remote else {
            return Err(format!(
                "{reference}: image not found in the local store (kiln images lists what is there; kiln pull, load or import adds images)"
            ));
        };
        let client = match remote.client.get() {
            Some(c) => c,
            None => {
                let c = Client::new(kiln_solver::registry::ClientOptions {
                    insecure_registries: remote.insecure.clone(),
                    ..Default::default()
                })
                .map_err(|e| e.to_string())?;
                remote.client.get_or_init(|| std::sync::Arc::new(c))
            }
        };
        let pulled = if self.lazy {
            handle
                .block_on(distribution::pull_lazily(client, &self.store, r, platform))
                .inspect(|rec| {
                    self.staged
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((r.clone(), rec.clone()));
                })
        } else {
            handle.block_on(distribution::pull(client, &self.store, r, platform))
        };
        pulled.map_err(|e| {
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
