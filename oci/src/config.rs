//! The image config (OCI's `application/vnd.oci.image.config.v1+json`, with docker's
//! extensions) as kiln reads and writes it: tolerant of `null` wherever another tool may
//! write one, and keeping the fields kiln does not model.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `HEALTHCHECK`, as docker stores it (durations in nanoseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub test: Vec<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub interval: i64,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub timeout: i64,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub start_period: i64,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub start_interval: i64,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub retries: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Reads a field that other tools may write as `null` (docker writes `"Volumes": null`,
/// `"OnBuild": null`, `"Env": null`, ...) as the field's default.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Fields kiln does not model, kept as they came so that nothing another tool wrote is lost.
pub type Extra = BTreeMap<String, serde_json::Value>;

/// The `config` object of an image config: what a container of the image starts with. Field
/// names and omission rules are docker's (Go `omitempty`), so our JSON matches theirs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub user: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub volumes: BTreeMap<String, serde_json::Value>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub stop_signal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub shell: Vec<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub on_build: Vec<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub args_escaped: bool,
    /// Fields kiln does not model (docker's `Hostname`, `AttachStdin`, `Image`, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// One history entry of an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub created_by: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub author: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub comment: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub empty_layer: bool,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default = "layers", deserialize_with = "nullable")]
    pub kind: String,
    #[serde(default, deserialize_with = "nullable")]
    pub diff_ids: Vec<String>,
}

fn layers() -> String {
    "layers".to_string()
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: layers(),
            diff_ids: Vec::new(),
        }
    }
}

/// An OCI image config (with docker's extensions), as far as kiln reads and writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub author: String,
    #[serde(default, deserialize_with = "nullable")]
    pub architecture: String,
    #[serde(default, deserialize_with = "nullable")]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub config: RunConfig,
    #[serde(default, deserialize_with = "nullable")]
    pub rootfs: RootFs,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub history: Vec<History>,
    /// Fields kiln does not model (`os.version`, `os.features`, docker's `container_config`,
    /// a registry's vendor extensions, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// Top-level fields that describe how a base image itself was built: a derived image does
/// not inherit them (docker's classic builder record, BuildKit's inline cache and build info).
const BUILD_RECORD: &[&str] = &[
    "container",
    "container_config",
    "docker_version",
    "id",
    "parent",
];

/// `config` fields that describe the container the base was committed from.
const CONTAINER_RECORD: &[&str] = &[
    "Image",
    "Hostname",
    "Domainname",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "Tty",
    "OpenStdin",
    "StdinOnce",
];

/// An image config that does not parse, with the path of the field at fault.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// Where, as `config.Env` or `history[2].created_by` (`.` for the document itself).
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl ImageConfig {
    /// Parses config bytes, naming the field at fault when they do not fit.
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, ConfigError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // serde_json's own text ends with " at line L column C": keep it, it locates the
            // byte for configs on one line as well.
            ConfigError {
                path,
                message: inner.to_string(),
            }
        })
    }

    /// The config a stage that starts `FROM` this image begins with: everything but the
    /// base's creation time, its `ONBUILD` triggers and the record of how it was built.
    pub fn derived(&self) -> ImageConfig {
        let mut c = self.clone();
        c.created = None;
        c.config.on_build.clear();
        c.extra
            .retain(|k, _| !BUILD_RECORD.contains(&k.as_str()) && !k.starts_with("moby.buildkit."));
        c.config
            .extra
            .retain(|k, _| !CONTAINER_RECORD.contains(&k.as_str()));
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What docker's classic builder writes (and many public images carry): nulls where a
    /// field is unset, and fields kiln does not model.
    const DOCKER: &str = r#"{"architecture":"amd64","author":null,"config":{"Hostname":"",
        "User":"","Env":null,"Cmd":null,"Entrypoint":null,"Volumes":null,"ExposedPorts":null,
        "Labels":null,"OnBuild":null,"Healthcheck":{"Test":null},"Shell":null,"WorkingDir":null,
        "StopSignal":null,"ArgsEscaped":null,"Image":"sha256:00","MacAddress":"x"},
        "container_config":{"Cmd":["sh"]},"docker_version":"20.10.24","created":null,
        "history":[{"created":null,"created_by":null,"empty_layer":null,"comment":null}],
        "os":"linux","os.version":"10.0","rootfs":{"type":"layers","diff_ids":null},
        "moby.buildkit.cache.v0":"abc"}"#;

    #[test]
    fn nulls_read_as_unset_and_unknown_fields_survive() {
        let c: ImageConfig = serde_json::from_str(DOCKER).unwrap();
        assert!(c.config.env.is_empty() && c.config.volumes.is_empty());
        assert_eq!(c.config.entrypoint, None);
        assert_eq!(c.config.healthcheck, Some(Healthcheck::default()));
        assert_eq!(c.history.len(), 1);
        assert!(c.rootfs.diff_ids.is_empty());
        assert_eq!(c.extra["os.version"], "10.0");
        assert_eq!(c.config.extra["MacAddress"], "x");
        // Written back, the unknown fields are there and the nulls are gone.
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["docker_version"], "20.10.24");
        assert!(back["config"].get("Env").is_none());
        let again: ImageConfig = serde_json::from_value(back).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn a_config_that_does_not_fit_names_the_field() {
        let e = ImageConfig::parse(br#"{"config":{"Env":"A=1"}}"#).unwrap_err();
        assert_eq!(e.path, "config.Env");
        assert!(e.message.contains("expected a sequence"), "{e}");
        let e = ImageConfig::parse(br#"{"history":[{},{"created_by":3}]}"#).unwrap_err();
        assert_eq!(e.path, "history[1].created_by");
    }

    #[test]
    fn absent_fields_and_empty_objects_read() {
        let c: ImageConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.rootfs.kind, "layers");
        let c: ImageConfig = serde_json::from_str(
            r#"{"architecture":"arm64","os":"linux","config":null,"rootfs":null}"#,
        )
        .unwrap();
        assert_eq!(c.config, RunConfig::default());
    }

    #[test]
    fn a_derived_config_drops_the_base_build_record() {
        let c: ImageConfig = serde_json::from_str(DOCKER).unwrap();
        let d = c.derived();
        for k in [
            "container_config",
            "docker_version",
            "moby.buildkit.cache.v0",
        ] {
            assert!(!d.extra.contains_key(k), "{k}");
        }
        assert!(!d.config.extra.contains_key("Image"));
        assert!(!d.config.extra.contains_key("Hostname"));
        assert_eq!(d.extra["os.version"], "10.0");
        assert_eq!(d.config.extra["MacAddress"], "x");
    }
}
