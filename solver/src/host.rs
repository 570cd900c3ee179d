//! kiln on this machine: the store, the OCI runtime and the registry options every command
//! shares. The CLI opens one [`Host`] per command and reaches builds, images, containers and
//! registries through it; the crates below stay behind it.

use crate::error::{Error, Result};
use kiln_cache::Store;
use kiln_executor::Runtime;
use kiln_registry_client::{Client, ClientOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// How to open a [`Host`] (`--root`, `--runtime`, `--insecure-registry`).
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// The store root (`--root`, `KILN_ROOT`); `None` for this user's default.
    pub root: Option<PathBuf>,
    /// The OCI runtime binary (`--runtime`, `KILN_RUNTIME`); `None` for runc in PATH.
    pub runtime: Option<PathBuf>,
    /// Registries spoken to over plain HTTP or with unverified TLS.
    pub insecure_registries: Vec<String>,
}

/// An opened store with the machine's runtime and registry settings.
pub struct Host {
    store: Store,
    runtime: Option<PathBuf>,
    insecure_registries: Vec<String>,
    /// Made on first use: building a client loads the system's TLS roots, which a command
    /// that never talks to a registry does not need.
    client: OnceLock<Arc<Client>>,
}

impl Host {
    /// Opens (creating if needed) the store.
    pub fn open(opts: HostOptions) -> Result<Host> {
        let root = opts.root.unwrap_or_else(Store::default_root);
        Ok(Host {
            store: Store::open(root)?,
            runtime: opts.runtime,
            insecure_registries: opts.insecure_registries,
            client: OnceLock::new(),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        self.store.root()
    }

    /// The default store root of this user (`/var/lib/kiln` as root).
    pub fn default_root() -> PathBuf {
        Store::default_root()
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The OCI runtime (`--runtime`, `KILN_RUNTIME`, or runc in PATH).
    pub(crate) fn runtime(&self) -> Result<Runtime> {
        Ok(Runtime::detect(self.runtime.as_deref())?)
    }

    pub(crate) fn client_options(&self) -> ClientOptions {
        ClientOptions {
            insecure_registries: self.insecure_registries.clone(),
            ..ClientOptions::default()
        }
    }

    /// The registry client, made once.
    pub(crate) fn client(&self) -> Result<Arc<Client>> {
        if let Some(c) = self.client.get() {
            return Ok(c.clone());
        }
        let c =
            Client::new(self.client_options()).map_err(|e| Error::other("registry client", e))?;
        Ok(self.client.get_or_init(|| Arc::new(c)).clone())
    }
}

/// A tokio runtime for one command's asynchronous work (pulls, pushes, a build).
pub(crate) fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io {
            path: PathBuf::from("tokio runtime"),
            source: e,
        })
}
