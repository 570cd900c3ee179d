//! User-defined networks (`kiln network create NAME`): containers on one network reach each
//! other by IP, by container name and by alias.
//!
//! Each network is a network namespace that kiln owns (bind-mounted at `<dir>/netns`) holding
//! one Linux bridge (`br0`) with the network's gateway address. A container attached to it
//! gets a veth pair: one end on the bridge, the other (`ethN`) in the container's own namespace
//! with an address of the network's subnet. The container keeps its pasta for outbound traffic
//! and published ports (none on an `--internal` network), so nothing touches the host's
//! interfaces or firewall. Names are resolved through the container's `/etc/hosts` (a file of
//! its bundle, bind-mounted): every change of a network's endpoints rewrites the hosts file of
//! each container on it in place (the bind mount keeps the inode), so the table is live.
//!
//! Layout under `<store>/networks/`:
//! ```text
//! <id>/lock                 flock: held while the network is created or its endpoints change
//! <id>/network.json         NetworkRecord, written last when created (a dir without it is
//!                           half-made and swept once its lock is free)
//! <id>/netns                the network's namespace (bind mount)
//! <id>/endpoints/<cid>.json one Endpoint per attached (running) container
//! ```
//! The bundle of an attached container lists its endpoints (`<bundle>/endpoints.json`), so
//! [`release`] (called wherever a bundle is removed, the reaper included) detaches them.

use crate::containers::{now, random_id};
use crate::containers::{read_json, write_json};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const RECORD: &str = "network.json";
const LOCK: &str = "lock";
const NETNS: &str = "netns";
const ENDPOINTS: &str = "endpoints";
/// The bundle file listing the network directories a container is attached to.
const BUNDLE_ENDPOINTS: &str = "endpoints.json";
/// The bundle's `/etc/hosts` without the network entries.
pub const HOSTS_BASE: &str = "hosts.base";
/// The bridge inside a network's namespace.
const BRIDGE: &str = "br0";

/// docker's predefined networks, which `network ls` lists and nobody may create or remove.
pub const PREDEFINED: [&str; 3] = ["bridge", "host", "none"];

/// An IPv4 subnet (`172.18.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// The network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Subnet {
    /// Parses `A.B.C.D/N` (host bits must be zero, as docker requires).
    pub fn parse(s: &str) -> Result<Subnet> {
        let bad = || Error::Network {
            reason: format!("invalid CIDR address: {s}"),
        };
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if prefix > 30 {
            return Err(Error::Network {
                reason: format!("invalid subnet {s}: the prefix must be at most /30"),
            });
        }
        let sub = Subnet { addr, prefix };
        if sub.network() != addr {
            return Err(Error::Network {
                reason: format!(
                    "invalid subnet {s}: it has host bits set (the network is {})",
                    Subnet {
                        addr: sub.network(),
                        prefix
                    }
                ),
            });
        }
        Ok(sub)
    }

    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// Whether `ip` is in the subnet.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// Whether the two subnets share an address.
    pub fn overlaps(self, other: Subnet) -> bool {
        let m = self.mask() & other.mask();
        u32::from(self.addr) & m == u32::from(other.addr) & m
    }

    /// The usable host addresses: neither the network's nor its broadcast address.
    fn host_range(self) -> std::ops::RangeInclusive<u32> {
        let base = u32::from(self.addr);
        let last = base | !self.mask();
        base + 1..=last - 1
    }

    /// The first host address (docker's default gateway).
    pub fn first_host(self) -> Ipv4Addr {
        Ipv4Addr::from(*self.host_range().start())
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What `network create` stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// 64 hex digits.
    pub id: String,
    /// Name.
    pub name: String,
    /// Always `bridge`.
    pub driver: String,
    /// The subnet.
    pub subnet: Subnet,
    /// The bridge's address.
    pub gateway: Ipv4Addr,
    /// Whether the subnet was given (`--subnet`): only then may containers ask for `--ip`.
    pub user_subnet: bool,
    /// `--internal`: no outbound connectivity.
    pub internal: bool,
    /// RFC 3339 creation time.
    pub created: String,
}

/// A container's membership of a network, in its plan (what `--network NAME`,
/// `--network-alias` and `--ip` asked for, or `network connect`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    /// The network's id.
    pub id: String,
    /// The network's name (for `inspect`).
    pub name: String,
    /// The network's directory.
    pub dir: PathBuf,
    /// `--network-alias`: more names of the container on this network.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `--ip`: the address asked for.
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// The container's name (filled in when the container is created).
    #[serde(default)]
    pub container_name: String,
    /// Whether the network is `--internal` (no pasta).
    #[serde(default)]
    pub internal: bool,
}

/// One attached, running container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The container's id.
    pub container_id: String,
    /// The container's name.
    pub container_name: String,
    /// Its hostname (resolves to its address on the network too).
    pub hostname: String,
    /// `--network-alias` names.
    pub aliases: Vec<String>,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its interface's MAC address.
    pub mac: String,
    /// The veth end on the bridge (in the network's namespace).
    pub veth: String,
    /// The container's interface.
    pub ifname: String,
    /// The container's bundle (its hosts file; gone once the container is).
    pub bundle: PathBuf,
}

impl Endpoint {
    /// The names the endpoint answers to, the container name first.
    fn names(&self) -> Vec<&str> {
        let mut names = vec![self.container_name.as_str()];
        for n in self.aliases.iter().chain([&self.hostname]) {
            if !n.is_empty() && !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
        names
    }
}

/// docker's MAC for an address: `02:42` and the address's four bytes.
fn mac_of(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

fn net_err(reason: impl Into<String>) -> Error {
    Error::Network {
        reason: reason.into(),
    }
}

/// An exclusive flock, released when dropped (or when the process dies).
struct Lock(#[allow(dead_code)] fs_err::File);

impl Lock {
    fn take(dir: &Path, wait: bool) -> Result<Option<Lock>> {
        let file = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))?;
        let op = if wait {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::NonBlockingLockExclusive
        };
        match rustix::fs::flock(&file, op) {
            Ok(()) => Ok(Some(Lock(file))),
            Err(rustix::io::Errno::WOULDBLOCK) if !wait => Ok(None),
            Err(e) => Err(net_err(format!(
                "locking {}: {e}",
                dir.join(LOCK).display()
            ))),
        }
    }
}

/// Runs `ip -batch -` with `commands` inside the network namespace at `netns`.
fn ip_batch(netns: &Path, commands: &str) -> Result<()> {
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| net_err(format!("running ip (iproute2) in {}: {e}", netns.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(commands.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(net_err(format!(
        "ip: {}",
        String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', "; ")
    )))
}

/// The interface names in the namespace at `netns`.
fn interfaces(netns: &Path) -> Result<Vec<String>> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-o", "link", "show"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| net_err(format!("running ip (iproute2): {e}")))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?;
            Some(name.split('@').next().unwrap_or(name).to_owned())
        })
        .collect())
}

/// Whether `path` is a mounted network namespace (nsfs), not just the file under it.
fn is_netns(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    // `f_type`'s width differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type as i64 == NSFS_MAGIC)
}

/// Makes a network namespace at `path` (a bind mount).
pub(crate) fn make_netns(path: &Path) -> Result<()> {
    fs_err::write(path, b"")?;
    let out = Command::new("unshare")
        .arg(format!("--net={}", path.display()))
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| net_err(format!("creating a network namespace: {e}")))?;
    if !out.status.success() {
        return Err(net_err(format!(
            "creating a network namespace: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Brings up loopback in the namespace at `netns` (pasta does it when it runs).
pub(crate) fn loopback_up(netns: &Path) -> Result<()> {
    ip_batch(netns, "link set lo up\n")
}

/// Unmounts and removes a namespace file; never fails.
pub(crate) fn drop_netns(path: &Path) {
    let _ = rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH);
    let _ = fs_err::remove_file(path);
}

/// Options of `network create`.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// `--subnet`.
    pub subnet: Option<Subnet>,
    /// `--gateway`.
    pub gateway: Option<Ipv4Addr>,
    /// `--internal`.
    pub internal: bool,
}

/// The store of user networks (`<store>/networks`).
#[derive(Debug, Clone)]
pub struct Networks {
    dir: PathBuf,
}

/// One user network.
#[derive(Debug, Clone)]
pub struct UserNetwork {
    dir: PathBuf,
    record: NetworkRecord,
}

/// Subnets of the host's routes (its own networks), which a default subnet must avoid.
fn host_subnets() -> Vec<Subnet> {
    let routes = fs_err::read_to_string("/proc/net/route").unwrap_or_default();
    routes
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?.swap_bytes();
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?.swap_bytes();
            (mask != 0).then(|| Subnet {
                addr: Ipv4Addr::from(dest & mask),
                prefix: mask.count_ones() as u8,
            })
        })
        .collect()
}

impl Networks {
    /// Opens (creating) the store at `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Networks> {
        let dir = std::path::absolute(dir.into())?;
        fs_err::create_dir_all(&dir)?;
        Ok(Networks { dir })
    }

    /// Every network, by name.
    pub fn list(&self) -> Result<Vec<UserNetwork>> {
        let mut out = Vec::new();
        for entry in fs_err::read_dir(&self.dir)? {
            let dir = entry?.path();
            if let Ok(record) = read_json::<NetworkRecord>(&dir.join(RECORD)) {
                out.push(UserNetwork { dir, record });
            }
        }
        out.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        Ok(out)
    }

    /// The network with this name, full id or unique id prefix; docker's message otherwise.
    pub fn get(&self, name_or_id: &str) -> Result<UserNetwork> {
        let all = self.list()?;
        if let Some(n) = all
            .iter()
            .find(|n| n.record.name == name_or_id || n.record.id == name_or_id)
        {
            return Ok(n.clone());
        }
        let prefixed: Vec<&UserNetwork> = all
            .iter()
            .filter(|n| !name_or_id.is_empty() && n.record.id.starts_with(name_or_id))
            .collect();
        match prefixed.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::NoSuchNetwork {
                name: name_or_id.to_owned(),
            }),
            _ => Err(net_err(format!(
                "network {name_or_id} is ambiguous ({} matches found based on ID prefix)",
                prefixed.len()
            ))),
        }
    }

    /// Creates network `name`: its namespace with the bridge, then its record (last). Fails
    /// with docker's messages for a taken name or subnet; on failure nothing is left.
    pub fn create(&self, name: &str, opts: &CreateOptions) -> Result<UserNetwork> {
        check_name(name)?;
        if PREDEFINED.contains(&name) || self.list()?.iter().any(|n| n.record.name == name) {
            return Err(net_err(format!("network with name {name} already exists")));
        }
        // One creator at a time decides names and subnets.
        let _guard = Lock::take(&self.dir, true)?;
        let existing = self.list()?;
        if existing.iter().any(|n| n.record.name == name) {
            return Err(net_err(format!("network with name {name} already exists")));
        }
        let taken: Vec<Subnet> = existing.iter().map(|n| n.record.subnet).collect();
        let subnet = match opts.subnet {
            Some(s) => {
                if taken.iter().any(|t| t.overlaps(s)) {
                    return Err(net_err(
                        "Pool overlaps with other one on this address space",
                    ));
                }
                s
            }
            None => {
                if opts.gateway.is_some() {
                    return Err(net_err(
                        "every ip-range or gateway must have a corresponding subnet",
                    ));
                }
                let host = host_subnets();
                default_subnets()
                    .find(|s| !taken.iter().chain(&host).any(|t| t.overlaps(*s)))
                    .ok_or_else(|| {
                        net_err(
                            "could not find an available, non-overlapping IPv4 address pool \
                             among the defaults to assign to the network",
                        )
                    })?
            }
        };
        let gateway = match opts.gateway {
            Some(g) if !subnet.contains(g) || !subnet.host_range().contains(&u32::from(g)) => {
                return Err(net_err(format!("no matching subnet for gateway {g}")));
            }
            Some(g) => g,
            None => subnet.first_host(),
        };
        let record = NetworkRecord {
            id: random_id()?,
            name: name.to_owned(),
            driver: "bridge".to_owned(),
            subnet,
            gateway,
            user_subnet: opts.subnet.is_some(),
            internal: opts.internal,
            created: now(),
        };
        let dir = self.dir.join(&record.id);
        fs_err::create_dir_all(dir.join(ENDPOINTS))?;
        let lock = Lock::take(&dir, true)?;
        let net = UserNetwork { dir, record };
        let made = net
            .make_bridge()
            .and_then(|()| write_json(&net.dir.join(RECORD), &net.record));
        if let Err(e) = made {
            drop(lock);
            net.destroy();
            return Err(e);
        }
        Ok(net)
    }

    /// Removes what a killed kiln left: half-made networks (no record, lock free) and
    /// endpoints whose container's bundle is gone. Cheap: one directory per network.
    pub fn sweep(&self) {
        let Ok(entries) = fs_err::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            if !dir.is_dir() {
                continue;
            }
            // Before the lock: taking it may create its file, which touches the directory.
            let is_young = young(&dir);
            let Ok(Some(lock)) = Lock::take(&dir, false) else {
                continue;
            };
            match read_json::<NetworkRecord>(&dir.join(RECORD)) {
                Ok(record) => {
                    let net = UserNetwork { dir, record };
                    let stale: Vec<Endpoint> = net
                        .all_endpoints()
                        .into_iter()
                        .filter(|e| !e.bundle.exists())
                        .collect();
                    if !stale.is_empty() {
                        for e in &stale {
                            tracing::info!(container = e.container_id, "removing a stale endpoint");
                            net.drop_endpoint(e);
                        }
                        net.rewrite_hosts();
                    }
                }
                // One being created right now may not have taken its lock yet.
                Err(_) if is_young => {}
                Err(_) => {
                    tracing::info!(dir = %dir.display(), "removing a half-made network");
                    drop(lock);
                    UserNetwork {
                        dir,
                        record: placeholder(),
                    }
                    .destroy();
                }
            }
        }
    }
}

/// Whether `dir` was made less than a minute ago.
fn young(dir: &Path) -> bool {
    fs_err::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < std::time::Duration::from_secs(60))
}

fn placeholder() -> NetworkRecord {
    NetworkRecord {
        id: String::new(),
        name: String::new(),
        driver: String::new(),
        subnet: Subnet {
            addr: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
        },
        gateway: Ipv4Addr::UNSPECIFIED,
        user_subnet: false,
        internal: false,
        created: String::new(),
    }
}

/// docker's network name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn check_name(name: &str) -> Result<()> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(net_err(format!(
            "invalid network name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}

/// docker's default pools for user networks: 172.18-31.0.0/16, then 192.168.N.0/20.
fn default_subnets() -> impl Iterator<Item = Subnet> {
    let big = (18..=31).map(|b| Subnet {
        addr: Ipv4Addr::new(172, b, 0, 0),
        prefix: 16,
    });
    let small = (0..16).map(|i| Subnet {
        addr: Ipv4Addr::new(192, 168, i * 16, 0),
        prefix: 20,
    });
    big.chain(small)
}

impl UserNetwork {
    /// The network stored in `dir`.
    pub fn open(dir: &Path) -> Result<UserNetwork> {
        open_dir(dir)
    }

    /// What `network create` stored.
    pub fn record(&self) -> &NetworkRecord {
        &self.record
    }

    /// The network's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn netns(&self) -> PathBuf {
        self.dir.join(NETNS)
    }

    /// The attachment of a container to this network.
    pub fn attachment(&self, aliases: Vec<String>, ip: Option<Ipv4Addr>) -> NetworkAttachment {
        NetworkAttachment {
            id: self.record.id.clone(),
            name: self.record.name.clone(),
            dir: self.dir.clone(),
            aliases,
            ip,
            container_name: String::new(),
            internal: self.record.internal,
        }
    }

    /// Checks a `--ip` request: docker's messages for a network without a configured subnet
    /// and an address outside it.
    pub fn check_ip(&self, ip: Ipv4Addr) -> Result<()> {
        if !self.record.user_subnet {
            return Err(net_err(
                "user specified IP address is supported only when connecting to networks \
                 with user configured subnets",
            ));
        }
        if !self.record.subnet.contains(ip)
            || !self.record.subnet.host_range().contains(&u32::from(ip))
        {
            return Err(net_err(format!(
                "no configured subnet or ip-range contain the IP address {ip}"
            )));
        }
        if ip == self.record.gateway || self.endpoints().iter().any(|e| e.ip == ip) {
            return Err(net_err("Address already in use"));
        }
        Ok(())
    }

    fn make_bridge(&self) -> Result<()> {
        let ns = self.netns();
        make_netns(&ns)?;
        ip_batch(
            &ns,
            &format!(
                "link set lo up\nlink add {BRIDGE} type bridge\naddr add {}/{} dev {BRIDGE}\n\
                 link set {BRIDGE} up\n",
                self.record.gateway, self.record.subnet.prefix
            ),
        )
    }

    /// The namespace and bridge, made again when they are gone (after a reboot the mount is).
    fn ensure_bridge(&self) -> Result<()> {
        if is_netns(&self.netns()) {
            return Ok(());
        }
        drop_netns(&self.netns());
        self.make_bridge()
    }

    fn all_endpoints(&self) -> Vec<Endpoint> {
        let Ok(entries) = fs_err::read_dir(self.dir.join(ENDPOINTS)) else {
            return Vec::new();
        };
        let mut out: Vec<Endpoint> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| read_json(&e.path()).ok())
            .collect();
        out.sort_by_key(|e| e.ip);
        out
    }

    /// The running containers attached (endpoints whose container is gone are not).
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.all_endpoints()
            .into_iter()
            .filter(|e| e.bundle.exists())
            .collect()
    }

    /// Removes the network: refused while containers are attached (docker's message).
    pub fn remove(&self) -> Result<()> {
        let _lock = Lock::take(&self.dir, true)?;
        if !self.endpoints().is_empty() {
            return Err(net_err(format!(
                "error while removing network: network {} id {} has active endpoints",
                self.record.name, self.record.id
            )));
        }
        // The record first: from here on the network is gone for everyone.
        fs_err::remove_file(self.dir.join(RECORD))?;
        self.destroy();
        Ok(())
    }

    fn destroy(&self) {
        drop_netns(&self.netns());
        let _ = fs_err::remove_dir_all(&self.dir);
    }

    fn endpoint_path(&self, container_id: &str) -> PathBuf {
        self.dir
            .join(ENDPOINTS)
            .join(format!("{container_id}.json"))
    }

    fn drop_endpoint(&self, e: &Endpoint) {
        if is_netns(&self.netns()) {
            let _ = ip_batch(&self.netns(), &format!("link del {}\n", e.veth));
        }
        let _ = fs_err::remove_file(self.endpoint_path(&e.container_id));
    }

    /// Rewrites the hosts file of every container on this network.
    fn rewrite_hosts(&self) {
        for e in self.endpoints() {
            if let Err(err) = write_hosts(&e.bundle) {
                tracing::warn!(error = %err, container = e.container_id, "updating /etc/hosts");
            }
        }
    }
}

/// The endpoint of container `id` on the network in `dir`, while it is attached.
pub fn endpoint_of(dir: &Path, id: &str) -> Option<Endpoint> {
    let net = UserNetwork {
        dir: dir.to_path_buf(),
        record: placeholder(),
    };
    read_json::<Endpoint>(&net.endpoint_path(id))
        .ok()
        .filter(|e| e.bundle.exists())
}

/// The network directories a bundle's container is attached to.
fn bundle_networks(bundle: &Path) -> Vec<PathBuf> {
    read_json(&bundle.join(BUNDLE_ENDPOINTS)).unwrap_or_default()
}

fn open_dir(dir: &Path) -> Result<UserNetwork> {
    let record: NetworkRecord = read_json(&dir.join(RECORD)).map_err(|_| Error::NoSuchNetwork {
        name: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    })?;
    Ok(UserNetwork {
        dir: dir.to_path_buf(),
        record,
    })
}

/// Writes the bundle's `hosts` in place (the file is bind-mounted: its inode must stay): its
/// base, then one line per container on each of its networks.
fn write_hosts(bundle: &Path) -> Result<()> {
    let base = fs_err::read_to_string(bundle.join(HOSTS_BASE))?;
    let id = bundle
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut lines = String::new();
    let mut own: Vec<(Ipv4Addr, String)> = Vec::new();
    for dir in bundle_networks(bundle) {
        let Ok(net) = open_dir(&dir) else { continue };
        lines.push_str(&format!("# kiln network {}\n", net.record.name));
        for e in net.endpoints() {
            if e.container_id == id {
                own.push((e.ip, e.hostname.clone()));
            }
            lines.push_str(&format!("{}\t{}\n", e.ip, e.names().join(" ")));
        }
    }
    let mut text = String::new();
    for l in base.lines() {
        // The hostname resolves to the container's address on its first network, as docker's.
        if !own.is_empty() && l.starts_with("127.0.1.1") {
            continue;
        }
        text.push_str(l);
        text.push('\n');
    }
    if let Some((ip, host)) = own.first() {
        text.push_str(&format!("{ip}\t{host}\n"));
    }
    text.push_str(&lines);
    let mut f = fs_err::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(bundle.join("hosts"))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Attaches the container of `bundle` (its namespace at `<bundle>/netns`) to the network of
/// `att`: a veth into the bridge, an address, and every hosts file on the network updated.
pub fn attach(bundle: &Path, att: &NetworkAttachment, hostname: &str) -> Result<Endpoint> {
    let net = open_dir(&att.dir).map_err(|_| Error::NoSuchNetwork {
        name: att.name.clone(),
    })?;
    let id = bundle
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ctr_ns = crate::network::netns_path(bundle);
    let _lock = Lock::take(&net.dir, true)?;
    net.ensure_bridge()?;
    let endpoints = net.endpoints();
    if let Some(e) = endpoints.iter().find(|e| e.container_id == id) {
        return Err(net_err(format!(
            "endpoint with name {} already exists in network {}",
            e.container_name, net.record.name
        )));
    }
    let used: Vec<Ipv4Addr> = endpoints.iter().map(|e| e.ip).collect();
    let ip = match att.ip {
        Some(ip) if used.contains(&ip) || ip == net.record.gateway => {
            return Err(net_err("Address already in use"));
        }
        Some(ip) => ip,
        None => net
            .record
            .subnet
            .host_range()
            .map(Ipv4Addr::from)
            .find(|ip| *ip != net.record.gateway && !used.contains(ip))
            .ok_or_else(|| {
                net_err(format!(
                    "no available IPv4 addresses on network {}",
                    net.record.name
                ))
            })?,
    };
    let present = interfaces(&ctr_ns)?;
    let ifname = (0..)
        .map(|i| format!("eth{i}"))
        .find(|n| !present.contains(n))
        .unwrap_or_default();
    let veth = format!("vk{}{}", &id[..id.len().min(8)], &net.record.id[..4]);
    let mac = mac_of(ip);
    let endpoint = Endpoint {
        container_id: id.clone(),
        container_name: att.container_name.clone(),
        hostname: hostname.to_owned(),
        aliases: att.aliases.clone(),
        ip,
        mac: mac.clone(),
        veth: veth.clone(),
        ifname: ifname.clone(),
        bundle: bundle.to_path_buf(),
    };
    // Recorded first, so that whatever follows is undone by `detach`.
    write_json(&net.endpoint_path(&id), &endpoint)?;
    let mut dirs = bundle_networks(bundle);
    if !dirs.contains(&net.dir) {
        dirs.push(net.dir.clone());
    }
    write_json(&bundle.join(BUNDLE_ENDPOINTS), &dirs)?;
    let wired = ip_batch(
        &net.netns(),
        &format!(
            "link add {veth} type veth peer name {ifname} address {mac} netns {}\n\
             link set {veth} master {BRIDGE} up\n",
            ctr_ns.display()
        ),
    )
    .and_then(|()| {
        ip_batch(
            &ctr_ns,
            &format!(
                "addr add {ip}/{} dev {ifname}\nlink set {ifname} up\n",
                net.record.subnet.prefix
            ),
        )
    });
    if let Err(e) = wired {
        net.drop_endpoint(&endpoint);
        let dirs: Vec<PathBuf> = dirs.into_iter().filter(|d| *d != net.dir).collect();
        let _ = write_json(&bundle.join(BUNDLE_ENDPOINTS), &dirs);
        return Err(e);
    }
    net.rewrite_hosts();
    Ok(endpoint)
}

/// Detaches the container of `bundle` from the network in `dir` (its veth removed, every hosts
/// file on the network updated). Never fails on what is already gone.
pub fn detach(bundle: &Path, dir: &Path) {
    let id = bundle
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dirs: Vec<PathBuf> = bundle_networks(bundle)
        .into_iter()
        .filter(|d| d != dir)
        .collect();
    if bundle.exists() {
        let _ = write_json(&bundle.join(BUNDLE_ENDPOINTS), &dirs);
    }
    let Ok(net) = open_dir(dir) else { return };
    let Ok(_lock) = Lock::take(&net.dir, true) else {
        return;
    };
    if let Ok(e) = read_json::<Endpoint>(&net.endpoint_path(&id)) {
        net.drop_endpoint(&e);
    }
    net.rewrite_hosts();
    if bundle.exists() {
        let _ = write_hosts(bundle);
    }
}

/// Detaches the container of `bundle` from every network it is on; called before a bundle is
/// removed.
pub fn release(bundle: &Path) {
    for dir in bundle_networks(bundle) {
        // The endpoint's bundle must look gone to the others' hosts files: detach first.
        let id = bundle
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Ok(net) = open_dir(&dir)
            && let Ok(_lock) = Lock::take(&net.dir, true)
        {
            if let Ok(e) = read_json::<Endpoint>(&net.endpoint_path(&id)) {
                net.drop_endpoint(&e);
            }
            net.rewrite_hosts();
        }
    }
    let _ = fs_err::remove_file(bundle.join(BUNDLE_ENDPOINTS));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let s = Subnet::parse("172.20.0.0/16").unwrap();
        assert!(s.contains("172.20.3.4".parse().unwrap()));
        assert!(!s.contains("172.21.0.1".parse().unwrap()));
        assert_eq!(s.first_host().to_string(), "172.20.0.1");
        assert!(s.overlaps(Subnet::parse("172.20.5.0/24").unwrap()));
        assert!(!s.overlaps(Subnet::parse("172.21.0.0/16").unwrap()));
        for bad in [
            "172.20.0.1/16",
            "x/16",
            "10.0.0.0",
            "10.0.0.0/31",
            "10.0.0.0/x",
        ] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Subnet::parse("nope").unwrap_err().to_string(),
            "invalid CIDR address: nope"
        );
        assert_eq!(mac_of("172.18.0.2".parse().unwrap()), "02:42:ac:12:00:02");
        assert!(check_name("my-net_1.x").is_ok());
        assert!(check_name("-x").is_err() && check_name("a/b").is_err());
    }

    #[test]
    fn hosts_lines_name_the_container_its_aliases_and_hostname() {
        let e = Endpoint {
            container_id: "c".into(),
            container_name: "web".into(),
            hostname: "abc".into(),
            aliases: vec!["www".into(), "web".into()],
            ip: "172.18.0.2".parse().unwrap(),
            mac: String::new(),
            veth: String::new(),
            ifname: String::new(),
            bundle: PathBuf::new(),
        };
        assert_eq!(e.names(), ["web", "www", "abc"]);
    }

    #[test]
    fn hosts_files_are_rewritten_in_place_from_the_endpoints() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let nets = Networks::open(tmp.path().join("networks")).unwrap();
        let net_dir = nets.dir.join("n1");
        fs_err::create_dir_all(net_dir.join(ENDPOINTS)).unwrap();
        let mut record = placeholder();
        record.id = "f".repeat(64);
        record.name = "n1".into();
        record.subnet = Subnet::parse("172.30.0.0/16").unwrap();
        write_json(&net_dir.join(RECORD), &record).unwrap();
        let net = open_dir(&net_dir).unwrap();
        let bundle = |id: &str, ip: &str, name: &str| {
            let b = tmp.path().join("bundles").join(id);
            fs_err::create_dir_all(&b).unwrap();
            fs_err::write(b.join(HOSTS_BASE), "127.0.0.1\tlocalhost\n127.0.1.1\th\n").unwrap();
            fs_err::write(b.join("hosts"), "old\n").unwrap();
            write_json(&b.join(BUNDLE_ENDPOINTS), &vec![net_dir.clone()]).unwrap();
            let e = Endpoint {
                container_id: id.into(),
                container_name: name.into(),
                hostname: format!("{id}-host"),
                aliases: vec![format!("{name}-alias")],
                ip: ip.parse().unwrap(),
                mac: mac_of(ip.parse().unwrap()),
                veth: String::new(),
                ifname: "eth0".into(),
                bundle: b.clone(),
            };
            write_json(&net.endpoint_path(id), &e).unwrap();
            b
        };
        let a = bundle("a", "172.30.0.2", "web");
        let b = bundle("b", "172.30.0.3", "db");
        let inode = fs_err::metadata(a.join("hosts")).unwrap().ino();
        net.rewrite_hosts();
        let hosts = fs_err::read_to_string(a.join("hosts")).unwrap();
        assert_eq!(
            hosts,
            "127.0.0.1\tlocalhost\n172.30.0.2\ta-host\n# kiln network n1\n\
             172.30.0.2\tweb web-alias a-host\n172.30.0.3\tdb db-alias b-host\n"
        );
        assert_eq!(
            fs_err::metadata(a.join("hosts")).unwrap().ino(),
            inode,
            "same inode"
        );
        // b's container is gone: the sweep drops its endpoint and a's table forgets it.
        fs_err::remove_dir_all(&b).unwrap();
        nets.sweep();
        let hosts = fs_err::read_to_string(a.join("hosts")).unwrap();
        assert!(!hosts.contains("db"), "{hosts}");
        assert!(!net.endpoint_path("b").exists());
        assert_eq!(net.endpoints().len(), 1);
    }

    #[test]
    fn the_sweep_removes_half_made_networks_once_they_are_old() {
        let tmp = tempfile::tempdir().unwrap();
        let nets = Networks::open(tmp.path()).unwrap();
        for name in ["old", "new"] {
            fs_err::create_dir_all(nets.dir.join(name).join(ENDPOINTS)).unwrap();
        }
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        fs_err::File::open(nets.dir.join("old"))
            .unwrap()
            .file()
            .set_modified(past)
            .unwrap();
        nets.sweep();
        assert!(
            !nets.dir.join("old").exists(),
            "a killed creator's leftovers go"
        );
        assert!(nets.dir.join("new").exists(), "one being created stays");
        // A network whose creator holds the lock is left alone, however old.
        let held = Lock::take(&nets.dir.join("new"), false).unwrap().unwrap();
        fs_err::File::open(nets.dir.join("new"))
            .unwrap()
            .file()
            .set_modified(past)
            .unwrap();
        nets.sweep();
        assert!(nets.dir.join("new").exists());
        drop(held);
        nets.sweep();
        assert!(!nets.dir.join("new").exists());
    }
}
