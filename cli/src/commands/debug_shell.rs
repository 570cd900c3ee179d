//! `kiln debug shell|ls|rm` and `kiln build --on-error=shell`: a shell in the state a failed
//! `RUN` left.

use anyhow::Result;
use kiln_solver::Host;
use kiln_solver::debug::{FailedStep, ShellOptions};
use std::io::IsTerminal;
use std::process::ExitCode;

/// The id of the state a failed build kept, from its error.
pub fn kept_state(err: &kiln_solver::session::SolveError) -> Option<String> {
    match err
        .source
        .as_ref()
        .and_then(|s| s.downcast_ref::<kiln_solver::Error>())
    {
        Some(kiln_solver::Error::RunFailed { kept, .. }) => kept.clone(),
        _ => None,
    }
}

/// Starts a shell in `step`; returns the shell's exit code.
pub fn shell_in(
    host: &Host,
    step: &FailedStep,
    command: Vec<String>,
    secrets: &[String],
) -> Result<u8> {
    let opts = ShellOptions {
        command,
        secrets: super::build::parse_secrets(secrets)?,
        tty: std::io::stdin().is_terminal(),
    };
    eprintln!(
        "kiln: shell in the state of {} (exit code {}); the failed command is in its history",
        step.description, step.exit_code
    );
    let status = host.debug_shell(step, &opts)?;
    Ok(u8::try_from(status.code).unwrap_or(1))
}

/// `kiln debug shell [ID] [--secret …] [-- CMD…]`.
pub fn shell(
    host: &Host,
    id: Option<&str>,
    command: Vec<String>,
    secrets: &[String],
) -> Result<ExitCode> {
    let step = host.failed_step(id)?;
    Ok(ExitCode::from(shell_in(host, &step, command, secrets)?))
}

/// `kiln debug ls`.
pub fn ls(host: &Host, quiet: bool) -> Result<()> {
    let steps = host.failed_steps()?;
    if quiet {
        for s in &steps {
            println!("{}", s.id);
        }
        return Ok(());
    }
    println!("{:<14}{:<22}{:<6}STEP", "ID", "CREATED", "EXIT");
    for s in &steps {
        let created = chrono::DateTime::from_timestamp(s.created, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        println!(
            "{:<14}{:<22}{:<6}{}",
            s.id, created, s.exit_code, s.description
        );
    }
    Ok(())
}

/// `kiln debug rm [-a] [ID…]`.
pub fn rm(host: &Host, all: bool, ids: &[String]) -> Result<()> {
    let targets: Vec<String> = if all {
        host.failed_steps()?.into_iter().map(|s| s.id).collect()
    } else {
        let mut out = Vec::new();
        for id in ids {
            out.push(host.failed_step(Some(id))?.id);
        }
        out
    };
    for id in targets {
        host.remove_failed_step(&id)?;
        println!("{id}");
    }
    Ok(())
}
