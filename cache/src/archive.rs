//! Image archives: `kiln save` (docker-archive or OCI layout tar), `kiln load` (either, plain
//! or compressed) and `kiln import` (a rootfs tar as a one-layer image).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use kiln_oci::media_type::{OCI_INDEX, OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST};
use kiln_oci::{Digest, Platform};
use serde_json::Value;

use crate::apply::decompress;
use crate::codec::Encoder;
use crate::digest::{HashReader, parse_digest};
use crate::error::{Error, Result};
use crate::image::{ImageRecord, canonical_json, minimal_config, normalize_name, repository_of};
use crate::layer::{Encoding, LayerInfo};
use crate::store::Store;

/// Archive flavour for `save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArchiveFormat {
    /// OCI image layout plus docker's `manifest.json` and `repositories` (what
    /// `docker save` writes since docker 25; `docker load` and `skopeo` read it).
    #[default]
    Docker,
    /// OCI image layout only (`oci-layout`, `index.json`, `blobs/`).
    Oci,
}

/// One image brought in by `load`.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    /// The names it was tagged with (normalized); empty if the archive named none.
    pub names: Vec<String>,
    /// The stored image.
    pub record: ImageRecord,
}

/// docker's short form of a normalized name (`docker.io/library/app:1` → `app:1`).
pub fn familiar_name(name: &str) -> String {
    if let Some(r) = name.strip_prefix("docker.io/library/") {
        r.to_owned()
    } else if let Some(r) = name.strip_prefix("docker.io/") {
        r.to_owned()
    } else {
        name.to_owned()
    }
}

fn tag_of(name: &str) -> &str {
    let repo = repository_of(name);
    name.get(repo.len() + 1..).unwrap_or("latest")
}

struct TarOut<W: Write> {
    b: tar::Builder<W>,
}

impl<W: Write> TarOut<W> {
    fn header(path: &str, size: u64, dir: bool) -> Result<tar::Header> {
        let mut h = tar::Header::new_ustar();
        h.set_path(path)?;
        h.set_size(size);
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_cksum();
        Ok(h)
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        let h = Self::header(path, 0, true)?;
        self.b.append(&h, io::empty())?;
        Ok(())
    }

    fn file(&mut self, path: &str, data: &[u8]) -> Result<()> {
        let h = Self::header(path, data.len() as u64, false)?;
        self.b.append(&h, data)?;
        Ok(())
    }

    fn reader(&mut self, path: &str, size: u64, r: impl Read) -> Result<()> {
        let h = Self::header(path, size, false)?;
        self.b.append(&h, r)?;
        Ok(())
    }
}

/// Writes `images` (name, record; an empty name saves the image untagged) as an archive.
/// The bytes depend only on the images and names, so save → load → save is identical.
pub fn save_archive(
    store: &Store,
    images: &[(String, ImageRecord)],
    format: ArchiveFormat,
    w: impl Write,
) -> Result<()> {
    let mut blobs: BTreeMap<String, (Digest, u64)> = BTreeMap::new();
    for (_, rec) in images {
        let mbytes = store.manifest_bytes(rec)?;
        blobs.insert(
            rec.manifest_digest.hex(),
            (rec.manifest_digest.clone(), mbytes.len() as u64),
        );
        blobs.insert(
            rec.config_digest.hex(),
            (rec.config_digest.clone(), rec.config_bytes.len() as u64),
        );
        for l in &rec.layers {
            blobs.insert(l.digest.hex(), (l.digest.clone(), l.size));
        }
    }
    let mut out = TarOut {
        b: tar::Builder::new(w),
    };
    out.dir("blobs/")?;
    out.dir("blobs/sha256/")?;
    for (hex, (d, _)) in &blobs {
        let f = store.open_blob(d)?;
        let size = f.metadata()?.len();
        out.reader(
            &format!("blobs/sha256/{hex}"),
            size,
            HashCheck::new(f, d.clone()),
        )?;
    }
    let mut manifests = Vec::new();
    for (name, rec) in images {
        let size = store.manifest_bytes(rec)?.len();
        let mut desc = serde_json::json!({
            "mediaType": rec.manifest_media_type,
            "digest": rec.manifest_digest.to_string(),
            "size": size,
        });
        if !name.is_empty() {
            desc["annotations"] = serde_json::json!({
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag_of(name),
            });
        }
        manifests.push(desc);
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    });
    out.file("index.json", &canonical_json(&index)?)?;
    if format == ArchiveFormat::Docker {
        // One manifest.json entry per image, with all its names.
        let mut order: Vec<&Digest> = Vec::new();
        let mut by_image: HashMap<&Digest, (Vec<String>, &ImageRecord)> = HashMap::new();
        for (name, rec) in images {
            let e = by_image.entry(&rec.manifest_digest).or_insert_with(|| {
                order.push(&rec.manifest_digest);
                (Vec::new(), rec)
            });
            if !name.is_empty() {
                e.0.push(familiar_name(name));
            }
        }
        let mut list = Vec::new();
        let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for m in order {
            let (names, rec) = &by_image[m];
            list.push(serde_json::json!({
                "Config": format!("blobs/sha256/{}", rec.config_digest.hex()),
                "RepoTags": if names.is_empty() { Value::Null } else { serde_json::json!(names) },
                "Layers": rec.layers.iter().map(|l| format!("blobs/sha256/{}", l.digest.hex())).collect::<Vec<_>>(),
            }));
            if let Some(top) = rec.layers.last() {
                for n in names {
                    let full = normalize_name(n)?;
                    repos
                        .entry(familiar_name(repository_of(&full)))
                        .or_default()
                        .insert(tag_of(&full).to_owned(), top.diff_id.hex());
                }
            }
        }
        out.file("manifest.json", &canonical_json(&list)?)?;
        out.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        out.file("repositories", &canonical_json(&repos)?)?;
    } else {
        out.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    }
    out.b.into_inner()?.flush()?;
    Ok(())
}

/// Re-verifies a blob while it is copied out.
struct HashCheck<R> {
    inner: HashReader<R>,
    expected: Digest,
    done: bool,
}

impl<R: Read> HashCheck<R> {
    fn new(r: R, expected: Digest) -> Self {
        HashCheck {
            inner: HashReader::new(r),
            expected,
            done: false,
        }
    }
}

impl<R: Read> Read for HashCheck<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.done {
            self.done = true;
            let h = std::mem::take(&mut self.inner.hasher);
            let got = crate::digest::from_hasher(h);
            if got != self.expected {
                return Err(io::Error::other(format!(
                    "blob {} is corrupt in the store (hashes to {got})",
                    self.expected
                )));
            }
        }
        Ok(n)
    }
}

fn clean_name(p: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str()?.to_owned()),
            Component::CurDir | Component::RootDir => {}
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

/// Loads a docker-archive or OCI archive (plain, gzip or zstd), tags the names it carries
/// and returns the images. Blobs are verified against their digests as they are stored.
///
/// A refused archive leaves the store as it was: the blobs it brought that no image of the
/// store took are removed again.
pub fn load_archive(store: &Store, reader: impl Read) -> Result<Vec<LoadedImage>> {
    let mut added = Vec::new();
    let loaded = load_archive_into(store, reader, &mut added);
    if loaded.is_err() {
        for d in &added {
            let _ = fs_err::remove_file(store.blob_path(d));
        }
    }
    loaded
}

/// A layer's error, naming the layer.
fn in_layer(layer: &str, e: Error) -> Error {
    Error::BadLayer {
        layer: layer.to_owned(),
        problem: Box::new(e),
    }
}

/// Takes the blobs of an image that is now in the store off the list of those to remove
/// should a later image of the archive be refused.
fn kept(added: &mut Vec<Digest>, rec: &ImageRecord) {
    added.retain(|d| {
        *d != rec.manifest_digest
            && *d != rec.config_digest
            && rec.layers.iter().all(|l| l.digest != *d)
    });
}

fn load_archive_into(
    store: &Store,
    reader: impl Read,
    added: &mut Vec<Digest>,
) -> Result<Vec<LoadedImage>> {
    let scratch = tempfile::Builder::new()
        .prefix("load-")
        .tempdir_in(store.tmp_dir())?;
    let mut files: HashMap<String, PathBuf> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    let mut ar = tar::Archive::new(decompress(reader)?);
    for (i, entry) in ar.entries()?.enumerate() {
        let mut entry = entry?;
        let raw = entry.path()?.into_owned();
        let Some(name) = clean_name(&raw) else {
            return Err(Error::UnsafeEntry {
                path: raw,
                reason: "archive path leaves the archive",
            });
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                if let Some(t) = entry.link_name()? {
                    let base = Path::new(&name).parent().unwrap_or(Path::new(""));
                    let target = if entry.header().entry_type() == tar::EntryType::Link {
                        t.into_owned()
                    } else {
                        base.join(t)
                    };
                    // normalize a/../b
                    let mut parts: Vec<String> = Vec::new();
                    for c in target.components() {
                        match c {
                            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
                            Component::ParentDir => {
                                parts.pop();
                            }
                            _ => {}
                        }
                    }
                    links.insert(name, parts.join("/"));
                }
                continue;
            }
            _ => continue,
        }
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let expected = parse_digest(&format!("sha256:{hex}"))?;
            if store.has_blob(&expected) {
                continue;
            }
            let mut w = store.blob_writer()?;
            io::copy(&mut entry, &mut w)?;
            if w.commit_fresh(Some(&expected))?.2 {
                added.push(expected);
            }
        } else {
            let p = scratch.path().join(i.to_string());
            let mut f = fs_err::File::create(&p)?;
            io::copy(&mut entry, &mut f)?;
            files.insert(name, p);
        }
    }
    let resolve = |n: &str| -> String {
        let mut n = n.to_owned();
        for _ in 0..16 {
            match links.get(&n) {
                Some(t) => n = t.clone(),
                None => break,
            }
        }
        n
    };
    let read_member = |n: &str| -> Result<Vec<u8>> {
        let n = resolve(n);
        if let Some(hex) = n.strip_prefix("blobs/sha256/") {
            return store.read_blob(&parse_digest(&format!("sha256:{hex}"))?);
        }
        let p = files
            .get(&n)
            .ok_or_else(|| Error::invalid("archive", format!("missing member {n}")))?;
        Ok(fs_err::read(p)?)
    };
    let docker_manifest: Option<Value> = match files.contains_key("manifest.json") {
        true => Some(
            serde_json::from_slice(&read_member("manifest.json")?)
                .map_err(|e| Error::json("manifest.json", e))?,
        ),
        false => None,
    };
    // RepoTags by config digest hex
    let mut repo_tags: HashMap<String, Vec<String>> = HashMap::new();
    for e in docker_manifest
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let cfg = e.get("Config").and_then(Value::as_str).unwrap_or("");
        let hex = cfg
            .trim_start_matches("blobs/sha256/")
            .trim_end_matches(".json")
            .to_owned();
        let tags = e
            .get("RepoTags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(normalize_name)
            .collect::<Result<_>>()?;
        repo_tags.insert(hex, tags);
    }
    let mut loaded = Vec::new();
    if files.contains_key("index.json") {
        let index: Value = serde_json::from_slice(&read_member("index.json")?)
            .map_err(|e| Error::json("index.json", e))?;
        for desc in index
            .get("manifests")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some((bytes, media_type)) = pick_manifest(store, desc, 0)? else {
                continue;
            };
            // Names first: an archive naming an image wrongly stores nothing of it.
            let ann = desc.get("annotations");
            let name_in = |key: &str| ann.and_then(|a| a.get(key)).and_then(Value::as_str);
            let containerd = name_in("io.containerd.image.name")
                .map(normalize_name)
                .transpose()?;
            let ref_name = name_in("org.opencontainers.image.ref.name")
                .filter(|n| n.contains('/') || n.contains(':'))
                .map(normalize_name)
                .transpose()?;
            // Every layer checked before the image is: diffID and entries.
            let staged = store.stage_pulled_image(&bytes, &media_type)?;
            for l in &staged.layers {
                let vetted = crate::vet::vet_layer(store.open_blob(&l.digest)?, io::sink())
                    .map_err(|e| in_layer(&l.digest.to_string(), e))?;
                if vetted.diff_id != l.diff_id {
                    return Err(in_layer(
                        &l.digest.to_string(),
                        Error::invalid(
                            "diffID",
                            format!("{}, the config says {}", vetted.diff_id, l.diff_id),
                        ),
                    ));
                }
            }
            let rec = store.put_pulled_image(&bytes, &media_type)?;
            let names = match (
                containerd,
                repo_tags.get(&rec.config_digest.hex()),
                ref_name,
            ) {
                (Some(n), _, _) => vec![n],
                (None, Some(t), _) => t.clone(),
                (None, None, Some(n)) => vec![n],
                (None, None, None) => Vec::new(),
            };
            kept(added, &rec);
            loaded.push(LoadedImage { names, record: rec });
        }
    } else if let Some(list) = docker_manifest.as_ref().and_then(Value::as_array) {
        for e in list {
            let cfg_name = e.get("Config").and_then(Value::as_str).ok_or_else(|| {
                Error::invalid("docker archive", "manifest.json entry without Config")
            })?;
            let config = read_member(cfg_name)?;
            let cfg_json: Value =
                serde_json::from_slice(&config).map_err(|e| Error::json("image config", e))?;
            let mut layers = Vec::new();
            let want = cfg_json
                .pointer("/rootfs/diff_ids")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (i, l) in e
                .get("Layers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let l = l
                    .as_str()
                    .ok_or_else(|| Error::invalid("docker archive", "layer is not a string"))?;
                let (info, fresh) = ingest_legacy_layer(store, &resolve(l), &files)?;
                if fresh {
                    added.push(info.digest.clone());
                }
                if want.get(i).and_then(Value::as_str) != Some(info.diff_id.to_string().as_str()) {
                    return Err(Error::invalid(
                        "docker archive",
                        format!("layer {l} does not match the config's diff_ids"),
                    ));
                }
                layers.push(info);
            }
            let names = e
                .get("RepoTags")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(normalize_name)
                .collect::<Result<Vec<_>>>()?;
            let rec = store.put_image(&config, &layers)?;
            kept(added, &rec);
            loaded.push(LoadedImage { names, record: rec });
        }
    } else {
        return Err(Error::invalid(
            "archive",
            "neither index.json nor manifest.json found",
        ));
    }
    for l in &loaded {
        for n in &l.names {
            store.tag(n, &l.record.manifest_digest)?;
        }
        tracing::info!(manifest = %l.record.manifest_digest, names = ?l.names, "loaded image");
    }
    Ok(loaded)
}

/// Follows an index descriptor down to one image manifest for this platform.
fn pick_manifest(store: &Store, desc: &Value, depth: u32) -> Result<Option<(Vec<u8>, String)>> {
    let d = desc
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid("index", "descriptor without digest"))?;
    let d = parse_digest(d)?;
    let bytes = store.read_blob(&d)?;
    let parsed: Value = serde_json::from_slice(&bytes).map_err(|e| Error::json("manifest", e))?;
    let mt = desc
        .get("mediaType")
        .and_then(Value::as_str)
        .or_else(|| parsed.get("mediaType").and_then(Value::as_str))
        .unwrap_or(OCI_MANIFEST)
        .to_owned();
    if kiln_oci::media_type::is_index(&mt) {
        if depth > 4 {
            return Err(Error::invalid("index", "nested too deep"));
        }
        let ms = parsed
            .get("manifests")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ours = ms.iter().find(|m| {
            m.pointer("/platform/os").and_then(Value::as_str) == Some("linux")
                && m.pointer("/platform/architecture").and_then(Value::as_str)
                    == Some(Platform::host().architecture.as_str())
        });
        // No entry for this platform: the first image, never an attestation manifest
        // (`unknown/unknown`, BuildKit's provenance and SBOM).
        let first_image = || {
            ms.iter()
                .find(|m| m.pointer("/platform/os").and_then(Value::as_str) != Some("unknown"))
        };
        return match ours.or_else(first_image) {
            Some(m) => pick_manifest(store, m, depth + 1),
            None => Ok(None),
        };
    }
    Ok(Some((bytes, mt)))
}

fn ingest_legacy_layer(
    store: &Store,
    name: &str,
    files: &HashMap<String, PathBuf>,
) -> Result<(LayerInfo, bool)> {
    let (path, in_store) = if let Some(hex) = name.strip_prefix("blobs/sha256/") {
        let d = parse_digest(&format!("sha256:{hex}"))?;
        (store.blob_path(&d), true)
    } else {
        let p = files
            .get(name)
            .ok_or_else(|| Error::invalid("docker archive", format!("missing layer {name}")))?;
        (p.clone(), false)
    };
    let mut head = [0u8; 4];
    let n = fs_err::File::open(&path)?.read(&mut head)?;
    let compressed =
        head[..n].starts_with(&[0x1f, 0x8b]) || head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    let diff_id = crate::vet::vet_layer(fs_err::File::open(&path)?, io::sink())
        .map_err(|e| in_layer(name, e))?
        .diff_id;
    let (digest, size, fresh) = if in_store {
        let d = parse_digest(&format!(
            "sha256:{}",
            name.trim_start_matches("blobs/sha256/")
        ))?;
        let size = fs_err::metadata(&path)?.len();
        (d, size, false)
    } else {
        let mut w = store.blob_writer()?;
        io::copy(&mut fs_err::File::open(&path)?, &mut w)?;
        w.commit_fresh(None)?
    };
    let media_type = if !compressed {
        OCI_LAYER.to_owned()
    } else if head.starts_with(&[0x1f, 0x8b]) {
        OCI_LAYER_GZIP.to_owned()
    } else {
        OCI_LAYER_ZSTD.to_owned()
    };
    Ok((
        LayerInfo {
            diff_id,
            digest,
            size,
            media_type,
        },
        fresh,
    ))
}

/// `kiln import`: a rootfs tar (plain or compressed) becomes a one-layer gzip image tagged
/// `name` (already normalized; empty for none), created now.
pub fn import_rootfs(store: &Store, tar: impl Read, name: &str) -> Result<ImageRecord> {
    import_rootfs_at(store, tar, name, None)
}

/// As [`import_rootfs`], created at `epoch` (seconds; `None`: now), so that the same tar gives
/// the same image ID anywhere (`SOURCE_DATE_EPOCH`).
pub fn import_rootfs_at(
    store: &Store,
    tar: impl Read,
    name: &str,
    epoch: Option<i64>,
) -> Result<ImageRecord> {
    // Checked while it is compressed: random bytes or a truncated tar make no image.
    let mut enc = Encoder::new(store.blob_writer()?, Encoding::GZIP)?;
    let vetted = crate::vet::vet_layer(tar, &mut enc)?;
    let diff_id = vetted.diff_id;
    let (digest, size) = enc.finish()?.commit(None)?;
    let layer = LayerInfo {
        diff_id,
        digest,
        size,
        media_type: Encoding::GZIP.media_type().to_owned(),
    };
    let when = match epoch {
        Some(secs) => chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default(),
        None => chrono::Utc::now(),
    };
    let created = when.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let config = minimal_config(
        std::slice::from_ref(&layer),
        &created,
        "kiln import",
        serde_json::json!({}),
    )?;
    let rec = store.put_image(&config, &[layer])?;
    if !name.is_empty() {
        store.tag(name, &rec.manifest_digest)?;
    }
    Ok(rec)
}
