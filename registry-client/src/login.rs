//! `kiln login` / `kiln logout`: verify credentials, keep them in docker's config.json.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Map, Value};
use tracing::info;

use crate::auth::{self, Credential, config_key};
use crate::client::{Client, ClientOptions};
use crate::error::{Error, Result};
use crate::reference::DOCKER_HUB;

/// Where credentials ended up after [`login`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Base64 in `auths` of this config.json (unencrypted, as docker warns).
    ConfigFile(PathBuf),
    /// Handed to `docker-credential-<helper> store`.
    Helper(String),
}

/// Normalizes what a user types after `kiln login`: `docker.io`, `index.docker.io`,
/// `https://index.docker.io/v1/`, `https://host:5000/` → the registry host.
pub fn normalize_registry(input: &str) -> Result<String> {
    let s = input.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    let host = match host {
        "" => DOCKER_HUB,
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB,
        h => h,
    };
    // Validate through the reference parser.
    let probe = format!("{host}/probe");
    let parsed: crate::Reference = probe.parse().map_err(|_| Error::InvalidReference {
        input: input.to_owned(),
        reason: "not a registry host",
    })?;
    Ok(parsed.registry)
}

/// Verifies `username`/`password` against `registry` (its `/v2/` endpoint, via its token service
/// if it uses one) and stores them as docker does: in the configured credential helper, else
/// base64 in config.json. The password is never logged.
pub async fn login(
    registry: &str,
    username: &str,
    password: &str,
    mut options: ClientOptions,
) -> Result<Stored> {
    let registry = normalize_registry(registry)?;
    let credential = Credential::Basic {
        username: username.to_owned(),
        password: password.to_owned(),
    };
    options
        .credentials
        .insert(registry.clone(), credential.clone());
    let config_dir = auth::docker_config_dir(options.docker_config_dir.as_deref());
    let client = Client::new(options)?;
    client.check_auth(&registry).await?;
    let Some(dir) = config_dir else {
        return Err(Error::Credential {
            registry,
            reason: "no docker config directory (set DOCKER_CONFIG or HOME)".to_owned(),
        });
    };
    let stored = store_credential(&dir, &registry, username, password)?;
    info!(registry, username, "login succeeded");
    Ok(stored)
}

/// Forgets the credentials for `registry` (config.json entry and credential helper). Returns
/// whether anything was removed.
pub fn logout(registry: &str, docker_config_dir: Option<&Path>) -> Result<bool> {
    let registry = normalize_registry(registry)?;
    let Some(dir) = auth::docker_config_dir(docker_config_dir) else {
        return Ok(false);
    };
    let path = dir.join("config.json");
    let mut config = read_config(&path)?;
    let key = config_key(&registry).to_owned();
    let mut removed = false;
    if let Some(helper) = helper_for(&config, &key) {
        removed |= run_helper(&registry, &helper, "erase", key.as_bytes()).is_ok();
    }
    if let Some(auths) = config.get_mut("auths").and_then(Value::as_object_mut) {
        let before = auths.len();
        auths.retain(|k, _| !same_registry(k, &key));
        if auths.len() != before {
            removed = true;
            write_config(&path, &config)?;
        }
    }
    Ok(removed)
}

fn store_credential(dir: &Path, registry: &str, username: &str, password: &str) -> Result<Stored> {
    let path = dir.join("config.json");
    let mut config = read_config(&path)?;
    let key = config_key(registry).to_owned();
    if let Some(helper) = helper_for(&config, &key) {
        let payload =
            serde_json::json!({ "ServerURL": key, "Username": username, "Secret": password });
        run_helper(registry, &helper, "store", payload.to_string().as_bytes())?;
        return Ok(Stored::Helper(helper));
    }
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let auths = config
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if !auths.is_object() {
        *auths = Value::Object(Map::new());
    }
    if let Some(auths) = auths.as_object_mut() {
        auths.retain(|k, _| !same_registry(k, &key));
        auths.insert(key, serde_json::json!({ "auth": auth }));
    }
    write_config(&path, &config)?;
    Ok(Stored::ConfigFile(path))
}

/// Whether a config.json `auths` key denotes the same registry as `key`.
fn same_registry(k: &str, key: &str) -> bool {
    k == key || normalize_registry(k).ok() == normalize_registry(key).ok()
}

fn helper_for(config: &Map<String, Value>, key: &str) -> Option<String> {
    config
        .get("credHelpers")
        .and_then(|h| h.get(key))
        .or_else(|| config.get("credsStore"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn run_helper(registry: &str, helper: &str, action: &str, input: &[u8]) -> Result<()> {
    let program = format!("docker-credential-{helper}");
    let fail = |reason: String| Error::Credential {
        registry: registry.to_owned(),
        reason,
    };
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| fail(format!("writing to {program}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for {program}: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!("{program} {action} failed ({})", out.status)));
    }
    Ok(())
}

fn read_config(path: &Path) -> Result<Map<String, Value>> {
    match fs_err::read(path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(Map::new()),
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| Error::Config {
            path: path.to_owned(),
            error,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(e) => Err(e.into()),
    }
}

/// Writes config.json atomically with mode 0600 (it holds secrets).
fn write_config(path: &Path, config: &Map<String, Value>) -> Result<()> {
    use fs_err::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        fs_err::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    let mut bytes = serde_json::to_vec_pretty(config).map_err(|error| Error::Config {
        path: path.to_owned(),
        error,
    })?;
    bytes.push(b'\n');
    let mut file = fs_err::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    fs_err::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_registry_names() {
        let n = |s| normalize_registry(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(n("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(n("index.docker.io"), "docker.io");
        assert_eq!(n("docker.io"), "docker.io");
        assert_eq!(n("http://127.0.0.1:5000/"), "127.0.0.1:5000");
        assert_eq!(n("ghcr.io"), "ghcr.io");
        assert!(normalize_registry("bad host").is_err());
    }

    #[test]
    fn stores_and_removes_like_docker() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("config.json");
        fs_err::write(
            &path,
            r#"{"auths":{"other.io":{"auth":"eDp5"}},"psFormat":"x"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let stored = store_credential(dir.path(), "docker.io", "me", "s3cret")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stored, Stored::ConfigFile(path.clone()));
        let cred = auth::lookup_credential(Some(dir.path()), "docker.io")
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|c| c.credential);
        assert_eq!(
            cred,
            Some(Credential::Basic {
                username: "me".into(),
                password: "s3cret".into()
            })
        );
        let text = fs_err::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(text.contains("https://index.docker.io/v1/"), "{text}");
        assert!(text.contains("psFormat"), "other settings are kept: {text}");
        assert!(text.contains("other.io"), "{text}");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs_err::metadata(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            logout("https://index.docker.io/v1/", Some(dir.path())).ok(),
            Some(true)
        );
        assert_eq!(logout("docker.io", Some(dir.path())).ok(), Some(false));
        let gone = auth::lookup_credential(Some(dir.path()), "docker.io");
        assert!(matches!(gone, Ok(None)), "{gone:?}");
    }
}
