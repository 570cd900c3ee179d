//! `RUN --mount=...` values: BuildKit's CSV syntax, option by option, with its checks.

use kiln_graph::CacheSharing;

use super::error::MountError;
use crate::diagnostic::suggest;

/// The kinds of `RUN --mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "bind" => Self::Bind,
            "cache" => Self::Cache,
            "tmpfs" => Self::Tmpfs,
            "secret" => Self::Secret,
            "ssh" => Self::Ssh,
            _ => return None,
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Bind => "bind",
            Self::Cache => "cache",
            Self::Tmpfs => "tmpfs",
            Self::Secret => "secret",
            Self::Ssh => "ssh",
        }
    }
}

/// One parsed `--mount` value, values expanded, before it is tied to graph inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountSpec {
    pub kind: MountType,
    pub from: Option<String>,
    pub source: String,
    pub target: String,
    pub readonly: bool,
    pub id: String,
    pub sharing: Option<CacheSharing>,
    pub required: bool,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub env: Option<String>,
}

const ALL_KEYS: [&str; 18] = [
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "ro",
    "rw",
    "readwrite",
    "size",
    "env",
];

/// Splits one CSV record as Go's `encoding/csv` does (quoted fields, `""` for a quote).
pub(crate) fn csv_fields(s: &str) -> Result<Vec<String>, MountError> {
    let mut fields = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(MountError::Csv {
                            reason: "extraneous or missing \" in quoted-field",
                        });
                    }
                    Some('"') => {
                        if chars.peek() == Some(&'"') {
                            chars.next();
                            field.push('"');
                        } else {
                            break;
                        }
                    }
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => {
                    return Err(MountError::Csv {
                        reason: "extraneous or missing \" in quoted-field",
                    });
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => {
                        fields.push(field);
                        break;
                    }
                    Some('"') => {
                        return Err(MountError::Csv {
                            reason: "bare \" in non-quoted-field",
                        });
                    }
                    Some(c) => field.push(c),
                }
            }
        }
    }
}

/// The `from=` of a mount, read before any expansion (it names a stage or an image and decides
/// the stage graph). Tmpfs mounts have no source; a cache without `from` starts empty.
pub(crate) fn mount_from(value: &str) -> Result<Option<String>, MountError> {
    let mut from = None;
    let mut kind = MountType::Bind;
    for field in csv_fields(value)? {
        let Some((key, v)) = field.split_once('=') else {
            continue;
        };
        match key.to_ascii_lowercase().as_str() {
            "from" => from = Some(v.to_owned()),
            "type" => {
                if let Some(t) = MountType::parse(v) {
                    kind = t;
                }
            }
            _ => {}
        }
    }
    if kind == MountType::Tmpfs {
        return Ok(None);
    }
    Ok(from.filter(|f| !f.is_empty()))
}

fn parse_bool(key: &str, value: &str) -> Result<bool, MountError> {
    crate::parser::parse_go_bool(value).ok_or_else(|| MountError::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
    })
}

fn parse_u32(key: &str, value: &str, radix: u32) -> Result<u32, MountError> {
    u32::from_str_radix(value, radix).map_err(|_| MountError::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
    })
}

/// `64m`, `1g`, `512`, `1.5GiB` as docker's `units.RAMInBytes` reads them (binary multipliers).
pub(crate) fn ram_in_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return None;
    }
    let number: f64 = num.parse().ok()?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return None,
    };
    let bytes = number * mult;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return None;
    }
    Some(bytes as u64)
}

/// Parses one `--mount` value; `expand` expands each value (`$VAR`s) as the stage sees them.
pub(crate) fn parse_mount<E>(value: &str, mut expand: E) -> Result<MountSpec, super::LowerErrorKind>
where
    E: FnMut(&str) -> Result<String, super::LowerErrorKind>,
{
    let mut m = MountSpec {
        kind: MountType::Bind,
        from: None,
        source: String::new(),
        target: String::new(),
        readonly: false,
        id: String::new(),
        sharing: None,
        required: false,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        env: None,
    };
    let mut ro_auto = true;
    let err = super::LowerErrorKind::Mount;
    for field in csv_fields(value).map_err(err)? {
        let Some((key, raw)) = field.split_once('=') else {
            match field.to_ascii_lowercase().as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    ro_auto = false;
                }
                "required" => {
                    if matches!(m.kind, MountType::Secret | MountType::Ssh) {
                        m.required = true;
                    } else {
                        return Err(err(MountError::KeyForType {
                            key: "required".into(),
                            kind: m.kind.as_str().into(),
                        }));
                    }
                }
                _ => {
                    return Err(err(MountError::NotKeyValue {
                        field: field.clone(),
                    }));
                }
            }
            continue;
        };
        let key = key.to_ascii_lowercase();
        if key == "from" {
            if raw.contains('$') {
                return Err(super::LowerErrorKind::MountFromVariable);
            }
            m.from = Some(raw.to_owned());
            continue;
        }
        let value = expand(raw)?;
        match key.as_str() {
            "type" => {
                m.kind = MountType::parse(&value).ok_or_else(|| {
                    err(MountError::UnsupportedType {
                        value: value.clone(),
                        suggestion: suggest(&value, &["bind", "cache", "tmpfs", "secret", "ssh"])
                            .map(str::to_owned),
                    })
                })?;
            }
            "source" | "src" => m.source = value,
            "target" | "dst" | "destination" => m.target = value,
            "readonly" | "ro" => {
                m.readonly = parse_bool(&key, &value).map_err(err)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.readonly = !parse_bool(&key, &value).map_err(err)?;
                ro_auto = false;
            }
            "required" => {
                if !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                    return Err(err(MountError::KeyForType {
                        key,
                        kind: m.kind.as_str().into(),
                    }));
                }
                m.required = parse_bool(&key, &value).map_err(err)?;
            }
            "size" => {
                if m.kind != MountType::Tmpfs {
                    return Err(err(MountError::KeyForType {
                        key,
                        kind: m.kind.as_str().into(),
                    }));
                }
                m.size = Some(ram_in_bytes(&value).ok_or_else(|| {
                    err(MountError::InvalidValue {
                        key,
                        value: value.clone(),
                    })
                })?);
            }
            "id" => m.id = value,
            "sharing" => {
                m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => {
                        let suggestion =
                            suggest(&value, &["shared", "private", "locked"]).map(str::to_owned);
                        return Err(err(MountError::UnsupportedSharing { value, suggestion }));
                    }
                });
            }
            "mode" => m.mode = Some(parse_u32(&key, &value, 8).map_err(err)?),
            "uid" => m.uid = Some(parse_u32(&key, &value, 10).map_err(err)?),
            "gid" => m.gid = Some(parse_u32(&key, &value, 10).map_err(err)?),
            "env" => {
                if m.kind != MountType::Secret {
                    return Err(err(MountError::KeyForType {
                        key,
                        kind: m.kind.as_str().into(),
                    }));
                }
                m.env = Some(value);
            }
            _ => {
                let suggestion = suggest(&key, &ALL_KEYS).map(str::to_owned);
                return Err(err(MountError::UnknownKey {
                    key,
                    field: field.clone(),
                    suggestion,
                }));
            }
        }
    }
    validate(&mut m, ro_auto).map_err(err)?;
    Ok(m)
}

fn validate(m: &mut MountSpec, ro_auto: bool) -> Result<(), MountError> {
    let file_info_allowed = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info_allowed {
        for (key, set) in [
            ("mode", m.mode.is_some()),
            ("uid", m.uid.is_some()),
            ("gid", m.gid.is_some()),
        ] {
            if set {
                return Err(MountError::FileInfoNotAllowed {
                    key,
                    kind: m.kind.as_str().into(),
                });
            }
        }
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.kind == MountType::Secret {
        if m.from.is_some() {
            return Err(MountError::SecretFrom);
        }
        if m.sharing.is_some() {
            return Err(MountError::SecretSharing);
        }
        if m.source.is_empty() && m.target.is_empty() && m.id.is_empty() && m.env.is_none() {
            return Err(MountError::SecretTarget);
        }
        if !m.source.is_empty() && !m.id.is_empty() {
            return Err(MountError::SecretSourceAndId);
        }
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(MountError::SharingNotCache {
            kind: m.kind.as_str().into(),
        });
    }
    if m.kind == MountType::Ssh && !m.source.is_empty() {
        return Err(MountError::SshSource);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<MountSpec, String> {
        parse_mount(s, |v| Ok(v.replace("$X", "x"))).map_err(|e| e.to_string())
    }

    #[test]
    fn csv_quotes_and_commas() {
        assert_eq!(
            csv_fields("a=1,\"b=2,3\",c").ok(),
            Some(vec!["a=1".into(), "b=2,3".into(), "c".into()])
        );
        assert_eq!(csv_fields("\"a\"\"b\"").ok(), Some(vec!["a\"b".into()]));
        assert!(csv_fields("a\"b").is_err());
        assert!(csv_fields("\"ab").is_err());
    }

    #[test]
    fn defaults_and_expansion() {
        let Ok(m) = parse("type=cache,target=/root/$X") else {
            panic!()
        };
        assert_eq!(
            (m.kind, m.target.as_str(), m.readonly),
            (MountType::Cache, "/root/x", false)
        );
        let Ok(m) = parse("target=/src") else {
            panic!()
        };
        assert_eq!((m.kind, m.readonly), (MountType::Bind, true));
        let Ok(m) = parse("type=bind,target=/src,rw") else {
            panic!()
        };
        assert!(!m.readonly);
        let Ok(m) = parse("type=tmpfs,target=/t,size=64m") else {
            panic!()
        };
        assert_eq!(m.size, Some(64 << 20));
        let Ok(m) = parse("type=secret,id=tok,required,mode=0440,uid=1") else {
            panic!()
        };
        assert_eq!((m.required, m.mode, m.uid), (true, Some(0o440), Some(1)));
    }

    #[test]
    fn errors() {
        for (src, msg) in [
            ("type=nfs,target=/x", "unsupported mount type \"nfs\""),
            (
                "type=bind,target=/x,mode=0700",
                "mode not allowed for \"bind\" type mounts",
            ),
            (
                "type=bind,target=/x,required",
                "unexpected key 'required' for mount type 'bind'",
            ),
            (
                "type=cache,target=/x,sharing=wide",
                "unsupported sharing value \"wide\"",
            ),
            (
                "type=bind,target=/x,sharing=locked",
                "invalid cache sharing set for bind mount",
            ),
            (
                "type=cache,target=/x,nosuch=1",
                "unexpected key 'nosuch' in 'nosuch=1'",
            ),
            ("type=cache,target=/x,mode=9", "invalid value for mode: 9"),
            (
                "type=secret",
                "invalid secret mount. one of source, target required",
            ),
            (
                "type=secret,id=a,from=b",
                "secret mount should not have a from",
            ),
            (
                "type=bind,from=$X,target=/a",
                "'from' doesn't support variable expansion, define alias stage instead",
            ),
            ("type=ssh,source=a", "ssh does not support source"),
            ("target", "invalid field 'target' must be a key=value pair"),
            (
                "type=tmpfs,target=/t,size=lots",
                "invalid value for size: lots",
            ),
        ] {
            assert_eq!(parse(src).err().as_deref(), Some(msg), "{src}");
        }
    }

    #[test]
    fn from_is_read_raw() {
        assert_eq!(
            mount_from("type=bind,from=build,target=/x").ok(),
            Some(Some("build".into()))
        );
        assert_eq!(
            mount_from("type=tmpfs,from=build,target=/x").ok(),
            Some(None)
        );
        assert_eq!(mount_from("type=cache,target=/x").ok(), Some(None));
    }

    #[test]
    fn ram_units() {
        assert_eq!(ram_in_bytes("512"), Some(512));
        assert_eq!(ram_in_bytes("1k"), Some(1024));
        assert_eq!(ram_in_bytes("1.5GiB"), Some(1536 << 20));
        assert_eq!(ram_in_bytes("x"), None);
        assert_eq!(ram_in_bytes("1q"), None);
    }
}
