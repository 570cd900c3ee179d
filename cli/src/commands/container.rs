//! Detached containers and their lifecycle: run -d, ps, logs, stop, kill, rm, exec, inspect.

use crate::cli::RunArgs;
use crate::commands::Global;
use anyhow::{Context, Result};
use kiln_solver::Host;
use kiln_solver::containers::{Container, ContainerConfig, Containers, ExecOptions, ProcessPlan};
use kiln_solver::images::ImageRecord;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

/// `kiln run -d`: the rootfs overlay is mounted in the container's own directory and outlives
/// this process; a shim supervises the container and records its exit.
pub fn run_detached(
    host: &Host,
    rec: &ImageRecord,
    args: &RunArgs,
    plan: ProcessPlan,
) -> Result<ExitCode> {
    let cs = host.containers()?;
    let c = cs.create(ContainerConfig {
        name: args.name.clone(),
        image: args.image.clone(),
        plan,
        auto_remove: args.rm,
        sig_proxy: args.sig_proxy,
    })?;
    host.start_detached(rec, &c)?;
    println!("{}", c.id());
    Ok(ExitCode::SUCCESS)
}

fn get(cs: &Containers, name: &str) -> Result<Container> {
    cs.get(name)
        .with_context(|| format!("no such container: {name}"))
}

/// `kiln logs`.
pub fn logs(g: &Global, name: &str, follow: bool) -> Result<()> {
    let cs = g.host()?.containers()?;
    let c = get(&cs, name)?;
    c.logs(follow, &mut std::io::stdout().lock())?;
    Ok(())
}

/// Runs `op` on each of `names` in turn, as docker does: a failure is printed and the rest
/// still go; the status is 1 if any failed.
pub(crate) fn each(names: &[String], mut op: impl FnMut(&str) -> Result<()>) -> Result<()> {
    let mut failed = false;
    for n in names {
        match op(n) {
            Ok(()) => println!("{n}"),
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
