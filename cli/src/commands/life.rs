//! docker's container lifecycle beyond run/stop/rm: `create`, `start`, `restart`, `wait`,
//! `attach`, `rename`, `pause`/`unpause`, with `--restart` and `--init` for run and create.

use crate::cli::{AttachArgs, RenameArgs, RestartArgs, RunArgs, StartArgs};
use crate::commands::Global;
use crate::commands::container::{each, each_line, get};
use anyhow::{Context, Result, bail};
use kiln_solver::Host;
use kiln_solver::containers::{
    Container, ContainerConfig, INIT_PATH, MountPlan, ProcessPlan, RestartName, RestartPolicy,
};
use kiln_solver::graph::ImageConfig;
use kiln_solver::images::ImageRecord;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Parses `--restart` with docker's rules and messages.
pub fn parse_restart(policy: &str) -> Result<RestartPolicy> {
    let (name, count) = match policy.split_once(':') {
        Some((n, c)) => (n, Some(c)),
        None => (policy, None),
    };
    if count.is_some() && name.is_empty() {
        bail!("invalid restart policy format: no policy provided before colon");
    }
    let max: i64 = match count {
        None | Some("") => 0,
        Some(c) => c.parse().map_err(|_| {
            anyhow::anyhow!("invalid restart policy format: maximum retry count must be an integer")
        })?,
    };
    let name = match name {
        "" | "no" => RestartName::No,
        "always" => RestartName::Always,
        "on-failure" => RestartName::OnFailure,
        "unless-stopped" => RestartName::UnlessStopped,
        other => bail!(
            "invalid restart policy: unknown policy '{other}'; use one of 'no', 'always', \
             'on-failure', or 'unless-stopped'"
        ),
    };
    if max < 0 {
        bail!("invalid restart policy: maximum retry count cannot be negative");
    }
    if max != 0 && name != RestartName::OnFailure {
        bail!("invalid restart policy: maximum retry count can only be used with 'on-failure'");
    }
    Ok(RestartPolicy {
        name,
        max_retries: u32::try_from(max).unwrap_or(u32::MAX),
    })
}

/// The stored configuration of a container `run` or `create` makes: `run`'s, with the image's
/// ID and the restart policy.
pub fn container_config(
    args: &RunArgs,
    rec: &ImageRecord,
    image: &ImageConfig,
    plan: ProcessPlan,
) -> Result<ContainerConfig> {
    let restart = parse_restart(&args.restart)?;
    if args.rm && restart.name != RestartName::No {
        bail!("conflicting options: cannot specify both --restart and --rm");
    }
    let mut config = crate::commands::run::container_config(image, args, plan)?;
    config.image_id = Some(rec.config_digest.to_string());
    config.restart = restart;
    Ok(config)
}

/// The static init binary `--init` binds into the container: docker's `docker-init` when
/// installed, else Debian's `tini-static` (a dynamic one would not run in most images).
fn init_binary() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["docker-init", "tini-static"] {
        for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!("--init: no docker-init or tini-static found in PATH (Debian's tini package has it)")
}

/// `--init`: tini, bound read-only at docker's path, runs the command as its child, forwards
/// signals to it and reaps zombies.
pub fn apply_init(plan: &mut ProcessPlan, args: &RunArgs) -> Result<()> {
    if !args.init {
        return Ok(());
    }
    plan.mounts.push(MountPlan::Bind {
        src: init_binary()?,
        dst: INIT_PATH.to_owned(),
        readonly: true,
    });
    let mut argv = vec![INIT_PATH.to_owned(), "--".to_owned()];
    argv.append(&mut plan.args);
    plan.args = argv;
    Ok(())
}

/// `kiln create`: the container as `run` would make it, not started; prints its ID.
pub fn create(g: &Global, args: RunArgs) -> Result<ExitCode> {
    let host = g.host()?;
    let (rec, image, plan) = crate::commands::run::prepare(&host, &args)?;
    let c = host
        .containers()?
        .create(container_config(&args, &rec, &image, plan)?)?;
    println!("{}", c.id());
    Ok(ExitCode::SUCCESS)
}

/// The exit status for a container's code.
fn status(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

/// Copies our stdin to the stdin FIFO of `c` (created with `-i`) on a thread of its own.
fn pump_stdin(c: &Container) -> Result<()> {
    use fs_err::os::unix::fs::OpenOptionsExt;
    let path = c.stdin_fifo();
    // Non-blocking open: fails at once when no shim reads it instead of waiting forever.
    let fifo = fs_err::OpenOptions::new()
        .write(true)
        .custom_flags(libc_o_nonblock())
        .open(&path)
        .with_context(|| format!("attaching stdin of {}", c.name()))?;
    let fifo = fifo.into_parts().0;
    rustix::fs::fcntl_setfl(&fifo, rustix::fs::OFlags::empty())?;
    std::thread::spawn(move || {
        let mut fifo = fifo;
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut fifo);
    });
    Ok(())
}

fn libc_o_nonblock() -> i32 {
    rustix::fs::OFlags::NONBLOCK.bits() as i32
}

/// Follows `c`'s output from `offset` until its process ends; the exit status is its code.
fn follow(c: &Container, offset: u64, stdin: bool) -> Result<ExitCode> {
    if stdin && c.config().plan.stdin {
        pump_stdin(c)?;
    }
    let code = c.follow_output(
        offset,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )?;
    let code = match code {
        Some(code) => code,
        None => c.wait()?.unwrap_or(0),
    };
    Ok(status(code))
}

/// `run` without `-d` of a container with a restart policy: its shim supervises it (the
/// policy outlives this process, as docker's daemon does), this process shows its output
/// until the first run ends and exits with that run's status.
pub fn run_supervised(host: &Host, c: &Container) -> Result<ExitCode> {
    let offset = c.log_len();
    host.start(c)?;
    follow(c, offset, true)
}

/// `kiln start`.
pub fn start(g: &Global, args: &StartArgs) -> Result<ExitCode> {
    let host = g.host()?;
    let cs = host.containers()?;
    if !args.attach && !args.interactive {
        each(&args.containers, |n| {
            let c = get(&cs, n)?;
            if !c.state()?.is_up() {
                host.start(&c)?;
            }
            Ok(())
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.containers.len() > 1 {
        bail!("you cannot start and attach multiple containers at once");
    }
    let c = get(&cs, &args.containers[0])?;
    let state = c.state()?;
    if state.is_up() {
        return follow(&c, c.log_len(), args.interactive);
    }
    if state.status.as_str() == "created" && c.config().restart.name == RestartName::No {
        // The first start of a container without a policy: in the foreground, as `run`
        // (the terminal, signals and stdin are this process's).
        let code = host.start_attached(&c);
        if c.config().auto_remove
            && let Err(e) = c.remove(true)
        {
            tracing::warn!(error = %e, container = c.id(), "removing the container");
        }
        return Ok(status(code?.code));
    }
    let offset = c.log_len();
    host.start(&c)?;
    follow(&c, offset, args.interactive)
}

/// `kiln restart`: stop (SIGTERM, then SIGKILL after `-t`), then start.
pub fn restart(g: &Global, args: &RestartArgs) -> Result<()> {
    let host = g.host()?;
    let cs = host.containers()?;
    each(&args.containers, |n| {
        let c = get(&cs, n)?;
        c.stop(Duration::from_secs(args.time))?;
        host.start(&c)?;
        Ok(())
    })
}

/// `kiln wait`: the exit code of each container once it has stopped, one per line.
pub fn wait(g: &Global, names: &[String]) -> Result<()> {
    let cs = g.host()?.containers()?;
    each_line(names, |n| Ok(get(&cs, n)?.wait()?.unwrap_or(0).to_string()))
}

/// `kiln attach`: the output of a running container from now on (and our stdin to it when it
/// was created with `-i`); the exit status is the container's.
pub fn attach(g: &Global, args: &AttachArgs) -> Result<ExitCode> {
    let cs = g.host()?.containers()?;
    let c = get(&cs, &args.container)?;
    let state = c.state()?;
    if !state.is_up() {
        bail!("you cannot attach to a stopped container, start it first");
    }
    if state.paused {
        bail!("you cannot attach to a paused container, unpause it first");
    }
    follow(&c, c.log_len(), !args.no_stdin)
}

/// `kiln rename OLD NEW`, with docker's messages: the cause on a line of its own, then
/// `failed to rename container named OLD` (status 1, as docker's).
pub fn rename(g: &Global, args: &RenameArgs) -> Result<()> {
    let cs = g.host()?.containers()?;
    let new = args.new.trim().trim_start_matches('/');
    let cause = (|| -> Result<()> {
        if args.old.trim().is_empty() || new.is_empty() {
            bail!("Neither old nor new names may be empty");
        }
        let c = get(&cs, args.old.trim())?;
        if c.name() == new {
            bail!(
                "Error response from daemon: Renaming a container with the same name as its \
                 current name"
            );
        }
        if let Some(other) = cs.list(true)?.into_iter().find(|o| o.name() == new) {
            bail!(
                "Error response from daemon: Error when allocating new name: Conflict. The \
                 container name \"/{new}\" is already in use by container \"{}\". You have to \
                 remove (or rename) that container to be able to reuse that name.",
                other.id()
            );
        }
        Ok(cs.rename(&c, new)?)
    })();
    if let Err(e) = cause {
        eprintln!("{}", crate::one_line(&e));
        bail!("failed to rename container named {}", args.old);
    }
    Ok(())
}

/// `kiln pause`.
pub fn pause(g: &Global, names: &[String]) -> Result<()> {
    let cs = g.host()?.containers()?;
    each(names, |n| Ok(get(&cs, n)?.pause()?))
}

/// `kiln unpause`.
pub fn unpause(g: &Global, names: &[String]) -> Result<()> {
    let cs = g.host()?.containers()?;
    each(names, |n| Ok(get(&cs, n)?.unpause()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_parse_as_docker_s() {
        let p = parse_restart("on-failure:5").unwrap();
        assert_eq!((p.name, p.max_retries), (RestartName::OnFailure, 5));
        assert_eq!(parse_restart("no").unwrap(), RestartPolicy::default());
        assert_eq!(
            parse_restart("unless-stopped").unwrap().name,
            RestartName::UnlessStopped
        );
        let err = |s: &str| parse_restart(s).unwrap_err().to_string();
        assert_eq!(
            err("on-failure:-1"),
            "invalid restart policy: maximum retry count cannot be negative"
        );
        assert_eq!(
            err("always:2:3"),
            "invalid restart policy format: maximum retry count must be an integer"
        );
    }

    #[test]
    fn policies_decide_as_docker_s_restart_manager() {
        let on_failure = |n| RestartPolicy {
            name: RestartName::OnFailure,
            max_retries: n,
        };
        assert!(on_failure(2).should_restart(1, 1, false));
        assert!(!on_failure(2).should_restart(1, 2, false));
        assert!(!on_failure(0).should_restart(0, 0, false));
        assert!(on_failure(0).should_restart(3, 100, false));
        let always = RestartPolicy {
            name: RestartName::Always,
            max_retries: 0,
        };
        assert!(always.should_restart(0, 9, false));
        assert!(!always.should_restart(0, 9, true), "stopped by hand");
        assert!(!RestartPolicy::default().should_restart(1, 0, false));
    }
}
