//! `kiln`: a daemonless container image builder. Every subcommand is a function of its own
//! module under `commands/`; this file only parses arguments, sets up logging and maps errors to
//! exit codes.

mod cli;
mod commands;
mod format;
mod progress;

use clap::Parser;
use std::process::ExitCode;

/// An error the CLI already printed in full (a located Dockerfile error, a failed RUN): exit
/// with its code and print nothing more.
#[derive(Debug)]
pub struct Reported(pub u8);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for Reported {}

fn main() -> ExitCode {
    // A detached container's supervisor is this same binary, started with a hidden argument.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(kiln_solver::containers::SHIM_ARG) {
        let code = kiln_solver::containers::shim_main(argv);
        return ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1));
    }
    let argv = container_alias(argv);
    let container_command = runs_a_container(&argv);
    let cli = match cli::Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ if container_command => ExitCode::from(FAILED_TO_RUN),
                _ => ExitCode::from(2),
            };
        }
    };
    init_logging(cli.debug);
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(err) if container_command => report(&err, FAILED_TO_RUN),
        Err(err) => report(&err, 1),
    }
}

/// docker's status for `run` (and `create`, `start`) when the error is its own, not the
/// container's: a bad flag, an unknown image, a name in use. 126 and 127 (a command that
/// cannot be executed or found) come from the container's side, as the process's status.
const FAILED_TO_RUN: u8 = 125;

/// Whether the subcommand in `argv` is one whose failures exit [`FAILED_TO_RUN`]: the first
/// word that is neither a global flag nor its value.
fn runs_a_container(argv: &[String]) -> bool {
    let mut words = argv.iter().skip(1);
    while let Some(w) = words.next() {
        match w.as_str() {
            "--root" | "--runtime" | "--insecure-registry" => {
                words.next();
            }
            w if w.starts_with('-') => {}
            // `kiln container run|create|start`.
            "container" => {}
            w => return matches!(w, "run" | "create" | "start"),
        }
    }
    false
}

/// docker's `container VERB` names of the top-level container commands (`container ls` is
/// `ps`); the lifecycle commands kiln has under both names in clap itself.
fn container_alias(mut argv: Vec<String>) -> Vec<String> {
    const VERBS: [&str; 9] = [
        "exec", "inspect", "kill", "logs", "ls", "port", "rm", "run", "stop",
    ];
    let mut i = 1;
    while i < argv.len() {
        match argv[i].as_str() {
            "--root" | "--runtime" | "--insecure-registry" => i += 2,
            w if w.starts_with('-') => i += 1,
            "container" => {
                if let Some(verb) = argv.get(i + 1).filter(|v| VERBS.contains(&v.as_str())) {
                    let verb = if verb == "ls" {
                        "ps".to_owned()
                    } else {
                        verb.clone()
                    };
                    argv.splice(i..i + 2, [verb]);
                }
                break;
            }
            _ => break,
        }
    }
    argv
}

/// Tracing output is for debugging kiln: full lines only with `--debug` (every crate at
/// debug level) or `KILN_LOG` (an `EnvFilter` directive such as `info` or
/// `kiln_registry_client=debug`; `--debug` wins). Otherwise only warnings, one plain
/// `warning: …` line each, as docker prints them (a local image used because the registry
/// could not be reached, no swap accounting, a device node skipped); retries and progress are
/// not warnings. Colour only when stderr is a terminal (and `NO_COLOR` is unset).
fn init_logging(debug: bool) {
    use std::io::IsTerminal as _;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let verbose = if debug {
        Some(tracing_subscriber::EnvFilter::new("debug"))
    } else {
        tracing_subscriber::EnvFilter::try_from_env("KILN_LOG").ok()
    };
    match verbose {
        Some(filter) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(colour)
            .with_writer(std::io::stderr)
            .init(),
        None => tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .with_ansi(colour)
            .event_format(Warning { colour })
            .with_writer(std::io::stderr)
            .init(),
    }
}

/// `warning: message key=value …` (yellow on a terminal).
struct Warning {
    colour: bool,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Warning
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let label = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            _ => "warning",
        };
        if self.colour {
            write!(w, "\x1b[33m{label}:\x1b[0m ")?;
        } else {
            write!(w, "{label}: ")?;
        }
        tracing_subscriber::fmt::FormatFields::format_fields(ctx, w.by_ref(), event)?;
        writeln!(w)
    }
}

fn report(err: &anyhow::Error, status: u8) -> ExitCode {
    if let Some(Reported(code)) = err.downcast_ref::<Reported>() {
        return ExitCode::from(*code);
    }
    // A closed pipe (`kiln images | head -1`) is not an error.
    for cause in err.chain() {
        let broken = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => io.kind() == std::io::ErrorKind::BrokenPipe,
            // Library errors that wrap an io::Error without exposing it as a source.
            None => cause.to_string().contains("Broken pipe (os error 32)"),
        };
        if broken {
            return ExitCode::SUCCESS;
        }
    }
    let msg = format!("error: {}", one_line(err));
    eprintln!("{msg}");
    ExitCode::from(status)
}

/// An error and its causes on one line, `a: b: c`, as docker and Go print them; a cause whose
/// text its parent already quotes is not repeated.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::{container_alias, one_line, runs_a_container};

    #[test]
    fn container_verbs_are_the_top_level_commands() {
        let alias = |s: &str| container_alias(argv(s)).join(" ");
        assert_eq!(alias("kiln container ls -a"), "kiln ps -a");
        assert_eq!(
            alias("kiln --root /r container run --rm busybox"),
            "kiln --root /r run --rm busybox"
        );
        assert_eq!(alias("kiln container start x"), "kiln container start x");
        assert_eq!(alias("kiln run container ls"), "kiln run container ls");
        assert_eq!(alias("kiln container"), "kiln container");
    }

    #[test]
    fn causes_join_on_one_line_without_repeats() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e = anyhow::Error::new(io)
            .context("connect 127.0.0.1:5999")
            .context("HEAD http://127.0.0.1:5999/v2/a/manifests/b");
        assert_eq!(
            one_line(&e),
            "HEAD http://127.0.0.1:5999/v2/a/manifests/b: connect 127.0.0.1:5999: connection refused"
        );
        let e = anyhow::anyhow!("no such container: x").context("no such container: x");
        assert_eq!(one_line(&e), "no such container: x");
    }

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn container_commands_are_found_past_global_flags() {
        assert!(runs_a_container(&argv("kiln run busybox")));
        assert!(runs_a_container(&argv(
            "kiln --root /r --debug run --bogus"
        )));
        assert!(!runs_a_container(&argv("kiln --runtime run images")));
        assert!(runs_a_container(&argv(
            "kiln --insecure-registry h:5000 create"
        )));
        assert!(!runs_a_container(&argv("kiln build run")));
        assert!(!runs_a_container(&argv("kiln images")));
        assert!(!runs_a_container(&argv("kiln")));
    }
}
