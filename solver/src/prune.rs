//! The store's lifecycle as docker users know it: `system df`, the prunes, named volumes and
//! the automatic GC that ends a build (see `kiln_cache::prune` for the locking rules).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use kiln_cache::RemoveEvent;
pub use kiln_cache::prune::{human_size, parse_duration, parse_size};
pub use kiln_cache::{CacheEntry, DiskUsage, ImageUsage, PruneOptions, PruneReport};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::host::Host;

/// The automatic GC's default budget: 10% of the store's filesystem, at most 20 GB.
pub fn default_budget(root: &Path) -> u64 {
    const MAX: u64 = 20_000_000_000;
    match rustix::fs::statvfs(root) {
        Ok(s) => (s.f_blocks * s.f_frsize / 10).min(MAX),
        Err(_) => MAX,
    }
}

/// `<root>/config.json`: `{"gc": {"enabled": true, "keepStorage": "10GB"}}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreConfig {
    #[serde(default)]
    pub gc: GcConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A size (`10GB`, `512MiB`); default: [`default_budget`].
    #[serde(default)]
    pub keep_storage: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            enabled: true,
            keep_storage: None,
        }
    }
}

/// A container as the prunes and `system df` see it.
#[derive(Debug, Clone)]
pub struct ContainerUse {
    pub id: String,
    pub name: String,
    pub image: String,
    pub running: bool,
    /// Named volumes it mounts.
    pub volumes: Vec<String>,
}

/// What `system df` shows.
#[derive(Debug, Clone)]
pub struct SystemUsage {
    pub disk: DiskUsage,
    pub containers: Vec<ContainerUse>,
    /// Image IDs (config digests) some container uses.
    pub images_in_use: HashSet<String>,
    /// Their manifest digests.
    pub manifests_in_use: Vec<kiln_oci::Digest>,
}

impl SystemUsage {
    /// Bytes of images no container uses (docker's reclaimable).
    pub fn images_reclaimable(&self) -> u64 {
        let unused: u64 = self
            .disk
            .images
            .iter()
            .filter(|i| !self.images_in_use.contains(&i.id.to_string()))
            .map(|i| i.size - i.shared)
            .sum();
        unused.min(self.disk.images_bytes)
    }
}

impl Host {
    /// Reads `<root>/config.json` (absent: the defaults).
    pub fn store_config(&self) -> Result<StoreConfig> {
        let path = self.root().join("config.json");
        match fs_err::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::other(path.display().to_string(), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StoreConfig::default()),
            Err(e) => Err(Error::Io { path, source: e }),
        }
    }

    /// The build cache budget: `flag` (`--gc-keep-storage`), else the config file's, else
    /// [`default_budget`]; `None` when the config turns the automatic GC off.
    pub fn gc_budget(&self, flag: Option<u64>) -> Result<Option<u64>> {
        if let Some(b) = flag {
            return Ok(Some(b));
        }
        let cfg = self.store_config()?;
        if !cfg.gc.enabled {
            return Ok(None);
        }
        match cfg.gc.keep_storage {
            Some(s) => parse_size(&s).map(Some).ok_or_else(|| {
                Error::other(
                    format!(
                        "{}: gc.keepStorage",
                        self.root().join("config.json").display()
                    ),
                    format!("{s:?} is not a size"),
                )
            }),
            None => Ok(Some(default_budget(self.root()))),
        }
    }

    /// Holds the GC lock exclusive (waits for every other kiln process of this store).
    pub fn lock_exclusive(&self, waiting: impl FnOnce()) -> Result<()> {
        self.gc_lock().upgrade(waiting).map_err(Error::Cache)
    }

    /// Trims the build cache to `budget`, least recently used first, if no other kiln
    /// process uses the store right now (else leaves it for a later build). Returns what it
    /// removed.
    pub fn auto_gc(&self, budget: u64) -> Result<Option<PruneReport>> {
        let lock = self.gc_lock();
        if !lock.try_upgrade() {
            lock.downgrade();
            return Ok(None);
        }
        let usage = self.store().disk_usage();
        let result = match usage {
            Ok(u) if u.build_cache_bytes() <= budget => Ok(None),
            Ok(_) => self
                .prune_build_cache(&PruneOptions {
                    all: true,
                    keep_storage: Some(budget),
                    ..PruneOptions::default()
                })
                .map(Some),
            Err(e) => Err(Error::Cache(e)),
        };
        lock.downgrade();
        result
    }

    /// The manifests of the images containers were made from (their snapshots are mounted).
    fn manifests_in_use(&self) -> Result<Vec<kiln_oci::Digest>> {
        let mut out = Vec::new();
        for c in self.container_uses()? {
            if let Ok(Some(rec)) = self.store().resolve(&c.image) {
                out.push(rec.manifest_digest);
            }
        }
        Ok(out)
    }

    /// Containers with their images and named volumes.
    pub fn container_uses(&self) -> Result<Vec<ContainerUse>> {
        let volumes_root = self.root().join("volumes");
        let mut out = Vec::new();
        for c in self.containers()?.list(true)? {
            let running = c
                .state()
                .map(|s| s.status == kiln_executor::Status::Running)
                .unwrap_or(false);
            let volumes = c
                .config()
                .plan
                .mounts
                .iter()
                .filter_map(|m| match m {
                    kiln_executor::MountPlan::Bind { src, .. } => src
                        .strip_prefix(&volumes_root)
                        .ok()
                        .and_then(|rest| rest.components().next())
                        .map(|n| n.as_os_str().to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect();
            out.push(ContainerUse {
                id: c.id().to_owned(),
                name: c.name().to_owned(),
                image: c.config().image.clone(),
                running,
                volumes,
            });
        }
        Ok(out)
    }

    /// `system df`.
    pub fn system_usage(&self) -> Result<SystemUsage> {
        let disk = self.store().disk_usage()?;
        let containers = self.container_uses()?;
        let mut images_in_use = HashSet::new();
        let mut manifests_in_use = Vec::new();
        for c in &containers {
            if let Ok(Some(rec)) = self.store().resolve(&c.image) {
                images_in_use.insert(rec.config_digest.to_string());
                manifests_in_use.push(rec.manifest_digest);
            }
        }
        Ok(SystemUsage {
            disk,
            containers,
            images_in_use,
            manifests_in_use,
        })
    }

    /// `builder prune`. Hold [`lock_exclusive`](Self::lock_exclusive) first.
    pub fn prune_build_cache(&self, opts: &PruneOptions) -> Result<PruneReport> {
        let in_use = self.manifests_in_use()?;
        let opts = PruneOptions {
            in_use: in_use.clone(),
            ..opts.clone()
        };
        let mut report = self.store().prune_build_cache(&opts)?;
        if opts.all {
            // The logs of RUN steps are build cache too.
            if let Ok(entries) = fs_err::read_dir(self.root().join("logs")) {
                for e in entries.flatten() {
                    let bytes = kiln_cache::prune::du(&e.path());
                    if fs_err::remove_file(e.path()).is_ok() {
                        report.reclaimed += bytes;
                    }
                }
            }
            // Kept failed-step states are build cache too.
            for s in self.failed_steps()? {
                let bytes = kiln_cache::prune::du(&self.root().join("debug").join(&s.id));
                self.remove_failed_step(&s.id)?;
                report.reclaimed += bytes;
            }
            let more = self.store().collect(&in_use)?;
            report.blobs += more.blobs_removed;
            report.snapshots += more.snapshots_removed;
            report.reclaimed += more.bytes_freed;
        }
        Ok(report)
    }

    /// `image prune [-a]`: dangling images (no name), or with `all` every image no container
    /// uses; then the blobs only they used. Hold the exclusive lock first.
    pub fn prune_images(&self, all: bool) -> Result<(Vec<RemoveEvent>, u64)> {
        let usage = self.system_usage()?;
        let mut events = Vec::new();
        for img in &usage.disk.images {
            if usage.images_in_use.contains(&img.id.to_string()) {
                continue;
            }
            if !all && !img.names.is_empty() {
                continue;
            }
            if img.names.is_empty() {
                events.extend(self.store().remove_image(&img.id.to_string(), true)?);
            } else {
                for n in &img.names {
                    events.extend(self.store().remove_image(n, true)?);
                }
            }
        }
        let stats = self.store().collect(&usage.manifests_in_use)?;
        Ok((events, stats.bytes_freed))
    }

    /// `container prune`: every container that is not running. Returns their ids and bytes.
    pub fn prune_containers(&self) -> Result<(Vec<String>, u64)> {
        let mut removed = Vec::new();
        let mut bytes = 0;
        let store = self.containers()?;
        for c in store.list(true)? {
            let running = c
                .state()
                .map(|s| s.status == kiln_executor::Status::Running)
                .unwrap_or(true);
            if running {
                continue;
            }
            let size = kiln_cache::prune::du(&self.root().join("containers").join(c.id()));
            c.remove(false)?;
            bytes += size;
            removed.push(c.id().to_owned());
        }
        Ok((removed, bytes))
    }

    /// Named volumes with their sizes and the containers that use them.
    pub fn volumes(&self) -> Result<BTreeMap<String, (u64, Vec<String>)>> {
        let mut out: BTreeMap<String, (u64, Vec<String>)> = BTreeMap::new();
        if let Ok(entries) = fs_err::read_dir(self.root().join("volumes")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                out.insert(name, (kiln_cache::prune::du(&e.path()), Vec::new()));
            }
        }
        for c in self.container_uses()? {
            for v in c.volumes {
                if let Some(entry) = out.get_mut(&v) {
                    entry.1.push(c.name.clone());
                }
            }
        }
        Ok(out)
    }

    /// `volume create NAME`: creates it (an existing one is fine, as docker has it).
    pub fn create_volume(&self, name: &str) -> Result<PathBuf> {
        check_volume_name(name)?;
        let dir = self.volume_dir(name);
        fs_err::create_dir_all(&dir).map_err(|e| Error::Io {
            path: dir.clone(),
            source: e,
        })?;
        Ok(dir)
    }

    /// `volume rm NAME`: refuses a volume a container uses unless `force`... docker refuses
    /// even then while a container exists; so does kiln.
    pub fn remove_volume(&self, name: &str) -> Result<u64> {
        let vols = self.volumes()?;
        let Some((size, users)) = vols.get(name) else {
            return Err(Error::other(
                "volume rm",
                format!("get {name}: no such volume"),
            ));
        };
        if !users.is_empty() {
            return Err(Error::other(
                "volume rm",
                format!("remove {name}: volume is in use - [{}]", users.join(", ")),
            ));
        }
        let dir = self.root().join("volumes").join(name);
        fs_err::remove_dir_all(&dir).map_err(|e| Error::Io {
            path: dir,
            source: e,
        })?;
        Ok(*size)
    }

    /// `volume prune`: every volume no container uses.
    pub fn prune_volumes(&self) -> Result<(Vec<String>, u64)> {
        let mut removed = Vec::new();
        let mut bytes = 0;
        for (name, (_, users)) in self.volumes()? {
            if users.is_empty() {
                bytes += self.remove_volume(&name)?;
                removed.push(name);
            }
        }
        Ok((removed, bytes))
    }
}

/// docker's volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn check_volume_name(name: &str) -> Result<()> {
    let ok = name.len() >= 2
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::other(
            "volume create",
            format!(
                "{name:?} includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed"
            ),
        ))
    }
}
