//! Values of config instructions and flags: ports, signals, modes, owners.

use kiln_graph::ChownOpt;

use super::error::LowerErrorKind;

/// Docker's `nat.ParsePortSpec` reduced to the container side: `80` → `80/tcp`, `53/udp`,
/// ranges `8000-8002` expanded, an `ip:host:` prefix ignored.
pub(crate) fn parse_port_spec(raw: &str) -> Result<Vec<String>, LowerErrorKind> {
    let container = raw.rsplit(':').next().unwrap_or_default();
    let (port, proto) = match container.split_once('/') {
        None => (container, "tcp"),
        Some((p, "")) => (p, "tcp"),
        Some((p, proto)) => (p, proto),
    };
    let bad_port = || LowerErrorKind::InvalidPort {
        port: port.to_owned(),
    };
    if port.is_empty() {
        return Err(bad_port());
    }
    let parse = |s: &str| s.parse::<u16>().map_err(|_| bad_port());
    let (start, end) = match port.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(port)?;
            (p, p)
        }
    };
    if end < start {
        return Err(bad_port());
    }
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(LowerErrorKind::InvalidProto { proto });
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

const SIGNALS: [&str; 35] = [
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "UNUSED", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
];

/// Whether `raw` is a signal `moby/sys/signal.ParseSignal` accepts on Linux: a non-zero number or
/// a name with or without `SIG` (`TERM`, `SIGKILL`, `RTMIN+3`).
pub(crate) fn valid_signal(raw: &str) -> bool {
    if let Ok(n) = raw.parse::<i64>() {
        return n != 0;
    }
    let upper = raw.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if SIGNALS.contains(&name) || name == "RTMIN" || name == "RTMAX" {
        return true;
    }
    let offset = |s: &str, max: u32| s.parse::<u32>().is_ok_and(|n| (1..=max).contains(&n));
    name.strip_prefix("RTMIN+").is_some_and(|n| offset(n, 15))
        || name.strip_prefix("RTMAX-").is_some_and(|n| offset(n, 14))
}

/// Checks `--chmod`: octal up to 07777, or a symbolic mode (`u+x,go-w`, `a=rX`).
pub(crate) fn check_chmod(value: &str) -> Result<Option<u32>, LowerErrorKind> {
    let bad = || LowerErrorKind::InvalidChmod {
        value: value.to_owned(),
    };
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let mode = u32::from_str_radix(value, 8).map_err(|_| bad())?;
        if mode > 0o7777 {
            return Err(bad());
        }
        return Ok(Some(mode));
    }
    for clause in value.split(',') {
        let rest = clause.trim_start_matches(['u', 'g', 'o', 'a']);
        if rest.is_empty() {
            return Err(bad());
        }
        let mut chars = rest.chars().peekable();
        while let Some(op) = chars.next() {
            if !matches!(op, '+' | '-' | '=') {
                return Err(bad());
            }
            while chars.peek().is_some_and(|c| "rwxXstugo".contains(*c)) {
                chars.next();
            }
        }
    }
    Ok(None)
}

/// `--chown=user[:group]` (empty: none).
pub(crate) fn chown(value: &str) -> Option<ChownOpt> {
    if value.is_empty() {
        return None;
    }
    Some(match value.split_once(':') {
        Some((user, group)) => ChownOpt {
            user: user.to_owned(),
            group: Some(group.to_owned()),
        },
        None => ChownOpt {
            user: value.to_owned(),
            group: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_port_spec("80").ok(), Some(vec!["80/tcp".to_owned()]));
        assert_eq!(
            parse_port_spec("53/UDP").ok(),
            Some(vec!["53/udp".to_owned()])
        );
        assert_eq!(
            parse_port_spec("8000-8002/tcp").ok(),
            Some(vec![
                "8000/tcp".into(),
                "8001/tcp".into(),
                "8002/tcp".into()
            ])
        );
        assert_eq!(
            parse_port_spec("127.0.0.1:8080:80").ok(),
            Some(vec!["80/tcp".to_owned()])
        );
        assert_eq!(
            parse_port_spec("http").map_err(|e| e.to_string()),
            Err("invalid containerPort: http".to_owned())
        );
        assert_eq!(
            parse_port_spec("80/xyz").map_err(|e| e.to_string()),
            Err("invalid proto: xyz".to_owned())
        );
        assert!(parse_port_spec("90-80").is_err());
        assert!(parse_port_spec("70000").is_err());
    }

    #[test]
    fn signals() {
        for ok in ["SIGTERM", "term", "9", "SIGRTMIN+3", "RTMAX-1", "-1"] {
            assert!(valid_signal(ok), "{ok}");
        }
        for bad in ["0", "SIGFOO", "RTMIN+16", ""] {
            assert!(!valid_signal(bad), "{bad}");
        }
    }

    #[test]
    fn chmods_and_chowns() {
        assert_eq!(check_chmod("755").ok(), Some(Some(0o755)));
        assert_eq!(check_chmod("u+x,go-w").ok(), Some(None));
        assert!(check_chmod("10000").is_err());
        assert!(check_chmod("789").is_err());
        assert!(check_chmod("u?x").is_err());
        assert_eq!(
            chown("app:staff").map(|c| c.group),
            Some(Some("staff".to_owned()))
        );
        assert_eq!(chown("1000").map(|c| c.group), Some(None));
        assert_eq!(chown(""), None);
    }
}
