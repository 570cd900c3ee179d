//! Platforms (`linux/amd64`, `linux/arm/v7`) and how an index entry is matched against one.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// An OS/architecture pair with an optional CPU variant, in OCI/GOARCH vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// `linux`, `windows`, …
    pub os: String,
    /// `amd64`, `arm64`, `arm`, `386`, …
    pub architecture: String,
    /// `v7`, `v8`, … when the architecture has variants.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this process runs on.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// Whether an index entry for `os`/`architecture`/`variant` runs here.
    ///
    /// A platform without a variant accepts any variant; `arm64` treats a missing variant as `v8`.
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
    type Err = Error;

    /// `os/arch[/variant]`, as in `--platform linux/arm/v7`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_ascii_lowercase(),
                architecture: arch.to_ascii_lowercase(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Platform {
                os: os.to_ascii_lowercase(),
                architecture: arch.to_ascii_lowercase(),
                variant: Some(variant.to_ascii_lowercase()),
            }),
            _ => Err(Error::InvalidPlatform(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        let p: Platform = "linux/arm/v7".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.variant.as_deref(), Some("v7"));
        assert_eq!(p.to_string(), "linux/arm/v7");
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//v7".parse::<Platform>().is_err());
        assert!("a/b/c/d".parse::<Platform>().is_err());
    }

    #[test]
    fn host_is_linux_amd64_here() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(host.architecture, "amd64");
        }
    }

    #[test]
    fn matching_rules() {
        let amd64 = Platform::from_str("linux/amd64").unwrap_or_else(|e| panic!("{e}"));
        assert!(amd64.matches("linux", "amd64", None));
        assert!(amd64.matches("linux", "amd64", Some("v3")));
        assert!(!amd64.matches("linux", "arm64", None));
        assert!(!amd64.matches("windows", "amd64", None));
        let v8 = Platform::from_str("linux/arm64/v8").unwrap_or_else(|e| panic!("{e}"));
        assert!(v8.matches("linux", "arm64", None));
        assert!(v8.matches("linux", "arm64", Some("v8")));
        let v7 = Platform::from_str("linux/arm/v7").unwrap_or_else(|e| panic!("{e}"));
        assert!(!v7.matches("linux", "arm", Some("v6")));
        assert!(!v7.matches("linux", "arm", None));
    }
}
