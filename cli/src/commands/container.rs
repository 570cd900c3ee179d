//! Detached containers and their lifecycle: run -d, ps, logs, stop, kill, rm, exec, inspect.

use crate::cli::RunArgs;
use crate::commands::Global;
use anyhow::{Context, Result};
use kiln_solver::cache::{self, ImageRecord, Store};
use kiln_solver::executor::{
    Container, ContainerConfig, Containers, ExecOptions, Output, ProcessPlan,
};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

/// The container store under the store root.
pub fn containers(g: &Global, store: &Store) -> Result<Containers> {
    let mut c = Containers::open(store.root().join("containers"))?;
    if let Ok(rt) = g.runtime() {
        c = c.with_runtime(rt);
    }
    // What a killed `kiln run` or shim left running is stopped and recorded as exited.
    if let Err(e) = c.reap_orphans() {
        tracing::warn!(error = %e, "reaping orphaned containers");
    }
    Ok(c)
}

/// `kiln run -d`: the rootfs overlay is mounted in the container's own directory and outlives
/// this process; a shim supervises the container and records its exit.
pub fn run_detached(
    g: &Global,
    store: &Store,
    rec: &ImageRecord,
    args: &RunArgs,
    plan: ProcessPlan,
) -> Result<ExitCode> {
    let cs = containers(g, store)?;
    let c = cs.create(ContainerConfig {
        name: args.name.clone(),
        image: args.image.clone(),
        plan,
    })?;
    let snapshot = store.prepare_snapshot(&rec.layers)?;
    let mount = cache::mount_overlay(
        &snapshot.lowerdirs,
        Some((&c.upper_dir(), &c.work_dir())),
        &c.rootfs_dir(),
    );
    let mount = match mount {
        Ok(m) => m,
        Err(e) => {
            let _ = c.remove(true);
            return Err(e.into());
        }
    };
    mount.leak();
    if let Err(e) = c.start_detached() {
        let _ = c.remove(true);
        return Err(e.into());
    }
    println!("{}", c.id());
    Ok(ExitCode::SUCCESS)
}

fn get(cs: &Containers, name: &str) -> Result<Container> {
    cs.get(name)
        .with_context(|| format!("no such container: {name}"))
}

/// `kiln ps`.
pub fn ps(g: &Global, all: bool, quiet: bool) -> Result<()> {
    let store = g.store()?;
    let cs = containers(g, &store)?;
    let mut out = std::io::stdout().lock();
    if !quiet {
        writeln!(
            out,
            "{:<14} {:<28} {:<32} {:<12} NAMES",
            "CONTAINER ID", "IMAGE", "COMMAND", "STATUS"
        )?;
    }
    for c in cs.list(all)? {
        if quiet {
            writeln!(out, "{}", &c.id()[..12])?;
            continue;
        }
        let st = c.state()?;
        let status = match st.exit_code {
            Some(code) if st.status.as_str() == "exited" => format!("exited ({code})"),
            _ => st.status.as_str().to_string(),
        };
        let mut cmd = c.config().plan.args.join(" ");
        if cmd.chars().count() > 30 {
            cmd = cmd.chars().take(29).collect::<String>() + "…";
        }
        writeln!(
            out,
            "{:<14} {:<28} {:<32} {:<12} {}",
            &c.id()[..12],
            c.config().image,
            format!("\"{cmd}\""),
            status,
            c.name()
        )?;
    }
    Ok(())
}

/// `kiln logs`.
pub fn logs(g: &Global, name: &str, follow: bool) -> Result<()> {
    let store = g.store()?;
    let cs = containers(g, &store)?;
    let c = get(&cs, name)?;
    c.logs(follow, &mut std::io::stdout().lock())?;
    Ok(())
}

/// `kiln stop`.
pub fn stop(g: &Global, names: &[String], time: u64) -> Result<()> {
    let store = g.store()?;
    let cs = containers(g, &store)?;
    for n in names {
        get(&cs, n)?.stop(Duration::from_secs(time))?;
        println!("{n}");
    }
    Ok(())
}

/// `kiln kill`.
pub fn kill(g: &Global, names: &[String], signal: &str) -> Result<()> {
    let store = g.store()?;
    let cs = containers(g, &store)?;
    for n in names {
        get(&cs, n)?.kill(signal)?;
        println!("{n}");
    }
    Ok(())
}

/// `kiln rm`.
pub fn rm(g: &Global, names: &[String], force: bool) -> Result<()> {
    let store = g.store()?;
    let cs = containers(g, &store)?;
    for n in names {
        get(&cs, n)?.remove(force)?;
        println!("{n}");
    }
    Ok(())
}

/// `kiln inspect NAME` for a container, if one has that name or ID.
pub fn inspect(g: &Global, store: &Store, name: &str) -> Option<serde_json::Value> {
    let cs = containers(g, store).ok()?;
    cs.get(name).ok()?.inspect().ok()
}

/// `kiln exec`: the container's process settings, with `-e`, `-w` and `-u` applied.
pub fn exec(g: &Global, name: &str, command: &[String], opts: ExecOptions) -> Result<ExitCode> {
    if opts.tty && !std::io::stdin().is_terminal() {
        anyhow::bail!("the input device is not a TTY");
    }
    let store = g.store()?;
    let cs = containers(g, &store)?;
    let c = get(&cs, name)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let status = rt.block_on(c.exec_with(command, &opts, Output::Inherit))?;
    Ok(ExitCode::from(
        u8::try_from(status.code.clamp(0, 255)).unwrap_or(1),
    ))
}
