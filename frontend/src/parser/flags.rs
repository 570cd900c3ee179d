//! Per-instruction flag validation, following BuildKit's Dockerfile reference.

use std::time::Duration;

use super::error::{ErrorKind, ParseError};
use crate::ast::{Flag, Keyword, Node};
use crate::diagnostic::suggest;

/// What a flag's value must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    /// `--name=value` (value required, may be empty), at most once.
    String,
    /// `--name` or `--name=true|false`, at most once.
    Bool,
    /// `--name=value`, may repeat.
    List,
    /// A Go duration (`30s`, `1m30s`), at most once.
    Duration,
    /// A non-negative integer, at most once.
    Int,
}

/// The flags `keyword` accepts, with their kinds (empty for instructions without flags).
pub fn allowed_flags(keyword: Keyword) -> &'static [(&'static str, FlagKind)] {
    use FlagKind::*;
    match keyword {
        Keyword::From => &[("platform", String)],
        Keyword::Run => &[("mount", List), ("network", String), ("security", String)],
        Keyword::Copy => &[
            ("from", String),
            ("chown", String),
            ("chmod", String),
            ("link", Bool),
            ("parents", Bool),
            ("exclude", List),
        ],
        Keyword::Add => &[
            ("chown", String),
            ("chmod", String),
            ("link", Bool),
            ("exclude", List),
            ("keep-git-dir", Bool),
            ("checksum", String),
            ("unpack", Bool),
        ],
        Keyword::Healthcheck => &[
            ("interval", Duration),
            ("timeout", Duration),
            ("start-period", Duration),
            ("start-interval", Duration),
            ("retries", Int),
        ],
        _ => &[],
    }
}

/// Check `node`'s flags (and its ONBUILD trigger's): each must be one the instruction takes,
/// with a value of the right shape, and single-valued flags at most once.
pub fn validate_flags(node: &Node) -> Result<(), ParseError> {
    let allowed = allowed_flags(node.keyword);
    for (i, flag) in node.flags.iter().enumerate() {
        let err = |kind| Err(ParseError::new(flag.span, kind));
        let Some(&(_, kind)) = allowed.iter().find(|(n, _)| *n == flag.name) else {
            let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
            return err(ErrorKind::UnknownFlag {
                instruction: node.keyword.as_str(),
                name: flag.name.clone(),
                // BuildKit suggests the bare name: "unknown flag: --mout (did you mean mount?)".
                suggestion: suggest(&flag.name, &names).map(str::to_owned),
            });
        };
        if kind != FlagKind::List && node.flags[..i].iter().any(|f| f.name == flag.name) {
            return err(ErrorKind::DuplicateFlag {
                name: flag.name.clone(),
            });
        }
        check_value(flag, kind)?;
    }
    if let Some(trigger) = &node.trigger {
        validate_flags(trigger)?;
    }
    Ok(())
}

fn check_value(flag: &Flag, kind: FlagKind) -> Result<(), ParseError> {
    let err = |kind| Err(ParseError::new(flag.span, kind));
    let name = || flag.name.clone();
    match (kind, flag.value.as_deref()) {
        (FlagKind::Bool, None) => Ok(()),
        (FlagKind::Bool, Some(v)) => match parse_go_bool(v) {
            Some(_) => Ok(()),
            None => err(ErrorKind::FlagNotBool {
                name: name(),
                value: v.to_owned(),
            }),
        },
        (_, None) => err(ErrorKind::FlagMissingValue { name: name() }),
        (FlagKind::String | FlagKind::List, Some(_)) => Ok(()),
        (FlagKind::Duration, Some(v)) => match parse_go_duration(v) {
            Some(_) => Ok(()),
            None => err(ErrorKind::FlagInvalidValue {
                name: name(),
                value: v.to_owned(),
                reason: "expected a duration such as 30s or 1m30s",
            }),
        },
        (FlagKind::Int, Some(v)) => match v.parse::<u32>() {
            Ok(_) => Ok(()),
            Err(_) => err(ErrorKind::FlagInvalidValue {
                name: name(),
                value: v.to_owned(),
                reason: "expected a non-negative integer",
            }),
        },
    }
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Parse a non-negative Go duration (`time.ParseDuration`): `0`, or a sequence of decimal
/// numbers with units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h` (`1h2m3.5s`). An explicit `+` is
/// accepted; negative durations and overflow give `None`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, r) = rest.split_at(int_len);
        let (frac, r) = match r.strip_prefix('.') {
            Some(r) => {
                let n = r.bytes().take_while(u8::is_ascii_digit).count();
                r.split_at(n)
            }
            None => ("", r),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let unit_len = r
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(r.len(), |(i, _)| i);
        let (unit, r) = r.split_at(unit_len);
        let nanos_per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut part = whole.checked_mul(nanos_per)?;
        let mut scale = nanos_per;
        for d in frac.bytes().take(30) {
            scale /= 10;
            part += u128::from(d - b'0') * scale;
        }
        total = total.checked_add(part)?;
        if total > i64::MAX as u128 {
            return None;
        }
        rest = r;
    }
    let secs = u64::try_from(total / 1_000_000_000).ok()?;
    Some(Duration::new(
        secs,
        u32::try_from(total % 1_000_000_000).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration(".5s"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("3µs"), Some(Duration::from_micros(3)));
        for bad in [
            "",
            "5",
            "s",
            "-5s",
            "5x",
            "1e3s",
            ".s",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }
}
