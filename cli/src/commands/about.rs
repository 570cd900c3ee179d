//! `kiln version` and `kiln info`: what this kiln is and what the machine gives it, in
//! docker's layout, with `--format` for scripts.

use crate::commands::Global;
use crate::format::Template;
use anyhow::Result;
use serde_json::{Value, json};

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn print(doc: &Value, format: Option<&str>, text: impl FnOnce() -> String) -> Result<()> {
    match format {
        Some("json") => println!("{}", serde_json::to_string(doc)?),
        Some(f) => println!("{}", Template::parse(f)?.render(doc)?),
        None => print!("{}", text()),
    }
    Ok(())
}

fn tool_version(cmd: &str) -> Option<String> {
    let out = std::process::Command::new(cmd)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())?
        .trim()
        .to_owned();
    Some(line)
}

/// `kiln version`: the client (kiln is daemonless: there is no server part) and the OCI
/// runtime it drives.
pub fn version(g: &Global, format: Option<&str>) -> Result<()> {
    let runtime = g.host().ok().and_then(|h| h.runtime_version());
    let doc = json!({
        "Client": {
            "Version": env!("CARGO_PKG_VERSION"),
            "GitCommit": env!("KILN_GIT_COMMIT"),
            "RustVersion": env!("KILN_RUSTC_VERSION"),
            "Os": std::env::consts::OS,
            "Arch": arch(),
        },
        "Runtime": runtime.as_ref().map(|(path, v)| json!({"Path": path, "Version": v})),
        "Network": tool_version("pasta").map(|v| json!({"Name": "pasta", "Version": v})),
    });
    print(&doc, format, || {
        let commit = env!("KILN_GIT_COMMIT");
        let mut s = format!(
            "Client: kiln\n Version:     {}\n Git commit:  {}\n Rust:        {}\n OS/Arch:     {}/{}\n",
            env!("CARGO_PKG_VERSION"),
            if commit.is_empty() { "unknown" } else { commit },
            env!("KILN_RUSTC_VERSION"),
            std::env::consts::OS,
            arch()
        );
        s.push_str("\nRuntime:\n");
        match &runtime {
            Some((path, v)) => {
                s.push_str(&format!(
                    " Path:        {}\n Version:     {v}\n",
                    path.display()
                ));
            }
            None => s.push_str(" (no OCI runtime found: install runc)\n"),
        }
        s.push_str(&format!(
            " Network:     {}\n",
            tool_version("pasta").unwrap_or_else(|| "pasta not found (install passt)".to_owned())
        ));
        s
    })
}

fn os_release() -> String {
    fs_err::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn mem_total() -> u64 {
    fs_err::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// `kiln info`: containers, images, the store, the runtime and the kernel, as `docker info`
/// shows its server.
pub fn info(g: &Global, format: Option<&str>) -> Result<()> {
    let host = g.host()?;
    let containers = host.containers()?.list(true)?;
    let (mut running, mut paused, mut stopped) = (0, 0, 0);
    for c in &containers {
        match c.state().map(|s| s.status.as_str()) {
            Ok("running") => running += 1,
            Ok("paused") => paused += 1,
            _ => stopped += 1,
        }
    }
    let images = host.images().list()?.len();
    let runtime = host.runtime_version();
    let uname = rustix::system::uname();
    let kernel = uname.release().to_string_lossy().into_owned();
    let machine = uname.machine().to_string_lossy().into_owned();
    let name = uname.nodename().to_string_lossy().into_owned();
    let cgroup = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let root = host.root().display().to_string();
    let doc = json!({
        "Containers": containers.len(),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": stopped,
        "Images": images,
        "Driver": "overlayfs",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgroup,
        "DefaultRuntime": runtime.as_ref().map(|(p, _)| p.file_name().map(|n| n.to_string_lossy().into_owned())),
        "RuntimeVersion": runtime.as_ref().map(|(_, v)| v),
        "SecurityOptions": ["name=seccomp,profile=builtin"],
        "KernelVersion": kernel,
        "OperatingSystem": os_release(),
        "OSType": std::env::consts::OS,
        "Architecture": machine,
        "NCPU": cpus,
        "MemTotal": mem_total(),
        "KilnRootDir": root,
        "Name": name,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
    });
    print(&doc, format, || {
        let mem = mem_total() as f64 / (1u64 << 30) as f64;
        format!(
            "Client: kiln {version} (daemonless: the store is used directly)\n\
             \n\
             Containers: {total}\n Running: {running}\n Paused: {paused}\n Stopped: {stopped}\n\
             Images: {images}\n\
             Storage Driver: overlayfs\n\
             Cgroup Driver: cgroupfs\n\
             Cgroup Version: {cgroup}\n\
             Runtimes: {rt}\n\
             Default Runtime: {rt}\n\
             Runtime Version: {rtv}\n\
             Security Options:\n seccomp\n  Profile: builtin\n\
             Kernel Version: {kernel}\n\
             Operating System: {os}\n\
             OSType: {ostype}\n\
             Architecture: {machine}\n\
             CPUs: {cpus}\n\
             Total Memory: {mem:.2}GiB\n\
             Name: {name}\n\
             Kiln Root Dir: {root}\n",
            version = env!("CARGO_PKG_VERSION"),
            total = containers.len(),
            rt = runtime
                .as_ref()
                .and_then(|(p, _)| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "none found".to_owned()),
            rtv = runtime.as_ref().map_or("", |(_, v)| v.as_str()),
            os = os_release(),
            ostype = std::env::consts::OS,
        )
    })
}
