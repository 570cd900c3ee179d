//! Authentication: `WWW-Authenticate` challenges, credentials from docker's config, bearer tokens.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::reference::DOCKER_HUB;

/// The key docker uses for Docker Hub in `config.json`.
pub const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";

/// A secret used to authenticate to a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// User name and password (or personal access token).
    Basic {
        /// User name.
        username: String,
        /// Password; never displayed.
        password: String,
    },
    /// An OAuth2 refresh token (docker's `identitytoken`).
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username:?}, ***)"),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(***)"),
        }
    }
}

/// A credential and where it came from, for error messages.
#[derive(Debug, Clone)]
pub(crate) struct SourcedCredential {
    pub(crate) credential: Credential,
    /// e.g. `/root/.docker/config.json`, `credential helper docker-credential-pass`.
    pub(crate) source: String,
}

impl SourcedCredential {
    /// Describes the credential without its secret.
    pub(crate) fn describe(&self) -> String {
        match &self.credential {
            Credential::Basic { username, .. } => {
                format!("user {username:?} from {}", self.source)
            }
            Credential::IdentityToken(_) => format!("identity token from {}", self.source),
        }
    }
}

/// Describes what was tried for a registry, without secrets.
pub(crate) fn describe(cred: Option<&SourcedCredential>) -> String {
    cred.map_or_else(
        || "no credentials (anonymous)".to_owned(),
        SourcedCredential::describe,
    )
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `Basic realm="…"`.
    Basic,
    /// `Bearer realm="…",service="…",scope="…"`.
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Parses the first challenge we support out of a `WWW-Authenticate` value.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
        }),
        _ => None,
    }
}

/// `key="quoted, value",key2=token` → map with lowercase keys.
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    out
}

/// A bearer token and when to stop using it.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) value: String,
    pub(crate) expires: Instant,
}

impl Token {
    pub(crate) fn fresh(&self) -> bool {
        Instant::now() < self.expires
    }
}

/// The token endpoint's answer.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub(crate) token: Option<String>,
    #[serde(default)]
    pub(crate) access_token: Option<String>,
    #[serde(default)]
    pub(crate) expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token with its expiry (60 s if the server gives none, at most a day, minus a safety
    /// margin).
    pub(crate) fn into_token(self) -> Option<Token> {
        let value = self.token.or(self.access_token).filter(|t| !t.is_empty())?;
        let secs = self.expires_in.unwrap_or(60).clamp(10, 24 * 60 * 60);
        let lifetime = Duration::from_secs(secs);
        Some(Token {
            value,
            expires: Instant::now() + lifetime - Duration::from_secs(5),
        })
    }
}

/// The directory holding docker's `config.json`: the given one, else `$DOCKER_CONFIG`, else
/// `~/.docker`.
pub fn docker_config_dir(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(dir) = explicit {
        return Some(dir.to_owned());
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker"))
}

/// The key under which docker stores a registry's credentials.
pub(crate) fn config_key(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_CONFIG_KEY
    } else {
        registry
    }
}

/// Looks a registry's credentials up in docker's config.json (auths, credHelpers, credsStore).
pub(crate) fn lookup_credential(
    config_dir: Option<&Path>,
    registry: &str,
) -> Result<Option<SourcedCredential>> {
    let Some(dir) = config_dir else {
        return Ok(None);
    };
    let path = dir.join("config.json");
    let bytes = match fs_err::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let key = config_key(registry);
    let helper = helper_for(&bytes, key);
    use docker_credential::{CredentialRetrievalError as E, DockerCredential as D};
    match docker_credential::get_credential_from_reader(bytes.as_slice(), key) {
        Ok(cred) => {
            let credential = match cred {
                D::UsernamePassword(username, password) => Credential::Basic { username, password },
                D::IdentityToken(t) => Credential::IdentityToken(t),
            };
            let source = match helper {
                Some(h) => format!("credential helper docker-credential-{h}"),
                None => path.display().to_string(),
            };
            Ok(Some(SourcedCredential { credential, source }))
        }
        Err(E::NoCredentialConfigured) => Ok(None),
        // docker treats "credentials not found" from a helper as anonymous access.
        Err(E::HelperFailure { stdout, .. }) if stdout.contains("credentials not found") => {
            Ok(None)
        }
        Err(E::HelperFailure { helper, .. }) => Err(Error::Credential {
            registry: registry.to_owned(),
            reason: format!("credential helper {helper} failed"),
        }),
        Err(e) => Err(Error::Credential {
            registry: registry.to_owned(),
            reason: format!("{e} ({})", path.display()),
        }),
    }
}

/// The credential helper config.json names for `key`, if any.
fn helper_for(config: &[u8], key: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(config).ok()?;
    let from_helpers = v
        .get("credHelpers")
        .and_then(|h| h.get(key))
        .and_then(|h| h.as_str());
    let entry = v.get("auths").and_then(|a| a.get(key));
    let has_auth = entry.is_some_and(|e| {
        ["auth", "identitytoken", "username"].iter().any(|f| {
            e.get(f)
                .is_some_and(|x| x.as_str().is_some_and(|s| !s.is_empty()))
        })
    });
    from_helpers
        .or_else(|| {
            (!has_auth)
                .then(|| v.get("credsStore").and_then(|s| s.as_str()))
                .flatten()
        })
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
        assert_eq!(
            parse_challenge(h),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".to_owned(),
                service: Some("registry.docker.io".to_owned()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge("bearer realm=http://x/t, service=a\\b"),
            Some(Challenge::Bearer {
                realm: "http://x/t".to_owned(),
                service: Some("a\\b".to_owned()),
            })
        );
        assert_eq!(
            parse_challenge("Bearer service=\"x\""),
            None,
            "realm is required"
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    #[test]
    fn names_the_helper_that_supplies_a_credential() {
        let cfg = br#"{"auths":{"a.io":{},"b.io":{"auth":"eDp5"}},"credsStore":"pass","credHelpers":{"c.io":"gcr"}}"#;
        assert_eq!(helper_for(cfg, "a.io").as_deref(), Some("pass"));
        assert_eq!(helper_for(cfg, "b.io"), None);
        assert_eq!(helper_for(cfg, "c.io").as_deref(), Some("gcr"));
        assert_eq!(helper_for(cfg, "d.io").as_deref(), Some("pass"));
    }

    #[test]
    fn token_lifetimes_are_bounded() {
        let t = |expires_in| {
            TokenResponse {
                token: Some("t".into()),
                access_token: None,
                expires_in,
            }
            .into_token()
        };
        let far = t(Some(u64::MAX)).map(|t| t.expires - Instant::now());
        assert!(
            far.is_some_and(|d| d <= Duration::from_secs(24 * 3600)),
            "{far:?}"
        );
        let default = t(None).map(|t| t.expires - Instant::now());
        assert!(
            default.is_some_and(|d| d > Duration::from_secs(50) && d <= Duration::from_secs(55))
        );
        assert!(
            t(Some(0)).is_some_and(|t| t.fresh()),
            "a tiny lifetime still allows one use"
        );
        let empty = TokenResponse {
            token: Some(String::new()),
            access_token: None,
            expires_in: None,
        };
        assert!(empty.into_token().is_none());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credential::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let s = SourcedCredential {
            credential: c,
            source: "/x/config.json".into(),
        };
        assert_eq!(s.describe(), "user \"u\" from /x/config.json");
    }

    #[test]
    fn reads_docker_config() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            lookup_credential(Some(dir.path()), "r.example"),
            Ok(None)
        ));
        let json = r#"{"auths":{"r.example":{"auth":"dTpwdw=="},"https://index.docker.io/v1/":{"identitytoken":"tok"}}}"#;
        fs_err::write(dir.path().join("config.json"), json).unwrap_or_else(|e| panic!("{e}"));
        let c = lookup_credential(Some(dir.path()), "r.example").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.map(|c| c.credential),
            Some(Credential::Basic {
                username: "u".into(),
                password: "pw".into()
            })
        );
        let c = lookup_credential(Some(dir.path()), "docker.io").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.map(|c| c.credential),
            Some(Credential::IdentityToken("tok".into()))
        );
        let c = lookup_credential(Some(dir.path()), "other.example");
        assert!(matches!(c, Ok(None)), "{c:?}");
    }
}
