//! Container networks without a daemon and without host iptables rules.
//!
//! A container on docker's `bridge` ([`Network::Bridge`]) gets a network namespace of its own,
//! created before the runtime starts and kept as a bind mount at `<bundle>/netns` (runc joins
//! it by path). `pasta` (Debian's `passt` package) attaches to that namespace: it gives it an
//! interface with the host's addresses and routes and translates the container's traffic into
//! ordinary sockets of the host (outbound connectivity, a userspace NAT), and it listens on the
//! host's published ports (`-p [IP:]HOST:CONTAINER[/tcp|udp]`), forwarding each connection
//! into the namespace. Nothing is added to the host's firewall or interfaces, so the same
//! mechanism suits rootless use.
//!
//! Everything lives in the bundle: [`release`] (called wherever a bundle is removed: normal
//! exit, cancel, `rm`, and the reaper for a SIGKILLed kiln) stops pasta and unmounts the
//! namespace, so nothing is left behind.

use crate::plan::{Network, ProcessPlan};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Name of the bind-mounted network namespace in a bundle.
pub const NETNS_FILE: &str = "netns";
/// pasta's pid file in a bundle.
const PASTA_PID: &str = "pasta.pid";
/// pasta's own messages in a bundle (read back for an error).
const PASTA_LOG: &str = "pasta.log";

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One published port: the host's `host_ip:host_port` forwards to the container's
/// `container_port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// Host address listened on (`0.0.0.0` for all).
    pub host_ip: IpAddr,
    /// Host port (never 0 once the container is created: chosen then).
    pub host_port: u16,
    /// Port inside the container.
    pub container_port: u16,
    /// Protocol.
    pub proto: Proto,
}

impl PortMapping {
    /// docker's key of `NetworkSettings.Ports` and `kiln port`: `80/tcp`.
    pub fn container_key(&self) -> String {
        format!("{}/{}", self.container_port, self.proto.as_str())
    }
}

impl fmt::Display for PortMapping {
    /// docker's `ps` PORTS form: `0.0.0.0:8080->80/tcp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}->{}",
            SocketAddr::new(self.host_ip, self.host_port),
            self.container_key()
        )
    }
}

fn invalid(reason: String) -> Error {
    Error::Network { reason }
}

fn parse_port(s: &str, what: &str, spec: &str) -> Result<u16> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 || what == "host" => Ok(p),
        _ => Err(invalid(format!(
            "invalid publish spec {spec:?}: invalid {what} port {s:?}"
        ))),
    }
}

/// Parses docker's `-p [IP:][HOST:]CONTAINER[/tcp|udp]`. A missing or empty host port is 0,
/// to be chosen by [`assign_host_ports`]. Port ranges are refused.
pub fn parse_publish(spec: &str) -> Result<PortMapping> {
    let (addr, proto) = match spec.rsplit_once('/') {
        Some((a, "tcp")) => (a, Proto::Tcp),
        Some((a, "udp")) => (a, Proto::Udp),
        Some((_, other)) => {
            return Err(invalid(format!(
                "invalid proto: {other} (in publish spec {spec:?})"
            )));
        }
        None => (spec, Proto::Tcp),
    };
    if addr.contains('-') {
        return Err(invalid(format!(
            "invalid publish spec {spec:?}: port ranges are not supported"
        )));
    }
    // An IPv6 host address is written in brackets: [::1]:8080:80.
    let (ip, rest) = if let Some(r) = addr.strip_prefix('[') {
        let (ip, rest) = r
            .split_once("]:")
            .ok_or_else(|| invalid(format!("invalid publish spec {spec:?}")))?;
        (Some(ip), rest)
    } else {
        match addr.matches(':').count() {
            2 => {
                let (ip, rest) = addr.split_once(':').unwrap_or_default();
                (Some(ip), rest)
            }
            0 | 1 => (None, addr),
            _ => return Err(invalid(format!("invalid publish spec {spec:?}"))),
        }
    };
    let host_ip = match ip {
        None | Some("") => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some(ip) => ip
            .parse()
            .map_err(|_| invalid(format!("invalid IP address in publish spec: {ip}")))?,
    };
    let (host, container) = rest.split_once(':').unwrap_or(("", rest));
    let host_port = if host.is_empty() {
        0
    } else {
        parse_port(host, "host", spec)?
    };
    Ok(PortMapping {
        host_ip,
        host_port,
        container_port: parse_port(container, "container", spec)?,
        proto,
    })
}

/// Parses an image's `ExposedPorts` key (`80/tcp`, `53/udp`, `8080`) for `-P`.
pub fn parse_exposed(key: &str) -> Result<(u16, Proto)> {
    let m = parse_publish(key)?;
    Ok((m.container_port, m.proto))
}

/// Checks that each published host port is free, and chooses a free one for port 0; fails
/// with docker's message when one is taken (nothing has been started yet).
pub fn assign_host_ports(ports: &mut [PortMapping]) -> Result<()> {
    for p in ports.iter_mut() {
        let addr = SocketAddr::new(p.host_ip, p.host_port);
        let bound = match p.proto {
            Proto::Tcp => TcpListener::bind(addr).and_then(|l| l.local_addr()),
            Proto::Udp => UdpSocket::bind(addr).and_then(|s| s.local_addr()),
        };
        match bound {
            Ok(a) => p.host_port = a.port(),
            Err(_) => {
                return Err(Error::PortInUse {
                    addr: addr.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Resolves docker's `host-gateway` for `--add-host`: the address through which the container
/// reaches the host. pasta maps the default gateway's address to the host itself.
pub fn host_gateway() -> Option<IpAddr> {
    let routes = fs_err::read_to_string("/proc/net/route").ok()?;
    routes.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() > 2 && f[1] == "00000000" {
            let gw = u32::from_str_radix(f[2], 16).ok()?;
            // /proc/net/route prints the address in host (little-endian) byte order.
            Some(IpAddr::V4(Ipv4Addr::from(gw.swap_bytes())))
        } else {
            None
        }
    })
}

/// Whether `pasta` can be run.
pub fn pasta_available() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join("pasta").is_file()))
}

/// The path of `bundle`'s network namespace file.
pub fn netns_path(bundle: &Path) -> PathBuf {
    bundle.join(NETNS_FILE)
}

/// Runs `cmd`, mapping a failure to an error that names `what` and carries its stderr.
fn run_checked(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| invalid(format!("{what}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let msg = String::from_utf8_lossy(&out.stderr);
    let msg = msg
        .lines()
        .filter(|l| !l.contains("syslog") && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Err(Error::Network {
        reason: format!("{what}: {msg}"),
    })
}

/// pasta's arguments for `netns` with `ports` published.
pub fn pasta_args(netns: &Path, pid_file: &Path, ports: &[PortMapping]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--config-net",
        // As root pasta would switch to nobody, which may not open the namespace.
        "--runas",
        "0:0",
        "--quiet",
        // The container reaches the host only through its gateway address (host-gateway).
        "-T",
        "none",
        "-U",
        "none",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    for proto in [Proto::Tcp, Proto::Udp] {
        let flag = if proto == Proto::Tcp { "-t" } else { "-u" };
        let mine: Vec<&PortMapping> = ports.iter().filter(|p| p.proto == proto).collect();
        if mine.is_empty() {
            args.extend([flag.to_owned(), "none".to_owned()]);
        }
        for p in mine {
            let spec = if p.host_ip.is_unspecified() {
                format!("{}:{}", p.host_port, p.container_port)
            } else {
                format!("{}/{}:{}", p.host_ip, p.host_port, p.container_port)
            };
            args.extend([flag.to_owned(), spec]);
        }
    }
    args.push("--pid".to_owned());
    args.push(pid_file.display().to_string());
    args.push("--log-file".to_owned());
    args.push(pid_file.with_file_name(PASTA_LOG).display().to_string());
    args.push("--netns".to_owned());
    args.push(netns.display().to_string());
    args
}

/// A bundle's file naming the pool entry its namespace was borrowed from.
const POOL_LINK: &str = "netpool";

/// Namespaces with pasta kept ready for this process's RUN steps, as BuildKit pools the
/// namespaces of its sandboxes: starting pasta is most of a fresh namespace's cost (~50-80 ms),
/// so a step's namespace goes back to the pool when it ends and the next step borrows it. A
/// step cannot change it (no `CAP_NET_ADMIN`, `/proc/sys` read-only) and its sockets die with
/// its processes. Each entry is a directory beside the bundles (`netpool-<pid>-<n>`) with an
/// owner file, so the reaper removes the entries of a killed kiln like its bundles;
/// [`drain_pool`] removes this process's at the end of a build.
static POOL: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
static POOL_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn pool_prefix() -> String {
    format!("netpool-{}-", std::process::id())
}

/// Whether the pasta recorded in `dir` still serves it.
fn pasta_alive(dir: &Path) -> bool {
    let pid_file = dir.join(PASTA_PID);
    fs_err::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .and_then(|pid| fs_err::read(format!("/proc/{pid}/cmdline")).ok())
        .is_some_and(|c| String::from_utf8_lossy(&c).contains(&*pid_file.to_string_lossy()))
}

/// Starts pasta on the namespace `ns`, its pid file and log in `dir`.
fn start_pasta(dir: &Path, ns: &Path, ports: &[PortMapping]) -> Result<()> {
    if !pasta_available() {
        return Err(Error::Network {
            reason: "pasta not found: install Debian's passt package \
                     (or use --network none|host)"
                .to_owned(),
        });
    }
    let mut pasta = Command::new("pasta");
    pasta.args(pasta_args(ns, &dir.join(PASTA_PID), ports));
    run_checked(pasta, "starting pasta")
}

/// A ready namespace of the pool (made when none is free).
fn pool_take(bundles: &Path) -> Result<PathBuf> {
    loop {
        let Some(entry) = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop() else {
            break;
        };
        if pasta_alive(&entry) {
            return Ok(entry);
        }
        destroy_pool_entry(&entry);
    }
    let n = POOL_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let entry = bundles.join(format!("{}{n}", pool_prefix()));
    fs_err::create_dir_all(&entry)?;
    let made = crate::bundle::write_owner(&entry).and_then(|()| {
        let ns = entry.join(NETNS_FILE);
        crate::networks::make_netns(&ns)?;
        start_pasta(&entry, &ns, &[])
    });
    if let Err(e) = made {
        destroy_pool_entry(&entry);
        return Err(e);
    }
    Ok(entry)
}

fn destroy_pool_entry(entry: &Path) {
    release(entry);
    let _ = fs_err::remove_dir_all(entry);
}

/// Gives a borrowed namespace back to this process's pool, or removes it (another process's,
/// or its pasta is gone).
fn pool_put(entry: PathBuf) {
    let mine = entry
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(&pool_prefix()));
    if mine && pasta_alive(&entry) {
        POOL.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
    } else {
        destroy_pool_entry(&entry);
    }
}

/// Removes every pooled namespace of this process (their pasta included); call it when a build
/// ends.
pub fn drain_pool() {
    let entries = std::mem::take(&mut *POOL.lock().unwrap_or_else(|e| e.into_inner()));
    for entry in entries {
        destroy_pool_entry(&entry);
    }
}

/// Borrows a pooled namespace for `bundle`: bind-mounted at `<bundle>/netns`.
fn setup_pooled(bundle: &Path) -> Result<()> {
    let bundles = bundle.parent().unwrap_or(Path::new("/"));
    let entry = pool_take(bundles)?;
    // Recorded first: `release` gives it back whatever happens next.
    let linked = fs_err::write(bundle.join(POOL_LINK), entry.as_os_str().as_encoded_bytes())
        .map_err(Error::from)
        .and_then(|()| {
            let ns = netns_path(bundle);
            fs_err::write(&ns, b"")?;
            rustix::mount::mount_bind(entry.join(NETNS_FILE), &ns).map_err(|e| Error::Network {
                reason: format!("binding the pooled network namespace: {e}"),
            })
        });
    if let Err(e) = linked {
        if bundle.join(POOL_LINK).exists() {
            // `release` unbinds what was bound and gives the entry back.
            release(bundle);
        } else {
            pool_put(entry);
        }
        return Err(e);
    }
    Ok(())
}

/// Prepares the network of a bundle whose spec joins `<bundle>/netns`: creates the namespace,
/// starts pasta on it (which returns once its ports listen) unless every user network of the
/// plan is `--internal`, and attaches it to those networks ([`crate::networks::attach`]). On
/// failure whatever was made is released.
pub fn setup(bundle: &Path, plan: &ProcessPlan) -> Result<()> {
    if plan.network != Network::Bridge {
        return Ok(());
    }
    if plan.reuse_network && plan.ports.is_empty() && plan.networks.is_empty() {
        return setup_pooled(bundle);
    }
    let ns = netns_path(bundle);
    let outbound = plan.networks.is_empty() || plan.networks.iter().any(|n| !n.internal);
    let made = crate::networks::make_netns(&ns).and_then(|()| {
        if !outbound {
            // No pasta: only the networks' interfaces (and loopback).
            return crate::networks::loopback_up(&ns);
        }
        start_pasta(bundle, &ns, &plan.ports)
    });
    let made = made.and_then(|()| {
        let id = bundle
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let hostname = crate::spec::default_hostname(plan, &id);
        for att in &plan.networks {
            crate::networks::attach(bundle, att, &hostname)?;
        }
        Ok(())
    });
    if let Err(e) = made {
        release(bundle);
        // A port taken between our check and pasta's bind: docker's message.
        if let Error::Network { reason } = &e
            && reason.contains("in use")
            && let Some(p) = plan.ports.first()
        {
            return Err(Error::PortInUse {
                addr: SocketAddr::new(p.host_ip, p.host_port).to_string(),
            });
        }
        return Err(e);
    }
    Ok(())
}

/// Stops `bundle`'s pasta and unmounts its network namespace, if it has them. Never fails:
/// called on every path that removes a bundle.
pub fn release(bundle: &Path) {
    // Off its user networks first: the others' hosts files lose its names.
    crate::networks::release(bundle);
    let link = bundle.join(POOL_LINK);
    if let Ok(entry) = fs_err::read(&link) {
        // A pooled namespace: unbind ours, give the entry back.
        let entry = PathBuf::from(String::from_utf8_lossy(&entry).into_owned());
        crate::networks::drop_netns(&netns_path(bundle));
        let _ = fs_err::remove_file(&link);
        pool_put(entry);
        return;
    }
    let pid_file = bundle.join(PASTA_PID);
    if let Ok(text) = fs_err::read_to_string(&pid_file)
        && let Ok(pid) = text.trim().parse::<i32>()
        && let Ok(cmdline) = fs_err::read(format!("/proc/{pid}/cmdline"))
        // Only the pasta of this bundle (pids are reused).
        && String::from_utf8_lossy(&cmdline).contains(&*pid_file.to_string_lossy())
        && let Some(pid) = rustix::process::Pid::from_raw(pid)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
    let _ = fs_err::remove_file(&pid_file);
    let ns = netns_path(bundle);
    if ns.exists() {
        crate::networks::drop_netns(&ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(p.to_string(), "0.0.0.0:8080->80/tcp");
        let p = parse_publish("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(p.to_string(), "127.0.0.1:5353->53/udp");
        let p = parse_publish("80").unwrap();
        assert_eq!((p.host_port, p.container_port), (0, 80));
        let p = parse_publish("127.0.0.1::80").unwrap();
        assert_eq!(
            (p.host_ip.to_string(), p.host_port),
            ("127.0.0.1".into(), 0)
        );
        let p = parse_publish("[::1]:8080:80/tcp").unwrap();
        assert_eq!(p.host_ip.to_string(), "::1");
        for bad in [
            "",
            "80/sctp",
            "x:80",
            "8080:0",
            "1.2.3:8080:80",
            "99999:80",
            "80-90:80-90",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_exposed("53/udp").unwrap(), (53, Proto::Udp));
    }

    #[test]
    fn pasta_forwards_exactly_the_published_ports() {
        let ports = [
            parse_publish("127.0.0.1:8080:80").unwrap(),
            parse_publish("9090:90").unwrap(),
        ];
        let args = pasta_args(Path::new("/b/netns"), Path::new("/b/pasta.pid"), &ports);
        let s = args.join(" ");
        assert!(s.contains("-t 127.0.0.1/8080:80 -t 9090:90 -u none"), "{s}");
        assert!(s.ends_with("--netns /b/netns"), "{s}");
        let none = pasta_args(Path::new("/b/netns"), Path::new("/b/pasta.pid"), &[]).join(" ");
        assert!(none.contains("-t none -u none"), "{none}");
    }

    #[test]
    fn a_taken_port_is_refused_and_port_zero_is_chosen() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut taken = [parse_publish(&format!("127.0.0.1:{port}:80")).unwrap()];
        let e = assign_host_ports(&mut taken).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "127.0.0.1:{port} failed: port is already allocated"
            )),
            "{e}"
        );
        let mut free = [parse_publish("127.0.0.1::80").unwrap()];
        assign_host_ports(&mut free).unwrap();
        assert_ne!(free[0].host_port, 0);
    }
}
