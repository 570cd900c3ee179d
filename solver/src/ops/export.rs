//! Export: the root's layer chain and the frontend's image spec become an image in the store.
//!
//! History and layers are matched from the top: every step in the target's filesystem lineage
//! (RUN, COPY, ADD, WORKDIR...) has one non-empty history entry, newest last; a step whose
//! result added no layer (nothing changed) gets `empty_layer: true`, as BuildKit does. Entries
//! before the lineage are the base image's and keep their flags.

use crate::error::{Error, Result};
use crate::refs::Chain;
use kiln_cache::{Encoding, ImageRecord, Store};
use kiln_graph::{Definition, ImageConfig, Op, SourceOp};
use kiln_oci::Compression;
use kiln_oci::Digest;
use std::collections::HashSet;

/// Times written into the config: the build's epoch (`SOURCE_DATE_EPOCH`, the context's git
/// commit time, else the Unix epoch), so that the same inputs give the same image ID on every
/// machine (reproducible by default); `None` (`--no-reproducible`) is the current time.
pub fn created_time(source_date_epoch: Option<i64>) -> String {
    let secs = source_date_epoch.unwrap_or_else(|| chrono::Utc::now().timestamp());
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// How an output's layers are compressed: buildx's `compression=gzip|zstd|uncompressed`,
/// `compression-level=N` and `force-compression=true|false` of `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerCompression {
    /// The encoding of new layers, and of every layer of this build's steps in the output (a
    /// cached layer in another compression is converted, so the image is the same whatever
    /// the cache held).
    pub encoding: Encoding,
    /// `force-compression=true`: base image layers are converted too.
    pub force: bool,
}

impl Default for LayerCompression {
    fn default() -> Self {
        LayerCompression {
            encoding: Encoding::GZIP,
            force: false,
        }
    }
}

impl LayerCompression {
    /// The compression keys of an `--output` spec (others are left to
    /// [`Output::parse`](crate::session::Output::parse)). Errors name the key.
    pub fn parse(spec: &str) -> std::result::Result<LayerCompression, String> {
        let mut out = LayerCompression::default();
        let (mut algorithm, mut level) = (None, None);
        for part in spec.split(',') {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            let v = v.trim();
            match k.trim() {
                "compression" => match v {
                    "gzip" | "zstd" | "uncompressed" => algorithm = Some(v.to_string()),
                    "estargz" => {
                        return Err(format!(
                            "--output {spec:?}: compression=estargz is not supported (gzip, zstd or uncompressed)"
                        ));
                    }
                    other => {
                        return Err(format!(
                            "--output {spec:?}: compression={other:?}: expected gzip, zstd or uncompressed"
                        ));
                    }
                },
                "compression-level" => {
                    level = Some(v.parse::<i32>().map_err(|_| {
                        format!("--output {spec:?}: compression-level={v:?}: expected a number")
                    })?)
                }
                "force-compression" => {
                    out.force = match v {
                        "true" => true,
                        "false" => false,
                        other => {
                            return Err(format!(
                                "--output {spec:?}: force-compression={other:?}: expected true or false"
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        out.encoding = match (algorithm.as_deref().unwrap_or("gzip"), level) {
            ("uncompressed", _) => Encoding::None,
            ("zstd", None) => Encoding::ZSTD,
            ("zstd", Some(l)) if (1..=22).contains(&l) => Encoding::Zstd { level: l },
            ("zstd", Some(l)) if (-7..=0).contains(&l) => Encoding::Zstd { level: l.max(1) },
            (_, None) => Encoding::GZIP,
            // gzip levels are Go's 0-9 (BuildKit); libdeflate's 1-9 compress at least as well.
            (_, Some(l)) if (0..=9).contains(&l) => Encoding::GzipMembers {
                level: l.max(1) as u32,
            },
            (alg, Some(l)) => {
                let range = if alg == "zstd" { "1-22" } else { "0-9" };
                return Err(format!(
                    "--output {spec:?}: compression-level={l}: {alg} takes {range}"
                ));
            }
        };
        Ok(out)
    }
}

/// `chain` with its layers in the blobs an output sends out: the layers of this build's steps
/// in `lc.encoding`'s compression, every layer with `force-compression`,
/// and, when the output `leaves` the machine (a push, an OCI archive), an uncompressed layer
/// (from a docker archive) compressed. Converted blobs are kept in the store and reused.
pub fn compress_chain(
    store: &Store,
    def: &Definition,
    chain: &Chain,
    lc: &LayerCompression,
    leaves: bool,
) -> Result<Chain> {
    let mut out = chain.clone();
    for l in &mut out.layers {
        let own = def
            .vertices
            .get(&l.step)
            .is_some_and(|v| matches!(v.op, Op::Exec(_) | Op::File(_)));
        let have = kiln_cache::layer::media_compression(&l.layer.media_type);
        let convert = lc.force
            || own
            || (leaves && have == Some(Compression::None) && lc.encoding != Encoding::None);
        // A layer a remote cache left in a registry is sent as it is (push-only outputs).
        if convert && have != Some(lc.encoding.compression()) && store.has_blob(&l.layer.digest) {
            l.layer = store.layer_as(&l.layer, lc.encoding)?;
        }
    }
    Ok(out)
}

/// `chain` with every layer whose blob is here in `enc`'s compression (a `--cache-to` with
/// `compression=`).
pub fn compress_all(store: &Store, chain: &Chain, enc: Encoding) -> Result<Chain> {
    let mut out = chain.clone();
    for l in &mut out.layers {
        if store.has_blob(&l.layer.digest) {
            l.layer = store.layer_as(&l.layer, enc)?;
        }
    }
    Ok(out)
}

/// The steps (exec and file vertices) from the root down its base inputs, bottom first.
pub fn lineage(def: &Definition) -> Vec<Digest> {
    let mut out = Vec::new();
    let mut cur = def.root.clone();
    while let Some(d) = cur {
        let Some(v) = def.vertices.get(&d) else {
            break;
        };
        let base = match &v.op {
            Op::Exec(e) => e.rootfs,
            Op::File(f) => f.base,
            Op::Source(SourceOp::Image { .. }) | Op::Source(_) | Op::Merge => break,
        };
        out.push(d.clone());
        cur = base.and_then(|i| v.inputs.get(i).cloned());
    }
    out.reverse();
    out
}

/// The final image config: the frontend's config with rootfs, history flags and times.
pub fn image_config(
    def: &Definition,
    chain: &Chain,
    source_date_epoch: Option<i64>,
) -> Result<ImageConfig> {
    let mut config = def.image.config.clone();
    let created = created_time(source_date_epoch);
    config.created = Some(created.clone());
    config.rootfs.kind = "layers".to_string();
    config.rootfs.diff_ids = chain
        .layers
        .iter()
        .map(|l| l.layer.diff_id.to_string())
        .collect();

    let steps_with_layer: HashSet<&Digest> = chain.layers.iter().map(|l| &l.step).collect();
    let mut steps = lineage(def);
    // Walk history from the newest entry; each non-empty entry takes the newest unmatched step.
    for h in config.history.iter_mut().rev() {
        if h.empty_layer {
            if h.created.is_none() {
                h.created = Some(created.clone());
            }
            continue;
        }
        let Some(step) = steps.pop() else {
            break; // the base image's entries: keep them as they are
        };
        if !steps_with_layer.contains(&step) {
            h.empty_layer = true;
        }
        if h.created.is_none() {
            h.created = Some(created.clone());
        }
    }
    let layered = config.history.iter().filter(|h| !h.empty_layer).count();
    if !config.history.is_empty() && layered != chain.layers.len() {
        // Never write an image whose history disagrees with its layers (docker rejects it);
        // fall back to the layers alone.
        tracing::warn!(
            layered,
            layers = chain.layers.len(),
            "history does not match the layers; rebuilding it from the layers"
        );
        config.history = history_from_layers(chain, &created);
    }
    Ok(config)
}

fn history_from_layers(chain: &Chain, created: &str) -> Vec<crate::graph::History> {
    chain
        .layers
        .iter()
        .map(|l| crate::graph::History {
            created: Some(created.to_string()),
            created_by: format!("layer {}", l.layer.diff_id),
            empty_layer: false,
            ..crate::graph::History::default()
        })
        .collect()
}

/// The image config as stored and pushed: canonical JSON, with the inline cache metadata
/// when given.
fn config_bytes(
    def: &Definition,
    chain: &Chain,
    source_date_epoch: Option<i64>,
    inline_cache: Option<serde_json::Value>,
) -> Result<Vec<u8>> {
    let config = image_config(def, chain, source_date_epoch)?;
    let mut value = serde_json::to_value(&config).map_err(|e| Error::other("image config", e))?;
    if let (Some(meta), Some(obj)) = (inline_cache, value.as_object_mut()) {
        obj.insert(crate::remote::INLINE_KEY.to_string(), meta);
    }
    kiln_oci::canonical_json(&value).map_err(|e| Error::other("image config", e))
}

/// The image's config and manifest blobs only, for a push whose layers may still be in a
/// registry (see [`Store::stage_image`]); the same bytes [`export_image`] would store.
pub fn stage_image(
    store: &Store,
    def: &Definition,
    chain: &Chain,
    source_date_epoch: Option<i64>,
    inline_cache: Option<serde_json::Value>,
) -> Result<ImageRecord> {
    let bytes = config_bytes(def, chain, source_date_epoch, inline_cache)?;
    Ok(store.stage_image(&bytes, &chain.infos())?)
}

/// Writes the image (config blob and manifest) into the store.
pub fn export_image(
    store: &Store,
    def: &Definition,
    chain: &Chain,
    source_date_epoch: Option<i64>,
    inline_cache: Option<serde_json::Value>,
) -> Result<ImageRecord> {
    let bytes = config_bytes(def, chain, source_date_epoch, inline_cache)?;
    // A rebuild that changed nothing makes the same config: the image is already stored.
    let id = kiln_oci::sha256(&bytes);
    if let Some(rec) = store.resolve(&id.to_string())?
        && rec.config_bytes == bytes
        && rec.layers == chain.infos()
    {
        return Ok(rec);
    }
    Ok(store.put_image(&bytes, &chain.infos())?)
}
