//! One module per family of subcommands.

mod about;
mod build;
mod checks;
pub(crate) mod container;
pub mod debug;
mod debug_shell;
mod files;
mod image;
mod life;
mod lifecycle;
mod network;
mod networks;
mod registry;
mod run;
mod system;
mod usage;

use crate::cli::{
    BuilderCommand, Cli, Command, ContainerCommand, DebugCommand, ImageCommand, LifeCommand,
    SystemCommand,
};
use anyhow::Result;
use kiln_solver::{Host, HostOptions};
use std::path::PathBuf;
use std::process::ExitCode;

/// Options every subcommand shares.
pub struct Global {
    pub root: Option<PathBuf>,
    pub runtime: Option<PathBuf>,
    pub insecure_registries: Vec<String>,
}

impl Global {
    /// Opens the store (`--root`, `KILN_ROOT`, or the default for this user) with the runtime
    /// (`--runtime`, `KILN_RUNTIME`, or runc in PATH) and registry settings.
    pub fn host(&self) -> Result<Host> {
        Ok(Host::open(HostOptions {
            root: self.root.clone(),
            runtime: self.runtime.clone(),
            insecure_registries: self.insecure_registries.clone(),
        })?)
    }
}

/// A user-written image name in its full form (`app:1.2` → `docker.io/library/app:1.2`), with
/// docker's rules and error for what it rejects.
pub fn normalize_reference(name: &str) -> Result<String> {
    let r: kiln_solver::registry::Reference = name.parse()?;
    Ok(r.to_string())
}

/// Runs the chosen subcommand.
pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    let g = Global {
        root: cli.root,
        runtime: cli.runtime,
        insecure_registries: cli.insecure_registries,
    };
    let ok = |r: Result<()>| r.map(|()| ExitCode::SUCCESS);
    match cli.command {
        Command::Build(args) => ok(build::build(&g, *args)),
        Command::Run(args) => run::run(&g, *args),
        Command::Images(args) => ok(image::images(&g.host()?, &args)),
        Command::Tag { source, target } => ok(image::tag(&g.host()?, &source, &target)),
        Command::Rmi { force, images } => ok(image::rmi(&g.host()?, &images, force)),
        Command::History { no_trunc, image } => ok(image::history(&g.host()?, &image, no_trunc)),
        Command::Inspect { names, format } => {
            let host = g.host()?;
            let mut out = Vec::new();
            for n in &names {
                match container::inspect(&host, n) {
                    Some(v) => out.push(v),
                    None => out.push(image::inspect_image(&host, n)?),
                }
            }
            match format {
                Some(f) => lifecycle::inspect_format(&out, &f)?,
                None => println!("{}", serde_json::to_string_pretty(&out)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Load { input, quiet } => ok(image::load(&g.host()?, input.as_deref(), quiet)),
        Command::Save {
            output,
            format,
            images,
        } => ok(image::save(&g.host()?, &images, output.as_ref(), format)),
        Command::Import { file, reference } => ok(image::import(&g.host()?, &file, &reference)),
        Command::Ps {
            all,
            quiet,
            no_trunc,
            format,
            filters,
        } => ok(lifecycle::ps(
            &g,
            &lifecycle::PsOptions {
                all,
                quiet,
                no_trunc,
                format,
                filters,
            },
        )),
        Command::Logs(args) => ok(container::logs(&g, &args)),
        Command::Version { format } => ok(about::version(&g, format.as_deref())),
        Command::Info { format } => ok(about::info(&g, format.as_deref())),
        Command::Stop { time, containers } => ok(container::stop(&g, &containers, time)),
        Command::Kill { signal, containers } => ok(container::kill(&g, &containers, &signal)),
        Command::Rm { force, containers } => ok(container::rm(&g, &containers, force)),
        Command::Exec {
            interactive,
            tty,
            env,
            workdir,
            user,
            container,
            command,
        } => {
            let opts = kiln_solver::containers::ExecOptions {
                env,
                cwd: workdir,
                user,
                tty,
                stdin: interactive,
                ..Default::default()
            };
            container::exec(&g, &container, &command, opts)
        }
        Command::Pull {
            platform,
            quiet,
            reference,
        } => ok(registry::pull(&g, &reference, platform.as_deref(), quiet)),
        Command::Push { quiet, reference } => ok(registry::push(&g, &reference, quiet)),
        Command::Login {
            username,
            password,
            password_stdin,
            registry: server,
        } => ok(registry::login(
            &g,
            username,
            password,
            password_stdin,
            server,
        )),
        Command::Logout { registry: server } => ok(registry::logout(server)),
        Command::Debug(DebugCommand::Ast { file }) => ok(debug::ast(&file)),
        Command::Debug(DebugCommand::Graph {
            file,
            target,
            build_args,
            format,
        }) => ok(debug::graph(&file, target, &build_args, format)),
        Command::Debug(DebugCommand::Shell {
            id,
            secrets,
            command,
        }) => debug_shell::shell(&g.host()?, id.as_deref(), command, &secrets),
        Command::Debug(DebugCommand::Ls { quiet }) => ok(debug_shell::ls(&g.host()?, quiet)),
        Command::Debug(DebugCommand::Rm { all, ids }) => ok(debug_shell::rm(&g.host()?, all, &ids)),
        Command::System(SystemCommand::Df { verbose }) => ok(system::df(&g, verbose)),
        Command::System(SystemCommand::Prune {
            all,
            volumes,
            force,
        }) => ok(system::system_prune(&g, all, volumes, force)),
        Command::Builder(BuilderCommand::Prune {
            all,
            force,
            keep_storage,
            filters,
        }) => {
            let opts = system::builder_options(all, keep_storage.as_deref(), &filters)?;
            ok(system::builder_prune(&g, opts, force))
        }
        Command::Image(ImageCommand::Prune { all, force }) => {
            ok(system::image_prune(&g, all, force))
        }
        Command::Container(ContainerCommand::Prune { force }) => {
            ok(system::container_prune(&g, force))
        }
        Command::Volume(cmd) => ok(system::volume(&g, cmd)),
        Command::Network(cmd) => ok(networks::network(&g, cmd)),
        Command::Port { container, port } => ok(networks::port(&g, &container, port.as_deref())),
        Command::Life(cmd) | Command::Container(ContainerCommand::Life(cmd)) => {
            dispatch_life(&g, cmd)
        }
    }
}

/// The container lifecycle commands (`kiln VERB`, `kiln container VERB`).
fn dispatch_life(g: &Global, cmd: LifeCommand) -> Result<ExitCode> {
    let ok = |r: Result<()>| r.map(|()| ExitCode::SUCCESS);
    match cmd {
        LifeCommand::Create(args) => life::create(g, *args),
        LifeCommand::Start(args) => life::start(g, &args),
        LifeCommand::Restart(args) => ok(life::restart(g, &args)),
        LifeCommand::Wait(args) => ok(life::wait(g, &args.containers)),
        LifeCommand::Attach(args) => life::attach(g, &args),
        LifeCommand::Cp(args) => files::cp(g, &args),
        LifeCommand::Diff(args) => ok(files::diff(g, &args.container)),
        LifeCommand::Export(args) => ok(files::export(g, &args)),
        LifeCommand::Top(args) => ok(usage::top(g, &args)),
        LifeCommand::Stats(args) => ok(usage::stats(g, &args)),
        LifeCommand::Rename(args) => ok(life::rename(g, &args)),
        LifeCommand::Pause(args) => ok(life::pause(g, &args.containers)),
        LifeCommand::Unpause(args) => ok(life::unpause(g, &args.containers)),
    }
}
