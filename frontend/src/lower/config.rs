//! The config instructions (ENV, LABEL, WORKDIR, USER, EXPOSE, VOLUME, STOPSIGNAL, CMD,
//! ENTRYPOINT, HEALTHCHECK, SHELL, ONBUILD, MAINTAINER), which set the stage's image config and
//! step environment (WORKDIR also creates its directory), and the values they and the COPY flags
//! take: ports, signals, modes, owners.

use std::collections::HashMap;

use kiln_graph::{ChownOpt, FileAction, FileOp, Healthcheck, Op};

use super::dispatch::{Lowerer, StageState, expand_error};
use super::error::{LowerError, LowerErrorKind};
use super::history::{go_list, go_quoted_list, healthcheck_text};
use super::paths::workdir;
use super::run::with_shell;
use super::stage::Command;
use crate::ast::Word;
use crate::instructions::{self as ins, ShellOrExec};
use crate::shell::Env;

impl Lowerer<'_> {
    /// `ENV`: the image config's environment and the step environment.
    pub(super) fn env(&self, st: &mut StageState, kvs: &[ins::KeyValue]) -> Result<(), LowerError> {
        let pairs = self.expand_pairs(kvs, &st.env)?;
        let mut msg = String::from("ENV");
        for (k, v) in pairs {
            msg.push_str(&format!(" {k}={v}"));
            add_env(&mut st.config.config.env, &mut st.config_env, &k, &v);
            st.env.set(k, v);
        }
        Self::history(st, msg, false);
        Ok(())
    }

    /// `LABEL`.
    pub(super) fn label(
        &self,
        st: &mut StageState,
        kvs: &[ins::KeyValue],
    ) -> Result<(), LowerError> {
        let pairs = self.expand_pairs(kvs, &st.env)?;
        let mut msg = String::from("LABEL");
        for (k, v) in pairs {
            msg.push_str(&format!(" {k}={v}"));
            st.config.config.labels.insert(k, v);
        }
        Self::history(st, msg, false);
        Ok(())
    }

    /// `KEY=VALUE` pairs of ENV and LABEL, both sides expanded.
    fn expand_pairs(
        &self,
        kvs: &[ins::KeyValue],
        env: &Env,
    ) -> Result<Vec<(String, String)>, LowerError> {
        let mut pairs = Vec::with_capacity(kvs.len());
        for kv in kvs {
            pairs.push((self.expand(&kv.key, env)?, self.expand(&kv.value, env)?));
        }
        Ok(pairs)
    }

    /// `WORKDIR`: relative to the current one; any directory but `/` is created (a layer).
    pub(super) fn workdir(
        &mut self,
        st: &mut StageState,
        cmd: &Command,
        w: &Word,
    ) -> Result<(), LowerError> {
        let path = self.expand(w, &st.env)?;
        if path.is_empty() {
            return Err(LowerError::new(w.span, LowerErrorKind::EmptyWorkdir));
        }
        let current = if st.config.config.working_dir.is_empty() {
            "/"
        } else {
            &st.config.config.working_dir
        };
        let wd = workdir(current, &path);
        st.config.config.working_dir = wd.clone();
        st.cwd = wd.clone();
        let layer = wd != "/";
        if layer {
            let desc = self.display(&cmd.original, &st.env, cmd.span)?;
            let desc = st.steps.name(&desc, cmd.onbuild);
            let (base, inputs) = match &st.fs {
                Some(fs) => (Some(0), vec![fs.clone()]),
                None => (None, Vec::new()),
            };
            let op = Op::File(FileOp {
                base,
                actions: vec![FileAction::Mkdir {
                    path: wd.clone(),
                    mode: 0o755,
                    chown: chown(&st.config.config.user),
                }],
            });
            st.fs = Some(self.add(op, inputs, st, desc, cmd.span.line, false));
        }
        Self::history(st, format!("WORKDIR {wd}"), layer);
        Ok(())
    }

    /// `USER`: the image's user and the user of later steps.
    pub(super) fn user(&self, st: &mut StageState, u: &Word) -> Result<(), LowerError> {
        let user = self.expand(u, &st.env)?;
        st.config.config.user = user.clone();
        st.user = user.clone();
        Self::history(st, format!("USER {user}"), false);
        Ok(())
    }

    /// `EXPOSE`: each word expanded and split, each port spec checked.
    pub(super) fn expose(&self, st: &mut StageState, words: &[Word]) -> Result<(), LowerError> {
        let mut ports = Vec::new();
        for w in words {
            let (split, _) = self
                .lexer
                .expand_words(&w.value, &st.env)
                .map_err(|e| expand_error(w, e))?;
            self.spend(split.iter().map(String::len).sum(), w.span)?;
            for p in &split {
                for spec in parse_port_spec(p).map_err(|k| LowerError::new(w.span, k))? {
                    st.config
                        .config
                        .exposed_ports
                        .insert(spec, serde_json::Value::Object(serde_json::Map::new()));
                }
            }
            ports.extend(split);
        }
        Self::history(st, format!("EXPOSE {}", ports.join(" ")), false);
        Ok(())
    }

    /// `VOLUME`.
    pub(super) fn volume(&self, st: &mut StageState, words: &[Word]) -> Result<(), LowerError> {
        let mut vols = Vec::with_capacity(words.len());
        for w in words {
            let v = self.expand(w, &st.env)?;
            if v.is_empty() {
                return Err(LowerError::new(w.span, LowerErrorKind::EmptyVolume));
            }
            vols.push(v);
        }
        for v in &vols {
            st.config
                .config
                .volumes
                .insert(v.clone(), serde_json::Value::Object(serde_json::Map::new()));
        }
        Self::history(st, format!("VOLUME {}", go_list(&vols)), false);
        Ok(())
    }

    /// `STOPSIGNAL`: a signal Linux knows.
    pub(super) fn stop_signal(&self, st: &mut StageState, w: &Word) -> Result<(), LowerError> {
        let sig = self.expand(w, &st.env)?;
        if !valid_signal(&sig) {
            return Err(LowerError::new(
                w.span,
                LowerErrorKind::InvalidSignal { signal: sig },
            ));
        }
        st.config.config.stop_signal = sig.clone();
        Self::history(st, format!("STOPSIGNAL {sig}"), false);
        Ok(())
    }

    /// `CMD`.
    pub(super) fn cmd(st: &mut StageState, c: &ShellOrExec) {
        let args = match c {
            ShellOrExec::Exec(words) => words.iter().map(|w| w.value.clone()).collect(),
            ShellOrExec::Shell(w) => with_shell(&st.config, std::slice::from_ref(&w.value)),
        };
        Self::history(st, format!("CMD {}", go_quoted_list(&args)), false);
        st.config.config.cmd = Some(args);
        st.config.config.args_escaped = true;
        st.cmd_set = true;
    }

    /// `ENTRYPOINT`: clears a CMD inherited from the base (one set in this stage stays).
    pub(super) fn entrypoint(st: &mut StageState, c: &ShellOrExec) {
        let args: Option<Vec<String>> = match c {
            ShellOrExec::Exec(words) if words.is_empty() => None,
            ShellOrExec::Exec(words) => Some(words.iter().map(|w| w.value.clone()).collect()),
            ShellOrExec::Shell(w) => Some(with_shell(&st.config, std::slice::from_ref(&w.value))),
        };
        Self::history(
            st,
            format!(
                "ENTRYPOINT {}",
                go_quoted_list(args.as_deref().unwrap_or_default())
            ),
            false,
        );
        st.config.config.entrypoint = args;
        if !st.cmd_set {
            st.config.config.cmd = None;
        }
    }

    /// `HEALTHCHECK`: durations in nanoseconds.
    pub(super) fn healthcheck(st: &mut StageState, h: &ins::Healthcheck) {
        let hc = match h {
            ins::Healthcheck::None => Healthcheck {
                test: vec!["NONE".to_owned()],
                ..Default::default()
            },
            ins::Healthcheck::Cmd {
                cmd: c,
                interval,
                timeout,
                start_period,
                start_interval,
                retries,
            } => {
                let test = match c {
                    ShellOrExec::Exec(words) => std::iter::once("CMD".to_owned())
                        .chain(words.iter().map(|w| w.value.clone()))
                        .collect(),
                    ShellOrExec::Shell(w) => vec!["CMD-SHELL".to_owned(), w.value.clone()],
                };
                let ns = |d: &Option<std::time::Duration>| {
                    d.map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                };
                Healthcheck {
                    test,
                    interval: ns(interval),
                    timeout: ns(timeout),
                    start_period: ns(start_period),
                    start_interval: ns(start_interval),
                    retries: i64::from(retries.unwrap_or(0)),
                }
            }
        };
        Self::history(st, healthcheck_text(&hc), false);
        st.config.config.healthcheck = Some(hc);
    }

    /// `SHELL`: the shell of later shell-form RUN, CMD and ENTRYPOINT.
    pub(super) fn shell(st: &mut StageState, words: &[Word]) {
        let shell: Vec<String> = words.iter().map(|w| w.value.clone()).collect();
        Self::history(st, format!("SHELL {}", go_list(&shell)), false);
        st.config.config.shell = shell;
    }

    /// `ONBUILD`: the trigger goes into the image config, to run in stages built on this one.
    pub(super) fn onbuild(st: &mut StageState, cmd: &Command, original: &str) {
        let expr = cmd
            .onbuild_expr
            .clone()
            .unwrap_or_else(|| original.to_owned());
        st.config.config.on_build.push(expr);
    }

    /// `MAINTAINER`: the image's author.
    pub(super) fn maintainer(st: &mut StageState, w: &Word) {
        st.config.author = w.value.clone();
        Self::history(st, format!("MAINTAINER {}", w.value), false);
    }
}

/// Sets `k` in a `K=V` list, in place when present (BuildKit's `addEnv`).
fn add_env(env: &mut Vec<String>, index: &mut HashMap<String, usize>, k: &str, v: &str) {
    let entry = format!("{k}={v}");
    match index.get(k).and_then(|&i| env.get_mut(i)) {
        Some(e) => *e = entry,
        None => {
            index.insert(k.to_owned(), env.len());
            env.push(entry);
        }
    }
}

/// Docker's `nat.ParsePortSpec` reduced to the container side: `80` → `80/tcp`, `53/udp`,
/// ranges `8000-8002` expanded, an `ip:host:` prefix ignored.
fn parse_port_spec(raw: &str) -> Result<Vec<String>, LowerErrorKind> {
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
fn valid_signal(raw: &str) -> bool {
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

    #[test]
    fn env_list_updates_in_place() {
        let mut env = vec!["PATH=/bin".to_owned(), "A=1".to_owned()];
        let mut index = HashMap::from([("PATH".to_owned(), 0), ("A".to_owned(), 1)]);
        add_env(&mut env, &mut index, "PATH", "/usr/bin");
        add_env(&mut env, &mut index, "B", "2");
        add_env(&mut env, &mut index, "B", "3");
        assert_eq!(env, ["PATH=/usr/bin", "A=1", "B=3"]);
    }
}
