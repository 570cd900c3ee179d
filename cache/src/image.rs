//! Images: OCI manifests and configs in the blob store, tags, resolution, rmi, history and
//! docker-compatible inspect output.

use std::collections::BTreeMap;

use kiln_oci::media_type::{OCI_CONFIG, OCI_MANIFEST};
use kiln_oci::{Descriptor, Digest, ImageManifest, Platform};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::parse_digest;
use crate::error::{Error, Result};
use crate::index::{IMAGES, TAGS};
use crate::layer::LayerInfo;
use crate::store::Store;

/// An image in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    /// Digest of the manifest bytes as stored.
    pub manifest_digest: Digest,
    /// Media type of the manifest (OCI or docker v2 schema 2).
    pub manifest_media_type: String,
    /// Digest of the config blob: the image ID.
    pub config_digest: Digest,
    /// The parsed manifest.
    pub manifest: ImageManifest,
    /// The config bytes as stored.
    pub config_bytes: Vec<u8>,
    /// Layers bottom first, with diffIDs from the config.
    pub layers: Vec<LayerInfo>,
}

impl ImageRecord {
    /// The config as JSON.
    pub fn config_json(&self) -> Result<Value> {
        serde_json::from_slice(&self.config_bytes).map_err(|e| Error::json("image config", e))
    }

    /// The layers' diffIDs, bottom first.
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }

    /// The docker-style short ID (12 hex digits of the config digest).
    pub fn short_id(&self) -> String {
        self.config_digest.short()
    }
}

/// One line of `kiln images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageSummary {
    /// Names (tags) pointing at the image, sorted; empty for a dangling image.
    pub names: Vec<String>,
    /// The image ID (config digest).
    pub id: Digest,
    /// The manifest digest.
    pub manifest_digest: Digest,
    /// The config's `created`, if any.
    pub created: Option<String>,
    /// Sum of the layer blob sizes plus the config.
    pub size: u64,
}

/// What `remove_image` did, in order (docker prints these as `Untagged:` / `Deleted:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveEvent {
    /// A name was removed.
    Untagged(String),
    /// The image (ID = config digest) was removed from the index.
    Deleted(Digest),
}

/// One line of `kiln history`, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// The image ID for the top entry, `None` (shown as `<missing>`) for the rest.
    pub id: Option<Digest>,
    /// When the step ran.
    pub created: Option<String>,
    /// The instruction.
    pub created_by: String,
    /// The layer blob size (0 for empty layers).
    pub size: u64,
    /// The comment.
    pub comment: String,
    /// Whether the step made no layer.
    pub empty_layer: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ImageEntry {
    media_type: String,
    config_digest: Digest,
    layers: Vec<LayerInfo>,
}

/// [`kiln_oci::canonical_json`] with the store's error.
pub(crate) fn canonical_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    kiln_oci::canonical_json(v).map_err(|e| Error::json("canonical json", e))
}

/// Normalizes a docker-style reference: `app` → `docker.io/library/app:latest`,
/// `user/app:1` → `docker.io/user/app:1`, `localhost:5000/app` → `localhost:5000/app:latest`.
/// Text that is no reference (`../../evil:1`, `UPPER/Case:::x`) is refused with docker's
/// "invalid reference format".
pub fn normalize_name(name: &str) -> Result<String> {
    Ok(name.parse::<kiln_oci::Reference>()?.to_string())
}

/// The repository part of a normalized name (`docker.io/library/app:1` → `docker.io/library/app`).
pub fn repository_of(name: &str) -> &str {
    let name = name.split('@').next().unwrap_or(name);
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    }
}

fn diff_ids_of(config: &Value) -> Result<Vec<Digest>> {
    let ids = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::invalid("image config", "missing rootfs.diff_ids"))?;
    ids.iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| Error::invalid("image config", "diff_id is not a string"))
                .and_then(parse_digest)
        })
        .collect()
}

impl Store {
    /// Writes an image's config and manifest blobs, without its layers and without making
    /// it an image of the store (no entry, no tag): what a push needs when the layers stay in
    /// a registry. Unreferenced, the two blobs go with the next GC. The config's
    /// rootfs.diff_ids must match `layers`.
    pub fn stage_image(&self, config_json: &[u8], layers: &[LayerInfo]) -> Result<ImageRecord> {
        check_config(config_json, &kiln_oci::sha256(config_json))?;
        let config: Value =
            serde_json::from_slice(config_json).map_err(|e| Error::json("image config", e))?;
        let ids = diff_ids_of(&config)?;
        let want: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
        if ids != want {
            return Err(Error::invalid(
                "image config",
                "rootfs.diff_ids do not match the layers",
            ));
        }
        let config_digest = self.write_blob(config_json)?;
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.to_owned()),
            artifact_type: None,
            config: Descriptor::new(OCI_CONFIG, config_json.len() as u64, config_digest.clone()),
            layers: layers
                .iter()
                .map(|l| Descriptor::new(l.media_type.as_str(), l.size, l.digest.clone()))
                .collect(),
            subject: None,
            annotations: BTreeMap::new(),
        };
        let bytes = canonical_json(&manifest)?;
        let manifest_digest = self.write_blob(&bytes)?;
        Ok(ImageRecord {
            manifest_digest,
            manifest_media_type: OCI_MANIFEST.into(),
            config_digest,
            manifest,
            config_bytes: config_json.to_vec(),
            layers: layers.to_vec(),
        })
    }

    /// Stores an image built here: the config blob and a canonical OCI manifest over
    /// `layers` (whose blobs must be present). The config's rootfs.diff_ids must match.
    pub fn put_image(&self, config_json: &[u8], layers: &[LayerInfo]) -> Result<ImageRecord> {
        for l in layers {
            if !self.has_blob(&l.digest) {
                return Err(Error::BlobNotFound(l.digest.clone()));
            }
        }
        let rec = self.stage_image(config_json, layers)?;
        for l in layers {
            self.record_layer(l)?;
        }
        self.put_entry(
            &rec.manifest_digest,
            &ImageEntry {
                media_type: OCI_MANIFEST.into(),
                config_digest: rec.config_digest.clone(),
                layers: layers.to_vec(),
            },
        )?;
        Ok(rec)
    }

    /// Stores a pulled or loaded manifest exactly as it came (OCI or docker v2 schema 2);
    /// config and layer blobs must already be present. Records diffID ↔ blob for each layer.
    pub fn put_pulled_image(&self, manifest_bytes: &[u8], media_type: &str) -> Result<ImageRecord> {
        // Every layer first: a refused manifest writes nothing.
        if let Ok(m) = serde_json::from_slice::<ImageManifest>(manifest_bytes) {
            for desc in &m.layers {
                if !self.has_blob(&desc.digest) {
                    return Err(Error::BlobNotFound(desc.digest.clone()));
                }
            }
        }
        let rec = self.stage_pulled_image(manifest_bytes, media_type)?;
        for l in &rec.layers {
            self.record_layer(l)?;
        }
        self.put_entry(
            &rec.manifest_digest,
            &ImageEntry {
                media_type: media_type.to_owned(),
                config_digest: rec.config_digest.clone(),
                layers: rec.layers.clone(),
            },
        )?;
        Ok(rec)
    }

    /// A pulled manifest's record, its config blob present but its layers perhaps not, and
    /// not (yet) an image of the store: a base image whose layers a build fetches only if a
    /// step needs them. Writes the manifest blob; [`put_pulled_image`](Self::put_pulled_image)
    /// makes it an image once its layers are in.
    pub fn stage_pulled_image(
        &self,
        manifest_bytes: &[u8],
        media_type: &str,
    ) -> Result<ImageRecord> {
        if kiln_oci::media_type::is_index(media_type) {
            return Err(Error::invalid(
                "manifest",
                "an index, not an image manifest: pick a platform first",
            ));
        }
        let manifest: ImageManifest =
            serde_json::from_slice(manifest_bytes).map_err(|e| Error::json("image manifest", e))?;
        let config_digest = manifest.config.digest.clone();
        let config_bytes = self.read_blob(&config_digest)?;
        check_config(&config_bytes, &config_digest)?;
        let config: Value =
            serde_json::from_slice(&config_bytes).map_err(|e| Error::json("image config", e))?;
        let ids = diff_ids_of(&config)?;
        if ids.len() != manifest.layers.len() {
            return Err(Error::invalid(
                "manifest",
                format!(
                    "{} layers but {} diff_ids in the config",
                    manifest.layers.len(),
                    ids.len()
                ),
            ));
        }
        let mut layers = Vec::new();
        for (desc, diff_id) in manifest.layers.iter().zip(ids) {
            layers.push(LayerInfo {
                diff_id,
                digest: desc.digest.clone(),
                size: desc.size,
                media_type: desc.media_type.clone(),
            });
        }
        let manifest_digest = self.write_blob(manifest_bytes)?;
        Ok(ImageRecord {
            manifest_digest,
            manifest_media_type: media_type.to_owned(),
            config_digest,
            manifest,
            config_bytes,
            layers,
        })
    }

    fn put_entry(&self, manifest_digest: &Digest, entry: &ImageEntry) -> Result<()> {
        let json = serde_json::to_vec(entry).map_err(|e| Error::json("image entry", e))?;
        self.index().write(|txn| {
            txn.open_table(IMAGES)?
                .insert(manifest_digest.to_string().as_str(), json.as_slice())?;
            Ok(())
        })
    }

    fn entries(&self) -> Result<Vec<(Digest, ImageEntry)>> {
        let raw: Vec<(String, Vec<u8>)> = self.index().read(|txn| {
            let t = txn.open_table(IMAGES)?;
            let mut out = Vec::new();
            for item in t.iter()? {
                let (k, v) = item?;
                out.push((k.value().to_owned(), v.value().to_vec()));
            }
            Ok(out)
        })?;
        raw.into_iter()
            .map(|(k, v)| {
                let e: ImageEntry =
                    serde_json::from_slice(&v).map_err(|e| Error::json("image entry", e))?;
                Ok((parse_digest(&k)?, e))
            })
            .collect()
    }

    fn tags(&self) -> Result<Vec<(String, Digest)>> {
        let raw: Vec<(String, String)> = self.index().read(|txn| {
            let t = txn.open_table(TAGS)?;
            let mut out = Vec::new();
            for item in t.iter()? {
                let (k, v) = item?;
                out.push((k.value().to_owned(), v.value().to_owned()));
            }
            Ok(out)
        })?;
        raw.into_iter()
            .map(|(k, v)| Ok((k, parse_digest(&v)?)))
            .collect()
    }

    /// Loads the record of a stored manifest digest.
    pub fn image_by_manifest(&self, manifest_digest: &Digest) -> Result<Option<ImageRecord>> {
        let raw = self.index().read(|txn| {
            let t = txn.open_table(IMAGES)?;
            Ok(t.get(manifest_digest.to_string().as_str())?
                .map(|v| v.value().to_vec()))
        })?;
        let Some(raw) = raw else { return Ok(None) };
        let entry: ImageEntry =
            serde_json::from_slice(&raw).map_err(|e| Error::json("image entry", e))?;
        let manifest_bytes = self.read_blob(manifest_digest)?;
        let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| Error::json("image manifest", e))?;
        let config_bytes = self.read_blob(&entry.config_digest)?;
        Ok(Some(ImageRecord {
            manifest_digest: manifest_digest.clone(),
            manifest_media_type: entry.media_type,
            config_digest: entry.config_digest,
            manifest,
            config_bytes,
            layers: entry.layers,
        }))
    }

    /// The manifest bytes of an image exactly as stored.
    pub fn manifest_bytes(&self, rec: &ImageRecord) -> Result<Vec<u8>> {
        self.read_blob(&rec.manifest_digest)
    }

    /// Points `name` (already normalized) at a stored manifest.
    pub fn tag(&self, name: &str, manifest: &Digest) -> Result<()> {
        // Only normalized names enter the store: whatever path leads here.
        if normalize_name(name)? != name {
            return Err(Error::invalid(
                "image name",
                format!("{name:?} is not a normalized reference"),
            ));
        }
        let exists = self.index().read(|txn| {
            Ok(txn
                .open_table(IMAGES)?
                .get(manifest.to_string().as_str())?
                .is_some())
        })?;
        if !exists {
            return Err(Error::ImageNotFound(manifest.to_string()));
        }
        self.index().write(|txn| {
            txn.open_table(TAGS)?
                .insert(name, manifest.to_string().as_str())?;
            Ok(())
        })?;
        tracing::debug!(name, %manifest, "tagged");
        Ok(())
    }

    /// Removes a name; returns whether it existed. The image stays (see `remove_image`).
    pub fn untag(&self, name: &str) -> Result<bool> {
        self.index()
            .write(|txn| Ok(txn.open_table(TAGS)?.remove(name)?.is_some()))
    }

    /// The names pointing at a manifest, sorted.
    pub fn names_for(&self, manifest: &Digest) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .tags()?
            .into_iter()
            .filter(|(_, d)| d == manifest)
            .map(|(n, _)| n)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Resolves a name (normalized), a full or short image ID (config digest, with or
    /// without `sha256:`), or a manifest digest.
    pub fn resolve(&self, name_or_id: &str) -> Result<Option<ImageRecord>> {
        let tagged = self.index().read(|txn| {
            Ok(txn
                .open_table(TAGS)?
                .get(name_or_id)?
                .map(|v| v.value().to_owned()))
        })?;
        if let Some(m) = tagged {
            return self.image_by_manifest(&parse_digest(&m)?);
        }
        let hex = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        if hex.is_empty()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Ok(None);
        }
        let entries = self.entries()?;
        if hex.len() == 64 {
            for (m, _) in &entries {
                if m.hex() == hex {
                    return self.image_by_manifest(m);
                }
            }
        }
        let mut found: Vec<&Digest> = entries
            .iter()
            .filter(|(_, e)| e.config_digest.hex().starts_with(hex))
            .map(|(m, _)| m)
            .collect();
        // Several manifests can share one config (same image, different compression):
        // prefer a tagged one.
        found.sort_by_key(|d| d.to_string());
        let configs: std::collections::BTreeSet<&Digest> = entries
            .iter()
            .filter(|(_, e)| e.config_digest.hex().starts_with(hex))
            .map(|(_, e)| &e.config_digest)
            .collect();
        if configs.len() > 1 {
            return Err(Error::AmbiguousId(name_or_id.to_owned()));
        }
        let tags = self.tags()?;
        let best = found
            .iter()
            .find(|m| tags.iter().any(|(_, d)| d == **m))
            .or(found.first());
        match best {
            Some(m) => self.image_by_manifest(m),
            None => Ok(None),
        }
    }

    /// All images, named ones sorted by name first, then dangling ones.
    pub fn images(&self) -> Result<Vec<ImageSummary>> {
        let tags = self.tags()?;
        let mut out = Vec::new();
        for (m, e) in self.entries()? {
            let mut names: Vec<String> = tags
                .iter()
                .filter(|(_, d)| *d == m)
                .map(|(n, _)| n.clone())
                .collect();
            names.sort();
            let config: Option<Value> = self
                .read_blob(&e.config_digest)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let created = config
                .as_ref()
                .and_then(|c| c.get("created"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let size = e.layers.iter().map(|l| l.size).sum::<u64>();
            out.push(ImageSummary {
                names,
                id: e.config_digest,
                manifest_digest: m,
                created,
                size,
            });
        }
        out.sort_by(|a, b| {
            (
                a.names.is_empty(),
                a.names.first(),
                &a.manifest_digest.to_string(),
            )
                .cmp(&(
                    b.names.is_empty(),
                    b.names.first(),
                    &b.manifest_digest.to_string(),
                ))
        });
        Ok(out)
    }

    /// docker rmi: a name removes that name (and the image with its last name); an ID or
    /// digest removes the image, refusing if several names point at it unless `force`.
    pub fn remove_image(&self, reference: &str, force: bool) -> Result<Vec<RemoveEvent>> {
        let rec = self
            .resolve(reference)?
            .ok_or_else(|| Error::ImageNotFound(reference.to_owned()))?;
        let names = self.names_for(&rec.manifest_digest)?;
        let mut events = Vec::new();
        let by_name = names.iter().any(|n| n == reference);
        let to_untag: Vec<String> = if by_name {
            vec![reference.to_owned()]
        } else {
            if names.len() > 1 && !force {
                return Err(Error::ImageInUse {
                    reference: reference.to_owned(),
                    names: names.join(", "),
                });
            }
            names.clone()
        };
        let remaining = names.len() - to_untag.len();
        let m = rec.manifest_digest.clone();
        self.index().write(|txn| {
            let mut t = txn.open_table(TAGS)?;
            for n in &to_untag {
                t.remove(n.as_str())?;
            }
            drop(t);
            if remaining == 0 {
                txn.open_table(IMAGES)?.remove(m.to_string().as_str())?;
            }
            Ok(())
        })?;
        events.extend(to_untag.into_iter().map(RemoveEvent::Untagged));
        if remaining == 0 {
            events.push(RemoveEvent::Deleted(rec.config_digest.clone()));
        }
        Ok(events)
    }
}

/// `kiln history`: the config's history, newest first, with layer sizes.
pub fn history(rec: &ImageRecord) -> Result<Vec<HistoryEntry>> {
    let config = rec.config_json()?;
    let hist = config
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut layers = rec.layers.iter();
    let mut out = Vec::new();
    for h in &hist {
        let empty = h
            .get("empty_layer")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let size = if empty {
            0
        } else {
            layers.next().map(|l| l.size).unwrap_or(0)
        };
        let s = |k: &str| h.get(k).and_then(Value::as_str).map(str::to_owned);
        out.push(HistoryEntry {
            id: None,
            created: s("created"),
            created_by: s("created_by").unwrap_or_default(),
            size,
            comment: s("comment").unwrap_or_default(),
            empty_layer: empty,
        });
    }
    // Layers without history lines still show up.
    for l in layers {
        out.push(HistoryEntry {
            id: None,
            created: None,
            created_by: String::new(),
            size: l.size,
            comment: String::new(),
            empty_layer: false,
        });
    }
    out.reverse();
    if let Some(first) = out.first_mut() {
        first.id = Some(rec.config_digest.clone());
    }
    Ok(out)
}

/// docker-compatible `inspect` output for one image known by `names`.
pub fn inspect_json(store: &Store, rec: &ImageRecord, names: &[String]) -> Value {
    let _ = store;
    let config = rec.config_json().unwrap_or(Value::Null);
    let c = config.get("config").cloned().unwrap_or(Value::Null);
    let get = |k: &str| c.get(k).cloned().unwrap_or(Value::Null);
    let get_str = |k: &str| c.get(k).cloned().unwrap_or(Value::String(String::new()));
    let mut repo_digests: Vec<String> = names
        .iter()
        .map(|n| format!("{}@{}", repository_of(n), rec.manifest_digest))
        .collect();
    repo_digests.sort();
    repo_digests.dedup();
    let top = |k: &str| {
        config
            .get(k)
            .cloned()
            .unwrap_or(Value::String(String::new()))
    };
    serde_json::json!({
        "Id": rec.config_digest.to_string(),
        "RepoTags": names,
        "RepoDigests": repo_digests,
        "Parent": "",
        "Comment": top("comment"),
        "Created": top("created"),
        "DockerVersion": "",
        "Author": top("author"),
        "Config": {
            "Hostname": "",
            "Domainname": "",
            "User": get_str("User"),
            "AttachStdin": false,
            "AttachStdout": false,
            "AttachStderr": false,
            "ExposedPorts": get("ExposedPorts"),
            "Tty": false,
            "OpenStdin": false,
            "StdinOnce": false,
            "Env": get("Env"),
            "Cmd": get("Cmd"),
            "Healthcheck": get("Healthcheck"),
            "Image": "",
            "Volumes": get("Volumes"),
            "WorkingDir": get_str("WorkingDir"),
            "Entrypoint": get("Entrypoint"),
            "OnBuild": get("OnBuild"),
            "Labels": get("Labels"),
            "StopSignal": get("StopSignal"),
            "Shell": get("Shell"),
        },
        "Architecture": top("architecture"),
        "Variant": config.get("variant").cloned().unwrap_or(Value::Null),
        "Os": top("os"),
        "Size": rec.layers.iter().map(|l| l.size).sum::<u64>(),
        "RootFS": {
            "Type": "layers",
            "Layers": rec.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
        },
        "ManifestDigest": rec.manifest_digest.to_string(),
        "ManifestMediaType": rec.manifest_media_type,
    })
}

/// Writes a minimal image config for `layers` (used by import and tests).
pub fn minimal_config(
    layers: &[LayerInfo],
    created: &str,
    created_by: &str,
    config: Value,
) -> Result<Vec<u8>> {
    let history: Vec<Value> = layers
        .iter()
        .map(|_| serde_json::json!({"created": created, "created_by": created_by}))
        .collect();
    let v = serde_json::json!({
        "architecture": Platform::host().architecture,
        "os": "linux",
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()},
        "history": history,
    });
    canonical_json(&v)
}

/// Refuses a config that kiln could not run or build on later (a field of the wrong type),
/// naming the blob and the field, before it becomes an image of the store.
fn check_config(bytes: &[u8], digest: &Digest) -> Result<()> {
    match kiln_oci::ImageConfig::parse(bytes) {
        Ok(_) => Ok(()),
        Err(problem) => Err(Error::BadConfig {
            digest: digest.clone(),
            problem,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_like_docker() {
        let n = |s: &str| normalize_name(s).unwrap();
        assert_eq!(n("app"), "docker.io/library/app:latest");
        assert_eq!(n("app:1.2"), "docker.io/library/app:1.2");
        assert_eq!(n("user/app"), "docker.io/user/app:latest");
        assert_eq!(n("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(n("docker.io/app:2"), "docker.io/library/app:2");
        let pinned = format!("quay.io/a/b@sha256:{}", "0".repeat(64));
        assert_eq!(n(&pinned), pinned);
        for bad in ["../../evil:1", "UPPER/Case:::x", "", "a//b", "app:-x"] {
            let e = normalize_name(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid reference format"), "{bad:?}: {e}");
        }
        assert_eq!(repository_of("localhost:5000/app:1"), "localhost:5000/app");
        assert_eq!(repository_of("localhost:5000/app"), "localhost:5000/app");
    }

    #[test]
    fn store_is_send_sync() {
        fn f<T: Send + Sync + Clone>() {}
        f::<Store>();
    }
}
