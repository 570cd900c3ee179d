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
    /// The store's GC lock, held shared while this process lives (exclusive for a prune).
    gc: kiln_cache::GcLock,
}

impl Host {
    /// Opens (creating if needed) the store, and reaps what killed kiln processes left in it
    /// (see [`Host::reap`]).
    pub fn open(opts: HostOptions) -> Result<Host> {
        let root = opts.root.unwrap_or_else(Store::default_root);
        let store = Store::open(root)?;
        let gc = store.gc_shared()?;
        let host = Host {
            store,
            gc,
            runtime: opts.runtime,
            insecure_registries: opts.insecure_registries,
            client: OnceLock::new(),
        };
        host.reap();
        Ok(host)
    }

    /// Stops and removes what dead kiln processes left running or mounted: the runc
    /// containers, cgroups and bundles of RUN steps, their step mounts, and the containers of
    /// `kiln run`s and shims that were killed (recorded as exited, code 255). Whatever belongs
    /// to a live kiln process (a build, a foreground `kiln run`, a `kiln run -d` shim) is
    /// left alone: every bundle and step area records its owner as `pid starttime`.
    ///
    /// Cheap: it reads the entries of the directories of running work only (bundles, runtime
    /// state, the scratch directory), never the images or the stopped containers, and runs the
    /// runtime only for what it reaps. Failures are logged: they never stop a command.
    pub fn reap(&self) {
        let runtime = self.runtime().ok();
        if let Err(e) =
            kiln_executor::cleanup_stale_with(runtime.as_ref(), &self.root().join("executor"))
        {
            tracing::warn!(error = %e, "cleaning up the runs of killed kiln processes");
        }
        crate::ops::step::cleanup_stale(&self.store);
        let containers = self.root().join("containers");
        if containers.is_dir() {
            let reaped = kiln_executor::Containers::open(containers).map(|c| match runtime {
                Some(rt) => c.with_runtime(rt),
                None => c,
            });
            if let Err(e) = reaped.and_then(|c| c.reap_orphans()) {
                tracing::warn!(error = %e, "reaping orphaned containers");
            }
        }
        // After the containers: endpoints of containers reaped above are gone by now.
        let networks = self.root().join("networks");
        if networks.is_dir()
            && let Ok(n) = kiln_executor::networks::Networks::open(networks)
        {
            n.sweep();
        }
    }

    pub(crate) fn gc_lock(&self) -> &kiln_cache::GcLock {
        &self.gc
    }

    /// The OCI runtime's path and the first line of its `--version` (`runc version 1.1.5`),
    /// for `kiln version` and `kiln info`; `None` when none is found.
    pub fn runtime_version(&self) -> Option<(PathBuf, String)> {
        let rt = self.runtime().ok()?;
        let out = std::process::Command::new(rt.path())
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        Some((
            rt.path().to_path_buf(),
            text.lines().next().unwrap_or("").trim().to_owned(),
        ))
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
