//! Platforms (`linux/amd64`, `linux/arm/v7`): the host's, parsing, and how an index entry is
//! matched against one.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An OS/architecture pair with an optional CPU variant, in OCI/GOARCH vocabulary.
///
/// Field order is part of the build graph's digests (ops embed platforms): keep it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// `linux`, `windows`, …
    pub os: String,
    /// `amd64`, `arm64`, `arm`, `386`, …
    pub architecture: String,
    /// `v7`, `v8`, … when the architecture has variants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A string that is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch[/variant]")]
pub struct PlatformError(pub String);

impl Platform {
    /// The platform this binary runs on, normalized as containerd does: `arm64` has no
    /// variant (`v8` is implied), 32-bit `arm` is `v7`.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// Whether an index entry for `os`/`architecture`/`variant` runs here.
    ///
    /// A platform without a variant accepts any variant; `arm64` treats a missing variant as
    /// `v8`.
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        if self.os != os || self.architecture != architecture {
            return false;
        }
        let Some(want) = self.variant.as_deref() else {
            return true;
        };
        let default = (architecture == "arm64").then_some("v8");
        variant.or(default) == Some(want)
    }

    /// Whether `other` names the same OS and architecture (variants aside).
    pub fn same_os_arch(&self, other: &Platform) -> bool {
        self.os == other.os && self.architecture == other.architecture
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    /// `os/arch[/variant]`, as in `--platform linux/arm/v7`; lowercased.
    fn from_str(s: &str) -> Result<Self, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let (os, architecture, variant) = match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => (os, arch, None),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => {
                (os, arch, Some(variant.to_ascii_lowercase()))
            }
            _ => return Err(PlatformError(s.to_owned())),
        };
        Ok(Platform {
            os: os.to_ascii_lowercase(),
            architecture: architecture.to_ascii_lowercase(),
            variant,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_and_displays() {
        assert_eq!(p("linux/arm/v7").variant.as_deref(), Some("v7"));
        assert_eq!(p("linux/arm/v7").to_string(), "linux/arm/v7");
        assert_eq!(p("Linux/AMD64").to_string(), "linux/amd64");
        for bad in ["linux", "linux//v7", "a/b/c/d", "", "linux/amd64/"] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
    }

    #[test]
    fn host_is_normalized() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(host.to_string(), "linux/amd64");
        }
        if cfg!(target_arch = "aarch64") {
            assert_eq!(host.to_string(), "linux/arm64");
        }
    }

    #[test]
    fn matching_rules() {
        let amd64 = p("linux/amd64");
        assert!(amd64.matches("linux", "amd64", None));
        assert!(amd64.matches("linux", "amd64", Some("v3")));
        assert!(!amd64.matches("linux", "arm64", None));
        assert!(!amd64.matches("windows", "amd64", None));
        let v8 = p("linux/arm64/v8");
        assert!(v8.matches("linux", "arm64", None));
        assert!(v8.matches("linux", "arm64", Some("v8")));
        let v7 = p("linux/arm/v7");
        assert!(!v7.matches("linux", "arm", Some("v6")));
        assert!(!v7.matches("linux", "arm", None));
    }
}
