//! The cache document: the records of an export, self-contained (see the module docs of
//! [`super`] for the wire format).

use super::{ExportRecord, MountRecord};
use crate::engine::CacheKey;
use crate::refs::{Chain, ChainLayer};
use kiln_cache::{LayerInfo, parse_digest};
use kiln_oci::Digest;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Media type of the cache config blob (the document).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.kiln.cache.config.v1+json";
/// `artifactType` of the cache manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.kiln.cache.v1";
/// Top-level key of an image config that holds inline cache metadata.
pub const INLINE_KEY: &str = "kiln.cache.v1";
/// The document version this code writes and reads.
const SCHEMA_VERSION: u32 = 1;
/// Largest cache document accepted.
pub(crate) const MAX_DOCUMENT_SIZE: u64 = 64 * 1024 * 1024;

/// The wire document.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Document {
    schema_version: u32,
    /// Every layer blob the records use, in first-use order (the manifest's `layers`).
    layers: Vec<WireLayer>,
    /// The records, sorted by key.
    records: Vec<WireRecord>,
    /// Cache mounts (`RUN --mount=type=cache`) carried by the export, sorted by id; each an
    /// index into `layers`. Absent in exports without them (older readers ignore it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    cache_mounts: Vec<WireMount>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireMount {
    id: String,
    layer: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireLayer {
    pub(crate) media_type: String,
    pub(crate) digest: String,
    pub(crate) size: u64,
    #[serde(rename = "diffID")]
    pub(crate) diff_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireRecord {
    key: CacheKey,
    /// The layer chain, bottom first: indexes into `layers` with the step that made each.
    chain: Vec<WireChainLayer>,
    #[serde(default)]
    inputs: Vec<CacheKey>,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireChainLayer {
    layer: usize,
    step: CacheKey,
}

/// A document read back and validated.
pub(crate) struct Decoded {
    pub(crate) layers: Vec<LayerInfo>,
    pub(crate) records: Vec<ImportedRecord>,
    pub(crate) mounts: Vec<MountRecord>,
}

/// One record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedRecord {
    /// The step's cache key.
    pub key: CacheKey,
    /// Its layer chain.
    pub chain: Chain,
    /// Its inputs' cache keys.
    pub inputs: Vec<CacheKey>,
    /// What the step was (`RUN make`), for explanations.
    pub description: String,
}

impl Document {
    /// The document for `records` (later duplicates of a key are dropped). Deterministic: the
    /// same records give the same bytes.
    pub(crate) fn from_records(records: &[ExportRecord]) -> Document {
        let mut by_key: BTreeMap<&CacheKey, &ExportRecord> = BTreeMap::new();
        for r in records {
            by_key.entry(&r.key).or_insert(r);
        }
        let mut layers: Vec<WireLayer> = Vec::new();
        let mut index: HashMap<&Digest, usize> = HashMap::new();
        let mut out = Vec::with_capacity(by_key.len());
        for (key, r) in by_key {
            let chain = r
                .chain
                .layers
                .iter()
                .map(|l| {
                    let i = *index.entry(&l.layer.digest).or_insert_with(|| {
                        layers.push(WireLayer {
                            media_type: l.layer.media_type.clone(),
                            digest: l.layer.digest.to_string(),
                            size: l.layer.size,
                            diff_id: l.layer.diff_id.to_string(),
                        });
                        layers.len() - 1
                    });
                    WireChainLayer {
                        layer: i,
                        step: l.step.clone(),
                    }
                })
                .collect();
            out.push(WireRecord {
                key: key.clone(),
                chain,
                inputs: r.inputs.clone(),
                description: r.description.clone(),
            });
        }
        Document {
            schema_version: SCHEMA_VERSION,
            layers,
            records: out,
            cache_mounts: Vec::new(),
        }
    }

    /// Adds cache mounts (each id once, sorted; their layers after the records' ones).
    pub(crate) fn with_mounts(mut self, mounts: &[MountRecord]) -> Document {
        let mut by_id: BTreeMap<&str, &MountRecord> = BTreeMap::new();
        for m in mounts {
            by_id.entry(m.id.as_str()).or_insert(m);
        }
        for (id, m) in by_id {
            let digest = m.layer.digest.to_string();
            let layer = match self.layers.iter().position(|l| l.digest == digest) {
                Some(i) => i,
                None => {
                    self.layers.push(WireLayer {
                        media_type: m.layer.media_type.clone(),
                        digest,
                        size: m.layer.size,
                        diff_id: m.layer.diff_id.to_string(),
                    });
                    self.layers.len() - 1
                }
            };
            self.cache_mounts.push(WireMount {
                id: id.to_owned(),
                layer,
            });
        }
        self
    }

    /// Canonical bytes (fixed field order, no white space).
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        // Plain structs of strings and numbers always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The document as a JSON value (for inline metadata).
    pub(crate) fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    pub(crate) fn parse(bytes: &[u8]) -> Result<Document, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    pub(crate) fn from_value(v: serde_json::Value) -> Result<Document, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    /// The layer blobs, validated.
    pub(crate) fn layer_infos(&self) -> Result<Vec<LayerInfo>, String> {
        self.layers
            .iter()
            .map(|l| {
                let digest = parse_digest(&l.digest).map_err(|e| e.to_string())?;
                let diff_id = parse_digest(&l.diff_id).map_err(|e| e.to_string())?;
                if l.media_type.is_empty() || l.media_type.len() > 255 {
                    return Err(format!("layer {digest} has an invalid media type"));
                }
                Ok(LayerInfo {
                    diff_id,
                    digest,
                    size: l.size,
                    media_type: l.media_type.clone(),
                })
            })
            .collect()
    }

    /// Validates the whole document and returns its layers and records; any inconsistency
    /// rejects all of it (a reader sees a whole record set or none).
    pub(crate) fn decode(self) -> Result<Decoded, String> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(format!(
                "schema version {} is not supported (this kiln reads {SCHEMA_VERSION})",
                self.schema_version
            ));
        }
        let layers = self.layer_infos()?;
        let mut records = Vec::with_capacity(self.records.len());
        for r in self.records {
            let mut chain = Chain::default();
            for c in r.chain {
                let Some(layer) = layers.get(c.layer) else {
                    return Err(format!(
                        "record {} refers to layer #{} of {}",
                        r.key,
                        c.layer,
                        layers.len()
                    ));
                };
                chain.layers.push(ChainLayer {
                    layer: layer.clone(),
                    step: c.step,
                });
            }
            records.push(ImportedRecord {
                key: r.key,
                chain,
                inputs: r.inputs,
                description: r.description,
            });
        }
        let mut mounts = Vec::with_capacity(self.cache_mounts.len());
        for m in self.cache_mounts {
            let Some(layer) = layers.get(m.layer) else {
                return Err(format!(
                    "cache mount {:?} refers to layer #{} of {}",
                    m.id,
                    m.layer,
                    layers.len()
                ));
            };
            if m.id.is_empty() || m.id.len() > 1024 {
                return Err("a cache mount has an invalid id".to_owned());
            }
            mounts.push(MountRecord {
                id: m.id,
                layer: layer.clone(),
            });
        }
        Ok(Decoded {
            layers,
            records,
            mounts,
        })
    }

    /// Number of records.
    pub(crate) fn record_count(&self) -> usize {
        self.records.len()
    }

    /// The layer descriptors in manifest order.
    pub(crate) fn wire_layers(&self) -> &[WireLayer] {
        &self.layers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_oci::sha256;

    fn layer(n: u8) -> LayerInfo {
        LayerInfo {
            diff_id: kiln_oci::sha256(&[b'd', n]),
            digest: kiln_oci::sha256(&[b'b', n]),
            size: u64::from(n) * 10,
            media_type: kiln_cache::Encoding::GZIP.media_type().to_owned(),
        }
    }

    fn record(key: &str, layers: &[u8], inputs: &[&str]) -> ExportRecord {
        ExportRecord {
            key: sha256(key.as_bytes()),
            chain: Chain {
                layers: layers
                    .iter()
                    .map(|n| ChainLayer {
                        layer: layer(*n),
                        step: sha256(&[*n]),
                    })
                    .collect(),
            },
            inputs: inputs.iter().map(|i| sha256(i.as_bytes())).collect(),
            description: format!("RUN {key}"),
        }
    }

    #[test]
    fn round_trip_shares_layers_and_is_deterministic() {
        let records = vec![
            record("b", &[1, 2], &["a"]),
            record("a", &[1], &[]),
            record("c", &[1, 2, 3], &["b"]),
        ];
        let doc = Document::from_records(&records);
        assert_eq!(doc.wire_layers().len(), 3, "layer 1 and 2 listed once");
        let bytes = doc.to_bytes();
        let mut reversed = records.clone();
        reversed.reverse();
        assert_eq!(Document::from_records(&reversed).to_bytes(), bytes);
        let Ok(parsed) = Document::parse(&bytes) else {
            panic!("parse");
        };
        let Ok(Decoded {
            layers,
            records: back,
            ..
        }) = parsed.decode()
        else {
            panic!("decode");
        };
        assert_eq!(layers.len(), 3);
        for r in &records {
            let Some(found) = back.iter().find(|b| b.key == r.key) else {
                panic!("record {} lost", r.key);
            };
            assert_eq!(found.chain, r.chain);
            assert_eq!(found.inputs, r.inputs);
            assert_eq!(found.description, r.description);
        }
    }

    #[test]
    fn cache_mounts_round_trip_sharing_layers() {
        let mounts = [
            MountRecord {
                id: "go".into(),
                layer: layer(9),
            },
            MountRecord {
                id: "apt".into(),
                layer: layer(1),
            },
        ];
        let doc = Document::from_records(&[record("a", &[1], &[])]).with_mounts(&mounts);
        assert_eq!(doc.wire_layers().len(), 2, "layer 1 listed once");
        let back = Document::parse(&doc.to_bytes()).unwrap().decode().unwrap();
        let ids: Vec<&str> = back.mounts.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["apt", "go"]);
        assert_eq!(back.mounts[1].layer, layer(9));
        // Without mounts the document is what it always was.
        let plain = Document::from_records(&[record("a", &[1], &[])]).to_bytes();
        assert!(!String::from_utf8_lossy(&plain).contains("cacheMounts"));
    }

    #[test]
    fn out_of_range_layer_or_bad_digest_rejects_the_document() {
        let doc = Document::from_records(&[record("a", &[1], &[])]);
        let mut v = doc.to_value();
        v["records"][0]["chain"][0]["layer"] = serde_json::json!(7);
        let Ok(d) = Document::from_value(v) else {
            panic!("still well-formed JSON");
        };
        assert!(d.decode().is_err_and(|e| e.contains("layer #7")));

        let mut v = Document::from_records(&[record("a", &[1], &[])]).to_value();
        v["layers"][0]["digest"] = serde_json::json!("sha256:../../etc/passwd");
        let Ok(d) = Document::from_value(v) else {
            panic!("still well-formed JSON");
        };
        assert!(d.decode().is_err());

        let mut v = Document::from_records(&[]).to_value();
        v["schemaVersion"] = serde_json::json!(2);
        let Ok(d) = Document::from_value(v) else {
            panic!("still well-formed JSON");
        };
        assert!(d.decode().is_err_and(|e| e.contains("schema version 2")));
    }
}
