//! Descriptors, image manifests and image indexes as they travel: parsed leniently (other tools
//! write `null` for empty lists and maps, and fields kiln does not know), written in the shape
//! Go's encoders give them (empty optional fields left out). The bytes kiln pulled are kept as
//! they came; these types are for reading them and for writing kiln's own.

use crate::{Digest, Platform};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// `null` as the type's default (Go writes `null` for a nil slice or map).
fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// OCI's pointer to a blob: what it is, its digest and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type of the blob.
    #[serde(default, deserialize_with = "null_as_default")]
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// Where else the blob may be fetched from (foreign layers).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub urls: Vec<String>,
    /// Annotations.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    /// The platform of the manifest an index entry points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// The artifact type of the manifest an index entry points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    /// A descriptor of `size` bytes named `digest`, of `media_type`.
    pub fn new(media_type: impl Into<String>, size: u64, digest: Digest) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
        }
    }
}

/// An image manifest (OCI, or docker v2 schema 2: the same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    #[serde(default = "schema_version_2")]
    pub schema_version: u32,
    /// The manifest's own media type (required by docker, optional in OCI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// What the manifest is when it is not an image (e.g. kiln's remote cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// The layers, bottom first.
    #[serde(default, deserialize_with = "null_as_default")]
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to (attestations, signatures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

/// An image index (OCI) or manifest list (docker): one entry per platform, or per artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    #[serde(default = "schema_version_2")]
    pub schema_version: u32,
    /// The index's own media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// What the index is when it is not an image index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The manifests (or nested indexes) it lists.
    #[serde(default, deserialize_with = "null_as_default")]
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

fn schema_version_2() -> u32 {
    2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{canonical_json, sha256};

    #[test]
    fn reads_what_other_tools_write() {
        let d = sha256(b"x");
        let text = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
                "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":1,"digest":"{d}","urls":null}},
                "layers":null,"annotations":null,"somethingNew":{{"a":1}}}}"#
        );
        let m: ImageManifest = serde_json::from_str(&text).unwrap();
        assert!(m.layers.is_empty());
        assert_eq!(m.config.digest, d);
        let text = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":7,
                "platform":{{"architecture":"unknown","os":"unknown"}},"annotations":{{"vnd.docker.reference.type":"attestation-manifest"}}}}]}}"#
        );
        let i: ImageIndex = serde_json::from_str(&text).unwrap();
        assert_eq!(i.manifests[0].platform.as_ref().unwrap().os, "unknown");
    }

    #[test]
    fn writes_go_shaped_json() {
        let d = sha256(b"x");
        let m = ImageManifest {
            schema_version: 2,
            media_type: Some(crate::media_type::OCI_MANIFEST.to_owned()),
            artifact_type: None,
            config: Descriptor::new(crate::media_type::OCI_CONFIG, 1, d.clone()),
            layers: vec![],
            subject: None,
            annotations: BTreeMap::new(),
        };
        let json = String::from_utf8(canonical_json(&m).unwrap()).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"config":{{"digest":"{d}","mediaType":"application/vnd.oci.image.config.v1+json","size":1}},"layers":[],"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}}"#
            )
        );
    }
}
