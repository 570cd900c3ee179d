//! Disk accounting and pruning: what the store holds (images, build cache, snapshots, cache
//! mounts, kept debug states), what of it is reclaimable, and removing build cache least
//! recently used first.
//!
//! Who may remove what is decided by one lock, `<root>/gc.lock`: every process that opens the
//! store through the solver's `Host` holds it shared for its lifetime (a build, a pull, a
//! foreground run), and a prune holds it exclusive, so a prune never removes what a running
//! command is about to use. A build ends with an automatic GC only when it can take the lock
//! exclusive without waiting (no other kiln process is running).
//!
//! Crash safety: records are removed in one index transaction before their blobs; a blob goes
//! by unlink, a snapshot by a rename into scratch first. A prune killed at any point leaves at
//! worst blobs no record uses, which the next GC removes; never a record whose blobs are gone
//! (a record whose blobs are missing is dropped by the next prune, and the solver never uses
//! one).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiln_oci::{Digest, chain_id};
use redb::ReadableTable;
use rustix::fs::FlockOperation;

use crate::error::{Error, Result};
use crate::index::CACHE;
use crate::layer::LayerInfo;
use crate::store::Store;

const USED: &str = "cache-used";
/// The kv table of `Store::lease`.
const LEASES: &str = "lease";

/// One build cache record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The record key (`step/<key>`).
    pub key: String,
    /// Its layers, bottom first.
    pub layers: Vec<LayerInfo>,
    /// Unix milliseconds of its last use (0: not recorded).
    pub last_used: i64,
}

/// What one image takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUsage {
    pub names: Vec<String>,
    pub id: Digest,
    pub manifest_digest: Digest,
    pub created: Option<String>,
    /// Bytes of its blobs (manifest, config, layers).
    pub size: u64,
    /// Bytes of those blobs that other images use too.
    pub shared: u64,
}

/// What the store takes on disk, by kind; `du` of the store root is about the sum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub images: Vec<ImageUsage>,
    /// Bytes of the blobs images use, each blob once.
    pub images_bytes: u64,
    /// Build cache records, newest use first.
    pub cache: Vec<CacheEntry>,
    /// Bytes of blobs no image uses (cache layers, orphans), each once.
    pub cache_blob_bytes: u64,
    /// Bytes of unpacked snapshots.
    pub snapshot_bytes: u64,
    /// Bytes of `RUN --mount=type=cache` directories.
    pub cache_mount_bytes: u64,
    /// Bytes of kept failed-step states.
    pub debug_bytes: u64,
    /// Bytes of containers (their upper directories and logs).
    pub container_bytes: u64,
    /// Bytes of named volumes, by name.
    pub volumes: BTreeMap<String, u64>,
    /// Bytes of the index, scratch and stat caches.
    pub internal_bytes: u64,
}

impl DiskUsage {
    /// Everything that counts as build cache (BuildKit's "Build Cache" row).
    pub fn build_cache_bytes(&self) -> u64 {
        self.cache_blob_bytes
            + self.snapshot_bytes
            + self.cache_mount_bytes
            + self.debug_bytes
            + self.internal_bytes
    }
}

/// Which build cache a prune removes.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Every record, not only those no image uses.
    pub all: bool,
    /// Only records last used longer ago than this.
    pub until: Option<Duration>,
    /// Remove least recently used records only until the build cache is at most this.
    pub keep_storage: Option<u64>,
    /// Also every cache mount directory (`all`, or a budget that needs it).
    pub cache_mounts: bool,
    /// Images (manifest digests) whose unpacked snapshots stay: those of containers, which
    /// mount them. Other images keep their blobs; their snapshots are build cache.
    pub in_use: Vec<Digest>,
}

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Records removed (their keys).
    pub records: Vec<String>,
    pub blobs: u64,
    pub snapshots: u64,
    pub cache_mounts: u64,
    /// Bytes freed on disk.
    pub reclaimed: u64,
}

/// The store's GC lock, shared or exclusive; released on drop.
#[derive(Debug)]
pub struct GcLock {
    file: fs_err::File,
}

impl GcLock {
    /// Turns a shared hold into an exclusive one, waiting for every other holder; `waiting`
    /// is called once if it has to wait.
    pub fn upgrade(&self, waiting: impl FnOnce()) -> Result<()> {
        if rustix::fs::flock(&self.file, FlockOperation::NonBlockingLockExclusive).is_err() {
            waiting();
            rustix::fs::flock(&self.file, FlockOperation::LockExclusive)
                .map_err(|e| Error::Io(std::io::Error::from(e)))?;
        }
        Ok(())
    }

    /// Turns a shared hold into an exclusive one if no other process holds it; `false` leaves
    /// it shared.
    pub fn try_upgrade(&self) -> bool {
        rustix::fs::flock(&self.file, FlockOperation::NonBlockingLockExclusive).is_ok()
    }

    /// Back to shared after [`try_upgrade`](Self::try_upgrade).
    pub fn downgrade(&self) {
        let _ = rustix::fs::flock(&self.file, FlockOperation::LockShared);
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Disk bytes of a tree (blocks, as `du`), without following symlinks or crossing mounts.
pub fn du(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = fs_err::symlink_metadata(path) else {
        return 0;
    };
    let mut total = md.blocks() * 512;
    if md.is_dir() {
        let dev = md.dev();
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs_err::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(m) = e.path().symlink_metadata() else {
                    continue;
                };
                if m.dev() != dev {
                    continue;
                }
                total += m.blocks() * 512;
                if m.is_dir() {
                    stack.push(e.path());
                }
            }
        }
    }
    total
}

fn blob_disk(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs_err::symlink_metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

/// Each layer of a chain with the chain ID (hex) of the stack up to it.
fn prefixes(layers: &[LayerInfo]) -> Vec<(String, &LayerInfo)> {
    let mut ids = Vec::new();
    let mut out = Vec::new();
    for l in layers {
        ids.push(l.diff_id.clone());
        if let Some(c) = chain_id(&ids) {
            out.push((c.hex(), l));
        }
    }
    out
}

/// Layers of a record's chain (the solver's JSON: `{"layers": [{"layer": LayerInfo, …}]}`).
fn record_layers(bytes: &[u8]) -> Option<Vec<LayerInfo>> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    v.get("layers")?
        .as_array()?
        .iter()
        .map(|l| serde_json::from_value(l.get("layer")?.clone()).ok())
        .collect()
}

impl Store {
    /// Holds the GC lock shared (every command that may use blobs, snapshots or records).
    pub fn gc_shared(&self) -> Result<GcLock> {
        let file = self.gc_lock_file()?;
        rustix::fs::flock(&file, FlockOperation::LockShared)
            .map_err(|e| Error::Io(std::io::Error::from(e)))?;
        Ok(GcLock { file })
    }

    fn gc_lock_file(&self) -> Result<fs_err::File> {
        Ok(fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(self.root().join("gc.lock"))?)
    }

    /// Records that these cache records were used now (a build's hits and new records).
    pub fn touch_cache(&self, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let now = now_ms().to_string();
        self.index().write(|txn| {
            let mut t = txn.open_table(crate::index::KV)?;
            for k in keys {
                let kv = format!("{USED}\0{k}");
                t.insert(kv.as_str(), now.as_bytes())?;
            }
            Ok(())
        })
    }

    /// Every build cache record with its layers and last use, newest use first. Records
    /// whose layers cannot be read are listed with none.
    pub fn cache_entries(&self) -> Result<Vec<CacheEntry>> {
        let used: HashMap<String, i64> = self
            .kv_list(USED)?
            .into_iter()
            .filter_map(|(k, v)| Some((k, std::str::from_utf8(&v).ok()?.parse().ok()?)))
            .collect();
        let mut out = self.index().read(|txn| {
            let t = txn.open_table(CACHE)?;
            let mut out = Vec::new();
            for item in t.iter()? {
                let (k, v) = item?;
                let key = k.value().to_owned();
                if !key.starts_with("step/") {
                    continue;
                }
                out.push(CacheEntry {
                    layers: record_layers(v.value()).unwrap_or_default(),
                    last_used: used.get(&key).copied().unwrap_or(0),
                    key,
                });
            }
            Ok(out)
        })?;
        out.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.key.cmp(&b.key)));
        Ok(out)
    }

    /// Blob digests (hex) of every image: manifest, config and layers, with how many images
    /// use each; and the chain IDs (hex) of the layer prefixes of the images `in_use`.
    #[allow(clippy::type_complexity)]
    fn image_roots(
        &self,
        in_use: Option<&[Digest]>,
    ) -> Result<(
        Vec<(ImageUsage, Vec<String>)>,
        HashMap<String, u32>,
        HashSet<String>,
    )> {
        let mut images = Vec::new();
        let mut refs: HashMap<String, u32> = HashMap::new();
        let mut snaps = HashSet::new();
        for img in self.images()? {
            let Some(rec) = self.image_by_manifest(&img.manifest_digest)? else {
                continue;
            };
            let mut blobs = vec![rec.manifest_digest.hex(), rec.config_digest.hex()];
            let mut ids = Vec::new();
            for l in &rec.layers {
                blobs.push(l.digest.hex());
                ids.push(l.diff_id.clone());
                if in_use.is_none_or(|u| u.contains(&rec.manifest_digest))
                    && let Some(c) = chain_id(&ids)
                {
                    snaps.insert(c.hex());
                }
            }
            blobs.sort();
            blobs.dedup();
            for b in &blobs {
                *refs.entry(b.clone()).or_default() += 1;
            }
            images.push((
                ImageUsage {
                    names: img.names.clone(),
                    id: img.id.clone(),
                    manifest_digest: img.manifest_digest.clone(),
                    created: img.created.clone(),
                    size: 0,
                    shared: 0,
                },
                blobs,
            ));
        }
        Ok((images, refs, snaps))
    }

    /// Disk bytes of `snapshots/`. A committed snapshot never changes (it is only ever a
    /// read-only lower directory, then removed whole), so each one's size is walked once and
    /// remembered (`kv` table `snapshot-du`: name → inode, ctime and bytes of its directory,
    /// so a snapshot removed and made again is walked again); entries of removed snapshots
    /// are dropped.
    fn snapshots_du(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        const TABLE: &str = "snapshot-du";
        let dir = self.root().join("snapshots");
        let Ok(md) = fs_err::symlink_metadata(&dir) else {
            return 0;
        };
        let known: HashMap<String, Vec<u8>> = self
            .kv_list(TABLE)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut total = md.blocks() * 512;
        let mut seen = HashSet::new();
        let mut fresh = Vec::new();
        for e in fs_err::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if !m.is_dir() {
                total += m.blocks() * 512;
                continue;
            }
            let tag = format!("{} {}.{}", m.ino(), m.ctime(), m.ctime_nsec());
            let cached = known.get(&name).and_then(|v| {
                let v = std::str::from_utf8(v).ok()?;
                let (t, bytes) = v.rsplit_once(' ')?;
                (t == tag).then(|| bytes.parse::<u64>().ok()).flatten()
            });
            let bytes = cached.unwrap_or_else(|| {
                let b = du(&e.path());
                fresh.push((name.clone(), format!("{tag} {b}").into_bytes()));
                b
            });
            total += bytes;
            seen.insert(name);
        }
        let gone: Vec<String> = known.into_keys().filter(|k| !seen.contains(k)).collect();
        if let Err(e) = self.kv_update(TABLE, &fresh, &gone) {
            tracing::debug!("snapshot sizes not remembered: {e}");
        }
        total
    }

    /// What the store takes, by kind.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let root = self.root();
        let mut blob_sizes: HashMap<String, u64> = HashMap::new();
        for e in fs_err::read_dir(root.join("blobs/sha256"))?.flatten() {
            blob_sizes.insert(
                e.file_name().to_string_lossy().into_owned(),
                blob_disk(&e.path()),
            );
        }
        let (images, refs, _) = self.image_roots(Some(&[]))?;
        let mut usage = DiskUsage::default();
        for (mut img, blobs) in images {
            for b in &blobs {
                let size = blob_sizes.get(b).copied().unwrap_or(0);
                img.size += size;
                if refs.get(b).copied().unwrap_or(0) > 1 {
                    img.shared += size;
                }
            }
            usage.images.push(img);
        }
        for (b, size) in &blob_sizes {
            if refs.contains_key(b) {
                usage.images_bytes += size;
            } else {
                usage.cache_blob_bytes += size;
            }
        }
        usage.cache = self.cache_entries()?;
        usage.snapshot_bytes = self.snapshots_du();
        usage.cache_mount_bytes = du(&root.join("cache-mounts"));
        usage.debug_bytes = du(&root.join("debug"));
        usage.container_bytes = du(&root.join("containers"));
        if let Ok(entries) = fs_err::read_dir(root.join("volumes")) {
            for e in entries.flatten() {
                usage
                    .volumes
                    .insert(e.file_name().to_string_lossy().into_owned(), du(&e.path()));
            }
        }
        usage.internal_bytes = [
            "index.redb",
            "context-cache",
            "tmp",
            "logs",
            "executor",
            "http",
        ]
        .iter()
        .map(|p| du(&root.join(p)))
        .sum();
        Ok(usage)
    }

    /// Removes build cache as `opts` says, then every blob and snapshot nothing keeps
    /// (images, remaining records, leases). Hold the [`GcLock`] exclusive while calling it.
    pub fn prune_build_cache(&self, opts: &PruneOptions) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        let entries = self.cache_entries()?;
        let (images, _, _) = self.image_roots(Some(&[]))?;
        let image_blobs: HashSet<String> =
            images.iter().flat_map(|(_, b)| b.iter().cloned()).collect();
        let cutoff = opts.until.map(|d| now_ms() - d.as_millis() as i64);
        let missing = |e: &CacheEntry| e.layers.iter().any(|l| !self.has_blob(&l.digest));
        let mut doomed: Vec<&CacheEntry> = entries
            .iter()
            .filter(|e| {
                missing(e) || {
                    let old_enough = cutoff.is_none_or(|c| e.last_used < c);
                    let unused = opts.all
                        || e.layers
                            .last()
                            .is_none_or(|top| !image_blobs.contains(&top.digest.hex()));
                    old_enough && unused
                }
            })
            .collect();
        if let Some(budget) = opts.keep_storage {
            // Least recently used first, until what stays fits the budget.
            let usage = self.disk_usage()?;
            let mut total = usage.build_cache_bytes();
            // What each chain prefix frees once no remaining record uses it: its unpacked
            // snapshot, and its top layer's blob when no image holds that blob.
            let (_, _, in_use_snaps) = self.image_roots(Some(&opts.in_use))?;
            let mut users: HashMap<String, u32> = HashMap::new();
            let mut sizes: HashMap<String, u64> = HashMap::new();
            for e in &entries {
                for (c, l) in prefixes(&e.layers) {
                    *users.entry(c.clone()).or_default() += 1;
                    sizes.entry(c.clone()).or_insert_with(|| {
                        let snap = if in_use_snaps.contains(&c) {
                            0
                        } else {
                            let snaps = self.root().join("snapshots");
                            du(&snaps.join(&c))
                                + du(&snaps.join(format!("{c}.stack")))
                                + du(&snaps.join(format!("{c}.index")))
                        };
                        let blob = if image_blobs.contains(&l.digest.hex()) {
                            0
                        } else {
                            blob_disk(&self.blob_path(&l.digest))
                        };
                        snap + blob
                    });
                }
            }
            doomed.sort_by_key(|e| e.last_used);
            let mut chosen = Vec::new();
            for e in doomed {
                if total <= budget && !missing(e) {
                    break;
                }
                for (c, _) in prefixes(&e.layers) {
                    let u = users.entry(c.clone()).or_default();
                    *u = u.saturating_sub(1);
                    if *u == 0 {
                        total = total.saturating_sub(sizes.get(&c).copied().unwrap_or(0));
                    }
                }
                chosen.push(e);
            }
            doomed = chosen;
        }
        let keys: Vec<String> = doomed.iter().map(|e| e.key.clone()).collect();
        if !keys.is_empty() {
            self.index().write(|txn| {
                let mut t = txn.open_table(CACHE)?;
                for k in &keys {
                    t.remove(k.as_str())?;
                }
                drop(t);
                let mut kv = txn.open_table(crate::index::KV)?;
                for k in &keys {
                    kv.remove(format!("{USED}\0{k}").as_str())?;
                }
                Ok(())
            })?;
        }
        report.records = keys;
        if opts.cache_mounts {
            let dir = self.root().join("cache-mounts");
            if let Ok(entries) = fs_err::read_dir(&dir) {
                for e in entries.flatten() {
                    // A mount in use holds its lock (locked/private sharing); shared ones are
                    // only removed while no build runs (the caller holds the GC lock).
                    let bytes = du(&e.path());
                    let doomed = self
                        .tmp_dir()
                        .join(format!("prune-mount-{}", e.file_name().to_string_lossy()));
                    if fs_err::rename(e.path(), &doomed).is_ok() {
                        let _ = fs_err::remove_dir_all(&doomed);
                        report.cache_mounts += 1;
                        report.reclaimed += bytes;
                    }
                }
            }
        }
        let stats = self.collect(&opts.in_use)?;
        report.blobs = stats.blobs_removed;
        report.snapshots = stats.snapshots_removed;
        report.reclaimed += stats.bytes_freed;
        Ok(report)
    }

    /// What GC keeps (hex digests): every blob of an image, a build cache record or a lease,
    /// and the snapshots of records, leases and images (all images when `in_use` is `None`,
    /// else only those).
    pub(crate) fn gc_roots(
        &self,
        in_use: Option<&[Digest]>,
    ) -> Result<(HashSet<String>, HashSet<String>)> {
        let (images, _, mut keep_snaps) = self.image_roots(in_use)?;
        let mut keep: HashSet<String> = images.into_iter().flat_map(|(_, b)| b).collect();
        for e in self.cache_entries()? {
            for (c, l) in prefixes(&e.layers) {
                keep.insert(l.digest.hex());
                keep_snaps.insert(c);
            }
        }
        for (_, v) in self.kv_list(LEASES)? {
            let ds: Vec<Digest> =
                serde_json::from_slice(&v).map_err(|e| Error::json("lease", e))?;
            for d in ds {
                keep.insert(d.hex());
                keep_snaps.insert(d.hex());
            }
        }
        // A stacked snapshot needs the layers it goes over.
        let stacked: Vec<String> = keep_snaps
            .iter()
            .flat_map(|c| self.stack_below(c))
            .collect();
        keep_snaps.extend(stacked);
        Ok((keep, keep_snaps))
    }

    /// Removes every blob and snapshot that no image, cache record or lease keeps, now: hold
    /// the [`GcLock`] exclusive (no other kiln process is between writing a blob and
    /// recording it).
    pub fn collect(&self, in_use: &[Digest]) -> Result<crate::GcStats> {
        let (keep, keep_snaps) = self.gc_roots(Some(in_use))?;
        self.collect_except(&keep, &keep_snaps, Duration::ZERO)
    }
}

/// Sizes as docker prints them (`1.2GB`, `35.4MB`, `512B`: SI units, three significant
/// digits).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else if v >= 100.0 {
        format!("{v:.0}{}", UNITS[unit])
    } else if v >= 10.0 {
        format!("{v:.1}{}", UNITS[unit])
    } else {
        format!("{v:.2}{}", UNITS[unit])
    }
}

/// Parses `10GB`, `512MiB`, `1.5g`, `1000` (bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" | "ki" => 1024.0,
        "mib" | "mi" => 1024.0 * 1024.0,
        "gib" | "gi" => 1024.0 * 1024.0 * 1024.0,
        "tib" | "ti" => 1024.0f64.powi(4),
        _ => return None,
    };
    (n >= 0.0).then_some((n * mult) as u64)
}

/// Parses Go's durations as docker takes them (`until=`, `--since`, `--health-interval`):
/// `24h`, `90m`, `1h30m`, `1.5s`, `500ms`, `10us`, and `7d` for prune filters; a bare number is
/// seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * unit;
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse_as_docker_writes_them() {
        assert_eq!(parse_size("10GB"), Some(10_000_000_000));
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("1.5g"), Some(1_500_000_000));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("5y"), None);
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(35_400_000), "35.4MB");
        assert_eq!(human_size(1_234_000_000), "1.23GB");
    }
}
