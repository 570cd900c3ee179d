//! Detached containers and their lifecycle: run -d, ps, logs, stop, kill, rm, exec, inspect.

use crate::cli::LogsArgs;
use crate::commands::Global;
use anyhow::{Context, Result};
use kiln_solver::Host;
use kiln_solver::containers::{Container, ContainerConfig, Containers, ExecOptions};
use kiln_solver::images::ImageRecord;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

/// `kiln run -d`: the rootfs overlay is mounted in the container's own directory and outlives
/// this process; a shim supervises the container and records its exit.
pub fn run_detached(
    host: &Host,
    rec: &ImageRecord,
    container: ContainerConfig,
) -> Result<ExitCode> {
    let cs = host.containers()?;
    let c = cs.create(container)?;
    host.start_detached(rec, &c)?;
    println!("{}", c.id());
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn get(cs: &Containers, name: &str) -> Result<Container> {
    cs.get(name)
        .with_context(|| format!("no such container: {name}"))
}

/// `kiln logs`: the container's stdout to ours and its stderr to ours.
pub fn logs(g: &Global, args: &LogsArgs) -> Result<()> {
    let tail = match args.tail.as_str() {
        "all" | "-1" => None,
        n => Some(n.parse::<usize>().map_err(|_| {
            anyhow::anyhow!("invalid value for --tail: {n:?} (a number of lines or \"all\")")
        })?),
    };
    let opts = kiln_solver::containers::LogOptions {
        follow: args.follow,
        tail,
        since: args
            .since
            .as_deref()
            .map(|t| log_time(t, "--since"))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|t| log_time(t, "--until"))
            .transpose()?,
        timestamps: args.timestamps,
    };
    let cs = g.host()?.containers()?;
    let c = get(&cs, &args.container)?;
    let mut err = std::io::stderr().lock();
    c.logs_to(&opts, &mut std::io::stdout().lock(), Some(&mut err))?;
    Ok(())
}

/// docker's `--since`/`--until`: an RFC 3339 time (a date alone, or without a zone, is UTC),
/// Unix seconds (with an optional fraction), or a duration before now (`10m`, `1h30m`).
fn log_time(text: &str, flag: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, f) {
            return Ok(Utc.from_utc_datetime(&t));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default()));
    }
    if let Ok(secs) = text.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        let nanos = (secs.fract() * 1e9) as u32;
        if let Some(t) = DateTime::from_timestamp(secs.trunc() as i64, nanos) {
            return Ok(t);
        }
    }
    if let Some(d) = kiln_solver::prune::parse_duration(text)
        && let Ok(d) = chrono::Duration::from_std(d)
    {
        return Ok(Utc::now() - d);
    }
    anyhow::bail!(
        "invalid value for {flag}: {text:?} (a timestamp like 2026-12-03T10:00:00Z, Unix seconds, or a duration like 10m)"
    )
}

/// Runs `op` on each of `names` in turn, as docker does: each name is printed once done, a
/// failure is printed and the rest still go; the status is 1 if any failed.
pub(crate) fn each(names: &[String], mut op: impl FnMut(&str) -> Result<()>) -> Result<()> {
    each_line(names, |n| op(n).map(|()| n.to_owned()))
}

/// [`each`], printing the line `op` returns for each name instead of the name.
pub(crate) fn each_line(
    names: &[String],
    mut op: impl FnMut(&str) -> Result<String>,
) -> Result<()> {
    let mut failed = false;
    for n in names {
        match op(n) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                failed = true;
                eprintln!("error: {}", crate::one_line(&e));
            }
        }
    }
    if failed {
        return Err(crate::Reported(1).into());
    }
    Ok(())
}

/// `kiln stop`.
pub fn stop(g: &Global, names: &[String], time: u64) -> Result<()> {
    let cs = g.host()?.containers()?;
    each(names, |n| {
        get(&cs, n)?.stop(Duration::from_secs(time))?;
        Ok(())
    })
}

/// `kiln kill`.
pub fn kill(g: &Global, names: &[String], signal: &str) -> Result<()> {
    let cs = g.host()?.containers()?;
    each(names, |n| Ok(get(&cs, n)?.kill(signal)?))
}

/// `kiln rm`.
pub fn rm(g: &Global, names: &[String], force: bool) -> Result<()> {
    let cs = g.host()?.containers()?;
    each(names, |n| Ok(get(&cs, n)?.remove(force)?))
}

/// `kiln inspect NAME` for a container, if one has that name or ID.
pub fn inspect(host: &Host, name: &str) -> Option<serde_json::Value> {
    let cs = host.containers().ok()?;
    cs.get(name).ok()?.inspect().ok()
}

/// `kiln exec`: the container's process settings, with `-e`, `-w` and `-u` applied.
pub fn exec(g: &Global, name: &str, command: &[String], opts: ExecOptions) -> Result<ExitCode> {
    if opts.tty && !std::io::stdin().is_terminal() {
        anyhow::bail!("the input device is not a TTY");
    }
    let host = g.host()?;
    let c = get(&host.containers()?, name)?;
    let status = host.exec(&c, command, &opts)?;
    Ok(ExitCode::from(
        u8::try_from(status.code.clamp(0, 255)).unwrap_or(1),
    ))
}
