//! `kiln`: a daemonless container image builder. Every subcommand is a function of its own
//! module under `commands/`; this file only parses arguments, sets up logging and maps errors to
//! exit codes.

mod cli;
mod commands;
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
    let cli = cli::Cli::parse();
    init_logging(cli.debug);
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(err) => report(&err),
    }
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

fn report(err: &anyhow::Error) -> ExitCode {
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
    let mut msg = format!("error: {err}");
    for cause in err.chain().skip(1) {
        msg.push_str(&format!("\n  caused by: {cause}"));
    }
    eprintln!("{msg}");
    ExitCode::FAILURE
}
